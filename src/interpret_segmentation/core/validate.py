"""Argument checks shared by the whole library, with one wording: ``name: expected ..., got ...``.

One meaning everywhere:

* an int is a Python int or a numpy integer, never a bool;
* a number is an int or a Python or numpy float, never a bool, and NaN and inf are refused;
* an argument of the wrong type raises :class:`ArgumentTypeError` (a TypeError that is also a
  ValueError, so one ``except ValueError`` catches every refused argument); a value of the
  right type that is out of range raises ValueError.

The checks of what the machine or a model gives rather than of an argument's value
(:func:`check_finite`, :func:`check_device`, :func:`check_writable`) say what was found
instead: ``model output in batch 2: 3 of 18 values are NaN or inf``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a string where an int belongs, a bool for a number).

    Both a TypeError (what Python raises for a wrong type) and a ValueError (a refused
    argument, which the command line reports in one line), as numpy's ``AxisError`` is.
    """


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


def shown(value) -> str:
    """``value`` as an error message shows what came: its repr (a numpy scalar as the Python
    value it holds), or what it is when that is long."""
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    if len(text) <= 60:
        return text
    if is_int(value):
        return f"an int of {len(str(abs(value)))} digits"
    kind = "array" if isinstance(value, np.ndarray) else type(value).__name__
    shape = getattr(value, "shape", None)
    return (f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
            + (f" of shape {tuple(shape)}" if shape is not None else ""))


def _refused(name: str, expected: str, value, wrong_type: bool) -> ValueError:
    error = ArgumentTypeError if wrong_type else ValueError
    return error(f"{name}: expected {expected}, got {shown(value)}")


