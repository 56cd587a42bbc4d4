"""Human-readable features of an image and a segmentation mask, 2-D or 3-D (seed 004).

The DeepDream analysis of Couteaux et al. ("Towards Interpretability of Segmentation Networks
by Analyzing DeepDreams", iMIMIC 2019, seed 004) follows an image along a gradient ascent and
records, at every step, radiomic features of the image restricted to the predicted mask: its
intensity, its size and shape, and its texture. Each curve is normalised against the same
feature computed over a validation set, so that 0 is the reference mean and 1 is one
standard deviation above it. This module provides those features and that normalisation.

Every feature is a function ``f(image, mask, *, spacing=None) -> float`` of

* ``image``: one real channel, 2-D (H, W) or (1, H, W), or 3-D (D, H, W) or (1, D, H, W);
  numpy or torch (tensors are detached and copied to the CPU);
* ``mask``: an array of the image's shape (a leading axis of length 1 may be left out or
  added); non-zero means inside, as in :mod:`interpret_segmentation.analysis.metrics`;
* ``spacing``: the size of a pixel or voxel along each axis, (dy, dx) or (dz, dy, dx), or one
  number for all axes; default 1 along every axis. Given as a sequence, its length also says
  how many spatial axes the image has, so ``(1, H, W)`` with three spacings is a volume of
  depth 1. Without it, a 3-D array is a volume unless its first axis has length 1.

Only pixels inside the mask influence a feature: the values outside the mask never matter.
An empty mask gives ``nan`` for every feature except :func:`area`, which gives ``0.0``.

Conventions
-----------
Pixel geometry
    Pixel ``(r, c)`` is the closed box centred on ``(r, c)`` with sides ``spacing``: the
    unit square with corners at ``(r +- 1/2, c +- 1/2)`` by default, a voxel the unit cube
    ``(z +- 1/2, r +- 1/2, c +- 1/2)``. :func:`max_diameter` measures the union of those
    boxes, so a 10 x 40 rectangle of pixels has diameter ``sqrt(10**2 + 40**2)`` and a single
    pixel ``sqrt(2)``. :func:`elongation` uses the pixel centres, as radiomics does.
    :func:`roundness` uses the marching-squares contour at level 1/2 (the contour that
    ``skimage.measure.find_contours`` draws around the zero-padded mask), and on volumes the
    marching-cubes surface at level 1/2 (``skimage.measure.marching_cubes``).
In three dimensions
    :func:`area` is the volume (voxel count times voxel volume), :func:`roundness` the
    sphericity ``pi^(1/3) (6 V)^(2/3) / A`` of the marching-cubes surface (area ``A``,
    enclosed volume ``V``), :func:`elongation` compares the two largest principal axes of the
    voxel centres and :func:`max_diameter` is the largest 3-D distance, all as pyradiomics'
    3-D shape features. The intensity features do not depend on the dimension. The texture
    features count the 26 neighbours of a voxel (13 directions for the co-occurrences)
    instead of the 8 neighbours of a pixel (4 directions), as pyradiomics does in 3-D.
Grey levels
    The texture features (:func:`glcm_contrast`, :func:`intensity_entropy`,
    :func:`large_dependence_emphasis`) first quantise the mask's values into ``levels``
    (default 32) equally wide bins spanning the minimum to the maximum value inside the mask;
    the bin index ``0 .. levels - 1`` is the grey level. A mask whose values are all equal has
    a single grey level 0. The quantisation is relative, so these features do not change when
    the intensities inside the mask are shifted or scaled by a positive factor. They count
    neighbours on the pixel grid, whatever the spacing.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.spatial import ConvexHull
from tqdm.auto import tqdm

from ..core import check_spacing
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


_SHAPES = ("one channel: a 2-D image (H, W) or (1, H, W), or a volume (D, H, W) or "
           "(1, D, H, W)")


def _spatial(array: np.ndarray, dims: int | None) -> np.ndarray:
    """``array`` with a leading axis of length 1 dropped when that leaves ``dims`` spatial axes
    (None: a 3-D array is 2-D when its first axis has length 1, else a volume; 4-D is
    (1, D, H, W)). The caller checks the number of axes left."""
    if dims is None:
        dims = 2 if array.ndim == 2 or (array.ndim == 3 and array.shape[0] == 1) else 3
    return array[0] if array.ndim == dims + 1 and array.shape[0] == 1 else array


def _prepare(image, mask, spacing=None) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Validate ``image``, ``mask`` and ``spacing``; return image float64 (*S), mask bool (*S)
    and one spacing per spatial axis, S 2-D or 3-D."""
    spacing = check_spacing(spacing)  # None, (size,) for every axis, or one size per axis
    dims = len(spacing) if spacing is not None and len(spacing) > 1 else None
    given = np.shape(image)
    image = _spatial(as_array(image, "image", finite=True), dims)
    mask = as_array(mask, "mask", finite=True)
    if image.ndim not in ((2, 3) if dims is None else (dims,)):
        told = "" if dims is None else f" ({dims} spatial axes, as many as spacing has sizes)"
        raise ValueError(f"image: expected {_SHAPES}{told}, got shape {tuple(given)}")
    if (dims is None and image.ndim == 3 and image.shape[0] > 1 and mask.ndim in (2, 3)
            and mask.shape[-2:] == image.shape[1:] and (mask.ndim == 2 or mask.shape[0] == 1)):
        raise ValueError(f"image: expected {_SHAPES} with a mask of the same shape, got image "
                         f"{tuple(image.shape)} (read as a volume (D, H, W)) with mask "
                         f"{tuple(mask.shape)}; pass one channel of a 2-D image")
    mask = _spatial(mask, image.ndim)
    if mask.shape != image.shape:
        raise ValueError(
            f"mask: expected the image's shape {tuple(image.shape)}, got {tuple(mask.shape)}"
        )
    if dims is None:
        spacing = (1.0 if spacing is None else spacing[0],) * image.ndim
    return (image.astype(np.float64, copy=False), mask if mask.dtype == bool else mask != 0,
            spacing)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest window holding every True of ``mask``; None when there is none."""
    window = []
    for axis in range(mask.ndim):
        others = tuple(other for other in range(mask.ndim) if other != axis)
        inside = np.flatnonzero(mask.any(axis=others))
        if inside.size == 0:
            return None
        window.append(slice(inside[0], inside[-1] + 1))
    return tuple(window)


def _crop(image: np.ndarray, mask: np.ndarray, pad: int = 0):
    """Crop both arrays to the mask's bounding box, then pad with ``pad`` outside pixels.

    Returns ``None`` for an empty mask. Padding keeps neighbour look-ups inside the arrays;
    padded image values are 0 and padded mask values are False.
    """
    window = _bounding_box(mask)
    if window is None:
        return None
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


def _directions(dims: int) -> tuple[tuple[int, ...], ...]:
    """One offset of each pair of opposite neighbours at distance 1 (chessboard): the GLCM
    directions, 4 in 2-D (0, 45, 90 and 135 degrees) and 13 in 3-D. Each unordered pair of
    pixels is met once; counting it both ways makes the co-occurrence matrix symmetric."""
    return tuple(offset for offset in itertools.product((-1, 0, 1), repeat=dims)
                 if any(offset) and offset[next(i for i, v in enumerate(offset) if v)] > 0)


def _shifted(array: np.ndarray, offset: tuple[int, ...]) -> np.ndarray:
    """View of a 1-padded array such that ``out[i] = array[i + 1 + offset]`` on every axis."""
    return array[tuple(slice(1 + step, size - 1 + step)
                       for step, size in zip(offset, array.shape))]


# marching squares at level 1/2 on a binary image: each 2 x 2 cell of pixel centres is coded
# 1 * top-left + 2 * top-right + 4 * bottom-left + 8 * bottom-right (1 = inside). Contour
# length and enclosed area of each of the 16 codes, in units of a cell (a pixel); two diagonal
# inside corners (codes 6, 9) are separate, as in
# skimage.measure.find_contours(fully_connected="low"). A contour piece is a corner cut (from
# the middle of one side to the middle of the next), a horizontal or a vertical line.
_CORNERS = np.array([0, 1, 1, 0, 1, 0, 2, 1, 1, 2, 0, 1, 0, 1, 1, 0], dtype=np.float64)
_HORIZONTAL = np.zeros(16)
_HORIZONTAL[[3, 12]] = 1.0  # top or bottom row inside: a line across the cell
_VERTICAL = np.zeros(16)
_VERTICAL[[5, 10]] = 1.0  # left or right column inside
_CELL_AREA = np.array(
    [0, 1, 1, 4, 1, 4, 2, 7, 1, 2, 4, 7, 4, 7, 7, 8], dtype=np.float64
) / 8.0


def _contour_perimeter_area(mask: np.ndarray, spacing=(1.0, 1.0)) -> tuple[float, float]:
    """Length and enclosed area of the level-1/2 marching-squares contour of ``mask``, with
    pixels of size ``spacing`` (dy, dx)."""
    padded = np.pad(mask, 1).astype(np.uint8)
    code = (
        padded[:-1, :-1]
        | (padded[:-1, 1:] << 1)
        | (padded[1:, :-1] << 2)
        | (padded[1:, 1:] << 3)
    )
    cells = np.bincount(code.ravel(), minlength=16)  # how often each of the 16 codes occurs
    dy, dx = spacing
    lengths = _CORNERS * (0.5 * math.hypot(dy, dx)) + _HORIZONTAL * dx + _VERTICAL * dy
    return float(cells @ lengths), float(cells @ _CELL_AREA) * dy * dx


def _surface_area_volume(mask: np.ndarray, spacing) -> tuple[float, float]:
    """Area and enclosed volume of the level-1/2 marching-cubes surface of ``mask`` (D, H, W),
    voxels of size ``spacing``; the volume from the divergence theorem over the triangles."""
    from skimage import measure

    padded = np.pad(mask, 1).astype(np.float32)
    vertices, faces, _, _ = measure.marching_cubes(padded, 0.5, spacing=tuple(spacing))
    triangles = vertices.astype(np.float64)[faces]  # (F, 3 corners, 3 coordinates)
    area = measure.mesh_surface_area(triangles.reshape(-1, 3), np.arange(faces.size).reshape(-1, 3))
    signed = np.einsum("ij,ij->", triangles[:, 0], np.cross(triangles[:, 1], triangles[:, 2]))
    return float(area), abs(float(signed)) / 6.0


def _largest_distance(points: np.ndarray, block: int = 2048) -> float:
    """The largest distance between two of ``points`` (N, dims), from
    ``|p - q|^2 = |p|^2 + |q|^2 - 2 p.q`` (one matrix product per block of rows)."""
    points = points - points.mean(axis=0)  # small coordinates: no cancellation to speak of
    norms = np.einsum("ij,ij->i", points, points)
    largest = 0.0
    for start in range(0, len(points), block):
        rows = slice(start, start + block)
        squared = norms[rows, None] + norms[None, :] - 2.0 * (points[rows] @ points.T)
        largest = max(largest, float(squared.max()))
    return math.sqrt(largest)


# ---------------------------------------------------------------------------------------
# implementations on validated arrays (image float64 (*S), mask bool (*S), spacing per axis)
# ---------------------------------------------------------------------------------------


def _mean_intensity(image, mask, spacing=None) -> float:
    if not mask.any():
        return math.nan
    return float(image[mask].mean())


def _rms_intensity(image, mask, spacing=None) -> float:
    if not mask.any():
        return math.nan
    values = image[mask]
    return float(math.sqrt(np.dot(values, values) / values.size))


def _max_diameter(image, mask, spacing) -> float:
    cropped = _crop(image, mask)
    if cropped is None:
        return math.nan
    mask = cropped[1]
    # the convex hull of the pixel boxes is spanned by the outer corners of the first and the
    # last pixel of each line along the last axis (a row in 2-D)
    lines = mask.any(axis=-1)
    start = np.argwhere(lines).astype(np.float64)  # (L, dims - 1): where each line lies
    inside = mask[lines]  # (L, W), in the order of argwhere
    width = mask.shape[-1]
    first = np.argmax(inside, axis=1).astype(np.float64)
    last = (width - 1 - np.argmax(inside[:, ::-1], axis=1)).astype(np.float64)
    corners = np.concatenate([
        np.column_stack([start + np.asarray(shift), ends + end_shift])
        for ends, end_shift in ((first, -0.5), (last, 0.5))
        for shift in itertools.product((-0.5, 0.5), repeat=mask.ndim - 1)
    ]) * np.asarray(spacing)
    if corners.shape[0] > 2 ** (mask.ndim + 1):
        corners = corners[ConvexHull(corners).vertices]
    return _largest_distance(corners)


def _elongation(image, mask, spacing) -> float:
    # second moments from the mask's marginals (sums over the other axes), without listing
    # the pixels: var along axis i from the 1-D marginal, cov(i, j) from the 2-D one
    cropped = _crop(image, mask)
    if cropped is None:
        return math.nan
    inside = cropped[1].astype(np.float64)
    dims = inside.ndim
    count = inside.sum()
    centred = []
    for axis in range(dims):
        marginal = inside.sum(axis=tuple(a for a in range(dims) if a != axis))
        coordinates = np.arange(inside.shape[axis], dtype=np.float64) * spacing[axis]
        centred.append(coordinates - np.dot(marginal, coordinates) / count)
    covariance = np.zeros((dims, dims))
    for i, j in itertools.combinations_with_replacement(range(dims), 2):
        others = tuple(a for a in range(dims) if a not in (i, j))
        if i == j:
            marginal = inside.sum(axis=others)
            covariance[i, i] = np.dot(marginal, centred[i] ** 2)
        else:
            pair = inside.sum(axis=others) if others else inside  # (n_i, n_j)
            covariance[i, j] = covariance[j, i] = centred[i] @ pair @ centred[j]
    eigenvalues = np.linalg.eigvalsh(covariance / count)  # ascending
    major, minor = eigenvalues[-1], eigenvalues[-2]
    if not major > 0:  # a single pixel: no principal axes
        return math.nan
    return float(math.sqrt(max(minor, 0.0) / major))


def _roundness(image, mask, spacing) -> float:
    cropped = _crop(image, mask)
    if cropped is None:
        return math.nan
    if mask.ndim == 2:
        perimeter, enclosed = _contour_perimeter_area(cropped[1], spacing)
        return float(2.0 * math.sqrt(math.pi * enclosed) / perimeter)
    surface, volume = _surface_area_volume(cropped[1], spacing)
    return float(math.pi ** (1 / 3) * (6.0 * volume) ** (2 / 3) / surface)


def _glcm_contrast(image, mask, spacing=None, levels: int = DEFAULT_LEVELS) -> float:
    prepared = _grey_levels(image, mask, levels)
    if prepared is None:
        return math.nan
    grey, mask = prepared
    centre = (0,) * grey.ndim
    centre_grey, centre_mask = _shifted(grey, centre), _shifted(mask, centre)
    contrasts = []
    for offset in _directions(grey.ndim):
        pairs = centre_mask & _shifted(mask, offset)
        count = np.count_nonzero(pairs)
        if count == 0:  # no pair in this direction: the direction is left out
            continue
        # (i - j) ** 2 summed over the pairs as one dot product: cheaper than selecting them
        difference = centre_grey - _shifted(grey, offset)  # small ints: |i - j| < levels
        np.multiply(difference, pairs, out=difference, casting="unsafe")
        difference = difference.astype(np.float64).ravel()
        contrasts.append(np.dot(difference, difference) / count)
    if not contrasts:
        return math.nan
    return float(np.mean(contrasts))


def _intensity_entropy(image, mask, spacing=None, levels: int = DEFAULT_LEVELS) -> float:
    if not mask.any():
        return math.nan
    counts = np.bincount(_quantise(image[mask], levels), minlength=levels)
    p = counts[counts > 0] / counts.sum()
    return float(max(-np.dot(p, np.log2(p)), 0.0))


def _large_dependence_emphasis(
    image, mask, spacing=None, levels: int = DEFAULT_LEVELS, alpha: float = 0.0
) -> float:
    prepared = _grey_levels(image, mask, levels)
    if prepared is None:
        return math.nan
    grey, mask = prepared
    centre = (0,) * grey.ndim
    centre_grey, centre_mask = _shifted(grey, centre), _shifted(mask, centre)
    # dependence is symmetric: each direction finds a dependent pair once and counts it for
    # both of its pixels (the padded frame absorbs the pairs that leave the crop)
    dependence = np.ones(grey.shape, dtype=np.uint8)  # the pixel itself; at most 9 (27 in 3-D)
    centre_dependence = _shifted(dependence, centre)
    for offset in _directions(grey.ndim):
        other = _shifted(grey, offset)
        if alpha == 0:
            close = (centre_grey == other) & centre_mask  # -1 marks pixels outside the mask
        else:
            close = (np.abs(centre_grey - other) <= alpha) & centre_mask & _shifted(mask, offset)
        centre_dependence += close
        _shifted(dependence, offset)[...] += close
    dependence = centre_dependence[centre_mask].astype(np.float64)
    return float(np.dot(dependence, dependence) / dependence.size)


def _area(image, mask, spacing) -> float:
    return float(np.count_nonzero(mask)) * math.prod(spacing)


# ---------------------------------------------------------------------------------------
# public features
# ---------------------------------------------------------------------------------------


def mean_intensity(image, mask, *, spacing=None) -> float:
    """Mean of the image values inside the mask.

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W), (D, H, W) or with a leading 1
        One real channel; every value must be finite.
    mask : numpy.ndarray or torch.Tensor, the image's shape
        Segment; non-zero means inside.
    spacing : float or sequence of 2 or 3 floats, optional
        Pixel or voxel size per axis, (dy, dx) or (dz, dy, dx); default 1. Given as a
        sequence, its length is the number of spatial axes (its values are not used).

    Returns
    -------
    float
        ``mean(image[mask])``; ``nan`` for an empty mask.

    Raises
    ------
    ValueError
        If a shape is not one channel of 2 or 3 spatial axes, the shapes differ, the image
        is not finite, or ``spacing`` is not positive or has the wrong length.
    TypeError
        If an array or ``spacing`` is not real-valued.
    """
    return _mean_intensity(*_prepare(image, mask, spacing))


def rms_intensity(image, mask, *, spacing=None) -> float:
    """Root mean square of the image values inside the mask (seed 004, Fig. 5a).

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W), (D, H, W) or with a leading 1
        One real channel; every value must be finite.
    mask : numpy.ndarray or torch.Tensor, the image's shape
        Segment; non-zero means inside.
    spacing : float or sequence of 2 or 3 floats, optional
        Pixel or voxel size per axis, (dy, dx) or (dz, dy, dx); default 1. Given as a
        sequence, its length is the number of spatial axes (its values are not used).

    Returns
    -------
    float
        ``sqrt(mean(image[mask] ** 2))``; ``nan`` for an empty mask.

    Raises
    ------
    ValueError, TypeError
        As :func:`mean_intensity`.
    """
    return _rms_intensity(*_prepare(image, mask, spacing))


def max_diameter(image, mask, *, spacing=None) -> float:
    """Maximum Feret diameter of the mask, in pixels or spacing units (seed 004, Fig. 5b).

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W), (D, H, W) or with a leading 1
        One real channel (validated, otherwise unused); every value must be finite.
    mask : numpy.ndarray or torch.Tensor, the image's shape
        Segment; non-zero means inside.
    spacing : float or sequence of 2 or 3 floats, optional
        Pixel or voxel size per axis, (dy, dx) or (dz, dy, dx); default 1. Given as a
        sequence, its length is the number of spatial axes.

    Returns
    -------
    float
        The largest distance between two points of the union of the mask's pixel (voxel)
        boxes, i.e. between two of their corners, whatever the connected components: a
        10 x 40 rectangle gives ``sqrt(10**2 + 40**2)``, a single pixel ``sqrt(2)`` (a voxel
        ``sqrt(3)``), a digital disk or ball of radius ``r`` about ``2 r + 1``, an
        a x b x c box ``sqrt(a**2 + b**2 + c**2)``. ``nan`` for an empty mask.

    Raises
    ------
    ValueError, TypeError
        As :func:`mean_intensity`.

    Notes
    -----
    Pixel ``(r, c)`` is the box with corners ``(r +- 1/2, c +- 1/2)`` times the spacing. The
    diameter is the largest distance between vertices of the convex hull of those corners
    (only the outer corners of the first and last pixel of each row can be hull vertices).
    """
    return _max_diameter(*_prepare(image, mask, spacing))


def elongation(image, mask, *, spacing=None) -> float:
    """Elongation of the mask as in radiomics (seed 004, Fig. 5c).

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W), (D, H, W) or with a leading 1
        One real channel (validated, otherwise unused); every value must be finite.
    mask : numpy.ndarray or torch.Tensor, the image's shape
        Segment; non-zero means inside.
    spacing : float or sequence of 2 or 3 floats, optional
        Pixel or voxel size per axis, (dy, dx) or (dz, dy, dx); default 1. Given as a
        sequence, its length is the number of spatial axes.

    Returns
    -------
    float
        ``sqrt(lambda_minor / lambda_major)``, the two largest eigenvalues of the covariance
        of the mask's pixel-centre (voxel-centre) coordinates, scaled by ``spacing``: 1 for a
        disk, a square, a ball or a cube, ``b / a`` for an ellipse with semi-axes ``a >= b``
        or an ellipsoid with semi-axes ``a >= b >= c``, 0 for a straight line of pixels.
        ``nan`` for an empty mask and for a single pixel (no principal axes).

    Raises
    ------
    ValueError, TypeError
        As :func:`mean_intensity`.

    Notes
    -----
    Same definition as pyradiomics' shape features ``Elongation`` (pixel centres as points;
    in 3-D the third axis, pyradiomics' ``Flatness``, does not enter).
    """
    return _elongation(*_prepare(image, mask, spacing))


def roundness(image, mask, *, spacing=None) -> float:
    """Roundness of the mask: 2-D sphericity ``2 sqrt(pi A) / P``, or on a volume the
    sphericity ``pi^(1/3) (6 V)^(2/3) / A``.

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W), (D, H, W) or with a leading 1
        One real channel (validated, otherwise unused); every value must be finite.
    mask : numpy.ndarray or torch.Tensor, the image's shape
        Segment; non-zero means inside.
    spacing : float or sequence of 2 or 3 floats, optional
        Pixel or voxel size per axis, (dy, dx) or (dz, dy, dx); default 1. Given as a
        sequence, its length is the number of spatial axes.

    Returns
    -------
    float
        In (0, 1]; ``nan`` for an empty mask. A single pixel (a diamond) gives
        ``sqrt(pi) / 2 ~ 0.886`` and a digital disk of radius 20 about 0.93; a single voxel
        (an octahedron) ``pi^(1/3) / sqrt(3) ~ 0.846`` and a digital ball of radius 15 about
        0.92.

    Raises
    ------
    ValueError, TypeError
        As :func:`mean_intensity`.

    Notes
    -----
    In 2-D, ``P`` is the length and ``A`` the enclosed area (outer boundaries minus holes) of
    the marching-squares contour at level 1/2 of the zero-padded mask, the same polygons as
    ``skimage.measure.find_contours(np.pad(mask, 1), 0.5)`` (diagonal-only neighbours are
    separate). This is pyradiomics' 2-D ``Sphericity``. ``A`` differs slightly from the pixel
    count (:func:`area`): the contour cuts each convex corner by 1/8 pixel. On a volume,
    ``A`` is the area and ``V`` the enclosed volume of the marching-cubes surface at level
    1/2 of the zero-padded mask (``skimage.measure.marching_cubes`` with the spacing), as
    pyradiomics' 3-D ``Sphericity``. Since the two numbers describe the same polygons or
    surface, the isoperimetric inequality keeps the value <= 1. A digital boundary is made
    of 0 and 45 degree pieces, so it is larger than the smooth boundary it samples, and
    digitised disks and balls stay several percent below 1.
    """
    return _roundness(*_prepare(image, mask, spacing))


def glcm_contrast(image, mask, levels: int = DEFAULT_LEVELS, *, spacing=None) -> float:
    """Grey-level co-occurrence (GLCM) contrast inside the mask (seed 004, Fig. 6).

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W), (D, H, W) or with a leading 1
        One real channel; every value must be finite.
    mask : numpy.ndarray or torch.Tensor, the image's shape
        Segment; non-zero means inside.
    spacing : float or sequence of 2 or 3 floats, optional
        Pixel or voxel size per axis, (dy, dx) or (dz, dy, dx); default 1. Given as a
        sequence, its length is the number of spatial axes (its values are not used).
    levels : int, default 32
        Number of grey levels (see the module notes on quantisation).

    Returns
    -------
    float
        ``sum_ij P(i, j) (i - j) ** 2`` averaged over the directions, where ``P`` is the
        normalised symmetric co-occurrence matrix of grey levels at distance 1, counting only
        pairs whose two pixels are both inside the mask. The directions are 0, 45, 90 and
        135 degrees in 2-D, and the 13 directions to a voxel's 26 neighbours in 3-D. The unit
        is squared grey levels. A direction without any pair is left out of the average (as
        in pyradiomics); ``nan`` when no direction has a pair (empty mask, single pixel).

    Raises
    ------
    ValueError, TypeError
        As :func:`mean_intensity`; also for ``levels`` that is not an int >= 2.

    Notes
    -----
    For a symmetric matrix the contrast equals the mean of ``(i - j) ** 2`` over the pairs,
    which is how it is computed (no matrix is built).
    """
    return _glcm_contrast(*_prepare(image, mask, spacing),
                          levels=check_int(levels, "levels", minimum=2))


def intensity_entropy(image, mask, levels: int = DEFAULT_LEVELS, *, spacing=None) -> float:
    """Shannon entropy, in bits, of the grey-level histogram inside the mask (seed 004, Fig. 6).

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W), (D, H, W) or with a leading 1
        One real channel; every value must be finite.
    mask : numpy.ndarray or torch.Tensor, the image's shape
        Segment; non-zero means inside.
    spacing : float or sequence of 2 or 3 floats, optional
        Pixel or voxel size per axis, (dy, dx) or (dz, dy, dx); default 1. Given as a
        sequence, its length is the number of spatial axes (its values are not used).
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
        As :func:`mean_intensity`; also for ``levels`` that is not an int >= 2.
    """
    return _intensity_entropy(*_prepare(image, mask, spacing),
                              levels=check_int(levels, "levels", minimum=2))


def large_dependence_emphasis(
    image, mask, levels: int = DEFAULT_LEVELS, alpha: float = 0, *, spacing=None
) -> float:
    """Large Dependence Emphasis of the grey-level dependence matrix (GLDM) (seed 004, Fig. 6).

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W), (D, H, W) or with a leading 1
        One real channel; every value must be finite.
    mask : numpy.ndarray or torch.Tensor, the image's shape
        Segment; non-zero means inside.
    spacing : float or sequence of 2 or 3 floats, optional
        Pixel or voxel size per axis, (dy, dx) or (dz, dy, dx); default 1. Given as a
        sequence, its length is the number of spatial axes (its values are not used).
    levels : int, default 32
        Number of grey levels (see the module notes on quantisation).
    alpha : float, default 0
        Two pixels are dependent when their grey levels differ by at most ``alpha``.

    Returns
    -------
    float
        ``sum_ij P(i, j) j ** 2 / N_z``, where ``P(i, j)`` counts the mask's pixels of grey
        level ``i`` with dependence ``j`` and ``N_z`` is the number of mask pixels. Between 1
        (no pixel has a dependent neighbour) and 81 (a constant region, all pixels interior;
        729 for voxels); ``nan`` for an empty mask.

    Raises
    ------
    ValueError, TypeError
        As :func:`mean_intensity`; also for ``levels`` that is not an int >= 2 or ``alpha``
        that is not a number >= 0.

    Notes
    -----
    The dependence of a pixel is 1 (the pixel itself, as in pyradiomics, whose dependence
    index starts at 1 for a pixel without dependent neighbours) plus the number of its 8
    neighbours (26 for a voxel) that are inside the mask and dependent on it. Computed as the
    mean of ``j ** 2`` over the pixels; no matrix is built.
    """
    return _large_dependence_emphasis(*_prepare(image, mask, spacing),
                                      levels=check_int(levels, "levels", minimum=2),
                                      alpha=check_number(alpha, "alpha", 0))


def area(image, mask, *, spacing=None) -> float:
    """Area of the mask (2-D) or its volume (3-D): the pixel (voxel) count times the size of
    one pixel (voxel).

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W), (D, H, W) or with a leading 1
        One real channel (validated, otherwise unused); every value must be finite.
    mask : numpy.ndarray or torch.Tensor, the image's shape
        Segment; non-zero means inside.
    spacing : float or sequence of 2 or 3 floats, optional
        Pixel or voxel size per axis, (dy, dx) or (dz, dy, dx); default 1. Given as a
        sequence, its length is the number of spatial axes.

    Returns
    -------
    float
        ``count * prod(spacing)``: the pixel count by default (0.0 for an empty mask).

    Raises
    ------
    ValueError, TypeError
        As :func:`mean_intensity`.
    """
    return _area(*_prepare(image, mask, spacing))


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


def _evaluate(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...],
              features: dict) -> dict[str, float]:
    """Feature values of validated arrays; built-in features get the spacing, user callables
    the validated arrays alone."""
    values = {}
    for name, function in features.items():
        implementation = _IMPLEMENTATIONS.get(function)
        value = function(image, mask) if implementation is None else \
            implementation(image, mask, spacing)
        try:
            values[name] = float(value)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"feature {name!r}: expected a float, got {type(value).__name__} {value!r}"
            ) from error
    return values


def compute_features(image, mask, features=None, *, spacing=None) -> dict[str, float]:
    """Evaluate several features of one image and mask, 2-D or 3-D.

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor, (H, W), (D, H, W) or with a leading 1
        One real channel; every value must be finite.
    mask : numpy.ndarray or torch.Tensor, the image's shape
        Segment; non-zero means inside.
    features : see :func:`resolve_features`, default None (all of :data:`FEATURES`)
        User callables receive the validated arrays: float64 (*S) and bool (*S) (they do not
        receive the spacing; bind it, e.g. ``partial(area, spacing=...)``).
    spacing : float or sequence of 2 or 3 floats, optional
        Pixel or voxel size per axis, (dy, dx) or (dz, dy, dx), given to the built-in
        features; default 1. Given as a sequence, its length is the number of spatial axes
        (see the module notes).

    Returns
    -------
    dict[str, float]
        Feature name -> value, in the order of ``features``. An empty mask gives ``nan``
        everywhere except ``area`` (0.0).

    Raises
    ------
    ValueError
        If ``image`` or ``mask`` is not one channel of 2 or 3 spatial axes, their shapes
        differ, the image holds NaN or infinite values, or ``spacing`` is not positive or has
        the wrong length; for the errors of :func:`resolve_features`.
    TypeError
        For a non-real array, the errors of :func:`resolve_features`, or a callable whose
        result is not convertible to float. Exceptions raised by a callable propagate.
    """
    features = resolve_features(features)
    return _evaluate(*_prepare(image, mask, spacing), features)


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


def reference_statistics(pairs, features=None, progress: bool = False, *,
                         spacing=None) -> FeatureReference:
    """Mean and standard deviation of each feature over a reference set (seed 004, Sect. 3.3).

    Parameters
    ----------
    pairs : iterable of (image, mask) or torch.utils.data.Dataset
        Image (H, W), (D, H, W) or with a leading 1 and mask of the same size (non-zero =
        inside), numpy or torch, e.g. the package's data sets, whose items are (image
        (1, H, W), mask (1, H, W) of 0/1). A map-style Dataset is read by index
        ``0 .. len - 1``.
    features : see :func:`resolve_features`, default None (all of :data:`FEATURES`)
    progress : bool, default False
        Show a tqdm progress bar on stderr.
    spacing : float or sequence of 2 or 3 floats, optional
        Pixel or voxel size of every pair (see :func:`compute_features`).

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
                image, mask, sizes = _prepare(*item, spacing)
            except (ValueError, TypeError) as error:
                raise type(error)(f"pairs[{position}]: {error}") from error
            if not mask.any():
                continue
            used += 1
            for name, value in _evaluate(image, mask, sizes, features).items():
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
