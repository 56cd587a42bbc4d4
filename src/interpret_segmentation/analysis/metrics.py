"""Segmentation metrics shared by training, the explainers and the report.

All functions take binary masks (numpy or torch, any dtype; non-zero = inside). The overlap
and distance measures (Dice, Hausdorff with voxel spacing, perturbation ratio, Dice explained,
deletion/insertion) take images (H, W) and volumes (D, H, W) alike.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from ..core.baseline import replace, resolve_baseline
from ..core.explanation import normalize_map  # noqa: F401  (one normaliser; metrics users import it here)
from ..core.model import ModelAdapter, as_image_batch
from ..core.perturb import Perturbations
from ..core.validate import as_array, check_class_index, check_per_axis, check_positive


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
    """Dice coefficient 2|A n B| / (|A| + |B|) of two binary masks of the same shape (images,
    volumes, any shape).

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
    """Dice of each mask in ``predictions`` (B, *S) against ``reference`` (*S) or (B, *S).

    Returns a float tensor (B,). Both empty gives ``empty_value``.
    """
    predictions = predictions.float().flatten(1)
    reference = reference.float().reshape(-1, predictions.shape[1])
    overlap = (predictions * reference).sum(1)
    total = predictions.sum(1) + reference.sum(1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, 2.0 * overlap / safe, torch.full_like(total, empty_value))


def _as_spatial(array, name: str) -> np.ndarray:
    """A numpy or torch map (H, W) or volume (D, H, W) as a numpy array (ValueError naming
    ``name`` otherwise)."""
    array = as_array(array, name)
    if array.ndim not in (2, 3):
        raise ValueError(f"{name}: expected a 2-D map (H, W) or a 3-D volume (D, H, W), got "
                         f"shape {array.shape}")
    return array


def empty_distance(shape, spacing=None) -> float:
    """The value Hausdorff distances take when exactly one mask is empty: the diagonal of the
    image (or volume) ``shape`` (H, W) or (D, H, W), in the units of ``spacing`` (default 1
    per axis: pixels)."""
    spacing = (1.0,) * len(shape) if spacing is None else spacing
    return math.sqrt(sum((size * step) ** 2 for size, step in zip(shape, spacing)))


def hausdorff_distance(a, b, spacing=None) -> float:
    """Symmetric Hausdorff distance (Euclidean) between two binary masks (H, W) or (D, H, W).

    Parameters
    ----------
    a, b : arrays of one shape, 2-D or 3-D; non-zero is inside
    spacing : float or sequence of float, optional
        Size of a pixel (voxel) along each axis, e.g. (3.0, 0.8, 0.8) mm for a CT volume; the
        distance is in its units. Default 1 per axis: pixels.

    Equal to ``skimage.metrics.hausdorff_distance(a, b)`` when both masks are non-empty (and
    the spacing is 1). Both empty gives 0.0; exactly one empty gives the diagonal of the image
    in the same units (see :func:`empty_distance`) instead of infinity, so maps and means stay
    finite.
    """
    a = _as_spatial(a, "a") != 0
    b = _as_spatial(b, "b") != 0
    _check_same_shape(a, b, "a and b")
    return HausdorffToReference(b, spacing).distance(a)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box (one slice per axis) holding every True of a non-empty ``mask``."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=others))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


