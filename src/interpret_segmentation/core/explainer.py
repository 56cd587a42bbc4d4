"""The base class of every explainer: ``explain(image, target)`` and ``explain_batch``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .baseline import check_baseline, resolve_baseline
from .explanation import Explanation
from .folding import explanation_mode
from .model import ModelAdapter, as_image_batch, check_spatial_dims
from .perturb import Make, Perturbations, check_batch_size
from .target import ResolvedTarget, resolve_target
from .validate import ArgumentTypeError, check_positive, is_number


@dataclass(frozen=True)
class Item:
    """One thing to explain, checked.

    Attributes
    ----------
    image : Tensor (1, C, *S) float32
        On the model's device; S = (H, W) or (D, H, W).
    target : ResolvedTarget
        Class and ``pixels`` (*S) bool (on the CPU).
    probabilities : Tensor (1, K, *S) float32
        The model's on the unperturbed image.
    baseline : Tensor (1, C, *S)
        What removed pixels take (:func:`~interpret_segmentation.core.baseline.
        resolve_baseline`), same dtype and device as ``image``; default zeros.
    spacing : tuple of float
        Size of a pixel (voxel) along each spatial axis; default 1.0 each.
    """

    image: torch.Tensor
    target: ResolvedTarget
    probabilities: torch.Tensor
    baseline: torch.Tensor | None = None
    spacing: tuple[float, ...] = ()

    def __post_init__(self):
        if self.baseline is None:
            object.__setattr__(self, "baseline", torch.zeros_like(self.image))
        if not self.spacing:
            object.__setattr__(self, "spacing", (1.0,) * (self.image.ndim - 2))

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """S: (H, W) or (D, H, W)."""
        return tuple(self.image.shape[2:])


def check_spacing(spacing, spatial_dims: int | None = None,
                  name: str = "spacing") -> tuple[float, ...] | None:
    """``spacing`` as a tuple of positive floats (None stays None: 1.0 per axis).

    A single number is the same size along every axis and is returned as a 1-tuple; a
    sequence needs 2 or 3 sizes, ``spatial_dims`` of them when that is given.
    """
    if spacing is None:
        return None
    if isinstance(spacing, (np.ndarray, torch.Tensor)) and spacing.ndim == 0:
        spacing = spacing.item()
    if is_number(spacing):
        return (check_positive(spacing, name, float),)
    if isinstance(spacing, (str, bytes)) or not hasattr(spacing, "__len__"):
        raise ArgumentTypeError(f"{name}: expected None, a positive number or one positive "
                                f"number per spatial axis, got {type(spacing).__name__}")
    values = list(spacing.tolist() if hasattr(spacing, "tolist") else spacing)
    allowed = (spatial_dims,) if spatial_dims is not None else (2, 3)
    if len(values) not in allowed:
        raise ValueError(f"{name}: expected {' or '.join(map(str, allowed))} voxel sizes (one per "
                         f"spatial axis), got {len(values)}")
    return tuple(check_positive(value, name, float) for value in values)


class Explainer:
    """Template for all methods: validate, resolve the target, run the method, time it.

    Parameters
    ----------
    model : nn.Module or callable
        Any segmentation model (see :class:`ModelAdapter` for the outputs understood); a
        callable that is no module suits the black-box methods.
    spatial_dims : {None, 2, 3}, default None
        How arrays are read (:func:`~interpret_segmentation.core.model.as_image_batch`): None
        decides from the array (a 5-D array is a volume), 3 reads (C, D, H, W) and (D, H, W)
        as volumes.
    spacing : float or sequence of float, optional
        Size of a pixel (voxel) along each spatial axis, e.g. (3.0, 0.8, 0.8) mm; default 1.0
        each. Methods that measure distances use it.
    baseline : number, "min", "mean", "blur", ("blur", sigma) or array, default 0.0
        What removed pixels take in perturbation methods (:mod:`~interpret_segmentation.core.
        baseline`); resolved per image into ``Item.baseline``.
    output : {"auto", "logits", "probabilities"}, default "auto"
    activation : {"auto", "softmax", "sigmoid"}, default "auto"
        Softmax classes, or independent sigmoid labels (multi-label heads); see
        :class:`ModelAdapter`.
    read : str or callable, optional
        Where the main output is in what the model returns (a key, or a function).
    device : torch.device or str, optional
        Default: the model's device. One this machine lacks is refused (ValueError).
    batch_size : int or "auto", default "auto"
        Inputs per model pass (perturbations, dilation steps, ...); results do not depend on it.
    progress : bool, default True
        Show a progress bar on stderr for long work.
    fold_batchnorm : bool, default True
        While explaining, fold eval-mode BatchNorm layers into the convolution before them
        (:func:`~interpret_segmentation.core.folding.folded_batchnorm`): the same outputs up
        to float rounding, about a quarter less time per pass for the library's U-Net. The
        model is restored afterwards.
    autocast : bool, default False
        Run the model under ``torch.autocast`` (mixed precision) on its device type.

    A method sets ``method``, lists its own parameters in :meth:`settings` and implements
    :meth:`_explain` (one item) or, when items gain from being run together,
    :meth:`_explain_items`.
    """

    method = "explainer"

    def __init__(self, model: nn.Module | Callable, *, spatial_dims: int | None = None,
                 spacing=None, baseline=0.0, output: str = "auto", activation: str = "auto",
                 read: str | Callable | None = None, device=None,
                 batch_size: int | str = "auto", progress: bool = True,
                 fold_batchnorm: bool = True, autocast: bool = False):
        self.batch_size = check_batch_size(batch_size)
        self.model = ModelAdapter(model, output=output, device=device, activation=activation,
                                  read=read, autocast=autocast)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.spacing = check_spacing(spacing, self.spatial_dims)
        self.baseline = check_baseline(baseline)
        self.progress = bool(progress)
        self.fold_batchnorm = bool(fold_batchnorm)

    def settings(self) -> dict:
        """The method's own parameters (JSON values), as recorded in each Explanation."""
        return {}

    def prepared_model(self):
        """Context: :func:`~interpret_segmentation.core.folding.explanation_mode` of the model."""
        return explanation_mode(self.model.model, self.fold_batchnorm)

    def explain(self, image, target=None) -> Explanation:
        """Explain ``target`` in ``image``.

        Parameters
        ----------
        image : array or tensor (H, W), (C, H, W), (1, C, H, W) or a volume (1, C, D, H, W)
            (with ``spatial_dims=3`` also (D, H, W) and (C, D, H, W))
        target : None, int or Target
            ``None``: class 1 over its predicted pixels. An int: that class. A
            :class:`Target`: class and region.

        Returns
        -------
        Explanation

        Raises
        ------
        ValueError
            For an image the model cannot take (its channels, its size, or the model's own
            error, said in the library's words) and for a model output holding NaN or inf,
            naming the unperturbed image or the first batch of perturbations where it did.
        """
        return self._explain_all([image], [target], single=True)[0]

    def explain_batch(self, images, targets: Sequence | None = None) -> list[Explanation]:
        """Explain several (image, target) pairs; the same Explanations as one at a time.

        Parameters
        ----------
        images : sequence of images (each as for :meth:`explain`, all of one size), or one
            image to explain for every target
        targets : sequence of targets, optional
            One per image; default ``None`` for each.

        Returns
        -------
        list of Explanation, in the order given. ``timings["batch_total"]`` is the time of
        the whole call and ``timings["total"]`` its share per item.
        """
        one_image = isinstance(images, (np.ndarray, torch.Tensor))
        if targets is None:
            if one_image:
                raise ValueError("targets: expected a sequence of targets when images is one "
                                 "image")
            images = list(images)
            targets = [None] * len(images)
        targets = list(targets)
        images = [images] * len(targets) if one_image else list(images)
        if len(images) != len(targets) or not images:
            raise ValueError(f"images and targets: expected the same positive number of each, "
                             f"got {len(images)} and {len(targets)}")
        return self._explain_all(images, targets, single=False)

    def _explain_all(self, images: list, targets: list, single: bool) -> list[Explanation]:
        started = time.perf_counter()
        names = ["image"] if single else [f"images[{i}]" for i in range(len(images))]
        batches = [as_image_batch(image, name, self.spatial_dims).to(self.model.device)
                   for image, name in zip(images, names)]
        if len({tuple(batch.shape) for batch in batches}) > 1:
            raise ValueError(f"images: expected one shape for all, got "
                             f"{sorted({tuple(b.shape) for b in batches})}")
        spacing = self._spacing(batches[0].ndim - 2)
        with self.prepared_model():
            items = []
            for batch, target, name in zip(batches, targets, names):
                probabilities = self.model.first_pass(batch, name)
                resolved = resolve_target(target, probabilities, self.model.segment)
                items.append(Item(batch, resolved, probabilities,
                                  resolve_baseline(self.baseline, batch), spacing))
            explanations = self._explain_items(items)
        seconds = time.perf_counter() - started
        for explanation, item in zip(explanations, items):
            explanation.arrays.setdefault("target_pixels",
                                          item.target.pixels.numpy().astype(np.uint8))
            explanation.info.setdefault("target_from_prediction", item.target.from_prediction)
            explanation.timings["total"] = seconds / len(items)
            if not single:
                explanation.timings["batch_total"] = seconds
        return explanations

    def _spacing(self, dims: int) -> tuple[float, ...]:
        """The voxel sizes for images of ``dims`` spatial dimensions (ValueError naming
        ``spacing`` when it was given for another number)."""
        if self.spacing is None:
            return (1.0,) * dims
        if len(self.spacing) == 1:
            return self.spacing * dims
        if len(self.spacing) != dims:
            raise ValueError(f"spacing: expected {dims} voxel sizes for a {dims}-D image (one per "
                             f"spatial axis), got {len(self.spacing)}")
        return self.spacing

    def _explain_items(self, items: list[Item]) -> list[Explanation]:
        """Explain checked items; by default one at a time with :meth:`_explain`."""
        return [self._explain(item) for item in items]

    def _explain(self, item: Item) -> Explanation:
        """Method-specific work for one item."""
        raise NotImplementedError

    def explanation(self, item: Item, saliency, **fields) -> Explanation:
        """An Explanation of ``item`` with this method's name and settings.

        ``saliency`` (*S), (H, W) or (D, H, W), is stored as float32; ``fields`` are
        Explanation's ``timings``, ``arrays`` and ``info``.
        """
        if isinstance(saliency, torch.Tensor):
            saliency = saliency.detach().cpu().numpy()
        return Explanation(saliency=np.asarray(saliency, dtype=np.float32), method=self.method,
                           target_class=item.target.class_index, parameters=self.settings(),
                           **fields)

    def perturbations(self, count: int, make: Make, description: str) -> Perturbations:
        """:class:`Perturbations` of ``count`` inputs at this explainer's batch size and progress."""
        return Perturbations(self.model, count, make, batch_size=self.batch_size,
                             progress=self.progress, description=description)
