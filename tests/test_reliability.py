import numpy as np
import pytest
from oracles import PatchModel, patch_image

from interpret_segmentation import RISE
from interpret_segmentation.misure import MiSuRe
from interpret_segmentation.reliability import ReliabilityClassifier, reliability_features


def synthetic(n, seed):
    """Reliable predictions explained with few dilations and a high Dice explained."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.5
    dilations = np.where(labels, rng.normal(3, 1, n), rng.normal(8, 1, n))
    dice = np.where(labels, rng.normal(0.98, 0.01, n), rng.normal(0.9, 0.02, n))
    ratio = rng.normal(1.0, 0.3, n)  # uninformative
    return np.stack([dilations, dice, ratio], 1), labels


def test_learns_a_separable_rule_and_scores_held_out_data():
    classifier = ReliabilityClassifier().fit(*synthetic(200, 0))
    result = classifier.evaluate(*synthetic(100, 1))
    assert result["accuracy"] > 0.95 and result["roc_auc"] > 0.99
    assert result["false_positive_rate"][0] == 0 and result["true_positive_rate"][-1] == 1
    assert classifier.probability([[2.0, 0.99, 1.0]])[0] > 0.9
    assert classifier.probability([[9.0, 0.88, 1.0]])[0] < 0.1


def test_features_from_an_explanation():
    explanation = MiSuRe(PatchModel(), mask_size=24, iterations=3, progress=False).explain(
        patch_image())
    features = reliability_features(explanation)
    assert features.tolist() == [explanation.info["dilations"], explanation.info["dice_explained"],
                                 explanation.info["perturbation_ratio"]]
    classifier = ReliabilityClassifier().fit(*synthetic(50, 2))
    assert 0 <= classifier.probability_of(explanation) <= 1
    with pytest.raises(ValueError, match="MiSuRe"):
        reliability_features(RISE(PatchModel(), n_masks=4, s=4, progress=False).explain(
            patch_image()))


def test_bad_input():
    classifier = ReliabilityClassifier()
    with pytest.raises(ValueError, match=r"features: expected an array \(N, 3\)"):
        classifier.fit(np.zeros((4, 2)), [True, False, True, False])
    with pytest.raises(ValueError, match="labels: need both"):
        classifier.fit(np.zeros((4, 3)), [True] * 4)
    with pytest.raises(ValueError, match="labels: expected 4 values"):
        classifier.fit(np.zeros((4, 3)), [True, False])
