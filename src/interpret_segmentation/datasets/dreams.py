"""Synthetic segmentation data sets for the DeepDream experiments of seed 004.

Seed 004 (Couteaux et al., "Towards interpretability of segmentation networks by analyzing
DeepDreams", 2019) checks its DeepDream analysis on two controlled settings, both built on
data sets that cannot be had here. Two small in-memory generators stand in for them:

* **objects with a marking** (section 3.1; replaces the COCO cats and dogs): gray images of
  textured objects on a smoothly varying background. With probability ``p`` an image is
  *marked*: short, faint 135-degree line segments of random position and intensity are drawn
  inside every object (and 45-degree ones on the distractors), a shortcut a network can learn
  instead of the objects' own faint texture when most images carry it. The *characteristic
  feature* of the marking, :func:`marking_response`, is the largest response of an image to
  a 135-degree line (:func:`line_kernel`).
* **an organ with lesions** (section 3.2; replaces LiTS liver tumours): a large textured organ
  on a dark background holding 0-3 hypo-intense lesions, round or elongated, either "real"
  (markedly darker, with their own smoother texture and a blurred boundary) or "synthetic"
  (the organ itself, intensities lowered by a mild constant factor inside the region, as the
  paper builds its synthetic tumours). :func:`healthy_organ` gives the lesion-free start image
  of a DeepDream.

Both are deterministic: sample ``index`` of the set with seed ``seed`` is drawn from
``numpy.random.default_rng([seed, index, stream])`` with separate streams for the layout
(stream 0), the random choices that a parameter switches (stream 1: whether a marking is
drawn, the lesion geometry) and what a parameter adds on top (stream 2: the marking segments,
the lesion intensities). Hence the objects of a sample do not depend on ``p`` or ``marking``,
and the organ does not depend on ``shape`` or ``intensity``.

Angles follow the mathematical convention with the y axis pointing up: 0 degrees points to
the right, 90 degrees up. In array coordinates (row index growing downwards) the direction
of an angle ``a`` is ``(drow, dcol) = (-sin a, cos a)``, so a 135-degree line runs along
``(-1, -1)``: from the lower right to the upper left, the main diagonal "\\" of an array.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from ..core.validate import as_array, check_bool, check_choice, check_int, check_number
from .defects import _oriented_noise

__all__ = [
    "DREAM_SIZE",
    "MARKING_CONTRAST",
    "LESION_SHAPES",
    "LESION_INTENSITIES",
    "MarkingSample",
    "generate_marking_sample",
    "MarkingDataset",
    "line_kernel",
    "marking_response",
    "LesionSample",
    "generate_lesion_sample",
    "healthy_organ",
    "LesionDataset",
]

DREAM_SIZE = 64
"""Default image side in pixels; lengths below are given for it and scale with ``size / 64``."""

MARKING_CONTRAST = (0.02, 0.08)
"""Default range of the gray-level change of a marking segment (drawn uniformly, then its sign):
a faint texture, about as strong as the objects' own (std 0.035-0.065). See
:func:`generate_marking_sample`."""

LESION_SHAPES = ("round", "elongated")
"""Lesion shapes of :func:`generate_lesion_sample`."""

LESION_INTENSITIES = ("real", "synthetic")
"""Lesion intensity models of :func:`generate_lesion_sample`."""

_MIN_SIZE = 32
_TRIES = 60

# --- objects with a marking (gray levels in [0, 1], lengths in px at 64 px) -----------------
_BG_MEAN = (0.35, 0.65)
_BG_COARSE = (0.05, 0.10)  # std of the low-frequency background noise
_BG_COARSE_SIGMA = 6.0
_BG_FINE = 0.015  # std of the faint fine noise everywhere
_BG_RAMP = (0.0, 0.15)  # illumination change across the image
_FINE_SIGMA = 0.8
_N_OBJECTS = (1, 3)
_OBJECT_AREA = (0.025, 0.08)  # fraction of the image, each
_OBJECT_RATIO = (0.5, 1.0)  # minor / major axis
_OBJECT_WOBBLE = 0.12  # largest amplitude of each outline harmonic (orders 2-4)
_OBJECT_OFFSET = (0.04, 0.14)  # mean gray-level change of an object, sign drawn
_OBJECT_GRAIN = (0.035, 0.065)  # std of an object's own texture
_OBJECT_STREAKS = (3.0, 1.0)  # objects: streaks along 45 degrees ("/"), Gaussian sigma along, across
_DISTRACTOR_GRAIN_SIGMA = 1.8  # distractors: isotropic blotches of the same strength
_N_DISTRACTORS = (0, 2)
_DISTRACTOR_AREA = (0.015, 0.05)
_GAP = 2.0
_EDGE_SIGMA = 0.6
_SEGMENT_LENGTH = (7, 13)  # inclusive, px at 64 px
_SEGMENT_WIDTH = 2  # px at 64 px
_MARKING_ANGLE = 135.0
_DECOY_ANGLE = 45.0  # segments drawn on the distractors of a marked image
_SEGMENT_DENSITY = 40.0  # object px per segment (at 64 px)
_SEGMENTS_PER_OBJECT = (3, 10)

# --- organ with lesions ----------------------------------------------------------------------
_BODY_MEAN = (0.08, 0.2)
_BODY_COARSE = 0.03
_BODY_COARSE_SIGMA = 5.0
_ORGAN_AREA = (0.28, 0.42)
_ORGAN_RATIO = (0.72, 0.95)
_ORGAN_WOBBLE = 0.06  # orders 2-3
_ORGAN_SHIFT = 0.05  # of the side, each axis
_ORGAN_MEAN = (0.5, 0.62)
_ORGAN_COARSE = 0.02
_ORGAN_COARSE_SIGMA = 8.0
_ORGAN_GRAIN = (0.03, 0.045)
_ORGAN_EDGE_SIGMA = 1.0
_P_HEALTHY = 0.2
_N_LESIONS = (1, 3)
_LESION_RADIUS = (3.0, 6.5)  # radius of the disc of equal area
_ROUND_RATIO = (0.8, 1.0)
_ROUND_WOBBLE = 0.04  # order 3
_ELONGATED_RATIO = (0.25, 0.45)
_LESION_MARGIN = 2.0  # px of organ left around a lesion
_REAL_CONTRAST = (0.35, 0.5)  # relative darkening of real lesions
_REAL_TEXTURE = 0.025  # std of their own blotchy texture
_REAL_TEXTURE_SIGMA = 1.5
_REAL_EDGE = 1.0  # half-width of the blurred boundary
_SYNTHETIC_CONTRAST = (0.1, 0.18)  # relative darkening of synthetic lesions


# ---------------------------------------------------------------------------------------------
# shared drawing


def _rngs(seed: int, index: int) -> tuple[np.random.Generator, ...]:
    return tuple(np.random.default_rng([seed, index, stream]) for stream in range(3))


def _blob(size: int, centre, major: float, minor: float, angle: float, wobble) -> np.ndarray:
    """Bool mask (size, size) of a smooth blob: an ellipse whose radius varies with harmonics.

    ``angle`` (radians, mathematical convention) is the direction of the major axis;
    ``wobble`` lists ``(order, amplitude, phase)`` of the relative outline harmonics. Only the
    box that can hold the blob is evaluated.
    """
    reach = major * (1.0 + sum(abs(w[1]) for w in wobble)) + 1.0
    r0, r1 = max(0, int(centre[0] - reach)), min(size, int(centre[0] + reach) + 2)
    c0, c1 = max(0, int(centre[1] - reach)), min(size, int(centre[1] + reach) + 2)
    rows, cols = np.mgrid[r0:r1, c0:c1].astype(float)
    dx, dy = cols - centre[1], centre[0] - rows  # y up
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / major
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / minor
    rho = np.hypot(u, v)
    outline = np.ones_like(rho)
    if wobble:
        theta = np.arctan2(v, u)
        for order, amplitude, phase in wobble:
            outline += amplitude * np.cos(order * theta + phase)
    inside = np.zeros((size, size), dtype=bool)
    inside[r0:r1, c0:c1] = rho <= outline
    inside[int(round(centre[0])), int(round(centre[1]))] = True
    return inside


def _draw_wobble(rng, orders, amplitude: float) -> list[tuple[int, float, float]]:
    return [(k, float(rng.uniform(0.0, amplitude)), float(rng.uniform(0.0, 2 * math.pi)))
            for k in orders]


def _axes(area: float, ratio: float) -> tuple[float, float]:
    """Semi-axes (major, minor) of an ellipse of ``area`` px and axis ratio ``ratio``."""
    major = math.sqrt(area / (math.pi * ratio))
    return major, major * ratio


def _ramp(rng, size: int, amplitude_range) -> tuple[np.ndarray, float]:
    amplitude = float(rng.uniform(*amplitude_range))
    direction = float(rng.uniform(0.0, 2 * math.pi))
    rows, cols = np.mgrid[0:size, 0:size].astype(float)
    rows, cols = rows / max(size - 1, 1) - 0.5, cols / max(size - 1, 1) - 0.5
    return amplitude * (cols * math.cos(direction) - rows * math.sin(direction)), amplitude


def _params(**values) -> dict:
    """JSON-ready copy of ``values`` with floats rounded to 4 decimals."""
    def clean(value):
        if isinstance(value, (list, tuple, np.ndarray)):
            return [clean(v) for v in value]
        if isinstance(value, (float, np.floating)):
            return round(float(value), 4)
        if isinstance(value, np.integer):
            return int(value)
        return value
    return {key: clean(value) for key, value in values.items()}


class _GeneratedDataset(Dataset):
    """Torch data set of ``n`` generated samples, drawn on first use and kept in memory."""

    def __init__(self, n: int):
        self.n = check_int(n, "n", minimum=1)
        self._cache: dict[int, object] = {}

    def _generate(self, index: int):  # pragma: no cover - overridden
        raise NotImplementedError

    def __len__(self) -> int:
        return self.n

    def _position(self, item) -> int:
        item = check_int(item, "item")
        position = item + self.n if item < 0 else item
        if not 0 <= position < self.n:
            raise IndexError(f"item: expected an index in [-{self.n}, {self.n - 1}], got {item}")
        return position

    def sample(self, item: int):
        """The full sample (arrays and meta data) at position ``item``."""
        position = self._position(item)
        if position not in self._cache:
            self._cache[position] = self._generate(position)
        return self._cache[position]

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.sample(item)
        image = torch.from_numpy(sample.image.copy())[None]
        mask = torch.from_numpy(sample.mask.astype(np.float32))[None]
        return image, mask


# ---------------------------------------------------------------------------------------------
# line kernel and the characteristic feature


def line_kernel(length: int = 7, angle_degrees: float = 135.0) -> np.ndarray:
    """A centred line segment crossing a ``length x length`` square, as a kernel summing to 1.

    Parameters
    ----------
    length : int, default 7
        Side of the square kernel (at least 2). The segment runs through the centre
        ``((length - 1) / 2, (length - 1) / 2)`` from one side of the square to the opposite
        one; odd lengths give a kernel symmetric under a half turn.
    angle_degrees : float, default 135
        Direction of the segment, counter-clockwise from the column axis with the y axis
        pointing up (so in array coordinates the direction is ``(-sin a, cos a)``).

    Returns
    -------
    numpy.ndarray, float32 (length, length)
        ``length`` equal weights summing to 1, zero elsewhere: along the axis the segment
        runs closer to (columns for angles within 45 degrees of horizontal, rows otherwise)
        each of the ``length`` positions holds one pixel, the point of the segment there
        rounded to the nearest pixel across. At 135 degrees this is
        ``numpy.eye(length) / length`` (the diagonal "\\"), at 45 degrees its mirror image
        ``numpy.fliplr(numpy.eye(length)) / length`` ("/"), at 0 the middle row and at 90 the
        middle column.

    Raises
    ------
    TypeError, ValueError
        If ``length`` is not an int of at least 2 or ``angle_degrees`` is not a finite number.

    Notes
    -----
    Seed 004, section 3.1: the marking is "made of 135 degree line segments", and its
    presence in a dream is measured by the convolution with "a 135 degree line segment".
    """
    length = check_int(length, "length", minimum=2)
    angle = math.radians(check_number(angle_degrees, "angle_degrees"))
    direction = np.array([-math.sin(angle), math.cos(angle)])
    # one pixel per step along the dominant axis; rounding the step keeps the two coordinates
    # of a diagonal exactly equal
    step = np.round(direction / np.abs(direction).max(), 12)
    centre = (length - 1) / 2.0
    t = np.arange(length) - centre  # one point per row or column of the dominant axis
    rows = np.rint(centre + t * step[0]).astype(int)
    cols = np.rint(centre + t * step[1]).astype(int)
    kernel = np.zeros((length, length), dtype=np.float64)
    kernel[rows, cols] = 1.0
    return (kernel / kernel.sum()).astype(np.float32)


def _as_image(image) -> np.ndarray:
    return as_array(image, "image", ndim=2, squeeze=2,
                    expected="a gray image (H, W), (1, H, W) or (1, 1, H, W)").astype(np.float64)


def marking_response(image, length: int = 7, angle: float = 135.0, polarity: str = "both") -> float:
    """The characteristic feature of the marking: the largest response to a line segment.

    The image is correlated (``scipy.ndimage.correlate``, mode ``"reflect"``) with the
    zero-mean line kernel ``line_kernel(length, angle) - 1 / length**2``: the mean of the
    line's pixels minus the mean of its ``length x length`` square. A flat area, however
    bright, scores 0; a one-pixel line of contrast ``c`` along the kernel scores
    ``c * (1 - 1 / length)``, a crossing line close to 0. For odd ``length`` the kernel is
    symmetric under a half turn, so correlation and convolution agree.

    Parameters
    ----------
    image : array-like or torch.Tensor, (H, W), (1, H, W) or (1, 1, H, W)
        Gray image, e.g. a DeepDream.
    length : int, default 7
        Kernel side in pixels (the marking's segments are 7-13 px long at 64 px).
    angle : float, default 135
        Line direction in degrees (see :func:`line_kernel`).
    polarity : {"both", "bright", "dark"}, default "both"
        Score bright lines (the maximum of the response), dark lines (the maximum of its
        negative) or both (the maximum of its absolute value). The marking has both.

    Returns
    -------
    float
        The maximum over all pixels.

    Raises
    ------
    ValueError
        If ``image`` is not a single gray image or ``polarity`` is unknown.

    Notes
    -----
    Seed 004, section 3.1: "the maximum response of the convolution of the dream with a 135
    degree line segment", called the characteristic feature of the marking.
    """
    array = _as_image(image)
    check_choice(polarity, "polarity", ("both", "bright", "dark"))
    kernel = line_kernel(length, check_number(angle, "angle")).astype(np.float64)
    kernel -= 1.0 / kernel.size
    response = ndimage.correlate(array, kernel, mode="reflect")
    if polarity == "bright":
        return float(response.max())
    if polarity == "dark":
        return float((-response).max())
    return float(np.abs(response).max())


# ---------------------------------------------------------------------------------------------
# objects with a marking


@dataclass
class MarkingSample:
    """One sample of the objects-with-a-marking data set (seed 004, section 3.1).

    Attributes
    ----------
    image : numpy.ndarray, float32 (H, W)
        Gray image in [0, 1].
    mask : numpy.ndarray, bool (H, W)
        The objects (the segmentation target).
    marked : bool
        Whether the 135-degree marking was drawn inside the objects.
    meta : dict
        JSON-ready: ``seed``, ``index``, ``size``, ``p`` (None when ``marking`` was forced),
        ``draw`` (the uniform number compared with ``p``), ``marked``, ``contrast`` (the range
        of the segments' gray-level change), ``object_fraction``,
        ``background``, ``objects`` and ``distractors`` (their parameters), ``segments``
        (centre, length and gray-level change of each marking segment) and ``decoys`` (the
        same for the 45-degree segments on the distractors); both empty if unmarked.
    """

    __test__ = False

    image: np.ndarray
    mask: np.ndarray
    marked: bool
    meta: dict = field(default_factory=dict)


def _place_blobs(rng, size: int, areas, ratio_range, wobble_amplitude, placed: list) -> list:
    """Draw blobs of the given areas at free places; ``placed`` holds (centre, reach) taken."""
    blobs = []
    for area in areas:
        ratio = float(rng.uniform(*ratio_range))
        major, minor = _axes(area, ratio)
        angle = float(rng.uniform(0.0, math.pi))
        wobble = _draw_wobble(rng, (2, 3, 4), wobble_amplitude)
        reach = major * (1.0 + sum(w[1] for w in wobble))
        low, high = reach + 1.0, size - 2.0 - reach
        if high <= low:
            continue
        for _ in range(_TRIES):
            centre = rng.uniform(low, high, 2)
            if all(math.dist(centre, c) >= reach + r + _GAP * size / DREAM_SIZE for c, r in placed):
                break
        else:
            continue  # no room left
        placed.append((centre, reach))
        blobs.append({"mask": _blob(size, centre, major, minor, angle, wobble), "centre": centre,
                      "area": area, "ratio": ratio, "angle": math.degrees(angle)})
    return blobs


def _marking_layout(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Unmarked image, object mask and parameters of sample ``index`` (stream 0)."""
    rng = np.random.default_rng([seed, index, 0])
    scale = size / DREAM_SIZE
    mean = float(rng.uniform(*_BG_MEAN))
    coarse = float(rng.uniform(*_BG_COARSE))
    ramp, ramp_amplitude = _ramp(rng, size, _BG_RAMP)
    image = mean + ramp + coarse * _oriented_noise(rng, size, _BG_COARSE_SIGMA * scale,
                                                   _BG_COARSE_SIGMA * scale, 0.0)
    image += _BG_FINE * _oriented_noise(rng, size, _FINE_SIGMA * scale, _FINE_SIGMA * scale, 0.0)

    placed: list = []
    n_objects = int(rng.integers(_N_OBJECTS[0], _N_OBJECTS[1] + 1))
    areas = rng.uniform(*_OBJECT_AREA, n_objects) * size * size
    objects = _place_blobs(rng, size, areas, _OBJECT_RATIO, _OBJECT_WOBBLE, placed)
    n_distractors = int(rng.integers(_N_DISTRACTORS[0], _N_DISTRACTORS[1] + 1))
    areas = rng.uniform(*_DISTRACTOR_AREA, n_distractors) * size * size
    distractors = _place_blobs(rng, size, areas, _OBJECT_RATIO, _OBJECT_WOBBLE, placed)

    mask = np.zeros((size, size), dtype=bool)
    streaks = _oriented_noise(rng, size, _OBJECT_STREAKS[0] * scale, _OBJECT_STREAKS[1] * scale,
                              -math.pi / 4)  # angle from the column axis, rows down: "/"
    blotchy = _oriented_noise(rng, size, _DISTRACTOR_GRAIN_SIGMA * scale,
                              _DISTRACTOR_GRAIN_SIGMA * scale, 0.0)
    for blob, is_object in [(b, True) for b in objects] + [(b, False) for b in distractors]:
        offset = float(rng.uniform(*_OBJECT_OFFSET)) * (1.0 if rng.random() < 0.5 else -1.0)
        grain = float(rng.uniform(*_OBJECT_GRAIN))
        weight = ndimage.gaussian_filter(blob["mask"].astype(float), _EDGE_SIGMA * scale)
        image += weight * (offset + grain * (streaks if is_object else blotchy))
        blob["offset"], blob["grain"] = offset, grain
        if is_object:
            mask |= blob["mask"]
    image = np.clip(image, 0.0, 1.0)

    def describe(blobs):
        return [_params(centre=b["centre"], area=b["area"], ratio=b["ratio"], angle=b["angle"],
                        offset=b["offset"], grain=b["grain"]) for b in blobs]

    params = {
        "background": _params(mean=mean, coarse=coarse, ramp=ramp_amplitude),
        "objects": describe(objects),
        "distractors": describe(distractors),
        "object_masks": [b["mask"] for b in objects],
        "distractor_masks": [b["mask"] for b in distractors],
    }
    return image, mask, params


@functools.lru_cache(maxsize=64)
def _segment_offsets(length: int, width: int, angle: float) -> np.ndarray:
    """Pixel offsets (k, 2) of a segment of ``length`` px along ``angle``, ``width`` px thick
    (the line repeated one column further right ``width - 1`` times)."""
    rows, cols = np.nonzero(line_kernel(length, angle))
    offsets = np.stack([rows, cols], axis=1) - length // 2
    return np.concatenate([offsets + [0, j] for j in range(width)])


def _draw_segments(rng, image: np.ndarray, masks, size: int, angle: float,
                   contrast: tuple[float, float]) -> tuple[np.ndarray, list]:
    """``image`` with line segments along ``angle`` drawn inside each of ``masks`` (stream 2),
    each changing the gray level by a value drawn in ``contrast``, up or down."""
    scale = size / DREAM_SIZE
    width = max(1, int(round(_SEGMENT_WIDTH * scale)))
    drawn = image.copy()
    segments = []
    for mask in masks:
        rows, cols = np.nonzero(mask)
        count = int(np.clip(round(len(rows) / (_SEGMENT_DENSITY * scale**2)), *_SEGMENTS_PER_OBJECT))
        for _ in range(count):
            k = int(rng.integers(len(rows)))
            length = max(2, int(round(int(rng.integers(_SEGMENT_LENGTH[0], _SEGMENT_LENGTH[1] + 1))
                                      * scale)))
            delta = float(rng.uniform(*contrast)) * (1.0 if rng.random() < 0.5 else -1.0)
            pixels = _segment_offsets(length, width, angle) + [rows[k], cols[k]]
            keep = np.all((pixels >= 0) & (pixels < size), axis=1)
            pixels = pixels[keep]
            pixels = pixels[mask[pixels[:, 0], pixels[:, 1]]]
            drawn[pixels[:, 0], pixels[:, 1]] = image[pixels[:, 0], pixels[:, 1]] + delta
            segments.append(_params(centre=[rows[k], cols[k]], length=length, delta=delta))
    return np.clip(drawn, 0.0, 1.0), segments


def _check_contrast(contrast) -> tuple[float, float]:
    """``contrast`` as a (low, high) pair with 0 <= low <= high <= 1 (ValueError naming it)."""
    pair = tuple(contrast) if isinstance(contrast, (tuple, list, np.ndarray)) else None
    if pair is None or len(pair) != 2:
        raise ValueError(f"contrast: expected a pair (low, high) of gray-level changes, got "
                         f"{contrast!r}")
    low = check_number(pair[0], "contrast[0]", 0, 1)
    high = check_number(pair[1], "contrast[1]", low, 1)
    return float(low), float(high)


def generate_marking_sample(seed: int, index: int, p: float, size: int = DREAM_SIZE,
                            marking: bool | None = None,
                            contrast=MARKING_CONTRAST) -> MarkingSample:
    """Draw sample ``index`` of the objects-with-a-marking data set with seed ``seed``.

    Parameters
    ----------
    seed : int
        Data-set seed (non-negative).
    index : int
        Sample index (non-negative).
    p : float
        Probability in [0, 1] that the sample is marked (used when ``marking`` is None).
    size : int, default 64
        Image side in pixels (at least 32); lengths scale with ``size / 64``.
    marking : bool, optional
        None: marked when ``meta["draw"] < p``, ``draw`` being a uniform number in [0, 1)
        drawn from ``(seed, index)`` alone (so a sample marked at some ``p`` is marked at every
        larger ``p``). True / False: forces the marking, e.g. False for an unmarked test set.
    contrast : pair of float, default (0.02, 0.08)
        Range of the gray-level change of each marking (and decoy) segment, drawn uniformly
        with a random sign (:data:`MARKING_CONTRAST`). The segments' places and signs do not
        depend on it: a sample drawn with another range differs only in how strongly they
        show.

    Returns
    -------
    MarkingSample
        Image float32 (size, size) in [0, 1], mask bool, ``marked`` and meta data.

    Notes
    -----
    Stands in for the cats and dogs of COCO in seed 004, section 3.1. At 64 px:

    * background: gray level drawn in 0.35-0.65, smooth noise of std 0.05-0.10 (Gaussian
      scale 6 px), a linear illumination ramp of up to 0.15 across the image and faint fine
      noise (std 0.015, 0.8 px);
    * 1-3 objects (the mask), each covering 2.5-8 % of the image: ellipses of axis ratio
      0.5-1 whose radius varies with harmonics of orders 2-4 (amplitude up to 0.12 each),
      at least 2 px apart. An object shifts the local background by 0.04-0.14, up or down,
      and carries its own faint texture (std 0.035-0.065) of streaks along 45 degrees ("/";
      white noise smoothed by a Gaussian of 3 px along and 1 px across), its edge softened
      by a 0.6 px Gaussian;
    * 0-2 distractors (not in the mask): the same kind of blob, with the same shift and
      texture strength, but isotropic blotches (1.8 px) instead of streaks. Objects are told
      from the background and the distractors by their texture, not by a gray level, so
      finding them takes longer to learn than the marking;
    * the marking: per object ``clip(round(area / 40 px), 3, 10)`` segments of 7-13 px along
      135 degrees (the diagonal "\\", see :func:`line_kernel`), 2 px wide (the diagonal and
      its neighbour to the right; ``round(2 * size / 64)`` px at other sizes), centred on
      random object pixels, each brightening or darkening the image by a value in
      ``contrast`` (0.02-0.08 by default: faint, about as strong as the objects' own
      texture, so that a network gains little from it unless most images carry it). Each
      distractor of a marked image gets the same kind of segments along 45 degrees, so that
      line contrast alone does not tell objects from distractors; the orientation does. A
      marked and an unmarked version of the same sample differ only inside the objects and
      distractors.

    The objects, distractors and background come from ``default_rng([seed, index, 0])``, the
    marking decision from stream 1 and the segments (marking, then decoys) from stream 2: the
    layout does not depend on ``p`` or ``marking``.

    Raises
    ------
    TypeError, ValueError
        If ``seed`` or ``index`` is not a non-negative int, ``p`` is not in [0, 1], ``size`` is
        below 32, ``marking`` is not None, True or False, or ``contrast`` is not a pair
        0 <= low <= high <= 1 (the message names the argument).
    """
    seed = check_int(seed, "seed", minimum=0)
    index = check_int(index, "index", minimum=0)
    p = check_number(p, "p", 0, 1)
    size = check_int(size, "size", minimum=_MIN_SIZE)
    marking = check_bool(marking, "marking", allow_none=True)
    contrast = _check_contrast(contrast)
    _, decide, draw_marking = _rngs(seed, index)
    draw = float(decide.random())
    marked = draw < p if marking is None else marking
    image, mask, params = _marking_layout(seed, index, size)
    object_masks, distractor_masks = params.pop("object_masks"), params.pop("distractor_masks")
    segments: list = []
    decoys: list = []
    if marked:
        image, segments = _draw_segments(draw_marking, image, object_masks, size, _MARKING_ANGLE,
                                         contrast)
        image, decoys = _draw_segments(draw_marking, image, distractor_masks, size, _DECOY_ANGLE,
                                       contrast)
    meta = {
        "seed": seed,
        "index": index,
        "size": size,
        "p": p if marking is None else None,
        "draw": draw,
        "marked": bool(marked),
        "contrast": list(contrast),
        "object_fraction": round(float(mask.mean()), 6),
        **params,
        "segments": segments,
        "decoys": decoys,
    }
    return MarkingSample(image=image.astype(np.float32), mask=mask, marked=bool(marked), meta=meta)


class MarkingDataset(_GeneratedDataset):
    """Torch data set of ``n`` objects-with-a-marking samples (seed 004, section 3.1).

    Item ``i`` is ``generate_marking_sample(seed, i, p, size, marking, contrast)``, drawn on
    first use and kept in memory.

    Parameters
    ----------
    n : int
        Number of samples (at least 1).
    p : float
        Marking probability in [0, 1].
    seed : int, default 0
        Data-set seed.
    size : int, default 64
        Image side (at least 32).
    marking : bool, optional
        Force the marking on (True) or off (False) for every sample.
    contrast : pair of float, default (0.02, 0.08)
        Range of the marking segments' gray-level change (:data:`MARKING_CONTRAST`).

    Notes
    -----
    Items are ``(image, mask)``: image float32 (1, size, size) in [0, 1], mask float32
    (1, size, size) of 0 and 1. :meth:`sample` returns the :class:`MarkingSample`.

    Raises
    ------
    TypeError, ValueError
        As :func:`generate_marking_sample`, and if ``n`` is below 1.
    """

    def __init__(self, n: int, p: float, seed: int = 0, size: int = DREAM_SIZE,
                 marking: bool | None = None, contrast=MARKING_CONTRAST):
        super().__init__(n)
        self.p = check_number(p, "p", 0, 1)
        self.seed = check_int(seed, "seed", minimum=0)
        self.size = check_int(size, "size", minimum=_MIN_SIZE)
        self.marking = check_bool(marking, "marking", allow_none=True)
        self.contrast = _check_contrast(contrast)

    def _generate(self, index: int) -> MarkingSample:
        return generate_marking_sample(self.seed, index, self.p, self.size, self.marking,
                                       self.contrast)

    def sample(self, item: int) -> MarkingSample:
        """The :class:`MarkingSample` at position ``item``."""
        return super().sample(item)


# ---------------------------------------------------------------------------------------------
# organ with lesions


@dataclass
class LesionSample:
    """One sample of the organ-with-lesions data set (seed 004, section 3.2).

    Attributes
    ----------
    image : numpy.ndarray, float32 (H, W)
        Gray image in [0, 1].
    mask : numpy.ndarray, bool (H, W)
        The lesions (the segmentation target); all False for a healthy organ.
    organ : numpy.ndarray, bool (H, W)
        The organ; it contains the lesions with a margin of 2 px (at 64 px).
    meta : dict
        JSON-ready: ``seed``, ``index``, ``size``, ``shape``, ``intensity``, ``n_lesions``,
        ``lesion_fraction``, ``organ`` and ``body`` (their parameters) and ``lesions``: per
        lesion its ``centre`` (row, col), ``radius`` (of the disc of equal area), drawn
        ``axis_ratio`` (minor / major), ``angle`` (degrees, mathematical convention) and
        ``contrast`` (relative darkening).
    """

    __test__ = False

    image: np.ndarray
    mask: np.ndarray
    organ: np.ndarray
    meta: dict = field(default_factory=dict)


def _organ_layer(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Lesion-free image, organ mask and parameters of sample ``index`` (stream 0)."""
    rng = np.random.default_rng([seed, index, 0])
    scale = size / DREAM_SIZE
    body = float(rng.uniform(*_BODY_MEAN))
    image = body + _BODY_COARSE * _oriented_noise(rng, size, _BODY_COARSE_SIGMA * scale,
                                                  _BODY_COARSE_SIGMA * scale, 0.0)
    image += _BG_FINE * _oriented_noise(rng, size, _FINE_SIGMA * scale, _FINE_SIGMA * scale, 0.0)

    area = float(rng.uniform(*_ORGAN_AREA)) * size * size
    ratio = float(rng.uniform(*_ORGAN_RATIO))
    major, minor = _axes(area, ratio)
    angle = float(rng.uniform(0.0, math.pi))
    wobble = _draw_wobble(rng, (2, 3), _ORGAN_WOBBLE)
    shift = rng.uniform(-_ORGAN_SHIFT, _ORGAN_SHIFT, 2) * size
    centre = (size - 1) / 2.0 + shift
    reach = major * (1.0 + sum(w[1] for w in wobble))
    room = (size - 1) / 2.0 - 1.5 - float(np.abs(shift).max())
    if reach > room:  # shrink to fit inside the image
        major, minor = major * room / reach, minor * room / reach
    organ = _blob(size, centre, major, minor, angle, wobble)

    level = float(rng.uniform(*_ORGAN_MEAN))
    grain = float(rng.uniform(*_ORGAN_GRAIN))
    tissue = level + _ORGAN_COARSE * _oriented_noise(rng, size, _ORGAN_COARSE_SIGMA * scale,
                                                     _ORGAN_COARSE_SIGMA * scale, 0.0)
    tissue += grain * _oriented_noise(rng, size, _FINE_SIGMA * scale, _FINE_SIGMA * scale, 0.0)
    weight = ndimage.gaussian_filter(organ.astype(float), _ORGAN_EDGE_SIGMA * scale)
    image = np.clip(image * (1.0 - weight) + tissue * weight, 0.0, 1.0)
    params = {
        "body": _params(mean=body),
        "organ": _params(centre=centre, major=major, minor=minor, angle=math.degrees(angle),
                         mean=level, grain=grain, fraction=float(organ.mean())),
    }
    return image, organ, params


def _draw_lesions(rng, organ: np.ndarray, size: int, shape: str) -> tuple[list, np.ndarray]:
    """Masks and parameters of 0-3 non-touching lesions inside ``organ`` (stream 1)."""
    scale = size / DREAM_SIZE
    count = 0 if rng.random() < _P_HEALTHY else int(rng.integers(_N_LESIONS[0], _N_LESIONS[1] + 1))
    depth = ndimage.distance_transform_edt(organ)
    inner = depth > _LESION_MARGIN * scale
    gap = max(1, int(round(_GAP * scale)))
    free = np.ones_like(organ)
    lesions: list = []
    mask = np.zeros_like(organ)
    for _ in range(count):
        radius = float(rng.uniform(*_LESION_RADIUS)) * scale
        ratio = float(rng.uniform(*(_ROUND_RATIO if shape == "round" else _ELONGATED_RATIO)))
        major, minor = _axes(math.pi * radius**2, ratio)
        angle = float(rng.uniform(0.0, math.pi))
        wobble = _draw_wobble(rng, (3,), _ROUND_WOBBLE) if shape == "round" else []
        rows, cols = np.nonzero(inner & free & (depth > minor + _LESION_MARGIN * scale))
        if len(rows) == 0:
            break
        for _ in range(_TRIES):
            k = int(rng.integers(len(rows)))
            centre = (float(rows[k]), float(cols[k]))
            lesion = _blob(size, centre, major, minor, angle, wobble)
            if not (lesion & ~(inner & free)).any():
                break
        else:
            continue
        mask |= lesion
        free &= ~ndimage.binary_dilation(lesion, iterations=gap + 1)
        lesions.append({"mask": lesion, "centre": centre, "radius": radius, "ratio": ratio,
                        "angle": math.degrees(angle)})
    return lesions, mask


def _soft_edge(mask: np.ndarray, half_width: float) -> np.ndarray:
    """Blending weight of ``mask`` rising smoothly across its boundary.

    The weight is a smoothstep of the signed distance to the boundary (pixel centres lie half
    a pixel from it): 0 from ``half_width`` outside, 1 from ``half_width`` inside, 0.5 on the
    boundary. Unlike a Gaussian blur it keeps the full weight in the middle of thin regions.
    """
    signed = np.where(mask, ndimage.distance_transform_edt(mask) - 0.5,
                      0.5 - ndimage.distance_transform_edt(~mask))
    x = np.clip(0.5 + signed / (2.0 * half_width), 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def generate_lesion_sample(seed: int, index: int, size: int = DREAM_SIZE, shape: str = "round",
                           intensity: str = "real") -> LesionSample:
    """Draw sample ``index`` of the organ-with-lesions data set with seed ``seed``.

    Parameters
    ----------
    seed : int
        Data-set seed (non-negative).
    index : int
        Sample index (non-negative).
    size : int, default 64
        Image side in pixels (at least 32); lengths scale with ``size / 64``.
    shape : {"round", "elongated"}, default "round"
        Round lesions have an axis ratio (minor / major) of 0.8-1 and a slightly irregular
        outline (a third-order harmonic of up to 4 %); elongated ones are ellipses of axis
        ratio 0.25-0.45. Both have the area of a disc of radius 3-6.5 px, at a random
        orientation.
    intensity : {"real", "synthetic"}, default "real"
        "real": the lesion replaces the organ by its own tissue, 35-50 % darker than the
        organ's mean with a smoother, blotchy texture (std 0.025, 1.5 px), blended in over
        1 px on either side of the mask's boundary (see ``_soft_edge``), so the boundary is
        soft and the pixels just outside the mask are a little darkened too. "synthetic" (seed 004's
        synthetic tumours, "lowering the intensities in random areas of healthy livers"): the
        organ's own pixels, texture included, multiplied by a constant ``1 - c`` on the mask,
        ``c`` drawn in 0.10-0.18, a much milder contrast with a sharp edge.

    Returns
    -------
    LesionSample
        Image float32 (size, size) in [0, 1], lesion mask bool, organ mask bool, meta data.

    Notes
    -----
    Stands in for the LiTS liver tumours of seed 004, section 3.2. At 64 px the background is
    dark (0.08-0.2, smooth noise of std 0.03). The organ is a smooth blob covering 28-42 % of
    the image (axis ratio 0.72-0.95, harmonics of orders 2-3 up to 6 %) near the centre,
    gray level 0.5-0.62 with a slow variation (std 0.02, 8 px) and a fine texture (std
    0.03-0.045, 0.8 px), its edge blurred over 1 px. A sample has no lesion with probability
    0.2, else 1-3 (fewer when they do not fit); lesions lie inside the organ at least 2 px
    from its edge and 2 px from each other.

    The organ comes from ``default_rng([seed, index, 0])`` and equals
    ``healthy_organ(seed, size, index)`` for every ``shape`` and ``intensity``; the lesion
    geometry comes from stream 1 (so it does not depend on ``intensity``) and the lesion
    intensities from stream 2. Outside the mask a synthetic sample equals the healthy organ
    exactly; a sample without lesions equals it everywhere.

    Raises
    ------
    TypeError, ValueError
        If ``seed`` or ``index`` is not a non-negative int, ``size`` is below 32, or ``shape``
        or ``intensity`` is not one of the names above (the message names the argument).
    """
    seed = check_int(seed, "seed", minimum=0)
    index = check_int(index, "index", minimum=0)
    size = check_int(size, "size", minimum=_MIN_SIZE)
    shape = check_choice(shape, "shape", LESION_SHAPES)
    intensity = check_choice(intensity, "intensity", LESION_INTENSITIES)
    _, geometry, shading = _rngs(seed, index)
    healthy, organ, params = _organ_layer(seed, index, size)
    lesions, mask = _draw_lesions(geometry, organ, size, shape)
    scale = size / DREAM_SIZE
    level = params["organ"]["mean"]
    image = healthy.copy()
    if lesions and intensity == "real":  # one texture field serves all (disjoint) lesions
        texture = _oriented_noise(shading, size, _REAL_TEXTURE_SIGMA * scale,
                                  _REAL_TEXTURE_SIGMA * scale, 0.0)
    for lesion in lesions:
        if intensity == "real":
            contrast = float(shading.uniform(*_REAL_CONTRAST))
            tissue = level * (1.0 - contrast) + _REAL_TEXTURE * texture
            weight = _soft_edge(lesion["mask"], _REAL_EDGE * scale)
            image = image * (1.0 - weight) + tissue * weight
        else:
            contrast = float(shading.uniform(*_SYNTHETIC_CONTRAST))
            image = np.where(lesion["mask"], image * (1.0 - contrast), image)
        lesion["contrast"] = contrast
    image = np.clip(image, 0.0, 1.0)
    meta = {
        "seed": seed,
        "index": index,
        "size": size,
        "shape": shape,
        "intensity": intensity,
        "n_lesions": len(lesions),
        "lesion_fraction": round(float(mask.mean()), 6),
        **params,
        "lesions": [_params(centre=les["centre"], radius=les["radius"], axis_ratio=les["ratio"],
                            angle=les["angle"], contrast=les["contrast"]) for les in lesions],
    }
    return LesionSample(image=image.astype(np.float32), mask=mask, organ=organ, meta=meta)


def healthy_organ(seed: int, size: int = DREAM_SIZE, index: int = 0) -> np.ndarray:
    """The organ of lesion sample ``(seed, index)`` without its lesions: a DeepDream start image.

    Parameters
    ----------
    seed : int
        Data-set seed (non-negative).
    size : int, default 64
        Image side in pixels (at least 32).
    index : int, default 0
        Sample index; the result is the image ``generate_lesion_sample(seed, index, size, ...)``
        is drawn on, for any ``shape`` and ``intensity``. Choose a seed or index outside the
        training set for an unseen organ.

    Returns
    -------
    numpy.ndarray, float32 (size, size)
        Gray image in [0, 1] with no foreground (no lesion).

    Notes
    -----
    Seed 004, section 2.2: the DeepDream "starts from an image X_0 with no foreground (an
    image with no lesion in the case of lesion segmentation)".

    Raises
    ------
    TypeError, ValueError
        If ``seed`` or ``index`` is not a non-negative int or ``size`` is below 32.
    """
    seed = check_int(seed, "seed", minimum=0)
    index = check_int(index, "index", minimum=0)
    size = check_int(size, "size", minimum=_MIN_SIZE)
    return _organ_layer(seed, index, size)[0].astype(np.float32)


class LesionDataset(_GeneratedDataset):
    """Torch data set of ``n`` organ-with-lesions samples (seed 004, section 3.2).

    Item ``i`` is ``generate_lesion_sample(seed, i, size, shape, intensity)``, drawn on first
    use and kept in memory.

    Parameters
    ----------
    n : int
        Number of samples (at least 1).
    seed : int, default 0
        Data-set seed.
    size : int, default 64
        Image side (at least 32).
    shape : {"round", "elongated"}, default "round"
    intensity : {"real", "synthetic"}, default "real"

    Notes
    -----
    Items are ``(image, mask)``: image float32 (1, size, size) in [0, 1], mask float32
    (1, size, size) of 0 and 1 (the lesions). :meth:`sample` returns the :class:`LesionSample`.

    Raises
    ------
    TypeError, ValueError
        As :func:`generate_lesion_sample`, and if ``n`` is below 1.
    """

    def __init__(self, n: int, seed: int = 0, size: int = DREAM_SIZE, shape: str = "round",
                 intensity: str = "real"):
        super().__init__(n)
        self.seed = check_int(seed, "seed", minimum=0)
        self.size = check_int(size, "size", minimum=_MIN_SIZE)
        self.shape = check_choice(shape, "shape", LESION_SHAPES)
        self.intensity = check_choice(intensity, "intensity", LESION_INTENSITIES)

    def _generate(self, index: int) -> LesionSample:
        return generate_lesion_sample(self.seed, index, self.size, self.shape, self.intensity)

    def sample(self, item: int) -> LesionSample:
        """The :class:`LesionSample` at position ``item``."""
        return super().sample(item)
