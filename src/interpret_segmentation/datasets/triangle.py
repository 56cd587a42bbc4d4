"""The synthetic "Triangle" data set (MiSuRe, section 4.1), built from scikit-learn's digits.

Every image is a black grayscale canvas holding handwritten digits (the 8 x 8 images bundled
with :func:`sklearn.datasets.load_digits`, so nothing is downloaded), each upscaled to a random
side, rotated by a random angle and pasted at its own place. Exactly three of them form the
segment; two to four further digits are distractors (background for the segment). Which digits
are segmented depends only on where they are relative to each other, never on how they look.

Two layouts place the three segmented digits:

- ``"square"`` (the default, the construction of Riva et al. 2022 that seed 001 follows): their
  centres sit on three of the four corners of an axis-aligned square of side about 100 px at
  224 px, each moved by a few pixels of jitter; no three other centres lie on the corners of
  such a square (so no distractor completes it).
- ``"equilateral"``: their centres are the corners of an equilateral triangle of random side
  (70-130 px) and orientation; no three other centres are close to equilateral. A harder rule.

Samples are deterministic: sample ``index`` of data set ``seed`` is drawn from
``numpy.random.default_rng([seed, index])``, so it does not depend on the data-set size.

On disk a data set is a directory ``<root>/<index>/`` per sample holding ``image.png``,
``segment.png`` (0/255), ``context.png`` (0/255, the distractor pixels) and ``meta.json``,
plus ``<root>/triangle.json`` describing the whole set (``layout`` included). The layout is the
same as the one of the testnet data set.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.transform import resize

from ..core.validate import check_choice, check_int
from .files import boxes_apart, write_dataset

__all__ = [
    "LAYOUTS",
    "TRIANGLE_SIZE",
    "TriangleSample",
    "generate_triangle_sample",
    "generate_triangle_dataset",
    "triangle_split",
]

TRIANGLE_SIZE = 224
"""Default image side in pixels (the geometry below is given for this size and scaled)."""

OBJECT_THRESHOLD = 0.2
"""A pixel belongs to an object where its grey level exceeds this fraction of the object's maximum."""

EQUILATERAL_TOLERANCE = 0.15
"""A triple of centres counts as near-equilateral when every side is within this fraction of
the mean side; such triples are forbidden except for the three triangle objects."""

LAYOUTS = ("square", "equilateral")
"""How the three segmented digits are placed (module docstring); the first is the default."""

SQUARE_SIDE = 100.0
"""Side at 224 px of the square whose corners hold the segmented digits (layout "square")."""

SQUARE_JITTER = 4.0
"""Largest shift at 224 px of a segmented digit's centre from its corner, per axis."""

SQUARE_TOLERANCE = 0.2
"""Three centres count as corners of an axis-aligned square when, seen from one of them, the two
others lie within this fraction of :data:`SQUARE_SIDE` of the points one side away along the
two axes; such triples are forbidden except for the three segmented digits."""

_MIN_SIZE = 96
_DIGIT_SIDE = (26, 38)  # inclusive range of the upscaled digit side at 224 px (before rotation)
_TRIANGLE_SIDE = (70.0, 130.0)  # range of the triangle side at 224 px
_N_DISTRACTORS = (2, 4)  # inclusive
_GAP = 4.0  # minimum free pixels between two object boxes at 224 px
_MIN_KEPT = 0.9  # a digit may lose at most 10 % of its object pixels as stray specks
_DIGIT_TRIES = 1_000
_LAYOUT_TRIES = 2_000
_DISTRACTOR_TRIES = 200
_TRAIN_FRACTION = 0.7  # the paper's 1400 / 600 split of 2000 images
_INFO_FILE = "triangle.json"


