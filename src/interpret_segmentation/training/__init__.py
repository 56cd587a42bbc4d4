"""One training loop for the examples, the CLI and the demo model.

:func:`train` fits a one-channel segmentation model with BCE-with-logits + soft Dice, logs one
line per epoch (train loss, validation loss, Dice and Hausdorff distance) to ``log`` and to a
results file, and saves a checkpoint every epoch, as the testnet training of seed 000 does.
:func:`train_default_model` trains the demo U-Net (:data:`DEFAULT_MODEL`) on the testnet data.
"""

from __future__ import annotations

import math
import pickle
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, WeightedRandomSampler
from tqdm.auto import tqdm

from ..analysis.metrics import dice, hausdorff_distance
from ..core.io import append_text, atomic_write
from ..core.model import evaluation_mode
from ..core.validate import check_positive
from ..models.unet import UNet

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TRAINING",
    "RULE_DICE",
    "oversampling_weights",
    "TRIANGLE_MODEL",
    "TRIANGLE_TRAINING",
    "training_defaults",
    "default_unet",
    "load_default_model",
    "unet_architecture",
    "segmentation_loss",
    "dihedral_augment",
    "affine_elastic_augment",
    "noise_augment",
    "evaluate",
    "evaluate_classifier",
    "train",
    "dataset_splits",
    "train_default_model",
    "save_checkpoint",
    "load_checkpoint",
]

TASKS = ("segmentation", "classification")
"""What :func:`train` can train."""

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

TRIANGLE_MODEL = dict(DEFAULT_MODEL, depth=5, robust_context=False, decoder_context=False)
"""The U-Net for Triangle: one level deeper than the demo model (7 x 7 bottleneck at 224 px), so
its receptive field spans the distances between the digits it must relate."""

TRIANGLE_TRAINING = dict(n_train=None, n_val=None, epochs=24, lr=3e-3, batch_size=8, seed=0,
                         augment=True, schedule="one-cycle", stop_at=None, hold=2, oversample=None)
"""Training settings for Triangle: the whole 70/30 split (1400 / 600 of 2000 images, as seed
001), None meaning all of a part, with the 8 symmetries of the square as augmentation."""


def training_defaults(dataset_root) -> tuple[dict, dict]:
    """Copies of the U-Net settings and training settings for a data set: :data:`TRIANGLE_MODEL`
    and :data:`TRIANGLE_TRAINING` for Triangle (``triangle.json`` in ``dataset_root``),
    :data:`DEFAULT_MODEL` and :data:`DEFAULT_TRAINING` for any other."""
    if (Path(dataset_root) / "triangle.json").is_file():
        return dict(TRIANGLE_MODEL), dict(TRIANGLE_TRAINING)
    return dict(DEFAULT_MODEL), dict(DEFAULT_TRAINING)


_HOW_TO_TRAIN = (
    "train one with `interpret-segmentation testnet train` or `triangle train` (`make demo` "
    "trains the default testnet model)"
)


def default_unet() -> UNet:
    """A freshly initialised demo U-Net built from :data:`DEFAULT_MODEL`."""
    return UNet(**DEFAULT_MODEL)


def unet_architecture(state: dict) -> dict:
    """The :class:`~interpret_segmentation.models.UNet` keyword arguments a state dict was made
    with (``in_channels``, ``out_channels``, ``width``, ``depth``, ``global_context``, ``norm``,
    ``robust_context``, ``decoder_context``),
    read from its parameter names and shapes.

    Raises ValueError if ``state`` is not a state dict of the library's U-Net.
    """
    try:
        first, head = state["encoders.0.0.weight"], state["head.weight"]
    except KeyError as missing:
        raise ValueError(f"state: expected a state dict of the library's UNet, missing {missing}; "
                         "build your model and use load_checkpoint(model, path)") from None
    depth = 0
    while f"encoders.{depth}.0.weight" in state:
        depth += 1
    if "encoders.0.1.running_mean" in state:
        norm = "batch"
    else:
        norm = "group" if "encoders.0.1.weight" in state else "none"
    return dict(in_channels=int(first.shape[1]), out_channels=int(head.shape[0]),
                width=int(first.shape[0]), depth=depth,
                global_context=any(k.startswith("bottleneck.context.") for k in state),
                norm=norm, robust_context="bottleneck.context.norm.weight" in state,
                decoder_context="decoder_context.norm.weight" in state)