class HausdorffToReference:
    """Hausdorff distances from many masks to one fixed reference mask (2-D or 3-D).

    The distance transform of the reference is computed once (with the voxel ``spacing``);
    each new mask then needs the distances of the reference pixels it misses to itself (none
    when it holds the whole reference). :meth:`distance` takes one mask on the CPU (scipy: a
    distance transform of a box around the missed pixels, grown until it is exact);
    :meth:`distances` takes a batch of masks where they are, and on a GPU computes them there
    (:func:`squared_distance_transform`), with one transfer of B numbers per batch.

    Parameters
    ----------
    reference : array (H, W) or (D, H, W), binary
    spacing : float or sequence of float, optional
        Pixel (voxel) size along each axis; default 1 per axis. Distances are in its units.
    """

    def __init__(self, reference, spacing=None):
        self.reference = _as_spatial(reference, "reference") != 0
        self.spacing = (None if spacing is None
                        else check_per_axis(spacing, "spacing", self.reference.ndim, float))
        self.empty_value = empty_distance(self.reference.shape, self.spacing)
        self._reference_empty = not self.reference.any()
        if not self._reference_empty:
            # distance of every pixel to the nearest reference pixel
            self._to_reference = ndimage.distance_transform_edt(~self.reference,
                                                                sampling=self.spacing)
        self._on_device: dict = {}

    def distance(self, mask) -> float:
        """Symmetric Hausdorff distance between ``mask`` (the reference's shape) and the
        reference."""
        mask = _as_spatial(mask, "mask") != 0
        if mask.shape != self.reference.shape:
            raise ValueError(
                f"mask: expected shape {self.reference.shape} like the reference, got {mask.shape}"
            )
        mask_empty = not mask.any()
        if mask_empty and self._reference_empty:
            return 0.0
        if mask_empty or self._reference_empty:
            return self.empty_value
        mask_to_reference = float(self._to_reference[mask].max())
        missing = self.reference & ~mask  # the reference pixels at a distance from the mask
        if not missing.any():
            return mask_to_reference
        return max(mask_to_reference, self._farthest_from(mask, missing))

    def _farthest_from(self, mask: np.ndarray, missing: np.ndarray) -> float:
        """The largest distance from a ``missing`` pixel to the nearest ``mask`` pixel.

        A distance transform of the box around the missing pixels grown by r pixels, r = 1,
        2, 4, ...: once every missing pixel has a mask pixel within r pixels' length inside
        the box, no pixel outside the box can be nearer, so the result is exact. An occluder
        that dents the segment is measured in a box little larger than the dent.
        """
        missing_box = _bounding_box(missing)
        step = 1.0 if self.spacing is None else min(self.spacing)
        grow = 1
        while True:
            box = tuple(slice(max(cut.start - grow, 0), min(cut.stop + grow, side))
                        for cut, side in zip(missing_box, mask.shape))
            whole = all(cut.stop - cut.start == side for cut, side in zip(box, mask.shape))
            inside = mask[box]
            if inside.any():
                to_mask = ndimage.distance_transform_edt(~inside, sampling=self.spacing)
                farthest = float(to_mask[missing[box]].max())
                if whole or farthest <= grow * step:
                    return farthest
            grow *= 2

    def distances(self, masks: torch.Tensor, on_device: bool | None = None) -> np.ndarray:
        """Hausdorff distances (B,) float64 of masks (B, *S) bool to the reference.

        ``on_device`` None (default): computed where the masks are when that is a GPU (the
        same numbers as :meth:`distance` up to float64 rounding), one by one with
        :meth:`distance` on the CPU. True or False forces the one or the other.
        """
        if tuple(masks.shape[1:]) != self.reference.shape:
            raise ValueError(f"masks: expected (B, *{self.reference.shape}), got "
                             f"{tuple(masks.shape)}")
        if on_device is None:
            on_device = masks.device.type != "cpu"
        if not on_device:
            return np.array([self.distance(mask) for mask in masks.cpu().numpy()],
                            dtype=np.float64)
        return self._device_distances(masks.bool())

    def _reference_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference (*S) bool and its squared distance transform (*S) float64 on
        ``device``, sent there once."""
        if device not in self._on_device:
            reference = torch.from_numpy(self.reference).to(device)
            squared = torch.from_numpy(self._to_reference ** 2 if not self._reference_empty
                                       else np.zeros(self.reference.shape)).to(device)
            self._on_device[device] = reference, squared
        return self._on_device[device]

    def _device_distances(self, masks: torch.Tensor) -> np.ndarray:
        reference, to_reference = self._reference_on(masks.device)
        flat = masks.flatten(1)
        empty = ~flat.any(1)
        squared = torch.where(masks, to_reference, 0.0).flatten(1).amax(1)
        missing = reference & ~masks
        needed = (missing.flatten(1).any(1) & ~empty).nonzero().squeeze(1)
        if len(needed):
            to_masks = squared_distance_transform(masks[needed], self.spacing)
            farthest = torch.where(missing[needed], to_masks, 0.0).flatten(1).amax(1)
            squared[needed] = torch.maximum(squared[needed], farthest)
        result = torch.sqrt(squared).cpu().numpy()
        empty = empty.cpu().numpy()
        if self._reference_empty:
            return np.where(empty, 0.0, self.empty_value)
        return np.where(empty, self.empty_value, result)


def squared_distance_transform(masks: torch.Tensor, spacing=None,
                               chunk_elements: int = 2**24) -> torch.Tensor:
    """Squared Euclidean distance from every pixel (voxel) to the nearest True one of its mask.

    Exact and separable: one minimum over each axis in turn (``min_y g(y) + s^2 (x - y)^2``
    along every line), in float64 where the masks are, so that a GPU computes a batch at once.
    Costs O(V x side) per mask; memory O(B x V) plus ``chunk_elements`` float64 (128 MiB) for
    the lines processed at once.

    Parameters
    ----------
    masks : Tensor (B, *S) bool
    spacing : sequence of float, optional
        Pixel size along each spatial axis; default 1.

    Returns
    -------
    Tensor (B, *S) float64; inf everywhere for an empty mask.
    """
    dims = masks.ndim - 1
    spacing = (1.0,) * dims if spacing is None else tuple(spacing)
    squared = torch.where(masks, 0.0, torch.inf).to(torch.float64)
    for axis, step in zip(range(1, masks.ndim), spacing):
        moved = squared.movedim(axis, -1)
        side = moved.shape[-1]
        lines = moved.reshape(-1, side)
        steps = torch.arange(side, device=masks.device, dtype=torch.float64)
        offsets = (steps[:, None] - steps[None, :]) ** 2 * step ** 2  # (out, in)
        result = torch.empty_like(lines)
        per_chunk = max(1, chunk_elements // (side * side))
        for start in range(0, len(lines), per_chunk):
            part = lines[start:start + per_chunk]
            result[start:start + per_chunk] = (part[:, None, :] + offsets).amin(-1)
        squared = result.reshape(moved.shape).movedim(-1, axis)
    return squared


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

    ``kept`` (H, W) or (D, H, W): a binary or continuous map (MiSuRe's mask); ``prediction``
    of the same shape, binary. Below 1 means fewer pixels than the object itself suffice.
    Raises ValueError when the prediction is empty (there is nothing to relate to).
    """
    kept = _as_spatial(kept, "kept")
    prediction = _as_spatial(prediction, "prediction") != 0
    _check_same_shape(kept, prediction, "kept and prediction")
    if not prediction.any():
        raise ValueError("prediction: expected a predicted object (the ratio is per pixel of "
                         "it), got an empty mask")
    return float(np.count_nonzero(kept) / prediction.sum())


