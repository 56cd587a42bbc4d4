"""The perturbation protocol: a method describes its perturbed inputs, the core runs them.

A perturbation method (HDM, RISE, MiSuRe's dilations, deletion/insertion, ...) gives a count
and a function ``make(start, stop) -> (payload, inputs)`` that builds the perturbed inputs
``start:stop`` together with whatever the method needs to read their outputs (the masks, the
circle indices, ...). :class:`Perturbations` runs them through the model batch by batch and
hands back ``(payload, probabilities)``: the method's loop keeps its own state, with no side
channels. Only one batch of inputs exists at a time, so memory is O(batch x input) whatever
the number of perturbations. :class:`BatchSize` owns the batch size ("auto" probing and
out-of-memory back-off).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from .model import ModelAdapter
from .validate import check_positive

Make = Callable[[int, int], tuple[Any, torch.Tensor]]

AUTO_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
PROBE_TRIALS = 2


def check_batch_size(batch_size) -> int | str:
    """``batch_size`` if it is a positive int or "auto"; ValueError otherwise."""
    if batch_size == "auto":
        return batch_size
    return check_positive(batch_size, "batch_size")


class BatchSize:
    """The batch size of one run: fixed, or "auto".

    "auto" runs the first batches at growing sizes (1, 2, 4, ... 64, two batches each), keeps
    the fastest per item, and halves the size after an out-of-memory error. The probe's
    batches are real work, so "auto" costs nothing extra.

    Parameters
    ----------
    batch_size : int or "auto"
    """

    def __init__(self, batch_size: int | str = "auto"):
        self.auto = check_batch_size(batch_size) == "auto"
        self.size = AUTO_BATCH_SIZES[0] if self.auto else batch_size
        self.best = self.size
        self._best_rate = float("inf")
        self._sizes_left = iter(AUTO_BATCH_SIZES[1:]) if self.auto else None
        self._trials: list[float] = []

    def record(self, items: int, seconds: float) -> None:
        """A batch of ``items`` took ``seconds``: while probing, move to the next size or settle."""
        if self._sizes_left is None or items != self.size:
            return
        self._trials.append(seconds / items)  # the faster of two trials counts, to damp noise
        if len(self._trials) < PROBE_TRIALS:
            return
        rate, self._trials = min(self._trials), []
        if rate < 0.95 * self._best_rate:
            self.best, self._best_rate = self.size, rate
            self.size = next(self._sizes_left, self.size)
        else:
            self.size, self._sizes_left = self.best, None

    def shrink(self) -> bool:
        """After an out-of-memory error: halve the size and stop probing. False if it can't."""
        if not self.auto or self.size == 1:
            return False
        self.size = self.best = max(1, self.size // 2)
        self._sizes_left = None
        return True


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (so that a timer measures it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Perturbations:
    """Run ``count`` perturbed inputs through ``model``; iterate to get ``(payload, probabilities)``.

    Parameters
    ----------
    model : ModelAdapter
    count : int
        Number of perturbed inputs (an upper bound: the caller may stop iterating early).
    make : callable (start, stop) -> (payload, inputs (stop - start, C, *spatial))
        Builds the inputs ``start:stop`` and what the method needs to read their outputs.
    batch_size : int or "auto", default "auto"
    progress : bool, default True
        tqdm bar on stderr.
    description : str
        Names the perturbations in the progress bar and in errors.

    After iterating, ``passes`` (inputs run), ``model_seconds`` (time in model passes) and
    ``batch_size`` (the size used, or settled on by "auto") describe the run.

    Raises
    ------
    ValueError
        When ``make`` returns the wrong number of inputs, or the model returns NaN or inf
        (naming the batch where it did).
    """

    def __init__(self, model: ModelAdapter, count: int, make: Make, *,
                 batch_size: int | str = "auto", progress: bool = True,
                 description: str = "perturbations"):
        self.model, self.count, self.make = model, count, make
        self.sizes = BatchSize(batch_size)
        self.progress, self.description = progress, description
        self.passes, self.model_seconds = 0, 0.0

    @property
    def batch_size(self) -> int:
        return self.sizes.best

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        bar = tqdm(total=self.count, desc=self.description, disable=not self.progress,
                   file=sys.stderr, leave=False)
        start = batch_index = 0
        try:
            while start < self.count:
                stop = min(start + self.sizes.size, self.count)
                payload, inputs = built(self.make, start, stop)
                try:
                    probabilities, seconds = self._timed_pass(inputs, start, stop, batch_index)
                except RuntimeError as error:
                    if not (is_out_of_memory(error) and self.sizes.shrink()):
                        raise
                    del inputs, payload
                    if self.model.device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                del inputs
                self.sizes.record(stop - start, seconds)
                self.model_seconds += seconds
                self.passes += stop - start
                bar.update(stop - start)
                batch_index += 1
                start = stop
                yield payload, probabilities
        finally:
            bar.close()

    def _timed_pass(self, inputs, start, stop, batch_index) -> tuple[torch.Tensor, float]:
        synchronize(self.model.device)
        tick = time.perf_counter()
        with torch.no_grad():  # only around the pass: grad mode never leaks into the caller
            probabilities = self.model(inputs, where=f"in batch {batch_index} "
                                                     f"({self.description} {start}:{stop} of "
                                                     f"{self.count})")
        synchronize(self.model.device)
        return probabilities, time.perf_counter() - tick


def built(make: Make, start: int, stop: int) -> tuple[Any, torch.Tensor]:
    """``make(start, stop)``, checked to give one input per item."""
    made = make(start, stop)
    inputs = made[1] if isinstance(made, tuple) and len(made) == 2 else None
    if not isinstance(inputs, torch.Tensor) or inputs.ndim < 3 or len(inputs) != stop - start:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(made).__name__
        raise ValueError(f"perturbed inputs: expected (payload, a tensor ({stop - start}, C, "
                         f"*spatial)) for items {start}:{stop}, got {shape}")
    return made


def changed_items(count: int, make: Make, unperturbed: torch.Tensor,
                  chunk: int = 64) -> torch.Tensor:
    """Indices of the perturbed inputs that differ from ``unperturbed`` (1, C, *spatial).

    A perturbation that leaves the input as it was (an occluder over pixels that already
    have its fill value) gives the unperturbed output, so a method can skip its model pass.
    Inputs are built ``chunk`` at a time, without the model.

    Returns
    -------
    Tensor (n_changed,) of int64, increasing.
    """
    differs = []  # kept on the inputs' device: one transfer at the end
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        _, inputs = built(make, start, stop)
        differs.append((inputs != unperturbed).flatten(1).any(1))
    if not differs:
        return torch.zeros(0, dtype=torch.int64)
    return torch.nonzero(torch.cat(differs).cpu()).flatten()


def time_model_passes(model: ModelAdapter, example: torch.Tensor, count: int,
                      batch_size: int, backward: bool = False) -> float:
    """Seconds for ``count`` forward passes of ``example`` (1, C, *spatial) alone, at ``batch_size``.

    The floor a method is measured against: same model, same number of inputs, same batch
    size, no perturbation or bookkeeping. With ``backward`` each pass is followed by the
    backward pass to the input (the gradient of the summed output), as optimisation and
    gradient methods need.
    """
    check_positive(batch_size, "batch_size")
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
    synchronize(model.device)
    tick = time.perf_counter()
    for start in range(0, count, batch_size):
        one_pass(batch[: min(batch_size, count - start)])
    synchronize(model.device)
    return time.perf_counter() - tick