def load_default_model(path) -> UNet:
    """The library's U-Net with the weights in ``path``, ready to explain.

    Width, depth and the other settings are read from the checkpoint
    (:func:`unet_architecture`), so this loads the demo model and any U-Net trained with
    ``testnet train`` or ``triangle train``. Its parameters are stored channels-last, which makes
    its forward pass about 1.5 times faster on CPU (the results are the same). Raises
    FileNotFoundError saying how to train one when ``path`` is missing.
    """
    state = _read_state(path)
    try:
        architecture = unet_architecture(state)
    except ValueError as error:
        raise ValueError(f"checkpoint {path}: {error}") from None
    model = _load_state(UNet(**architecture), state, path)
    return model.to(memory_format=torch.channels_last).eval()


# ---------------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(model: nn.Module, path) -> Path:
    """Save ``model.state_dict()`` to ``path`` atomically (temporary file, then rename).

    Parent directories are created; an existing file at ``path`` is replaced (callers that
    must not overwrite check first). Returns ``path`` as a Path.
    """
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda file: torch.save(state, file), overwrite=True)
    return path


_STATE_DICT = "a state dict saved with torch.save(model.state_dict(), path)"


def _read_state(path) -> dict:
    """The state dict in ``path``, read with ``weights_only=True``.

    Raises FileNotFoundError when ``path`` is missing and ValueError naming it when it is
    unreadable, truncated, a pickled model (which ``weights_only`` refuses) or not a mapping
    of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}; {_HOW_TO_TRAIN}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if zipfile.is_zipfile(path):  # written by torch.save, holding more than tensors
            raise ValueError(f"checkpoint {path}: not {_STATE_DICT} (torch.load(weights_only="
                             "True) refuses it: a pickled model or other objects); load it in "
                             "Python you trust and save model.state_dict() instead") from None
        raise ValueError(f"checkpoint {path}: unreadable, expected {_STATE_DICT} "
                         f"({' '.join(str(error).split())[-200:]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError) as error:
        lines = str(error).strip().splitlines()
        said = f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__
        raise ValueError(f"checkpoint {path}: unreadable or truncated, expected {_STATE_DICT} "
                         f"({said})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor)
            for key, value in state.items()):
        kind = type(state).__name__ if not isinstance(state, dict) else "dict of other values"
        raise ValueError(f"checkpoint {path}: expected {_STATE_DICT}, got a {kind}")
    return state


def _load_state(model: nn.Module, state: dict, path, strict: bool = True) -> nn.Module:
    """``model.load_state_dict(state)``; a ValueError naming ``path`` when they do not fit."""
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as error:
        said = " ".join(str(error).split())
        raise ValueError(f"checkpoint {path}: does not fit the model ({said[:500]})") from None
    return model


def load_checkpoint(model: nn.Module, path, strict: bool = True) -> nn.Module:
    """Load a state dict saved by :func:`save_checkpoint` into ``model`` and return it.

    Uses ``torch.load(path, map_location="cpu", weights_only=True)``, so only tensors are
    read (no arbitrary code).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist; the message says how to make a checkpoint.
    TypeError
        If ``model`` is not an ``nn.Module``.
    ValueError
        If the file is unreadable, does not hold a state dict, or the state dict does not fit
        ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    return _load_state(model, _read_state(path), path, strict)


# ---------------------------------------------------------------------------------------------
# loss and evaluation


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits plus soft Dice loss ``1 - Dice(sigmoid(logits), target)``.

    Parameters
    ----------
    logits : tensor (B, 1, H, W)
    target : tensor (B, 1, H, W) of 0/1

    Returns
    -------
    tensor ()
        Mean BCE over pixels plus the mean over the batch of the per-image soft Dice loss.
    """
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    flat = target.flatten(1)
    soft_dice = (2.0 * (prob * flat).sum(1) + 1.0) / (prob.sum(1) + flat.sum(1) + 1.0)
    return bce + (1.0 - soft_dice).mean()


def _check_output(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.shape != target.shape or logits.ndim != 4 or logits.shape[1] != 1:
        raise ValueError(
            "model: train() supports one-channel segmentation models whose output (B, 1, H, W) "
            f"matches the target; got output {tuple(logits.shape)} for target "
            f"{tuple(target.shape)}"
        )


def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 16,
             device=None) -> dict:
    """Mean loss, Dice and Hausdorff distance of ``model`` on ``dataset``.

    Prediction is ``sigmoid(logits) > 0.5``; Dice and Hausdorff distance come from
    :mod:`interpret_segmentation.analysis.metrics` (an empty prediction against a non-empty segment
    counts as the image diagonal). The model's training mode is restored afterwards.

    Returns
    -------
    dict
        ``loss``, ``dice``, ``hausdorff`` (means over the images) and ``n``.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    losses, dices, distances = [], [], []
    with evaluation_mode(model), torch.no_grad():
        for image, target in loader:
            image, target = image.to(device), target.to(device)
            logits = model(image)
            _check_output(logits, target)
            losses.append(float(segmentation_loss(logits, target)) * len(image))
            pred = (logits > 0).cpu().numpy()[:, 0]  # sigmoid > 0.5
            ref = target.cpu().numpy()[:, 0] > 0.5
            for p, r in zip(pred, ref, strict=True):
                dices.append(dice(p, r))
                distances.append(hausdorff_distance(p, r))
    n = len(dices)
    if n == 0:
        raise ValueError("dataset: expected at least one validation sample, got an empty set")
    return {"loss": sum(losses) / n, "dice": float(np.mean(dices)),
            "hausdorff": float(np.mean(distances)), "n": n}


