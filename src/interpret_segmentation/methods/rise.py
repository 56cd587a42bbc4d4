"""RISE for segmentation: weight random masks by how well the model's output survives them.

RISE (Petsiuk et al., 2018) keeps random smooth subsets of the image, runs the model on each
masked image and sums the masks weighted by a score of the output. For segmentation the score
is either

* the Dice between the class's prediction on the masked image and the target region (the
  baseline of seed 001, after Dardouillet et al., 2022) -- :class:`RISE` with
  ``weighting="dice"``, the default;
* the class probability at each target pixel, one map per pixel, merged by max or mean (the
  original interpret-segmentation library) -- :class:`SegmentationRISE`, and :class:`RISE` with
  ``weighting="probability"`` for the mean.

Masks: an ``s`` x ``s`` grid of cells kept with probability ``p1``, upsampled bilinearly to
``(s + 1) * ceil(H / s)`` pixels and cropped at a random shift to H x W. They are made from a
seed, one batch at a time, so memory does not grow with their number. Maps are divided by
``N * p1``, the expected coverage of a pixel.
"""

from __future__ import annotations

import math
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..analysis.metrics import batch_dice
from ..core import Explainer, Explanation, ModelAdapter, as_image_batch, as_mask, atomic_write
from ..core.folding import explanation_mode
from ..core.model import predicted_mask
from ..core.perturb import Perturbations, check_batch_size
from ..core.validate import check_number, check_positive

RECIPE_KEY = "rise_mask_recipe"
WEIGHTINGS = ("dice", "probability")


def _check_mask_parameters(n_masks, s, p1, count_name: str = "N") -> None:
    check_positive(n_masks, count_name)
    check_positive(s, "s")
    check_number(p1, "p1", 0, 1, open_low=True)


class RandomMasks:
    """RISE masks defined by a seed and made on demand.

    Parameters
    ----------
    n_masks : int
    s : int
        Cells per side of the random grid.
    p1 : float
        Probability that a cell is kept.
    height, width : int
        Mask size.
    seed : int, default 0
        Same seed, same masks, whatever the batch size.

    Only the coarse grids and shifts (N x s x s booleans) are drawn up front; full-size masks
    exist only for the batch being evaluated.
    """

    def __init__(self, n_masks: int, s: int, p1: float, height: int, width: int, seed: int = 0):
        _check_mask_parameters(n_masks, s, p1)
        self.n_masks, self.s, self.p1 = int(n_masks), int(s), float(p1)
        self.height = check_positive(height, "height")
        self.width = check_positive(width, "width")
        self.seed = int(seed)
        generator = torch.Generator().manual_seed(self.seed)
        self.cells = torch.rand(self.n_masks, self.s, self.s, generator=generator) < self.p1
        self.cell_height = math.ceil(self.height / self.s)
        self.cell_width = math.ceil(self.width / self.s)
        self.shifts = torch.stack([
            torch.randint(0, self.cell_height, (self.n_masks,), generator=generator),
            torch.randint(0, self.cell_width, (self.n_masks,), generator=generator),
        ], dim=1)

    def __len__(self) -> int:
        return self.n_masks

    def batch(self, start: int, stop: int, device=None) -> torch.Tensor:
        """Masks ``start:stop`` as a float tensor (stop - start, 1, H, W) in [0, 1]."""
        cells = self.cells[start:stop, None].to(device=device, dtype=torch.float32)
        size = ((self.s + 1) * self.cell_height, (self.s + 1) * self.cell_width)
        smooth = F.interpolate(cells, size=size, mode="bilinear", align_corners=False)
        return torch.stack([
            smooth[i, :, dy:dy + self.height, dx:dx + self.width]
            for i, (dy, dx) in enumerate(self.shifts[start:stop].tolist())
        ])

    def save(self, path, overwrite: bool = False) -> None:
        """Write the recipe (parameters and seed, a few bytes) to ``path`` as given."""
        recipe = np.array([self.n_masks, self.s, self.p1, self.height, self.width, self.seed])
        atomic_write(path, lambda file: np.savez(file, **{RECIPE_KEY: recipe}),
                     overwrite=overwrite)


