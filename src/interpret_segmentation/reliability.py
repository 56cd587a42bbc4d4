"""Post-hoc reliability of a prediction from its MiSuRe explanation (seed 001, 3.3 and 5.5).

Three numbers describe how a prediction was explained: the number of dilations the sufficient
region needed, the Dice explained of the minimally sufficient region and its perturbation
ratio. A logistic regression on them predicts whether the prediction's Dice against the ground
truth reaches 0.9, without the ground truth.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score, roc_curve
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .core import Explanation

FEATURES = ("dilations", "dice_explained", "perturbation_ratio")
RELIABLE_DICE = 0.9


def reliability_features(explanation: Explanation) -> np.ndarray:
    """(dilations, Dice explained, perturbation ratio) of a MiSuRe explanation, shape (3,)."""
    if explanation.method != "misure":
        raise ValueError(f"explanation: expected a MiSuRe explanation, got {explanation.method!r}")
    if explanation.info.get("nothing_to_explain"):
        raise ValueError("explanation: nothing was explained (the class is not predicted)")
    return np.array([float(explanation.info[name]) for name in FEATURES])


class ReliabilityClassifier:
    """Logistic regression (on standardised features) predicting Dice >= 0.9 vs ground truth."""

    def __init__(self, seed: int = 0):
        self.model = make_pipeline(StandardScaler(), LogisticRegression(random_state=seed))

    @staticmethod
    def _check(features, labels=None):
        features = np.asarray(features, dtype=float)
        if features.ndim != 2 or features.shape[1] != len(FEATURES):
            raise ValueError(f"features: expected an array (N, {len(FEATURES)}) of "
                             f"{', '.join(FEATURES)}, got shape {features.shape}")
        if labels is None:
            return features, None
        labels = np.asarray(labels).astype(bool)
        if labels.shape != (len(features),):
            raise ValueError(f"labels: expected {len(features)} values, got shape {labels.shape}")
        if labels.all() or not labels.any():
            raise ValueError("labels: need both reliable and unreliable predictions to learn from")
        return features, labels

    def fit(self, features, labels) -> ReliabilityClassifier:
        """``features`` (N, 3), ``labels`` (N,) True where the prediction's Dice >= 0.9."""
        features, labels = self._check(features, labels)
        self.model.fit(features, labels)
        return self

    def probability(self, features) -> np.ndarray:
        """Probability that each prediction is reliable, (N,) from features (N, 3)."""
        features, _ = self._check(np.atleast_2d(features))
        return self.model.predict_proba(features)[:, 1]

    def probability_of(self, explanation: Explanation) -> float:
        """Probability that the prediction behind a MiSuRe explanation is reliable."""
        return float(self.probability(reliability_features(explanation))[0])

    def evaluate(self, features, labels) -> dict:
        """Accuracy, ROC AUC and the ROC curve (false and true positive rates) on held-out data."""
        features, labels = self._check(features, labels)
        scores = self.probability(features)
        false_positive, true_positive, _ = roc_curve(labels, scores)
        return {"accuracy": float(accuracy_score(labels, scores >= 0.5)),
                "roc_auc": float(roc_auc_score(labels, scores)),
                "false_positive_rate": false_positive.tolist(),
                "true_positive_rate": true_positive.tolist()}
