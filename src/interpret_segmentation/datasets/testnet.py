"""The synthetic "testnet" data set (seed 000).

Every image is grayscale on a black background. The left half always holds a cross and a
triangle; the right half holds a circle or a square (50/50). The right-hand shape decides
what is segmented: a square selects the cross, a circle selects the triangle. The segment
therefore depends on a part of the image that lies outside the segment itself, which is what
a good explanation method has to reveal.

Samples are deterministic: sample ``index`` of data set ``seed`` is drawn from its own random
generator seeded with ``(seed, index)``, so it is the same whatever the size of the data set.

On disk a data set is a directory ``<root>/<index>/`` per sample holding ``image.png``,
``segment.png`` (0/255), ``context.png`` (0/255, the right-hand shape) and ``meta.json``, plus
``<root>/testnet.json`` describing the whole set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from ..core.validate import check_int, check_number
from .files import (
    SAMPLE_FILES,
    StoredSamples,
    boxes_apart,
    check_root,
    read_gray,
    selected_indices,
    stored_indices,
    write_dataset,
)

__all__ = [
    "DEFAULT_SIZE",
    "TestnetSample",
    "generate_sample",
    "generate_dataset",
    "load_sample",
    "list_indices",
    "split_indices",
    "TestnetDataset",
]

DEFAULT_SIZE = 240
"""Default image side in pixels (the geometry below is given for this size and scaled)."""

_BASE_SHAPE = 50.0  # nominal shape side at 240 px
_SCALE_RANGE = (0.8, 1.2)  # random factor on the shape side
_INTENSITY_RANGE = (100, 255)  # inclusive grey levels of the shapes
_GAP = 4.0  # free pixels between two shapes at 240 px (scaled with the size)
_MIN_GAP = 3  # free pixels between two shapes at any size
_MIN_SIZE = 32
_MAX_TRIES = 10_000
_INFO_FILE = "testnet.json"
_HOW_TO_GENERATE = (
    "generate it with `interpret-segmentation testnet generate` (or `triangle generate`), "
    "or interpret_segmentation.datasets.generate_dataset(root)"
)


@dataclass
class TestnetSample:
    """One testnet sample.

    Attributes
    ----------
    image : numpy.ndarray, uint8 (H, W)
        Grayscale image, background 0, shapes 100-255.
    segment : numpy.ndarray, bool (H, W)
        Ground-truth segment: the cross (right shape square) or the triangle (circle).
    context : numpy.ndarray, bool (H, W)
        Mask of the right-hand shape that decides the segment.
    meta : dict
        ``right_shape`` ("circle" or "square"), ``segmented`` ("triangle" or "cross"),
        ``seed``, ``index``, ``size`` and ``shapes``: for each of the three shapes its
        top-left corner ``x``, ``y``, side ``side`` (bounding box ``x .. x+side-1``) and grey
        level ``intensity``.
    """

    __test__ = False  # not a pytest test class despite the name

    image: np.ndarray
    segment: np.ndarray
    context: np.ndarray
    meta: dict = field(default_factory=dict)


def _draw_mask(shape: str, x: int, y: int, side: int, size: int) -> np.ndarray:
    """Binary mask (size, size) of one shape whose bounding box is x..x+side-1, y..y+side-1."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    x1, y1 = x + side - 1, y + side - 1
    if shape == "square":
        draw.rectangle([x, y, x1, y1], fill=255)
    elif shape == "circle":
        draw.ellipse([x, y, x1, y1], fill=255)
    elif shape == "triangle":
        # upright isosceles triangle filling the box
        draw.polygon([(x, y1), (x1, y1), ((x + x1) / 2.0, y)], fill=255)
    elif shape == "cross":
        # plus sign, arms one third of the side thick, centred in the box
        thick = max(2, round(side / 3))
        offset = (side - thick) // 2
        draw.rectangle([x, y + offset, x1, y + offset + thick - 1], fill=255)
        draw.rectangle([x + offset, y, x + offset + thick - 1, y1], fill=255)
    else:  # pragma: no cover - internal
        raise ValueError(f"unknown shape {shape!r}")
    return np.asarray(canvas) > 0


