"""Segmentation metrics shared by training, the explainers and the report.

All functions take binary masks (numpy or torch, any dtype; non-zero = inside).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage


def _as_bool_numpy(mask, name: str) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D mask (H, W), got shape {mask.shape}")
    return mask != 0


def dice(prediction, reference, empty_value: float = 1.0) -> float:
    """Dice coefficient 2|A n B| / (|A| + |B|) of two binary masks of the same shape.

    ``empty_value`` (default 1.0) is returned when both masks are empty.
    """
    a = np.asarray(prediction.detach().cpu() if isinstance(prediction, torch.Tensor)
                   else prediction) != 0
    b = np.asarray(reference.detach().cpu() if isinstance(reference, torch.Tensor)
                   else reference) != 0
    if a.shape != b.shape:
        raise ValueError(f"prediction and reference: shapes differ, {a.shape} vs {b.shape}")
    total = a.sum() + b.sum()
    if total == 0:
        return float(empty_value)
    return float(2.0 * np.logical_and(a, b).sum() / total)


def batch_dice(predictions: torch.Tensor, reference: torch.Tensor,
               empty_value: float = 1.0) -> torch.Tensor:
    """Dice of each mask in ``predictions`` (B, H, W) against ``reference`` (H, W) or (B, H, W).

    Returns a float tensor (B,). Both empty gives ``empty_value``.
    """
    predictions = predictions.float().flatten(1)
    reference = reference.float().reshape(-1, predictions.shape[1])
    overlap = (predictions * reference).sum(1)
    total = predictions.sum(1) + reference.sum(1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, 2.0 * overlap / safe, torch.full_like(total, empty_value))


def empty_distance(shape) -> float:
    """The value Hausdorff distances take when exactly one mask is empty: the image diagonal."""
    return math.hypot(shape[-2], shape[-1])


def hausdorff_distance(a, b) -> float:
    """Symmetric Hausdorff distance (Euclidean, in pixels) between two binary masks.

    Equal to ``skimage.metrics.hausdorff_distance(a, b)`` when both masks are non-empty.
    Both empty gives 0.0; exactly one empty gives the image diagonal (see
    :func:`empty_distance`) instead of infinity, so maps and means stay finite.
    """
    a = _as_bool_numpy(a, "a")
    b = _as_bool_numpy(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b: shapes differ, {a.shape} vs {b.shape}")
    return HausdorffToReference(b).distance(a)


class HausdorffToReference:
    """Hausdorff distances from many masks to one fixed reference mask.

    The distance transform of the reference is computed once; each new mask then needs one
    distance transform restricted to the bounding box of both masks, which is exact because
    every nearest point lies inside that box.

    Parameters
    ----------
    reference : array (H, W), binary
    """

    def __init__(self, reference):
        self.reference = _as_bool_numpy(reference, "reference")
        self.empty_value = empty_distance(self.reference.shape)
        self._reference_empty = not self.reference.any()
        if not self._reference_empty:
            # distance of every pixel to the nearest reference pixel
            self._to_reference = ndimage.distance_transform_edt(~self.reference)

    def distance(self, mask) -> float:
        """Symmetric Hausdorff distance between ``mask`` (H, W) and the reference."""
        mask = _as_bool_numpy(mask, "mask")
        if mask.shape != self.reference.shape:
            raise ValueError(
                f"mask: expected shape {self.reference.shape} like the reference, got {mask.shape}"
            )
        mask_empty = not mask.any()
        if mask_empty and self._reference_empty:
            return 0.0
        if mask_empty or self._reference_empty:
            return self.empty_value
        mask_to_reference = self._to_reference[mask].max()
        rows, cols = np.nonzero(mask | self.reference)
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        to_mask = ndimage.distance_transform_edt(~mask[box])
        reference_to_mask = to_mask[self.reference[box]].max()
        return float(max(mask_to_reference, reference_to_mask))


def iou_precision_recall(prediction, reference) -> dict:
    """Intersection over union, precision and recall of a binary prediction (empty -> 1.0)."""
    a = _as_bool_numpy(prediction, "prediction")
    b = _as_bool_numpy(reference, "reference")
    if a.shape != b.shape:
        raise ValueError(f"prediction and reference: shapes differ, {a.shape} vs {b.shape}")
    tp = float(np.logical_and(a, b).sum())
    union = float(np.logical_or(a, b).sum())
    return {
        "iou": tp / union if union else 1.0,
        "precision": tp / a.sum() if a.sum() else 1.0,
        "recall": tp / b.sum() if b.sum() else 1.0,
    }


def normalize_map(saliency) -> np.ndarray:
    """Min-max scale a map to [0, 1] (all zeros when it is constant; NaN counts as the minimum)."""
    saliency = np.nan_to_num(np.asarray(saliency, dtype=np.float64), nan=-np.inf)
    finite = saliency[np.isfinite(saliency)]
    if finite.size == 0:
        return np.zeros(saliency.shape)
    low, high = finite.min(), finite.max()
    saliency = np.where(np.isfinite(saliency), saliency, low)
    return (saliency - low) / (high - low) if high > low else np.zeros(saliency.shape)


def context_ratio(saliency, context, background) -> float:
    """Mean of the [0, 1]-normalised map over ``context`` divided by its mean over ``background``.

    ``context`` and ``background`` are binary masks (H, W): for testnet, the right-hand shape
    and the pixels in no shape. Infinite when the background mean is 0 and the context's is not.
    """
    normalized = normalize_map(saliency)
    context = _as_bool_numpy(context, "context")
    background = _as_bool_numpy(background, "background")
    if not context.any() or not background.any():
        raise ValueError("context and background: both masks need at least one pixel")
    inside, outside = normalized[context].mean(), normalized[background].mean()
    if outside == 0:
        return math.inf if inside > 0 else 0.0
    return float(inside / outside)


def context_hit(saliency, context, background, factor: float = 2.0) -> bool:
    """True when the map's mean over ``context`` is at least ``factor`` (2) times its mean over
    ``background`` (see :func:`context_ratio`): the explanation shows the deciding shape."""
    return context_ratio(saliency, context, background) >= factor
