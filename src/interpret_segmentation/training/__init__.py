"""One training loop for the examples, the CLI, the reproductions and the demo model.

- :mod:`.tasks`: what is trained, a :class:`Task` = loss + scorer
  (:class:`SegmentationTask`: BCE-with-logits + soft Dice, scored by Dice and Hausdorff
  distance; :class:`ClassificationTask`: cross-entropy, scored by balanced accuracy).
- :mod:`.loop`: :func:`train`, the epoch loop (schedule, stop rule, a checkpoint and a results
  line per epoch, as the testnet training of seed 000 does).
- :mod:`.augment`: augmentations moving images and targets alike.
- :mod:`.checkpoints`: state dicts saved atomically and loaded with ``weights_only=True``.
- :mod:`.recipes`: the demo model's and Triangle's settings, the data-set splits, and
  :func:`train_default_model`.
- :mod:`.seeding`: :func:`seeded`, a block with torch's global generator seeded and the
  caller's state given back afterwards. Nothing in this package reseeds or draws from the
  caller's global generators.
"""

from .augment import affine_elastic_augment, dihedral_augment, noise_augment
from .checkpoints import (
    build_model,
    load_checkpoint,
    load_default_model,
    save_checkpoint,
    unet_architecture,
)
from .loop import SCHEDULES, train
from .recipes import (
    DEFAULT_MODEL,
    DEFAULT_TRAINING,
    RULE_DICE,
    TRIANGLE_MODEL,
    TRIANGLE_RULE_DICE,
    TRIANGLE_TRAINING,
    dataset_splits,
    default_unet,
    oversampling_weights,
    train_default_model,
    training_defaults,
)
from .seeding import seeded
from .tasks import (
    TASKS,
    ClassificationTask,
    SegmentationTask,
    Task,
    score_classifier,
    score_segmenter,
    segmentation_loss,
)

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TRAINING",
    "RULE_DICE",
    "oversampling_weights",
    "TRIANGLE_MODEL",
    "TRIANGLE_RULE_DICE",
    "TRIANGLE_TRAINING",
    "training_defaults",
    "default_unet",
    "load_default_model",
    "unet_architecture",
    "Task",
    "SegmentationTask",
    "ClassificationTask",
    "TASKS",
    "segmentation_loss",
    "dihedral_augment",
    "affine_elastic_augment",
    "noise_augment",
    "score_segmenter",
    "score_classifier",
    "SCHEDULES",
    "train",
    "seeded",
    "dataset_splits",
    "train_default_model",
    "save_checkpoint",
    "build_model",
    "load_checkpoint",
]
