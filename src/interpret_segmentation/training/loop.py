"""The training loop: :func:`train` fits a model for a :class:`~.tasks.Task`, one epoch at a
time, scoring, saving and logging after each, until the epochs, a time limit or the stop rule
end it."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from tqdm.auto import tqdm

from ..core.io import append_text, atomic_write, check_file_name
from ..core.validate import (
    check_choice,
    check_device,
    check_int,
    check_positive,
    check_weights,
)
from .augment import dihedral_augment
from .checkpoints import save_checkpoint
from .seeding import seeded
from .tasks import Task, task_named, validation_scores

__all__ = ["SCHEDULES", "train"]

SCHEDULES = ("one-cycle", "plateau")
"""Learning-rate schedules of :func:`train`."""


@dataclass(frozen=True)
class _Settings:
    """The checked settings of one :func:`train` run."""

    task: Task
    epochs: int
    lr: float
    batch_size: int
    seed: int
    schedule: str
    stop_at: float | None
    hold: int
    time_limit: float | None
    augment: Callable | None
    sample_weights: torch.Tensor | None
    device: torch.device
    memory_format: torch.memory_format
    progress: bool

    @property
    def main_score(self) -> str:
        """The row key the stop rule watches, e.g. ``val_dice``."""
        return f"val_{self.task.main_score}"


def _augmentation(augment) -> Callable | None:
    if isinstance(augment, (bool, np.bool_)):
        return dihedral_augment if augment else None
    if augment is None or callable(augment):
        return augment
    raise TypeError(f"augment: expected a bool or a callable augment(images, targets, "
                    f"generator), got {type(augment).__name__}")


def _check_settings(train_set: Dataset, val_set: Dataset, *, task, epochs, lr, batch_size, seed,
                    schedule, stop_at, hold, time_limit, augment, sample_weights, device,
                    channels_last, progress) -> _Settings:
    """The :class:`_Settings` of a run, every argument checked before anything is written."""
    task = task_named(task)
    check_choice(schedule, "schedule", SCHEDULES)
    for name, value in (("train_set", train_set), ("val_set", val_set)):
        if len(value) == 0:
            raise ValueError(f"{name}: expected at least one sample, got an empty data set")
    return _Settings(
        task=task, epochs=check_positive(epochs, "epochs"), lr=check_positive(lr, "lr", float),
        batch_size=check_positive(batch_size, "batch_size"), seed=check_int(seed, "seed"),
        schedule=schedule,
        stop_at=None if stop_at is None else check_positive(stop_at, "stop_at", float),
        hold=check_positive(hold, "hold"),
        time_limit=None if time_limit is None else check_positive(time_limit, "time_limit", float),
        augment=_augmentation(augment),
        sample_weights=(None if sample_weights is None
                        else check_weights(sample_weights, "sample_weights", len(train_set))),
        device=torch.device("cpu") if device is None else check_device(device),
        memory_format=torch.channels_last if channels_last else torch.contiguous_format,
        progress=bool(progress))


@dataclass(frozen=True)
class _Outputs:
    """Where a run writes: the results file and one checkpoint per epoch."""

    results: Path
    directory: Path
    prefix: str

    def checkpoint(self, epoch: int) -> Path:
        return self.directory / f"{self.prefix}_{epoch}.pth"


def _claim_outputs(results_path, checkpoint_dir, prefix: str, epochs: int) -> _Outputs:
    """Refuse (FileExistsError) a results file or an epoch checkpoint that exists, then claim
    the results file's name (an empty file) and make the directories."""
    outputs = _Outputs(Path(results_path), Path(checkpoint_dir),
                       check_file_name(prefix, "checkpoint_prefix"))
    linked = [folder for folder in (outputs.results.parent, outputs.directory)
              if folder.is_symlink()]
    if linked:
        raise ValueError(f"results_path, checkpoint_dir: {linked[0]} is a symbolic link; "
                         "training writes only into real directories, never through links")
    if outputs.results.exists() or outputs.results.is_symlink():
        raise FileExistsError(f"results file {outputs.results} already exists; it is never "
                              "overwritten, choose another name")
    taken = [path for epoch in range(1, epochs + 1)
             if (path := outputs.checkpoint(epoch)).exists() or path.is_symlink()]
    if taken:
        raise FileExistsError(
            f"checkpoint {taken[0]} already exists (a previous run's?); epoch checkpoints are "
            "never overwritten, choose another checkpoint_dir or prefix")
    outputs.directory.mkdir(parents=True, exist_ok=True)
    atomic_write(outputs.results, lambda file: None)  # fails if the name appeared meanwhile
    return outputs


