"""DeepDream analysis of a segmentation network (seed 004, Couteaux et al., section 2.2).

Start from an image ``X_0`` in which the network sees no object (a healthy scan, white noise)
and pick one output neuron ``i``: the logit of class ``l`` at a pixel, or that logit summed
over a region. Then, for ``j = 0, 1, ...``:

1. forward ``X_j`` and read the activation ``a_j`` and the predicted mask ``M_j = S(X_j)``;
2. compute the features ``f_k(X_j, M_j)``;
3. take the gradient ``g = d a / d X`` (with respect to the input only) and climb it::

       X_{j+1} = X_j + step_size * g / max(|g|)

The path ``j -> f_k(X_j, M_j)`` shows which properties of an object the network reacts to
most: by following the steepest ascent of its own decision, the network "draws" what makes
it say "object". Curves are easiest to read normalised by the statistics of real objects
(a :class:`~interpret_segmentation.analysis.features.FeatureReference`): a value inside [-1, 1] is
within one standard deviation of what the validation data shows.

The step is the paper's ``alpha * dA/dX`` with the gradient divided by its largest absolute
value: the pixel with the steepest gradient changes by exactly ``step_size`` at every step
(before clamping to ``value_range``), every other pixel by less, whatever the scale of the
network's gradients and the size of the image. So one ``step_size`` (in the image's intensity
units) suits very different models, and the path neither stalls where the gradient is small
nor explodes where it is large. (``normalise="mean"`` divides by the *mean* absolute value instead, as classic
DeepDream does: the pixels of a single neuron's receptive field then move by up to
``step_size * H * W / field size`` per step, which depends on the image size, but the many
smaller entries of a spiky gradient move further.)

Each step costs one forward and one backward pass (to the input only; nothing accumulates in
the parameters' ``.grad``). The forward pass that gives the gradient also gives the mask, and
the features are computed on numpy copies, so the analysis costs little more than the model's
passes themselves.
"""

from __future__ import annotations

import math
import operator
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..core import ModelAdapter, as_image_batch, as_mask, explanation_mode, predicted_mask
from ..core.io import json_ready
from ..core.validate import check_positive

__all__ = ["DreamPath", "analyze", "plot_curves", "plot_path", "white_noise"]

STOP_REASONS = ("steps", "converged", "zero gradient")
GRADIENT_NORMALISATIONS = ("max", "mean")
"""How the gradient is scaled before a step: by its largest or its mean absolute value."""


# -- the result -------------------------------------------------------------------------------


@dataclass
class DreamPath:
    """One DeepDream path: what the network saw and decided at each step ``j = 0 .. n``.

    Attributes
    ----------
    activations : ndarray (n + 1,) float64
        The maximised activation ``a_j`` (a logit, or a sum of logits over the region).
    masks : ndarray (n + 1, H, W) bool
        The predicted mask ``M_j`` of the analysed class at each step.
    images : ndarray (n + 1, C, H, W) float32 or None
        The dream ``X_j`` at each step; None when recorded with ``record_images=False``.
    features : dict name -> ndarray (n + 1,) float64
        The curves ``j -> f_k(X_j, M_j)`` (NaN where the mask is empty, for most features).
    normalised : dict name -> ndarray (n + 1,) float64, or None
        The same curves as z-scores with respect to the reference (real objects); None when no
        reference was given.
    steps_taken : int
        ``n``, the number of gradient steps made.
    stop_reason : {"steps", "converged", "zero gradient"}
        Why the path ended: all ``steps`` made, the activation stopped rising (``tolerance``),
        or the gradient vanished (the image can no longer be changed by the rule).
    parameters : dict
        The analysis' settings (JSON values).
    seconds : float
        Wall-clock time of the analysis.
    """

    activations: np.ndarray
    masks: np.ndarray
    images: np.ndarray | None
    features: dict[str, np.ndarray]
    normalised: dict[str, np.ndarray] | None
    steps_taken: int
    stop_reason: str
    parameters: dict = field(default_factory=dict)
    seconds: float = 0.0

    def final_features(self, normalised: bool = False) -> dict[str, float]:
        """Each feature's value at the last step; z-scores with ``normalised=True``
        (ValueError when the path has no reference)."""
        curves = self.features
        if normalised:
            if self.normalised is None:
                raise ValueError("normalised: this path was computed without a reference, so it "
                                 "has no normalised features; expected normalised=False")
            curves = self.normalised
        return {name: float(curve[-1]) for name, curve in curves.items()}

    def to_dict(self) -> dict:
        """JSON-ready summary (no images or masks; NaN becomes None): activations, feature
        curves, normalised curves, mask areas, steps taken, stop reason, parameters, seconds."""
        return json_ready({
            "activations": self.activations,
            "features": self.features,
            "normalised": self.normalised,
            "mask_area": self.masks.reshape(len(self.masks), -1).sum(1),
            "steps_taken": self.steps_taken,
            "stop_reason": self.stop_reason,
            "parameters": self.parameters,
            "seconds": self.seconds,
        })


