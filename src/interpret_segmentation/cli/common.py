"""What several commands share: the named data sets, option types and groups, model building
and image reading."""

from __future__ import annotations

import argparse
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
    add_engine_options(parser)
    add_progress(parser)


def non_negative_number(text: str) -> float:
    """argparse type of a finite number >= 0 (``--gpus-per-worker``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Where a data-set run's items are explained: ``--engine``, ``--workers``, ``--address``,
    ``--gpus-per-worker``, ``--items-per-batch``."""
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: in this process (default); ray: on a Ray cluster, one "
                             "worker per --workers, each loading the model once (needs "
                             "`pip install interpret-segmentation[ray]`)")
    parser.add_argument("--workers", type=int, default=1,
                        help="Ray workers (default 1; the local engine runs one)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join: 'auto' or ray://HOST:PORT (default: start a "
                             "local one)")
    parser.add_argument("--gpus-per-worker", type=non_negative_number, default=0.0,
                        metavar="G", help="GPUs for each Ray worker, fractions allowed "
                                          "(default 0)")
    parser.add_argument("--items-per-batch", type=int, default=4,
                        help="items sent to a Ray worker at a time (default 4)")


def engine_options(args) -> dict:
    """The keyword arguments of :func:`~interpret_segmentation.studies.engines.get_engine`
    from :func:`add_engine_options`'s flags, named as the flags."""
    for flag, value in (("--workers", args.workers), ("--items-per-batch", args.items_per_batch)):
        if value < 1:
            raise ValueError(f"{flag}: expected a positive int, got {value}")
    if args.engine == "local" and (args.workers != 1 or args.address is not None
                                   or args.gpus_per_worker):
        raise ValueError("--engine: the local engine runs one worker in this process; "
                         "--workers, --address and --gpus-per-worker need --engine ray")
    return {"engine": args.engine, "workers": args.workers, "address": args.address,
            "gpus_per_worker": args.gpus_per_worker, "items_per_batch": args.items_per_batch}


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
    weights of ``--checkpoint`` (:func:`~interpret_segmentation.training.build_model`)."""
    from ..training import build_model as build

    return build(spec, checkpoint)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The model, how its input is read and how it is run: the flags ``explain`` and
    ``explain-dataset`` share (every explainer's options)."""
    parser.add_argument("--checkpoint", default=CHECKPOINT,
                        help=f"state dict to load (default {CHECKPOINT})")
    parser.add_argument("--model", default=None, metavar="MODULE:CALLABLE",
                        help="builds the model the checkpoint belongs to, e.g. "
                             "mypackage.models:build (default: the library's demo U-Net)")
    parser.add_argument("--spatial-dims", type=int, choices=(2, 3), default=None,
                        help="2 for images, 3 for volumes (default: that of the model's first "
                             "convolution, Conv2d or Conv3d; for a model without one, 3 for a "
                             "NIfTI volume or a 5-D .npy and 2 otherwise). With 3, a 3-D array "
                             "is (D, H, W) and a 4-D one (C, D, H, W)")
    parser.add_argument("--nifti-axes", choices=("xyz", "zyx"), default="xyz",
                        help="order of a NIfTI file's spatial axes as the model sees them: xyz "
                             "as stored (nibabel's and MONAI LoadImage's order, default) or zyx "
                             "(reversed); a 4-D file's fourth axis is always the channels")
    parser.add_argument("--spacing", type=positive_number, nargs="+", default=None,
                        metavar="SIZE",
                        help="voxel size along each spatial axis, in the order D H W (or H W), "
                             "for the methods that measure distances (default: a NIfTI "
                             "file's header, else 1 each)")
    parser.add_argument("--baseline", type=baseline_value, default=None, metavar="VALUE",
                        help="what removed pixels become in perturbation methods: a number, "
                             "min (the image's minimum), mean (per channel), blur (a blurred "
                             "image) or a file of the image's shape read like --image (default: "
                             "the method's own, 0 for most)")
    parser.add_argument("--output", default="auto", choices=("auto", "logits", "probabilities"),
                        help="what the model returns (default auto: logits unless its outputs "
                             "lie in [0, 1]; a warning says when that is a guess)")
    parser.add_argument("--activation", default="auto", choices=("auto", "softmax", "sigmoid"),
                        help="how logits become class probabilities: softmax over classes or a "
                             "sigmoid per channel for multi-label heads (default auto: "
                             "softmax, a sigmoid for a one-channel model)")
    parser.add_argument("--read", default=None, metavar="KEY",
                        help="key (or attribute) of the model's output that holds the "
                             "segmentation (default: the output itself if a tensor, else its "
                             "'logits' or 'out' entry, or a tuple's first element)")
    parser.add_argument("--batch-size", type=batch_size, default="auto",
                        help="inputs per model pass: a positive int or auto (default auto)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def methods_of(text: str) -> list[str]:
    """The method names ``--methods`` lists (ValueError naming the flag otherwise)."""
    from ..methods import registry

    known = registry.available("segmentation")
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"--methods: expected some of {', '.join(known)}, separated by commas, "
                         f"got {text!r}")
    return names
