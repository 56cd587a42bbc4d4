"""RISE for segmentation: weight random masks by how well the model's output survives them.

RISE (Petsiuk et al., 2018) keeps random smooth subsets of the image, runs the model on each
masked image and sums the masks weighted by a score of the output. :class:`RISE` scores each
masked image by its ``weighting``:

* "dice": the Dice between the class's segment on the masked image and the target region
  (the baseline of seed 001, after Dardouillet et al., 2022), the default;
* "probability": the mean class probability over the target region;
* "per_pixel": the class probability at each target pixel, one map per pixel (the original
  interpret-segmentation library, seed 002); :meth:`RISE.result` gives the
  :class:`RISEResult` that merges them by max or mean. ``rise.SegmentationRISE`` (the
  original API, in ``interpret_segmentation.rise``) is a thin adapter over this mode.

Masks, for images and volumes: an ``s`` x ``s`` (x ``s``) grid of cells kept with probability
``p1`` (``s`` may differ per axis), upsampled (bi- or trilinearly) to ``(s + 1) * ceil(size /
s)`` pixels along each axis and cropped at a random shift to the image's size. They are made
from a seed, one batch at a time, so memory does not grow with their number. A masked image
keeps the image where the mask is 1 and takes the ``baseline`` where it is 0 (``image * mask +
baseline * (1 - mask)``; the default baseline 0 is the paper's ``image * mask``). Maps are
divided by ``N * p1``, the expected coverage of a pixel.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..analysis.metrics import batch_dice
from ..core import Explainer, Explanation, atomic_write
from ..core.baseline import replace
from ..core.validate import check_choice, check_number, check_per_axis, check_positive, is_int

RECIPE_KEY = "rise_mask_recipe"
"""Key of a saved 2-D recipe with square cells: (n_masks, s, p1, height, width, seed)."""
SHAPED_RECIPE_KEY = "rise_mask_recipe_shaped"
"""Key of any other saved recipe: (n_masks, p1, seed, ndim, *s, *shape)."""
WEIGHTINGS = ("dice", "probability", "per_pixel")
CHUNK_BYTES = 256 * 2**20
"""Default memory bound of :class:`RISEResult`: the masks and per-pixel maps it makes at once
take about this many bytes (256 MiB)."""


def _check_mask_parameters(n_masks, s, p1, count_name: str = "N") -> None:
    check_positive(n_masks, count_name)
    if isinstance(s, (tuple, list)):
        check_per_axis(s, "s", len(s))
    else:
        check_positive(s, "s")
    check_number(p1, "p1", 0, 1, open_low=True)


class RandomMasks:
    """RISE masks defined by a seed and made on demand, for images or volumes.

    Parameters
    ----------
    n_masks : int
    s : int or tuple of int
        Cells per side of the random grid: one for every axis or one per axis.
    p1 : float
        Probability that a cell is kept.
    height, width : int
        Mask size.
    seed : int, default 0
        Same seed, same masks, whatever the batch size.
    depth : int, optional
        For volumes: the masks are (depth, height, width). None (default): images.

    Only the coarse grids and shifts (N x s x s (x s) booleans) are drawn up front; full-size
    masks exist only for the batch being evaluated.
    """

    def __init__(self, n_masks: int, s, p1: float, height: int, width: int, seed: int = 0, *,
                 depth: int | None = None):
        _check_mask_parameters(n_masks, s, p1)
        self.height = check_positive(height, "height")
        self.width = check_positive(width, "width")
        self.depth = None if depth is None else check_positive(depth, "depth")
        self.n_masks, self.p1 = int(n_masks), float(p1)
        self.cells_per_axis = check_per_axis(s, "s", len(self.shape))
        self.s = int(s) if is_int(s) else self.cells_per_axis
        self.seed = int(seed)
        generator = torch.Generator().manual_seed(self.seed)
        self.cells = torch.rand(self.n_masks, *self.cells_per_axis, generator=generator) < self.p1
        self.cell_size = tuple(math.ceil(size / cells)
                               for size, cells in zip(self.shape, self.cells_per_axis))
        self.shifts = torch.stack([torch.randint(0, size, (self.n_masks,), generator=generator)
                                   for size in self.cell_size], dim=1)

    @property
    def shape(self) -> tuple[int, ...]:
        """(height, width), or (depth, height, width) for volumes."""
        return (self.height, self.width) if self.depth is None else (self.depth, self.height,
                                                                     self.width)

    @property
    def cell_height(self) -> int:
        return self.cell_size[-2]

    @property
    def cell_width(self) -> int:
        return self.cell_size[-1]

    def __len__(self) -> int:
        return self.n_masks

    def batch(self, start: int, stop: int, device=None) -> torch.Tensor:
        """Masks ``start:stop`` as a float tensor (stop - start, 1, *shape) in [0, 1]."""
        cells = self.cells[start:stop, None].to(device=device, dtype=torch.float32)
        size = tuple((cells + 1) * step for cells, step in zip(self.cells_per_axis, self.cell_size))
        smooth = F.interpolate(cells, size=size, align_corners=False,
                               mode="bilinear" if len(size) == 2 else "trilinear")
        return torch.stack([
            smooth[(i, slice(None), *(slice(o, o + n) for o, n in zip(shift, self.shape)))]
            for i, shift in enumerate(self.shifts[start:stop].tolist())
        ])

    def save(self, path, overwrite: bool = False) -> None:
        """Write the recipe (parameters and seed, a few bytes) to ``path`` as given."""
        if self.depth is None and is_int(self.s):  # the format of seed 002's adapter
            key = RECIPE_KEY
            recipe = np.array([self.n_masks, self.s, self.p1, self.height, self.width, self.seed])
        else:
            key = SHAPED_RECIPE_KEY
            recipe = np.array([self.n_masks, self.p1, self.seed, len(self.shape),
                               *self.cells_per_axis, *self.shape])
        atomic_write(path, lambda file: np.savez(file, **{key: recipe}), overwrite=overwrite)


class StoredMasks:
    """Masks given as an array: (N, 1, H, W) or (N, H, W) for images, (N, 1, D, H, W) for
    volumes (e.g. a file of the original library).

    The values must lie in [0, 1] (no NaN; float rounding is clipped) and not all be 0: RISE
    divides by the masks' mean.
    ``name`` is what errors call the masks (e.g. the file they came from).
    """

    def __init__(self, masks: np.ndarray, p1: float | None = None, name: str = "masks"):
        masks = np.asarray(masks)
        if masks.dtype.kind not in "biuf":
            raise ValueError(f"{name}: expected an array of numbers, got dtype {masks.dtype}")
        masks = masks.astype(np.float32)
        if masks.ndim == 3:
            masks = masks[:, None]
        if masks.ndim not in (4, 5) or masks.shape[1] != 1 or 0 in masks.shape:
            raise ValueError(f"{name}: expected an array (N, 1, H, W) or (N, H, W), or "
                             f"(N, 1, D, H, W) for volumes, got {masks.shape}")
        if np.isnan(masks).any():
            raise ValueError(f"{name}: expected mask values in [0, 1], got NaN")
        if masks.min() < -1e-5 or masks.max() > 1 + 1e-5:  # float rounding of [0, 1] is fine
            raise ValueError(f"{name}: expected mask values in [0, 1], got values from "
                             f"{masks.min()} to {masks.max()}")
        masks = masks.clip(0, 1)
        if not masks.any():
            raise ValueError(f"{name}: every mask value is 0, so no pixel is ever kept")
        self.masks = torch.from_numpy(masks)
        self.n_masks = masks.shape[0]
        self.shape = tuple(masks.shape[2:])
        self.height, self.width = self.shape[-2:]
        self.depth = self.shape[0] if len(self.shape) == 3 else None
        self.p1 = float(masks.mean()) if p1 is None else p1

    def __len__(self) -> int:
        return self.n_masks

    def batch(self, start: int, stop: int, device=None) -> torch.Tensor:
        return self.masks[start:stop].to(device)


def load_masks(path) -> RandomMasks | StoredMasks:
    """Read masks written by ``generate_masks(..., savepath)`` or :meth:`RandomMasks.save`, or
    a plain .npy mask array."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; make masks with generate_masks(N, s, p1, "
                                f"savepath={str(path)!r})")
    unreadable = f"{path}: neither a RISE mask recipe nor a mask array (.npy)"
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):
            array, recipe, shaped = data, None, None
        else:
            with data:
                array = None
                recipe = data[RECIPE_KEY] if RECIPE_KEY in data.files else None
                shaped = data[SHAPED_RECIPE_KEY] if SHAPED_RECIPE_KEY in data.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{unreadable}, or truncated ({type(error).__name__}: {error})") from None
    if array is not None:
        return StoredMasks(array, name=str(path))
    if shaped is not None:
        return _from_shaped_recipe(shaped, path, unreadable)
    if recipe is None or recipe.shape != (6,) or not np.isfinite(recipe).all() \
            or (recipe != np.round(recipe))[[0, 1, 3, 4, 5]].any():
        raise ValueError(f"{unreadable}: expected the recipe (n_masks, s, p1, height, width, "
                         f"seed) under {RECIPE_KEY!r}")
    n_masks, s, p1, height, width, seed = recipe.tolist()
    try:
        return RandomMasks(int(n_masks), int(s), float(p1), int(height), int(width), int(seed))
    except ValueError as error:
        raise ValueError(f"{path}: a RISE mask recipe with a bad value ({error})") from None