def generate_sample(seed: int, index: int, size: int = DEFAULT_SIZE) -> TestnetSample:
    """Draw sample ``index`` of the testnet data set with seed ``seed``.

    Parameters
    ----------
    seed : int
        Data-set seed (non-negative).
    index : int
        Sample index (non-negative). The sample depends only on ``(seed, index, size)``.
    size : int, default 240
        Image side in pixels (at least 32). Shape sizes and gaps scale with ``size / 240``.

    Returns
    -------
    TestnetSample
        Image uint8 (size, size), segment and context bool (size, size) and meta data.

    Notes
    -----
    Follows seed 000: a cross and a triangle on the left half, a circle or a square (50/50)
    on the right half; square -> the cross is segmented, circle -> the triangle. Shape sides
    are ``50 * size / 240`` times a random factor in [0.8, 1.2], grey levels are drawn from
    100-255. Between any two shapes lie at least ``max(3, round(4 * size / 240))`` columns or
    rows of background (the left and the right shape included: the gap straddles the middle
    column), and each shape lies entirely inside its half of the image.
    """
    seed = check_int(seed, "seed", minimum=0)
    index = check_int(index, "index", minimum=0)
    size = check_int(size, "size", minimum=_MIN_SIZE)
    rng = np.random.default_rng([seed, index])
    scale = size / DEFAULT_SIZE
    gap = max(_MIN_GAP, round(_GAP * scale))
    half = size // 2  # left half: columns [0, half); right half: columns [half, size)
    # the gap straddles the middle, so a left and the right shape are also `gap` apart
    left_end, right_start = half - (gap + 1) // 2, half + gap // 2

    right_shape = "square" if rng.random() < 0.5 else "circle"
    segmented = "cross" if right_shape == "square" else "triangle"

    def side() -> int:
        return max(6, round(_BASE_SHAPE * scale * rng.uniform(*_SCALE_RANGE)))

    def place(s: int, x_lo: int, x_hi: int) -> tuple[int, int, int]:
        # top-left corner such that the box x..x+s-1 stays within columns [x_lo, x_hi)
        return (int(rng.integers(x_lo, x_hi - s + 1)), int(rng.integers(0, size - s + 1)), s)

    cross_side, triangle_side, right_side = side(), side(), side()
    for _ in range(_MAX_TRIES):
        cross_box = place(cross_side, 0, left_end)
        triangle_box = place(triangle_side, 0, left_end)
        if boxes_apart(cross_box, triangle_box, gap):
            break
    else:  # pragma: no cover - needs an absurdly small image
        raise RuntimeError(f"could not place the left-hand shapes apart in a {size} px image")
    right_box = place(right_side, right_start, size)

    lo, hi = _INTENSITY_RANGE
    boxes = {"cross": cross_box, "triangle": triangle_box, right_shape: right_box}
    image = np.zeros((size, size), dtype=np.uint8)
    masks = {}
    shapes_meta = {}
    for name, (x, y, s) in boxes.items():
        intensity = int(rng.integers(lo, hi + 1))
        mask = _draw_mask(name, x, y, s, size)
        image[mask] = intensity
        masks[name] = mask
        shapes_meta[name] = {"x": x, "y": y, "side": s, "intensity": intensity}

    meta = {
        "seed": seed,
        "index": index,
        "size": size,
        "right_shape": right_shape,
        "segmented": segmented,
        "shapes": shapes_meta,
    }
    return TestnetSample(image=image, segment=masks[segmented], context=masks[right_shape],
                         meta=meta)