# -- start images -----------------------------------------------------------------------------


def white_noise(shape, seed=0, mean: float = 0.5, std: float = 0.1) -> np.ndarray:
    """A seeded white-noise start image: Gaussian values, float32.

    Parameters
    ----------
    shape : int or tuple of int
        E.g. ``(240, 240)`` or ``(1, 240, 240)`` (any shape :func:`analyze` accepts).
    seed : int or numpy.random.Generator, default 0
        Same seed, same image.
    mean, std : float, default 0.5 and 0.1
        Of the Gaussian; ``std >= 0``.
    """
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
                        for s in shape):
        raise ValueError(f"shape: expected positive ints, got {shape!r}")
    for name, value in (("mean", mean), ("std", std)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if std < 0:
        raise ValueError(f"std: expected a number >= 0, got {std!r}")
    if isinstance(seed, np.random.Generator):
        rng = seed
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        rng = np.random.default_rng(int(seed))
    else:
        raise TypeError(f"seed: expected an int or a numpy Generator, got {type(seed).__name__}")
    return rng.normal(mean, std, size=shape).astype(np.float32)


# -- validation -------------------------------------------------------------------------------


def _check_neuron(neuron) -> tuple[int, int] | None:
    if neuron is None:
        return None
    try:
        pair = tuple(neuron)
        if len(pair) != 2 or any(isinstance(v, (bool, np.bool_)) for v in pair):
            raise TypeError
        pair = tuple(operator.index(v) for v in pair)
    except TypeError:
        raise TypeError(f"neuron: expected a pair of ints (y, x), got {neuron!r}") from None
    return pair


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


def _check_tolerance(tolerance) -> float | None:
    if tolerance is None:
        return None
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) \
            or not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance: expected None or a finite number >= 0, got {tolerance!r}")
    return float(tolerance)


def _check_class_index(class_index, classes: int) -> int:
    """``class_index`` against the number of classes K of the scores (1, K, H, W)."""
    expected = (f"an int in [0, {classes}) (a one-channel model has two classes: 1 is its "
                "logit, the foreground, and 0 the negated logit, the background)")
    if isinstance(class_index, (bool, np.bool_)) or not isinstance(class_index, (int, np.integer)):
        raise TypeError(f"class_index: expected {expected}, got {class_index!r}")
    if not 0 <= class_index < classes:
        raise ValueError(f"class_index: expected {expected}, got {class_index}")
    return int(class_index)


def _feature_functions(features, reference) -> dict[str, Callable]:
    """The features as a dict name -> callable (empty for an empty sequence or dict), and the
    reference checked to cover them all."""
    # features.py holds the radiomic-style features and the reference statistics
    from ..analysis.features import FeatureReference, resolve_features

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


# -- the analysis -----------------------------------------------------------------------------


