"""Hausdorff Distance Masks (HDM): occlude the image with a circle at every grid position and
measure how far the segmentation moves, as a Hausdorff distance to the target (seed 002).

:class:`HDM` is the explainer (``HDM(model).explain(image, target)`` -> ``Explanation``);
:class:`HDMResult` reads an HDM explanation the way the original library did (distances by
result type, circle maps). The original API, ``hdm.HausdorffDistanceMasks``, is a thin adapter
over :class:`HDM` in ``interpret_segmentation.hdm``.

Grid: circle centres at ``(row * offset + offset // 2, col * offset + offset // 2)`` for every
row and column whose start lies inside the image (centres past the last pixel are moved onto
it), so any image size works; a pixel is inside a circle when its distance to the centre is at
most ``circle_size / 2``.

Distance: the true symmetric Hausdorff distance between the pixels where the class
probability exceeds ``threshold`` and the target's pixels (equal to
``skimage.metrics.hausdorff_distance``), the image diagonal when exactly one of them is empty,
0 when both are.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import ndimage

from ..analysis.metrics import HausdorffToReference
from ..core import Explainer, Explanation
from ..core.explanation import normalize_map
from ..core.perturb import changed_items
from ..core.validate import check_int, check_number, check_positive

if TYPE_CHECKING:
    from PIL import Image

RAW = 1
"""Result type: the Hausdorff distance of each occluded image."""
BETTER_ONLY = 2
"""Result type: how much closer to the segment the output got where occlusion helped, else 0."""
WORSE_ONLY = 3
"""Result type: how much farther from the segment the output got where occlusion hurt, else 0."""
RESULT_TYPES = (RAW, BETTER_ONLY, WORSE_ONLY)

Occlude = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Distance = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class CircleGrid:
    """The occluding circles of one HDM run on an image of ``height`` x ``width``."""

    height: int
    width: int
    circle_size: int
    offset: int

    @property
    def rows(self) -> int:
        return math.ceil(self.height / self.offset)

    @property
    def cols(self) -> int:
        return math.ceil(self.width / self.offset)

    def __len__(self) -> int:
        return self.rows * self.cols

    def centres(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Centre rows and columns of the circles numbered ``index`` (row-major order)."""
        index = torch.as_tensor(index, dtype=torch.int64)
        half = self.offset // 2
        rows = ((index // self.cols) * self.offset + half).clamp(max=self.height - 1)
        cols = ((index % self.cols) * self.offset + half).clamp(max=self.width - 1)
        return rows, cols

    def inside(self, index: torch.Tensor, device=None) -> torch.Tensor:
        """Bool tensor (len(index), H, W): True inside each circle numbered ``index``."""
        cy, cx = (c.to(device)[:, None, None].float() for c in self.centres(index))
        yy = torch.arange(self.height, device=device, dtype=torch.float32)[None, :, None]
        xx = torch.arange(self.width, device=device, dtype=torch.float32)[None, None, :]
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= (self.circle_size / 2) ** 2

    def disk(self) -> np.ndarray:
        """The circle as a bool footprint (2r + 1, 2r + 1) around its centre pixel."""
        radius = self.circle_size / 2
        reach = int(math.floor(radius))
        dy, dx = np.mgrid[-reach:reach + 1, -reach:reach + 1]
        return dy ** 2 + dx ** 2 <= radius ** 2

    def render(self, values: np.ndarray, reduce: str = "max") -> np.ndarray:
        """Paint each circle with its value: an (H, W) float map.

        ``reduce`` decides where circles overlap: "max" (what :meth:`HDMResult.circle_map`
        shows) or "mean". Pixels no circle covers are NaN for "max" and 0 for "mean".
        """
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (self.rows, self.cols):
            raise ValueError(f"values: expected shape {(self.rows, self.cols)}, got {values.shape}")
        disk = self.disk()
        reach = disk.shape[0] // 2
        pad = reach
        shape = (self.height + 2 * pad, self.width + 2 * pad)
        if reduce == "max":
            canvas = np.full(shape, -np.inf)
        elif reduce == "mean":
            canvas, counts = np.zeros(shape), np.zeros(shape)
        else:
            raise ValueError(f"reduce: expected 'max' or 'mean', got {reduce!r}")
        rows, cols = self.centres(torch.arange(len(self)))
        for (row, col), value in zip(zip(rows.tolist(), cols.tolist()), values.ravel()):
            window = (slice(row, row + 2 * reach + 1), slice(col, col + 2 * reach + 1))
            if reduce == "max":
                canvas[window][disk] = np.maximum(canvas[window][disk], value)
            else:
                canvas[window][disk] += value
                counts[window][disk] += 1
        inner = (slice(pad, pad + self.height), slice(pad, pad + self.width))
        if reduce == "max":
            result = canvas[inner]
            return np.where(np.isfinite(result), result, np.nan)
        return np.divide(canvas[inner], counts[inner], out=np.zeros((self.height, self.width)),
                         where=counts[inner] > 0)


def occlusion_masks(grid: CircleGrid, index: torch.Tensor, normalize: bool,
                    device=None) -> torch.Tensor:
    """Masks (len(index), 1, H, W) of the circles numbered ``index``: 1 outside the circle;
    inside 0, or -1 with ``normalize``.

    These are the original library's masks (a black circle on white; ``normalize`` maps them
    from [0, 1] to [-1, 1], i.e. mean 0.5 and std 0.5 removed).
    """
    fill = -1.0 if normalize else 0.0
    inside = grid.inside(index, device)
    return torch.where(inside, fill, 1.0)[:, None]


def occlude_minimum(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """HDM's default occlusion: ``image`` (1, C, H, W) under ``mask`` (B, 1, H, W) -> (B, C, H, W).

    Like the original's ``torch.min(image, mask)`` inside the circle (the minimum of the image
    and the circle's fill value); every pixel outside it is left as it is, also pixels above
    1, which a plain minimum would clip.
    """
    return torch.where(mask < 1, torch.minimum(image, mask), image)


class HDMResult:
    """Distances of one HDM run (the original library's result class).

    Parameters
    ----------
    distances : ndarray (rows, cols)
        Distance for the circle at each grid position (row-major: ``distances[row, col]``).
    baseline : float
        Distance of the unoccluded image's output.
    image_width, image_height : int
    circle_size, offset : int

    ``explanation`` is the :class:`Explanation` the result was read from (None when built
    from numbers).
    """

    def __init__(self, distances, baseline, image_width, image_height, circle_size, offset):
        self.results = np.asarray(distances, dtype=np.float64)
        self.baseline = float(baseline)
        self.width = int(image_width)
        self.height = int(image_height)
        self.circle_size = int(circle_size)
        self.offset = int(offset)
        self.grid = CircleGrid(self.height, self.width, self.circle_size, self.offset)
        self.explanation: Explanation | None = None

    def distances(self, result_type) -> np.ndarray:
        """The distances (rows, cols) as ``hdm.RAW``, ``hdm.BETTER_ONLY`` or ``hdm.WORSE_ONLY``."""
        if result_type == RAW:
            return self.results.copy()
        if result_type == BETTER_ONLY:
            return self.baseline - np.minimum(self.results, self.baseline)
        if result_type == WORSE_ONLY:
            return np.maximum(self.results, self.baseline) - self.baseline
        raise ValueError(
            f"result_type: expected hdm.RAW (1), hdm.BETTER_ONLY (2) or hdm.WORSE_ONLY (3), "
            f"got {result_type!r}")

    def saliency_map(self, result_type, reduce: str = "max") -> np.ndarray:
        """The distances painted as circles: an (H, W) float map, NaN where no circle reaches."""
        return self.grid.render(self.distances(result_type), reduce=reduce)

    def circle_map(self, result_type, color_map: str = "Reds") -> Image.Image:
        """The HDM picture: every circle coloured by its distance, scaled to the min..max of
        this result type; the larger value wins where circles overlap. A PIL RGB image of the
        input's size; pixels no circle covers are black."""
        import matplotlib  # imported when a picture is asked for, not with the package
        from PIL import Image

        painted = self.grid.render(normalize_map(self.distances(result_type)), reduce="max")
        colours = matplotlib.colormaps[color_map](np.nan_to_num(painted))[..., :3]
        colours[np.isnan(painted)] = 0
        return Image.fromarray((colours * 255).round().astype(np.uint8), mode="RGB")


class HDM(Explainer):
    """Hausdorff Distance Masks (seed 002).

    ``HDM(model).explain(image, target)`` occludes the image with each circle and measures
    the Hausdorff distance between the target class's output and the target region (by
    default the class's predicted mask on the unoccluded image).

    Parameters
    ----------
    model : nn.Module
    circle_size : int, default 15
        Diameter of the occluding circles, in pixels.
    offset : int, default 5
        Distance between circle centres, in pixels.
    threshold : float, default 0.5
        Class probability above which an output pixel belongs to the class.
    normalize : bool, default False
        Masks in [-1, 1] (for images normalised with mean 0.5, std 0.5).
    channel : int, default -1
        Input channel to occlude; -1 occludes all.
    skip_unchanged : bool, default True
        Don't run circles that leave the image unchanged (their output is the unoccluded
        one); needs a model that is deterministic in eval mode.
    occlude : callable (image, mask) -> occluded, optional
        Replaces :func:`occlude_minimum`: ``image`` (1, C, H, W) (only the occluded channel
        when ``channel`` >= 0), ``mask`` (B, 1, H, W) from :func:`occlusion_masks`; returns
        (B, C, H, W). With it, unchanged circles are found by building every occluded image.
    distance : callable (output, segment) -> float, optional
        Replaces the Hausdorff distance: ``output`` is the class probability map (H, W) of one
        image (numpy), ``segment`` the target pixels (H, W) bool (numpy). Without it, outputs
        whose binary mask equals the unoccluded one reuse its distance.
    output, device, batch_size, progress, fold_batchnorm
        As for every explainer (:class:`~interpret_segmentation.core.Explainer`).

    The Explanation's ``saliency`` (H, W) is, at each pixel, the mean over the circles that
    cover it of (distance - baseline distance): positive where hiding the pixel moves the
    segmentation away from the target, negative where it brings it closer. ``arrays`` holds
    "distances" (rows, cols) and "worse_only" (the WORSE_ONLY circle map, NaN-free);
    ``info["baseline_distance"]`` the unoccluded distance. :meth:`result` turns it into an
    :class:`HDMResult` for ``circle_map``.
    """

    method = "hdm"

    def __init__(self, model, circle_size: int = 15, offset: int = 5, threshold: float = 0.5,
                 normalize: bool = False, channel: int = -1, skip_unchanged: bool = True,
                 occlude: Occlude | None = None, distance: Distance | None = None, **options):
        super().__init__(model, **options)
        self.circle_size = check_positive(circle_size, "circle_size")
        self.offset = check_positive(offset, "offset")
        self.threshold = check_number(threshold, "threshold", 0, 1, open_high=True)
        self.normalize = bool(normalize)
        self.channel = check_int(channel, "channel", minimum=-1)
        self.skip_unchanged = bool(skip_unchanged)
        for hook, name in ((occlude, "occlude"), (distance, "distance")):
            if hook is not None and not callable(hook):
                raise TypeError(f"{name}: expected a callable or None, got {type(hook).__name__}")
        self.occlude, self.distance = occlude, distance

    def settings(self) -> dict:
        """The circles, threshold, channel and skipping, and the name of each hook given."""
        settings = {"circle_size": self.circle_size, "offset": self.offset,
                    "normalize": self.normalize, "threshold": self.threshold,
                    "channel": self.channel, "skip_unchanged": self.skip_unchanged}
        for name in ("occlude", "distance"):  # a replaced step is named
            hook = getattr(self, name)
            if hook is not None:
                settings[name] = getattr(hook, "__qualname__", type(hook).__qualname__)
        return settings

    def _explain(self, item) -> Explanation:
        image, target = item.image, item.target
        if not -1 <= self.channel < image.shape[1]:
            raise ValueError(
                f"channel: expected -1 (all) or 0..{image.shape[1] - 1} for an image with "
                f"{image.shape[1]} channels, got {self.channel}")
        grid = CircleGrid(*image.shape[-2:], self.circle_size, self.offset)
        measure, baseline = self._measurer(target.pixels, item.probabilities[:, target.class_index])
        to_run = self._circles_to_run(grid, image)
        distances = np.full(len(grid), baseline, dtype=np.float64)
        measuring = 0.0
        run = self.perturbations(
            len(to_run), lambda a, b: (to_run[a:b], self._occluded(grid, image, to_run[a:b])),
            "HDM masks")
        for circles, probabilities in run:
            tick = time.perf_counter()
            distances[circles.numpy()] = measure(probabilities[:, target.class_index])
            measuring += time.perf_counter() - tick
        result = HDMResult(distances.reshape(grid.rows, grid.cols), baseline, grid.width,
                           grid.height, self.circle_size, self.offset)
        worse = np.nan_to_num(result.saliency_map(WORSE_ONLY, reduce="max"))
        return self.explanation(
            item, grid.render(result.results - baseline, reduce="mean"),
            timings={"model": run.model_seconds, "distances": measuring},
            arrays={"distances": result.results, "worse_only": worse.astype(np.float32)},
            info={"baseline_distance": baseline, "model_passes": run.passes + 1,
                  "unchanged_skipped": len(grid) - run.passes, "batch_size": run.batch_size,
                  "grid": [grid.rows, grid.cols]})

    def _measurer(self, pixels: torch.Tensor, unoccluded: torch.Tensor):
        """(measure, baseline): ``measure(probability (B, H, W)) -> distances (B,)`` to the
        target ``pixels``, and the distance of the ``unoccluded`` probability (1, H, W)."""
        segment = pixels.cpu().numpy()
        if self.distance is not None:
            def measure(probability: torch.Tensor) -> np.ndarray:
                return np.array([self.distance(p, segment) for p in probability.cpu().numpy()],
                                dtype=np.float64)
            return measure, float(measure(unoccluded)[0])
        reference = HausdorffToReference(segment)
        unoccluded_binary = unoccluded > self.threshold
        baseline = reference.distance(unoccluded_binary[0].cpu().numpy())

        def measure(probability: torch.Tensor) -> np.ndarray:
            binary = probability > self.threshold
            same = (binary == unoccluded_binary).flatten(1).all(1).cpu().numpy()
            return np.array([baseline if unchanged else reference.distance(mask)
                             for unchanged, mask in zip(same, binary.cpu().numpy())],
                            dtype=np.float64)
        return measure, baseline

    def _occluded(self, grid: CircleGrid, image: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The image (1, C, H, W) under each circle numbered ``index``: (len(index), C, H, W)."""
        occlude = self.occlude or occlude_minimum
        masks = occlusion_masks(grid, index, self.normalize, image.device)
        if self.channel == -1:
            return occlude(image, masks)
        channel = slice(self.channel, self.channel + 1)
        occluded = image.expand(len(index), *image.shape[1:]).clone()
        occluded[:, channel] = occlude(image[:, channel], masks)
        return occluded

    def _circles_to_run(self, grid: CircleGrid, image: torch.Tensor) -> torch.Tensor:
        """Indices of the circles whose occluded image differs from ``image``.

        The others (black over black) give the unoccluded output and are not run. With the
        default occlusion a circle changes the image exactly when a pixel under it is above
        the fill value, which a dilation of those pixels by the circle finds at once; a given
        ``occlude`` is applied to every circle and compared.
        """
        if not self.skip_unchanged:
            return torch.arange(len(grid))
        if self.occlude is not None:
            return changed_items(
                len(grid), lambda a, b: (None, self._occluded(grid, image, torch.arange(a, b))),
                image)
        fill = -1.0 if self.normalize else 0.0
        occluded = image[0] if self.channel == -1 else image[0, self.channel:self.channel + 1]
        above = (occluded > fill).any(0).cpu().numpy()
        reached = ndimage.binary_dilation(above, structure=grid.disk())
        rows, cols = grid.centres(torch.arange(len(grid)))
        return torch.from_numpy(reached[rows.numpy(), cols.numpy()]).nonzero().squeeze(1)

    @staticmethod
    def result(explanation: Explanation) -> HDMResult:
        """The :class:`HDMResult` of an HDM explanation (for ``distances`` and ``circle_map``);
        its ``explanation`` is ``explanation``."""
        if explanation.method != "hdm":
            raise ValueError(f"explanation: expected an HDM explanation, got {explanation.method!r}")
        height, width = explanation.saliency.shape
        result = HDMResult(explanation.arrays["distances"], explanation.info["baseline_distance"],
                           width, height, explanation.parameters["circle_size"],
                           explanation.parameters["offset"])
        result.explanation = explanation
        return result