def generate_dataset(
    root,
    n: int = 1000,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Generate ``n`` testnet samples and write them under ``root``.

    The samples are written into a temporary sibling directory that is renamed to ``root``
    at the end, so an interrupted run never leaves a partial data set at ``root``.

    Parameters
    ----------
    root : str or Path
        Target directory; ``root/<index>/{image,segment,context}.png`` and ``meta.json`` are
        written for index 0 .. n-1, plus ``root/testnet.json`` (n, seed, size).
    n : int, default 1000
        Number of samples (at least 1).
    seed : int, default 0
        Data-set seed; sample ``i`` is :func:`generate_sample` ``(seed, i, size)``.
    size : int, default 240
        Image side in pixels.
    force : bool, default False
        Replace ``root`` if it exists (only if it looks like a testnet data set or is empty).
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
        If ``force`` is True but ``root`` does not look like a testnet data set (it is never
        deleted then), or an argument is out of range.
    """
    n = check_int(n, "n", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    size = check_int(size, "size", minimum=_MIN_SIZE)
    info = {"name": "testnet", "n": n, "seed": seed, "size": size}
    return write_dataset(root, n, lambda index: generate_sample(seed, index, size), info,
                         _INFO_FILE, force=force, progress=progress, description="testnet")


def _check_root(root) -> Path:
    return check_root(root, "testnet", _HOW_TO_GENERATE)


def list_indices(root) -> list[int]:
    """Sorted indices of the samples stored under ``root`` (numbered sub-directories).

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist.
    ValueError
        If ``root`` is not a directory or holds no samples.
    """
    return stored_indices(root, "testnet", _HOW_TO_GENERATE)


def _read_mask(path: Path) -> np.ndarray:
    return read_gray(path) > 127


def load_sample(root, index: int) -> TestnetSample:
    """Read sample ``index`` written by :func:`generate_dataset` back from ``root``.

    Returns
    -------
    TestnetSample
        Same arrays and meta data as :func:`generate_sample` produced.

    Raises
    ------
    FileNotFoundError
        If ``root`` or one of the sample's files is missing.
    """
    root = _check_root(root)
    index = check_int(index, "index", minimum=0)
    directory = root / str(index)
    missing = [name for name in SAMPLE_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"testnet sample {index} in {root} is incomplete or missing ({', '.join(missing)}); "
            f"{_HOW_TO_GENERATE}"
        )
    return TestnetSample(
        image=read_gray(directory / "image.png"),
        segment=_read_mask(directory / "segment.png"),
        context=_read_mask(directory / "context.png"),
        meta=json.loads((directory / "meta.json").read_text()),
    )


def split_indices(n: int, val_fraction: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """Random train/validation split of ``range(n)``.

    Parameters
    ----------
    n : int
        Number of samples (at least 2).
    val_fraction : float, default 0.2
        Fraction of samples in the validation part, in (0, 1); at least one sample goes to
        each part.
    seed : int, default 0
        Seed of the permutation.

    Returns
    -------
    (list of int, list of int)
        Sorted training and validation indices, disjoint, together ``range(n)``.
    """
    n = check_int(n, "n", minimum=2)
    val_fraction = check_number(val_fraction, "val_fraction", 0, 1, open_low=True, open_high=True)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    order = np.random.default_rng(check_int(seed, "seed", minimum=0)).permutation(n)
    return sorted(int(i) for i in order[n_val:]), sorted(int(i) for i in order[:n_val])


class TestnetDataset(StoredSamples, Dataset):
    """Torch data set over a testnet directory written by :func:`generate_dataset`.

    Parameters
    ----------
    root : str or Path
        Data-set directory.
    indices : sequence of int, optional
        Sample indices to use (e.g. from :func:`split_indices`); default all stored samples.
    cache : bool, default True
        Keep decoded samples in memory after their first use (about 2 bytes per pixel).

    Items are ``(image, segment)``: image float32 (1, H, W) equal to pixel / 255, segment
    float32 (1, H, W) of 0 and 1.

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist (the message says how to generate it).
    ValueError
        If ``root`` holds no samples or ``indices`` names samples that are not stored.
    """

    __test__ = False  # not a pytest test class despite the name

    kind = "testnet"
    how_to_generate = _HOW_TO_GENERATE

    def __init__(self, root, indices=None, cache: bool = True):
        root = _check_root(root)
        super().__init__(root, selected_indices(indices, list_indices(root), root), cache)

    def meta(self, item: int) -> dict:
        """The meta data (``meta.json``) of position ``item``, without reading its images."""
        path = self.root / str(self.indices[item]) / "meta.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError as error:
            raise FileNotFoundError(f"testnet sample {self.indices[item]} in {self.root} is "
                                    f"incomplete (no meta.json); {_HOW_TO_GENERATE}") from error

    def sample(self, item: int) -> TestnetSample:
        """The full :class:`TestnetSample` (with context and meta) of position ``item``."""
        return load_sample(self.root, self.indices[item])

    def read(self, directory: Path, index: int) -> tuple[np.ndarray, np.ndarray]:
        return read_gray(directory / "image.png").astype(np.uint8), _read_mask(
            directory / "segment.png")

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, segment = self.stored(item)
        return (
            torch.from_numpy(image.astype(np.float32) / 255.0)[None],
            torch.from_numpy(segment.astype(np.float32))[None],
        )