def _from_shaped_recipe(recipe: np.ndarray, path: Path, unreadable: str) -> RandomMasks:
    """The masks of a recipe (n_masks, p1, seed, ndim, *s, *shape)."""
    ndim = int(recipe[3]) if recipe.ndim == 1 and len(recipe) > 3 and np.isfinite(recipe[3]) else 0
    whole = np.delete(recipe, 1) if recipe.ndim == 1 and len(recipe) > 1 else recipe
    if ndim not in (2, 3) or recipe.shape != (4 + 2 * ndim,) or not np.isfinite(recipe).all() \
            or (whole != np.round(whole)).any():
        raise ValueError(f"{unreadable}: expected the recipe (n_masks, p1, seed, ndim, *s, "
                         f"*shape) under {SHAPED_RECIPE_KEY!r}")
    n_masks, p1, seed = int(recipe[0]), float(recipe[1]), int(recipe[2])
    cells = tuple(int(v) for v in recipe[4:4 + ndim])
    shape = tuple(int(v) for v in recipe[4 + ndim:])
    try:
        return RandomMasks(n_masks, cells[0] if len(set(cells)) == 1 else cells, p1,
                           *shape[-2:], seed,
                           depth=shape[0] if ndim == 3 else None)
    except ValueError as error:
        raise ValueError(f"{path}: a RISE mask recipe with a bad value ({error})") from None


