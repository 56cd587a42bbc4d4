"""A synthetic surface-defect data set: textured tiles, defect-free or with a crack or blowholes.

It stands in for the two data sets of seed 003 (section 3.4), which cannot be had here: the
magnetic-tile defects of Huang et al. (2018), whose cracks and blowholes "are very small and
cover only a few percent of an image", and the sewer-pipe cracks (224 x 224 crops of pipe
surfaces, damaged or not). Both are used there for a damaged / undamaged classifier whose LRP
relevance is turned into a segmentation, and for a U-Net trained on hand-made defect masks.

Two styles (:func:`generate_defect_sample`):

* ``"tile"`` (default), in the spirit of the magnetic tiles: unevenly lit grey surfaces (a
  ramp and a broad spot of light or shade) with grinding streaks, smooth noise and pores;
  blowholes are one to three dark ellipses covering 1-4.5 % of the image together, cracks are
  random walks 2-5 px wide with at most one branch;
* ``"classic"``: the first version of this set, thin 1-3 px branching cracks and small round
  blowholes on a mid-grey texture.

A single global threshold does not find the defects. Labels follow the index:

* even index: label 0, defect-free (kind ``"none"``), empty segment;
* ``index % 4 == 1``: label 1, a crack (kind ``"crack"``);
* ``index % 4 == 3``: label 1, blowholes (kind ``"blowhole"``).

Any run of consecutive indices is therefore balanced between the labels (and between the two
defect kinds) up to one sample. The segment is exactly the set of pixels that the defect
darkened. Each sample also has a coarse annotation (:func:`coarse_annotation`): the defect
grown by 1-2.5 px and smoothed, as a person would outline it; seed 003's U-Nets learn from such
masks, while scores are computed against the true segment.

Samples are deterministic: sample ``index`` of data set ``seed`` is drawn from
``numpy.random.default_rng([seed, index])`` (its annotation from ``[seed, index, 1]``), so it
does not depend on the data-set size.

On disk a data set is a directory ``<root>/<index>/`` per sample holding ``image.png``,
``segment.png`` (0/255), ``context.png`` (0/255, always empty: there is no context here) and
``meta.json`` (with ``label``, ``kind`` and ``style``), plus ``<root>/defects.json`` describing
the whole set: the layout of the testnet and Triangle data sets. The annotation is computed
again from ``segment.png`` when a sample is read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree
from torch.utils.data import Dataset

from ..core.validate import check_bool, check_choice, check_int
from .files import (
    SAMPLE_FILES,
    StoredSamples,
    check_root,
    read_gray,
    selected_indices,
    stored_indices,
    write_dataset,
)

__all__ = [
    "DEFECT_SIZE",
    "DEFECT_KINDS",
    "DEFECT_STYLES",
    "DEFECT_AREA",
    "TILE_DEFECT_AREA",
    "ANNOTATION_MARGIN",
    "ANNOTATION_SMOOTHING",
    "coarse_annotation",
    "DefectSample",
    "defect_kind",
    "generate_defect_sample",
    "generate_defect_dataset",
    "load_defect_sample",
    "defect_split",
    "DefectDataset",
]

DEFECT_SIZE = 224
"""Default image side in pixels (the crops of seed 003 are 224 x 224; geometry is given for it)."""

DEFECT_KINDS = ("none", "crack", "blowhole")
"""The kinds of sample: defect-free, crack, blowholes."""

DEFECT_STYLES = ("tile", "classic")
"""How samples look: ``"tile"`` (magnetic-tile-like, the default) or ``"classic"``."""

DEFECT_AREA = (0.005, 0.05)
"""Inclusive range of the fraction of image pixels a defect of the "classic" style covers."""

ANNOTATION_MARGIN = (1.0, 2.5)
"""Range of the margin (px) by which :func:`coarse_annotation` grows a defect."""

ANNOTATION_SMOOTHING = 1.5
"""Standard deviation (px) of the Gaussian that rounds a coarse annotation's outline."""

_ANNOTATION_WOBBLE = (0.6, 6.0, 1.0)  # std, Gaussian scale and floor (px) of the local margin
_ANNOTATION_STREAM = 1  # the annotation's random stream: default_rng([seed, index, 1])

_MIN_SIZE = 64
_SPLIT = (0.6, 0.2, 0.2)  # train / validation / test, as in seed 003
_INFO_FILE = "defects.json"
_DEFECT_TRIES = 200
_HOW_TO_GENERATE = (
    "generate it with interpret_segmentation.datasets.defects.generate_defect_dataset(root)"
)

# surface (grey levels; lengths in px at 224 px)
_SURFACE_MEAN = (105.0, 150.0)
_COARSE = (6.0, 12.0)  # amplitude (std) of the coarse noise
_COARSE_SIGMA = 16.0
_FINE = (4.0, 8.0)  # amplitude of the fine noise
_FINE_SIGMA = 1.0
_GRAIN = (2.0, 5.0)  # amplitude of the directional grain
_GRAIN_SIGMA = ((6.0, 14.0), 0.7)  # (range along the grain, across it)
_GRADIENT = (8.0, 28.0)  # grey-level change of the illumination across the image
_SURFACE_CLIP = (30, 230)

# cracks
_CRACK_HALF = (0.2, 0.5)  # length of each half of the trunk, fraction of the side
_CRACK_BRANCH = (0.15, 0.35)  # branch length, fraction of the side
_CRACK_BRANCH_ANGLE = (25.0, 65.0)  # degrees off the trunk
_CRACK_TURN = 0.07  # std of the heading change per px (radians)
_CRACK_WIDTH = (2, 3)  # widest point of the trunk (px at 224 px); tips taper to 1 px
_CRACK_DEPTH = (35.0, 70.0)  # darkening of the centre line (grey levels)
_CRACK_EDGE = 0.7  # darkening of the pixels beside the centre line, relative

