"""Hausdorff Distance Masks with the original library's API (seed 002).

``HausdorffDistanceMasks(width, height)``, ``generate_masks`` and
``explain(model, image, segment, device)`` -> :class:`HDMResult`, as documented in seed 002.
The work is done by the library's :class:`~interpret_segmentation.methods.hdm.HDM`
explainer; this class only keeps the original's signatures and its overridable steps.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .analysis.metrics import HausdorffToReference
from .core import Target, as_image_batch, as_mask
from .core.perturb import check_batch_size
from .core.validate import check_number, check_positive
from .methods.hdm import (
    BETTER_ONLY,
    HDM,
    RAW,
    RESULT_TYPES,
    WORSE_ONLY,
    BallGrid,
    CircleGrid,
    HDMResult,
    occlude_minimum,
)

__all__ = ["BETTER_ONLY", "HDM", "RAW", "RESULT_TYPES", "WORSE_ONLY", "BallGrid", "CircleGrid",
           "HDMResult", "HausdorffDistanceMasks", "occlude_minimum"]

HIDDEN_WARNING_SHARE = 0.25
"""Share of the occluded pixels below the circles' fill value above which
:meth:`HausdorffDistanceMasks.explain` warns that its occlusion leaves them as they are."""


class HausdorffDistanceMasks:
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

    A subclass may override :meth:`apply_mask` and :meth:`calculate_distance`; they are
    handed to :class:`HDM` as its ``occlude`` and ``distance`` steps.

    Occlusion is the original's ``min(image, fill)`` with fill 0 (-1 with ``normalize``):
    pixels already below the fill value are never hidden, so :meth:`explain` warns when more
    than a quarter of the occluded pixels are (a z-scored or [-1, 1] image). ``HDM(model,
    baseline=...)`` replaces the pixels under each circle instead. Images only (2-D); for a
    volume use :class:`HDM`.
    """

    def __init__(self, image_width, image_height, threshold: float = 0.5,
                 batch_size: int | str = "auto", progress: bool = True,
                 skip_unchanged: bool = True):
        self.width = check_positive(image_width, "image_width")
        self.height = check_positive(image_height, "image_height")
        self.threshold = check_number(threshold, "threshold", 0, 1, open_high=True)
        self.batch_size = check_batch_size(batch_size)
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

    def apply_mask(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Occlude ``image`` with ``mask``; override to occlude differently.

        Called once per batch with ``image`` (1, C, H, W) (or one channel of it) and ``mask``
        (B, 1, H, W), 1 outside the circle and its fill value inside; must return
        (B, C, H, W). The default (:func:`~interpret_segmentation.methods.hdm.occlude_minimum`)
        takes the minimum of image and mask inside the circle, like the original's
        ``torch.min(image, mask)``, and leaves the other pixels as they are (also those below
        the fill value, which it cannot hide).
        """
        return occlude_minimum(image, mask)

    def calculate_distance(self, output: np.ndarray, segment: np.ndarray) -> float:
        """Distance between one model output and the segment; override to measure differently.

        ``output`` is the class probability map (H, W) of one occluded image, ``segment`` the
        segment (H, W). The default is the symmetric Hausdorff distance between
        ``output > threshold`` and ``segment``; the library computes it in a faster shared
        way unless a subclass replaces this method.
        """
        return HausdorffToReference(segment).distance(output > self.threshold)

    def explainer(self, model, device=None, channel: int = -1) -> HDM:
        """The :class:`HDM` explainer that :meth:`explain` runs: these circles and settings,
        the original's occlusion (:func:`~interpret_segmentation.methods.hdm.occlude_minimum`,
        whose unchanged circles HDM finds at once) and ``probability > threshold``, with
        :meth:`apply_mask` and :meth:`calculate_distance` where a subclass overrides them
        (otherwise HDM's faster Hausdorff distance)."""
        if self.grid is None:
            raise RuntimeError("call generate_masks(circle_size, offset) before explain")
        steps = {"occlude": occlude_minimum}
        steps.update({name: getattr(self, method) for name, method in
                      (("occlude", "apply_mask"), ("distance", "calculate_distance"))
                      if self._overrides(method)})
        return HDM(model, circle_size=self.circle_size, offset=self.offset,
                   threshold=self.threshold, normalize=self.normalize, channel=channel,
                   skip_unchanged=self.skip_unchanged, device=device,
                   batch_size=self.batch_size, progress=self.progress, **steps)

    def _overrides(self, method: str) -> bool:
        return getattr(type(self), method) is not getattr(HausdorffDistanceMasks, method)

    def explain(self, model, image, segment, device, channel=-1) -> HDMResult:
        """Explain one image (H, W) or (C, H, W) and its ground-truth ``segment`` (H, W).

        ``model`` must be on ``device``; it returns one channel (foreground) or several
        (class 1 is explained). ``channel``: the input channel to occlude, -1 for all.
        Returns an :class:`HDMResult`, whose ``explanation`` is HDM's Explanation.
        """
        explainer = self.explainer(model, device, channel)
        if np.ndim(image) == 5 and np.shape(image)[0] == 1:
            raise ValueError(f"image: HausdorffDistanceMasks explains 2-D images (seed 002), "
                             f"got shape {tuple(np.shape(image))}; for a volume use "
                             f"HDM(model, circle_size=..., offset=...)")
        batch = as_image_batch(image, spatial_dims=2)
        if tuple(batch.shape[-2:]) != (self.height, self.width):
            raise ValueError(
                f"image: expected height x width {self.height} x {self.width} as given to "
                f"HausdorffDistanceMasks, got shape {tuple(np.shape(image))}")
        region = as_mask(segment, (self.height, self.width), "segment")
        if not self._overrides("apply_mask"):
            self._warn_if_not_hidden(batch, explainer.channel)
        return HDM.result(explainer.explain(batch, Target(1, region)))

    def _warn_if_not_hidden(self, batch: torch.Tensor, channel: int) -> None:
        """Warn when more than :data:`HIDDEN_WARNING_SHARE` of the occluded pixels lie below
        the fill value: ``min(image, fill)`` leaves them as they are."""
        fill = -1.0 if self.normalize else 0.0
        occluded = batch if channel == -1 else batch[:, channel:channel + 1]
        share = float((occluded < fill).float().mean())
        if share > HIDDEN_WARNING_SHARE:
            warnings.warn(
                f"image: {share:.0%} of the occluded pixels lie below the circles' fill value "
                f"{fill:g} (normalize={self.normalize}), and HausdorffDistanceMasks' occluder "
                f"min(image, {fill:g}) never hides them; pass normalize=True for images in "
                f"[-1, 1], override apply_mask, or use HDM(model, baseline=...), which replaces "
                f"the pixels under each circle", UserWarning, stacklevel=3)
