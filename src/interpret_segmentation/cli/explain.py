"""``explain METHOD``: one image or volume, one registered method; a subcommand per method,
its flags made from the method's registry entry."""

from __future__ import annotations

import argparse
import contextlib
import inspect
from pathlib import Path

import numpy as np

from ..methods import registry
from .common import (
    add_model_options,
    add_progress,
    build_model,
    load_array,
)

EXPLAINER_FLAGS = {"spatial_dims": "--spatial-dims", "spacing": "--spacing",
                   "baseline": "--baseline", "output": "--output", "activation": "--activation",
                   "read": "--read"}
"""The options every explainer takes (``Explainer``'s keyword arguments) and their flags."""
OWN_FLAGS = ("--image", "--segment", "--class", "--checkpoint", "--model", "--out",
             "--batch-size", "--device", "--force", "--no-progress", "--help", "-h",
             *EXPLAINER_FLAGS.values())
"""Flags every ``explain`` subcommand has; a method option may not take one."""
OWN_DESTS = ("image", "segment", "class_index", "checkpoint", "model", "out", "batch_size",
             "device", "force", "progress", "method", "command", "run", "help", *EXPLAINER_FLAGS)
ARGUMENT_FLAGS = {**EXPLAINER_FLAGS, "image": "--image", "target.region": "--segment",
                  "batch_size": "--batch-size", "device": "--device"}
"""How an explainer's error message names an argument -> the flag that gave it."""
METAVARS = {int: "INT", float: "FLOAT", str: "TEXT"}
HDM_CIRCLE_MAPS = (("raw", "RAW", "Blues"), ("better", "BETTER_ONLY", "Greens"),
                   ("worse", "WORSE_ONLY", "Reds"))
"""HDM's extra pictures: file suffix, result type in ``methods.hdm``, colour map."""


def add_parser(commands) -> None:
    methods = registry.available("segmentation")
    explain = commands.add_parser(
        "explain", help="explain one image or volume with a method",
        description=f"Explain one image or volume with one of the registered methods: "
                    f"{', '.join(methods)}.")
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
                             ".npy array (used as is: (H, W) or (C, H, W); (D, H, W) or "
                             "(C, D, H, W) for a volume), a NIfTI volume (.nii, .nii.gz; "
                             "its (x, y, z) voxels read as stored, see --nifti-axes, a fourth "
                             "axis as channels; needs nibabel) or a testnet sample directory")
    parser.add_argument("--segment", default=None,
                        help="target region as a mask file read like --image, nonzero (above "
                             "0.5) inside (default: the predicted segment of --class)")
    parser.add_argument("--class", dest="class_index", type=int, default=None,
                        help="class (or label channel) to explain (default 1: the foreground)")
    add_model_options(parser)
    parser.add_argument("--out", default="out/explain",
                        help="output directory (default out/explain)")
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

    from ..analysis.figures import figure_png
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
    channels = None if conv is None else conv[1]
    image, header_spacing = load_array(image_path, "--image", channels, args.nifti_axes)
    dims = spatial_dims(args.spatial_dims, model, image_path, image)
    spacing = voxel_spacing(args.spacing, header_spacing, dims)
    region = None if args.segment is None else load_array(Path(args.segment), "--segment",
                                                             nifti_axes=args.nifti_axes).array
    baseline = args.baseline
    if isinstance(baseline, Path):
        baseline = torch.from_numpy(load_array(baseline, "--baseline", channels,
                                                    args.nifti_axes).array)
    common = {"spatial_dims": dims, "spacing": spacing, "baseline": baseline,
              "output": args.output, "activation": args.activation, "read": args.read}
    explainer = build_explainer(method, model, args, **common)
    with flags_named():
        explanation = explainer.explain(torch.from_numpy(np.asarray(image, dtype=np.float32)),
                                        Target(args.class_index, region))
    figure = figure_png(_figure(method, explanation, image, spacing))
    volume = explanation.saliency.ndim == 3
    pictures = _hdm_circle_maps(explanation) if extras and not volume else []
    with output:
        paths = output.files(*names[:3 + len(pictures)])
        entries = explanation.writers(paths[0])
        entries.append((paths[2], lambda file: file.write(figure), "wb"))
        entries += [(path, lambda file, picture=picture: picture.save(file, format="PNG"), "wb")
                    for path, picture in zip(paths[3:], pictures)]
        written = write_files(entries, overwrite=True)
    print(f"{method.name}: {_facts(explanation)}")
    for path in written:
        print(f"wrote {path}")


