"""The library's training recipes: the demo U-Net on testnet and the U-Net for Triangle, the
splits every command validates on, and :func:`train_default_model`, which trains the demo
model."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Subset

from ..core.validate import check_positive
from ..models.unet import UNet
from .checkpoints import save_checkpoint
from .loop import train
from .seeding import seeded

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TRAINING",
    "RULE_DICE",
    "TRIANGLE_MODEL",
    "TRIANGLE_RULE_DICE",
    "TRIANGLE_TRAINING",
    "training_defaults",
    "default_unet",
    "dataset_splits",
    "oversampling_weights",
    "train_default_model",
]

DEFAULT_MODEL = dict(in_channels=1, out_channels=1, width=8, depth=4, global_context=True,
                     norm="batch", robust_context=True, decoder_context=True)
"""Keyword arguments of :class:`~interpret_segmentation.models.UNet` for the demo model."""

RULE_DICE = 0.97
"""Validation Dice from which the demo model counts as having learned testnet's rule (a model
that segments both left shapes reaches about 0.67)."""

DEFAULT_TRAINING = dict(n_train=400, n_val=200, epochs=16, lr=3e-3, batch_size=8, seed=0,
                        augment=False, schedule="plateau", stop_at=RULE_DICE, hold=2,
                        oversample={"square": 2.0})
"""Training settings for testnet (the demo model): at most 16 epochs, stopped once the
validation Dice has been at least :data:`RULE_DICE` for two epochs; the learning rate at its peak
for half the steps, then decaying. A model first segments what needs no context and learns the
rule afterwards, through its context paths. Drawing images with a square on the right twice as
often (``oversample``) makes the first step "segment the cross" rather than "segment both left
shapes": the model then tells the cross from the triangle before it looks at the context, and
only the context is left to learn (README, "The testnet data set and U-Net")."""

TRIANGLE_MODEL = dict(DEFAULT_MODEL, width=4, depth=5, robust_context=False,
                      decoder_context=False)
"""The U-Net for Triangle: one level deeper than the demo model (7 x 7 bottleneck at 224 px), so
its receptive field spans the 100 px between the digits it must relate, and half as wide (four
channels at full resolution), which keeps the 2000 passes of RISE affordable on a CPU."""

TRIANGLE_RULE_DICE = 0.98
"""Validation Dice (600 images) at which Triangle training stops, once held for two epochs."""

TRIANGLE_TRAINING = dict(n_train=None, n_val=None, epochs=10, lr=3e-3, batch_size=8, seed=0,
                         augment=True, schedule="one-cycle", stop_at=TRIANGLE_RULE_DICE, hold=2,
                         oversample=None)
"""Training settings for Triangle: the whole 70/30 split (1400 / 600 of 2000 images, as seed
001), None meaning all of a part, with the 8 symmetries of the square as augmentation (they
map an axis-aligned square to one, so the rule does not change); a one-cycle schedule over 10
epochs, stopped once the validation Dice has held :data:`TRIANGLE_RULE_DICE` for two epochs."""


def training_defaults(dataset_root) -> tuple[dict, dict]:
    """Copies of the U-Net settings and training settings for a data set: :data:`TRIANGLE_MODEL`
    and :data:`TRIANGLE_TRAINING` for Triangle (``triangle.json`` in ``dataset_root``),
    :data:`DEFAULT_MODEL` and :data:`DEFAULT_TRAINING` for any other."""
    if (Path(dataset_root) / "triangle.json").is_file():
        return dict(TRIANGLE_MODEL), dict(TRIANGLE_TRAINING)
    return dict(DEFAULT_MODEL), dict(DEFAULT_TRAINING)


def default_unet(seed: int | None = None) -> UNet:
    """A freshly initialised demo U-Net built from :data:`DEFAULT_MODEL`.

    With ``seed`` its weights are those ``torch.manual_seed(seed)`` would give, drawn without
    touching the caller's global generator (:func:`~.seeding.seeded`); without, they are drawn
    from the global generator.
    """
    if seed is None:
        return UNet(**DEFAULT_MODEL)
    with seeded(seed):
        return UNet(**DEFAULT_MODEL)


def dataset_splits(dataset_root, n_train: int | None = None,
                   n_val: int | None = None) -> tuple[Subset, Subset]:
    """The training and validation parts of a data set written by this library.

    A Triangle data set (``triangle.json`` in ``dataset_root``) is split as seed 001 does,
    70/30 (:func:`~interpret_segmentation.datasets.triangle_split`); any other directory in the
    same layout, testnet included, 80/20 (:func:`~interpret_segmentation.datasets.split_indices`
    with seed 0). Training, the demo, the CLI and the examples therefore all validate on the
    same images.

    Parameters
    ----------
    dataset_root : str or Path
    n_train, n_val : int, optional
        Use only the first ``n_train`` / ``n_val`` samples of each part; default all.

    Returns
    -------
    (Subset, Subset)
        Training and validation sets of a :class:`TestnetDataset` (which reads either layout).
    """
    from ..datasets.testnet import TestnetDataset, list_indices, split_indices
    from ..datasets.triangle import triangle_split

    for name, value in (("n_train", n_train), ("n_val", n_val)):
        if value is not None:
            check_positive(value, name)
    available = list_indices(dataset_root)
    if (Path(dataset_root) / "triangle.json").is_file():
        share = "70%"
        train_pos, val_pos = triangle_split(len(available))
    else:
        share = "80%"
        train_pos, val_pos = split_indices(len(available), val_fraction=0.2, seed=0)
    if n_train is not None and n_train > len(train_pos):
        raise ValueError(
            f"n_train: expected at most {len(train_pos)} ({share} of the {len(available)} "
            f"samples in {dataset_root}), got {n_train}; generate a larger data set"
        )
    full = TestnetDataset(dataset_root)
    return Subset(full, train_pos[:n_train]), Subset(full, val_pos[:n_val])


def oversampling_weights(train_set: Subset, oversample: dict | None):
    """Per-item weights for :func:`train`'s ``sample_weights``: ``oversample[right_shape]``
    for a testnet item whose right-hand shape is named there, 1 for the others; None when
    ``oversample`` is None or empty.

    ``train_set`` is a part of a testnet data set as :func:`dataset_splits` gives it.
    """
    if not oversample:
        return None
    full = train_set.dataset
    return [float(oversample.get(full.meta(position).get("right_shape"), 1.0))
            for position in train_set.indices]


def train_default_model(
    dataset_root,
    out_checkpoint,
    results_path,
    *,
    n_train: int = DEFAULT_TRAINING["n_train"],
    n_val: int | None = DEFAULT_TRAINING["n_val"],
    epochs: int = DEFAULT_TRAINING["epochs"],
    lr: float = DEFAULT_TRAINING["lr"],
    batch_size: int = DEFAULT_TRAINING["batch_size"],
    seed: int = DEFAULT_TRAINING["seed"],
    oversample: dict | None = DEFAULT_TRAINING["oversample"],
    schedule: str = DEFAULT_TRAINING["schedule"],
    stop_at: float | None = DEFAULT_TRAINING["stop_at"],
    hold: int = DEFAULT_TRAINING["hold"],
    checkpoint_dir=None,
    time_limit: float | None = None,
    num_threads: int | None = None,
    progress: bool = True,
    log: Callable[[str], object] = print,
) -> dict:
    """Train the demo U-Net (:data:`DEFAULT_MODEL`) with the testnet settings.

    The data set is split by :func:`dataset_splits`; the first ``n_train`` training and
    ``n_val`` validation samples are used. The final weights are written to ``out_checkpoint``
    atomically.

    Parameters
    ----------
    dataset_root : str or Path
        A data set written by ``interpret-segmentation testnet generate`` (or ``triangle``).
    out_checkpoint : str or Path
        Where the final state dict goes; must not exist yet.
    results_path : str or Path
        Per-epoch results file; must not exist yet.
    n_train : int, default 400
    n_val : int or None, default 200
        None uses the whole validation part.
    epochs : int, default 16
        At most; see ``stop_at``.
    lr : float, default 3e-3
    batch_size : int, default 8
    seed : int, default 0
        Seeds the model initialisation and the shuffling.
    oversample : dict or None, default {"square": 2.0}
        Draw training images whose right-hand shape is a square twice as often as the others
        (:func:`oversampling_weights`); see :data:`DEFAULT_TRAINING`.
    schedule : str, default "plateau"
    stop_at : float or None, default 0.97 (:data:`RULE_DICE`)
    hold : int, default 2
        See :func:`train`.
    checkpoint_dir : str or Path, optional
        Keep the per-epoch checkpoints there; default a temporary directory removed at the end.
    time_limit : float, optional
        Seconds, see :func:`train`.
    num_threads : int, optional
        Torch threads for the run (restored afterwards); default unchanged.
    progress : bool, default True
    log : callable, default print

    Returns
    -------
    dict
        ``val_dice`` and ``val_hausdorff`` (last epoch), ``rule_learned`` (``val_dice`` at
        least :data:`RULE_DICE`), ``train_seconds``, ``epochs`` (run), ``n_train``, ``n_val``,
        ``checkpoint`` (path) and ``history`` (see :func:`train`).

    Raises
    ------
    FileExistsError
        If ``out_checkpoint`` or ``results_path`` exists.
    FileNotFoundError
        If the data set is missing (the message says how to generate it).
    """
    out_checkpoint = _refuse_existing(out_checkpoint, results_path)
    train_set, val_set = dataset_splits(dataset_root, n_train, n_val)
    model = default_unet(seed)
    history, seconds = _train_timed(
        model, train_set, val_set, checkpoint_dir, epochs=epochs, lr=lr, batch_size=batch_size,
        results_path=results_path, seed=seed, progress=progress, time_limit=time_limit, log=log,
        num_threads=num_threads, schedule=schedule, stop_at=stop_at, hold=hold,
        sample_weights=oversampling_weights(train_set, oversample),
    )
    _save_final_checkpoint(model, out_checkpoint)
    return _training_summary(history, seconds, train_set, val_set, out_checkpoint)


def _refuse_existing(out_checkpoint, results_path) -> Path:
    """``out_checkpoint`` as a Path, once neither it nor ``results_path`` exists (FileExistsError
    naming the one that does: :func:`train_default_model` overwrites nothing)."""
    out_checkpoint = Path(out_checkpoint)
    if out_checkpoint.exists():
        raise FileExistsError(
            f"checkpoint {out_checkpoint} already exists; it is never overwritten, remove it or "
            "choose another path"
        )
    if Path(results_path).exists():
        raise FileExistsError(
            f"results file {results_path} already exists; it is never overwritten, choose "
            "another name"
        )
    return out_checkpoint


def _train_timed(model, train_set, val_set, checkpoint_dir, **options) -> tuple[list[dict], float]:
    """:func:`train` with per-epoch checkpoints ``testnet_<epoch>.pth`` in ``checkpoint_dir``
    (None: a temporary directory, removed afterwards); returns the history and the seconds the
    training took."""
    with tempfile.TemporaryDirectory(prefix="testnet-checkpoints-") as scratch:
        directory = Path(checkpoint_dir) if checkpoint_dir is not None else Path(scratch)
        start = time.perf_counter()
        history = train(model, train_set, val_set, checkpoint_dir=directory,
                        checkpoint_prefix="testnet", **options)
        return history, time.perf_counter() - start


def _save_final_checkpoint(model, path: Path) -> None:
    """Write the trained weights to ``path``, refusing a file that appeared meanwhile."""
    try:
        save_checkpoint(model, path, overwrite=False)
    except FileExistsError:
        raise FileExistsError(f"checkpoint {path} appeared during training; not overwriting "
                              "it") from None


def _training_summary(history: list[dict], seconds: float, train_set, val_set,
                      checkpoint: Path) -> dict:
    """:func:`train_default_model`'s result (see there) from the run's history."""
    last = history[-1]
    return {
        "val_dice": last["val_dice"],
        "val_hausdorff": last["val_hausdorff"],
        "rule_learned": last["val_dice"] >= RULE_DICE,
        "train_seconds": seconds,
        "epochs": len(history),
        "n_train": len(train_set),
        "n_val": len(val_set),
        "checkpoint": str(checkpoint),
        "history": history,
    }
