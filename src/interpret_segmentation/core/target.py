"""What to explain: a class and which output pixels of it count."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .model import as_mask, predicted_mask
from .validate import check_class_index


@dataclass(frozen=True)
class Target:
    """A segmentation target: class ``class_index`` over the pixels in ``region``.

    Parameters
    ----------
    class_index : int, optional
        Class to explain. ``None`` (default) means class 1: the foreground of a one-channel
        model, the first non-background class of a multi-class model.
    region : array (H, W), optional
        Which output pixels count, e.g. a ground-truth mask. ``None`` (default): the pixels
        the model predicts as ``class_index`` on the unperturbed image (its arg-max); for a
        classifier (output (B, K)) the whole image when it predicts the class, else none.
    """

    class_index: int | None = None
    region: np.ndarray | torch.Tensor | None = None


@dataclass(frozen=True)
class ResolvedTarget:
    """A target checked against a model's output: class index and pixel mask (H, W) bool."""

    class_index: int
    pixels: torch.Tensor
    from_prediction: bool


def as_target(target) -> Target:
    """``None``, an int class index or a :class:`Target` -> :class:`Target` (TypeError otherwise)."""
    if target is None:
        return Target()
    if isinstance(target, Target):
        return target
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return Target(class_index=int(target))
    raise TypeError(
        f"target: expected None, an int class index or a Target, got {type(target).__name__}"
    )


def resolve_target(target, probabilities: torch.Tensor) -> ResolvedTarget:
    """Check ``target`` against the model's probabilities (1, K, H, W) on the unperturbed image."""
    target = as_target(target)
    classes = probabilities.shape[1]
    class_index = check_class_index(1 if target.class_index is None else target.class_index,
                                    classes, "target")
    if target.region is None:
        pixels = predicted_mask(probabilities, class_index)[0]
        return ResolvedTarget(class_index, pixels.cpu(), from_prediction=True)
    region = as_mask(target.region, tuple(probabilities.shape[-2:]), "target.region")
    return ResolvedTarget(class_index, region.cpu(), from_prediction=False)
