"""Evaluate a lazily generated stream of perturbed inputs in memory-bounded batches.

Perturbation methods (HDM, RISE, ...) describe their inputs by two callbacks: one that builds
the inputs ``start:stop`` and one that consumes the model's probabilities for them. Only one
batch of inputs exists at a time, so memory is O(batch x image) whatever the number of
perturbations.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .model import ModelAdapter

MakeBatch = Callable[[int, int], torch.Tensor]
Consume = Callable[[int, int, torch.Tensor], None]

AUTO_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
PROBE_TRIALS = 2


@dataclass
class BatchRun:
    """What one evaluation cost: the batch size used, model passes and seconds."""

    batch_size: int
    passes: int
    model_seconds: float
    total_seconds: float


def check_batch_size(batch_size) -> None:
    """Raise ValueError unless ``batch_size`` is a positive int or "auto"."""
    if batch_size == "auto":
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size: expected a positive int or 'auto', got {batch_size!r}")


def _built(make_batch: MakeBatch, start: int, stop: int) -> torch.Tensor:
    """``make_batch(start, stop)``, checked to hold one input per item."""
    inputs = make_batch(start, stop)
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4 or len(inputs) != stop - start:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ValueError(f"perturbed inputs: expected a tensor ({stop - start}, C, H, W) for "
                         f"items {start}:{stop}, got {shape}")
    return inputs


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate_perturbations(
    model: ModelAdapter,
    count: int,
    make_batch: MakeBatch,
    consume: Consume,
    *,
    batch_size: int | str = "auto",
    progress: bool = True,
    description: str = "perturbations",
) -> BatchRun:
    """Run ``count`` perturbed inputs through ``model`` batch by batch.

    Parameters
    ----------
    model : ModelAdapter
    count : int
        Number of perturbed inputs.
    make_batch : callable (start, stop) -> Tensor (stop - start, C, H, W)
        Builds the inputs ``start:stop``; called once per batch.
    consume : callable (start, stop, probabilities (stop - start, K, H, W)) -> None
        Receives the model's probabilities for those inputs.
    batch_size : int or "auto", default "auto"
        "auto" processes the first items at growing batch sizes (1, 2, 4, ... 64, two batches
        each), keeps the fastest per item, and halves the size on out-of-memory errors. The
        probe's batches are real work, so "auto" costs nothing extra.
    progress : bool, default True
        tqdm bar on stderr.

    Returns
    -------
    BatchRun

    Raises
    ------
    ValueError
        When the model returns NaN or inf, naming the first batch where it did.
    """
    check_batch_size(batch_size)
    auto = batch_size == "auto"
    probe = iter(AUTO_BATCH_SIZES[1:]) if auto else None  # sizes still to try
    size = AUTO_BATCH_SIZES[0] if auto else batch_size
    best_size, best_rate = size, float("inf")
    trials: list[float] = []
    passes, model_seconds = 0, 0.0
    started = time.perf_counter()
    bar = tqdm(total=count, desc=description, disable=not progress, file=sys.stderr,
               leave=False)
    start = batch_index = 0
    with torch.no_grad():
        while start < count:
            stop = min(start + size, count)
            inputs = _built(make_batch, start, stop)
            try:
                _synchronize(model.device)
                tick = time.perf_counter()
                probabilities = model(inputs, where=f"in batch {batch_index} ({description} "
                                                    f"{start}:{stop} of {count})")
                _synchronize(model.device)
                elapsed = time.perf_counter() - tick
            except RuntimeError as error:
                if not (auto and _is_out_of_memory(error) and size > 1):
                    raise
                del inputs
                if model.device.type == "cuda":
                    torch.cuda.empty_cache()
                size = best_size = max(1, size // 2)
                probe = None
                continue
            consume(start, stop, probabilities)
            del inputs, probabilities
            model_seconds += elapsed
            passes += stop - start
            bar.update(stop - start)
            batch_index += 1
            if probe is not None and stop - start == size:
                # each size is timed on two batches (the faster counts), to damp noise
                trials.append(elapsed / size)
                if len(trials) == PROBE_TRIALS:
                    rate = min(trials)
                    trials = []
                    if rate < 0.95 * best_rate:
                        best_size, best_rate = size, rate
                        size = next(probe, size)
                    else:
                        size, probe = best_size, None
            start = stop
    bar.close()
    return BatchRun(
        batch_size=best_size if auto else batch_size,
        passes=passes,
        model_seconds=model_seconds,
        total_seconds=time.perf_counter() - started,
    )


def changed_items(count: int, make_batch: MakeBatch, unperturbed: torch.Tensor,
                  chunk: int = 64) -> torch.Tensor:
    """Indices of the perturbed inputs that differ from ``unperturbed`` (1, C, H, W).

    A perturbation that leaves the input as it was (an occluder over pixels that already
    have its fill value, e.g. black on black background) gives the unperturbed output, so a
    method can skip its model pass. Inputs are built ``chunk`` at a time, without the model.

    Returns
    -------
    Tensor (n_changed,) of int64, increasing.
    """
    changed = []
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        inputs = _built(make_batch, start, stop)
        differs = (inputs != unperturbed).flatten(1).any(1).cpu()
        changed.append(torch.arange(start, stop)[differs])
    return torch.cat(changed) if changed else torch.zeros(0, dtype=torch.int64)


def time_model_passes(model: ModelAdapter, example: torch.Tensor, count: int,
                      batch_size: int, backward: bool = False) -> float:
    """Seconds for ``count`` forward passes of ``example`` (1, C, H, W) alone, at ``batch_size``.

    The floor a method is measured against: same model, same number of inputs, same batch
    size, no perturbation or bookkeeping. With ``backward`` each pass is followed by the
    backward pass to the input (the gradient of the summed output), as optimisation and
    gradient methods need.
    """
    check_batch_size(batch_size)
    batch = example.expand(batch_size, *example.shape[1:]).contiguous()

    def one_pass(inputs: torch.Tensor) -> None:
        if not backward:
            with torch.no_grad():
                model(inputs)
            return
        inputs = inputs.clone().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(model(inputs).sum(), [inputs])

    one_pass(batch[:1])  # warm-up, not timed
    _synchronize(model.device)
    tick = time.perf_counter()
    for start in range(0, count, batch_size):
        one_pass(batch[: min(batch_size, count - start)])
    _synchronize(model.device)
    return time.perf_counter() - tick
