"""Hausdorff Distance Masks (HDM): occlude the image with a circle at every grid position and
measure how far the segmentation moves, as a Hausdorff distance to the segment (seed 002).

Two ways in, one computation:

* the documented API of the original library: ``HausdorffDistanceMasks(width, height)``,
  ``generate_masks``, ``explain(model, image, segment, device)`` -> :class:`HDMResult`;
* the library's common entry point: ``HDM(model).explain(image, target)`` -> ``Explanation``.

Grid: circle centres at ``(row * offset + offset // 2, col * offset + offset // 2)`` for every
row and column whose start lies inside the image (centres past the last pixel are moved onto
it), so any image size works; a pixel is inside a circle when its distance to the centre is at
most ``circle_size / 2``.

Distance: the true symmetric Hausdorff distance between the pixels where the class
probability exceeds ``threshold`` and the segment's pixels (equal to
``skimage.metrics.hausdorff_distance``), the image diagonal when exactly one of them is empty,
0 when both are.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import matplotlib
import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from ..analysis.metrics import HausdorffToReference
from ..core import Explainer, Explanation, ModelAdapter, as_image_batch, as_mask
from ..core.folding import explanation_mode
from ..core.perturb import Perturbations, changed_items, check_batch_size
from ..core.validate import check_int, check_number, check_positive

RAW = 1
"""Result type: the Hausdorff distance of each occluded image."""
BETTER_ONLY = 2
"""Result type: how much closer to the segment the output got where occlusion helped, else 0."""
WORSE_ONLY = 3
"""Result type: how much farther from the segment the output got where occlusion hurt, else 0."""
RESULT_TYPES = (RAW, BETTER_ONLY, WORSE_ONLY)


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


class _HDMComputation:
    """Shared by both entry points: the overridable steps and the batched run."""

    threshold = 0.5
    skip_unchanged = True

    def apply_mask(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Occlude ``image`` with ``mask``; override to occlude differently.

        Called once per batch with ``image`` (1, C, H, W) (or one channel of it) and ``mask``
        (B, 1, H, W) from :func:`occlusion_masks`; must return (B, C, H, W). The default,
        like the original's ``torch.min(image, mask)``, takes the minimum of the image and the
        circle's fill value inside the circle and leaves every other pixel as it is (also
        pixels above 1, which a plain minimum would clip).
        """
        return torch.where(mask < 1, torch.minimum(image, mask), image)

    def calculate_distance(self, output: np.ndarray, segment: np.ndarray) -> float:
        """Distance between one model output and the segment; override to measure differently.

        ``output`` is the class probability map (H, W) of one occluded image, ``segment`` the
        segment (H, W). The default is the symmetric Hausdorff distance between
        ``output > threshold`` and ``segment``; the library computes it in a faster shared
        way unless a subclass replaces this method.
        """
        return HausdorffToReference(segment).distance(output > self.threshold)

    def _uses_default_distance(self) -> bool:
        return type(self).calculate_distance is _HDMComputation.calculate_distance

    def _circles_to_run(self, grid: CircleGrid, image: torch.Tensor, normalize: bool,
                        channel: int, occlude) -> torch.Tensor:
        """Indices of the circles whose occluded image differs from ``image``.

        The others (black over black) give the unoccluded output and are not run. With the
        default :meth:`apply_mask` a circle changes the image exactly when a pixel under it is
        above the fill value, which a dilation of those pixels by the circle finds at once;
        an overridden ``apply_mask`` is applied to every circle and compared.
        """
        if not self.skip_unchanged:
            return torch.arange(len(grid))
        if type(self).apply_mask is not _HDMComputation.apply_mask:
            return changed_items(len(grid), lambda a, b: (None, occlude(torch.arange(a, b))),
                                 image)
        fill = -1.0 if normalize else 0.0
        occluded = image[0] if channel == -1 else image[0, channel:channel + 1]
        above = (occluded > fill).any(0).cpu().numpy()
        reached = ndimage.binary_dilation(above, structure=grid.disk())
        rows, cols = grid.centres(torch.arange(len(grid)))
        return torch.from_numpy(reached[rows.numpy(), cols.numpy()]).nonzero().squeeze(1)

    def _run(self, model: ModelAdapter, image: torch.Tensor, segment: torch.Tensor,
             class_index: int, grid: CircleGrid, normalize: bool, channel: int,
             batch_size, progress: bool) -> tuple[np.ndarray, float, Perturbations, float]:
        """Distances (rows, cols), baseline distance, the batch run and seconds spent measuring."""
        if not -1 <= channel < image.shape[1]:
            raise ValueError(
                f"channel: expected -1 (all) or 0..{image.shape[1] - 1} for an image with "
                f"{image.shape[1]} channels, got {channel}")
        segment_numpy = segment.cpu().numpy()
        reference = HausdorffToReference(segment_numpy)
        default_distance = self._uses_default_distance()

        def measure(probability: torch.Tensor) -> np.ndarray:
            """Distances of a batch of class probability maps (B, H, W)."""
            if not default_distance:
                return np.array([self.calculate_distance(p, segment_numpy)
                                 for p in probability.cpu().numpy()], dtype=np.float64)
            binary = probability > self.threshold
            same = (binary == baseline_binary).flatten(1).all(1).cpu().numpy()
            binary = binary.cpu().numpy()
            return np.array([baseline if unchanged else reference.distance(mask)
                             for unchanged, mask in zip(same, binary)], dtype=np.float64)

        probability = model.first_pass(image)[:, class_index]
        baseline_binary = probability > self.threshold
        if default_distance:
            baseline = reference.distance(baseline_binary[0].cpu().numpy())
        else:
            baseline = float(measure(probability)[0])

        def occlude(index: torch.Tensor) -> torch.Tensor:
            masks = occlusion_masks(grid, index, normalize, image.device)
            if channel == -1:
                return self.apply_mask(image, masks)
            masked = image.expand(len(index), *image.shape[1:]).clone()
            masked[:, channel:channel + 1] = self.apply_mask(image[:, channel:channel + 1], masks)
            return masked

        to_run = self._circles_to_run(grid, image, normalize, channel, occlude)
        distances = np.full(len(grid), baseline, dtype=np.float64)
        measuring = 0.0
        run = Perturbations(model, len(to_run), lambda a, b: (to_run[a:b], occlude(to_run[a:b])),
                            batch_size=batch_size, progress=progress, description="HDM masks")
        for circles, probabilities in run:
            tick = time.perf_counter()
            distances[circles.numpy()] = measure(probabilities[:, class_index])
            measuring += time.perf_counter() - tick
        return distances.reshape(grid.rows, grid.cols), baseline, run, measuring


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
        distances = self.distances(result_type)
        low, high = distances.min(), distances.max()
        scaled = (distances - low) / (high - low) if high > low else np.zeros_like(distances)
        painted = self.grid.render(scaled, reduce="max")
        colours = matplotlib.colormaps[color_map](np.nan_to_num(painted))[..., :3]
        colours[np.isnan(painted)] = 0
        return Image.fromarray((colours * 255).round().astype(np.uint8), mode="RGB")


