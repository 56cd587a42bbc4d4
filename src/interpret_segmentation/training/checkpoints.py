"""Checkpoints: state dicts written atomically and read with ``weights_only=True``, and the
library's U-Net rebuilt from a checkpoint alone (:func:`load_default_model`)."""

from __future__ import annotations

import importlib
import inspect
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..core.io import atomic_write
from ..models.unet import UNet

__all__ = ["save_checkpoint", "load_checkpoint", "load_default_model", "unet_architecture",
           "build_model"]

_HOW_TO_TRAIN = (
    "train one with `interpret-segmentation testnet train` or `triangle train` (`make demo` "
    "trains the default testnet model)"
)


def unet_architecture(state: dict) -> dict:
    """The :class:`~interpret_segmentation.models.UNet` keyword arguments a state dict was made
    with (``in_channels``, ``out_channels``, ``width``, ``depth``, ``global_context``, ``norm``,
    ``robust_context``, ``decoder_context``), read from its parameter names and shapes.

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
    its forward pass about 1.5 times faster on CPU (the results are the same). The caller's
    global random generator is left as it was. Raises FileNotFoundError saying how to train
    one when ``path`` is missing.
    """
    state = _read_state(path)
    try:
        architecture = unet_architecture(state)
    except ValueError as error:
        raise ValueError(f"checkpoint {path}: {error}") from None
    with torch.random.fork_rng(devices=[]):  # the initial weights, overwritten, draw from a copy
        model = UNet(**architecture)
    model = _load_state(model, state, path)
    return model.to(memory_format=torch.channels_last).eval()


def save_checkpoint(model: nn.Module, path, *, overwrite: bool = True) -> Path:
    """Save ``model.state_dict()`` (on the CPU) to ``path`` atomically (temporary file, then
    rename).

    Parent directories are created. With ``overwrite`` (default True) a file at ``path`` is
    replaced; without, a FileExistsError is raised and nothing is written. A symbolic link at
    ``path`` is replaced, never written through. Returns ``path`` as a Path.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda file: torch.save(state, file), overwrite=overwrite)
    return path


_STATE_DICT = "a state dict saved with torch.save(model.state_dict(), path)"


def _read_state(path) -> dict:
    """The state dict in ``path``, read with ``weights_only=True``.

    Raises FileNotFoundError when ``path`` is missing and ValueError naming it when it is
    unreadable, truncated, a pickled model (which ``weights_only`` refuses) or not a mapping
    of names to tensors.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ValueError(f"checkpoint {path}: expected a file of weights, got a directory or "
                         "other non-file")
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


def build_model(spec: str | None, checkpoint) -> nn.Module:
    """The model ``spec`` ("MODULE:CALLABLE", a callable taking no arguments; None for the
    library's U-Net) builds, with the weights of ``checkpoint``; ValueError naming ``--model``
    for anything that does not fit."""
    if spec is None:
        return load_default_model(checkpoint)
    return load_checkpoint(_user_model(spec), checkpoint)


def _user_model(spec: str):
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--model: expected MODULE:CALLABLE, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, TypeError, ValueError) as error:
        raise ValueError(f"--model: cannot import {module_name!r} ({error})") from None
    build = getattr(module, attribute, None)
    if build is None:
        raise ValueError(f"--model: module {module_name!r} has no attribute {attribute!r}")
    if not callable(build):
        raise ValueError(f"--model: {spec} is a {type(build).__name__}, expected a callable "
                         "that builds the model")
    try:
        inspect.signature(build).bind()
    except TypeError as error:
        raise ValueError(f"--model: {spec} cannot be called without arguments ({error})") from None
    except ValueError:  # no signature to read (some builtins): just call it
        pass
    model = build()
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model: {spec}() returned a {type(model).__name__}, expected a "
                         "torch.nn.Module")
    return model
