"""Human-readable features of an image and a segmentation mask (seed 004).

The DeepDream analysis of Couteaux et al. ("Towards Interpretability of Segmentation Networks
by Analyzing DeepDreams", iMIMIC 2019, seed 004) follows an image along a gradient ascent and
records, at every step, radiomic features of the image restricted to the predicted mask: its
intensity, its size and shape, and its texture. Each curve is normalised against the same
feature computed over a validation set, so that 0 is the reference mean and 1 is one
standard deviation above it. This module provides those features and that normalisation.

Every feature is a function ``f(image, mask) -> float`` of

* ``image``: a real 2-D array (H, W), or a single channel (1, H, W); numpy or torch
  (tensors are detached and copied to the CPU);
* ``mask``: an array of the same (H, W) shape, or (1, H, W); non-zero means inside, as in
  :mod:`interpret_segmentation.analysis.metrics`.

Only pixels inside the mask influence a feature: the values outside the mask never matter.
An empty mask gives ``nan`` for every feature except :func:`area`, which gives ``0.0``.

Conventions
-----------
Pixel geometry
    Pixel ``(r, c)`` is the closed unit square centred on ``(r, c)``, with corners at
    ``(r +- 1/2, c +- 1/2)``. :func:`max_diameter` measures the union of those squares, so a
    10 x 40 rectangle of pixels has diameter ``sqrt(10**2 + 40**2)`` and a single pixel
    ``sqrt(2)``. :func:`elongation` uses the pixel centres, as radiomics does.
    :func:`roundness` uses the marching-squares contour at level 1/2 (the contour that
    ``skimage.measure.find_contours`` draws around the zero-padded mask).
Grey levels
    The texture features (:func:`glcm_contrast`, :func:`intensity_entropy`,
    :func:`large_dependence_emphasis`) first quantise the mask's values into ``levels``
    (default 32) equally wide bins spanning the minimum to the maximum value inside the mask;
    the bin index ``0 .. levels - 1`` is the grey level. A mask whose values are all equal has
    a single grey level 0. The quantisation is relative, so these features do not change when
    the intensities inside the mask are shifted or scaled by a positive factor.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.spatial import ConvexHull
from tqdm.auto import tqdm

from ..core.validate import as_array, check_int, check_number

__all__ = [
    "FEATURES",
    "SHAPE_FEATURES",
    "FeatureReference",
    "area",
    "compute_features",
    "elongation",
    "glcm_contrast",
    "intensity_entropy",
    "large_dependence_emphasis",
    "max_diameter",
    "mean_intensity",
    "reference_statistics",
    "resolve_features",
    "rms_intensity",
    "roundness",
]

DEFAULT_LEVELS = 32
"""Default number of grey levels of the texture features."""

FeatureFunction = Callable[[Any, Any], float]

# ---------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------


_SHAPES = "a 2-D array (H, W) or a single channel (1, H, W)"


def _prepare(image, mask) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``image`` and ``mask``; return them as float64 (H, W) and bool (H, W)."""
    image = as_array(image, "image", ndim=2, squeeze=1, expected=_SHAPES, finite=True)
    mask = as_array(mask, "mask", ndim=2, squeeze=1, expected=_SHAPES, finite=True)
    if mask.shape != image.shape:
        raise ValueError(
            f"mask: expected the image's shape {tuple(image.shape)}, got {tuple(mask.shape)}"
        )
    return image.astype(np.float64, copy=False), mask if mask.dtype == bool else mask != 0