@dataclass
class TriangleSample:
    """One sample of the Triangle data set.

    Attributes
    ----------
    image : numpy.ndarray, uint8 (H, W)
        Grayscale image, background 0, digits up to 255.
    segment : numpy.ndarray, bool (H, W)
        Ground truth: the pixels of the three triangle objects.
    context : numpy.ndarray, bool (H, W)
        The pixels of the distractor objects (background for the segment).
    meta : dict
        ``seed``, ``index``, ``size``, ``side`` (triangle side in pixels as drawn),
        ``rotation`` (degrees), ``n_distractors``, ``triangle_centres`` and
        ``distractor_centres`` (lists of ``[row, col]``, the centres of the objects' bounding
        boxes), ``triangle_boxes`` and ``distractor_boxes`` (lists of
        ``[top, left, height, width]``), ``triangle_digits`` and ``distractor_digits`` (for
        each object the ``load_digits`` row ``digit_index``, its ``label``, the upscaled side
        ``digit_side`` and the rotation ``angle`` in degrees) and ``threshold`` (the fraction
        of an object's maximum above which its pixels belong to it).
    """

    __test__ = False  # not a pytest test class

    image: np.ndarray
    segment: np.ndarray
    context: np.ndarray
    meta: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# objects


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The bundled scikit-learn digits as float images in [0, 1] (N, 8, 8) and their labels."""
    state = random.getstate()  # importing scikit-learn may draw from Python's generator
    try:
        from sklearn.datasets import load_digits
    finally:
        random.setstate(state)
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64) / 16.0
    images.setflags(write=False)
    labels = np.asarray(bunch.target, dtype=np.int64)
    labels.setflags(write=False)
    return images, labels


@dataclass
class _Object:
    patch: np.ndarray  # uint8 (h, w), zero outside the digit
    mask: np.ndarray  # bool (h, w), the object's pixels
    info: dict


def _render_digit(digit: np.ndarray, side: int, angle: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Upscale, rotate and clean one digit; None when it falls apart into large pieces.

    The object pixels (above the threshold) must form one 4-connected component, and so must
    the non-zero pixels. Stray specks that interpolation leaves apart from the main stroke are
    removed; if that would remove more than 10 % of the object pixels the digit is rejected.
    """
    big = resize(digit, (side, side), order=1, anti_aliasing=False, mode="constant")
    turned = ndimage.rotate(big, angle, reshape=True, order=1, mode="constant", cval=0.0)
    patch = np.round(np.clip(turned, 0.0, 1.0) * 255.0).astype(np.uint8)
    if patch.max() == 0:
        return None
    mask = patch > OBJECT_THRESHOLD * patch.max()
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(labels.ravel())[1:]
        main = labels == (int(np.argmax(sizes)) + 1)
        # grow the main stroke through faint pixels, but not into the other strokes
        allowed = (patch > 0) & ~(mask & ~main)
        keep = ndimage.binary_propagation(main, mask=allowed)
    else:
        keep = ndimage.binary_propagation(mask, mask=patch > 0)
    patch = np.where(keep, patch, 0).astype(np.uint8)
    rows = np.flatnonzero(keep.any(axis=1))
    cols = np.flatnonzero(keep.any(axis=0))
    patch = patch[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    final = patch > OBJECT_THRESHOLD * patch.max()
    if ndimage.label(final)[1] != 1 or final.sum() < _MIN_KEPT * mask.sum():
        return None
    return patch, final


def _draw_object(rng: np.random.Generator, scale: float) -> _Object:
    images, labels = _digits()
    lo = max(8, round(_DIGIT_SIDE[0] * scale))
    hi = max(lo, round(_DIGIT_SIDE[1] * scale))
    for _ in range(_DIGIT_TRIES):
        digit_index = int(rng.integers(len(images)))
        side = int(rng.integers(lo, hi + 1))
        angle = float(rng.uniform(0.0, 360.0))
        rendered = _render_digit(images[digit_index], side, angle)
        if rendered is not None:
            patch, mask = rendered
            info = {"digit_index": digit_index, "label": int(labels[digit_index]),
                    "digit_side": side, "angle": round(angle, 3)}
            return _Object(patch, mask, info)
    raise RuntimeError("could not render a connected digit")  # pragma: no cover - never seen


# ---------------------------------------------------------------------------------------------
# layout


def _centre(box) -> tuple[float, float]:
    top, left, height, width = box
    return (top + (height - 1) / 2.0, left + (width - 1) / 2.0)


def _near_equilateral(p, q, r, tolerance: float = EQUILATERAL_TOLERANCE) -> bool:
    """True when every side of the triangle p, q, r is within ``tolerance`` of the mean side."""
    sides = (math.dist(p, q), math.dist(q, r), math.dist(r, p))
    mean = sum(sides) / 3.0
    return all(abs(s - mean) <= tolerance * mean for s in sides)


def _square_corners(p, q, r, side: float, tolerance: float = SQUARE_TOLERANCE) -> bool:
    """True when p, q, r lie near three corners of an axis-aligned square of side ``side``:
    from one of them, one other is about ``side`` away along the rows and the other along the
    columns (each within ``tolerance * side`` of that point)."""
    limit = tolerance * side
    points = (p, q, r)
    for k in range(3):
        corner, a, b = points[k], points[(k + 1) % 3], points[(k + 2) % 3]
        for along_rows, along_cols in ((a, b), (b, a)):
            row_step = along_rows[0] - corner[0]
            col_step = along_cols[1] - corner[1]
            if (abs(abs(row_step) - side) <= limit and abs(along_rows[1] - corner[1]) <= limit
                    and abs(abs(col_step) - side) <= limit
                    and abs(along_cols[0] - corner[0]) <= limit):
                return True
    return False


def _forbidden(layout: str, side: float):
    """The test a triple of centres other than the segment's must fail in ``layout``."""
    if layout == "square":
        return lambda p, q, r: _square_corners(p, q, r, side)
    return _near_equilateral


def _fit_boxes(rng, objects, offsets, size: int, gap: int):
    """Boxes of ``objects`` centred on ``anchor + offset`` for a random anchor that keeps every
    box inside the image, or None when they cannot fit or come closer than ``gap``."""
    row_lo = max((o.patch.shape[0] - 1) / 2.0 - dr for o, (dr, _) in zip(objects, offsets))
    row_hi = min(size - 1 - (o.patch.shape[0] - 1) / 2.0 - dr for o, (dr, _) in zip(objects, offsets))
    col_lo = max((o.patch.shape[1] - 1) / 2.0 - dc for o, (_, dc) in zip(objects, offsets))
    col_hi = min(size - 1 - (o.patch.shape[1] - 1) / 2.0 - dc for o, (_, dc) in zip(objects, offsets))
    if row_lo > row_hi or col_lo > col_hi:
        return None
    anchor = (float(rng.uniform(row_lo, row_hi)), float(rng.uniform(col_lo, col_hi)))
    boxes = []
    for obj, (dr, dc) in zip(objects, offsets):
        height, width = obj.patch.shape
        top = min(max(round(anchor[0] + dr - (height - 1) / 2.0), 0), size - height)
        left = min(max(round(anchor[1] + dc - (width - 1) / 2.0), 0), size - width)
        boxes.append((int(top), int(left), height, width))
    if not all(boxes_apart(a, b, gap) for a, b in itertools.combinations(boxes, 2)):
        return None
    return boxes


def _place_square(rng, objects, size: int, scale: float, gap: int):
    """Boxes of the three segmented objects on three corners of an axis-aligned square, the
    square's side and the corner left free (0 top left, 1 top right, 2 bottom left, 3 bottom
    right), or None when this draw does not fit."""
    side = SQUARE_SIDE * scale
    jitter = SQUARE_JITTER * scale
    free = int(rng.integers(4))
    corners = [(row * side, col * side) for row in (0, 1) for col in (0, 1)]
    del corners[free]
    offsets = [(dr + rng.uniform(-jitter, jitter), dc + rng.uniform(-jitter, jitter))
               for dr, dc in corners]
    boxes = _fit_boxes(rng, objects, offsets, size, gap)
    return None if boxes is None else (boxes, {"side": round(side, 3), "free_corner": free})


def _place_triangle(rng, objects, size: int, scale: float, gap: int):
    """Boxes of the three segmented objects on the corners of an equilateral triangle, its side
    and rotation, or None when this draw does not fit."""
    side = float(rng.uniform(*_TRIANGLE_SIDE) * scale)
    rotation = float(rng.uniform(0.0, 360.0))
    radius = side / math.sqrt(3.0)
    offsets = [
        (-radius * math.cos(math.radians(rotation + 120.0 * k)),
         radius * math.sin(math.radians(rotation + 120.0 * k)))
        for k in range(3)
    ]
    boxes = _fit_boxes(rng, objects, offsets, size, gap)
    if boxes is None:
        return None
    return boxes, {"side": round(side, 3), "rotation": round(rotation, 3)}


def _place_distractor(rng, obj: _Object, boxes: list, size: int, gap: int, forbidden):
    """A box for one distractor that keeps apart from ``boxes`` and whose centre forms no
    ``forbidden`` triple with any two of their centres, or None."""
    height, width = obj.patch.shape
    centres = [_centre(b) for b in boxes]
    for _ in range(_DISTRACTOR_TRIES):
        box = (int(rng.integers(0, size - height + 1)), int(rng.integers(0, size - width + 1)),
               height, width)
        if not all(boxes_apart(box, other, gap) for other in boxes):
            continue
        here = _centre(box)
        if any(forbidden(here, p, q) for p, q in itertools.combinations(centres, 2)):
            continue
        return box
    return None


def generate_triangle_sample(seed: int, index: int, size: int = TRIANGLE_SIZE,
                             layout: str = "square") -> TriangleSample:
    """Draw sample ``index`` of the Triangle data set with seed ``seed``.

    Parameters
    ----------
    seed : int
        Data-set seed (non-negative).
    index : int
        Sample index (non-negative). The sample depends only on ``(seed, index, size, layout)``.
    size : int, default 224
        Image side in pixels (at least 96). Digit sizes, distances, jitter and gaps scale with
        ``size / 224``.
    layout : {"square", "equilateral"}, default "square"
        Where the three segmented digits sit (module docstring).

    Returns
    -------
    TriangleSample
        Image uint8 (size, size), segment and context bool (size, size) and meta data.

    Notes
    -----
    At 224 px each digit is upscaled to a side of 26-38 px, then rotated by an angle drawn
    uniformly in [0, 360) degrees. Layout "square": the segmented digits are centred on three
    corners (the free one drawn uniformly) of an axis-aligned square of side 100 px, each
    centre moved by up to 4 px along each axis, the square at a random position that keeps
    them inside the image. Layout "equilateral": the centres are the corners of an
    equilateral triangle of side drawn in 70-130 px, random orientation and position. Two to
    four distractors (uniformly) are then placed at random. All object bounding boxes keep at
    least ``4 * size / 224`` px (at least 2 px) apart. A distractor position is rejected when
    its centre and any two other object centres form the layout's figure: three corners of an
    axis-aligned square of side 100 px, each within 20 px (:data:`SQUARE_TOLERANCE`), or a
    triangle whose three sides are within 15 % of their mean. So the segment is the only such
    triple in an image. An object's pixels are those above 0.2 of its maximum grey level; each
    object is one 4-connected component (stray interpolation specks are removed from a digit,
    and a digit that breaks into large pieces is redrawn).
    """
    seed = check_int(seed, "seed", minimum=0)
    index = check_int(index, "index", minimum=0)
    size = check_int(size, "size", minimum=_MIN_SIZE)
    layout = check_choice(layout, "layout", LAYOUTS)
    rng = np.random.default_rng([seed, index])
    scale = size / TRIANGLE_SIZE
    gap = max(2, round(_GAP * scale))
    place = _place_square if layout == "square" else _place_triangle
    forbidden = _forbidden(layout, SQUARE_SIDE * scale)

    n_distractors = int(rng.integers(_N_DISTRACTORS[0], _N_DISTRACTORS[1] + 1))
    triangle_objects = [_draw_object(rng, scale) for _ in range(3)]
    distractor_objects = [_draw_object(rng, scale) for _ in range(n_distractors)]

    for _ in range(_LAYOUT_TRIES):
        placed = place(rng, triangle_objects, size, scale, gap)
        if placed is None:
            continue
        triangle_boxes, figure = placed
        boxes = list(triangle_boxes)
        for obj in distractor_objects:
            box = _place_distractor(rng, obj, boxes, size, gap, forbidden)
            if box is None:
                break
            boxes.append(box)
        else:
            break
    else:  # pragma: no cover - needs an absurdly crowded image
        raise RuntimeError(f"could not lay out the Triangle objects in a {size} px image")

    image = np.zeros((size, size), dtype=np.uint8)
    segment = np.zeros((size, size), dtype=bool)
    context = np.zeros((size, size), dtype=bool)
    for k, (obj, (top, left, height, width)) in enumerate(zip(triangle_objects + distractor_objects,
                                                              boxes)):
        window = (slice(top, top + height), slice(left, left + width))
        np.maximum(image[window], obj.patch, out=image[window])
        (segment if k < 3 else context)[window] |= obj.mask

    def rounded(values):
        return [[round(v, 3) for v in item] for item in values]

    meta = {
        "seed": seed,
        "index": index,
        "size": size,
        "layout": layout,
        **figure,
        "n_distractors": n_distractors,
        "triangle_centres": rounded(_centre(b) for b in boxes[:3]),
        "distractor_centres": rounded(_centre(b) for b in boxes[3:]),
        "triangle_boxes": [list(b) for b in boxes[:3]],
        "distractor_boxes": [list(b) for b in boxes[3:]],
        "triangle_digits": [o.info for o in triangle_objects],
        "distractor_digits": [o.info for o in distractor_objects],
        "threshold": OBJECT_THRESHOLD,
    }
    return TriangleSample(image=image, segment=segment, context=context, meta=meta)


def generate_triangle_dataset(
    root,
    n: int = 2000,
    seed: int = 0,
    size: int = TRIANGLE_SIZE,
    layout: str = "square",
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Generate ``n`` Triangle samples and write them under ``root``.

    Everything is first written into a temporary sibling directory, which is renamed to
    ``root`` once complete; an interrupted run leaves no partial data set behind.

    Parameters
    ----------
    root : str or Path
        Target directory. For every index 0 .. n-1 it receives ``root/<index>/image.png``,
        ``segment.png`` and ``context.png`` (0/255) and ``meta.json``; ``root/triangle.json``
        records ``n``, ``seed``, ``size`` and ``layout``.
    n : int, default 2000
        Number of samples (at least 1); the paper uses 2000.
    seed : int, default 0
        Data-set seed; sample ``i`` is ``generate_triangle_sample(seed, i, size)``.
    size : int, default 224
        Image side in pixels (at least 96).
    layout : {"square", "equilateral"}, default "square"
        Where the segmented digits sit (:func:`generate_triangle_sample`).
    force : bool, default False
        Replace an existing ``root``, provided it is empty, holds ``triangle.json`` or holds
        nothing but numbered sample directories.
    progress : bool, default True
        Show a tqdm progress bar on stderr.

    Returns
    -------
    Path
        ``root``.

    Raises
    ------
    FileExistsError
        If ``root`` exists and ``force`` is False.
    ValueError
        If an argument is out of range, or ``force`` is True but ``root`` does not look like
        a Triangle data set (nothing is deleted then).
    """
    n = check_int(n, "n", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    size = check_int(size, "size", minimum=_MIN_SIZE)
    layout = check_choice(layout, "layout", LAYOUTS)
    info = {"name": "triangle", "n": n, "seed": seed, "size": size, "layout": layout}
    return write_dataset(root, n, lambda index: generate_triangle_sample(seed, index, size, layout),
                         info, _INFO_FILE, force=force, progress=progress, description="Triangle")


def triangle_split(n: int = 2000) -> tuple[list[int], list[int]]:
    """The paper's train/test split (1400 / 600 of 2000 images) scaled to ``n`` samples.

    Parameters
    ----------
    n : int, default 2000
        Number of samples (at least 1).

    Returns
    -------
    (list of int, list of int)
        Sorted training indices (``round(0.7 * n)`` of them) and test indices (the rest),
        disjoint and together ``range(n)``, from a permutation seeded with 0.
    """
    n = check_int(n, "n", minimum=1)
    n_train = round(_TRAIN_FRACTION * n)
    order = np.random.default_rng(0).permutation(n)
    return sorted(int(i) for i in order[:n_train]), sorted(int(i) for i in order[n_train:])
