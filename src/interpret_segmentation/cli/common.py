"""What several commands share: the named data sets, option types and groups, model building
and image reading."""

from __future__ import annotations

import argparse
import importlib
import inspect
import math
from pathlib import Path

DATASETS = {
    "testnet": {"dataset": "examples/testnet/dataset", "checkpoint": "examples/testnet/testnet.pth",
                "n": 1000, "size": 240, "about": "the synthetic testnet data set (seed 000)"},
    "triangle": {"dataset": "examples/triangle/dataset",
                 "checkpoint": "examples/triangle/triangle.pth", "n": 2000, "size": 224,
                 "about": "the Triangle data set of seed 001, built from scikit-learn's digits"},
}
"""The data sets the CLI generates and trains on, with their default directory and model."""
DATASET = DATASETS["testnet"]["dataset"]
CHECKPOINT = DATASETS["testnet"]["checkpoint"]


def batch_size(text: str):
    """argparse type of ``--batch-size``: a positive int or "auto"."""
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int or 'auto', got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive int or 'auto', got {text!r}")
    return value


def add_progress(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``, which every command takes (``args.progress``)."""
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="hide progress bars")


def add_study_options(parser: argparse.ArgumentParser, images: int, out: str) -> None:
    """The options every data-set study (evaluate, sweep, reliability) shares."""
    parser.add_argument("--dataset", default="testnet",
                        help="'testnet' (examples/testnet/dataset), 'triangle' "
                             "(examples/triangle/dataset) or a data-set directory in the same "
                             "layout (default testnet)")
    parser.add_argument("--checkpoint", default=None,
                        help="U-Net weights for that data set (default: examples/<name>/<name>.pth "
                             f"for a named data set, {CHECKPOINT} for a directory)")
    parser.add_argument("--n", type=int, default=images,
                        help=f"validation images to explain (default {images})")
    parser.add_argument("--out", default=out, help=f"output directory (default {out})")
    add_progress(parser)


def dataset_path(args) -> str:
    """The data-set directory ``--dataset`` names."""
    known = DATASETS.get(args.dataset)
    return known["dataset"] if known else args.dataset


def dataset_name(args) -> str | None:
    """``--dataset`` when it names one of :data:`DATASETS`, else None."""
    return args.dataset if args.dataset in DATASETS else None


def checkpoint_path(args) -> str:
    """``--checkpoint``, or the named data set's model (testnet's for a directory)."""
    if args.checkpoint is not None:
        return args.checkpoint
    return DATASETS.get(args.dataset, DATASETS["testnet"])["checkpoint"]


def positive_number(text: str) -> float:
    """argparse type of a positive finite number (``--spacing``)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


BASELINES = ("min", "mean", "blur")
"""The baselines ``--baseline`` takes by name (besides a number or a file)."""


def baseline_value(text: str):
    """argparse type of ``--baseline``: a finite number, one of :data:`BASELINES`, or the Path
    of an existing file (read later, like ``--image``)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None and math.isfinite(value):
        return value
    if text in BASELINES:
        return text
    if value is None and Path(text).is_file():
        return Path(text)
    raise argparse.ArgumentTypeError(f"expected a number, {', '.join(BASELINES)} or an image/array "
                                     f"file, got {text!r}")


def load_array(path: Path, name: str, channels: int | None = 1, nifti_axes: str = "xyz"):
    """``path`` as :func:`~interpret_segmentation.datasets.files.read_image_file` reads it
    (``(array, spacing)``), and one line saying what was read (shape, dtype, value range,
    voxel spacing when the file gives one)."""
    from ..datasets.files import read_image_file

    read = read_image_file(path, channels, name, nifti_axes)
    array = read.array
    values = f"values {array.min():.4g}..{array.max():.4g}" if array.size else "no values"
    spacing = "" if read.spacing is None else f", spacing {' x '.join(f'{s:g}' for s in read.spacing)}"
    print(f"read {name} {path}: shape {array.shape}, {array.dtype}, {values}{spacing}")
    return read


def build_model(spec: str | None, checkpoint: str):
    """The model ``--model MODULE:CALLABLE`` builds (default: the library's U-Net) with the
    weights of ``--checkpoint``; ValueError naming the flag for anything that does not fit."""
    from ..training import load_checkpoint, load_default_model

    if spec is None:
        return load_default_model(checkpoint)
    return load_checkpoint(_user_model(spec), checkpoint)


def _user_model(spec: str):
    from torch import nn

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
