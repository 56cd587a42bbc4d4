"""The base class of every explainer: one entry point, ``explain(image, target)``."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from .explanation import Explanation
from .folding import explanation_mode
from .model import ModelAdapter, as_image_batch
from .perturb import check_batch_size
from .target import ResolvedTarget, resolve_target


class Explainer:
    """Template for all methods: validate, resolve the target, run, time.

    Parameters
    ----------
    model : nn.Module
        Any segmentation model (see :class:`ModelAdapter` for the outputs understood).
    output : {"auto", "logits", "probabilities"}, default "auto"
    device : torch.device or str, optional
        Default: the model's device. One this machine lacks is refused (ValueError).
    batch_size : int or "auto", default "auto"
        Perturbed inputs per model pass (perturbation methods only).
    progress : bool, default True
        Show a progress bar on stderr for long work.
    fold_batchnorm : bool, default True
        While explaining, fold eval-mode BatchNorm layers into the convolution before them
        (:func:`~interpret_segmentation.core.folding.folded_batchnorm`): the same outputs up
        to float rounding, about a quarter less time per pass for the library's U-Net. The
        model is restored afterwards.

    Subclasses set ``method`` and implement :meth:`_explain`.
    """

    method = "explainer"

    def __init__(self, model: nn.Module, *, output: str = "auto", device=None,
                 batch_size: int | str = "auto", progress: bool = True,
                 fold_batchnorm: bool = True):
        check_batch_size(batch_size)
        self.model = ModelAdapter(model, output=output, device=device)
        self.batch_size = batch_size
        self.progress = progress
        self.fold_batchnorm = bool(fold_batchnorm)

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
        started = time.perf_counter()
        batch = as_image_batch(image).to(self.model.device)
        with self.prepared_model():
            probabilities = self.model.first_pass(batch)
            resolved = resolve_target(target, probabilities)
            explanation = self._explain(batch, resolved, probabilities)
        explanation.timings["total"] = time.perf_counter() - started
        explanation.arrays.setdefault("target_pixels", resolved.pixels.numpy().astype(np.uint8))
        explanation.info.setdefault("target_from_prediction", resolved.from_prediction)
        return explanation

    def _explain(self, image: torch.Tensor, target: ResolvedTarget,
                 probabilities: torch.Tensor) -> Explanation:
        """Method-specific work: image (1, C, H, W), probabilities (1, K, H, W)."""
        raise NotImplementedError