class StoredMasks:
    """Masks given as an array (N, 1, H, W) or (N, H, W), e.g. a file of the original library.

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
        if masks.ndim != 4 or masks.shape[1] != 1 or 0 in masks.shape:
            raise ValueError(f"{name}: expected an array (N, 1, H, W) or (N, H, W), got {masks.shape}")
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
        self.height, self.width = masks.shape[-2:]
        self.p1 = float(masks.mean()) if p1 is None else p1

    def __len__(self) -> int:
        return self.n_masks

    def batch(self, start: int, stop: int, device=None) -> torch.Tensor:
        return self.masks[start:stop].to(device)


def load_masks(path) -> RandomMasks | StoredMasks:
    """Read masks written by ``generate_masks(..., savepath)``, or a plain .npy mask array."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; make masks with generate_masks(N, s, p1, "
                                f"savepath={str(path)!r})")
    unreadable = f"{path}: neither a RISE mask recipe nor a mask array (.npy)"
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):
            array, recipe = data, None
        else:
            with data:
                array, recipe = None, (data[RECIPE_KEY] if RECIPE_KEY in data.files else None)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{unreadable}, or truncated ({type(error).__name__}: {error})") from None
    if array is not None:
        return StoredMasks(array, name=str(path))
    if recipe is None or recipe.shape != (6,) or not np.isfinite(recipe).all() \
            or (recipe != np.round(recipe))[[0, 1, 3, 4, 5]].any():
        raise ValueError(f"{unreadable}: expected the recipe (n_masks, s, p1, height, width, "
                         f"seed) under {RECIPE_KEY!r}")
    n_masks, s, p1, height, width, seed = recipe.tolist()
    try:
        return RandomMasks(int(n_masks), int(s), float(p1), int(height), int(width), int(seed))
    except ValueError as error:
        raise ValueError(f"{path}: a RISE mask recipe with a bad value ({error})") from None


def _masked(image: torch.Tensor, masks, start: int, stop: int, device):
    """((start, stop, masks start:stop), the image under them)."""
    batch_masks = masks.batch(start, stop, device)
    return (start, stop, batch_masks), image * batch_masks


def _rise_pass(model: ModelAdapter, image: torch.Tensor, masks, class_index: int,
               pixels: torch.Tensor, weighting: str, batch_size, progress: bool):
    """Run every mask; return (map (H, W) or per-pixel scores (N, P), BatchRun).

    ``weighting``: "dice" (one map, masks weighted by Dice with ``pixels``), "probability"
    (one map, weighted by the mean class probability over ``pixels``) or "per_pixel" (the
    class probability of each target pixel under each mask, for :class:`RISEResult`).
    """
    height, width = image.shape[-2:]
    if (masks.height, masks.width) != (height, width):
        raise ValueError(f"masks: made for {masks.height} x {masks.width}, image is "
                         f"{height} x {width}")
    device = image.device
    flat_pixels = pixels.to(device).flatten()
    pixel_index = flat_pixels.nonzero().squeeze(1)
    if weighting == "per_pixel":
        scores = torch.zeros(len(masks), len(pixel_index), device=device)
    else:
        total = torch.zeros(1, height * width, dtype=torch.float64, device=device)
    run = Perturbations(model, len(masks), lambda a, b: _masked(image, masks, a, b, device),
                        batch_size=batch_size, progress=progress, description="RISE masks")
    for (start, stop, batch_masks), probabilities in run:
        class_probability = probabilities[:, class_index].flatten(1)
        if weighting == "per_pixel":
            scores[start:stop] = class_probability[:, pixel_index]
            continue
        if weighting == "dice":
            predicted = predicted_mask(probabilities, class_index).flatten(1)
            weights = batch_dice(predicted, flat_pixels)
        elif len(pixel_index):
            weights = class_probability[:, pixel_index].mean(1)
        else:
            weights = class_probability.new_zeros(stop - start)
        total.add_(weights[None].double() @ batch_masks.flatten(1).double())
    if weighting == "per_pixel":
        return scores, run
    return (total / (len(masks) * masks.p1)).float().reshape(height, width), run


MASKS_PER_CHUNK = 256
"""Masks made at once when :class:`RISEResult` streams them (about 60 MB at 240 x 240)."""
MAP_CHUNK_BYTES = 256 * 2**20
"""Memory :class:`RISEResult` may use for keeping all masks made at once."""
PIXELS_PER_CHUNK = 128
"""Per-pixel maps made at once by :meth:`RISEResult.max` (small enough to stay in cache while
merged: about 1.5 x faster than large chunks)."""


