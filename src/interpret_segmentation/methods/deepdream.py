"""DeepDream analysis of a segmentation network (seed 004, Couteaux et al., section 2.2).

Start from an image ``X_0`` in which the network sees no object (a healthy scan, white noise)
and pick what to maximise, in the library's target vocabulary: the logit of a class summed
over a region of output pixels, often a single pixel (:class:`~interpret_segmentation.core.Target`,
or ``pixel=(y, x)``). Volumes work the same way: a start (1, C, D, H, W), a region (D, H, W)
or a voxel ``pixel=(z, y, x)``, 3-D masks and 3-D features. Then, for ``j = 0, 1, ...``:

1. forward ``X_j`` and read the activation ``a_j`` and the predicted mask ``M_j = S(X_j)``;
2. compute the features ``f_k(X_j, M_j)``;
3. take the gradient ``g = d a / d X`` (with respect to the input only) and climb it::

       X_{j+1} = X_j + step_size * g / max(|g|)

The path ``j -> f_k(X_j, M_j)`` shows which properties of an object the network reacts to
most: by following the steepest ascent of its own decision, the network "draws" what makes
it say "object". Curves are easiest to read as z-scores against the statistics of real objects
(a :class:`~interpret_segmentation.analysis.features.FeatureReference`): a value inside [-1, 1] is
within one standard deviation of what the validation data shows.

The step is the paper's ``alpha * dA/dX`` with the gradient divided by its largest absolute
value: the pixel with the steepest gradient changes by exactly ``step_size`` at every step
(before clamping to ``value_range``), every other pixel by less, whatever the scale of the
network's gradients and the size of the image. So one ``step_size`` (in the image's intensity
units) suits very different models, and the path neither stalls where the gradient is small
nor explodes where it is large. (``gradient_scaling="mean"`` divides by the *mean* absolute
value instead, as classic DeepDream does: the pixels of a single neuron's receptive field then
move by up to ``step_size * H * W / field size`` per step, which depends on the image size, but
the many smaller entries of a spiky gradient move further.)

Each step costs one forward and one backward pass (to the input only; nothing accumulates in
the parameters' ``.grad``). The forward pass that gives the gradient also gives the mask, and
the features are computed on numpy copies once the passes are done, so the analysis costs
little more than the model's passes themselves.

The code follows the algorithm's parts: :class:`AscentSettings` (the checked settings of the
climb), the goal (what is maximised, from the target vocabulary), :func:`_climb` (the loop; one
step is :func:`_ascent_step`), :class:`_Recorder` (what is kept along the path) and
:meth:`_Recorder.path` (the :class:`DreamPath`).
"""

from __future__ import annotations

import json
import math
import operator
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..analysis.features import FeatureReference, compute_features, resolve_features
from ..core import (
    ModelAdapter,
    ResolvedTarget,
    Target,
    as_image_batch,
    as_mask,
    as_target,
    check_spacing,
    explanation_mode,
    resolve_target,
)
from ..core.io import json_ready, read_saved_pair, write_files
from ..core.validate import check_class_index, check_number, check_positive, is_int

__all__ = ["DreamPath", "analyze", "plot_curves", "plot_path", "white_noise"]

STOP_REASONS = ("steps", "converged", "zero gradient")
GRADIENT_SCALINGS = ("max", "mean")
"""How the gradient is scaled before a step: by its largest or its mean absolute value."""


def _deprecated(old: str, new: str, stacklevel: int = 4) -> None:
    """Warn that ``old`` is deprecated in favour of ``new``; ``stacklevel`` 4 points at the
    line that called the public function whose helper calls this."""
    warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=stacklevel)


# -- the result -------------------------------------------------------------------------------


