"""Argument checks shared by the whole library, with one wording: ``name: expected ..., got ...``.

Numbers may be Python or numpy ints and floats alike; bools, NaN and inf are refused wherever
a number is expected.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch


class ClassIndexError(IndexError, ValueError):
    """A class index outside the model's classes.

    Both an IndexError (it indexes the class dimension) and a ValueError (a refused argument),
    as numpy's ``AxisError`` is.
    """


def is_int(value) -> bool:
    """Whether ``value`` is a Python or numpy int (not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value) -> bool:
    """Whether ``value`` is a Python or numpy int or float (not a bool; NaN and inf count)."""
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)))


def check_int(value, name: str, minimum: int | None = None) -> int:
    """``value`` as an int after checking it is one (and at least ``minimum``).

    Raises ValueError naming ``name``, what was expected and what came.
    """
    if not is_int(value) or (minimum is not None and value < minimum):
        wanted = ("an int" if minimum is None else "a positive int" if minimum == 1
                  else f"an int >= {minimum}")
        raise ValueError(f"{name}: expected {wanted}, got {value!r}")
    return int(value)


def _interval(low, high, open_low: bool, open_high: bool) -> str:
    if low is not None and high is not None:
        return f"a number in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    if low == 0 and open_low:
        return "a positive number"
    if low is not None:
        return f"a number {'>' if open_low else '>='} {low}"
    if high is not None:
        return f"a number {'<' if open_high else '<='} {high}"
    return "a finite number"


def check_number(value, name: str, low=None, high=None, *, open_low: bool = False,
                 open_high: bool = False) -> float:
    """``value`` as a float after checking it is a finite number within the bounds given.

    ``low`` and ``high`` are inclusive unless ``open_low`` / ``open_high``. Raises ValueError
    naming ``name``, e.g. ``tau: expected a number in (0, 1], got nan``.
    """
    ok = is_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if open_low else value >= low
    if ok and high is not None:
        ok = value < high if open_high else value <= high
    if not ok:
        raise ValueError(f"{name}: expected {_interval(low, high, open_low, open_high)}, "
                         f"got {value!r}")
    return float(value)


def check_positive(value, name: str, kind=int):
    """``value`` as ``kind`` (int or float) after checking it is a positive finite number of
    that kind; otherwise a ValueError naming ``name``, what was expected and what came."""
    if kind is int:
        return check_int(value, name, minimum=1)
    return check_number(value, name, 0, open_low=True)


def check_class_index(class_index, classes: int, name: str = "class_index") -> int:
    """``class_index`` as an int after checking it is one of the model's ``classes`` classes.

    Negative indices are refused, not counted from the end. Raises TypeError for a non-int
    and :class:`ClassIndexError` (an IndexError and a ValueError) for an index out of range.
    """
    if not is_int(class_index):
        raise TypeError(f"{name}: expected an int class index, got "
                        f"{type(class_index).__name__} {class_index!r}")
    if not 0 <= class_index < classes:
        hint = " (negative indices are not counted from the end)" if class_index < 0 else ""
        raise ClassIndexError(f"{name}: class index {class_index} is outside the model's "
                              f"classes 0..{classes - 1}{hint}")
    return int(class_index)


def check_finite(tensor: torch.Tensor, what: str) -> None:
    """Raise ValueError naming ``what`` when ``tensor`` holds NaN or inf values."""
    bad = ~torch.isfinite(tensor.detach())
    if bool(bad.any()):
        raise ValueError(f"{what}: {int(bad.sum())} of {tensor.numel()} values are NaN or inf")


def check_device(device, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` after checking that this machine has it.

    Raises ValueError naming ``name`` for a string torch does not read as a device and for a
    CUDA or MPS device this machine does not have.
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{name}: expected a torch device such as 'cpu' or 'cuda', got "
                         f"{device!r} ({error})") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}: {str(resolved)!r} asked for, but CUDA is not available "
                             "here; use 'cpu'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"{name}: {str(resolved)!r} asked for, but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}: 'mps' asked for, but MPS is not available here; use 'cpu'")
    return resolved


def check_writable(path, name: str = "--out") -> Path:
    """``path`` as a Path after checking that this process can write there: into the
    directory ``path``, or, for a path still to be made, into its nearest existing parent.

    Raises ValueError naming ``name`` (a read-only directory or file system, or a parent that
    is a file). Whether ``path`` itself may be a link or a file is the caller's to decide.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:  # ends at the root
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{name}: {path} cannot be made, {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: {existing} is not writable (read-only directory or file "
                         "system); choose another directory")
    return path