def _int_range(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f"an int in [{minimum}, {maximum}]"
    if maximum is not None:
        return f"an int <= {maximum}"
    return {None: "an int", 0: "a non-negative int", 1: "a positive int"}.get(
        minimum, f"an int >= {minimum}")


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int after checking it is one, within ``[minimum, maximum]`` if given.

    Raises
    ------
    ArgumentTypeError
        (a TypeError and a ValueError) when ``value`` is no int (a bool, a float, a string).
    ValueError
        When it is outside the bounds, e.g. ``n: expected a positive int, got 0``.
    """
    expected = _int_range(minimum, maximum)
    if not is_int(value):
        raise _refused(name, expected, value, wrong_type=True)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _refused(name, expected, value, wrong_type=False)
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

    ``low`` and ``high`` are inclusive unless ``open_low`` / ``open_high``.

    Raises
    ------
    ArgumentTypeError
        (a TypeError and a ValueError) when ``value`` is no number (a bool, a string, a
        tensor).
    ValueError
        For NaN, inf or a value outside the bounds, e.g.
        ``tau: expected a number in (0, 1], got nan``.
    """
    expected = _interval(low, high, open_low, open_high)
    if not is_number(value):
        raise _refused(name, expected, value, wrong_type=True)
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        number = math.inf
    ok = math.isfinite(number)
    if ok and low is not None:
        ok = number > low if open_low else number >= low
    if ok and high is not None:
        ok = number < high if open_high else number <= high
    if not ok:
        raise _refused(name, expected, value, wrong_type=False)
    return number


def check_positive(value, name: str, kind=int):
    """``value`` as ``kind`` (int or float) after checking it is a positive finite number of
    that kind (:func:`check_int` with minimum 1, or :func:`check_number` above 0)."""
    if kind is int:
        return check_int(value, name, minimum=1)
    return check_number(value, name, 0, open_low=True)


def check_bool(value, name: str, allow_none: bool = False) -> bool | None:
    """``value`` as a bool after checking it is a Python or numpy bool (or None when
    ``allow_none``); 0 and 1 are refused (ArgumentTypeError naming ``name``)."""
    if allow_none and value is None:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise _refused(name, "True or False" + (" or None" if allow_none else ""), value,
                       wrong_type=True)
    return bool(value)


def as_array(value, name: str, *, ndim: int | None = None, squeeze: int = 0,
             expected: str | None = None, finite: bool = False) -> np.ndarray:
    """``value`` (numpy array, torch tensor or nested sequences) as a numpy array, checked.

    Parameters
    ----------
    value : array-like or torch.Tensor
        Tensors are detached and copied to the CPU (half precision becomes float32).
    name : str
        The argument, as messages name it.
    ndim : int, optional
        Dimensions required, after dropping up to ``squeeze`` leading axes of length 1.
    squeeze : int, default 0
        How many leading axes of length 1 may be dropped to reach ``ndim``: 1 takes a single
        channel (1, H, W) for a map (H, W).
    expected : str, optional
        What the message says was expected for a wrong shape, e.g. "a 2-D map (H, W)";
        default "a {ndim}-D array".
    finite : bool, default False
        Refuse NaN and inf.

    Returns
    -------
    numpy.ndarray of the value's own dtype (bool, int or float; no copy when it is one).

    Raises
    ------
    ArgumentTypeError
        (a TypeError and a ValueError) for anything that is no array of real numbers or bools
        (complex, strings, objects, ragged lists).
    ValueError
        For the wrong number of dimensions, and for NaN or inf when ``finite``.
    """
    array = value
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        if array.dtype in (torch.float16, torch.bfloat16):
            array = array.float()
        array = array.numpy()
    try:
        array = np.asarray(array)
    except (TypeError, ValueError):  # a ragged list, say
        raise _refused(name, "an array", value, wrong_type=True) from None
    if array.dtype.kind not in "biuf":
        raise ArgumentTypeError(f"{name}: expected an array of real numbers or bools, got "
                                f"dtype {array.dtype}")
    if ndim is not None:
        dropped = 0
        while array.ndim > ndim and dropped < squeeze and array.shape[0] == 1:
            array, dropped = array[0], dropped + 1
        if array.ndim != ndim:
            raise ValueError(f"{name}: expected {expected or f'a {ndim}-D array'}, got shape "
                             f"{tuple(np.shape(value))}")
    if finite and array.dtype.kind == "f":
        bad = int(array.size - np.isfinite(array).sum())
        if bad:
            raise ValueError(f"{name}: expected finite values, got {bad} NaN or inf of "
                             f"{array.size}")
    return array


def check_class_index(class_index, classes: int, name: str = "class_index") -> int:
    """``class_index`` as an int after checking it is one of the model's ``classes`` classes.

    Negative indices are refused, not counted from the end.

    Raises
    ------
    ArgumentTypeError
        (a TypeError and a ValueError) for a non-int.
    ClassIndexError
        (an IndexError and a ValueError) for an index out of range.
    """
    if not is_int(class_index):
        raise _refused(name, "an int class index", class_index, wrong_type=True)
    if not 0 <= class_index < classes:
        hint = "; negative indices are not counted from the end" if class_index < 0 else ""
        raise ClassIndexError(f"{name}: expected a class index in 0..{classes - 1} (the "
                              f"model's classes), got {class_index}{hint}")
    return int(class_index)


def check_finite(tensor: torch.Tensor, what: str) -> None:
    """Raise ValueError naming ``what`` when ``tensor`` holds NaN or inf values."""
    bad = ~torch.isfinite(tensor.detach())
    if bool(bad.any()):
        raise ValueError(f"{what}: {int(bad.sum())} of {tensor.numel()} values are NaN or inf")


def check_device(device, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` after checking that this machine has it.

    Raises ValueError naming ``name`` for a string torch does not read as a device, for
    "meta" (it holds no values), and for an accelerator (CUDA, MPS, XPU, ...) this machine
    does not have, or not with that index.
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{name}: expected a torch device such as 'cpu' or 'cuda', got "
                         f"{device!r} ({error})") from None
    kind = resolved.type
    if kind == "cpu":
        return resolved
    if kind == "meta":
        raise ValueError(f"{name}: 'meta' tensors hold no values, so nothing can be explained "
                         "on them; use 'cpu' or an accelerator")
    label = {"cuda": "CUDA", "mps": "MPS", "xpu": "XPU"}.get(kind, kind)
    backend = _backend(kind)
    if backend is None or not backend.is_available():
        raise ValueError(f"{name}: {str(resolved)!r} asked for, but {label} is not available "
                         "here; use 'cpu'")
    count = getattr(backend, "device_count", None)
    if resolved.index is not None and count is not None and resolved.index >= count():
        raise ValueError(f"{name}: {str(resolved)!r} asked for, but this machine has "
                         f"{count()} {label} device(s)")
    return resolved


def _backend(kind: str):
    """torch's module for an accelerator type (``torch.cuda``, ``torch.backends.mps``,
    ``torch.xpu``, ...), or None when torch has none with ``is_available``."""
    if kind == "mps":
        return torch.backends.mps
    try:
        backend = getattr(torch, kind, None)
    except Exception:  # torch's lazy attribute import fails for types it does not build
        return None
    return backend if callable(getattr(backend, "is_available", None)) else None


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


def check_choice(value, name: str, choices) -> str:
    """``value`` after checking it is one of ``choices`` (strings; any iterable of them).

    Raises ValueError naming ``name``, e.g. ``schedule: expected one of one-cycle, plateau,
    got 'cosine'``.
    """
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def check_weights(values, name: str, count: int) -> torch.Tensor:
    """``values`` as a float64 tensor (count,) after checking they are ``count`` finite,
    non-negative weights, not all zero (sampling or averaging weights).

    Raises ValueError naming ``name``, what was expected and what came.
    """
    expected = f"{name}: expected {count} finite non-negative weights, not all zero, got"
    try:
        weights = torch.as_tensor(values, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{expected} {type(values).__name__}") from None
    if weights.shape != (count,):
        raise ValueError(f"{expected} shape {tuple(weights.shape)}")
    if not bool(torch.isfinite(weights).all()):
        raise ValueError(f"{expected} {int((~torch.isfinite(weights)).sum())} NaN or inf")
    if bool((weights < 0).any()):
        raise ValueError(f"{expected} a negative weight {float(weights.min())!r}")
    if not float(weights.sum()) > 0:
        raise ValueError(f"{expected} all zeros")
    return weights


def check_per_axis(value, name: str, axes: int, kind=int) -> tuple:
    """``value`` as a tuple of ``axes`` positive numbers of ``kind`` (int or float): one number
    for every axis, or a sequence of one per axis (a circle's offset, a grid's cells per side,
    voxel spacing).

    Raises ValueError naming ``name`` (``name[i]`` for a bad entry) for a sequence of another
    length and for entries that are not positive finite numbers of that kind.
    """
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.ndim else value.item()
    if isinstance(value, (tuple, list)):
        if len(value) != axes:
            what = "int" if kind is int else "number"
            raise ValueError(f"{name}: expected a positive {what} or {axes} of them (one per "
                             f"spatial axis), got {len(value)}: {shown(value)}")
        return tuple(check_positive(v, f"{name}[{axis}]", kind) for axis, v in enumerate(value))
    return (check_positive(value, name, kind),) * axes
