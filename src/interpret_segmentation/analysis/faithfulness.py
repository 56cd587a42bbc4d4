"""How faithful an explanation is, as seed 001 measures it: Dice explained and perturbation
ratio of the map, binarised at the method's thresholds, or of the region the method found.

Nothing here knows a method by name: the thresholds, and which map a figure or the context
measure judges, are given by the caller (the registry's ``Method.thresholds`` and
``Method.shown``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.explanation import Explanation
from ..core.validate import check_number
from .metrics import binarize, dice_explained, perturbation_ratio

OWN_SCORES = "msr"
"""Key of the scores a method measured itself (MiSuRe's minimally sufficient region)."""


def explanation_scores(model, image, explanation: Explanation,
                       thresholds: Sequence[float] = ()) -> dict:
    """Dice explained and perturbation ratio of ``explanation`` of ``image``.

    Parameters
    ----------
    model : nn.Module or ModelAdapter
    image : array or tensor (H, W), (C, H, W) or (1, C, H, W)
        The image that was explained.
    explanation : Explanation
        With ``arrays["target_pixels"]`` (H, W), the target it explained.
    thresholds : sequence of float in [0, 1), default ()
        Where the min-max normalised saliency is binarised (seed 001: RISE 0.2 and 0.4,
        Seg-Grad-CAM 0.05 and 0.1).

    Returns
    -------
    dict
        ``{"msr": {"dice_explained": ..., "perturbation_ratio": ...}}`` when the explanation
        carries both scores in its ``info`` (the method measured its own region, as MiSuRe
        does on X_MSR); otherwise one entry per threshold, keyed by it as text (``"0.2"``),
        each computed on the binarised map. Empty when the target has no pixels or the method
        had nothing to explain.
    """
    thresholds = [check_number(t, f"thresholds[{i}]", 0, 1, open_high=True)
                  for i, t in enumerate(thresholds)]
    prediction = explanation.arrays.get("target_pixels")
    if prediction is None or not np.any(prediction) or explanation.info.get("nothing_to_explain"):
        return {}
    info = explanation.info
    if "dice_explained" in info and "perturbation_ratio" in info:
        return {OWN_SCORES: {"dice_explained": info["dice_explained"],
                             "perturbation_ratio": info["perturbation_ratio"]}}
    scores = {}
    for threshold in thresholds:
        kept = binarize(explanation.saliency, threshold)
        scores[str(threshold)] = {
            "dice_explained": dice_explained(model, image, kept, explanation.target_class),
            "perturbation_ratio": perturbation_ratio(kept, prediction),
        }
    return scores


def context_map(explanation: Explanation, shown: str | None = None) -> np.ndarray:
    """The map that is judged for context hits and drawn in figures: (H, W).

    ``explanation.arrays[shown]`` when the explanation has that array (HDM's "worse_only"
    circle map), its ``saliency`` otherwise.
    """
    if shown is not None and shown in explanation.arrays:
        return explanation.arrays[shown]
    return explanation.saliency