class HausdorffDistanceMasks(_HDMComputation):
    """HDM explainer with the original library's API.

    Parameters
    ----------
    image_width, image_height : int
        Size of the images to explain.
    threshold : float, default 0.5
        The output is binarised as ``probability > threshold`` before measuring distances.
    batch_size : int or "auto", default "auto"
        Occluded images per model pass.
    progress : bool, default True
    skip_unchanged : bool, default True
        Circles that leave the image unchanged (black over black) are not run through the
        model: their output is the unoccluded one. Needs a model that is deterministic in
        eval mode; pass False otherwise.
    """

    def __init__(self, image_width, image_height, threshold: float = 0.5,
                 batch_size: int | str = "auto", progress: bool = True,
                 skip_unchanged: bool = True):
        self.width = check_positive(image_width, "image_width")
        self.height = check_positive(image_height, "image_height")
        self.threshold = check_number(threshold, "threshold", 0, 1, open_high=True)
        check_batch_size(batch_size)
        self.batch_size = batch_size
        self.progress = progress
        self.skip_unchanged = bool(skip_unchanged)
        self.grid: CircleGrid | None = None

    def generate_masks(self, circle_size, offset, normalize=False):
        """Set the occluding circles: diameter ``circle_size`` pixels every ``offset`` pixels.

        15 and 5 suit a 240 x 240 image. ``normalize`` maps the masks to [-1, 1] for images
        normalised with mean 0.5 and std 0.5. Masks are made per batch when explaining, so
        this costs no memory.
        """
        self.circle_size = check_positive(circle_size, "circle_size")
        self.offset = check_positive(offset, "offset")
        self.normalize = bool(normalize)
        self.grid = CircleGrid(self.height, self.width, self.circle_size, self.offset)

    def explain(self, model, image, segment, device, channel=-1) -> HDMResult:
        """Explain one image (H, W) or (C, H, W) and its ground-truth ``segment`` (H, W).

        ``model`` must be on ``device``; it returns one channel (foreground) or several
        (class 1 is explained). Returns an :class:`HDMResult`.
        """
        if self.grid is None:
            raise RuntimeError("call generate_masks(circle_size, offset) before explain")
        started = time.perf_counter()
        batch = as_image_batch(image)
        if tuple(batch.shape[-2:]) != (self.height, self.width):
            raise ValueError(
                f"image: expected height x width {self.height} x {self.width} as given to "
                f"HausdorffDistanceMasks, got shape {tuple(np.shape(image))}")
        mask = as_mask(segment, (self.height, self.width), "segment")
        adapter = ModelAdapter(model, device=device)
        batch = batch.to(adapter.device)
        with explanation_mode(model):
            distances, baseline, run, distance_seconds = self._run(
                adapter, batch, mask, 1, self.grid, self.normalize, channel,
                self.batch_size, self.progress)
        result = HDMResult(distances, baseline, self.width, self.height, self.circle_size,
                           self.offset)
        result.explanation = _explanation(result, 1, {
            "circle_size": self.circle_size, "offset": self.offset, "normalize": self.normalize,
            "threshold": self.threshold, "channel": channel, "segment": "given"},
            run, distance_seconds, time.perf_counter() - started)
        result.explanation.arrays["target_pixels"] = mask.numpy().astype(np.uint8)
        return result