def _crop(image: np.ndarray, mask: np.ndarray, pad: int = 0):
    """Crop both arrays to the mask's bounding box, then pad with ``pad`` outside pixels.

    Returns ``None`` for an empty mask. Padding keeps neighbour look-ups inside the arrays;
    padded image values are 0 and padded mask values are False.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    image, mask = image[window], mask[window]
    if pad:
        image = np.pad(image, pad)
        mask = np.pad(mask, pad)
    return image, mask


def _quantise(values: np.ndarray, levels: int) -> np.ndarray:
    """Grey levels ``0 .. levels - 1`` of ``values``: equal bins over ``min .. max``."""
    low, high = values.min(), values.max()
    if not high > low:
        return np.zeros(values.shape, dtype=np.intp)
    scaled = (values - low) * (levels / (high - low))
    return np.minimum(scaled.astype(np.intp), levels - 1)  # values >= 0: truncation = floor


def _grey_levels(image: np.ndarray, mask: np.ndarray, levels: int, pad: int = 1):
    """Cropped, padded grey-level map (-1 outside the mask) and mask, or ``None`` if empty."""
    cropped = _crop(image, mask, pad=pad)
    if cropped is None:
        return None
    image, mask = cropped
    # int16 holds every level count below 2**15 and keeps the shifted-array work small
    grey = np.full(mask.shape, -1, dtype=np.int16 if levels <= 2**15 else np.intp)
    grey[mask] = _quantise(image[mask], levels)
    return grey, mask


# the four GLCM directions 0, 45, 90 and 135 degrees as (row, column) offsets; each
# unordered pair of pixels is met once, and counting it both ways makes the matrix symmetric
_GLCM_OFFSETS = ((0, 1), (-1, 1), (-1, 0), (-1, -1))


def _shifted(array: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """View of a 1-padded array such that ``out[r, c] = array[r + 1 + dr, c + 1 + dc]``."""
    h, w = array.shape
    return array[1 + dr : h - 1 + dr, 1 + dc : w - 1 + dc]


# marching squares at level 1/2 on a binary image: each 2 x 2 cell of pixel centres is coded
# 1 * top-left + 2 * top-right + 4 * bottom-left + 8 * bottom-right (1 = inside). Contour
# length and enclosed area of each of the 16 codes; two diagonal inside corners (codes 6, 9)
# are separate, as in skimage.measure.find_contours(fully_connected="low").
_H = math.sqrt(0.5)  # a segment across one corner of a cell
_CELL_LENGTH = np.array(
    [0, _H, _H, 1, _H, 1, 2 * _H, _H, _H, 2 * _H, 1, _H, 1, _H, _H, 0], dtype=np.float64
)
_CELL_AREA = np.array(
    [0, 1, 1, 4, 1, 4, 2, 7, 1, 2, 4, 7, 4, 7, 7, 8], dtype=np.float64
) / 8.0


def _contour_perimeter_area(mask: np.ndarray) -> tuple[float, float]:
    """Length and enclosed area of the level-1/2 marching-squares contour of ``mask``."""
    padded = np.pad(mask, 1).astype(np.uint8)
    code = (
        padded[:-1, :-1]
        | (padded[:-1, 1:] << 1)
        | (padded[1:, :-1] << 2)
        | (padded[1:, 1:] << 3)
    )
    cells = np.bincount(code.ravel(), minlength=16)  # how often each of the 16 codes occurs
    return float(cells @ _CELL_LENGTH), float(cells @ _CELL_AREA)


# ---------------------------------------------------------------------------------------
# implementations on validated arrays (image float64 (H, W), mask bool (H, W))
# ---------------------------------------------------------------------------------------


def _mean_intensity(image, mask) -> float:
    if not mask.any():
        return math.nan
    return float(image[mask].mean())


def _rms_intensity(image, mask) -> float:
    if not mask.any():
        return math.nan
    values = image[mask]
    return float(math.sqrt(np.dot(values, values) / values.size))


def _max_diameter(image, mask) -> float:
    cropped = _crop(image, mask)
    if cropped is None:
        return math.nan
    mask = cropped[1]
    width = mask.shape[1]
    rows = np.flatnonzero(mask.any(axis=1)).astype(np.float64)
    inside = mask[rows.astype(np.intp)]
    first = np.argmax(inside, axis=1).astype(np.float64)
    last = (width - 1 - np.argmax(inside[:, ::-1], axis=1)).astype(np.float64)
    # the convex hull of the pixel squares is spanned by the outer corners of each row's
    # leftmost and rightmost pixel
    corners = np.concatenate(
        [
            np.stack([rows + dr, cols + dc], axis=1)
            for cols, dc in ((first, -0.5), (last, 0.5))
            for dr in (-0.5, 0.5)
        ]
    )
    if corners.shape[0] > 8:
        corners = corners[ConvexHull(corners).vertices]
    difference = corners[:, None, :] - corners[None, :, :]
    return float(math.sqrt(np.max(np.einsum("ijk,ijk->ij", difference, difference))))


def _elongation(image, mask) -> float:
    # second moments from the row and column counts and one matrix-vector product, without
    # listing the pixels
    inside = mask.astype(np.float64)
    per_row, per_col = inside.sum(axis=1), inside.sum(axis=0)
    count = per_row.sum()
    if count == 0:
        return math.nan
    rows = np.arange(mask.shape[0], dtype=np.float64)
    cols = np.arange(mask.shape[1], dtype=np.float64)
    rows -= np.dot(per_row, rows) / count
    cols -= np.dot(per_col, cols) / count
    var_r, var_c = np.dot(per_row, rows * rows), np.dot(per_col, cols * cols)
    cov = np.dot(rows, inside @ cols)
    half_trace = 0.5 * (var_r + var_c)
    spread = math.hypot(0.5 * (var_r - var_c), cov)
    major = half_trace + spread
    if not major > 0:  # a single pixel: no principal axes
        return math.nan
    minor = max(half_trace - spread, 0.0)
    return float(math.sqrt(minor / major))


def _roundness(image, mask) -> float:
    cropped = _crop(image, mask)
    if cropped is None:
        return math.nan
    perimeter, enclosed = _contour_perimeter_area(cropped[1])
    return float(2.0 * math.sqrt(math.pi * enclosed) / perimeter)


def _glcm_contrast(image, mask, levels: int = DEFAULT_LEVELS) -> float:
    prepared = _grey_levels(image, mask, levels)
    if prepared is None:
        return math.nan
    grey, mask = prepared
    centre_grey, centre_mask = _shifted(grey, 0, 0), _shifted(mask, 0, 0)
    contrasts = []
    for dr, dc in _GLCM_OFFSETS:
        pairs = centre_mask & _shifted(mask, dr, dc)
        count = np.count_nonzero(pairs)
        if count == 0:  # no pair in this direction: the direction is left out
            continue
        # (i - j) ** 2 summed over the pairs as one dot product: cheaper than selecting them
        difference = centre_grey - _shifted(grey, dr, dc)  # small ints: |i - j| < levels
        np.multiply(difference, pairs, out=difference, casting="unsafe")
        difference = difference.astype(np.float64).ravel()
        contrasts.append(np.dot(difference, difference) / count)
    if not contrasts:
        return math.nan
    return float(np.mean(contrasts))


def _intensity_entropy(image, mask, levels: int = DEFAULT_LEVELS) -> float:
    if not mask.any():
        return math.nan
    counts = np.bincount(_quantise(image[mask], levels), minlength=levels)
    p = counts[counts > 0] / counts.sum()
    return float(max(-np.dot(p, np.log2(p)), 0.0))


def _large_dependence_emphasis(
    image, mask, levels: int = DEFAULT_LEVELS, alpha: float = 0.0
) -> float:
    prepared = _grey_levels(image, mask, levels)
    if prepared is None:
        return math.nan
    grey, mask = prepared
    centre_grey, centre_mask = _shifted(grey, 0, 0), _shifted(mask, 0, 0)
    # dependence is symmetric: each of the four GLCM offsets finds a dependent pair once and
    # counts it for both of its pixels (the padded frame absorbs the pairs that leave the crop)
    dependence = np.ones(grey.shape, dtype=np.uint8)  # the pixel itself; at most 9
    centre_dependence = _shifted(dependence, 0, 0)
    for dr, dc in _GLCM_OFFSETS:
        other = _shifted(grey, dr, dc)
        if alpha == 0:
            close = (centre_grey == other) & centre_mask  # -1 marks pixels outside the mask
        else:
            close = (np.abs(centre_grey - other) <= alpha) & centre_mask & _shifted(mask, dr, dc)
        centre_dependence += close
        _shifted(dependence, dr, dc)[...] += close
    dependence = centre_dependence[centre_mask].astype(np.float64)
    return float(np.dot(dependence, dependence) / dependence.size)


def _area(image, mask) -> float:
    return float(np.count_nonzero(mask))


# ---------------------------------------------------------------------------------------
# public features
# ---------------------------------------------------------------------------------------


def mean_intensity(image, mask) -> float:
    """Mean of the image values inside the mask.

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Real image; every value must be finite.
    mask : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Segment; non-zero means inside.

    Returns
    -------
    float
        ``mean(image[mask])``; ``nan`` for an empty mask.

    Raises
    ------
    ValueError
        If a shape is not (H, W) / (1, H, W), the shapes differ, or the image is not finite.
    TypeError
        If an array is not real-valued.
    """
    return _mean_intensity(*_prepare(image, mask))


def rms_intensity(image, mask) -> float:
    """Root mean square of the image values inside the mask (seed 004, Fig. 5a).

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Real image; every value must be finite.
    mask : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Segment; non-zero means inside.

    Returns
    -------
    float
        ``sqrt(mean(image[mask] ** 2))``; ``nan`` for an empty mask.

    Raises
    ------
    ValueError, TypeError
        As :func:`mean_intensity`.
    """
    return _rms_intensity(*_prepare(image, mask))


def max_diameter(image, mask) -> float:
    """Maximum Feret diameter of the mask, in pixels (seed 004, Fig. 5b).

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Image (validated, otherwise unused).
    mask : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Segment; non-zero means inside. Several connected components are measured together.

    Returns
    -------
    float
        The largest distance between two points of the union of the mask's pixel squares,
        i.e. between two pixel corners: a 10 x 40 rectangle gives ``sqrt(10**2 + 40**2)``, a
        single pixel ``sqrt(2)``, a digital disk of radius ``r`` about ``2 r + 1``. ``nan``
        for an empty mask.

    Raises
    ------
    ValueError, TypeError
        As :func:`mean_intensity`.

    Notes
    -----
    Pixel ``(r, c)`` is the unit square with corners ``(r +- 1/2, c +- 1/2)``. The diameter is
    the largest distance between vertices of the convex hull of those corners (only the outer
    corners of each row's first and last pixel can be hull vertices).
    """
    return _max_diameter(*_prepare(image, mask))


def elongation(image, mask) -> float:
    """Elongation of the mask as in radiomics (seed 004, Fig. 5c).

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Image (validated, otherwise unused).
    mask : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Segment; non-zero means inside.

    Returns
    -------
    float
        ``sqrt(lambda_minor / lambda_major)``, the eigenvalues of the covariance of the
        mask's pixel-centre coordinates: 1 for a disk (or a square), ``b / a`` for an ellipse
        with semi-axes ``a >= b``, 0 for a straight line of pixels. ``nan`` for an empty mask
        and for a single pixel (no principal axes).

    Raises
    ------
    ValueError, TypeError
        As :func:`mean_intensity`.

    Notes
    -----
    Same definition as pyradiomics' shape feature ``Elongation`` (pixel centres as points).
    """
    return _elongation(*_prepare(image, mask))


def roundness(image, mask) -> float:
    """Roundness (2-D sphericity) of the mask: ``2 sqrt(pi A) / P``.

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Image (validated, otherwise unused).
    mask : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Segment; non-zero means inside.

    Returns
    -------
    float
        In (0, 1]; ``nan`` for an empty mask. A single pixel (a diamond) gives
        ``sqrt(pi) / 2 ~ 0.886``; a digital disk of radius 20 about 0.93.

    Raises
    ------
    ValueError, TypeError
        As :func:`mean_intensity`.

    Notes
    -----
    ``P`` is the length and ``A`` the enclosed area (outer boundaries minus holes) of the
    marching-squares contour at level 1/2 of the zero-padded mask, the same polygons as
    ``skimage.measure.find_contours(np.pad(mask, 1), 0.5)`` (diagonal-only neighbours are
    separate). This is pyradiomics' 2-D ``Sphericity``. ``A`` differs slightly from the pixel
    count (:func:`area`): the contour cuts each convex corner by 1/8 pixel. Since ``A`` and
    ``P`` describe the same polygons, the isoperimetric inequality keeps the value <= 1. The
    contour of a digital shape is made of 0 and 45 degree segments, so it is longer than the
    smooth boundary it samples, and digitised disks stay a few percent below 1.
    """
    return _roundness(*_prepare(image, mask))


def glcm_contrast(image, mask, levels: int = DEFAULT_LEVELS) -> float:
    """Grey-level co-occurrence (GLCM) contrast inside the mask (seed 004, Fig. 6).

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Real image; every value must be finite.
    mask : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Segment; non-zero means inside.
    levels : int, default 32
        Number of grey levels (see the module notes on quantisation).

    Returns
    -------
    float
        ``sum_ij P(i, j) (i - j) ** 2`` averaged over the directions 0, 45, 90 and 135
        degrees, where ``P`` is the normalised symmetric co-occurrence matrix of grey levels
        at distance 1, counting only pairs whose two pixels are both inside the mask. The unit
        is squared grey levels. A direction without any pair is left out of the average (as in
        pyradiomics); ``nan`` when no direction has a pair (empty mask, single pixel).

    Raises
    ------
    ValueError, TypeError
        As :func:`mean_intensity`; also for ``levels`` that is not an int >= 2.

    Notes
    -----
    For a symmetric matrix the contrast equals the mean of ``(i - j) ** 2`` over the pairs,
    which is how it is computed (no matrix is built).
    """
    return _glcm_contrast(*_prepare(image, mask), levels=check_int(levels, "levels", minimum=2))


def intensity_entropy(image, mask, levels: int = DEFAULT_LEVELS) -> float:
    """Shannon entropy, in bits, of the grey-level histogram inside the mask (seed 004, Fig. 6).

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Real image; every value must be finite.
    mask : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Segment; non-zero means inside.
    levels : int, default 32
        Number of grey levels (see the module notes on quantisation).

    Returns
    -------
    float
        ``-sum_i p_i log2 p_i`` over the occupied grey levels: 0 for a constant region,
        1 for two equally frequent levels, at most ``log2(levels)``. ``nan`` for an empty mask.

    Raises
    ------
    ValueError, TypeError
        As :func:`glcm_contrast`.
    """
    return _intensity_entropy(*_prepare(image, mask), levels=check_int(levels, "levels", minimum=2))


def large_dependence_emphasis(
    image, mask, levels: int = DEFAULT_LEVELS, alpha: float = 0
) -> float:
    """Large Dependence Emphasis of the grey-level dependence matrix (GLDM) (seed 004, Fig. 6).

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Real image; every value must be finite.
    mask : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Segment; non-zero means inside.
    levels : int, default 32
        Number of grey levels (see the module notes on quantisation).
    alpha : float, default 0
        Two pixels are dependent when their grey levels differ by at most ``alpha``.

    Returns
    -------
    float
        ``sum_ij P(i, j) j ** 2 / N_z``, where ``P(i, j)`` counts the mask's pixels of grey
        level ``i`` with dependence ``j`` and ``N_z`` is the number of mask pixels. Between 1
        (no pixel has a dependent neighbour) and 81 (a constant region, all pixels interior);
        ``nan`` for an empty mask.

    Raises
    ------
    ValueError, TypeError
        As :func:`glcm_contrast`; also for ``alpha`` that is not a number >= 0.

    Notes
    -----
    The dependence of a pixel is 1 (the pixel itself, as in pyradiomics, whose dependence
    index starts at 1 for a pixel without dependent neighbours) plus the number of its 8
    neighbours that are inside the mask and dependent on it. Computed as the mean of
    ``j ** 2`` over the pixels; no matrix is built.
    """
    return _large_dependence_emphasis(*_prepare(image, mask),
                                      levels=check_int(levels, "levels", minimum=2),
                                      alpha=check_number(alpha, "alpha", 0))


def area(image, mask) -> float:
    """Number of pixels inside the mask.

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Image (validated, otherwise unused).
    mask : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Segment; non-zero means inside.

    Returns
    -------
    float
        The pixel count (0.0 for an empty mask).

    Raises
    ------
    ValueError, TypeError
        As :func:`mean_intensity`.
    """
    return _area(*_prepare(image, mask))


FEATURES: dict[str, FeatureFunction] = {
    "mean_intensity": mean_intensity,
    "rms_intensity": rms_intensity,
    "max_diameter": max_diameter,
    "elongation": elongation,
    "roundness": roundness,
    "glcm_contrast": glcm_contrast,
    "intensity_entropy": intensity_entropy,
    "large_dependence_emphasis": large_dependence_emphasis,
    "area": area,
}
"""The built-in features by name, in the order they are reported."""

SHAPE_FEATURES: frozenset[str] = frozenset({"max_diameter", "elongation", "roundness"})
"""Names of the features that depend only on the shape of the mask."""

# built-in feature -> implementation on already validated arrays (used by compute_features)
_IMPLEMENTATIONS: dict[Callable, Callable] = {
    mean_intensity: _mean_intensity,
    rms_intensity: _rms_intensity,
    max_diameter: _max_diameter,
    elongation: _elongation,
    roundness: _roundness,
    glcm_contrast: _glcm_contrast,
    intensity_entropy: _intensity_entropy,
    large_dependence_emphasis: _large_dependence_emphasis,
    area: _area,
}


# ---------------------------------------------------------------------------------------
# feature sets
# ---------------------------------------------------------------------------------------


def _known_names() -> str:
    return ", ".join(FEATURES)


def resolve_features(features=None) -> dict[str, FeatureFunction]:
    """The features to compute, as an ordered dict name -> function.

    Parameters
    ----------
    features : None, str, sequence of str or callable, or mapping str -> callable, optional
        ``None`` (default): all of :data:`FEATURES`. A name or a sequence of names of
        :data:`FEATURES` and/or callables ``f(image, mask) -> float`` (a callable is named by
        its ``__name__``). A mapping gives each callable its name (use it for lambdas and
        ``functools.partial``, e.g. ``{"contrast_64": partial(glcm_contrast, levels=64)}``).

    Returns
    -------
    dict[str, callable]
        A new dict, in the given order.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known names), a repeated name, or no
        feature at all.
    TypeError
        For an entry that is neither a name nor a callable, a mapping value that is not
        callable, a callable without ``__name__``, or a ``features`` of another type.
    """
    if features is None:
        return dict(FEATURES)
    resolved: dict[str, FeatureFunction] = {}

    def add(name: str, function: FeatureFunction) -> None:
        if name in resolved:
            raise ValueError(
                f"features: expected distinct names, got {name!r} twice "
                "(give callables their names with a dict)"
            )
        resolved[name] = function

    if isinstance(features, Mapping):
        for name, function in features.items():
            if not isinstance(name, str):
                raise TypeError(f"features: expected str keys, got {name!r}")
            if not callable(function):
                raise TypeError(
                    f"features[{name!r}]: expected a callable f(image, mask) -> float, "
                    f"got {type(function).__name__}"
                )
            add(name, function)
    else:
        if isinstance(features, str) or callable(features):
            features = [features]
        elif not isinstance(features, Iterable):
            raise TypeError(
                "features: expected None, a name, a sequence of names/callables or a dict "
                f"name -> callable, got {type(features).__name__}"
            )
        for position, entry in enumerate(features):
            if isinstance(entry, str):
                if entry not in FEATURES:
                    raise ValueError(
                        f"features: unknown feature {entry!r}; known features: {_known_names()}"
                    )
                add(entry, FEATURES[entry])
            elif callable(entry):
                name = getattr(entry, "__name__", None)
                if not isinstance(name, str):
                    raise TypeError(
                        f"features[{position}]: the callable {entry!r} has no __name__; "
                        "pass a dict name -> callable instead"
                    )
                add(name, entry)
            else:
                raise TypeError(
                    f"features[{position}]: expected a feature name or a callable, "
                    f"got {type(entry).__name__} {entry!r}"
                )
    if not resolved:
        raise ValueError("features: expected at least one feature, got none")
    return resolved


def _evaluate(image: np.ndarray, mask: np.ndarray, features: dict) -> dict[str, float]:
    """Feature values of validated arrays; user callables get the validated arrays."""
    values = {}
    for name, function in features.items():
        implementation = _IMPLEMENTATIONS.get(function)
        value = (implementation or function)(image, mask)
        try:
            values[name] = float(value)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"feature {name!r}: expected a float, got {type(value).__name__} {value!r}"
            ) from error
    return values


def compute_features(image, mask, features=None) -> dict[str, float]:
    """Evaluate several features of one image and mask.

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Real image; every value must be finite.
    mask : numpy.ndarray or torch.Tensor, (H, W) or (1, H, W)
        Segment; non-zero means inside.
    features : see :func:`resolve_features`, default None (all of :data:`FEATURES`)
        User callables receive the validated arrays: float64 (H, W) and bool (H, W).

    Returns
    -------
    dict[str, float]
        Feature name -> value, in the order of ``features``. An empty mask gives ``nan``
        everywhere except ``area`` (0.0).

    Raises
    ------
    ValueError
        If ``image`` or ``mask`` is not (H, W) / (1, H, W), their shapes differ, or the
        image holds NaN or infinite values; for the errors of :func:`resolve_features`.
    TypeError
        For a non-real array, the errors of :func:`resolve_features`, or a callable whose
        result is not convertible to float. Exceptions raised by a callable propagate.
    """
    features = resolve_features(features)
    image, mask = _prepare(image, mask)
    return _evaluate(image, mask, features)


# ---------------------------------------------------------------------------------------
# normalisation against a reference set
# ---------------------------------------------------------------------------------------


def _nan_to_none(value: float):
    return None if math.isnan(value) else value


def _none_to_nan(value) -> float:
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class FeatureReference:
    """Distribution of each feature over a reference set (seed 004, Sect. 3.3).

    Attributes
    ----------
    mean : dict[str, float]
        Mean of each feature over the reference pairs where it was defined.
    std : dict[str, float]
        Population standard deviation (``ddof=0``) over the same values.
    count : dict[str, int]
        Number of values behind ``mean`` and ``std``. A feature never defined has
        count 0 and mean and std ``nan``.

    Notes
    -----
    Build it with :func:`reference_statistics`; store it with :meth:`to_dict` (JSON-ready)
    and :meth:`from_dict`.
    """

    mean: dict[str, float]
    std: dict[str, float]
    count: dict[str, int]

    def __post_init__(self) -> None:
        for field_name in ("mean", "std", "count"):
            value = getattr(self, field_name)
            if not isinstance(value, Mapping):
                raise TypeError(
                    f"{field_name}: expected a dict feature name -> value, "
                    f"got {type(value).__name__}"
                )
        names = list(self.mean)
        for field_name in ("std", "count"):
            if set(getattr(self, field_name)) != set(names):
                raise ValueError(
                    f"{field_name}: expected the same features as mean ({', '.join(names)}), "
                    f"got {', '.join(getattr(self, field_name))}"
                )
        object.__setattr__(self, "mean", {name: float(self.mean[name]) for name in names})
        object.__setattr__(self, "std", {name: float(self.std[name]) for name in names})
        object.__setattr__(self, "count", {name: int(self.count[name]) for name in names})

    def zscores(self, values: Mapping[str, float | np.ndarray]) -> dict:
        """Express feature values in reference units: ``(value - mean) / std``.

        Parameters
        ----------
        values : mapping str -> float or array
            Feature values, e.g. one step's :func:`compute_features` or whole curves
            (arrays of any shape, e.g. (steps,)).

        Returns
        -------
        dict
            Same keys and order; floats for scalar inputs, float64 arrays otherwise. 0 is the
            reference mean and 1 one standard deviation above it.

        Raises
        ------
        KeyError
            If features are missing from the reference (all of them are named).

        Notes
        -----
        A feature with ``std == 0`` (constant over the reference) is divided by 1 instead,
        i.e. reported as ``value - mean`` in its own units, so its curve stays readable (no
        ``nan`` or infinity). A feature never defined on the reference (count 0) has
        ``nan`` mean and std and normalises to ``nan``.
        """
        missing = [name for name in values if name not in self.mean]
        if missing:
            raise KeyError(
                f"values: features not in the reference: {', '.join(map(repr, missing))}; "
                f"the reference has: {', '.join(self.mean)}"
            )
        normalised = {}
        for name, value in values.items():
            std = self.std[name]
            scale = 1.0 if std == 0 else std
            if np.ndim(value) == 0 and not isinstance(value, np.ndarray):
                normalised[name] = (float(value) - self.mean[name]) / scale
            else:
                normalised[name] = (np.asarray(value, dtype=np.float64) - self.mean[name]) / scale
        return normalised

    def to_dict(self) -> dict[str, dict]:
        """``{"mean": {...}, "std": {...}, "count": {...}}``, JSON-ready (``nan`` -> ``None``)."""
        return {
            "mean": {name: _nan_to_none(value) for name, value in self.mean.items()},
            "std": {name: _nan_to_none(value) for name, value in self.std.items()},
            "count": dict(self.count),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> FeatureReference:
        """Inverse of :meth:`to_dict` (``None`` -> ``nan``).

        Raises
        ------
        TypeError
            If ``data`` is not a mapping.
        ValueError
            If a key among ``mean``, ``std``, ``count`` is missing or their features differ.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"data: expected a dict, got {type(data).__name__}")
        missing = [key for key in ("mean", "std", "count") if key not in data]
        if missing:
            raise ValueError(
                f"data: expected keys mean, std and count, missing {', '.join(missing)}"
            )
        return cls(
            mean={name: _none_to_nan(value) for name, value in data["mean"].items()},
            std={name: _none_to_nan(value) for name, value in data["std"].items()},
            count={name: int(value) for name, value in data["count"].items()},
        )