def build_explainer(method: registry.Method, model, args, **common):
    """``method``'s explainer with the options given on the command line and ``common``, the
    :data:`EXPLAINER_FLAGS` options (None: the explainer's default); an option the explainer
    refuses is named by its flag."""
    options = {option.name: getattr(args, option.name) for option in method.options}
    options.update({name: value for name, value in common.items() if value is not None})
    with flags_named({option.name: option.cli_flag for option in method.options}):
        return method.build(model, batch_size=args.batch_size, progress=args.progress,
                            device=args.device, **options)


@contextlib.contextmanager
def flags_named(flags: dict | None = None):
    """Context: a ValueError/TypeError whose message starts with an argument's name (``baseline:
    ...``) is raised again naming its flag (``--baseline: ...``): ``flags`` and
    :data:`ARGUMENT_FLAGS`."""
    try:
        yield
    except (ValueError, TypeError) as error:
        message = str(error)
        for name, flag in {**ARGUMENT_FLAGS, **(flags or {})}.items():
            if message.startswith(f"{name}:"):
                try:
                    renamed = type(error)(flag + message[len(name):])
                except Exception:  # an error class that takes more than a message
                    kind = ValueError if isinstance(error, ValueError) else TypeError
                    renamed = kind(flag + message[len(name):])
                raise renamed from None
        raise


def spatial_dims(given: int | None, model, path: Path, image: np.ndarray) -> int:
    """The spatial dimensions to explain in: ``given`` (``--spatial-dims``), else those of the
    model's first convolution (Conv2d or Conv3d, in registration order), else 3 for a NIfTI
    volume of three or more axes or a 5-D array (1, C, D, H, W), else 2."""
    from torch import nn

    from ..datasets.files import is_nifti

    if given is not None:
        return given
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd) and len(module.kernel_size) in (2, 3):
            return len(module.kernel_size)
    return 3 if image.ndim == 5 or (is_nifti(path) and image.ndim >= 3) else 2


def voxel_spacing(given, header, dims: int) -> tuple[float, ...] | None:
    """``--spacing`` (checked to give one size per spatial axis), else the file's ``header``
    spacing for the last ``dims`` axes (a NIfTI volume read as (C, H, W) by a 2-D model keeps
    (dy, dx)), else None."""
    if given is not None:
        if len(given) != dims:
            axes = "D H W" if dims == 3 else "H W"
            raise ValueError(f"--spacing: expected {dims} sizes, one per spatial axis ({axes}), "
                             f"got {len(given)}: {' '.join(map(str, given))}")
        return tuple(given)
    if header is None or len(header) < dims:
        return None
    return tuple(header[-dims:])


def _figure(method: registry.Method, explanation, image: np.ndarray, spacing):
    """The input, the target and the method's map; a volume as three orthogonal sections
    through the target (drawn with its voxel ``spacing``)."""
    from ..analysis.figures import explanation_figure

    volume = explanation.saliency.ndim == 3
    return explanation_figure(image, {method.title: method.shown_map(explanation)},
                              prediction=explanation.arrays["target_pixels"],
                              spacing=spacing if volume else None)


def _input_path(path: Path) -> tuple[Path, str]:
    """The image file ``--image`` names (image.png of a sample directory) and the stem of the
    output files (``ct`` for ``ct.nii.gz``)."""
    from ..datasets.files import file_stem

    if path.is_dir():
        return path / "image.png", path.name
    return path, file_stem(path)


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