def _image_and_map(adapter: ModelAdapter, image, spatial_map, name: str):
    """``image`` as a batch (1, C, *S) on the model's device and ``spatial_map`` (*S) as a numpy
    array, checked against each other: the map's dimensions say whether the image is a volume."""
    spatial_map = _as_spatial(spatial_map, name)
    batch = as_image_batch(image, "image", spatial_dims=spatial_map.ndim).to(adapter.device)
    if tuple(spatial_map.shape) != tuple(batch.shape[2:]):
        raise ValueError(f"{name}: expected the image's size {tuple(batch.shape[2:])}, got "
                         f"{spatial_map.shape}")
    return batch, spatial_map


def dice_explained(model, image, kept, class_index: int = 1, baseline=0.0) -> float:
    """Dice between the class's segment on the image with only ``kept`` left and on ``image``.

    Parameters
    ----------
    model : nn.Module or ModelAdapter
    image : array or tensor (H, W), (C, H, W) or (1, C, H, W); for a volume (D, H, W),
        (C, D, H, W) or (1, C, D, H, W)
    kept : array (H, W) or (D, H, W)
        What the explanation keeps: a binarised map, or a continuous mask in [0, 1]. A 3-D
        ``kept`` makes the image a volume.
    class_index : int, default 1
        One of the model's classes; negative indices are refused.
    baseline : float, str or array, default 0.0
        What the pixels outside ``kept`` become (see
        :func:`~interpret_segmentation.core.baseline.resolve_baseline`): the image is
        ``image * kept + baseline * (1 - kept)``; the default 0 is seed 001's
        ``image * kept``.

    The class's segment is the model's one definition (arg-max for softmax classes,
    probability above 0.5 for a one-channel or sigmoid output). Returns 1.0 when both segments
    are empty. Raises :class:`~interpret_segmentation.core.ClassIndexError` (an IndexError)
    for a class index out of range.
    """
    adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
    batch, kept = _image_and_map(adapter, image, kept, "kept")
    keep = torch.as_tensor(kept, device=adapter.device).to(batch.dtype)[None, None]
    original = adapter.first_pass(batch)
    class_index = check_class_index(class_index, original.shape[1])
    with torch.no_grad():
        explained = adapter(replace(batch, keep, resolve_baseline(baseline, batch)),
                            where="on the image with only kept left")
    return dice(adapter.segment(explained, class_index)[0],
                adapter.segment(original, class_index)[0])


