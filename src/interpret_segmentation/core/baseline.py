"""What "removed" means: the baseline that removed pixels (voxels) take.

Every perturbation method and metric removes part of the input by replacing it with a baseline,
``image * keep + baseline * (1 - keep)`` (:func:`replace`). The baseline is a number, the
image's minimum ("min"), its per-channel mean ("mean"), a Gaussian-blurred copy of it ("blur"
or ``("blur", sigma)``) or an array broadcastable to the image. The default, 0.0, is the papers'
multiplication by a mask; normalised inputs (z-scored CT, ImageNet-normalised RGB) may want
"mean", "min" or "blur" instead, so that removing a part changes what the model sees.

A constant baseline always changes the image at least as much as replacing it by its mean
(:func:`removal_effect` >= 1); a blurred copy or an array may not, and :func:`resolve_baseline`
warns when removing every pixel would change the image by less than
:data:`WEAK_REMOVAL` of its spread.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .validate import ArgumentTypeError, check_positive, is_number

BASELINE_NAMES = ("min", "mean", "blur")
DEFAULT_BLUR_SIGMA = 5.0
"""The Gaussian's standard deviation of "blur", in pixels (voxels)."""

TRUNCATE = 4.0
"""The Gaussian kernel reaches ``TRUNCATE`` standard deviations, as in scipy.ndimage."""

EXPECTED = ("a number, 'min', 'mean', 'blur', ('blur', sigma) or an array broadcastable to the "
            "image (1, C, *S)")

Baseline = float | str | tuple | torch.Tensor

WEAK_REMOVAL = 0.5
"""Below this :func:`removal_effect`, :func:`resolve_baseline` warns that "removed" pixels stay
much as they were."""


def _sigma(sigma, name: str) -> float | tuple[float, ...]:
    if is_number(sigma):
        return check_positive(sigma, f"{name} sigma", float)
    if isinstance(sigma, (Sequence, np.ndarray)) and not isinstance(sigma, str) and len(sigma) > 0:
        return tuple(check_positive(value, f"{name} sigma", float) for value in sigma)
    raise ArgumentTypeError(f"{name}: expected ('blur', sigma) with sigma a positive number or one "
                            f"per spatial axis, got sigma {sigma!r}")


def check_baseline(baseline, name: str = "baseline") -> Baseline:
    """``baseline`` checked and in one form, without an image.

    Returns a float, "min", "mean", ``("blur", sigma)`` (sigma a float or one per axis) or a
    float32 tensor (on the CPU; its shape is checked against the image by
    :func:`resolve_baseline`).

    Raises
    ------
    ValueError
        (:class:`~interpret_segmentation.core.validate.ArgumentTypeError` for a wrong type)
        naming ``name``, what was expected and what came.
    """
    if is_number(baseline):
        if not math.isfinite(baseline):
            raise ValueError(f"{name}: expected {EXPECTED}, got {baseline!r}")
        return float(baseline)
    if isinstance(baseline, str):
        if baseline not in BASELINE_NAMES:
            raise ValueError(f"{name}: expected {EXPECTED}, got {baseline!r}")
        return ("blur", DEFAULT_BLUR_SIGMA) if baseline == "blur" else baseline
    if isinstance(baseline, tuple) and baseline and isinstance(baseline[0], str):
        if baseline[0] != "blur" or len(baseline) != 2:
            raise ValueError(f"{name}: expected {EXPECTED}, got {baseline!r}")
        return "blur", _sigma(baseline[1], name)
    if isinstance(baseline, (np.ndarray, torch.Tensor)):
        if isinstance(baseline, np.ndarray) and baseline.dtype.kind not in "biuf":
            raise ArgumentTypeError(f"{name}: expected {EXPECTED}, got an array of dtype "
                                    f"{baseline.dtype}")
        if isinstance(baseline, torch.Tensor) and baseline.is_complex():
            raise ArgumentTypeError(f"{name}: expected {EXPECTED}, got a complex tensor")
        tensor = torch.as_tensor(baseline).detach().to("cpu", torch.float32)
        if tensor.numel() == 0:
            raise ValueError(f"{name}: expected {EXPECTED}, got an empty array")
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name}: expected finite values, got "
                             f"{int((~torch.isfinite(tensor)).sum())} NaN or inf of {tensor.numel()}")
        return tensor
    raise ArgumentTypeError(f"{name}: expected {EXPECTED}, got {type(baseline).__name__}")


def describe_baseline(baseline) -> float | str | list:
    """A JSON value recording ``baseline`` (as for Explanation.parameters): the number, the
    name, ``["blur", sigma]``, or ``"array (shape)"`` for an array."""
    baseline = check_baseline(baseline)
    if isinstance(baseline, torch.Tensor):
        return f"array {tuple(baseline.shape)}"
    if isinstance(baseline, tuple):
        sigma = baseline[1]
        return ["blur", list(sigma) if isinstance(sigma, tuple) else sigma]
    return baseline


