"""The one list of explanation methods: what the CLI, the demo, the studies and the report
are built from.

Each :class:`Method` names its explainer class, says in one line what it does, lists the
options a user may set (from which the command line is made; their defaults are the class's
own), the thresholds seed 001 binarises its maps at, and which map a figure shows. A new
method is one module in ``methods/`` and one :func:`register` call here.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Option:
    """One option of a method, as its explainer and the command line take it.

    Parameters
    ----------
    name : str
        The explainer's keyword argument (``circle_size``); the CLI flag is ``--circle-size``
        unless ``flag`` says otherwise.
    type : type
        int, float, str or bool (a bool option is a switch that sets the opposite of the
        default).
    help : str
        One sentence, without the default (added from the explainer's signature).
    choices : tuple, optional
    flag : str, optional
        The CLI flag, when ``--<name>`` would not read well.
    """

    name: str
    type: type
    help: str
    choices: tuple | None = None
    flag: str | None = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Method:
    """A registered method.

    Attributes
    ----------
    name : str
        Its name on the command line and in every result (``Explanation.method``).
    explainer : str
        ``"module:Class"`` relative to this package, imported on first use.
    description : str
        One line.
    title : str
        Heading of its panel in figures and reports.
    options : tuple of Option
    thresholds : tuple of float
        Thresholds seed 001 applies to the min-max normalised map before its metrics (Dice
        explained, perturbation ratio); empty when the method's map is itself a mask.
    shown : str or None
        The ``Explanation.arrays`` entry figures show instead of ``saliency`` (HDM's
        "worse_only" circle map), or None.
    model_kind : {"segmentation", "classification"}
        What model the explainer takes.
    """

    name: str
    explainer: str
    description: str
    title: str
    options: tuple[Option, ...] = ()
    thresholds: tuple[float, ...] = ()
    shown: str | None = None
    model_kind: str = "segmentation"

    @property
    def cls(self) -> type:
        """The explainer class."""
        module, _, name = self.explainer.partition(":")
        return getattr(importlib.import_module(module, __package__), name)

    def defaults(self) -> dict[str, Any]:
        """Each option's default, read from the explainer's signature."""
        parameters = inspect.signature(self.cls.__init__).parameters
        return {option.name: parameters[option.name].default for option in self.options}

    def build(self, model, **options):
        """The explainer for ``model`` with ``options`` (the rest at their defaults)."""
        return self.cls(model, **options)

    def shown_map(self, explanation):
        """The map figures show for ``explanation``: (H, W)."""
        if self.shown is not None and self.shown in explanation.arrays:
            return explanation.arrays[self.shown]
        return explanation.saliency


_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (ValueError if its name is taken)."""
    if method.name in _METHODS:
        raise ValueError(f"method: {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


def available(model_kind: str | None = None) -> list[str]:
    """Names of the registered methods, in registration order (optionally of one model kind)."""
    return [name for name, method in _METHODS.items()
            if model_kind is None or method.model_kind == model_kind]


def get(name: str) -> Method:
    """The registered method ``name`` (ValueError naming the known ones otherwise)."""
    if name not in _METHODS:
        raise ValueError(f"method: expected one of {', '.join(_METHODS)}, got {name!r}")
    return _METHODS[name]


register(Method(
    name="hdm", explainer=".hdm:HDM", title="HDM (worse only)", shown="worse_only",
    description="Hausdorff Distance Masks: occlude a circle at every grid position and map how "
                "far the segmentation moves (seed 002)",
    options=(
        Option("circle_size", int, "circle (ball) diameter in pixels (voxels)"),
        Option("offset", int, "pixels between circle centres"),
        Option("threshold", float, "class probability above which a pixel is segmented, "
               "seed 002's rule for one-channel models (default: the class's segment, "
               "as for the target)"),
        Option("normalize", bool, "circles at -1 instead of 0 (baseline -1), for images "
               "normalised to [-1, 1]"),
        Option("channel", int, "input channel to occlude, -1 for all"),
        Option("skip_unchanged", bool, "also run circles that leave the image unchanged (by "
               "default they are skipped: their output is the unoccluded one); for models that "
               "are not deterministic in eval mode", flag="--run-all-circles"),
    ),
))
register(Method(
    name="rise", explainer=".rise:RISE", title="RISE (Dice-weighted)", thresholds=(0.2, 0.4),
    description="RISE: weight random masks by the Dice between the prediction on the masked "
                "image and the target (seed 001)",
    options=(
        Option("n_masks", int, "number of masks"),
        Option("s", int, "grid cells per side"),
        Option("p1", float, "probability that a cell is kept"),
        Option("weighting", str, "score of a masked image", choices=("dice", "probability")),
        Option("seed", int, "mask seed"),
    ),
))
register(Method(
    name="gradcam", explainer=".gradcam:SegGradCAM", title="Seg-Grad-CAM",
    thresholds=(0.05, 0.1),
    description="Seg-Grad-CAM: a layer's feature maps weighted by the mean gradient of the "
                "class's logits over the target (seed 001)",
    options=(
        Option("layer", str, "dotted name of the layer (default: the bottleneck of the "
               "library's U-Net, the deepest layer feeding the output of other models)"),
        Option("relu", bool, "keep the signed map: no ReLU on the weighted sum of feature maps",
               flag="--signed"),
    ),
))
register(Method(
    name="misure", explainer=".misure:MiSuRe", title="MiSuRe (MSR mask)",
    description="MiSuRe: dilate the prediction to a sufficient region, then optimise a "
                "minimally sufficient one (seed 001)",
    options=(
        Option("tau", float, "stage 1 dilates while the Dice is at most tau"),
        Option("kernel_size", int, "side of the circular dilation kernel, odd and >= 3"),
        Option("mask_size", int, "side of the optimised mask, per axis (default: 224 for "
               "images, the volume's size up to 224 for volumes)"),
        Option("iterations", int, "optimisation steps"),
        Option("lr", float, "AdamW learning rate"),
        Option("lam", float, "weight of the mask's mean, lambda"),
        Option("gamma", float, "weight of the total variation"),
        Option("beta", float, "exponent of the total variation"),
        Option("alpha_background", float, "weight of the background's soft Dice"),
        Option("alpha_class", float, "weight of the class's soft Dice"),
        Option("zero_below", float, "mask values below it become 0 after each step"),
    ),
))
register(Method(
    name="lrp", explainer=".lrp:LRP", title="LRP relevance", model_kind="classification",
    description="Layer-wise Relevance Propagation of a classifier's class logit to the input, "
                "optionally made into a mask (seed 003)",
    options=(
        Option("rule_set", str, "LRP rules per layer: seed 003's Table 1 sets for VGG-11's "
               "layer names, or epsilon on every layer of any model",
               choices=("montavon", "seibold", "epsilon")),
        Option("segmentation", str, "also turn the relevance into a mask",
               choices=("simple", "gmm", "bmm")),
        Option("refine", int, "with --segmentation: close the mask, fill its holes and shrink "
               "it by this many pixels (1 for a first 3 x 3 convolution; not in seed 003)"),
        Option("average_flips", bool, "average the relevance of the image and its three "
               "mirror images (four propagations; not in seed 003)"),
    ),
))
