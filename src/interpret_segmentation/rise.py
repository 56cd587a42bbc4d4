"""RISE with the original library's API (seed 002).

``SegmentationRISE(model, input_size, device)``, ``generate_masks(N, s, p1, savepath)``,
``load_masks(path)`` and ``explainer(image)`` -> :class:`RISEResult` (``max()``, ``mean()``,
``saliencies``), as documented in seed 002. The work is done by the library's
:class:`~interpret_segmentation.methods.rise.RISE` explainer with ``weighting="per_pixel"``;
this class only keeps the original's signatures.
"""

from __future__ import annotations

import numpy as np

from .core import ModelAdapter, Target, as_image_batch, as_mask
from .core.perturb import check_batch_size
from .core.validate import check_positive
from .methods.rise import RISE, RandomMasks, RISEResult, StoredMasks, load_masks

__all__ = ["RISE", "RISEResult", "RandomMasks", "SegmentationRISE", "StoredMasks", "load_masks"]


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
    ``max()`` or ``mean()``. Memory: N x P scores for N masks and P pixels. Images only
    (2-D, as in seed 002); volumes are explained by :class:`RISE`, also per pixel.
    """

    def __init__(self, model, input_size, device, batch_size: int | str = "auto",
                 progress: bool = True):
        if not isinstance(input_size, (tuple, list)) or len(input_size) != 2:
            raise ValueError(f"input_size: expected (height, width) of positive ints, "
                             f"got {input_size!r}")
        self.model = model
        self.input_size = tuple(check_positive(side, f"input_size[{axis}]")
                                for axis, side in enumerate(input_size))
        self.device = ModelAdapter(model, device=device).device  # model and device checked now
        self.batch_size = check_batch_size(batch_size)
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
        if tuple(masks.shape) != self.input_size:
            raise ValueError(f"{path}: masks of size {' x '.join(map(str, masks.shape))}, "
                             f"expected input_size {self.input_size}")
        self.masks = masks
        self.N = len(masks)

    def explainer(self) -> RISE:
        """The per-pixel :class:`RISE` explainer that a call runs, with these masks."""
        if self.masks is None:
            raise RuntimeError("call generate_masks(N, s, p1) or load_masks(path) first")
        return RISE(self.model, weighting="per_pixel", masks=self.masks, device=self.device,
                    batch_size=self.batch_size, progress=self.progress)

    def __call__(self, image, pixels=None) -> RISEResult:
        """Explain ``image`` (H, W), (C, H, W) or (1, C, H, W).

        ``pixels`` (H, W), optional: the output pixels to explain; default those the model
        predicts as foreground (class 1). The result's ``explanation`` is RISE's Explanation.
        """
        explainer = self.explainer()
        if np.ndim(image) == 5 and np.shape(image)[0] == 1:
            raise ValueError(f"image: SegmentationRISE explains 2-D images (seed 002), got "
                             f"shape {tuple(np.shape(image))}; for a volume use RISE(model, "
                             f"weighting='per_pixel') or another weighting")
        batch = as_image_batch(image, spatial_dims=2)
        if tuple(batch.shape[-2:]) != self.input_size:
            raise ValueError(f"image: expected size {self.input_size} (input_size), got shape "
                             f"{tuple(np.shape(image))}")
        target = None if pixels is None else Target(1, as_mask(pixels, self.input_size, "pixels"))
        return explainer.result(explainer.explain(batch, target))

    forward = __call__