@contextmanager
def _threads(num_threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(num_threads)`` for the block (unchanged when None)."""
    before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(check_positive(num_threads, "num_threads"))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _left_contiguous_in_eval(model: nn.Module) -> Iterator[None]:
    """Whatever happens in the block, the model ends in eval mode with contiguous parameters."""
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)
        model.eval()


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


def _batches(train_set: Dataset, settings: _Settings, generator: torch.Generator) -> DataLoader:
    """Each epoch's batches: every item once, shuffled, or ``len(train_set)`` items drawn in
    proportion to ``sample_weights``."""
    if settings.sample_weights is None:
        return DataLoader(train_set, batch_size=settings.batch_size, shuffle=True,
                          drop_last=False, generator=generator)
    sampler = WeightedRandomSampler(settings.sample_weights, len(train_set), generator=generator)
    return DataLoader(train_set, batch_size=settings.batch_size, sampler=sampler, drop_last=False)


def _train_epoch(model, loader, optimizer, scheduler, settings: _Settings,
                 generator: torch.Generator, epoch: int, deadline: float) -> tuple[float, bool]:
    """One pass over ``loader``: (mean training loss, whether ``deadline`` passed and ended
    the epoch early)."""
    model.train()
    total, count, out_of_time = 0.0, 0, False
    bar = tqdm(loader, desc=f"epoch {epoch}/{settings.epochs}", unit="batch", leave=False,
               file=sys.stderr, disable=not settings.progress)
    for images, targets in bar:
        if settings.augment is not None:
            images, targets = settings.augment(images, targets, generator)
        images = images.to(settings.device).contiguous(memory_format=settings.memory_format)
        loss = settings.task.loss(model(images), targets.to(settings.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += float(loss.detach()) * len(images)
        count += len(images)
        bar.set_postfix(loss=f"{total / count:.4f}")
        if time.perf_counter() > deadline:
            out_of_time = True
            break
    bar.close()
    return total / count, out_of_time


def _end_epoch(model, val_set: Dataset, settings: _Settings, outputs: _Outputs, epoch: int,
               train_loss: float, start: float) -> dict:
    """Score the epoch on ``val_set`` and save its checkpoint; the epoch's row."""
    scores = validation_scores(settings.task, model, val_set, max(settings.batch_size, 16),
                               settings.device)
    checkpoint = save_checkpoint(model, outputs.checkpoint(epoch), overwrite=False)
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": scores["loss"],
        **{f"val_{key}": value for key, value in scores.items() if key not in ("loss", "n")},
        "seconds": time.perf_counter() - start,
        "checkpoint": str(checkpoint),
    }


def _format_line(row: dict, epochs: int) -> str:
    scores = "  ".join(f"{key} {value:.4f}" for key, value in row.items()
                       if key.startswith(("train_", "val_")))
    return f"epoch {row['epoch']:>3}/{epochs}  {scores}  seconds {row['seconds']:.1f}"


def _record(row: dict, outputs: _Outputs, epochs: int, log: Callable[[str], object]) -> None:
    """The epoch's line to ``log`` and to the end of the results file."""
    line = _format_line(row, epochs)
    log(line)
    append_text(outputs.results, line + "\n")


def _stop_rule(row: dict, held: int, out_of_time: bool, settings: _Settings) -> tuple[int, str]:
    """(epochs in a row at ``stop_at`` or above, why training stops after this epoch or "")."""
    epoch = row["epoch"]
    if out_of_time:
        return held, (f"time limit of {settings.time_limit:g} s reached, training stopped after "
                      f"epoch {epoch}")
    reached = settings.stop_at is not None and row[settings.main_score] >= settings.stop_at
    held = held + 1 if reached else 0
    if held >= settings.hold and epoch < settings.epochs:
        return held, (f"{settings.main_score} at least {settings.stop_at:g} for {settings.hold} "
                      f"epochs, training stopped after epoch {epoch}")
    return held, ""


