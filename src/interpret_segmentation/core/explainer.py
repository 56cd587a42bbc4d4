"""The base class of every explainer: ``explain(image, target)`` and ``explain_batch``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .explanation import Explanation
from .folding import explanation_mode
from .model import ModelAdapter, as_image_batch
from .perturb import Make, Perturbations, check_batch_size
from .target import ResolvedTarget, resolve_target


@dataclass(frozen=True)
class Item:
    """One thing to explain, checked: image (1, C, H, W) on the model's device, its resolved
    target and the model's probabilities (1, K, H, W) on the unperturbed image."""

    image: torch.Tensor
    target: ResolvedTarget
    probabilities: torch.Tensor


class Explainer:
    """Template for all methods: validate, resolve the target, run the method, time it.

    Parameters
    ----------
    model : nn.Module
        Any segmentation model (see :class:`ModelAdapter` for the outputs understood).
    output : {"auto", "logits", "probabilities"}, default "auto"
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

    A method sets ``method``, lists its own parameters in :meth:`settings` and implements
    :meth:`_explain` (one item) or, when items gain from being run together,
    :meth:`_explain_items`.
    """

    method = "explainer"

    def __init__(self, model: nn.Module, *, output: str = "auto", device=None,
                 batch_size: int | str = "auto", progress: bool = True,
                 fold_batchnorm: bool = True):
        self.batch_size = check_batch_size(batch_size)
        self.model = ModelAdapter(model, output=output, device=device)
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
        image : array or tensor (H, W), (C, H, W) or (1, C, H, W)
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
        batches = [as_image_batch(image, name).to(self.model.device)
                   for image, name in zip(images, names)]
        if len({tuple(batch.shape) for batch in batches}) > 1:
            raise ValueError(f"images: expected one shape for all, got "
                             f"{sorted({tuple(b.shape) for b in batches})}")
        with self.prepared_model():
            items = []
            for batch, target, name in zip(batches, targets, names):
                probabilities = self.model.first_pass(batch, name)
                items.append(Item(batch, resolve_target(target, probabilities), probabilities))
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

    def _explain_items(self, items: list[Item]) -> list[Explanation]:
        """Explain checked items; by default one at a time with :meth:`_explain`."""
        return [self._explain(item) for item in items]

    def _explain(self, item: Item) -> Explanation:
        """Method-specific work for one item."""
        raise NotImplementedError

    def explanation(self, item: Item, saliency, **fields) -> Explanation:
        """An Explanation of ``item`` with this method's name and settings.

        ``saliency`` (H, W) is stored as float32; ``fields`` are Explanation's ``timings``,
        ``arrays`` and ``info``.
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
