"""Post-hoc reliability of a prediction from its MiSuRe explanation (seed 001, 3.3 and 5.5).

Three numbers describe how a prediction was explained: the number of dilations the sufficient
region needed, the Dice explained of the minimally sufficient region and its perturbation
ratio. A logistic regression on them predicts whether the prediction's Dice against the ground
truth reaches 0.9, without the ground truth.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from ..analysis.figures import save_figure, scatter_figure
from ..core import Explanation
from ..core.io import OutputDirectory, atomic_write, write_csv
from ..core.validate import check_int
from .common import study_settings
from .engines import get_engine
from .report import write_report
from .runner import run_items
from .work import MethodRun, ModelBuilder, ValidationSource, Work

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
        from sklearn.linear_model import LogisticRegression  # scikit-learn only when used
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

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

    def scores(self, features, labels) -> dict:
        """Accuracy, ROC AUC and the ROC curve (false and true positive rates) on held-out data."""
        features, labels = self._check(features, labels)
        scores = self.probability(features)
        from sklearn.metrics import accuracy_score, roc_auc_score, roc_curve

        false_positive, true_positive, _ = roc_curve(labels, scores)
        return {"accuracy": float(accuracy_score(labels, scores >= 0.5)),
                "roc_auc": float(roc_auc_score(labels, scores)),
                "false_positive_rate": false_positive.tolist(),
                "true_positive_rate": true_positive.tolist()}


class NoisySource:
    """A source's images with Gaussian noise of a standard deviation drawn from [0, ``noise``]
    per item (seeded by ``seed`` and the item's key, so any worker and any rerun sees the same
    image), clipped to [0, 1]."""

    def __init__(self, source, noise: float, seed: int):
        self.source, self.noise, self.seed = source, float(noise), int(seed)

    def __len__(self) -> int:
        return len(self.source)

    def keys(self) -> list[str]:
        return self.source.keys()

    def _generator(self, key: str, stream: int) -> np.random.Generator:
        digits = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
        return np.random.default_rng((self.seed, stream, digits))

    def sigma(self, key: str) -> float:
        """The noise's standard deviation for item ``key``."""
        return float(self._generator(key, 0).uniform(0, self.noise))

    def item(self, position: int):
        item = self.source.item(position)
        rng = self._generator(item.key, 1)
        image = np.asarray(item.image, dtype=np.float32)
        noisy = image + self.sigma(item.key) * rng.standard_normal(image.shape, np.float32)
        return dataclasses.replace(item, image=np.clip(noisy, 0, 1))

    def describe(self) -> dict:
        return {**self.source.describe(), "noise": self.noise, "seed": self.seed}


def run_reliability(dataset_root, checkpoint, n: int, out, noise: float = 0.08, seed: int = 0,
                    progress: bool = True, log=print, engine: str = "local",
                    **engine_options) -> dict:
    """``interpret-segmentation reliability``: learn when the demo model's predictions fail.

    To have wrong predictions to learn from, the first ``n`` validation images get Gaussian
    noise of a standard deviation drawn from [0, ``noise``] per image (:class:`NoisySource`).
    Each noisy image is predicted, its prediction's Dice with the ground truth recorded, and
    explained with MiSuRe (at its defaults) on the data-set runner
    (:func:`~interpret_segmentation.studies.runner.run_items`, on ``engine``); rows go to
    ``out/per_image.csv`` as they are made (a rerun with the same settings resumes; other
    settings are refused, see :func:`~interpret_segmentation.studies.common.study_settings`)
    and the features to ``out/features.csv``. Half the images train the
    classifier, the other half measure it: ``out/reliability.json`` (accuracy, ROC AUC, ROC
    curve) and ``out/roc.png``. Returns that dict.
    """
    check_int(n, "n", 4)
    check_int(seed, "seed", 0)
    if not 0 <= noise <= 5:
        raise ValueError(f"noise: expected a standard deviation in [0, 5], got {noise!r}")
    work = Work(ModelBuilder(str(checkpoint)), (MethodRun("misure", "misure"),),
                save_explanations=False)
    chosen = get_engine(engine, **engine_options)
    source = NoisySource(ValidationSource(dataset_root, n), noise, seed)
    settings = study_settings(checkpoint, dataset_root, work.settings(chosen)["methods"],
                              noise=noise, seed=seed)
    with OutputDirectory(out, "reliability", settings=settings) as output:
        rows = run_items(output, source, work, chosen, rows_name="per_image.csv",
                         progress=progress, log=log)
        rows = _feature_rows(rows, source)
        write_csv(output.file("features.csv"), FEATURE_FIELDS, rows)
        result = _classify(rows, seed)
        figure = scatter_figure(result["false_positive_rate"], result["true_positive_rate"],
                                xlabel="false positive rate", ylabel="true positive rate",
                                title=f"reliability of predictions: ROC AUC {result['roc_auc']:.2f}")
        figure.axes[0].plot(result["false_positive_rate"], result["true_positive_rate"])
        save_figure(figure, output.file("roc.png"), overwrite=True)
        atomic_write(output.file("reliability.json"), lambda f: json.dump(result, f, indent=2),
                     mode="w", overwrite=True)
        write_report(output.path, output=output, rows_name="per_image.csv")
    out = output.path
    log(f"share of predictions below Dice 0.9: {result['share_below_0.9']:.2f}; held-out "
        f"accuracy {result['accuracy']:.3f}, ROC AUC {result['roc_auc']:.3f} "
        f"({out / 'reliability.json'}, {out / 'roc.png'})")
    return result


FEATURE_FIELDS = ("item", "noise", "prediction_dice", *FEATURES)
"""Columns of features.csv."""


def _feature_rows(rows: list[dict], source: NoisySource) -> list[dict]:
    """One row per explained item (:data:`FEATURE_FIELDS`; features empty where there was
    nothing to explain), in the source's order, from the runner's rows."""
    by_item = {row["item"]: row for row in rows if not row["error"]}
    found = []
    for key in source.keys():
        if key not in by_item:
            continue
        row = by_item[key]
        explained = row["dilations"] != ""
        found.append({"item": key, "noise": source.sigma(key),
                      "prediction_dice": row["prediction_dice"],
                      **{name: row[name] if explained else "" for name in FEATURES}})
    return found


def _classify(rows: list[dict], seed: int) -> dict:
    """Train the classifier on half the explained rows and evaluate it on the other half."""
    explained = [row for row in rows if all(row[name] != "" for name in FEATURES)]
    if len(explained) < 4:  # two to train the classifier, two to evaluate it
        raise ValueError(
            f"n: {len(explained)} of the {len(rows)} images had a prediction to explain; the "
            "reliability classifier needs at least 4; use a larger --n")
    features = np.array([[float(row[name]) for name in FEATURES] for row in explained])
    labels = np.array([float(row["prediction_dice"]) >= RELIABLE_DICE for row in explained])
    order = np.random.default_rng(seed).permutation(len(explained))
    train, test = order[: len(explained) // 2], order[len(explained) // 2:]
    result = {"images": len(rows), "explained": len(explained),
              "share_below_0.9": float(1 - labels.mean())}
    classifier = ReliabilityClassifier(seed).fit(features[train], labels[train])
    result.update(classifier.scores(features[test], labels[test]))
    result.update({"train_images": len(train), "test_images": len(test)})
    return result