def _iterate_pairs(pairs):
    """Items of ``pairs`` and their number (None if unknown)."""
    if isinstance(pairs, torch.utils.data.Dataset) and hasattr(pairs, "__len__"):
        total = len(pairs)
        return (pairs[index] for index in range(total)), total
    if not isinstance(pairs, Iterable):
        raise TypeError(
            "pairs: expected an iterable of (image, mask) pairs or a torch Dataset, "
            f"got {type(pairs).__name__}"
        )
    total = len(pairs) if hasattr(pairs, "__len__") else None
    return iter(pairs), total


def reference_statistics(pairs, features=None, progress: bool = False) -> FeatureReference:
    """Mean and standard deviation of each feature over a reference set (seed 004, Sect. 3.3).

    Parameters
    ----------
    pairs : iterable of (image, mask) or torch.utils.data.Dataset
        Image (H, W) or (1, H, W) and mask of the same size (non-zero = inside), numpy or
        torch, e.g. the package's data sets, whose items are (image (1, H, W), mask (1, H, W)
        of 0/1). A map-style Dataset is read by index ``0 .. len - 1``.
    features : see :func:`resolve_features`, default None (all of :data:`FEATURES`)
    progress : bool, default False
        Show a tqdm progress bar on stderr.

    Returns
    -------
    FeatureReference
        For each feature, the mean and population standard deviation (``ddof=0``) over the
        pairs whose mask is not empty, skipping values that are ``nan`` (or infinite); the
        count says how many values were used.

    Raises
    ------
    ValueError
        If no pair has a non-empty mask, or a pair is invalid (the message gives its
        position and the reason, see :func:`compute_features`).
    TypeError
        If ``pairs`` is not iterable or an item is not an (image, mask) pair.
    """
    features = resolve_features(features)
    items, total = _iterate_pairs(pairs)
    collected: dict[str, list[float]] = {name: [] for name in features}
    seen = used = 0
    bar = tqdm(
        items, total=total, disable=not progress, file=sys.stderr, desc="reference features",
        unit="pair",
    )
    try:
        for position, item in enumerate(bar):
            seen += 1
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                described = f"length {len(item)}" if isinstance(item, (tuple, list)) else ""
                raise TypeError(
                    f"pairs[{position}]: expected an (image, mask) pair, "
                    f"got {type(item).__name__} {described}".rstrip()
                )
            try:
                image, mask = _prepare(*item)
            except (ValueError, TypeError) as error:
                raise type(error)(f"pairs[{position}]: {error}") from error
            if not mask.any():
                continue
            used += 1
            for name, value in _evaluate(image, mask, features).items():
                if math.isfinite(value):
                    collected[name].append(value)
    finally:
        bar.close()
    if used == 0:
        raise ValueError(
            "pairs: expected at least one (image, mask) pair with a non-empty mask, "
            f"got {seen} pair(s), none with a non-empty mask"
        )
    mean, std, count = {}, {}, {}
    for name, values in collected.items():
        array = np.asarray(values, dtype=np.float64)
        count[name] = int(array.size)
        mean[name] = float(array.mean()) if array.size else math.nan
        std[name] = float(array.std(ddof=0)) if array.size else math.nan
    return FeatureReference(mean=mean, std=std, count=count)