@dataclass
class DreamPath:
    """One DeepDream path: what the network saw and decided at each step ``j = 0 .. n``.

    Attributes
    ----------
    activations : ndarray (n + 1,) float64
        The maximised activation ``a_j``: the class logit summed over the target's pixels.
    masks : ndarray (n + 1, *S) bool
        The predicted mask ``M_j`` (the class's segment) at each step; S is (H, W), or
        (D, H, W) for a volume.
    images : ndarray (n + 1, C, *S) float32 or None
        The dream ``X_j`` at each step; None when recorded with ``record_images=False``.
    features : dict name -> ndarray (n + 1,) float64
        The curves ``j -> f_k(X_j, M_j)`` (NaN where the mask is empty, for most features).
    zscores : dict name -> ndarray (n + 1,) float64, or None
        The same curves as z-scores against the reference (real objects): ``(f - mean) / std``;
        None when no reference was given.
    steps_taken : int
        ``n``, the number of gradient steps made.
    stop_reason : {"steps", "converged", "zero gradient"}
        Why the path ended: all ``steps`` made, the activation stopped rising (``tolerance``),
        or the gradient vanished (the image can no longer be changed by the rule).
    parameters : dict
        The analysis' settings (JSON values): ``class_index``, ``pixel`` ([y, x], or
        [z, y, x] for a volume, when the target is one pixel, else None), ``region_pixels``,
        the ascent settings, ``output``, ``spacing`` (one size per spatial axis) and the
        feature names.
    seconds : float
        Wall-clock time of the analysis.
    region : ndarray (*S) bool or None
        The output pixels whose logits were summed (None on paths built by hand).

    A path is written to disk and read back with :meth:`save` and :meth:`load`.
    """

    activations: np.ndarray
    masks: np.ndarray
    images: np.ndarray | None
    features: dict[str, np.ndarray]
    zscores: dict[str, np.ndarray] | None
    steps_taken: int
    stop_reason: str
    parameters: dict = field(default_factory=dict)
    seconds: float = 0.0
    region: np.ndarray | None = None

    @property
    def normalised(self) -> dict[str, np.ndarray] | None:
        """Deprecated name of :attr:`zscores`."""
        warnings.warn("DreamPath.normalised is deprecated; use DreamPath.zscores",
                      DeprecationWarning, stacklevel=2)
        return self.zscores

    def final_features(self, zscores: bool = False, *, normalised: bool | None = None
                       ) -> dict[str, float]:
        """Each feature's value at the last step; z-scores with ``zscores=True`` (ValueError
        when the path has no reference). ``normalised`` is the deprecated name of ``zscores``."""
        if normalised is not None:
            _deprecated("final_features(normalised=...)", "final_features(zscores=...)",
                        stacklevel=3)
            zscores = normalised
        curves = self.features
        if zscores:
            if self.zscores is None:
                raise ValueError("zscores: this path was computed without a reference, so it "
                                 "has no z-scores; expected zscores=False")
            curves = self.zscores
        return {name: float(curve[-1]) for name, curve in curves.items()}

    def to_dict(self) -> dict:
        """JSON-ready summary (no images, masks or region; NaN becomes None): activations,
        feature curves, z-scores, mask areas, steps taken, stop reason, parameters, seconds."""
        return json_ready({
            "activations": self.activations,
            "features": self.features,
            "zscores": self.zscores,
            "mask_area": self.masks.reshape(len(self.masks), -1).sum(1),
            "steps_taken": self.steps_taken,
            "stop_reason": self.stop_reason,
            "parameters": self.parameters,
            "seconds": self.seconds,
        })

    @staticmethod
    def paths(path: str | os.PathLike) -> tuple[Path, Path]:
        """The .npz and .json paths :meth:`save` writes for ``path`` (".npz" added if missing)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        return path, path.with_suffix(".json")

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the path: ``path`` (.npz: activations, masks, images, region and curves) and
        ``path`` with suffix .json (steps, stop reason, parameters, seconds, feature names).

        Both files are written together or neither (through temporary files); existing files
        are refused (FileExistsError) unless ``overwrite``. Returns the .npz path.
        """
        npz, meta_path = self.paths(path)
        arrays = {"activations": np.asarray(self.activations, dtype=np.float64),
                  "masks": np.asarray(self.masks, dtype=bool)}
        if self.images is not None:
            arrays["images"] = np.asarray(self.images)
        if self.region is not None:
            arrays["region"] = np.asarray(self.region, dtype=bool)
        arrays.update({f"feature_{k}": np.asarray(curve, dtype=np.float64)
                       for k, curve in enumerate(self.features.values())})
        if self.zscores is not None:
            arrays.update({f"zscore_{k}": np.asarray(self.zscores[name], dtype=np.float64)
                           for k, name in enumerate(self.features)})
        meta = {"kind": "DreamPath", "features": list(self.features),
                "zscores": self.zscores is not None, "steps_taken": int(self.steps_taken),
                "stop_reason": self.stop_reason, "parameters": json_ready(self.parameters),
                "seconds": float(self.seconds)}
        write_files([(npz, lambda file: np.savez_compressed(file, **arrays), "wb"),
                     (meta_path, lambda file: json.dump(meta, file, indent=2), "w")],
                    overwrite=overwrite)
        return npz

    @classmethod
    def load(cls, path: str | os.PathLike) -> DreamPath:
        """Read a path written by :meth:`save`.

        Raises FileNotFoundError when a file is missing and ValueError naming the file when it
        is truncated or was not written by :meth:`save`.
        """
        npz, meta_path = cls.paths(path)
        written_by = "not a DreamPath written by DreamPath.save"
        meta, arrays = read_saved_pair(npz, meta_path, "DreamPath.save", written_by)
        if meta.get("kind") != "DreamPath":
            raise ValueError(f"{meta_path}: {written_by}")
        try:
            names = meta["features"]
            features = {name: arrays[f"feature_{k}"] for k, name in enumerate(names)}
            zscores = ({name: arrays[f"zscore_{k}"] for k, name in enumerate(names)}
                       if meta["zscores"] else None)
            return cls(activations=arrays["activations"], masks=arrays["masks"],
                       images=arrays.get("images"), features=features, zscores=zscores,
                       steps_taken=int(meta["steps_taken"]), stop_reason=meta["stop_reason"],
                       parameters=meta["parameters"], seconds=float(meta["seconds"]),
                       region=arrays.get("region"))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{npz}: {written_by} ({type(error).__name__}: {error})") from None