def _fit(model: nn.Module, train_set: Dataset, val_set: Dataset, settings: _Settings,
         outputs: _Outputs, parameter_groups, log) -> list[dict]:
    """The epochs of :func:`train`, run with the global generator seeded."""
    generator = torch.Generator().manual_seed(settings.seed)
    loader = _batches(train_set, settings, generator)
    model.to(settings.device)
    model.to(memory_format=settings.memory_format)
    optimizer = torch.optim.Adam(
        model.parameters() if parameter_groups is None else parameter_groups, lr=settings.lr)
    scheduler = _scheduler(optimizer, settings.schedule, settings.epochs * len(loader))
    start = time.perf_counter()
    deadline = math.inf if settings.time_limit is None else start + settings.time_limit
    history: list[dict] = []
    held = 0
    for epoch in range(1, settings.epochs + 1):
        train_loss, out_of_time = _train_epoch(model, loader, optimizer, scheduler, settings,
                                               generator, epoch, deadline)
        row = _end_epoch(model, val_set, settings, outputs, epoch, train_loss, start)
        history.append(row)
        _record(row, outputs, settings.epochs, log)
        held, reason = _stop_rule(row, held, out_of_time, settings)
        if reason:
            log(reason)
            break
    last = history[-1][settings.main_score]
    if settings.stop_at is not None and last < settings.stop_at:
        log(f"{settings.main_score} {last:.4f} after the last epoch ({history[-1]['epoch']}), "
            f"below the target {settings.stop_at:g}: the model has not learned its task as "
            "well as asked")
    return history


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
    task: str | Task = "segmentation",
    parameter_groups: list[dict] | None = None,
    sample_weights=None,
    schedule: str = "one-cycle",
    stop_at: float | None = None,
    hold: int = 2,
) -> list[dict]:
    """Train ``model`` in place for a task: by default a one-channel segmentation model with
    BCE-with-logits + soft Dice (:class:`~.tasks.SegmentationTask`).

    Adam with a learning-rate schedule (see ``schedule``). After every epoch the model is scored
    on ``val_set`` (:meth:`~.tasks.Task.score`), its weights are saved to
    ``checkpoint_dir/<checkpoint_prefix>_<epoch>.pth`` (epochs count from 1), and one line with
    the training loss, validation loss and scores goes to ``log`` and to the end of
    ``results_path``.

    Randomness: shuffling (or weighted drawing) and augmentation draw from a generator seeded
    with ``seed``; anything in the model or the data loaders that draws from torch's global
    generator (dropout, say) sees it seeded with ``seed`` too, as after ``torch.manual_seed``,
    but only inside the call: the caller's global generators are left as they were
    (:func:`~.seeding.seeded`). Initialise the model inside ``with seeded(seed):`` for runs
    that are reproducible from the seed alone.

    Parameters
    ----------
    model : nn.Module
        Maps inputs (B, C, H, W) to the task's outputs (segmentation: logits (B, 1, H, W)).
        Trained in place; left in eval mode with contiguous parameters, also after an error.
    train_set, val_set : Dataset
        Items ``(input, target)``; segmentation: ``(image (C, H, W) float, segment (1, H, W)
        of 0/1)``, classification: ``(image, label)``.
    epochs : int
        Number of passes over ``train_set`` (at most; see ``stop_at`` and ``time_limit``).
    lr : float
        Peak learning rate of the schedule.
    batch_size : int
        Training batch; validation uses ``max(batch_size, 16)``.
    results_path : str or Path
        Text file for the per-epoch lines; must not exist yet (it is never overwritten).
    checkpoint_dir : str or Path
        Directory for the per-epoch checkpoints (created if missing); none of this run's
        checkpoint names may exist yet.
    checkpoint_prefix : str, default "testnet"
        A plain file name.
    seed : int, default 0
        Seeds the shuffling, the augmentation and, inside the call, the global generator.
    progress : bool, default True
        tqdm bar over the batches of each epoch, on stderr.
    time_limit : float, optional
        Seconds; once exceeded, the current epoch stops after its batch and is scored and
        saved as usual, and training ends.
    log : callable, default print
        Receives each epoch's line and the reason training stopped early.
    device : str or torch.device, optional
        Default CPU.
    num_threads : int, optional
        ``torch.set_num_threads`` for the run (restored afterwards); default unchanged.
    channels_last : bool, default True
        Train in the channels-last memory format (about 1.4x faster for the U-Net on CPU).
    augment : bool or callable, default False
        True: turn each training pair by a random symmetry of the square
        (:func:`~.augment.dihedral_augment`; only for square images whose labels do not depend
        on orientation). A callable ``augment(images, targets, generator)`` returning new
        ``(images, targets)`` is used as is (e.g. :func:`~.augment.affine_elastic_augment`).
    task : {"segmentation", "classification"} or Task, default "segmentation"
        What the loss and the scores are (:data:`~.tasks.TASKS`). Classification: items
        ``(image, label)``, class logits (B, K), cross-entropy, balanced accuracy.
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
        Stop once the task's main validation score (Dice for segmentation, balanced accuracy
        for classification) has been at least ``stop_at`` for ``hold`` epochs in a row.
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
        For invalid arguments or a model whose outputs do not fit the task.
    TypeError
        For an ``augment`` or ``task`` of the wrong kind.
    """
    settings = _check_settings(
        train_set, val_set, task=task, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
        schedule=schedule, stop_at=stop_at, hold=hold, time_limit=time_limit, augment=augment,
        sample_weights=sample_weights, device=device, channels_last=channels_last,
        progress=progress)
    if num_threads is not None:
        check_positive(num_threads, "num_threads")  # before any file is claimed
    outputs = _claim_outputs(results_path, checkpoint_dir, checkpoint_prefix, settings.epochs)
    with (_threads(num_threads), seeded(settings.seed, settings.device),
          _left_contiguous_in_eval(model)):
        return _fit(model, train_set, val_set, settings, outputs, parameter_groups, log)