# blowholes
_HOLES = (2, 5)  # inclusive number drawn first; more are added (up to 8) if the area is too small
_MAX_HOLES = 8
_HOLE_RADIUS = (4.0, 8.0)  # px at 224 px
_HOLE_DEPTH = (40.0, 75.0)  # darkening at the centre
_HOLE_RIM = 0.55  # relative darkening lost from the centre to the rim
_HOLE_GAP = 3.0  # free px between two holes


@dataclass
class DefectSample:
    """One sample of the surface-defect data set.

    Attributes
    ----------
    image : numpy.ndarray, uint8 (H, W)
        Grayscale surface, mid grey, defects darker.
    segment : numpy.ndarray, bool (H, W)
        The defect pixels: exactly those the defect darkened; all False for a defect-free tile.
    context : numpy.ndarray, bool (H, W)
        All False (this data set has no context region; the field keeps the common layout).
    label : int
        0 defect-free, 1 defective.
    meta : dict
        ``seed``, ``index``, ``size``, ``label``, ``kind`` (one of :data:`DEFECT_KINDS`),
        ``defect_fraction`` (segment pixels / image pixels), ``attempts`` (defect draws
        needed to meet :data:`DEFECT_AREA`, 0 for defect-free tiles), ``surface`` (the
        texture parameters) and ``defect`` (the crack or blowhole parameters, empty for
        defect-free tiles), ``style`` and ``annotation`` (the margin of the coarse
        annotation, empty for defect-free tiles).
    annotation : numpy.ndarray, bool (H, W)
        A person's coarse outline of the defect (:func:`coarse_annotation`): what a U-Net
        learns from in seed 003's setting; all False for a defect-free tile.
    """

    __test__ = False  # not a pytest test class

    image: np.ndarray
    segment: np.ndarray
    context: np.ndarray
    label: int
    meta: dict = field(default_factory=dict)
    annotation: np.ndarray | None = None


def defect_kind(index: int) -> str:
    """The kind of sample ``index``: ``"none"`` (even), ``"crack"`` (4k+1), ``"blowhole"`` (4k+3)."""
    index = check_int(index, "index", minimum=0)
    return ("none", "crack", "none", "blowhole")[index % 4]


# ---------------------------------------------------------------------------------------------
# surface


def _oriented_noise(rng, size: int, sigma_along: float, sigma_across: float, angle: float) -> np.ndarray:
    """White noise smoothed by an oriented Gaussian (periodic, via FFT), scaled to std 1.

    ``angle`` (radians) is the direction of ``sigma_along`` measured from the column axis.
    """
    noise = rng.standard_normal((size, size))
    freq = np.fft.fftfreq(size)
    f0, f1 = np.meshgrid(freq, freq, indexing="ij")
    along = f1 * math.cos(angle) + f0 * math.sin(angle)
    across = -f1 * math.sin(angle) + f0 * math.cos(angle)
    transfer = np.exp(-2.0 * math.pi**2 * ((sigma_along * along) ** 2 + (sigma_across * across) ** 2))
    smooth = np.fft.ifft2(np.fft.fft2(noise) * transfer).real
    return smooth / max(float(smooth.std()), 1e-12)


def _draw_surface(rng, size: int) -> tuple[np.ndarray, dict]:
    """The defect-free tile (uint8 (size, size)) and its parameters."""
    scale = size / DEFECT_SIZE
    mean = float(rng.uniform(*_SURFACE_MEAN))
    coarse = float(rng.uniform(*_COARSE))
    fine = float(rng.uniform(*_FINE))
    grain = float(rng.uniform(*_GRAIN))
    grain_length = float(rng.uniform(*_GRAIN_SIGMA[0]))
    grain_angle = float(rng.uniform(0.0, math.pi))
    gradient = float(rng.uniform(*_GRADIENT))
    gradient_angle = float(rng.uniform(0.0, 2.0 * math.pi))

    surface = np.full((size, size), mean)
    surface += coarse * _oriented_noise(rng, size, _COARSE_SIGMA * scale, _COARSE_SIGMA * scale, 0.0)
    surface += fine * _oriented_noise(rng, size, _FINE_SIGMA, _FINE_SIGMA, 0.0)
    surface += grain * _oriented_noise(rng, size, grain_length * scale, _GRAIN_SIGMA[1], grain_angle)
    # linear illumination ramp through the centre, ``gradient`` grey levels from side to side
    rows, cols = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
    surface += gradient * (cols * math.cos(gradient_angle) + rows * math.sin(gradient_angle))
    surface = np.clip(np.round(surface), *_SURFACE_CLIP).astype(np.uint8)
    params = {
        "mean": round(mean, 3),
        "coarse": round(coarse, 3),
        "fine": round(fine, 3),
        "grain": round(grain, 3),
        "grain_length": round(grain_length * scale, 3),
        "grain_angle": round(math.degrees(grain_angle), 3),
        "gradient": round(gradient, 3),
        "gradient_angle": round(math.degrees(gradient_angle), 3),
    }
    return surface, params


# ---------------------------------------------------------------------------------------------
# cracks


def _walk(rng, start, heading: float, length: float, size: int,
          turn: float = _CRACK_TURN) -> np.ndarray:
    """Points (k, 2) of a persistent random walk with 0.5 px steps (heading change of std
    ``turn`` radians per px); stops at the image border."""
    n_steps = max(2, int(length * 2))
    turns = np.cumsum(rng.normal(0.0, turn * math.sqrt(0.5), n_steps))
    headings = heading + turns
    steps = 0.5 * np.stack([np.sin(headings), np.cos(headings)], axis=1)
    points = np.asarray(start, dtype=float) + np.concatenate([[[0.0, 0.0]], np.cumsum(steps, axis=0)])
    inside = np.all((points >= 0.0) & (points <= size - 1), axis=1)
    stop = int(np.argmin(inside)) if not inside.all() else len(points)
    return points[:max(stop, 1)]