def weighted_mask_sum(masks, weights: torch.Tensor) -> torch.Tensor:
    """``weights.T @ masks``: (R, H * W) float32 from ``weights`` (N, R).

    Each row r is ``sum_i weights[i, r] * mask_i``. ``masks`` is a mask source (made in
    chunks of :data:`MASKS_PER_CHUNK`, memory O(R x H x W + chunk x H x W)) or a tensor
    (N, H * W) of masks already made.
    """
    if isinstance(masks, torch.Tensor):
        return weights.T @ masks
    device = weights.device
    total = torch.zeros(weights.shape[1], masks.height * masks.width, device=device)
    for start in range(0, len(masks), MASKS_PER_CHUNK):
        stop = min(start + MASKS_PER_CHUNK, len(masks))
        total.addmm_(weights[start:stop].T, masks.batch(start, stop, device).flatten(1))
    return total


class RISEResult:
    """Per-pixel RISE maps (the original library's result class).

    The map of target pixel p is ``sum_i scores[i, p] * mask_i / (N * p1)``, with
    ``scores[i, p]`` the class probability at p when mask i is applied. Only the scores
    (N, P) are kept; :meth:`max` and :meth:`mean` make the masks again in chunks, so memory
    does not grow with P x H x W.

    Parameters
    ----------
    scores : tensor (N, P)
        Class probability of each of the P target pixels under each of the N masks.
    masks : RandomMasks or StoredMasks
    pixels : tensor (H, W) bool
        The target pixels (P of them), in row-major order.
    """

    def __init__(self, scores: torch.Tensor, masks, pixels: torch.Tensor):
        self.scores = scores
        self.masks = masks
        self.pixels = pixels
        self.shape = (masks.height, masks.width)

    def _maps(self, weights: torch.Tensor, masks=None) -> torch.Tensor:
        """Maps (R, H * W) for score columns ``weights`` (N, R)."""
        masks = self.masks if masks is None else masks
        return weighted_mask_sum(masks, weights / (len(self.masks) * self.masks.p1))

    def max(self) -> np.ndarray:
        """The per-pixel maps merged by their maximum: (H, W) numpy (zeros if P = 0)."""
        if self.scores.shape[1] == 0:
            return np.zeros(self.shape, dtype=np.float32)
        chunk = PIXELS_PER_CHUNK
        masks = self.masks
        if len(masks) * 4 * self.shape[0] * self.shape[1] <= MAP_CHUNK_BYTES:
            masks = masks.batch(0, len(masks), self.scores.device).flatten(1)  # made once
        merged = None
        for start in range(0, self.scores.shape[1], chunk):
            part = self._maps(self.scores[:, start:start + chunk], masks).amax(0)
            merged = part if merged is None else torch.maximum(merged, part)
        return merged.reshape(self.shape).cpu().numpy()

    def mean(self) -> np.ndarray:
        """The per-pixel maps merged by their mean: (H, W) numpy (zeros if P = 0)."""
        if self.scores.shape[1] == 0:
            return np.zeros(self.shape, dtype=np.float32)
        return self._maps(self.scores.mean(1, keepdim=True)).reshape(self.shape).cpu().numpy()

    @property
    def saliencies(self) -> torch.Tensor:
        """All per-pixel maps (P, H, W), computed on request: P x H x W floats of memory."""
        return self._maps(self.scores).reshape(-1, *self.shape)