def resolve_baseline(baseline, image: torch.Tensor, name: str = "baseline") -> torch.Tensor:
    """The baseline for ``image`` (1, C, *S): a tensor of its shape, dtype and device.

    Parameters
    ----------
    baseline : number, "min", "mean", "blur", ("blur", sigma) or array
        "min": the image's minimum (over all channels) everywhere; "mean": each channel's mean;
        "blur": the image blurred by a Gaussian of standard deviation ``sigma`` pixels
        (voxels; default 5.0; one number, or one per spatial axis), edges continued by their
        nearest value (scipy.ndimage's ``mode="nearest"``, ``truncate=4``); an array or tensor
        broadcast to (1, C, *S), e.g. (C, 1, 1) per channel or (*S) per pixel.
    image : Tensor (1, C, *S)

    Raises
    ------
    ValueError
        Naming ``name``: an invalid baseline, an array that does not broadcast to the image,
        or a sigma list whose length is not the number of spatial axes.
    """
    baseline = check_baseline(baseline, name)
    if isinstance(baseline, float):
        return torch.full_like(image, baseline)
    if baseline == "min":
        return torch.full_like(image, 0).add_(image.min())
    if baseline == "mean":
        spatial = tuple(range(2, image.ndim))
        return image.mean(spatial, keepdim=True).expand_as(image).contiguous()
    if isinstance(baseline, tuple):
        sigma = baseline[1]
        dims = image.ndim - 2
        if isinstance(sigma, tuple) and len(sigma) != dims:
            raise ValueError(f"{name}: expected ('blur', sigma) with one sigma per spatial axis "
                             f"({dims}), got {len(sigma)}")
        blurred = gaussian_blur(image, sigma if isinstance(sigma, tuple) else (sigma,) * dims)
        return _warn_if_weak(image, blurred, name)
    try:
        array = torch.broadcast_to(baseline.to(image.device, image.dtype), image.shape)
    except RuntimeError:
        raise ValueError(f"{name}: expected an array broadcastable to the image's shape "
                         f"{tuple(image.shape)}, got shape {tuple(baseline.shape)}") from None
    return _warn_if_weak(image, array.contiguous(), name)


def _warn_if_weak(image: torch.Tensor, removed: torch.Tensor, name: str) -> torch.Tensor:
    """``removed``, after a warning when it leaves ``image`` much as it was."""
    effect = removal_effect(image, removed)
    if effect < WEAK_REMOVAL:
        warnings.warn(f"{name}: removing every pixel with this baseline changes the image by only "
                      f"{effect:.0%} of its spread, so removed parts stay much as they were; a "
                      f"constant ('mean', 'min' or a number) or a wider blur removes more",
                      UserWarning, stacklevel=3)
    return removed


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """The normalised 1-D Gaussian of standard deviation ``sigma``, float64, radius
    ``int(TRUNCATE * sigma + 0.5)`` (scipy.ndimage.gaussian_filter1d's kernel)."""
    radius = int(TRUNCATE * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (x / sigma) ** 2)
    return weights / weights.sum()


def gaussian_blur(image: torch.Tensor, sigma: Sequence[float]) -> torch.Tensor:
    """``image`` (B, C, *S) blurred channel by channel with a Gaussian of ``sigma`` per
    spatial axis (pixels), one separable pass per axis, on the image's device and dtype;
    edges continued by their nearest value. Equals scipy.ndimage.gaussian_filter with
    ``mode="nearest"`` on each channel, up to float rounding."""
    dims = image.ndim - 2
    convolve = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    channels = image.shape[1]
    out = image
    for axis, deviation in enumerate(sigma):
        kernel = gaussian_kernel(deviation)
        radius = len(kernel) // 2
        if radius == 0:
            continue
        shape = [1] * dims
        shape[axis] = len(kernel)
        weight = kernel.to(image.device, image.dtype).reshape(1, 1, *shape)
        weight = weight.expand(channels, 1, *shape)
        pad = [0] * (2 * dims)
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = radius  # last axis first
        out = convolve(F.pad(out, pad, mode="replicate"), weight, groups=channels)
    return out if out is not image else image.clone()


def replace(image: torch.Tensor, keep: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """``image * keep + baseline * (1 - keep)``: where ``keep`` is 0 the input is removed.

    Parameters
    ----------
    image : Tensor (1, C, *S)
    keep : Tensor (B, 1, *S) in [0, 1]
        1 keeps a pixel, 0 replaces it by the baseline, values between blend.
    baseline : Tensor (1, C, *S)
        From :func:`resolve_baseline`.

    Returns
    -------
    Tensor (B, C, *S)
    """
    return image * keep + baseline * (1 - keep)


def removal_effect(image: torch.Tensor, removed: torch.Tensor) -> float:
    """How much removing everything changes ``image``: ``|image - removed| / |image - mean|``
    (Euclidean norms over all values; ``removed`` is the image with every pixel removed).

    Replacing by any constant gives at least 1 (the mean is the closest constant); a value
    well below 1 means "removed" leaves much of the image as it was (a blur of a smooth
    image, an occluder ``min(image, fill)`` above most of an image's values). A constant image
    gives 1.0 when removing changes it and 0.0 otherwise.
    """
    change = float(torch.linalg.vector_norm((image - removed).double()))
    spread = float(torch.linalg.vector_norm((image - image.mean()).double()))
    if spread == 0:
        return 1.0 if change > 0 else 0.0
    return change / spread
