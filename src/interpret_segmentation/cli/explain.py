"""``explain METHOD``: one image, one registered method; a subcommand per method, its flags
made from the method's registry entry."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import numpy as np

from ..methods import registry
from .common import CHECKPOINT, add_progress, batch_size, build_model, load_array

OWN_FLAGS = ("--image", "--segment", "--class", "--checkpoint", "--model", "--out",
             "--batch-size", "--device", "--force", "--no-progress", "--help", "-h")
"""Flags every ``explain`` subcommand has; a method option may not take one."""
OWN_DESTS = ("image", "segment", "class_index", "checkpoint", "model", "out", "batch_size",
             "device", "force", "progress", "method", "command", "run", "help")
METAVARS = {int: "INT", float: "FLOAT", str: "TEXT"}
HDM_CIRCLE_MAPS = (("raw", "RAW", "Blues"), ("better", "BETTER_ONLY", "Greens"),
                   ("worse", "WORSE_ONLY", "Reds"))
"""HDM's extra pictures: file suffix, result type in ``methods.hdm``, colour map."""


def add_parser(commands) -> None:
    methods = registry.available("segmentation")
    explain = commands.add_parser(
        "explain", help="explain one image with a method",
        description=f"Explain one image with one of the registered methods: {', '.join(methods)}.")
    explain.set_defaults(run=run)
    subcommands = explain.add_subparsers(dest="method", required=True, metavar="METHOD")
    for name in methods:
        add_method_parser(subcommands, registry.get(name))


def add_method_parser(subcommands, method: registry.Method) -> argparse.ArgumentParser:
    """``explain <method.name>``: the common flags, then one per option of ``method``."""
    writes = "the Explanation (.npz + .json) and a figure"
    if method.name == "hdm":
        writes += " and the RAW / BETTER_ONLY / WORSE_ONLY circle maps as PNG"
    parser = subcommands.add_parser(method.name, help=_escape(method.description),
                                    description=f"{method.description}. Writes {writes}.")
    _add_common_options(parser)
    defaults = method.defaults()
    for option in method.options:
        _add_option(parser, method, option, defaults[option.name])
    return parser


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True,
                        help="input: a PNG or other image (scaled to [0, 1] by its bit depth, "
                             "8 or 16; colour kept for a model taking three channels), an "
                             ".npy array (used as is, (H, W) or (C, H, W)) or a testnet "
                             "sample directory")
    parser.add_argument("--segment", default=None,
                        help="target region as a PNG/.npy mask (default: the predicted mask)")
    parser.add_argument("--class", dest="class_index", type=int, default=None,
                        help="class to explain (default 1: the foreground)")
    parser.add_argument("--checkpoint", default=CHECKPOINT,
                        help=f"state dict to load (default {CHECKPOINT})")
    parser.add_argument("--model", default=None, metavar="MODULE:CALLABLE",
                        help="builds the model the checkpoint belongs to, e.g. "
                             "mypackage.models:build (default: the library's demo U-Net)")
    parser.add_argument("--out", default="out/explain",
                        help="output directory (default out/explain)")
    parser.add_argument("--batch-size", type=batch_size, default="auto",
                        help="inputs per model pass: a positive int or auto (default auto)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--force", action="store_true",
                        help="replace existing output files, and write into a non-empty "
                             "--out explain did not make (nothing else is touched)")
    add_progress(parser)


def _add_option(parser, method: registry.Method, option: registry.Option, default) -> None:
    """``option`` as a flag: bool options are switches to the opposite of ``default``."""
    flag = option.cli_flag
    if flag in OWN_FLAGS or option.name in OWN_DESTS:
        raise ValueError(f"method {method.name!r}: option {option.name!r} ({flag}) clashes with "
                         "a flag every explain command has")
    text = _escape(option.help)
    if option.type is bool:
        parser.add_argument(flag, dest=option.name, default=default,
                            action="store_false" if default else "store_true",
                            help=f"{text} (sets {option.name}={not default}; default {default})")
        return
    if "(default" not in option.help:
        text += f" (default {shown_default(default)})"
    required = default is inspect.Parameter.empty
    parser.add_argument(flag, dest=option.name, type=option.type, choices=option.choices,
                        required=required, default=None if required else default, help=text,
                        metavar=None if option.choices else METAVARS.get(option.type))


