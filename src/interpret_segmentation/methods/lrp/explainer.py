"""LRP through the common entry point: a classifier's logit explained by its input relevance,
optionally made into a mask (seed 003, Seibold et al., VISAPP 2022).

:class:`LRP` is an :class:`~interpret_segmentation.core.Explainer`: it runs
:func:`~interpret_segmentation.methods.lrp.relevance`'s propagation on each checked image and,
when asked, :func:`~interpret_segmentation.methods.lrp.segment` on the summed map.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import torch

from ...core import Explainer, Explanation, Item, explanation_mode
from ...core.validate import check_bool, check_int
from .relevance import FLIPS, _one_hot, _propagate_mirrored, layer_rules
from .segmentation import SEGMENTATION_METHODS, segment

__all__ = ["LRP"]

# options that change what segment() returns; the mask is all LRP stores
_RETURN_OPTIONS = ("return_threshold", "return_model")


def _key_name(key) -> str:
    return key if isinstance(key, str) else key.__name__


class LRP(Explainer):
    """Layer-wise Relevance Propagation of a classifier's class logit to its input pixels.

    The target's class picks the logit; its relevance (the logit itself, the other logits 0)
    is propagated back layer by layer with the rules of ``rule_set`` (Bach et al., 2015;
    Montavon et al., 2019; seed 003, section 3.3). With ``segmentation`` the summed map is
    also turned into a mask, as seed 003 turns a classifier into a segmenter (section 3.3.2).

    Parameters
    ----------
    model : nn.Module
        A classifier returning logits (B, K), built from the layers
        :func:`~interpret_segmentation.methods.lrp.relevance` supports and applying them in
        registration order. A single logit (B, 1) is read as :class:`ModelAdapter` reads it:
        class 1's score, with class 0's score its negative (so class 0's relevance is the
        negated relevance of the logit: every rule is linear in the relevance it passes).
    rule_set : str or Mapping, default "montavon"
        A name in :data:`~interpret_segmentation.methods.lrp.rules.RULE_SETS` (``"montavon"``
        and ``"seibold"``, seed 003's Table 1 for the layer names of
        :class:`~interpret_segmentation.models.VGG11`; ``"epsilon"`` for any model) or a mapping
        from layer names or ``nn.Module`` types to rules, e.g. ``{"conv1_1": ZBox(0.0, 1.0),
        nn.Linear: Epsilon(1e-6, relative=False)}``: the rules carry their own parameters
        (epsilon and whether it is relative to the layer's spread, z^B bounds, gamma, alpha
        and beta). Checked against the model's layers here, once.
    segmentation : {"simple", "gmm", "bmm"} or None, default None
        Also turn the summed relevance into a mask (``arrays["mask"]``) with
        :func:`~interpret_segmentation.methods.lrp.segment`.
    refine : int, default 0
        With ``segmentation``: pass the mask through
        :func:`~interpret_segmentation.methods.lrp.refine_mask` with this radius (close, fill
        holes, shrink; 1 for a first 3 x 3 convolution). Not in seed 003.
    average_flips : bool, default False
        Average the relevance of the image and its three mirror images, each flipped back
        (four propagations; for classifiers trained with flips). Not in seed 003.
    segmentation_options : dict, optional
        Keyword arguments of that segmentation function, e.g. ``{"seed": 1}`` for "gmm" or
        ``{"max_iter": 50}`` for "bmm"; checked here on a small map.
    output : {"logits", "probabilities", "auto"}, default "logits"
        How ``info["probability"]`` and the predicted class read the model's output: LRP
        explains the output of a layer, which is a logit (an "auto" guess could take a
        single logit inside [0, 1] for a probability).
    device, progress, fold_batchnorm, batch_size
        As for every explainer. LRP runs one recorded forward pass and one backward
        propagation per image after the common first pass; ``batch_size`` and ``progress``
        change nothing. BatchNorm after a convolution is always folded for the propagation.

    Target: ``None`` (class 1, the "defective" class of seed 003's classifiers), an int class
    or ``Target(class_index)``. A Target with a ``region`` is refused: a classifier's output
    has no pixels.

    The Explanation's ``saliency`` (H, W) is the relevance summed over the input channels,
    raw and signed; ``arrays["relevance"]`` (C, H, W) the relevance per channel,
    ``arrays["mask"]`` (H, W) bool the segmentation (only with ``segmentation``) and
    ``arrays["target_pixels"]`` the whole image when the classifier predicts the target class,
    else empty (seed 003 gives an image called defect-free an empty mask). ``info`` holds
    ``"logits"`` (K), ``"logit"`` (the score explained), ``"relevance_sum"`` (equal to it when
    the rules conserve relevance: LRP-0, z^B, no biases), ``"probability"`` of the class,
    ``"predicted_class"`` and ``"model_passes"``; ``parameters`` the rule set and every
    layer's rule.

    Raises
    ------
    ValueError
        At construction, for an unknown rule set, a rule-set key naming no layer, an
        unsupported layer, an unknown ``segmentation`` or bad ``segmentation_options``; when
        explaining, as every explainer does, and for a Target with a region.
    TypeError
        For a malformed rule set or ``segmentation_options`` that is not a mapping.
    """

    method = "lrp"

    def __init__(self, model, rule_set: str | Mapping = "montavon", segmentation: str | None = None,
                 refine: int = 0, average_flips: bool = False,
                 segmentation_options: Mapping | None = None, **options):
        options.setdefault("output", "logits")  # LRP reads a layer's output: logits, always
        super().__init__(model, **options)
        with explanation_mode(model, True):  # BatchNorm folded, as the propagation sees it
            self._rules = layer_rules(model, rule_set)
        self.rule_set = rule_set if isinstance(rule_set, str) else dict(rule_set)  # kept as given
        if segmentation is not None and (not isinstance(segmentation, str)
                                         or segmentation not in SEGMENTATION_METHODS):
            raise ValueError(f"segmentation: expected one of {SEGMENTATION_METHODS} or None, "
                             f"got {segmentation!r}")
        self.segmentation = segmentation
        self.refine = check_int(refine, "refine", minimum=0)
        if self.refine and segmentation is None:
            raise ValueError(f"refine: refines a mask; expected segmentation='simple', 'gmm' "
                             f"or 'bmm' with it, got refine={self.refine} without one")
        self.average_flips = check_bool(average_flips, "average_flips")
        self.segmentation_options = self._segmentation_options(segmentation, segmentation_options)

    @staticmethod
    def _segmentation_options(segmentation, options) -> dict:
        if options is None:
            return {}
        if not isinstance(options, Mapping):
            raise TypeError(f"segmentation_options: expected a dict of keyword arguments or "
                            f"None, got {type(options).__name__}")
        options = dict(options)
        if options and segmentation is None:
            raise ValueError("segmentation_options: given without a segmentation; expected "
                             "segmentation='simple', 'gmm' or 'bmm' with them")
        if "refine" in options:
            raise ValueError("segmentation_options: 'refine' is LRP's own argument; expected "
                             "LRP(..., refine=1), got it among the segmentation options")
        refused = [name for name in options if name in _RETURN_OPTIONS]
        if refused:
            raise ValueError(f"segmentation_options: {refused[0]!r} is not taken here (the "
                             f"mask is what LRP stores; call segment() for more)")
        try:  # the segmentation's own checks, on a small map, before any image is explained
            segment(np.arange(16.0).reshape(4, 4), segmentation, **options)
        except TypeError as error:
            raise ValueError(f"segmentation_options: not taken by the {segmentation!r} "
                             f"segmentation ({error})") from None
        return options

    def settings(self) -> dict:
        if isinstance(self.rule_set, str):
            rule_set = self.rule_set
        else:
            rule_set = {_key_name(key): repr(rule) for key, rule in self.rule_set.items()}
        return {"rule_set": rule_set,
                "rules": {name: repr(rule) for name, rule in self._rules.items()},
                "segmentation": self.segmentation, "refine": self.refine,
                "average_flips": self.average_flips,
                "segmentation_options": dict(self.segmentation_options)}

    def _explain_items(self, items: list[Item]) -> list[Explanation]:
        for item in items:  # all refused before any is explained
            if not item.target.from_prediction:
                raise ValueError("target: a classifier's output has no pixels to choose; "
                                 "expected None, a class index or Target(class_index) without "
                                 "a region, got a Target with a region")
        return [self._explain(item) for item in items]

    def _explain(self, item: Item) -> Explanation:
        started = time.perf_counter()
        class_index = item.target.class_index
        chosen = {}

        def start(logits: torch.Tensor) -> torch.Tensor:
            if logits.shape[1] == 1:  # one logit: class 1's score, class 0's its negative
                current = logits if class_index == 1 else -logits
            else:
                current = _one_hot(logits, class_index)
            chosen.setdefault("logit", float(current.sum()))  # the image's own, not a mirror's
            return current

        relevance, logits = _propagate_mirrored(self.model.model, item.image, start,
                                                self.rule_set, self.average_flips)
        relevance = relevance[0]
        summed = relevance.sum(0)
        timings = {"relevance": time.perf_counter() - started}
        arrays = {"relevance": relevance.detach().cpu().float().numpy()}
        if self.segmentation is not None:
            started = time.perf_counter()
            arrays["mask"] = segment(summed, self.segmentation, refine=self.refine,
                                     **self.segmentation_options)
            timings["segmentation"] = time.perf_counter() - started
        probabilities = item.probabilities[0, :, 0, 0]
        info = {"logits": logits[0].detach().cpu().double().tolist(),
                "logit": chosen["logit"], "relevance_sum": float(relevance.sum()),
                "probability": float(probabilities[class_index]),
                "predicted_class": int(torch.argmax(probabilities)),
                "model_passes": 1 + (len(FLIPS) if self.average_flips else 1)}
        return self.explanation(item, summed, timings=timings, arrays=arrays, info=info)