def weighted_mask_sum(masks, weights: torch.Tensor, chunk: int,
                      made: torch.Tensor | None = None) -> torch.Tensor:
    """``weights.T @ masks``: (R, V) float32 from ``weights`` (N, R), V the pixels of a mask.

    Row r is ``sum_i weights[i, r] * mask_i``. The masks come from the source ``masks``
    ``chunk`` at a time (memory O(chunk x V) besides the result), or from ``made``, a float32
    tensor (N, V) of all of them already made. Chunks change only the order of the float32
    sums (relative differences of about 1e-7).
    """
    weights = weights.float()
    if made is not None:
        return weights.T @ made
    total = weights.new_zeros(weights.shape[1], math.prod(masks.shape))
    for start in range(0, len(masks), chunk):
        stop = min(start + chunk, len(masks))
        total.addmm_(weights[start:stop].T, masks.batch(start, stop, weights.device).flatten(1))
    return total


class RISEResult:
    """Per-pixel RISE maps (the original library's result class).

    The map of target pixel p is ``sum_i scores[i, p] * mask_i / (N * p1)``, with
    ``scores[i, p]`` the class probability at p when mask i is applied. Only the scores
    (N, P) are kept; :meth:`max` and :meth:`mean` make the masks again, so memory does not
    grow with N x V or P x V (V the pixels, or voxels, of the image).

    Parameters
    ----------
    scores : tensor or array (N, P)
        Class probability of each of the P target pixels under each of the N masks.
    masks : RandomMasks or StoredMasks
    pixels : tensor (*shape) bool
        The target pixels (P of them), in row-major order.
    chunk_bytes : int, default CHUNK_BYTES (256 MiB)
        The one memory knob: masks and per-pixel maps are made ``chunk`` at a time (float32),
        ``chunk = chunk_bytes // (8 * V)`` (at least 1) of each, so that those made at once
        take about ``chunk_bytes``. When all N masks fit in one chunk they are made once and
        reused. The maps do not depend on it beyond float32 rounding.

    ``explanation`` is the :class:`Explanation` the result was read from (None when built
    from numbers).
    """

    def __init__(self, scores, masks, pixels, chunk_bytes: int = CHUNK_BYTES):
        self.scores = torch.as_tensor(scores)
        self.masks = masks
        self.pixels = torch.as_tensor(pixels)
        self.shape = tuple(masks.shape)
        if self.scores.ndim != 2 or self.scores.shape[0] != len(masks):
            raise ValueError(f"scores: expected ({len(masks)}, P), one row per mask, got "
                             f"{tuple(self.scores.shape)}")
        self.chunk_bytes = check_positive(chunk_bytes, "chunk_bytes")
        self.explanation: Explanation | None = None

    @property
    def chunk(self) -> int:
        """Masks, and per-pixel maps, made at once."""
        return max(1, self.chunk_bytes // (8 * math.prod(self.shape)))

    def _maps(self, weights: torch.Tensor, made: torch.Tensor | None = None) -> torch.Tensor:
        """Maps (R, V) float32 for score columns ``weights`` (N, R)."""
        return weighted_mask_sum(self.masks, weights, self.chunk, made) / (len(self.masks) * self.masks.p1)

    def _all_masks_if_they_fit(self) -> torch.Tensor | None:
        if len(self.masks) > self.chunk:
            return None
        return self.masks.batch(0, len(self.masks), self.scores.device).flatten(1).float()

    def max(self) -> np.ndarray:
        """The per-pixel maps merged by their maximum: (*shape) float32 numpy (zeros if P = 0)."""
        if self.scores.shape[1] == 0:
            return np.zeros(self.shape, dtype=np.float32)
        made = self._all_masks_if_they_fit()
        merged = None
        for start in range(0, self.scores.shape[1], self.chunk):
            part = self._maps(self.scores[:, start:start + self.chunk], made).amax(0)
            merged = part if merged is None else torch.maximum(merged, part)
        return merged.float().reshape(self.shape).cpu().numpy()

    def mean(self) -> np.ndarray:
        """The per-pixel maps merged by their mean: (*shape) float32 numpy (zeros if P = 0).

        The same as RISE's "probability" weighting."""
        if self.scores.shape[1] == 0:
            return np.zeros(self.shape, dtype=np.float32)
        maps = self._maps(self.scores.mean(1, keepdim=True))
        return maps.float().reshape(self.shape).cpu().numpy()

    @property
    def saliencies(self) -> torch.Tensor:
        """All per-pixel maps (P, *shape) float32, computed on request: P x V floats."""
        made = self._all_masks_if_they_fit()
        maps = torch.empty(self.scores.shape[1], math.prod(self.shape), device=self.scores.device)
        for start in range(0, self.scores.shape[1], self.chunk):
            stop = start + self.chunk
            maps[start:stop] = self._maps(self.scores[:, start:stop], made).float()
        return maps.reshape(-1, *self.shape)


class RISE(Explainer):
    """RISE for segmentation (Petsiuk et al., 2018; seeds 001 and 002), for images and volumes.

    Parameters
    ----------
    model : nn.Module
    n_masks : int, default 2000
        Number of random masks (seed 001 uses 2000).
    s : int or tuple of int, default 8
        Cells per side of the coarse grid: one for every axis, or one per spatial axis.
    p1 : float, default 0.5
        Probability that a cell is kept.
    weighting : {"dice", "probability", "per_pixel"}, default "dice"
        Score of each masked image: Dice between the class's segment and the target region,
        the mean class probability over the target region, or the class probability at each
        target pixel (one map per pixel, see :meth:`result`; N x P numbers for P target
        pixels, which for a volume can be many).
    seed : int, default 0
        Seed of the masks.
    masks : RandomMasks or StoredMasks, optional
        Masks to use instead of making them from ``n_masks``, ``s``, ``p1`` and ``seed``
        (which are then read from them): e.g. :func:`load_masks` of a file. They must have the
        image's size.
    spatial_dims, spacing, baseline, output, device, batch_size, progress, fold_batchnorm, ...
        As for every explainer (:class:`~interpret_segmentation.core.Explainer`). Where a
        mask is 0 the masked image takes the ``baseline`` (default 0.0: ``image * mask``).

    The Explanation's ``saliency`` (*S) is ``sum_i score_i * mask_i / (N * p1)``: the
    expected score when a pixel is kept, non-negative. With "per_pixel" it is the mean of the
    per-pixel maps (the "probability" map) and ``arrays["scores"]`` (N, P) holds the class
    probability of each of the P target pixels (row-major) under each mask.
    """

    method = "rise"

    def __init__(self, model, n_masks: int = 2000, s=8, p1: float = 0.5,
                 weighting: str = "dice", seed: int = 0, masks=None, **options):
        super().__init__(model, **options)
        self.weighting = check_choice(weighting, "weighting", WEIGHTINGS)
        if masks is not None and not isinstance(masks, (RandomMasks, StoredMasks)):
            raise TypeError(f"masks: expected RandomMasks, StoredMasks or None, got "
                            f"{type(masks).__name__}")
        self.masks = masks
        if isinstance(masks, RandomMasks):
            n_masks, s, p1, seed = masks.n_masks, masks.s, masks.p1, masks.seed
        elif isinstance(masks, StoredMasks):
            n_masks, s, p1, seed = masks.n_masks, None, masks.p1, None
        if not isinstance(masks, StoredMasks):
            _check_mask_parameters(n_masks, s, p1, count_name="n_masks")
            s = int(s) if is_int(s) else tuple(int(v) for v in s)
            seed = int(seed)
        self.n_masks, self.s, self.p1, self.seed = int(n_masks), s, float(p1), seed

    def settings(self) -> dict:
        """The masks (``s`` and ``seed`` are None for stored masks) and the weighting."""
        return {"n_masks": self.n_masks, "s": list(self.s) if isinstance(self.s, tuple) else self.s,
                "p1": self.p1, "weighting": self.weighting, "seed": self.seed}

    def masks_for(self, *shape: int):
        """The mask source for an image of ``shape`` (height, width) or a volume of (depth,
        height, width) (ValueError if ``masks`` were given for another size, or ``s`` has
        another number of axes)."""
        if self.masks is None:
            if isinstance(self.s, tuple) and len(self.s) != len(shape):
                raise ValueError(f"s: expected an int or {len(shape)} ints (one per spatial axis "
                                 f"of the image's {tuple(shape)}), got {list(self.s)}")
            return RandomMasks(self.n_masks, self.s, self.p1, *shape[-2:], seed=self.seed,
                               depth=shape[0] if len(shape) == 3 else None)
        if tuple(self.masks.shape) != tuple(shape):
            made, image = (" x ".join(map(str, size)) for size in (self.masks.shape, shape))
            raise ValueError(f"masks: made for {made}, image is {image}")
        return self.masks

    def _explain(self, item) -> Explanation:
        image, target = item.image, item.target
        shape = tuple(image.shape[2:])
        masks = self.masks_for(*shape)
        flat_pixels = target.pixels.to(image.device).flatten()
        pixel_index = flat_pixels.nonzero().squeeze(1)
        total = torch.zeros(1, math.prod(shape), dtype=torch.float64, device=image.device)
        scores = []

        def make(start: int, stop: int):
            batch_masks = masks.batch(start, stop, image.device)
            return batch_masks, replace(image, batch_masks, item.baseline)

        run = self.perturbations(len(masks), make, "RISE masks")
        for batch_masks, probabilities in run:
            class_probability = probabilities[:, target.class_index].flatten(1)
            if self.weighting == "dice":
                predicted = self.model.segment(probabilities, target.class_index).flatten(1)
                weights = batch_dice(predicted, flat_pixels)
            else:
                at_pixels = class_probability[:, pixel_index]
                weights = at_pixels.mean(1) if len(pixel_index) else at_pixels.new_zeros(len(at_pixels))
                if self.weighting == "per_pixel":
                    scores.append(at_pixels.float())  # on the model's device until the end
            total.add_(weights[None].double() @ batch_masks.flatten(1).double())
        arrays = {}
        if self.weighting == "per_pixel":
            arrays["scores"] = torch.cat(scores).cpu().numpy()
        return self.explanation(
            item, (total / (len(masks) * masks.p1)).float().reshape(shape),
            timings={"model": run.model_seconds}, arrays=arrays,
            info={"model_passes": run.passes + 1, "batch_size": run.batch_size,
                  "target_empty": not bool(target.pixels.any())})

    def result(self, explanation: Explanation, chunk_bytes: int = CHUNK_BYTES) -> RISEResult:
        """The :class:`RISEResult` (per-pixel maps, ``max()``, ``mean()``) of a "per_pixel"
        explanation made by this explainer; its ``explanation`` is ``explanation``."""
        if explanation.method != "rise" or "scores" not in explanation.arrays:
            raise ValueError(f"explanation: expected a RISE explanation with weighting "
                             f"'per_pixel', got {explanation.method!r} with arrays "
                             f"{sorted(explanation.arrays)}")
        if explanation.parameters != self.settings():
            raise ValueError(f"explanation: made with the settings {explanation.parameters}, "
                             f"this explainer has {self.settings()}; its masks would differ")
        result = RISEResult(torch.from_numpy(explanation.arrays["scores"]).to(self.model.device),
                            self.masks_for(*explanation.saliency.shape),
                            torch.from_numpy(explanation.arrays["target_pixels"].astype(bool)),
                            chunk_bytes=chunk_bytes)
        result.explanation = explanation
        return result