def shown_default(value) -> str:
    """A default as the help shows it: floats without trailing zeros (3.0 -> 3)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _escape(text: str) -> str:
    return text.replace("%", "%%")


def run(args) -> None:
    import torch

    from ..analysis.figures import explanation_figure, figure_png
    from ..core import Target, expected_channels
    from ..core.io import OutputDirectory, write_files
    from ..core.validate import check_device

    method = registry.get(args.method)
    image_path, stem = _input_path(Path(args.image))
    device = check_device(args.device, "--device")
    output = OutputDirectory(args.out, "explain", force=args.force, replace_own=False, wait=30)
    extras = [kind for kind, _, _ in HDM_CIRCLE_MAPS] if method.name == "hdm" else []
    names = [f"{stem}_{method.name}{suffix}" for suffix in (".npz", ".json", ".png")]
    names += [f"{stem}_{method.name}_{kind}.png" for kind in extras]
    output.check(*names)  # every output path, before any work
    model = build_model(args.model, args.checkpoint).to(device)
    conv = expected_channels(model)  # a colour image stays colour for a model taking three
    image = load_array(image_path, "--image", None if conv is None else conv[1])
    region = None if args.segment is None else load_array(Path(args.segment), "--segment")
    explainer = build_explainer(method, model, args)
    explanation = explainer.explain(torch.from_numpy(np.asarray(image, dtype=np.float32)),
                                    Target(args.class_index, region))
    figure = figure_png(explanation_figure(image, {method.title: method.shown_map(explanation)},
                                           prediction=explanation.arrays["target_pixels"]))
    pictures = _hdm_circle_maps(explanation) if extras else []
    with output:
        paths = output.files(*names)
        entries = explanation.writers(paths[0])
        entries.append((paths[2], lambda file: file.write(figure), "wb"))
        entries += [(path, lambda file, picture=picture: picture.save(file, format="PNG"), "wb")
                    for path, picture in zip(paths[3:], pictures)]
        written = write_files(entries, overwrite=True)
    print(f"{method.name}: {_facts(explanation)}")
    for path in written:
        print(f"wrote {path}")


def build_explainer(method: registry.Method, model, args):
    """``method``'s explainer with the options given on the command line; an option the
    explainer refuses is named by its flag."""
    options = {option.name: getattr(args, option.name) for option in method.options}
    try:
        return method.build(model, batch_size=args.batch_size, progress=args.progress,
                            device=args.device, **options)
    except (ValueError, TypeError) as error:
        message = str(error)
        for option in method.options:
            if message.startswith(f"{option.name}:"):
                kind = ValueError if isinstance(error, ValueError) else TypeError
                raise kind(option.cli_flag + message[len(option.name):]) from None
        raise


def _input_path(path: Path) -> tuple[Path, str]:
    """The image file ``--image`` names (image.png of a sample directory) and the stem of the
    output files."""
    if path.is_dir():
        return path / "image.png", path.name
    return path, path.stem


def _hdm_circle_maps(explanation) -> list:
    """HDM's RAW, BETTER_ONLY and WORSE_ONLY circle maps (PIL images)."""
    from ..methods import hdm

    result = hdm.HDM.result(explanation)
    return [result.circle_map(getattr(hdm, kind), color_map=colours)
            for _, kind, colours in HDM_CIRCLE_MAPS]


def _facts(explanation) -> str:
    facts = [f"{explanation.timings['total']:.1f} s"]
    for key in ("model_passes", "dilations", "dice_explained", "perturbation_ratio", "reason"):
        if key in explanation.info:
            value = explanation.info[key]
            facts.append(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(facts)