class SegmentationRISE:
    """RISE with the original library's API: one saliency map per predicted pixel.

    Parameters
    ----------
    model : nn.Module
        On ``device``; one output channel (foreground) or several (class 1 is explained).
    input_size : tuple (height, width)
        Image size. (The original documented "width and height" but used it as an array
        shape; for square images both readings agree.)
    device : torch.device
    batch_size : int or "auto", default "auto"
    progress : bool, default True

    Calling the explainer on an image (H, W), (C, H, W) or (1, C, H, W) returns a
    :class:`RISEResult` with one map per pixel the model predicts as foreground, merged by
    ``max()`` or ``mean()``. Memory: N x P scores for N masks and P pixels.
    """

    def __init__(self, model, input_size, device, batch_size: int | str = "auto",
                 progress: bool = True):
        if (not isinstance(input_size, (tuple, list)) or len(input_size) != 2
                or any(not isinstance(v, (int, np.integer)) or v <= 0 for v in input_size)):
            raise ValueError(f"input_size: expected (height, width) of positive ints, "
                             f"got {input_size!r}")
        check_batch_size(batch_size)
        self.model = ModelAdapter(model, device=device)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.device = self.model.device
        self.batch_size = batch_size
        self.progress = progress
        self.masks: RandomMasks | StoredMasks | None = None

    def generate_masks(self, N, s, p1, savepath=None, seed: int = 0, overwrite: bool = False):
        """Define ``N`` random masks on an ``s`` x ``s`` grid keeping cells with probability
        ``p1``. With ``savepath`` the recipe (not the masks) is saved for :meth:`load_masks`;
        an existing file is kept unless ``overwrite``."""
        self.masks = RandomMasks(N, s, p1, *self.input_size, seed=seed)
        if savepath is not None:
            self.masks.save(savepath, overwrite=overwrite)
        self.N = len(self.masks)

    def load_masks(self, path):
        """Load masks saved by :meth:`generate_masks`, or an .npy array (N, 1, H, W)."""
        masks = load_masks(path)
        if (masks.height, masks.width) != self.input_size:
            raise ValueError(f"{path}: masks of size {masks.height} x {masks.width}, expected "
                             f"input_size {self.input_size}")
        self.masks = masks
        self.N = len(masks)

    def __call__(self, image, pixels=None) -> RISEResult:
        """Explain ``image`` (H, W), (C, H, W) or (1, C, H, W).

        ``pixels`` (H, W), optional: the output pixels to explain; default those the model
        predicts as foreground (class 1).
        """
        if self.masks is None:
            raise RuntimeError("call generate_masks(N, s, p1) or load_masks(path) first")
        batch = as_image_batch(image).to(self.device)
        if tuple(batch.shape[-2:]) != self.input_size:
            raise ValueError(f"image: expected size {self.input_size} (input_size), got shape "
                             f"{tuple(np.shape(image))}")
        with explanation_mode(self.model.model):
            if pixels is None:
                pixels = predicted_mask(self.model.first_pass(batch), 1)[0]
            else:
                pixels = as_mask(pixels, self.input_size, "pixels")
            scores, _ = _rise_pass(self.model, batch, self.masks, 1, pixels, "per_pixel",
                                   self.batch_size, self.progress)
        return RISEResult(scores, self.masks, pixels.cpu())

    forward = __call__


class RISE(Explainer):
    """RISE through the common entry point.

    Parameters
    ----------
    model : nn.Module
    n_masks : int, default 2000
        Number of random masks (seed 001 uses 2000).
    s : int, default 8
        Cells per side of the coarse grid.
    p1 : float, default 0.5
        Probability that a cell is kept.
    weighting : {"dice", "probability"}, default "dice"
        Score of each masked image: Dice between the class's prediction and the target
        region, or the mean class probability over the target region.
    seed : int, default 0
        Seed of the masks.
    output, device, batch_size, progress
        As for every explainer.

    The Explanation's ``saliency`` (H, W) is ``sum_i score_i * mask_i / (N * p1)``: the
    expected score when a pixel is kept, non-negative.
    """

    method = "rise"

    def __init__(self, model, n_masks: int = 2000, s: int = 8, p1: float = 0.5,
                 weighting: str = "dice", seed: int = 0, **options):
        super().__init__(model, **options)
        _check_mask_parameters(n_masks, s, p1, count_name="n_masks")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting: expected one of {WEIGHTINGS}, got {weighting!r}")
        self.n_masks, self.s, self.p1 = int(n_masks), int(s), float(p1)
        self.weighting, self.seed = weighting, int(seed)

    def _explain(self, item) -> Explanation:
        image, target = item.image, item.target
        started = time.perf_counter()
        masks = RandomMasks(self.n_masks, self.s, self.p1, *image.shape[-2:], seed=self.seed)
        saliency, run = _rise_pass(self.model, image, masks, target.class_index, target.pixels,
                                   self.weighting, self.batch_size, self.progress)
        return Explanation(
            saliency=saliency.cpu().numpy(),
            method="rise",
            target_class=target.class_index,
            parameters={"n_masks": self.n_masks, "s": self.s, "p1": self.p1,
                        "weighting": self.weighting, "seed": self.seed},
            timings={"total": time.perf_counter() - started, "model": run.model_seconds},
            info={"model_passes": run.passes + 1, "batch_size": run.batch_size,
                  "target_empty": not bool(target.pixels.any())},
        )