class HDM(Explainer, _HDMComputation):
    """Hausdorff Distance Masks through the common entry point.

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
    output, device, batch_size, progress
        As for every explainer (:class:`~interpret_segmentation.core.Explainer`).

    The Explanation's ``saliency`` (H, W) is, at each pixel, the mean over the circles that
    cover it of (distance - baseline distance): positive where hiding the pixel moves the
    segmentation away from the target, negative where it brings it closer. ``arrays`` holds
    "distances" (rows, cols) and "worse_only" (the WORSE_ONLY circle map, NaN-free);
    ``info["baseline_distance"]`` the unoccluded distance. :meth:`result` turns it back into
    an :class:`HDMResult` for ``circle_map``.
    """

    method = "hdm"

    def __init__(self, model, circle_size: int = 15, offset: int = 5, threshold: float = 0.5,
                 normalize: bool = False, channel: int = -1, skip_unchanged: bool = True,
                 **options):
        super().__init__(model, **options)
        self.circle_size = check_positive(circle_size, "circle_size")
        self.offset = check_positive(offset, "offset")
        self.threshold = check_number(threshold, "threshold", 0, 1, open_high=True)
        self.normalize = bool(normalize)
        self.channel = check_int(channel, "channel", minimum=-1)
        self.skip_unchanged = bool(skip_unchanged)

    def _explain(self, item) -> Explanation:
        image, target = item.image, item.target
        started = time.perf_counter()
        height, width = image.shape[-2:]
        grid = CircleGrid(height, width, self.circle_size, self.offset)
        distances, baseline, run, distance_seconds = self._run(
            self.model, image, target.pixels, target.class_index, grid, self.normalize,
            self.channel, self.batch_size, self.progress)
        result = HDMResult(distances, baseline, width, height, self.circle_size, self.offset)
        return _explanation(result, target.class_index, {
            "circle_size": self.circle_size, "offset": self.offset, "normalize": self.normalize,
            "threshold": self.threshold, "channel": self.channel},
            run, distance_seconds, time.perf_counter() - started)

    @staticmethod
    def result(explanation: Explanation) -> HDMResult:
        """The :class:`HDMResult` of an HDM explanation (for ``distances`` and ``circle_map``)."""
        if explanation.method != "hdm":
            raise ValueError(f"explanation: expected an HDM explanation, got {explanation.method!r}")
        height, width = explanation.saliency.shape
        return HDMResult(explanation.arrays["distances"], explanation.info["baseline_distance"],
                         width, height, explanation.parameters["circle_size"],
                         explanation.parameters["offset"])


def _explanation(result: HDMResult, class_index: int, parameters: dict, run: Perturbations,
                 distance_seconds: float, seconds: float) -> Explanation:
    change = result.distances(RAW) - result.baseline
    worse = np.nan_to_num(result.saliency_map(WORSE_ONLY, reduce="max"))
    return Explanation(
        saliency=result.grid.render(change, reduce="mean"),
        method="hdm",
        target_class=class_index,
        parameters=parameters,
        timings={"total": seconds, "model": run.model_seconds, "distances": distance_seconds},
        arrays={"distances": result.results, "worse_only": worse.astype(np.float32)},
        info={"baseline_distance": result.baseline, "model_passes": run.passes + 1,
              "unchanged_skipped": result.results.size - run.passes,
              "batch_size": run.batch_size, "grid": [result.grid.rows, result.grid.cols]},
    )