# -- start images -----------------------------------------------------------------------------


def white_noise(shape, seed=0, mean: float = 0.5, std: float = 0.1) -> np.ndarray:
    """A seeded white-noise start image or volume: Gaussian values, float32.

    Parameters
    ----------
    shape : int or tuple of int
        Any shape :func:`analyze` accepts, e.g. ``(240, 240)`` or ``(1, 240, 240)`` for an
        image, ``(1, 1, 64, 64, 64)`` for a volume (or ``(64, 64, 64)`` with
        ``analyze(..., spatial_dims=3)``).
    seed : int or numpy.random.Generator, default 0
        Same seed, same image.
    mean, std : float, default 0.5 and 0.1
        Of the Gaussian; ``std >= 0``.
    """
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if not shape or any(not is_int(s) or s < 1 for s in shape):
        raise ValueError(f"shape: expected positive ints, got {shape!r}")
    mean = check_number(mean, "mean")
    std = check_number(std, "std", 0)
    if isinstance(seed, np.random.Generator):
        rng = seed
    elif is_int(seed):
        rng = np.random.default_rng(int(seed))
    else:
        raise TypeError(f"seed: expected an int or a numpy Generator, got {type(seed).__name__}")
    return rng.normal(mean, std, size=shape).astype(np.float32)


