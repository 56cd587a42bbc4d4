"""``explain-dataset``: every image of a data set explained with several methods, resumable,
on this machine or a Ray cluster, with an HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..methods import registry
from .common import (
    DATASETS,
    add_engine_options,
    add_model_options,
    add_progress,
    engine_options,
    load_array,
    methods_of,
)


def add_parser(commands) -> None:
    methods = ",".join(registry.available("segmentation"))
    parser = commands.add_parser(
        "explain-dataset", help="explain every image of a data set; HTML report",
        description="Explain every image (or volume) of --data with each method and write, "
                    "item by item, rows.csv, items/<item>/ (each explanation, the image and "
                    "its mask), table.md and table.csv (Dice explained and perturbation ratio "
                    "at each method's thresholds, seconds per item, context hit rate) and "
                    "report.html (one self-contained page to browse). A rerun with the same "
                    "settings continues where a stopped run ended; other settings are refused.")
    parser.set_defaults(run=run)
    parser.add_argument("--data", required=True,
                        help="a directory of images (PNG, 16-bit PNG, .npy, NIfTI .nii/.nii.gz), "
                             "a data set in the library's layout (its validation split), or "
                             "testnet or triangle (examples/<name>/dataset)")
    parser.add_argument("--masks", default=None,
                        help="a directory of ground-truth masks named like the images (any "
                             "readable suffix; nonzero is inside)")
    parser.add_argument("--n", type=int, default=None,
                        help="for a data set in the library's layout: the first N validation "
                             "images (default all)")
    parser.add_argument("--methods", default=methods,
                        help=f"comma-separated registered methods (default {methods})")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="METHOD.OPTION=VALUE",
                        help="a method's option, e.g. rise.n_masks=500 or hdm.circle_size=15 "
                             "(repeat for more; `explain METHOD --help` lists each method's "
                             "options)")
    parser.add_argument("--class", dest="classes", type=int, action="append", default=None,
                        help="class (or label channel) to explain in every item; repeat for "
                             "several (default 1: the foreground)")
    add_model_options(parser)
    parser.add_argument("--out", default="out/explain-dataset",
                        help="output directory (default out/explain-dataset)")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty --out this command did not make (nothing "
                             "there is deleted)")
    add_engine_options(parser)
    add_progress(parser)


def method_settings(names_text: str, settings: list[str]) -> dict[str, dict]:
    """``{method: options}`` from ``--methods`` and the ``--set METHOD.OPTION=VALUE`` flags,
    each value read as the option's type; ValueError naming the flag otherwise."""
    names = methods_of(names_text)
    chosen: dict[str, dict] = {name: {} for name in names}
    for text in settings:
        target, equals, value = text.partition("=")
        method, dot, option_name = target.partition(".")
        if not equals or not dot:
            raise ValueError(f"--set: expected METHOD.OPTION=VALUE, got {text!r}")
        if method not in chosen:
            raise ValueError(f"--set: {method!r} is not one of --methods ({', '.join(names)})")
        options = {option.name: option for option in registry.get(method).options}
        if option_name not in options:
            raise ValueError(f"--set: {method} has no option {option_name!r}; expected one of "
                             f"{', '.join(options)}")
        chosen[method][option_name] = _typed(options[option_name], value, text)
    return chosen


def _typed(option: registry.Option, value: str, text: str):
    if option.type is bool:
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"--set: {text!r}: expected true or false")
        return value.lower() in ("true", "1", "yes")
    try:
        typed = option.type(value)
    except ValueError:
        raise ValueError(f"--set: {text!r}: expected a {option.type.__name__}") from None
    if option.choices and typed not in option.choices:
        raise ValueError(f"--set: {text!r}: expected one of {', '.join(map(str, option.choices))}")
    return typed


def _source(args):
    """The data set ``--data`` names, as the runner reads it."""
    from ..datasets.sources import FolderSource
    from ..studies.work import ValidationSource

    if args.n is not None and args.n < 1:
        raise ValueError(f"--n: expected a positive int, got {args.n}")
    path = Path(DATASETS[args.data]["dataset"] if args.data in DATASETS else args.data)
    if not path.is_dir():
        raise ValueError(f"--data: expected a directory of images, a data set or one of "
                         f"{', '.join(DATASETS)}, got {args.data!r}")
    if any(entry.is_dir() and entry.name.isdigit() for entry in path.iterdir()):
        return ValidationSource(path, args.n)
    if args.n is not None:
        raise ValueError("--n: only for a data set in the library's layout; a directory of "
                         "images is explained whole")
    return FolderSource(path, args.masks, nifti_axes=args.nifti_axes)


def _explainer_options(args, model, source) -> dict:
    """Every explainer's options from the flags: spatial dimensions from the flag or the
    model's first convolution, else 3 when the first item is a NIfTI volume."""
    import torch

    from ..core.model import first_convolution

    dims = args.spatial_dims
    if dims is None:
        found = first_convolution(model)
        if found is not None and len(found[1].kernel_size) in (2, 3):
            dims = len(found[1].kernel_size)
        else:
            first = source.item(0)
            dims = 3 if first.spacing is not None and len(first.spacing) == 3 else 2
    baseline = args.baseline
    if isinstance(baseline, Path):
        baseline = torch.from_numpy(load_array(baseline, "--baseline", None,
                                               args.nifti_axes).array)
    options = {"spatial_dims": dims, "spacing": None if args.spacing is None else
               tuple(args.spacing), "baseline": baseline, "output": args.output,
               "activation": args.activation, "read": args.read, "device": args.device,
               "batch_size": args.batch_size}
    return {name: value for name, value in options.items() if value is not None}


def run(args: argparse.Namespace) -> None:
    from ..core.validate import check_device
    from ..studies.runner import explain_dataset
    from ..studies.work import ModelBuilder

    check_device(args.device, "--device")
    methods = method_settings(args.methods, args.settings)
    engine = engine_options(args)
    source = _source(args)
    builder = ModelBuilder(args.checkpoint, args.model)
    options = _explainer_options(args, builder.build(), source)
    explain_dataset(builder, source, methods, args.out, classes=tuple(args.classes or [None]),
                    explainer_options=options, force=args.force, progress=args.progress,
                    **engine)