def _stamp(offsets_cache: dict, width: int) -> np.ndarray:
    """Pixel offsets (m, 2) of a disc ``width`` px across (1: one pixel, 2: 2x2, 3: a plus)."""
    if width not in offsets_cache:
        centre = (width - 1) / 2.0
        k = np.arange(width) - centre
        d0, d1 = np.meshgrid(k, k, indexing="ij")
        keep = d0**2 + d1**2 <= (width / 2.0 - 0.25) ** 2
        offsets_cache[width] = np.stack([d0[keep], d1[keep]], axis=1) + centre - (width - 1) // 2
    return offsets_cache[width].astype(int)


def _draw_crack(rng, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Segment mask, darkening (float, > 0 on the mask) and parameters of one crack."""
    scale = size / DEFECT_SIZE
    width_scale = max(1.0, scale)  # widths are 1-3 px up to 224 px and scale above
    start = rng.uniform(0.2 * size, 0.8 * size, 2)
    heading = float(rng.uniform(0.0, 2.0 * math.pi))
    halves = [_walk(rng, start, heading + math.pi * k, float(rng.uniform(*_CRACK_HALF)) * size, size)
              for k in range(2)]
    max_width = int(rng.integers(_CRACK_WIDTH[0], _CRACK_WIDTH[1] + 1))
    depth = float(rng.uniform(*_CRACK_DEPTH))

    # (points, width at the first point) of every piece; widths taper linearly to 1 px at tips
    pieces = [(half, float(max_width)) for half in halves]
    n_branches = int(rng.integers(1, 3))
    branches = []
    for _ in range(n_branches):
        half = halves[int(rng.integers(2))]
        if len(half) < 8:
            continue
        at = int(rng.uniform(0.2, 0.8) * len(half))
        direction = half[min(at + 2, len(half) - 1)] - half[max(at - 2, 0)]
        trunk_heading = math.atan2(direction[0], direction[1])
        off = math.radians(float(rng.uniform(*_CRACK_BRANCH_ANGLE))) * (1 if rng.random() < 0.5 else -1)
        length = float(rng.uniform(*_CRACK_BRANCH)) * size
        branch = _walk(rng, half[at], trunk_heading + off, length, size)
        trunk_width = 1.0 + (max_width - 1.0) * (1.0 - at / len(half))
        pieces.append((branch, max(1.0, min(2.0, trunk_width))))
        branches.append({"origin": [round(float(v), 3) for v in half[at]],
                         "angle": round(math.degrees(off), 3), "length": len(branch) // 2})

    # centre-line pixels with their width and relative darkness
    centre = np.zeros((size, size), dtype=bool)
    width_map = np.zeros((size, size), dtype=np.int64)
    dark_map = np.zeros((size, size))
    for points, first_width in pieces:
        t = np.linspace(0.0, 1.0, len(points))
        widths = np.maximum(1, np.round((1.0 + (first_width - 1.0) * (1.0 - t)) * width_scale))
        # slow variation of the darkness along the crack, thinner parts a little lighter
        wobble = ndimage.gaussian_filter1d(rng.standard_normal(len(points)), 8.0, mode="nearest")
        wobble = 0.85 + 0.25 * wobble / max(float(np.abs(wobble).max()), 1e-12)
        darkness = wobble * (0.75 + 0.25 * (widths / width_scale) / max_width)
        pixels = np.round(points).astype(int)
        for (r, c), w, d in zip(pixels, widths.astype(int), darkness):
            if not centre[r, c] or w > width_map[r, c]:
                width_map[r, c] = w
                dark_map[r, c] = d
            centre[r, c] = True

    mask = centre.copy()
    cache: dict = {}
    for w in np.unique(width_map[centre]):
        if w < 2:
            continue
        rows, cols = np.nonzero(width_map == w)
        offsets = _stamp(cache, int(w))
        r = (rows[:, None] + offsets[None, :, 0]).ravel()
        c = (cols[:, None] + offsets[None, :, 1]).ravel()
        keep = (r >= 0) & (r < size) & (c >= 0) & (c < size)
        mask[r[keep], c[keep]] = True

    # every pixel takes the darkness of its nearest centre-line pixel, weaker beside the line
    _, (near_r, near_c) = ndimage.distance_transform_edt(~centre, return_indices=True)
    relative = dark_map[near_r, near_c] * np.where(centre, 1.0, _CRACK_EDGE)
    darkening = np.where(mask, depth * relative, 0.0)
    params = {
        "start": [round(float(v), 3) for v in start],
        "heading": round(math.degrees(heading), 3),
        "trunk_length": (len(halves[0]) + len(halves[1])) // 2,
        "max_width": int(round(max_width * width_scale)),
        "depth": round(depth, 3),
        "branches": branches,
    }
    return mask, darkening, params


# ---------------------------------------------------------------------------------------------
# blowholes


def _draw_blowholes(rng, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Segment mask, darkening (float, > 0 on the mask) and parameters of a few blowholes."""
    scale = max(size / DEFECT_SIZE, 0.5)
    n_target = int(rng.integers(_HOLES[0], _HOLES[1] + 1))
    low_area = DEFECT_AREA[0] * size * size
    rows, cols = np.mgrid[0:size, 0:size].astype(float)
    mask = np.zeros((size, size), dtype=bool)
    darkening = np.zeros((size, size))
    holes = []
    while len(holes) < _MAX_HOLES and (len(holes) < n_target or mask.sum() < low_area):
        radius = float(rng.uniform(*_HOLE_RADIUS)) * scale
        reach = radius * 1.3  # the largest the irregular outline can get
        for _ in range(100):
            centre = rng.uniform(reach + 1.0, size - 2.0 - reach, 2)
            if all(math.dist(centre, h["centre"]) >= reach + h["reach"] + _HOLE_GAP * scale for h in holes):
                break
        else:
            break  # no room for another hole
        a2, a3 = rng.uniform(0.0, 0.15, 2)
        p2, p3 = rng.uniform(0.0, 2.0 * math.pi, 2)
        depth = float(rng.uniform(*_HOLE_DEPTH))
        dr, dc = rows - centre[0], cols - centre[1]
        rho = np.hypot(dr, dc)
        theta = np.arctan2(dr, dc)
        outline = radius * (1.0 + a2 * np.cos(2.0 * theta + p2) + a3 * np.cos(3.0 * theta + p3))
        inside = rho <= outline
        inside[int(round(centre[0])), int(round(centre[1]))] = True
        relative = np.clip(rho / outline, 0.0, 1.0)
        mask |= inside
        darkening = np.where(inside, depth * (1.0 - _HOLE_RIM * relative**2), darkening)
        holes.append({"centre": centre, "reach": reach, "radius": radius, "depth": depth})
    params = {
        "n_holes": len(holes),
        "centres": [[round(float(v), 3) for v in h["centre"]] for h in holes],
        "radii": [round(h["radius"], 3) for h in holes],
        "depths": [round(h["depth"], 3) for h in holes],
    }
    return mask, darkening, params


# ---------------------------------------------------------------------------------------------
# the "tile" style: magnetic-tile-like surfaces, blowholes and cracks

# surface (grey levels; lengths in px at 224 px unless said otherwise)
_TILE_MEAN = (70.0, 140.0)
_TILE_COARSE = ((3.0, 8.0), 14.0)  # (amplitude range, Gaussian scale)
_TILE_FINE = ((3.0, 6.0), 0.8)
_TILE_STREAKS = ((2.0, 6.0), (12.0, 30.0), 0.7)  # amplitude, scale along, scale across
_TILE_PORES = (1.0 / 600.0, (6.0, 18.0))  # pores per pixel, their darkening
_TILE_RAMP = (15.0, 45.0)  # grey-level change of a linear illumination ramp across the image
_TILE_SPOT = (40.0, (0.25, 0.6))  # amplitude up to +-40, width a fraction of the side
_TILE_CLIP = (15, 240)

# blowholes: dark ellipses
_TILE_HOLES = (1, 3)  # inclusive
_TILE_HOLE_AREA = (0.01, 0.045)  # fraction of the image all holes of a tile cover together
_TILE_HOLE_RATIO = (1.0, 2.2)  # long / short semi-axis
_TILE_HOLE_DEPTH = (20.0, 80.0)
_TILE_HOLE_RIM = 0.55  # relative darkening lost from the centre to the rim
_TILE_HOLE_GAP = 3.0  # free px between two holes

# cracks: a trunk (two halves from a point) and maybe one branch, 2-5 px wide everywhere
_TILE_CRACK_HALF = (0.18, 0.4)  # fraction of the side
_TILE_CRACK_BRANCH = (0.5, (0.1, 0.25))  # probability, length as a fraction of the side
_TILE_CRACK_WIDTH = (2.0, 5.0)  # px at any image size
_TILE_CRACK_TURN = 0.05
_TILE_CRACK_DEPTH = (20.0, 85.0)
_TILE_CRACK_EDGE = 0.35  # relative darkening lost from the centre line to the edge

TILE_DEFECT_AREA = (0.002, 0.06)
"""Inclusive range of the fraction of image pixels a defect of the "tile" style covers."""


def _draw_tile_surface(rng, size: int) -> tuple[np.ndarray, dict]:
    """A magnetic-tile-like surface (float (size, size), not yet rounded) and its parameters."""
    scale = size / DEFECT_SIZE
    mean = float(rng.uniform(*_TILE_MEAN))
    coarse = float(rng.uniform(*_TILE_COARSE[0]))
    fine = float(rng.uniform(*_TILE_FINE[0]))
    streaks = float(rng.uniform(*_TILE_STREAKS[0]))
    streak_length = float(rng.uniform(*_TILE_STREAKS[1])) * scale
    streak_angle = float(rng.uniform(0.0, math.pi))
    ramp = float(rng.uniform(*_TILE_RAMP))
    ramp_angle = float(rng.uniform(0.0, 2.0 * math.pi))
    spot = float(rng.uniform(-_TILE_SPOT[0], _TILE_SPOT[0]))
    spot_width = float(rng.uniform(*_TILE_SPOT[1])) * size
    spot_centre = rng.uniform(0.0, size - 1.0, 2)

    surface = np.full((size, size), mean)
    coarse_sigma = _TILE_COARSE[1] * scale
    surface += coarse * _oriented_noise(rng, size, coarse_sigma, coarse_sigma, 0.0)
    surface += fine * _oriented_noise(rng, size, _TILE_FINE[1], _TILE_FINE[1], 0.0)
    surface += streaks * _oriented_noise(rng, size, streak_length, _TILE_STREAKS[2], streak_angle)
    rows, cols = np.mgrid[0:size, 0:size].astype(float)
    unit = max(size - 1, 1)
    surface += ramp * ((cols / unit - 0.5) * math.cos(ramp_angle)
                       + (rows / unit - 0.5) * math.sin(ramp_angle))
    distance2 = (rows - spot_centre[0]) ** 2 + (cols - spot_centre[1]) ** 2
    surface += spot * np.exp(-distance2 / (2.0 * spot_width**2))
    n_pores = int(rng.poisson(_TILE_PORES[0] * size * size))
    pores = rng.integers(0, size, (n_pores, 2))
    surface[pores[:, 0], pores[:, 1]] -= rng.uniform(*_TILE_PORES[1], n_pores)
    params = {
        "mean": round(mean, 3),
        "coarse": round(coarse, 3),
        "fine": round(fine, 3),
        "streaks": round(streaks, 3),
        "streak_length": round(streak_length, 3),
        "streak_angle": round(math.degrees(streak_angle), 3),
        "ramp": round(ramp, 3),
        "ramp_angle": round(math.degrees(ramp_angle), 3),
        "spot": round(spot, 3),
        "spot_width": round(spot_width, 3),
        "spot_centre": [round(float(v), 3) for v in spot_centre],
        "pores": n_pores,
    }
    return surface, params


def _draw_tile_blowholes(rng, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Segment mask, darkening (float, > 0 on the mask) and parameters of 1-3 dark ellipses."""
    n_holes = int(rng.integers(_TILE_HOLES[0], _TILE_HOLES[1] + 1))
    total = float(rng.uniform(*_TILE_HOLE_AREA)) * size * size
    areas = total * rng.dirichlet(np.full(n_holes, 3.0))
    rows, cols = np.mgrid[0:size, 0:size].astype(float)
    mask = np.zeros((size, size), dtype=bool)
    darkening = np.zeros((size, size))
    holes: list[dict] = []
    for area in areas:
        ratio = float(rng.uniform(*_TILE_HOLE_RATIO))
        short = math.sqrt(area / (math.pi * ratio))
        long = ratio * short
        angle = float(rng.uniform(0.0, math.pi))
        for _ in range(100):
            centre = rng.uniform(long + 2.0, size - 3.0 - long, 2)
            if all(math.dist(centre, h["centre"]) >= long + h["long"] + _TILE_HOLE_GAP
                   for h in holes):
                break
        else:
            continue  # no room: the hole is left out (the area check may redraw the tile)
        dr, dc = rows - centre[0], cols - centre[1]
        along = dc * math.cos(angle) + dr * math.sin(angle)
        across = -dc * math.sin(angle) + dr * math.cos(angle)
        relative = (along / long) ** 2 + (across / short) ** 2
        inside = relative <= 1.0
        inside[int(round(centre[0])), int(round(centre[1]))] = True
        depth = float(rng.uniform(*_TILE_HOLE_DEPTH))
        mask |= inside
        darkening = np.where(inside, depth * (1.0 - _TILE_HOLE_RIM * np.minimum(relative, 1.0)),
                             darkening)
        holes.append({"centre": centre, "long": long, "short": short, "angle": angle,
                      "depth": depth})
    params = {
        "n_holes": len(holes),
        "centres": [[round(float(v), 3) for v in h["centre"]] for h in holes],
        "semi_axes": [[round(h["long"], 3), round(h["short"], 3)] for h in holes],
        "angles": [round(math.degrees(h["angle"]), 3) for h in holes],
        "depths": [round(h["depth"], 3) for h in holes],
    }
    return mask, darkening, params


def _smooth_profile(rng, n: int, spread: float) -> np.ndarray:
    """A slow random variation along ``n`` points, std 1 before clipping (``spread`` px apart)."""
    wobble = ndimage.gaussian_filter1d(rng.standard_normal(n), spread, mode="nearest")
    return wobble / max(float(wobble.std()), 1e-12)


def _draw_tile_crack(rng, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Segment mask, darkening (float, > 0 on the mask) and parameters of a 2-5 px wide crack.

    The centre line is sampled every 0.5 px; a pixel belongs to the crack when its centre lies
    within half the local width of the nearest centre-line point.
    """
    start = rng.uniform(0.25 * size, 0.75 * size, 2)
    heading = float(rng.uniform(0.0, 2.0 * math.pi))
    halves = [_walk(rng, start, heading + math.pi * k,
                    float(rng.uniform(*_TILE_CRACK_HALF)) * size, size, _TILE_CRACK_TURN)
              for k in range(2)]
    trunk = np.concatenate([halves[0][::-1], halves[1][1:]])
    base = float(rng.uniform(*_TILE_CRACK_WIDTH))
    widths = np.clip(base + 0.7 * _smooth_profile(rng, len(trunk), 20.0), *_TILE_CRACK_WIDTH)
    pieces = [(trunk, widths)]
    branch_params = []
    if rng.random() < _TILE_CRACK_BRANCH[0] and len(trunk) >= 16:
        at = int(rng.uniform(0.2, 0.8) * len(trunk))
        direction = trunk[min(at + 4, len(trunk) - 1)] - trunk[max(at - 4, 0)]
        off = math.radians(float(rng.uniform(25.0, 65.0))) * (1 if rng.random() < 0.5 else -1)
        length = float(rng.uniform(*_TILE_CRACK_BRANCH[1])) * size
        branch = _walk(rng, trunk[at], math.atan2(direction[0], direction[1]) + off, length, size,
                       _TILE_CRACK_TURN)
        branch_widths = np.clip(widths[at] - 1.0 + 0.5 * _smooth_profile(rng, len(branch), 20.0),
                                *_TILE_CRACK_WIDTH)
        pieces.append((branch, branch_widths))
        branch_params.append({"origin": [round(float(v), 3) for v in trunk[at]],
                              "angle": round(math.degrees(off), 3), "length": len(branch) // 2})
    points = np.concatenate([p for p, _ in pieces])
    half = np.concatenate([w for _, w in pieces]) / 2.0
    darkness = 0.85 + 0.15 * np.clip(_smooth_profile(rng, len(points), 10.0), -1.0, 1.0)

    # distance of every pixel centre near the crack to the nearest centre-line point
    tree = cKDTree(points)
    pixels = np.stack(np.mgrid[0:size, 0:size], axis=-1).reshape(-1, 2).astype(float)
    distance, nearest = tree.query(pixels, distance_upper_bound=_TILE_CRACK_WIDTH[1])
    near = np.isfinite(distance)
    relative = np.full(size * size, np.inf)
    relative[near] = distance[near] / half[nearest[near]]
    mask = (relative <= 1.0).reshape(size, size)
    depth = float(rng.uniform(*_TILE_CRACK_DEPTH))
    strength = np.zeros(size * size)
    inside = relative <= 1.0
    strength[inside] = (darkness[nearest[inside]]
                        * (1.0 - _TILE_CRACK_EDGE * relative[inside] ** 2))
    params = {
        "start": [round(float(v), 3) for v in start],
        "heading": round(math.degrees(heading), 3),
        "trunk_length": len(trunk) // 2,
        "widths": [round(float(min(w.min() for _, w in pieces)), 3),
                   round(float(max(w.max() for _, w in pieces)), 3)],
        "depth": round(depth, 3),
        "branches": branch_params,
    }
    return mask, depth * strength.reshape(size, size), params


# ---------------------------------------------------------------------------------------------
# samples


def _draw_sample(seed: int, index: int, size: int,
                 style: str = "tile") -> tuple[np.ndarray, DefectSample]:
    """The clean surface (uint8) and the sample; arguments already checked."""
    rng = np.random.default_rng([seed, index])
    kind = defect_kind(index)
    if style == "tile":
        surface_float, surface_params = _draw_tile_surface(rng, size)
        surface = np.clip(np.round(surface_float), *_TILE_CLIP).astype(np.uint8)
        draw = _draw_tile_crack if kind == "crack" else _draw_tile_blowholes
        area = TILE_DEFECT_AREA
    else:
        surface, surface_params = _draw_surface(rng, size)
        draw = _draw_crack if kind == "crack" else _draw_blowholes
        area = DEFECT_AREA
    segment = np.zeros((size, size), dtype=bool)
    image = surface.copy()
    defect_params: dict = {}
    attempts = 0
    if kind != "none":
        low, high = area[0] * size * size, area[1] * size * size
        while True:
            attempts += 1
            segment, darkening, defect_params = draw(rng, size)
            if low <= segment.sum() <= high:
                break
            if attempts == _DEFECT_TRIES:  # pragma: no cover - never seen
                raise RuntimeError(f"could not draw a {kind} covering {area} of a {size} px image")
        # integer darkening of at least 1 grey level on exactly the segment pixels
        steps = np.where(segment, np.maximum(1, np.round(darkening)), 0).astype(np.int64)
        image = np.clip(surface.astype(np.int64) - steps, 0, 255).astype(np.uint8)
    label = int(kind != "none")
    annotation, annotation_params = _annotate(segment, seed, index)
    meta = {
        "seed": seed,
        "index": index,
        "size": size,
        "style": style,
        "label": label,
        "kind": kind,
        "defect_fraction": round(float(segment.mean()), 6),
        "attempts": attempts,
        "surface": surface_params,
        "defect": defect_params,
        "annotation": annotation_params,
    }
    sample = DefectSample(image=image, segment=segment, context=np.zeros((size, size), dtype=bool),
                          label=label, meta=meta, annotation=annotation)
    return surface, sample


def generate_defect_sample(seed: int, index: int, size: int = DEFECT_SIZE,
                           style: str = "tile") -> DefectSample:
    """Draw sample ``index`` of the surface-defect data set with seed ``seed``.

    Parameters
    ----------
    seed : int
        Data-set seed (non-negative).
    index : int
        Sample index (non-negative). The sample depends only on ``(seed, index, size,
        style)``; its label and kind only on ``index`` (see :func:`defect_kind`).
    size : int, default 224
        Image side in pixels (at least 64).
    style : {"tile", "classic"}, default "tile"
        ``"tile"``: magnetic-tile-like surfaces and defects (below); ``"classic"``: the first
        version of this set (thin 1-3 px cracks and small round blowholes).

    Returns
    -------
    DefectSample
        Image uint8 (size, size), segment bool (size, size), context bool (size, size, all
        False), label, meta data and the coarse annotation (:func:`coarse_annotation`).

    Notes
    -----
    Stands in for the magnetic-tile and sewer-pipe defects of seed 003 (section 3.4). Lengths
    are given at 224 px and scale with ``size / 224`` unless said otherwise.

    ``"tile"``: the surface has a mean grey level drawn in 70-140, smooth noise of std 3-8
    (Gaussian scale 14 px) and 3-6 (0.8 px), grinding streaks of std 2-6 smoothed 12-30 px
    along a random direction and 0.7 px across it, about one dark pore (a single pixel
    darkened by 6-18 grey levels) per 600 pixels, and uneven illumination: a linear ramp of
    15-45 grey levels across the image plus a broad bright or dark spot (up to +-40 grey
    levels, Gaussian width 0.25-0.6 of the side); it is clipped to 15-240. Blowholes are 1-3
    dark ellipses (long / short semi-axis 1-2.2, any orientation, at least 3 px apart)
    covering 1-4.5 % of the image together, darkened by 20-80 grey levels at the centre
    (faint ones too, as on real tiles) and 55 % less at the rim. A crack is a persistent
    random walk through a point in the central half of the tile, 0.18-0.4 of the side long in
    each direction, with one branch (0.1-0.25 of the side, 25-65 degrees off the trunk) in
    half of the cracks; it is 2-5 px wide at every image size (a width drawn per crack,
    varying slowly by about 0.7 px along it, the branch about 1 px narrower), darkened by
    20-85 grey levels times a slow variation of 0.7-1 along it, 35 % less at its edges. A
    defect covering less than 0.2 % or more than 6 % of the pixels is drawn again
    (``meta["attempts"]`` counts the draws).

    ``"classic"``: a surface of mean grey level 105-150 with smooth noise of std 6-12 (16 px)
    and 4-8 (1 px), a grain of std 2-5 (6-14 px along, 0.7 px across) and a linear ramp of
    8-28 grey levels, clipped to 30-230. A crack is a random walk, 0.2-0.5 of the side long in
    each direction, with one or two branches, 2 or 3 px wide where its halves meet and
    tapering to 1 px at the tips (widths scale above 224 px only); blowholes are 2-5 (up to
    8) irregular discs of radius 4-8 px (scaled by ``max(size / 224, 0.5)``). A defect covers
    0.5-5 % of the pixels (:data:`DEFECT_AREA`).

    Raises
    ------
    TypeError, ValueError
        If an argument is not a non-negative int, ``size`` is below 64 or ``style`` unknown
        (the message names it).
    """
    seed = check_int(seed, "seed", minimum=0)
    index = check_int(index, "index", minimum=0)
    size = check_int(size, "size", minimum=_MIN_SIZE)
    style = check_choice(style, "style", DEFECT_STYLES)
    return _draw_sample(seed, index, size, style)[1]


# ---------------------------------------------------------------------------------------------
# coarse annotation


def _annotate(segment: np.ndarray, seed: int, index: int) -> tuple[np.ndarray, dict]:
    """The coarse annotation of ``segment`` and its parameters (arguments already checked)."""
    if not segment.any():
        return np.zeros_like(segment), {}
    rng = np.random.default_rng([seed, index, _ANNOTATION_STREAM])
    margin = float(rng.uniform(*ANNOTATION_MARGIN))
    size = segment.shape[0]
    wobble = _ANNOTATION_WOBBLE[0] * _oriented_noise(rng, size, _ANNOTATION_WOBBLE[1],
                                                     _ANNOTATION_WOBBLE[1], 0.0)
    local = np.maximum(margin + wobble, _ANNOTATION_WOBBLE[2])  # never below 1 px
    grown = ndimage.distance_transform_edt(~segment) <= local
    smooth = ndimage.gaussian_filter(grown.astype(float), ANNOTATION_SMOOTHING) > 0.5
    annotation = ndimage.binary_fill_holes(smooth | segment)
    return annotation, {"margin": round(margin, 3)}


def coarse_annotation(segment, seed: int = 0, index: int = 0) -> np.ndarray:
    """A person's coarse outline of a defect: the segment slightly grown and smoothed.

    Seed 003's U-Nets learn from hand-made masks, which follow a defect's outline loosely:
    a little wider than the defect, with rounded corners and no holes. This mimics that.
    The defect is grown by a margin drawn in :data:`ANNOTATION_MARGIN` (1-2.5 px, at any
    image size) that wobbles slowly along the outline (std 0.6 px, Gaussian scale 6 px, never
    below 1 px), the
    grown mask is smoothed (Gaussian of std :data:`ANNOTATION_SMOOTHING` = 1.5 px, threshold
    0.5), the defect itself is added back and holes are filled. The annotation therefore
    contains the whole defect.

    Parameters
    ----------
    segment : array_like of bool, (H, W) with H == W
        The true defect pixels.
    seed, index : int, default 0
        The draws come from ``numpy.random.default_rng([seed, index, 1])``, a stream of their
        own: a data set's annotation of sample ``index`` is ``coarse_annotation(segment,
        seed, index)`` and never changes the image drawn.

    Returns
    -------
    numpy.ndarray, bool (H, W)
        The annotation; all False for an empty segment.

    Raises
    ------
    TypeError, ValueError
        For a ``segment`` that is not a square 2-D boolean array, or a bad ``seed`` or
        ``index`` (the message names it).
    """
    seed = check_int(seed, "seed", minimum=0)
    index = check_int(index, "index", minimum=0)
    array = np.asarray(segment)
    if array.dtype != bool or array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ValueError(f"segment: expected a square 2-D boolean array, got dtype {array.dtype} "
                         f"and shape {array.shape}")
    return _annotate(array, seed, index)[0]


def generate_defect_dataset(
    root,
    n: int = 1000,
    seed: int = 0,
    size: int = DEFECT_SIZE,
    force: bool = False,
    progress: bool = True,
    style: str = "tile",
) -> Path:
    """Generate ``n`` surface-defect samples and write them under ``root``.

    Everything is first written into a temporary sibling directory, which is renamed to
    ``root`` once complete; an interrupted run leaves no partial data set behind.

    Parameters
    ----------
    root : str or Path
        Target directory. For every index 0 .. n-1 it receives ``root/<index>/image.png``,
        ``segment.png`` and ``context.png`` (0/255) and ``meta.json``; ``root/defects.json``
        records ``n``, ``seed``, ``size``, ``style``, ``label_counts`` (``{"0": ..., "1":
        ...}``) and ``kind_counts``. The coarse annotation is not stored: it is computed again
        from ``segment.png`` when read (:func:`coarse_annotation`).
    n : int, default 1000
        Number of samples (at least 1); seed 003 uses 1382 sewer-pipe and 1084 magnetic-tile
        images.
    seed : int, default 0
        Data-set seed; sample ``i`` is ``generate_defect_sample(seed, i, size, style)``.
    size : int, default 224
        Image side in pixels (at least 64).
    force : bool, default False
        Replace an existing ``root``, provided it is empty, holds ``defects.json`` or holds
        nothing but numbered sample directories.
    progress : bool, default True
        Show a tqdm progress bar on stderr.
    style : {"tile", "classic"}, default "tile"
        How the samples look (:func:`generate_defect_sample`).

    Returns
    -------
    Path
        ``root``.

    Raises
    ------
    FileExistsError
        If ``root`` exists and ``force`` is False.
    TypeError, ValueError
        If an argument is of the wrong type or out of range, or ``force`` is True but
        ``root`` does not look like a defect data set (nothing is deleted then).
    """
    n = check_int(n, "n", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    size = check_int(size, "size", minimum=_MIN_SIZE)
    style = check_choice(style, "style", DEFECT_STYLES)
    kinds = [defect_kind(i) for i in range(n)]
    info = {
        "name": "defects",
        "n": n,
        "seed": seed,
        "size": size,
        "style": style,
        "label_counts": {"0": kinds.count("none"), "1": n - kinds.count("none")},
        "kind_counts": {kind: kinds.count(kind) for kind in DEFECT_KINDS},
    }
    return write_dataset(root, n, lambda index: generate_defect_sample(seed, index, size, style),
                         info,
                         _INFO_FILE, force=force, progress=progress, description="defects")


# ---------------------------------------------------------------------------------------------
# split


def _apportion(total: int, capacities: list[int]) -> list[int]:
    """Split ``total`` over parts in proportion to ``capacities`` (largest remainders; ties go
    to the earlier part). Each count is the floor or ceiling of its share, so at most its
    capacity, and the complement ``capacities - counts`` is as close to its share."""
    whole = sum(capacities)
    shares = [total * c / whole if whole else 0.0 for c in capacities]
    counts = [math.floor(share) for share in shares]
    order = sorted(range(len(shares)), key=lambda k: (-(shares[k] - counts[k]), k))
    for k in order[:total - sum(counts)]:
        counts[k] += 1
    return counts


def defect_split(n: int = 1000) -> tuple[list[int], list[int], list[int]]:
    """Stratified 60 / 20 / 20 train / validation / test split of ``range(n)`` (seed 003).

    Parameters
    ----------
    n : int, default 1000
        Number of samples (at least 1).

    Returns
    -------
    (list of int, list of int, list of int)
        Sorted training, validation and test indices, disjoint and together ``range(n)``.
        Validation and test hold ``round(0.2 * n)`` indices each, training the rest.

    Notes
    -----
    Each part is balanced between the labels as far as the counts allow: the number of
    defective samples in a part is the floor or the ceiling of its share
    ``len(part) * n_defective / n``. As in seed 003 the proportions also hold for the defect
    kinds: the defective samples of a part are split between cracks and blowholes in
    proportion, again by rounding (see :func:`defect_kind` for which index is which). Within
    each kind the indices are permuted by ``numpy.random.default_rng(0)``, so the split
    depends only on ``n``.
    """
    n = check_int(n, "n", minimum=1)
    n_val = n_test = round(_SPLIT[1] * n)
    sizes = [n - n_val - n_test, n_val, n_test]
    groups = {kind: [i for i in range(n) if defect_kind(i) == kind] for kind in DEFECT_KINDS}
    free = _apportion(len(groups["none"]), sizes)
    defective = [size - count for size, count in zip(sizes, free)]
    cracks = _apportion(len(groups["crack"]), defective)
    counts = {
        "none": free,
        "crack": cracks,
        "blowhole": [total - count for total, count in zip(defective, cracks)],
    }
    rng = np.random.default_rng(0)
    parts: list[list[int]] = [[], [], []]
    for kind in DEFECT_KINDS:
        members = [groups[kind][k] for k in rng.permutation(len(groups[kind]))]
        start = 0
        for part, count in zip(parts, counts[kind]):
            part += members[start:start + count]
            start += count
    train, val, test = (sorted(part) for part in parts)
    return train, val, test


# ---------------------------------------------------------------------------------------------
# reading


def _check_root(root) -> Path:
    return check_root(root, "defect", _HOW_TO_GENERATE)


def _read_meta(root: Path, index: int) -> dict:
    meta = json.loads((root / str(index) / "meta.json").read_text())
    if meta.get("label") not in (0, 1):
        raise ValueError(f"root: sample {index} in {root} has no label 0 or 1 in its meta.json; "
                         f"is it a defect data set? {_HOW_TO_GENERATE}")
    return meta


def load_defect_sample(root, index: int) -> DefectSample:
    """Read sample ``index`` written by :func:`generate_defect_dataset` back from ``root``.

    Returns
    -------
    DefectSample
        The arrays, label and meta data that :func:`generate_defect_sample` produced, and
        the coarse annotation computed again from the stored segment.

    Raises
    ------
    FileNotFoundError
        If ``root`` or one of the sample's files is missing (the message says how to
        generate the set).
    ValueError
        If the sample's meta data has no label.
    """
    root = _check_root(root)
    index = check_int(index, "index", minimum=0)
    directory = root / str(index)
    missing = [name for name in SAMPLE_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"defect sample {index} in {root} is incomplete or missing "
                                f"({', '.join(missing)}); {_HOW_TO_GENERATE}")
    meta = _read_meta(root, index)
    segment = read_gray(directory / "segment.png") > 127
    return DefectSample(
        image=read_gray(directory / "image.png"),
        segment=segment,
        context=read_gray(directory / "context.png") > 127,
        label=int(meta["label"]),
        meta=meta,
        annotation=_stored_annotation(segment, meta, index),
    )


def _stored_annotation(segment: np.ndarray, meta: dict, index: int) -> np.ndarray:
    """The coarse annotation of a stored sample (its meta data's seed and index)."""
    return _annotate(segment, int(meta.get("seed", 0)), int(meta.get("index", index)))[0]


class DefectDataset(StoredSamples, Dataset):
    """Torch data set over a directory written by :func:`generate_defect_dataset`.

    Parameters
    ----------
    root : str or Path
        Data-set directory.
    indices : sequence of int, optional
        Sample indices to use (e.g. one part of :func:`defect_split`); default all stored.
    labels : bool, default True
        Items are ``(image, label)`` for a damaged / undamaged classifier: image float32
        (1, H, W) equal to pixel / 255, label an int64 scalar tensor (0 or 1). With False
        they are ``(image, segment)`` for a segmentation network: segment float32 (1, H, W)
        of 0 and 1 (the defect pixels).
    annotation : bool, default False
        With ``labels=False``: the segment of each item is the coarse annotation
        (:func:`coarse_annotation`), what a person would have drawn, instead of the true
        defect pixels.
    cache : bool, default True
        Keep decoded samples in memory after their first use (about 2 bytes per pixel).

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist (the message says how to generate it).
    ValueError
        If ``root`` holds no samples or ``indices`` names samples that are not stored, or
        ``annotation`` is asked for with ``labels=True``.
    """

    kind = "defect"
    how_to_generate = _HOW_TO_GENERATE

    def __init__(self, root, indices=None, labels: bool = True, cache: bool = True,
                 annotation: bool = False):
        root = _check_root(root)
        available = stored_indices(root, "defect", _HOW_TO_GENERATE)
        super().__init__(root, selected_indices(indices, available, root), cache)
        self.labels = bool(labels)
        self.annotation = check_bool(annotation, "annotation")
        if self.annotation and self.labels:
            raise ValueError("annotation: expected False with labels=True (image labels have no "
                             "outline), got True")

    def sample(self, item: int) -> DefectSample:
        """The full :class:`DefectSample` (with label and meta data) at position ``item``."""
        return load_defect_sample(self.root, self.indices[item])

    def read(self, directory: Path, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        segment = read_gray(directory / "segment.png") > 127
        meta = _read_meta(self.root, index)
        if self.annotation:
            segment = _stored_annotation(segment, meta, index)
        return read_gray(directory / "image.png"), segment, int(meta["label"])

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, segment, label = self.stored(item)
        image_tensor = torch.from_numpy(image.astype(np.float32) / 255.0)[None]
        if self.labels:
            return image_tensor, torch.tensor(label, dtype=torch.int64)
        return image_tensor, torch.from_numpy(segment.astype(np.float32))[None]
