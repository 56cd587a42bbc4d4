"""What to explain: a class and which output pixels of it count."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .model import as_mask, predicted_mask
from .validate import check_class_index


@dataclass(frozen=True)
class Target:
    """A segmentation target: class ``class_index`` over the pixels (voxels) in ``region``.

    Parameters
    ----------
    class_index : int, optional
        Class to explain. ``None`` (default) means class 1: the foreground of a one-channel
        model, the first non-background class of a multi-class model.
    region : array (*S), i.e. (H, W) or (D, H, W), optional
        Which output pixels count, e.g. a ground-truth mask. ``None`` (default): the class's
        segment on the unperturbed image (:meth:`ModelAdapter.segment`: its arg-max for softmax
        classes, ``p > 0.5`` for sigmoid labels); for a classifier (output (B, K)) the whole
        image when it predicts the class, else none.
    """

    class_index: int | None = None
    region: np.ndarray | torch.Tensor | None = None


@dataclass(frozen=True)
class ResolvedTarget:
    """A target checked against a model's output: class index and pixel mask (*S) bool."""

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


def resolve_target(target, probabilities: torch.Tensor,
                   segment: Callable[[torch.Tensor, int], torch.Tensor] | None = None) -> ResolvedTarget:
    """Check ``target`` against the model's probabilities (1, K, *S) on the unperturbed image.

    Parameters
    ----------
    target : None, int or Target
    probabilities : Tensor (1, K, *S)
    segment : callable (probabilities (B, K, *S), class_index) -> bool (B, *S), optional
        The definition of a class's segment, normally :meth:`ModelAdapter.segment`; default
        :func:`predicted_mask` (the arg-max of softmax classes).

    Returns
    -------
    ResolvedTarget with ``pixels`` (*S) bool on the CPU.

    An empty target (the class is predicted nowhere, or the region given is empty) is not an
    error: the methods still run, but a UserWarning naming the class says their maps may well
    be all zero.
    """
    target = as_target(target)
    classes = probabilities.shape[1]
    class_index = check_class_index(1 if target.class_index is None else target.class_index,
                                    classes, "target")
    if target.region is None:
        pixels = (segment or predicted_mask)(probabilities, class_index)[0].cpu()
        if not pixels.any():
            warnings.warn(f"target: class {class_index} is predicted nowhere in the image (its "
                          "segment is empty), so there is nothing to explain and the map may be "
                          "all zero; choose a class the model predicts, or give "
                          f"Target({class_index}, region=...)", UserWarning, stacklevel=4)
        return ResolvedTarget(class_index, pixels, from_prediction=True)
    region = as_mask(target.region, tuple(probabilities.shape[2:]), "target.region").cpu()
    if not region.any():
        warnings.warn(f"target.region: the region given for class {class_index} is empty, so "
                      "there is nothing to explain and the map may be all zero", UserWarning,
                      stacklevel=4)
    return ResolvedTarget(class_index, region, from_prediction=False)