def deletion_insertion(model, image, saliency, class_index: int = 1, steps: int = 20,
                       batch_size="auto", progress: bool = False, baseline=0.0) -> dict:
    """Deletion and insertion curves of a saliency map (seed 001, section 2.3).

    Pixels (voxels) are ranked by saliency (highest first). Deletion sets the top fraction of
    them to the ``baseline`` in ``image``; insertion starts from the baseline and puts the top
    fraction of the image back. At each of ``steps + 1`` fractions 0, 1/steps, ..., 1 the
    class's segment is compared (Dice) with its segment on ``image``. A faithful map makes the
    deletion curve fall early (low area) and the insertion curve rise early (high area).

    Parameters
    ----------
    model : nn.Module or ModelAdapter
    image : array or tensor, as for :func:`dice_explained`
    saliency : array (H, W) or (D, H, W)
        The map (a 3-D map makes the image a volume); NaN ranks last.
    class_index : int, default 1
    steps : int, default 20
    batch_size : int or "auto", default "auto"
        Perturbed images per model pass; memory O(batch x image).
    progress : bool, default False
    baseline : float, str or array, default 0.0
        What deleted (not yet inserted) pixels are (see
        :func:`~interpret_segmentation.core.baseline.resolve_baseline`); 0, the default, is
        seed 001's black image.

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
    batch, saliency = _image_and_map(adapter, image, saliency, "saliency")
    shape, size = saliency.shape, saliency.size
    order = torch.from_numpy(np.argsort(-np.nan_to_num(saliency.ravel(), nan=-np.inf),
                                        kind="stable")).to(adapter.device)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=adapter.device)
    rank = rank.reshape(shape)
    counts = [round(k * size / steps) for k in range(steps + 1)]
    probabilities = adapter.first_pass(batch)
    class_index = check_class_index(class_index, probabilities.shape[1])
    reference = adapter.segment(probabilities, class_index)[0]
    fill = resolve_baseline(baseline, batch)

    def make(start: int, stop: int) -> tuple[slice, torch.Tensor]:
        keeps = []
        for item in range(start, stop):
            top = rank < counts[item % (steps + 1)]  # the highest-ranked pixels
            keeps.append(~top if item <= steps else top)  # deletion first, then insertion
        keep = torch.stack(keeps)[:, None].to(batch.dtype)
        return slice(start, stop), replace(batch, keep, fill)

    scores = np.empty(2 * (steps + 1))
    for items, probabilities in Perturbations(adapter, 2 * (steps + 1), make,
                                              batch_size=batch_size, progress=progress,
                                              description="deletion/insertion"):
        scores[items] = batch_dice(adapter.segment(probabilities, class_index).flatten(1),
                                   reference.flatten()).cpu().numpy()
    fractions = np.array(counts) / size
    deletion, insertion = scores[:steps + 1], scores[steps + 1:]
    return {"fractions": fractions, "deletion": deletion, "insertion": insertion,
            "deletion_auc": _trapezoid(deletion, fractions),
            "insertion_auc": _trapezoid(insertion, fractions)}


def _trapezoid(values: np.ndarray, positions: np.ndarray) -> float:
    return float(((values[1:] + values[:-1]) / 2 * np.diff(positions)).sum())
