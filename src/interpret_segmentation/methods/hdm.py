"""Hausdorff Distance Masks (HDM): occlude the image with a circle (a ball in a volume) at every
grid position and measure how far the segmentation moves, as a Hausdorff distance to the
target (seed 002).

:class:`HDM` is the explainer (``HDM(model).explain(image, target)`` -> ``Explanation``);
:class:`HDMResult` reads an HDM explanation the way the original library did (distances by
result type, circle maps). The original API, ``hdm.HausdorffDistanceMasks``, is a thin adapter
over :class:`HDM` in ``interpret_segmentation.hdm``.

Grid (:class:`BallGrid`, 2-D or 3-D): along each axis, centres at ``k * offset + offset // 2``
for every ``k`` whose start lies inside the image (centres past the last pixel are moved onto
it), so any size works; a pixel (voxel) is inside a ball when its distance to the centre, in
pixels, is at most ``circle_size / 2``.

Distance: the true symmetric Hausdorff distance between the class's segment on the occluded
image and the target's pixels (equal to ``skimage.metrics.hausdorff_distance``), in the units
of the voxel ``spacing``; the image's diagonal when exactly one of them is empty, 0 when both
are.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import ndimage

from ..analysis.metrics import HausdorffToReference
from ..core import Explainer, Explanation
from ..core.explanation import normalize_map
from ..core.perturb import changed_items
from ..core.validate import check_int, check_number, check_per_axis, check_positive, is_int, is_number

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


class BallGrid:
    """The occluding balls of one HDM run on an image (H, W) or a volume (D, H, W).

    Parameters
    ----------
    shape : tuple of int
        The spatial shape, (H, W) or (D, H, W).
    circle_size : int
        Diameter of the balls, in pixels (voxels), the same along every axis.
    offset : int or tuple of int
        Distance between ball centres, in pixels; one for every axis or one per axis.

    Balls are numbered in row-major order of the grid ``counts`` (``ceil(size / offset)`` per
    axis).
    """

    def __init__(self, shape, circle_size: int, offset):
        self.shape = tuple(check_positive(size, "shape") for size in shape)
        self.circle_size = check_positive(circle_size, "circle_size")
        self.offset = check_per_axis(offset, "offset", len(self.shape))

    def __eq__(self, other) -> bool:
        return (isinstance(other, BallGrid)
                and (self.shape, self.circle_size, self.offset)
                == (other.shape, other.circle_size, other.offset))

    def __hash__(self) -> int:
        return hash((self.shape, self.circle_size, self.offset))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(shape={self.shape}, circle_size={self.circle_size}, "
                f"offset={self.offset})")

    @property
    def counts(self) -> tuple[int, ...]:
        """Balls along each axis."""
        return tuple(math.ceil(size / step) for size, step in zip(self.shape, self.offset))

    def __len__(self) -> int:
        return math.prod(self.counts)

    def centres(self, index) -> tuple[torch.Tensor, ...]:
        """Centre coordinates of the balls numbered ``index``: one int64 tensor per axis."""
        index = torch.as_tensor(index, dtype=torch.int64)
        centres = []
        for count, size, step in zip(self.counts[::-1], self.shape[::-1], self.offset[::-1]):
            centres.append(((index % count) * step + step // 2).clamp(max=size - 1))
            index = index // count
        return tuple(centres[::-1])

    def inside(self, index, device=None) -> torch.Tensor:
        """Bool tensor (len(index), *shape): True inside each ball numbered ``index``.

        Exact integer arithmetic: a voxel at offset d from the centre is inside when
        ``4 |d|^2 <= circle_size^2``.
        """
        squared = None
        for axis, (centre, size) in enumerate(zip(self.centres(index), self.shape)):
            steps = torch.arange(size, device=device, dtype=torch.int32)
            along = (steps[None, :] - centre.to(device, torch.int32)[:, None]) ** 2
            along = along.reshape(len(along), *(size if a == axis else 1
                                                for a in range(len(self.shape))))
            squared = along if squared is None else squared + along
        return 4 * squared <= self.circle_size ** 2

    def ball(self) -> np.ndarray:
        """The ball as a bool footprint (2r + 1,) * ndim around its centre voxel."""
        reach = self.circle_size // 2
        offsets = np.indices((2 * reach + 1,) * len(self.shape)) - reach
        return 4 * (offsets ** 2).sum(0) <= self.circle_size ** 2

    def touching(self, changeable: np.ndarray) -> torch.Tensor:
        """Indices (increasing) of the balls that cover at least one True voxel of
        ``changeable`` (*shape).

        Exact: the distance transform gives every centre's squared distance to the nearest
        True voxel, an integer, which is compared with the ball's radius.
        """
        if not changeable.any():
            return torch.zeros(0, dtype=torch.int64)
        nearest = ndimage.distance_transform_edt(~changeable)
        centres = tuple(c.numpy() for c in self.centres(torch.arange(len(self))))
        squared = np.rint(nearest[centres] ** 2)
        return torch.from_numpy(4 * squared <= self.circle_size ** 2).nonzero().squeeze(1)

    def render(self, values: np.ndarray, reduce: str = "max") -> np.ndarray:
        """Paint each ball with its value: a float map of the image's shape.

        ``values`` has the grid's shape (``counts``). ``reduce`` decides where balls overlap:
        "max" (what :meth:`HDMResult.circle_map` shows) or "mean". Pixels no ball covers are NaN
        for "max" and 0 for "mean".
        """
        values = np.asarray(values, dtype=np.float64)
        if values.shape != self.counts:
            raise ValueError(f"values: expected shape {self.counts}, got {values.shape}")
        ball = self.ball()
        reach = ball.shape[0] // 2
        padded = tuple(size + 2 * reach for size in self.shape)
        if reduce == "max":
            canvas = np.full(padded, -np.inf)
        elif reduce == "mean":
            canvas, counts = np.zeros(padded), np.zeros(padded)
        else:
            raise ValueError(f"reduce: expected 'max' or 'mean', got {reduce!r}")
        centres = torch.stack(self.centres(torch.arange(len(self))), 1).tolist()
        for centre, value in zip(centres, values.ravel()):
            window = tuple(slice(c, c + 2 * reach + 1) for c in centre)
            if reduce == "max":
                canvas[window][ball] = np.maximum(canvas[window][ball], value)
            else:
                canvas[window][ball] += value
                counts[window][ball] += 1
        inner = tuple(slice(reach, reach + size) for size in self.shape)
        if reduce == "max":
            result = canvas[inner]
            return np.where(np.isfinite(result), result, np.nan)
        return np.divide(canvas[inner], counts[inner], out=np.zeros(self.shape),
                         where=counts[inner] > 0)


class CircleGrid(BallGrid):
    """The occluding circles of one HDM run on an image of ``height`` x ``width`` (the 2-D
    :class:`BallGrid`, with the original library's names: ``rows``, ``cols``, ``disk``)."""

    def __init__(self, height: int, width: int, circle_size: int, offset):
        super().__init__((height, width), circle_size, offset)

    height = property(lambda self: self.shape[0])
    width = property(lambda self: self.shape[1])
    rows = property(lambda self: self.counts[0])
    cols = property(lambda self: self.counts[1])

    def disk(self) -> np.ndarray:
        """The circle as a bool footprint (2r + 1, 2r + 1) around its centre pixel."""
        return self.ball()


def grid_for(shape, circle_size: int, offset) -> BallGrid:
    """The grid of an image (H, W) (a :class:`CircleGrid`) or a volume (D, H, W)."""
    if len(shape) == 2:
        return CircleGrid(*shape, circle_size, offset)
    return BallGrid(shape, circle_size, offset)


def occlusion_masks(grid: BallGrid, index: torch.Tensor, normalize: bool,
                    device=None) -> torch.Tensor:
    """Masks (len(index), 1, *shape) of the balls numbered ``index``: 1 outside the ball;
    inside 0, or -1 with ``normalize``.

    These are the original library's masks (a black circle on white; ``normalize`` maps them
    from [0, 1] to [-1, 1], i.e. mean 0.5 and std 0.5 removed), which an ``occlude`` hook
    receives.
    """
    fill = -1.0 if normalize else 0.0
    inside = grid.inside(index, device)
    return torch.where(inside, fill, 1.0)[:, None]


def occlude_minimum(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Seed 002's occlusion: ``image`` (1, C, *S) under ``mask`` (B, 1, *S) -> (B, C, *S).

    Like the original's ``torch.min(image, mask)`` inside the circle (the minimum of the image
    and the circle's fill value); every pixel outside it is left as it is, also pixels above
    1, which a plain minimum would clip. Pixels already below the fill value are never hidden:
    :class:`HDM`'s default, which replaces the pixels under the ball by the ``baseline``, has
    no such blind spot.
    """
    return torch.where(mask < 1, torch.minimum(image, mask), image)


class HDMResult:
    """Distances of one HDM run (the original library's result class).

    Parameters
    ----------
    distances : ndarray (rows, cols), or (depths, rows, cols) for a volume
        Distance for the ball at each grid position (row-major: ``distances[row, col]``).
    baseline : float
        Distance of the unoccluded image's output.
    image_width, image_height : int
    circle_size : int
    offset : int or tuple of int (one per axis)
    image_depth : int, optional
        The volume's depth; None (default) for an image.

    ``explanation`` is the :class:`Explanation` the result was read from (None when built
    from numbers).
    """

    def __init__(self, distances, baseline, image_width, image_height, circle_size, offset, *,
                 image_depth: int | None = None):
        self.results = np.asarray(distances, dtype=np.float64)
        self.baseline = float(baseline)
        self.width = int(image_width)
        self.height = int(image_height)
        self.depth = None if image_depth is None else int(image_depth)
        self.circle_size = int(circle_size)
        self.offset = offset if is_int(offset) else tuple(offset)
        shape = (self.height, self.width) if self.depth is None else (self.depth, self.height,
                                                                      self.width)
        self.grid = grid_for(shape, self.circle_size, self.offset)
        if self.results.shape != self.grid.counts:
            raise ValueError(f"distances: expected shape {self.grid.counts} (the grid of "
                             f"{shape} with this circle_size and offset), got "
                             f"{self.results.shape}")
        self.explanation: Explanation | None = None

    def distances(self, result_type) -> np.ndarray:
        """The distances (the grid's shape) as ``hdm.RAW``, ``hdm.BETTER_ONLY`` or
        ``hdm.WORSE_ONLY``."""
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
        """The distances painted as balls: a float map of the image's shape, NaN where no ball
        reaches."""
        return self.grid.render(self.distances(result_type), reduce=reduce)

    def circle_map(self, result_type, color_map: str = "Reds") -> Image.Image:
        """The HDM picture: every circle coloured by its distance, scaled to the min..max of
        this result type; the larger value wins where circles overlap. A PIL RGB image of the
        input's size; pixels no circle covers are black. Images only: for a volume, paint
        :meth:`saliency_map` slice by slice."""
        if self.depth is not None:
            raise ValueError("circle_map: a picture of a 2-D image; for a volume use "
                             "saliency_map(result_type) (D, H, W) and show its slices")
        import matplotlib  # imported when a picture is asked for, not with the package
        from PIL import Image

        painted = self.grid.render(normalize_map(self.distances(result_type)), reduce="max")
        colours = matplotlib.colormaps[color_map](np.nan_to_num(painted))[..., :3]
        colours[np.isnan(painted)] = 0
        return Image.fromarray((colours * 255).round().astype(np.uint8), mode="RGB")


class HDM(Explainer):
    """Hausdorff Distance Masks (seed 002), for images and volumes.

    ``HDM(model).explain(image, target)`` hides the image under each ball of a grid and
    measures the Hausdorff distance between the class's segment on the occluded image and the
    target region (by default the class's segment on the unoccluded image).

    Parameters
    ----------
    model : nn.Module
    circle_size : int, default 15
        Diameter of the occluding circles (balls in a volume), in pixels (voxels).
    offset : int or tuple of int, default 5
        Distance between centres, in pixels: one for every axis or one per spatial axis.
    threshold : float, optional
        None (default): an output pixel belongs to the class where the class is segmented, by
        the same rule as the target (arg-max for softmax classes, probability above 0.5 for a
        one-channel or sigmoid output). A number t: where the class probability exceeds t,
        seed 002's binarisation, meant for one-channel and sigmoid outputs.
    normalize : bool, default False
        The circles' fill is -1 instead of 0 (images normalised with mean 0.5 and std 0.5):
        the default ``baseline`` becomes -1.0, and an ``occlude`` hook gets masks at -1.
    channel : int, default -1
        Input channel to occlude; -1 occludes all.
    skip_unchanged : bool, default True
        Don't run circles that leave the image unchanged (their output is the unoccluded
        one); needs a model that is deterministic in eval mode.
    occlude : callable (image, mask) -> occluded, optional
        Replaces the default occlusion (the pixels under the circle take the ``baseline``'s
        values): ``image`` (1, C, *S) (only the occluded channel when ``channel`` >= 0),
        ``mask`` (B, 1, *S) from :func:`occlusion_masks`; returns (B, C, *S). For
        :func:`occlude_minimum` (seed 002) unchanged circles are found at once; for any other,
        by building every occluded image.
    distance : callable (output, segment) -> float, optional
        Replaces the Hausdorff distance: ``output`` is the class probability map (*S) of one
        image (numpy), ``segment`` the target pixels (*S) bool (numpy). Without it, outputs
        whose segment equals the unoccluded one reuse its distance.
    spatial_dims, spacing, baseline, output, device, batch_size, progress, fold_batchnorm, ...
        As for every explainer (:class:`~interpret_segmentation.core.Explainer`). ``spacing``
        (voxel size per axis) sets the distances' units; ``baseline`` (default 0.0) is what
        the pixels under a circle become.

    The Explanation's ``saliency`` (*S) is, at each pixel, the mean over the circles that
    cover it of (distance - baseline distance): positive where hiding the pixel moves the
    segmentation away from the target, negative where it brings it closer. ``arrays`` holds
    "distances" (the grid's shape, (rows, cols) or (depths, rows, cols)) and "worse_only" (the
    WORSE_ONLY circle map, NaN-free); ``info["baseline_distance"]`` the unoccluded distance.
    :meth:`result` turns it into an :class:`HDMResult` for ``circle_map``.
    """

    method = "hdm"

    def __init__(self, model, circle_size: int = 15, offset=5, threshold: float | None = None,
                 normalize: bool = False, channel: int = -1, skip_unchanged: bool = True,
                 occlude: Occlude | None = None, distance: Distance | None = None, **options):
        self.normalize = bool(normalize)
        if self.normalize:
            given = options.get("baseline", -1.0)
            if not (is_number(given) and given == -1):
                raise ValueError(f"normalize and baseline: normalize=True fills the circles "
                                 f"with -1; give one of them, got baseline="
                                 f"{options['baseline']!r}")
            options["baseline"] = -1.0
        super().__init__(model, **options)
        self.circle_size = check_positive(circle_size, "circle_size")
        self.offset = (check_positive(offset, "offset") if not isinstance(offset, (tuple, list))
                       else check_per_axis(offset, "offset", len(offset)))
        self.threshold = (None if threshold is None
                          else check_number(threshold, "threshold", 0, 1, open_high=True))
        self.channel = check_int(channel, "channel", minimum=-1)
        self.skip_unchanged = bool(skip_unchanged)
        for hook, name in ((occlude, "occlude"), (distance, "distance")):
            if hook is not None and not callable(hook):
                raise TypeError(f"{name}: expected a callable or None, got {type(hook).__name__}")
        self.occlude, self.distance = occlude, distance

    def settings(self) -> dict:
        """The circles, threshold, channel and skipping, and the name of each hook given."""
        settings = {"circle_size": self.circle_size,
                    "offset": self.offset if is_int(self.offset) else list(self.offset),
                    "normalize": self.normalize, "threshold": self.threshold,
                    "channel": self.channel, "skip_unchanged": self.skip_unchanged}
        for name in ("occlude", "distance"):  # a replaced step is named
            hook = getattr(self, name)
            if hook is not None:
                settings[name] = getattr(hook, "__qualname__", type(hook).__qualname__)
        return settings

    def _explain(self, item) -> Explanation:
        image = item.image
        if not -1 <= self.channel < image.shape[1]:
            raise ValueError(
                f"channel: expected -1 (all) or 0..{image.shape[1] - 1} for an image with "
                f"{image.shape[1]} channels, got {self.channel}")
        spatial = tuple(image.shape[2:])
        if not is_int(self.offset) and len(self.offset) != len(spatial):
            raise ValueError(f"offset: expected an int or {len(spatial)} ints (one per spatial "
                             f"axis of the image's {spatial}), got {list(self.offset)}")
        grid = grid_for(spatial, self.circle_size, self.offset)
        measure, unoccluded = self._measurer(item)
        to_run = self._circles_to_run(grid, image, item.baseline)
        distances = np.full(len(grid), unoccluded, dtype=np.float64)
        measuring = 0.0
        run = self.perturbations(
            len(to_run),
            lambda a, b: (to_run[a:b], self._occluded(grid, image, item.baseline, to_run[a:b])),
            "HDM masks")
        for circles, probabilities in run:
            tick = time.perf_counter()
            distances[circles.numpy()] = measure(probabilities)
            measuring += time.perf_counter() - tick
        distances = distances.reshape(grid.counts)
        worse = np.nan_to_num(grid.render(np.maximum(distances, unoccluded) - unoccluded, "max"))
        return self.explanation(
            item, grid.render(distances - unoccluded, reduce="mean"),
            timings={"model": run.model_seconds, "distances": measuring},
            arrays={"distances": distances, "worse_only": worse.astype(np.float32)},
            info={"baseline_distance": unoccluded, "model_passes": run.passes + 1,
                  "unchanged_skipped": len(grid) - run.passes, "batch_size": run.batch_size,
                  "grid": list(grid.counts)})

    def _segment(self, probabilities: torch.Tensor, class_index: int) -> torch.Tensor:
        """The class's segment, bool (B, *S), from probabilities (B, K, *S): the model's one
        definition, or ``probability > threshold`` when a threshold is given."""
        if self.threshold is None:
            return self.model.segment(probabilities, class_index)
        return probabilities[:, class_index] > self.threshold

    def _measurer(self, item):
        """(measure, unoccluded): ``measure(probabilities (B, K, *S)) -> distances (B,)`` to
        the target's pixels, and the distance of the unoccluded output."""
        class_index = item.target.class_index
        segment = item.target.pixels.cpu().numpy()
        if self.distance is not None:
            def measure(probabilities: torch.Tensor) -> np.ndarray:
                maps = probabilities[:, class_index].cpu().numpy()
                return np.array([self.distance(p, segment) for p in maps], dtype=np.float64)
            return measure, float(measure(item.probabilities)[0])
        reference = HausdorffToReference(segment, item.spacing)
        unoccluded_segment = self._segment(item.probabilities, class_index)
        unoccluded = reference.distance(unoccluded_segment[0].cpu().numpy())

        def measure(probabilities: torch.Tensor) -> np.ndarray:
            binary = self._segment(probabilities, class_index)
            changed = (binary != unoccluded_segment).flatten(1).any(1).nonzero().squeeze(1)
            distances = np.full(len(binary), unoccluded, dtype=np.float64)
            if len(changed):  # on a GPU measured there (HausdorffToReference.distances)
                distances[changed.cpu().numpy()] = reference.distances(binary[changed])
            return distances
        return measure, unoccluded

    def _occluded(self, grid: BallGrid, image: torch.Tensor, baseline: torch.Tensor,
                  index: torch.Tensor) -> torch.Tensor:
        """The image (1, C, *S) under each circle numbered ``index``: (len(index), C, *S)."""
        channels = slice(None) if self.channel == -1 else slice(self.channel, self.channel + 1)
        if self.occlude is None:  # replace(image, keep=outside, baseline) for a 0/1 mask
            part = torch.where(grid.inside(index, image.device)[:, None],
                               baseline[:, channels], image[:, channels])
        else:
            part = self.occlude(image[:, channels],
                                occlusion_masks(grid, index, self.normalize, image.device))
        if self.channel == -1:
            return part
        occluded = image.expand(len(index), *image.shape[1:]).clone()
        occluded[:, channels] = part
        return occluded

    def _circles_to_run(self, grid: BallGrid, image: torch.Tensor,
                        baseline: torch.Tensor) -> torch.Tensor:
        """Indices of the circles whose occluded image differs from ``image``.

        The others (black over black) give the unoccluded output and are not run. With the
        default occlusion a circle changes the image exactly when a pixel under it differs
        from the baseline, with :func:`occlude_minimum` when one is above the fill value:
        :meth:`BallGrid.touching` finds those circles at once. A hook of another kind is
        applied to every circle and compared.
        """
        if not self.skip_unchanged:
            return torch.arange(len(grid))
        channels = slice(None) if self.channel == -1 else slice(self.channel, self.channel + 1)
        if self.occlude is None:
            changeable = (image[0, channels] != baseline[0, channels]).any(0)
        elif self.occlude is occlude_minimum:
            changeable = (image[0, channels] > (-1.0 if self.normalize else 0.0)).any(0)
        else:
            return changed_items(
                len(grid),
                lambda a, b: (None, self._occluded(grid, image, baseline, torch.arange(a, b))),
                image)
        return grid.touching(changeable.cpu().numpy())

    @staticmethod
    def result(explanation: Explanation) -> HDMResult:
        """The :class:`HDMResult` of an HDM explanation (for ``distances`` and ``circle_map``);
        its ``explanation`` is ``explanation``."""
        if explanation.method != "hdm":
            raise ValueError(f"explanation: expected an HDM explanation, got {explanation.method!r}")
        *depth, height, width = explanation.saliency.shape
        result = HDMResult(explanation.arrays["distances"], explanation.info["baseline_distance"],
                           width, height, explanation.parameters["circle_size"],
                           explanation.parameters["offset"],
                           image_depth=depth[0] if depth else None)
        result.explanation = explanation
        return result