def evaluate_classifier(model: nn.Module, dataset: Dataset, batch_size: int = 16,
                        device=None) -> dict:
    """Mean cross-entropy, balanced accuracy, TPR and TNR of a classifier on ``dataset``.

    Items are ``(image, label)``; the prediction is the arg-max logit; class 1 is positive
    (see :func:`~interpret_segmentation.analysis.metrics.classification_scores`). The model's training
    mode is restored afterwards.

    Returns
    -------
    dict
        ``loss``, ``balanced_accuracy``, ``tpr``, ``tnr`` and ``n``.
    """
    from ..analysis.metrics import classification_scores

    device = torch.device("cpu") if device is None else torch.device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    loss, predictions, labels = 0.0, [], []
    with evaluation_mode(model), torch.no_grad():
        for image, label in loader:
            logits = model(image.to(device))
            label = label.to(device).long().view(-1)
            loss += float(F.cross_entropy(logits, label, reduction="sum"))
            predictions.append(logits.argmax(1).cpu())
            labels.append(label.cpu())
    if not labels:
        raise ValueError("dataset: expected at least one validation sample, got an empty set")
    labels = torch.cat(labels)
    scores = classification_scores(torch.cat(predictions), labels)
    return {"loss": loss / len(labels), **scores, "n": len(labels)}


# ---------------------------------------------------------------------------------------------
# the loop