# -- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AscentSettings:
    """The checked settings of one gradient ascent (see :func:`analyze` for their meaning).

    Built from raw values, which are checked (ValueError naming the argument) and stored as
    ``int`` / ``float`` / tuples.
    """

    steps: int = 100
    step_size: float = 0.01
    gradient_scaling: str = "max"
    value_range: tuple[float, float] | None = None
    tolerance: float | None = None
    patience: int = 5

    def __post_init__(self):
        if self.gradient_scaling not in GRADIENT_SCALINGS:
            raise ValueError(f"gradient_scaling: expected one of {GRADIENT_SCALINGS}, got "
                             f"{self.gradient_scaling!r}")
        checked = {
            "steps": check_positive(self.steps, "steps"),
            "step_size": check_positive(self.step_size, "step_size", float),
            "value_range": _check_value_range(self.value_range),
            "tolerance": None if self.tolerance is None else check_number(self.tolerance,
                                                                          "tolerance", 0),
            "patience": check_positive(self.patience, "patience"),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def converged(self, activations: list[float]) -> bool:
        """Whether the activation rose by less than ``tolerance * max(1, |a|)`` in each of the
        last ``patience`` steps (never without a tolerance)."""
        if self.tolerance is None or len(activations) <= self.patience:
            return False
        recent = activations[-self.patience - 1:]
        return all(after - before < self.tolerance * max(1.0, abs(before))
                   for before, after in zip(recent, recent[1:]))

    def to_dict(self) -> dict:
        """JSON values, as recorded in ``DreamPath.parameters``."""
        return {"steps": self.steps, "step_size": self.step_size,
                "gradient_scaling": self.gradient_scaling,
                "value_range": None if self.value_range is None else list(self.value_range),
                "tolerance": self.tolerance, "patience": self.patience}


def _check_value_range(value_range) -> tuple[float, float] | None:
    if value_range is None:
        return None
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range: expected a pair of numbers (lo, hi), got "
                         f"{value_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"value_range: expected finite lo < hi, got {value_range!r}")
    return low, high


def _gradient_scaling(gradient_scaling: str, normalise: str | None) -> str:
    """``gradient_scaling``, or the deprecated ``normalise`` in its place."""
    if normalise is None:
        return gradient_scaling
    _deprecated("normalise=", "gradient_scaling=")
    if normalise not in GRADIENT_SCALINGS:
        raise ValueError(f"normalise: expected one of {GRADIENT_SCALINGS}, got {normalise!r}")
    if gradient_scaling != "max" and gradient_scaling != normalise:
        raise ValueError(f"gradient_scaling and normalise: expected one of them (normalise is "
                         f"the deprecated name), got {gradient_scaling!r} and {normalise!r}")
    return normalise


# -- the goal: what is maximised --------------------------------------------------------------


@dataclass(frozen=True)
class _Goal:
    """What the ascent maximises, checked against the image before any model pass: the logit
    of ``class_index`` summed over ``pixels`` (*S) bool. The class is checked against the
    model's classes after the first pass (:meth:`resolve`), under the name it came by."""

    class_index: int | None
    class_name: str
    pixels: torch.Tensor

    def resolve(self, scores: torch.Tensor) -> ResolvedTarget:
        """The goal against the scores (1, K, *S) of the first pass, pixels on their device."""
        class_index = 1 if self.class_index is None else self.class_index
        class_index = check_class_index(class_index, scores.shape[1], self.class_name)
        resolved = resolve_target(Target(class_index, self.pixels), scores)
        return ResolvedTarget(class_index, resolved.pixels.to(scores.device),
                              from_prediction=False)


def _current_names(target, pixel, neuron, region, class_index) -> tuple[Target, object, dict]:
    """``target`` as a Target and ``pixel``, with the deprecated ``neuron``, ``region`` and
    ``class_index`` mapped onto them (a DeprecationWarning each; ValueError when one comes
    with what replaces it), and the names the class, region and pixel came by, for messages."""
    names = {"class": "target.class_index" if isinstance(target, Target) else "target",
             "region": "target.region", "pixel": "pixel"}
    target = as_target(target)
    if neuron is not None:
        _deprecated("neuron=", "pixel=")
        if pixel is not None:
            raise ValueError("neuron and pixel: expected at most one of them (neuron is the "
                             "deprecated name of pixel), got both")
        pixel, names["pixel"] = neuron, "neuron"
    if region is not None:
        _deprecated("region=", "target=Target(class_index, region)")
        if target.region is not None:
            raise ValueError("region and target.region: expected at most one of them (region "
                             "is deprecated), got both")
        target, names["region"] = Target(target.class_index, region), "region"
    if class_index is not None:
        _deprecated("class_index=", "target=class_index or Target(class_index, ...)")
        if target.class_index is not None:
            raise ValueError(f"class_index and target: expected at most one class (class_index "
                             f"is deprecated), got {class_index!r} and {target.class_index!r}")
        target, names["class"] = Target(class_index, target.region), "class_index"
    return target, pixel, names


def _goal(target: Target, pixel, names: dict, shape: tuple[int, ...]) -> _Goal:
    """What to maximise over an output of spatial ``shape`` (H, W) or (D, H, W): the target's
    region, else the one pixel ``pixel`` (default the centre); a pixel and a region together
    are refused. ``names`` (from :func:`_current_names`) name the arguments in messages."""
    if pixel is not None and target.region is not None:
        raise ValueError(f"{names['pixel']} and {names['region']}: expected at most one of them "
                         f"(a pixel or a region to maximise), got both")
    if target.region is not None:
        pixels = as_mask(target.region, shape, names["region"]).cpu()
        if not pixels.any():
            raise ValueError(f"{names['region']}: expected a mask with at least one pixel, got "
                             f"an empty one")
        return _Goal(target.class_index, names["class"], pixels)
    chosen = (tuple(size // 2 for size in shape) if pixel is None
              else _check_pixel(pixel, shape, names["pixel"]))
    pixels = torch.zeros(shape, dtype=torch.bool)
    pixels[chosen] = True
    return _Goal(target.class_index, names["class"], pixels)


def _check_pixel(pixel, shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    """``pixel`` as ints (y, x), or (z, y, x) for a volume, inside the output's ``shape``."""
    axes = "(y, x)" if len(shape) == 2 else "(z, y, x)"
    what = "a pair of ints (y, x)" if len(shape) == 2 else "three ints (z, y, x)"
    try:
        values = tuple(pixel)
        if len(values) != len(shape) or any(isinstance(v, (bool, np.bool_)) for v in values):
            raise TypeError
        values = tuple(operator.index(v) for v in values)
    except TypeError:
        raise TypeError(f"{name}: expected {what}, got {pixel!r}") from None
    if not all(0 <= v < size for v, size in zip(values, shape)):
        sizes = " x ".join(map(str, shape))
        raise ValueError(f"{name}: expected {axes} inside the model output's "
                         f"{'H x W' if len(shape) == 2 else 'D x H x W'} = {sizes} (outputs are "
                         f"resized to the input's size), got {pixel!r}")
    return values


def _feature_functions(features, reference) -> dict[str, Callable]:
    """The features as a dict name -> callable (empty for an empty sequence or dict), and the
    reference checked to cover them all."""
    if reference is not None and not isinstance(reference, FeatureReference):
        raise TypeError(f"reference: expected a FeatureReference or None, got "
                        f"{type(reference).__name__}")
    empty = isinstance(features, (Mapping, list, tuple)) and len(features) == 0
    functions = {} if empty else resolve_features(features)
    if reference is not None:
        missing = [name for name in functions if name not in reference.mean]
        if missing:
            raise ValueError(f"reference: expected statistics for every feature, missing "
                             f"{missing} (the reference has {list(reference.mean)})")
    return functions


# -- the ascent -------------------------------------------------------------------------------


def _input_gradient(activation: torch.Tensor, x: torch.Tensor,
                    value_range=None) -> torch.Tensor | None:
    """``d activation / d x`` (parameters' ``.grad`` untouched), zero where ``x`` sits at a
    bound of ``value_range`` and the gradient points out of it; None when it is zero
    everywhere (or the activation does not depend on ``x``)."""
    if not activation.requires_grad:
        return None
    gradient, = torch.autograd.grad(activation, [x], allow_unused=True)
    if gradient is None:
        return None
    if value_range is not None:
        low, high = value_range
        pinned = ((x.detach() <= low) & (gradient < 0)) | ((x.detach() >= high) & (gradient > 0))
        gradient = gradient.masked_fill(pinned, 0.0)
    scale = gradient.abs().max()
    if not torch.isfinite(scale):
        raise ValueError("model: the gradient of the activation with respect to the image is not "
                         "finite (NaN or inf); check the model and the start image")
    return None if scale == 0 else gradient


def _ascent_step(x: torch.Tensor, activation: torch.Tensor,
                 settings: AscentSettings) -> torch.Tensor | None:
    """``X_{j+1}`` from ``X_j = x`` (1, C, *S): the projected gradient of ``activation``,
    scaled by its largest or mean absolute value, times ``step_size``, added, then clamped to
    ``value_range``. None when the gradient is zero."""
    gradient = _input_gradient(activation, x, settings.value_range)
    if gradient is None:
        return None
    magnitude = gradient.abs()
    scale = magnitude.max() if settings.gradient_scaling == "max" else magnitude.mean()
    stepped = x.detach() + (settings.step_size / scale) * gradient
    if settings.value_range is not None:
        stepped.clamp_(*settings.value_range)
    return stepped


def _climb(adapter: ModelAdapter, start: torch.Tensor, goal: _Goal, settings: AscentSettings,
           recorder: _Recorder, bar) -> tuple[ResolvedTarget, str]:
    """The ascent from ``start`` (1, C, *S): forward, record, step, until ``settings.steps``
    steps are made, the activation converged or the gradient vanished. Returns the resolved
    target and the stop reason. The last image is forwarded without a gradient."""
    current, target = start, None
    for j in range(settings.steps + 1):
        last = j == settings.steps
        x = current.detach().requires_grad_(not last)
        with torch.set_grad_enabled(not last):
            scores = adapter.scores(x)
            target = goal.resolve(scores) if target is None else target
            activation = scores[0, target.class_index][target.pixels].sum()
        recorder.record(x, _segment(adapter, scores.detach(), target.class_index), activation)
        if last:
            break
        if settings.converged(recorder.activations):
            return target, "converged"
        current = _ascent_step(x, activation, settings)
        if current is None:
            return target, "zero gradient"
        bar.update(1)
    return target, "steps"


# -- recording --------------------------------------------------------------------------------


def _segment(adapter: ModelAdapter, scores: torch.Tensor, class_index: int) -> torch.Tensor:
    """The class's segment (1, *S) by the adapter's one definition, from the scores (1, K, *S)
    of the same pass: the probabilities they stand for are the sigmoid of each label's
    log-odds for multi-label heads, else the softmax over the classes (a monotone reading of
    the scores, so the arg-max and ``p > 0.5`` are those of the model's probabilities)."""
    probabilities = torch.sigmoid(scores) if adapter.multilabel else torch.softmax(scores, dim=1)
    return adapter.segment(probabilities, class_index)


class _Recorder:
    """What is kept at each step: ``a_j``, ``M_j`` and ``X_j`` (every channel with
    ``images``, else the first channel only when ``features`` need it); the features are
    computed by :meth:`path`, once the model passes are done, with the voxel ``spacing``."""

    def __init__(self, images: bool, features: dict[str, Callable], spacing: tuple[float, ...]):
        self.keep_images = images
        self.functions = features
        self.spacing = spacing
        self.activations: list[float] = []
        self.masks: list[np.ndarray] = []
        self.images: list[np.ndarray] = []

    def record(self, x: torch.Tensor, mask: torch.Tensor, activation: torch.Tensor) -> None:
        self.activations.append(float(activation.detach()))
        self.masks.append(mask[0].cpu().numpy())
        if self.keep_images or self.functions:
            channels = x.detach()[0] if self.keep_images else x.detach()[0, :1]
            self.images.append(channels.to("cpu", torch.float32, copy=True).numpy())

    def feature_curves(self) -> dict[str, np.ndarray]:
        """``f_k(X_j, M_j)`` on the first channel, as float64 curves (n + 1,)."""
        # Computed after the model passes: numpy work between torch calls runs next to torch's
        # still-spinning worker threads and was 10x slower on 2 cores.
        curves: dict[str, list[float]] = {name: [] for name in self.functions}
        for picture, mask in zip(self.images if self.functions else [], self.masks):
            values = compute_features(picture[0], mask, self.functions, spacing=self.spacing)
            for name, value in values.items():
                curves[name].append(value)
        return {name: np.asarray(values, dtype=np.float64) for name, values in curves.items()}

    def path(self, target: ResolvedTarget, stop_reason: str, reference, parameters: dict,
             started: float) -> DreamPath:
        """The :class:`DreamPath` of what was recorded; ``parameters`` completed with the
        target's class and pixels."""
        curves = self.feature_curves()
        region = target.pixels.cpu().numpy()
        pixel = np.argwhere(region)[0].tolist() if region.sum() == 1 else None
        return DreamPath(
            activations=np.asarray(self.activations, dtype=np.float64),
            masks=np.stack(self.masks),
            images=np.stack(self.images) if self.keep_images else None,
            features=curves,
            zscores=None if reference is None else {
                name: np.asarray(values, dtype=np.float64)
                for name, values in reference.zscores(curves).items()},
            steps_taken=len(self.activations) - 1,
            stop_reason=stop_reason,
            parameters={"class_index": target.class_index, "pixel": pixel,
                        "region_pixels": int(region.sum()), **parameters,
                        "spacing": list(self.spacing), "features": list(self.functions)},
            seconds=time.perf_counter() - started,
            region=region,
        )


# -- the analysis -----------------------------------------------------------------------------


def analyze(model: nn.Module, image, target=None, *, pixel=None,
            steps: int = 100, step_size: float = 0.01, gradient_scaling: str = "max",
            features=None, reference=None,
            value_range=None, tolerance: float | None = None, patience: int = 5,
            record_images: bool = True, progress: bool = True, output: str = "auto",
            activation: str = "auto", read=None, spatial_dims: int | None = None,
            spacing=None, neuron=None, region=None, class_index: int | None = None,
            normalise: str | None = None) -> DreamPath:
    """DeepDream analysis (seed 004, section 2.2): climb the gradient of one class's logit at
    a pixel (or summed over a region) from a start image or volume and record the image, the
    predicted mask and features at every step.

    Parameters
    ----------
    model : nn.Module or callable
        Any segmentation model the :class:`~interpret_segmentation.core.ModelAdapter`
        understands, 2-D or 3-D (a tensor (B, K, *S) or (B, *S), a dict or Hugging Face
        output with 'logits' or 'out', or a tuple whose first element is the output; smaller
        outputs are upsampled to the input size). It runs in eval mode with BatchNorm folded
        into the convolutions (:func:`~interpret_segmentation.core.explanation_mode`) and is
        restored afterwards, also after an error.
    image : array or tensor (H, W), (C, H, W), (1, C, H, W) or a volume (1, C, D, H, W)
        The start ``X_0``: an image without the object (or :func:`white_noise`). With
        ``spatial_dims=3`` also (D, H, W) or (C, D, H, W) volumes.
    target : None, int or Target, optional
        What is maximised: the logit of class ``class_index`` summed over the output pixels of
        ``region`` (:class:`~interpret_segmentation.core.Target`, a region (H, W) or
        (D, H, W); an int is the class alone). The class defaults to 1. Without a region the
        activation is the logit at ``pixel``, by default the centre pixel ``(H // 2, W // 2)``
        (``(D // 2, H // 2, W // 2)`` in a volume): a dream starts from an image in which the
        network sees no object, so the predicted segment (the region the attribution methods
        default to) is empty. For a one-channel (sigmoid) model class 1 is the foreground (the
        logit is the channel's value, the mask ``p > 0.5``) and 0 the background (the negated
        channel, mask ``p <= 0.5``); for K channels any class in [0, K) (channel
        ``class_index``; its mask, the class's segment, is where it is the arg-max, or
        ``p > 0.5`` for a multi-label head with ``activation="sigmoid"``). Models that output
        probabilities are read through their log-odds or log probabilities, as
        :meth:`ModelAdapter.scores`. The class is checked after the first forward pass.
    pixel : ints (y, x), or (z, y, x) for a volume, optional
        The one output pixel whose logit is maximised: shorthand for a target whose region
        holds only that pixel (``target=2, pixel=(y, x)`` is
        ``Target(2, region=<mask of (y, x)>)``). Not with a target that has a region.
    steps : int, default 100
        Most gradient steps; the path holds ``steps_taken + 1`` entries, ``j = 0 .. n``.
    step_size : float, default 0.01
        ``alpha``: the largest change of any pixel in one step. The update is
        ``X <- X + step_size * g / max(|g|)`` with ``g = d a / d X`` (maximum over all pixels
        and channels). If ``g`` is all zero the path stops (``stop_reason`` "zero gradient").
    gradient_scaling : {"max", "mean"}, default "max"
        Divide ``g`` by its largest absolute value (the steepest pixel moves by
        ``step_size``) or by its mean absolute value, classic DeepDream (the mean change per
        pixel is ``step_size``; the pixels of one neuron's receptive field then move by up to
        ``step_size * H * W / field size``, so choose a smaller ``step_size``). "mean" moves
        a spiky gradient's many smaller entries further and grows fuller patterns.
    features : None, sequence or dict, optional
        Features ``f(image (*S), mask (*S) bool) -> float`` computed on the first channel of
        each ``X_j`` and ``M_j`` (by
        :func:`~interpret_segmentation.analysis.features.compute_features` with ``spacing``,
        so user callables get float64 and bool arrays; on volumes the shape features are the
        3-D ones: volume, sphericity, 3-D elongation and diameter): None for all default
        features, names and/or callables, or a dict name -> callable (see
        :func:`~interpret_segmentation.analysis.features.resolve_features`). An empty list or
        dict: no features (activations, masks and images only).
    reference : FeatureReference, optional
        Statistics of the features on real objects (it must cover every feature); the curves
        are then also given as z-scores against it (``DreamPath.zscores``).
    value_range : pair (lo, hi), optional
        Keep the image in this range (e.g. the data's intensity range): projected gradient
        ascent, where a pixel at a bound whose gradient points out of the range does not
        count (its gradient is set to 0 before scaling, so pinned pixels do not shrink the
        step of the others), and every updated image is clamped to the range.
    tolerance : float, optional
        Stop early once the activation rose by less than ``tolerance * max(1, |a|)`` in each
        of ``patience`` consecutive steps (``stop_reason`` "converged"). None: never.
    patience : int, default 5
    record_images : bool, default True
        Keep every ``X_j`` (float32) in ``DreamPath.images``.
    progress : bool, default True
        tqdm bar over the steps on stderr.
    output : {"auto", "logits", "probabilities"}, default "auto"
        What the model returns (see :class:`ModelAdapter`), the same default as every method.
        The analysis climbs a logit; a model that returns probabilities is read through their
        log-odds. "auto" reads values outside [0, 1] as logits and warns (naming ``output=``)
        when it has to guess, e.g. a logit model whose outputs on ``X_0`` all lie in [0, 1];
        pass "logits" for such a model. ``DreamPath.parameters["output"]`` says which reading
        was used.
    activation : {"auto", "softmax", "sigmoid"}, default "auto"
        How the channels are read (see :class:`ModelAdapter`): "sigmoid" for multi-label
        heads, whose class masks are ``p_k > 0.5`` each.
    read : str or callable, optional
        How to find the main output in what the model returns (see :class:`ModelAdapter`).
    spatial_dims : {None, 2, 3}, default None
        Spatial dimensions of ``image``: None decides from the array (5-D is a volume), 3
        reads (D, H, W) and (C, D, H, W) arrays as volumes.
    spacing : float or sequence of floats, optional
        Pixel or voxel size per spatial axis, for the shape features (volume, diameter,
        elongation, sphericity in physical units); default 1 along every axis.
    neuron, region, class_index, normalise
        Deprecated (DeprecationWarning) names of ``pixel``, ``target=Target(class_index,
        region)``, ``target=class_index`` and ``gradient_scaling``; each may not be given
        together with what replaces it.

    Returns
    -------
    DreamPath

    Raises
    ------
    ValueError, TypeError
        For invalid or conflicting arguments, naming the argument; also when the model's
        gradient is not finite.
    """
    started = time.perf_counter()
    adapter = ModelAdapter(model, output=output, activation=activation, read=read)
    start = as_image_batch(image, spatial_dims=spatial_dims).to(adapter.device)
    shape = tuple(start.shape[2:])
    spacing = check_spacing(spacing, len(shape)) or (1.0,)
    spacing = spacing * len(shape) if len(spacing) == 1 else spacing
    settings = AscentSettings(steps, step_size, _gradient_scaling(gradient_scaling, normalise),
                              value_range, tolerance, patience)
    goal = _goal(*_current_names(target, pixel, neuron, region, class_index), shape)
    recorder = _Recorder(record_images, _feature_functions(features, reference), spacing)
    with tqdm(total=settings.steps, desc="deepdream", disable=not progress, file=sys.stderr,
              leave=False) as bar, explanation_mode(model):
        resolved, stop_reason = _climb(adapter, start, goal, settings, recorder, bar)
    return recorder.path(resolved, stop_reason, reference,
                         {**settings.to_dict(), "output": adapter.output}, started)


# -- figures ----------------------------------------------------------------------------------
# Built on matplotlib.figure.Figure, not pyplot: no backend is selected and no global figure
# state is touched, so they work in any program (a GUI, a notebook, a server).


def _shown_steps(count: int, columns: int) -> np.ndarray:
    """Up to ``columns`` evenly spaced step numbers out of 0 .. count - 1, first and last."""
    return np.unique(np.linspace(0, count - 1, min(columns, count)).round().astype(int))


def _check_path(path) -> None:
    if not isinstance(path, DreamPath):
        raise TypeError(f"path: expected a DreamPath, got {type(path).__name__}")


def _shown_slice(path: DreamPath) -> int | None:
    """For a volume path, the axial slice shown: the target voxel's, else the one through the
    target region's centre (:func:`~interpret_segmentation.analysis.figures.target_point`),
    else the middle one; None for a 2-D path."""
    from ..analysis.figures import target_point

    if path.masks.ndim != 4:
        return None
    pixel = path.parameters.get("pixel")
    if pixel is not None and len(pixel) == 3:
        return int(pixel[0])
    if path.region is not None and np.any(path.region):
        return target_point(path.region)[0]
    return path.masks.shape[1] // 2


def plot_path(path: DreamPath, n_columns: int = 6, path_png=None, *, overwrite: bool = False):
    """The dream at evenly spaced steps (first row, first channel, one grey scale for all) and
    the predicted masks below, each titled with its step; on the first image the target pixel
    is marked with a red cross, or the target region outlined in red. A volume is shown by
    its axial slice through the target (the target voxel, or the region's centre).

    Parameters
    ----------
    path : DreamPath
    n_columns : int, default 6
        Number of steps shown (first and last included).
    path_png : str or Path, optional
        Also write the figure there as PNG (through a temporary file; an existing file is
        refused unless ``overwrite``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    from ..analysis.figures import save_figure

    _check_path(path)
    n_columns = check_positive(n_columns, "n_columns")
    shown = _shown_steps(len(path.activations), n_columns)
    z = _shown_slice(path)
    section = (lambda array: array) if z is None else (lambda array: array[..., z, :, :])
    rows = 1 if path.images is None else 2
    figure = Figure(figsize=(2.2 * len(shown), 2.3 * rows))
    axes = figure.subplots(rows, len(shown), squeeze=False)
    if path.images is not None:
        pictures = section(path.images[shown, 0])
        low, high = float(pictures.min()), float(pictures.max())
        for axis, step, picture in zip(axes[0], shown, pictures):
            axis.imshow(picture, cmap="gray", vmin=low, vmax=high)
            axis.set_title(f"step {step}")
        pixel = path.parameters.get("pixel")
        if pixel is not None:
            axes[0, 0].plot([pixel[-1]], [pixel[-2]], "r+", markersize=10, markeredgewidth=2)
        elif path.region is not None and section(path.region).any():
            axes[0, 0].contour(section(path.region).astype(float), levels=[0.5], colors="red",
                               linewidths=1.0)
    for axis, step in zip(axes[-1], shown):
        axis.imshow(section(path.masks[step]), cmap="gray", vmin=0, vmax=1)
        axis.set_title(f"mask, step {step}")
    for axis in axes.flat:
        axis.set_axis_off()
    where = "" if z is None else f", axial slice z={z}"
    figure.suptitle(f"DeepDream path ({path.steps_taken} steps, stopped: {path.stop_reason}"
                    f"{where})")
    if path_png is not None:
        save_figure(figure, path_png, overwrite=overwrite)
    return figure


def _curve_names(path: DreamPath, names) -> list[str]:
    """``names`` (None: all, a str, or a sequence) checked against the path's features."""
    if names is None:
        return list(path.features)
    names = [names] if isinstance(names, str) else list(names)
    unknown = [name for name in names if name not in path.features]
    if unknown:
        raise ValueError(f"names: expected features of the path ({', '.join(path.features)}), "
                         f"got unknown {unknown}")
    return names


def plot_curves(path: DreamPath, names=None, zscores: bool = True, path_png=None, *,
                overwrite: bool = False, normalised: bool | None = None):
    """The activation and each feature against the step, one subplot each.

    With ``zscores`` and a path computed with a reference, the features are drawn as z-scores
    with a shaded band over [-1, 1]: within one standard deviation of real objects. Otherwise
    the raw values are drawn.

    Parameters
    ----------
    path : DreamPath
    names : str or sequence of str, optional
        Features to draw; default all of the path's features.
    zscores : bool, default True
    path_png : str or Path, optional
        Also write the figure there as PNG (temporary file + rename; an existing file is refused
        unless ``overwrite``).
    normalised : bool, optional
        Deprecated name of ``zscores``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    from ..analysis.figures import save_figure

    if normalised is not None:
        _deprecated("plot_curves(normalised=...)", "plot_curves(zscores=...)", stacklevel=3)
        zscores = normalised
    _check_path(path)
    names = _curve_names(path, names)
    scaled = bool(zscores) and path.zscores is not None
    curves = path.zscores if scaled else path.features
    count = 1 + len(names)
    columns = min(3, count)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(4.0 * columns, 2.8 * rows), layout="tight")
    axes = figure.subplots(rows, columns, squeeze=False).flat
    step_numbers = np.arange(len(path.activations))
    axes[0].plot(step_numbers, path.activations, color="black")
    axes[0].set_title("activation")
    for axis, name in zip(axes[1:], names):
        if scaled:
            axis.axhspan(-1.0, 1.0, color="tab:green", alpha=0.15,
                         label="within 1 std of real objects")
            axis.axhline(0.0, color="tab:green", linewidth=0.8)
        axis.plot(step_numbers, curves[name], color="tab:blue")
        axis.set_title(f"{name} (z-score)" if scaled else name)
    for axis in list(axes)[:count]:
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    for axis in list(axes)[count:]:
        axis.set_axis_off()
    if scaled and names:
        axes[1].legend(loc="best", fontsize="small")
    if path_png is not None:
        save_figure(figure, path_png, overwrite=overwrite)
    return figure
