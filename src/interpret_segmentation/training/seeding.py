"""Seeded blocks that leave torch's global random generators as the caller had them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..core.validate import check_device, check_int

__all__ = ["seeded"]


@contextmanager
def seeded(seed: int, device=None) -> Iterator[None]:
    """Run a block with torch's global generator seeded, then give the caller's state back.

    Inside the block the CPU generator (and, for a CUDA or other accelerator ``device``, that
    device's generator) draws exactly what it would after ``torch.manual_seed(seed)``, so a
    model initialised or trained there gets the same weights; afterwards the generators are in
    the state they had before the block (``torch.random.fork_rng``). Other devices' generators
    are neither read nor seeded.

    Parameters
    ----------
    seed : int
    device : str or torch.device, optional
        The device whose generator is also seeded; default the CPU alone.

    Examples
    --------
    >>> with seeded(0):
    ...     model = UNet(width=4)  # the weights torch.manual_seed(0) would give
    """
    seed = check_int(seed, "seed")
    device = torch.device("cpu") if device is None else check_device(device)
    if device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield
        return
    module = torch.get_device_module(device.type)
    index = device.index if device.index is not None else module.current_device()
    with torch.random.fork_rng(devices=[index], device_type=device.type):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        else:
            module.manual_seed(seed)
        yield
