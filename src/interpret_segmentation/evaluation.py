"""Scores of an explanation as seed 001 evaluates them: Dice explained and perturbation ratio.

Continuous maps (RISE, Seg-Grad-CAM) are normalised to [0, 1] and binarised at the paper's
thresholds (:data:`~interpret_segmentation.metrics.PAPER_THRESHOLDS`); MiSuRe's minimally
sufficient region is used as it is (its mask is the explanation, X_MSR = X_SR * M_MSR).
"""

from __future__ import annotations

import numpy as np

from .core import Explanation
from .metrics import PAPER_THRESHOLDS, binarize, dice_explained, perturbation_ratio


def explanation_scores(model, image, explanation: Explanation) -> dict:
    """Dice explained and perturbation ratio of ``explanation`` of ``image``.

    Returns
    -------
    dict
        For MiSuRe ``{"msr": {"dice_explained": ..., "perturbation_ratio": ...}}`` (read from
        the Explanation, computed on X_MSR); for a method with paper thresholds one entry per
        threshold, keyed by it as text (``"0.2"``); an empty dict for other methods or when the
        explained class is not predicted (there is no object to relate to).
    """
    prediction = explanation.arrays.get("target_pixels")
    if prediction is None or not np.any(prediction):
        return {}
    if explanation.method == "misure":
        if explanation.info.get("nothing_to_explain"):
            return {}
        return {"msr": {"dice_explained": explanation.info["dice_explained"],
                        "perturbation_ratio": explanation.info["perturbation_ratio"]}}
    scores = {}
    for threshold in PAPER_THRESHOLDS.get(explanation.method, ()):
        kept = binarize(explanation.saliency, threshold)
        scores[str(threshold)] = {
            "dice_explained": dice_explained(model, image, kept, explanation.target_class),
            "perturbation_ratio": perturbation_ratio(kept, prediction),
        }
    return scores