def dihedral_augment(images: torch.Tensor, targets: torch.Tensor,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each (image, target) pair turned by the same random one of the 8 symmetries of the
    square (rotations by multiples of 90 degrees, with or without a mirror).

    For square images (B, C, S, S) and targets (B, 1, S, S) whose labels do not depend on
    orientation (Triangle: an equilateral triangle stays one); testnet's left/right layout
    does. Targets that are class labels (B,) stay as they are. Returns new tensors of the
    same shapes.
    """
    def turn(item: torch.Tensor, k: int) -> torch.Tensor:
        if item.ndim < 2:  # a class label: the same for every orientation
            return item
        item = torch.rot90(item, k % 4, (-2, -1))
        return item.flip(-1) if k >= 4 else item

    choices = torch.randint(0, 8, (len(images),), generator=generator).tolist()
    return (torch.stack([turn(x, k) for x, k in zip(images, choices, strict=True)]),
            torch.stack([turn(y, k) for y, k in zip(targets, choices, strict=True)]))


def affine_elastic_augment(images: torch.Tensor, masks: torch.Tensor,
                           generator: torch.Generator | None = None, rotation: float = 180.0,
                           scale: tuple[float, float] = (0.9, 1.1), shift: float = 0.05,
                           elastic: float = 0.03, grid: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine and elastic deformation of images (B, C, H, W) and masks (B, 1, H, W),
    each pair moved alike, as U-Net training does (Ronneberger et al., 2015; seed 003).

    Per pair: rotation uniform in +-``rotation`` degrees, isotropic scale in ``scale``, shift up
    to ``shift`` of the image side, random mirror, plus a smooth displacement field (a
    ``grid`` x ``grid`` grid of normal offsets with standard deviation ``elastic`` of the side,
    upsampled bicubically). Images are resampled bilinearly with zeros outside, masks by
    nearest neighbour. Returns new tensors of the same shapes.
    """
    batch, _, height, width = images.shape

    def uniform(low, high, size=(batch,)):
        return low + (high - low) * torch.rand(size, generator=generator)

    angle = torch.deg2rad(uniform(-rotation, rotation))
    zoom = uniform(*scale)
    mirror = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / zoom * mirror
    theta[:, 0, 1] = -torch.sin(angle) / zoom
    theta[:, 1, 0] = torch.sin(angle) / zoom * mirror
    theta[:, 1, 1] = torch.cos(angle) / zoom
    theta[:, :, 2] = uniform(-2 * shift, 2 * shift, (batch, 2))  # grid units span 2 per side
    sampling = F.affine_grid(theta, [batch, 1, height, width], align_corners=False)
    offsets = torch.randn(batch, 2, grid, grid, generator=generator) * 2 * elastic
    sampling = sampling + F.interpolate(offsets, size=(height, width), mode="bicubic",
                                        align_corners=False).permute(0, 2, 3, 1)
    sampling = sampling.to(images.dtype)
    moved = F.grid_sample(images, sampling, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    moved_masks = F.grid_sample(masks.to(images.dtype), sampling, mode="nearest",
                                padding_mode="zeros", align_corners=False)
    return moved, moved_masks.to(masks.dtype)


def noise_augment(images: torch.Tensor, targets: torch.Tensor,
                  generator: torch.Generator | None = None,
                  max_std: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, C, H, W) plus Gaussian white noise whose standard deviation is drawn per
    image uniformly in [0, ``max_std``]; targets unchanged.

    Teaches a network to ignore pixel-level noise, so that what it responds to (and what a
    DeepDream of it draws) is structure. Use ``functools.partial(noise_augment, max_std=...)``
    for another strength.
    """
    std = max_std * torch.rand(len(images), 1, 1, 1, generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    return images + std.to(images.dtype) * noise.to(images.dtype), targets


SCHEDULES = ("one-cycle", "plateau")
"""Learning-rate schedules of :func:`train`."""


def _scheduler(optimizer, schedule: str, steps: int):
    """The per-step learning-rate schedule ``schedule`` over ``steps`` steps (see :func:`train`)."""
    if schedule == "one-cycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=steps, pct_start=0.15, anneal_strategy="cos", div_factor=10.0,
            final_div_factor=100.0)
    warm_up, decay_from = max(1, round(0.1 * steps)), round(0.5 * steps)

    def factor(step: int) -> float:
        if step < warm_up:
            return (step + 1) / warm_up
        if step < decay_from:
            return 1.0
        done = (step - decay_from) / max(1, steps - decay_from)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _format_line(row: dict, epochs: int) -> str:
    scores = "  ".join(f"{key} {value:.4f}" for key, value in row.items()
                       if key.startswith(("train_", "val_")))
    return f"epoch {row['epoch']:>3}/{epochs}  {scores}  seconds {row['seconds']:.1f}"


def train(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    results_path,
    checkpoint_dir,
    checkpoint_prefix: str = "testnet",
    seed: int = 0,
    progress: bool = True,
    time_limit: float | None = None,
    log: Callable[[str], object] = print,
    device=None,
    num_threads: int | None = None,
    channels_last: bool = True,
    augment: bool | Callable = False,
    task: str = "segmentation",
    parameter_groups: list[dict] | None = None,
    sample_weights=None,
    schedule: str = "one-cycle",
    stop_at: float | None = None,
    hold: int = 2,
) -> list[dict]:
    """Train a one-channel segmentation model with BCE-with-logits + soft Dice, or a classifier
    with cross-entropy (``task="classification"``).

    Adam with a learning-rate schedule (see ``schedule``). After every
    epoch the model is evaluated on ``val_set`` (see :func:`evaluate`), one line with the
    training loss, validation loss, Dice and Hausdorff distance goes to ``log`` and is appended
    to ``results_path``, and the weights are saved to
    ``checkpoint_dir/<checkpoint_prefix>_<epoch>.pth`` (epochs count from 1).

    Parameters
    ----------
    model : nn.Module
        Maps images (B, C, H, W) to logits (B, 1, H, W). Trained in place; left in eval mode.
    train_set, val_set : Dataset
        Items ``(image (C, H, W) float, segment (1, H, W) of 0/1)``.
    epochs : int
        Number of passes over ``train_set``.
    lr : float
        Peak learning rate of the one-cycle schedule.
    batch_size : int
    results_path : str or Path
        Text file for the per-epoch lines; must not exist yet (it is never overwritten).
    checkpoint_dir : str or Path
        Directory for the per-epoch checkpoints (created if missing).
    checkpoint_prefix : str, default "testnet"
    seed : int, default 0
        Seeds the shuffling and ``torch.manual_seed`` (initialise the model before calling
        for fully reproducible runs).
    progress : bool, default True
        tqdm bar over the batches of each epoch, on stderr.
    time_limit : float, optional
        Seconds; once exceeded, the current epoch stops after its batch and is evaluated and
        saved as usual, and training ends.
    log : callable, default print
        Receives each epoch's line.
    device : str or torch.device, optional
        Default CPU.
    num_threads : int, optional
        ``torch.set_num_threads`` for the run (restored afterwards); default unchanged.
    channels_last : bool, default True
        Train in the channels-last memory format (about 1.4x faster for the U-Net on CPU);
        the model's parameters are made contiguous again at the end.
    augment : bool or callable, default False
        True: turn each training pair by a random symmetry of the square
        (:func:`dihedral_augment`; only for square images whose labels do not depend on
        orientation). A callable ``augment(images, targets, generator)`` returning new
        ``(images, targets)`` is used as is (e.g. :func:`affine_elastic_augment`).
    task : {"segmentation", "classification"}, default "segmentation"
        Classification: items ``(image, label)``, the model gives class logits (B, K), the loss
        is cross-entropy and each epoch is scored by :func:`evaluate_classifier`.
    parameter_groups : list of dict, optional
        Optimiser parameter groups with their own ``lr`` (the peak of each group's schedule),
        e.g. :func:`~interpret_segmentation.models.vgg_parameter_groups`; default all
        parameters at ``lr``.
    sample_weights : sequence of float, optional
        One weight per item of ``train_set``: each epoch draws ``len(train_set)`` items with
        replacement, in proportion to the weights; default every item once, shuffled.
    schedule : {"one-cycle", "plateau"}, default "one-cycle"
        "one-cycle": warm-up to ``lr`` over the first 15 % of the steps, then cosine decay to
        ``lr / 1000``. "plateau": warm-up over the first 10 %, ``lr`` until half the steps,
        cosine decay to ``lr / 100`` in the second half. The peak lets a model leave a plateau
        of the loss (testnet's "both left shapes"); the decay steadies a model whose
        validation score still swings (BatchNorm statistics at a high rate).
    stop_at : float, optional
        Stop once the validation score (Dice for segmentation, balanced accuracy for
        classification) has been at least ``stop_at`` for ``hold`` epochs in a row.
    hold : int, default 2
        Consecutive epochs at ``stop_at`` or above that stop the training.

    Returns
    -------
    list of dict
        One per epoch: ``epoch``, ``train_loss``, ``val_loss``, the validation scores
        (segmentation: ``val_dice``, ``val_hausdorff``; classification:
        ``val_balanced_accuracy``, ``val_tpr``, ``val_tnr``), ``seconds`` (cumulative wall
        time), ``checkpoint``. Fewer than ``epochs`` rows when ``stop_at`` or ``time_limit``
        ended the training.

    Raises
    ------
    FileExistsError
        If ``results_path`` or one of the epoch checkpoints exists (checked before any
        training).
    ValueError
        For invalid arguments or a model whose output is not (B, 1, H, W).
    """
    if task not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
    check_positive(hold, "hold")
    if stop_at is not None:
        check_positive(stop_at, "stop_at", float)
    if sample_weights is not None:
        sample_weights = torch.as_tensor(sample_weights, dtype=torch.float64)
        if (sample_weights.shape != (len(train_set),) or not torch.isfinite(sample_weights).all()
                or (sample_weights < 0).any() or not sample_weights.sum() > 0):
            raise ValueError(f"sample_weights: expected {len(train_set)} finite non-negative "
                             f"weights, not all zero, got shape {tuple(sample_weights.shape)}")
    check_positive(epochs, "epochs")
    check_positive(batch_size, "batch_size")
    check_positive(lr, "lr", float)
    if time_limit is not None:
        check_positive(time_limit, "time_limit", float)
    if len(train_set) == 0:
        raise ValueError("train_set: expected at least one sample, got an empty data set")
    if len(val_set) == 0:
        raise ValueError("val_set: expected at least one sample, got an empty data set")
    results_path = Path(results_path)
    checkpoint_dir = Path(checkpoint_dir)
    if results_path.exists():
        raise FileExistsError(
            f"results file {results_path} already exists; it is never overwritten, choose "
            "another name"
        )
    taken = [path for epoch in range(1, epochs + 1)
             if (path := checkpoint_dir / f"{checkpoint_prefix}_{epoch}.pth").exists()
             or path.is_symlink()]
    if taken:
        raise FileExistsError(
            f"checkpoint {taken[0]} already exists (a previous run's?); epoch checkpoints are "
            "never overwritten, choose another checkpoint_dir or prefix")
    results_path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(results_path, lambda file: None)  # claims the name; fails if it appeared meanwhile

    device = torch.device("cpu") if device is None else torch.device(device)
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        if sample_weights is None:
            loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=False,
                                generator=generator)
        else:
            sampler = WeightedRandomSampler(sample_weights, len(train_set), generator=generator)
            loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, drop_last=False)
        model.to(device)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model.to(memory_format=memory_format)
        optimizer = torch.optim.Adam(
            model.parameters() if parameter_groups is None else parameter_groups, lr=lr)
        scheduler = _scheduler(optimizer, schedule, epochs * len(loader))
        main_score = "val_dice" if task == "segmentation" else "val_balanced_accuracy"
        held = 0
        start = time.perf_counter()
        history: list[dict] = []
        stop = False
        for epoch in range(1, epochs + 1):
            model.train()
            total, count = 0.0, 0
            bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False,
                       file=sys.stderr, disable=not progress)
            for image, target in bar:
                if augment:
                    move = augment if callable(augment) else dihedral_augment
                    image, target = move(image, target, generator)
                image = image.to(device).contiguous(memory_format=memory_format)
                target = target.to(device)
                logits = model(image)
                if task == "classification":
                    loss = F.cross_entropy(logits, target.long().view(-1))
                else:
                    _check_output(logits, target)
                    loss = segmentation_loss(logits, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += float(loss.detach()) * len(image)
                count += len(image)
                bar.set_postfix(loss=f"{total / count:.4f}")
                if time_limit is not None and time.perf_counter() - start > time_limit:
                    stop = True
                    break
            bar.close()
            score = evaluate if task == "segmentation" else evaluate_classifier
            scores = score(model, val_set, batch_size=max(batch_size, 16), device=device)
            checkpoint = save_checkpoint(model, checkpoint_dir / f"{checkpoint_prefix}_{epoch}.pth")
            row = {
                "epoch": epoch,
                "train_loss": total / count,
                "val_loss": scores["loss"],
                **{f"val_{key}": value for key, value in scores.items() if key not in ("loss", "n")},
                "seconds": time.perf_counter() - start,
                "checkpoint": str(checkpoint),
            }
            history.append(row)
            line = _format_line(row, epochs)
            log(line)
            append_text(results_path, line + "\n")
            if stop:
                log(f"time limit of {time_limit:g} s reached, training stopped after epoch "
                    f"{epoch}")
                break
            held = held + 1 if stop_at is not None and row[main_score] >= stop_at else 0
            if held >= hold and epoch < epochs:
                log(f"{main_score} at least {stop_at:g} for {hold} epochs, training stopped "
                    f"after epoch {epoch}")
                break
        return history
    finally:
        model.to(memory_format=torch.contiguous_format)
        model.eval()
        torch.set_num_threads(old_threads)


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
    train_set, val_set = dataset_splits(dataset_root, n_train, n_val)

    torch.manual_seed(seed)
    model = default_unet()
    with tempfile.TemporaryDirectory(prefix="testnet-checkpoints-") as scratch:
        directory = Path(checkpoint_dir) if checkpoint_dir is not None else Path(scratch)
        start = time.perf_counter()
        history = train(
            model, train_set, val_set, epochs=epochs, lr=lr, batch_size=batch_size,
            results_path=results_path, checkpoint_dir=directory, checkpoint_prefix="testnet",
            seed=seed, progress=progress, time_limit=time_limit, log=log,
            num_threads=num_threads, schedule=schedule, stop_at=stop_at, hold=hold,
            sample_weights=oversampling_weights(train_set, oversample),
        )
        seconds = time.perf_counter() - start
    if out_checkpoint.exists():
        raise FileExistsError(f"checkpoint {out_checkpoint} appeared during training; not "
                              "overwriting it")
    save_checkpoint(model, out_checkpoint)
    return {
        "val_dice": history[-1]["val_dice"],
        "val_hausdorff": history[-1]["val_hausdorff"],
        "rule_learned": history[-1]["val_dice"] >= RULE_DICE,
        "train_seconds": seconds,
        "epochs": len(history),
        "n_train": len(train_set),
        "n_val": len(val_set),
        "checkpoint": str(out_checkpoint),
        "history": history,
    }
