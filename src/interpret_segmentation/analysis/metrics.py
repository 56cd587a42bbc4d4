"""Segmentation metrics shared by training, the explainers and the report.

All functions take binary masks (numpy or torch, any dtype; non-zero = inside).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from ..core.explanation import normalize_map  # noqa: F401  (one normaliser; metrics users import it here)
from ..core.model import ModelAdapter, as_image_batch, predicted_mask
from ..core.perturb import Perturbations
from ..core.validate import as_array, check_class_index, check_positive


def _as_numpy(array, name: str) -> np.ndarray:
    """A numpy or torch map (H, W) as a numpy array (ValueError naming ``name`` otherwise)."""
    return as_array(array, name, ndim=2, expected="a 2-D map (H, W)")


def _as_bool_numpy(mask, name: str) -> np.ndarray:
    return _as_numpy(mask, name) != 0


def _check_same_shape(first: np.ndarray, second: np.ndarray, names: str) -> None:
    """ValueError unless the arrays named ``names`` ("a and b") have one shape."""
    if first.shape != second.shape:
        name, other = names.split(" and ")
        raise ValueError(f"{other}: expected the shape of {name} {first.shape}, got "
                         f"{second.shape}")


def dice(prediction, reference, empty_value: float = 1.0) -> float:
    """Dice coefficient 2|A n B| / (|A| + |B|) of two binary masks of the same shape.

    ``empty_value`` (default 1.0) is returned when both masks are empty.
    """
    a = as_array(prediction, "prediction") != 0
    b = as_array(reference, "reference") != 0
    _check_same_shape(a, b, "prediction and reference")
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
    _check_same_shape(a, b, "a and b")
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
    _check_same_shape(a, b, "prediction and reference")
    tp = float(np.logical_and(a, b).sum())
    union = float(np.logical_or(a, b).sum())
    return {
        "iou": tp / union if union else 1.0,
        "precision": tp / a.sum() if a.sum() else 1.0,
        "recall": tp / b.sum() if b.sum() else 1.0,
    }


def classification_scores(predictions, labels, positive: int = 1) -> dict:
    """Balanced accuracy, TPR and TNR of predicted class indices against true labels.

    Parameters
    ----------
    predictions, labels : array-like of int, shape (N,)
    positive : int, default 1
        The class counted as positive (seed 003: "damaged").

    Returns
    -------
    dict
        ``balanced_accuracy`` (mean over the classes present in ``labels`` of the share of
        their samples predicted right; (TPR + TNR) / 2 for two classes), ``tpr`` (share of
        positive samples predicted positive) and ``tnr`` (share of the other samples predicted
        as not positive). A rate with no sample to count is NaN.
    """
    predicted, truth = (np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v,
                                   dtype=np.int64).ravel() for v in (predictions, labels))
    if predicted.shape != truth.shape:
        raise ValueError(f"predictions and labels: expected the same number of items, got "
                         f"{predicted.size} and {truth.size}")
    if truth.size == 0:
        raise ValueError("labels: expected at least one item, got none")

    def share(selected: np.ndarray, right: np.ndarray) -> float:
        return float(right[selected].mean()) if selected.any() else float("nan")

    recalls = [share(truth == c, predicted == c) for c in np.unique(truth)]
    return {"balanced_accuracy": float(np.mean(recalls)),
            "tpr": share(truth == positive, predicted == positive),
            "tnr": share(truth != positive, predicted != positive)}


def context_ratio(saliency, context, background) -> float:
    """Mean of the [0, 1]-normalised map over ``context`` divided by its mean over ``background``.

    ``context`` and ``background`` are binary masks (H, W): for testnet, the right-hand shape
    and the pixels in no shape. Infinite when the background mean is 0 and the context's is not.
    """
    normalized = normalize_map(saliency)
    context = _as_bool_numpy(context, "context")
    background = _as_bool_numpy(background, "background")
    for name, mask in (("context", context), ("background", background)):
        if not mask.any():
            raise ValueError(f"{name}: expected a mask of at least one pixel, got an empty one")
    inside, outside = normalized[context].mean(), normalized[background].mean()
    if outside == 0:
        return math.inf if inside > 0 else 0.0
    return float(inside / outside)


def context_hit(saliency, context, background, factor: float = 2.0) -> bool:
    """True when the map's mean over ``context`` is at least ``factor`` (2) times its mean over
    ``background`` (see :func:`context_ratio`): the explanation shows the deciding shape."""
    return context_ratio(saliency, context, background) >= factor


# ---------------------------------------------------------------------------------------------
# evaluating saliency maps (seed 001, sections 2.3 and 3.4)


def binarize(saliency, threshold: float) -> np.ndarray:
    """The pixels where the map, min-max normalised to [0, 1], is above ``threshold``.

    Returns a bool array (H, W). ``threshold`` must lie in [0, 1).
    """
    from ..core.validate import check_number

    threshold = check_number(threshold, "threshold", 0, 1, open_high=True)
    return normalize_map(saliency) > threshold


def perturbation_ratio(kept, prediction) -> float:
    """Pixels the explanation keeps (non-zero in ``kept``) per pixel of the predicted object.

    ``kept`` (H, W): a binary or continuous map (MiSuRe's mask); ``prediction`` (H, W) binary.
    Below 1 means fewer pixels than the object itself suffice. Raises ValueError when the
    prediction is empty (there is nothing to relate to).
    """
    kept = _as_numpy(kept, "kept")
    prediction = _as_bool_numpy(prediction, "prediction")
    _check_same_shape(kept, prediction, "kept and prediction")
    if not prediction.any():
        raise ValueError("prediction: expected a predicted object (the ratio is per pixel of "
                         "it), got an empty mask")
    return float(np.count_nonzero(kept) / prediction.sum())


def dice_explained(model, image, kept, class_index: int = 1) -> float:
    """Dice between the class's prediction on ``image * kept`` and on ``image``.

    Parameters
    ----------
    model : nn.Module or ModelAdapter
    image : array or tensor (H, W), (C, H, W) or (1, C, H, W)
    kept : array (H, W)
        What the explanation keeps: a binarised map, or a continuous mask in [0, 1].
    class_index : int, default 1
        One of the model's classes; negative indices are refused.

    Returns 1.0 when both predictions are empty. Raises
    :class:`~interpret_segmentation.core.ClassIndexError` (an IndexError) for a class index
    out of range.
    """
    adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
    batch = as_image_batch(image).to(adapter.device)
    kept = torch.as_tensor(_as_numpy(kept, "kept"), dtype=torch.float32, device=adapter.device)
    if tuple(kept.shape) != tuple(batch.shape[-2:]):
        raise ValueError(f"kept: expected the image's size {tuple(batch.shape[-2:])}, got "
                         f"{tuple(kept.shape)}")
    original = adapter.first_pass(batch)
    class_index = check_class_index(class_index, original.shape[1])
    with torch.no_grad():
        explained = adapter(batch * kept, where="on the image times kept")
    return dice(predicted_mask(explained, class_index)[0],
                predicted_mask(original, class_index)[0])


def deletion_insertion(model, image, saliency, class_index: int = 1, steps: int = 20,
                       batch_size="auto", progress: bool = False) -> dict:
    """Deletion and insertion curves of a saliency map (seed 001, section 2.3).

    Pixels are ranked by saliency (highest first). Deletion sets the top fraction of them to 0
    in ``image``; insertion starts from a black image and puts the top fraction back. At each
    of ``steps + 1`` fractions 0, 1/steps, ..., 1 the class's prediction is compared (Dice)
    with its prediction on ``image``. A faithful map makes the deletion curve fall early (low
    area) and the insertion curve rise early (high area).

    Returns
    -------
    dict
        ``fractions`` (steps + 1,), ``deletion`` and ``insertion`` Dice values, and their areas
        ``deletion_auc`` and ``insertion_auc`` (trapezoid rule over the fractions).

    Raises
    ------
    ClassIndexError
        (an IndexError) when ``class_index`` is negative or not one of the model's classes.
    """
    steps = check_positive(steps, "steps")
    adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
    batch = as_image_batch(image).to(adapter.device)
    height, width = batch.shape[-2:]
    saliency = _as_numpy(saliency, "saliency")
    if saliency.shape != (height, width):
        raise ValueError(f"saliency: expected the image's size {(height, width)}, got "
                         f"{saliency.shape}")
    order = torch.from_numpy(np.argsort(-np.nan_to_num(saliency.ravel(), nan=-np.inf),
                                        kind="stable")).to(adapter.device)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=adapter.device)
    rank = rank.reshape(height, width)
    counts = [round(k * height * width / steps) for k in range(steps + 1)]
    probabilities = adapter.first_pass(batch)
    class_index = check_class_index(class_index, probabilities.shape[1])
    reference = predicted_mask(probabilities, class_index)[0]

    def make(start: int, stop: int) -> tuple[slice, torch.Tensor]:
        inputs = []
        for item in range(start, stop):
            top = rank < counts[item % (steps + 1)]  # the highest-ranked pixels
            keep = ~top if item <= steps else top  # deletion first, then insertion
            inputs.append(batch[0] * keep)
        return slice(start, stop), torch.stack(inputs)

    scores = np.empty(2 * (steps + 1))
    for items, probabilities in Perturbations(adapter, 2 * (steps + 1), make,
                                              batch_size=batch_size, progress=progress,
                                              description="deletion/insertion"):
        scores[items] = batch_dice(predicted_mask(probabilities, class_index).flatten(1),
                                   reference.flatten()).cpu().numpy()
    fractions = np.array(counts) / (height * width)
    deletion, insertion = scores[:steps + 1], scores[steps + 1:]
    return {"fractions": fractions, "deletion": deletion, "insertion": insertion,
            "deletion_auc": _trapezoid(deletion, fractions),
            "insertion_auc": _trapezoid(insertion, fractions)}


def _trapezoid(values: np.ndarray, positions: np.ndarray) -> float:
    return float(((values[1:] + values[:-1]) / 2 * np.diff(positions)).sum())