def analyze(model: nn.Module, image, *, neuron=None, region=None, class_index: int | None = None,
            steps: int = 100, step_size: float = 0.01, normalise: str = "max",
            features=None, reference=None,
            value_range=None, tolerance: float | None = None, patience: int = 5,
            record_images: bool = True, progress: bool = True,
            output: str = "logits") -> DreamPath:
    """DeepDream analysis (seed 004, section 2.2): climb one output neuron's gradient from a
    start image and record the image, the predicted mask and features at every step.

    Parameters
    ----------
    model : nn.Module
        Any segmentation model the :class:`~interpret_segmentation.core.ModelAdapter`
        understands (a tensor (B, H, W), (B, 1, H, W) or (B, C, H, W), a dict with 'out', or a
        tuple whose first element is the output; smaller outputs are upsampled bilinearly to
        the input size). It runs in eval mode with BatchNorm folded into the convolutions
        (:func:`~interpret_segmentation.core.explanation_mode`) and is restored afterwards,
        also after an error.
    image : array or tensor (H, W), (C, H, W) or (1, C, H, W)
        The start ``X_0``: an image without the object (or :func:`white_noise`).
    neuron : pair of ints (y, x), optional
        The output pixel whose logit is maximised; default the centre ``(H // 2, W // 2)``.
        Checked against the output's H x W (the input's: smaller outputs are upsampled)
        after the first forward pass.
    region : array (H, W) of bool, optional
        Maximise instead the sum of the logit over these output pixels (not with ``neuron``).
    class_index : int, optional
        The class whose logit is maximised and whose mask is recorded; default 1. For a
        one-channel (sigmoid) model 1 is the foreground: the logit is the channel's value
        and the mask ``p > 0.5``; 0 is the background, whose logit is the negated channel,
        so its mask is ``p <= 0.5``. For a model with C channels any class in [0, C): the
        logit is channel ``class_index`` and the mask where it is the arg-max. Models that
        output probabilities are read through their log-odds (one channel) or log
        probabilities (several), as :meth:`ModelAdapter.scores`.
    steps : int, default 100
        Most gradient steps; the path holds ``steps_taken + 1`` entries, ``j = 0 .. n``.
    step_size : float, default 0.01
        ``alpha``: the largest change of any pixel in one step. The update is
        ``X <- X + step_size * g / max(|g|)`` with ``g = d a / d X`` (maximum over all pixels
        and channels). If ``g`` is all zero the path stops (``stop_reason`` "zero gradient").
    normalise : {"max", "mean"}, default "max"
        Divide ``g`` by its largest absolute value (the steepest pixel moves by
        ``step_size``) or by its mean absolute value, classic DeepDream (the mean change per
        pixel is ``step_size``; the pixels of one neuron's receptive field then move by up to
        ``step_size * H * W / field size``, so choose a smaller ``step_size``). "mean" moves
        a spiky gradient's many smaller entries further and grows fuller patterns.
    features : None, sequence or dict, optional
        Features ``f(image (H, W), mask (H, W) bool) -> float`` computed on the first channel
        of each ``X_j`` and ``M_j`` (by :func:`~interpret_segmentation.analysis.features.compute_features`,
        so user callables get float64 and bool arrays): None for all default features, names
        and/or callables, or a dict name -> callable (see
        :func:`~interpret_segmentation.analysis.features.resolve_features`). An empty list or dict: no
        features (activations, masks and images only).
    reference : FeatureReference, optional
        Statistics of the features on real objects (it must cover every feature); the curves
        are then also given as z-scores, ``reference.normalise(features)``
        (``DreamPath.normalised``).
    value_range : pair (lo, hi), optional
        Keep the image in this range (e.g. the data's intensity range): projected gradient
        ascent, where a pixel at a bound whose gradient points out of the range does not
        count (its gradient is set to 0 before normalising, so pinned pixels do not shrink
        the step of the others), and every updated image is clamped to the range.
    tolerance : float, optional
        Stop early once the activation rose by less than ``tolerance * max(1, |a|)`` in each
        of ``patience`` consecutive steps (``stop_reason`` "converged"). None: never.
    patience : int, default 5
    record_images : bool, default True
        Keep every ``X_j`` (float32) in ``DreamPath.images``.
    progress : bool, default True
        tqdm bar over the steps on stderr.
    output : {"logits", "probabilities", "auto"}, default "logits"
        What the model returns (see :class:`ModelAdapter`). The analysis climbs a logit, so
        the default reads the output as logits; a model that returns probabilities is read
        through their log-odds with "probabilities". ("auto" guesses from the outputs on
        ``X_0``, and a logit model whose outputs there all lie in [0, 1] would be taken for a
        probability model; ``DreamPath.parameters["output"]`` says which reading was used.)

    Returns
    -------
    DreamPath

    Raises
    ------
    ValueError, TypeError
        For invalid arguments, naming the argument; also when the model's gradient is not
        finite.
    """
    started = time.perf_counter()
    adapter = ModelAdapter(model, output=output)
    batch = as_image_batch(image).to(adapter.device)
    steps = check_positive(steps, "steps")
    step_size = check_positive(step_size, "step_size", float)
    if normalise not in GRADIENT_NORMALISATIONS:
        raise ValueError(f"normalise: expected one of {GRADIENT_NORMALISATIONS}, got {normalise!r}")
    patience = check_positive(patience, "patience")
    tolerance = _check_tolerance(tolerance)
    value_range = _check_value_range(value_range)
    neuron = _check_neuron(neuron)
    if neuron is not None and region is not None:
        raise ValueError("neuron and region: expected at most one of them (a pixel or a region "
                         "to maximise), got both")
    region_pixels = None
    if region is not None:
        region_pixels = as_mask(region, tuple(batch.shape[-2:]), "region")
        if not region_pixels.any():
            raise ValueError("region: expected a mask with at least one pixel, got an empty one")
        region_pixels = region_pixels.to(adapter.device)
    class_index = 1 if class_index is None else class_index
    functions = _feature_functions(features, reference)
    from ..analysis.features import compute_features

    activations: list[float] = []
    masks: list[np.ndarray] = []
    images: list[np.ndarray] = []
    curves: dict[str, list[float]] = {name: [] for name in functions}
    stop_reason = "steps"
    flat_steps = 0
    current = batch
    bar = tqdm(total=steps, desc="deepdream", disable=not progress, file=sys.stderr, leave=False)
    try:
        with explanation_mode(model):
            for j in range(steps + 1):
                last = j == steps
                x = current.detach().requires_grad_(not last)
                with torch.set_grad_enabled(not last):
                    scores = adapter.scores(x)
                    if j == 0:
                        class_index = _check_class_index(class_index, scores.shape[1])
                        if neuron is None and region_pixels is None:
                            neuron = (scores.shape[2] // 2, scores.shape[3] // 2)
                        _check_inside(neuron, region_pixels, scores.shape)
                    logit = scores[0, class_index]
                    if region_pixels is None:
                        activation = logit[neuron]
                    else:
                        activation = logit[region_pixels].sum()

                # record X_j, M_j, a_j; the features come after the loop
                activations.append(float(activation.detach()))
                masks.append(predicted_mask(scores.detach(), class_index)[0].cpu().numpy())
                picture = x.detach()[0].to("cpu", torch.float32, copy=True).numpy()
                if record_images:
                    images.append(picture)
                elif functions:
                    images.append(picture[:1])

                if last:
                    break
                if tolerance is not None and j > 0:
                    rise = activations[-1] - activations[-2]
                    flat = rise < tolerance * max(1.0, abs(activations[-2]))
                    flat_steps = flat_steps + 1 if flat else 0
                    if flat_steps >= patience:
                        stop_reason = "converged"
                        break

                gradient = _input_gradient(activation, x, value_range)
                if gradient is None:
                    stop_reason = "zero gradient"
                    break
                scale = gradient.abs().max() if normalise == "max" else gradient.abs().mean()
                current = x.detach() + (step_size / scale) * gradient
                if value_range is not None:
                    current.clamp_(*value_range)
                bar.update(1)
    finally:
        bar.close()

    # Features are computed once the model passes are done: numpy work between torch calls
    # runs next to torch's still-spinning worker threads and was 10x slower on 2 cores.
    for picture, mask in zip(images if functions else [], masks):
        for name, value in compute_features(picture[0], mask, functions).items():
            curves[name].append(value)
    if not record_images:
        images = []
    steps_taken = len(activations) - 1
    feature_curves = {name: np.asarray(values, dtype=np.float64) for name, values in curves.items()}
    return DreamPath(
        activations=np.asarray(activations, dtype=np.float64),
        masks=np.stack(masks),
        images=np.stack(images) if record_images else None,
        features=feature_curves,
        normalised=None if reference is None else {
            name: np.asarray(values, dtype=np.float64)
            for name, values in reference.normalise(feature_curves).items()},
        steps_taken=steps_taken,
        stop_reason=stop_reason,
        parameters={
            "target": "neuron" if region_pixels is None else "region",
            "neuron": None if neuron is None else list(neuron),
            "region_pixels": None if region_pixels is None else int(region_pixels.sum()),
            "class_index": class_index,
            "steps": steps,
            "step_size": step_size,
            "gradient_normalisation": normalise,
            "value_range": None if value_range is None else list(value_range),
            "tolerance": tolerance,
            "patience": patience,
            "output": adapter.output,
            "features": list(functions),
        },
        seconds=time.perf_counter() - started,
    )


def _check_inside(neuron, region_pixels, shape) -> None:
    """The neuron (or region) against the scores' (1, K, H, W)."""
    height, width = shape[-2:]
    if region_pixels is not None:
        if tuple(region_pixels.shape) != (height, width):
            raise ValueError(f"region: expected the model output's size {(height, width)}, got "
                             f"{tuple(region_pixels.shape)}")
        return
    y, x = neuron
    if not (0 <= y < height and 0 <= x < width):
        raise ValueError(f"neuron: expected (y, x) inside the model output's H x W = "
                         f"{height} x {width} (output shape {tuple(shape)}), got {neuron}")


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


# -- figures ----------------------------------------------------------------------------------


def _shown_steps(count: int, columns: int) -> np.ndarray:
    """Up to ``columns`` evenly spaced step numbers out of 0 .. count - 1, first and last."""
    return np.unique(np.linspace(0, count - 1, min(columns, count)).round().astype(int))


def plot_path(path: DreamPath, n_columns: int = 6, path_png=None, *, overwrite: bool = False):
    """The dream at evenly spaced steps (first row, first channel, one grey scale for all) and
    the predicted masks below, each titled with its step; the neuron is marked with a red cross
    (the region outlined) on the first image.

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
    from ..analysis.figures import plt, save_figure

    if not isinstance(path, DreamPath):
        raise TypeError(f"path: expected a DreamPath, got {type(path).__name__}")
    n_columns = check_positive(n_columns, "n_columns")
    shown = _shown_steps(len(path.activations), n_columns)
    rows = 1 if path.images is None else 2
    figure, axes = plt.subplots(rows, len(shown), figsize=(2.2 * len(shown), 2.3 * rows),
                                squeeze=False)
    if path.images is not None:
        pictures = path.images[shown, 0]
        low, high = float(pictures.min()), float(pictures.max())
        for axis, step, picture in zip(axes[0], shown, pictures):
            axis.imshow(picture, cmap="gray", vmin=low, vmax=high)
            axis.set_title(f"step {step}")
        neuron = path.parameters.get("neuron")
        if neuron is not None:
            axes[0, 0].plot([neuron[1]], [neuron[0]], "r+", markersize=10, markeredgewidth=2)
    for axis, step in zip(axes[-1], shown):
        axis.imshow(path.masks[step], cmap="gray", vmin=0, vmax=1)
        axis.set_title(f"mask, step {step}")
    for axis in axes.flat:
        axis.set_axis_off()
    figure.suptitle(f"DeepDream path ({path.steps_taken} steps, stopped: {path.stop_reason})")
    if path_png is not None:
        save_figure(figure, path_png, overwrite=overwrite)
    return figure


def plot_curves(path: DreamPath, names=None, normalised: bool = True, path_png=None, *,
                overwrite: bool = False):
    """The activation and each feature against the step, one subplot each.

    With ``normalised`` and a path computed with a reference, the features are drawn as
    z-scores with a shaded band over [-1, 1]: within one standard deviation of real objects.
    Otherwise the raw values are drawn.

    Parameters
    ----------
    path : DreamPath
    names : str or sequence of str, optional
        Features to draw; default all of the path's features.
    normalised : bool, default True
    path_png : str or Path, optional
        Also write the figure there as PNG (temporary file + rename; an existing file is refused
        unless ``overwrite``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ..analysis.figures import plt, save_figure

    if not isinstance(path, DreamPath):
        raise TypeError(f"path: expected a DreamPath, got {type(path).__name__}")
    if names is None:
        names = list(path.features)
    elif isinstance(names, str):
        names = [names]
    else:
        names = list(names)
    unknown = [name for name in names if name not in path.features]
    if unknown:
        raise ValueError(f"names: expected features of the path ({', '.join(path.features)}), "
                         f"got unknown {unknown}")
    scaled = bool(normalised) and path.normalised is not None
    curves = path.normalised if scaled else path.features
    count = 1 + len(names)
    columns = min(3, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.0 * columns, 2.8 * rows),
                                squeeze=False)
    axes = axes.flat
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
    figure.tight_layout()
    if path_png is not None:
        save_figure(figure, path_png, overwrite=overwrite)
    return figure
