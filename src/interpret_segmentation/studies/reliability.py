"""Post-hoc reliability of a prediction from its MiSuRe explanation (seed 001, 3.3 and 5.5).

Three numbers describe how a prediction was explained: the number of dilations the sufficient
region needed, the Dice explained of the minimally sufficient region and its perturbation
ratio (:data:`FEATURES`, the paper's). A logistic regression on them predicts whether the
prediction's Dice against the ground truth reaches 0.9, without the ground truth.

The study (:func:`run_reliability`, ``interpret-segmentation reliability``) makes the model err
the way models err in use: Gaussian noise, lower contrast, brighter or darker images, a part
of the image hidden, and a weaker checkpoint of the same training recipe
(:data:`ERROR_SOURCES`). Each changed image is predicted and explained; the classifier is
scored by stratified k-fold cross-validation, overall and per error source, with bootstrap
intervals; the same is done with three more numbers read off the explanation
(:data:`EXTRA_FEATURES`) to see whether they help.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from ..analysis.features import roundness
from ..analysis.figures import save_figure, subplots
from ..analysis.metrics import dice
from ..core import Explanation
from ..core.io import OutputDirectory, RowFile, atomic_write, file_sha256, json_ready, write_csv
from ..core.validate import check_int, check_number, check_positive
from .common import study_settings
from .engines import get_engine
from .report import write_report
from .runner import run_items
from .work import MethodRun, ModelBuilder, ValidationSource, Work

FEATURES = ("dilations", "dice_explained", "perturbation_ratio")
"""The paper's three features of a MiSuRe explanation (seed 001, 5.5)."""
EXTRA_FEATURES = ("sr_area", "msr_compactness", "sr_dice")
"""More numbers read off the same explanation (:func:`explanation_features`)."""
FEATURE_SETS = {"paper": FEATURES, "extended": FEATURES + EXTRA_FEATURES}
"""The feature sets the study compares."""
RELIABLE_DICE = 0.9
"""A prediction is reliable when its Dice with the ground truth is at least this (seed 001)."""


# -- features ------------------------------------------------------------------------------------

def _explained(explanation: Explanation) -> None:
    if explanation.method != "misure":
        raise ValueError(f"explanation: expected a MiSuRe explanation, got {explanation.method!r}")
    if explanation.info.get("nothing_to_explain"):
        raise ValueError("explanation: nothing was explained (the class is not predicted)")


def explanation_features(explanation: Explanation) -> dict[str, float]:
    """Every feature of a MiSuRe explanation: :data:`FEATURES` and :data:`EXTRA_FEATURES`.

    ``sr_area`` is the share of the image's pixels (voxels) in the sufficient region M_SR;
    ``msr_compactness`` the roundness of the minimally sufficient region's support (its
    non-zero pixels; :func:`~interpret_segmentation.analysis.features.roundness`, 2 sqrt(pi A)
    / P in 2-D, 1 for a disk, small for scattered pieces; 0 for an empty M_MSR) and
    ``sr_dice`` the Dice between M_SR and the prediction (1 when no dilation was needed, as M_SR
    starts from the prediction).
    """
    _explained(explanation)
    info, arrays = explanation.info, explanation.arrays
    sufficient = np.asarray(arrays["sr_mask"]) != 0
    minimal = np.asarray(arrays["msr_mask"]) != 0
    compactness = (roundness(np.zeros(minimal.shape, np.float32), minimal)
                   if minimal.any() else 0.0)
    return {**{name: float(info[name]) for name in FEATURES},
            "sr_area": float(sufficient.mean()),
            "msr_compactness": float(compactness),
            "sr_dice": dice(arrays["target_pixels"], sufficient)}


def reliability_features(explanation: Explanation, features=FEATURES) -> np.ndarray:
    """The values of ``features`` (default the paper's three: dilations, Dice explained,
    perturbation ratio) of a MiSuRe explanation, shape (len(features),)."""
    _explained(explanation)
    if tuple(features) == FEATURES:  # only what the explanation's info holds
        return np.array([float(explanation.info[name]) for name in FEATURES])
    known = explanation_features(explanation)
    return np.array([known[name] for name in _feature_names(features)])


def _feature_names(features) -> tuple[str, ...]:
    names = tuple(features)
    unknown = [name for name in names if name not in FEATURES + EXTRA_FEATURES]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"features: expected distinct names among "
                         f"{', '.join(FEATURES + EXTRA_FEATURES)}, got {names!r}")
    return names


class ReliabilityClassifier:
    """Logistic regression (on standardised features) predicting Dice >= 0.9 vs ground truth.

    Parameters
    ----------
    seed : int, default 0
        The logistic regression's ``random_state``.
    features : sequence of str, default :data:`FEATURES`
        The features, in the order of the columns given to :meth:`fit`.
    """

    def __init__(self, seed: int = 0, features=FEATURES):
        from sklearn.linear_model import LogisticRegression  # scikit-learn only when used
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.features = _feature_names(features)
        self.model = make_pipeline(StandardScaler(), LogisticRegression(random_state=seed))

    def _check(self, features, labels=None):
        features = np.asarray(features, dtype=float)
        if features.ndim != 2 or features.shape[1] != len(self.features):
            raise ValueError(f"features: expected an array (N, {len(self.features)}) of "
                             f"{', '.join(self.features)}, got shape {features.shape}")
        if labels is None:
            return features, None
        labels = np.asarray(labels).astype(bool)
        if labels.shape != (len(features),):
            raise ValueError(f"labels: expected {len(features)} values, got shape {labels.shape}")
        if labels.all() or not labels.any():
            raise ValueError("labels: need both reliable and unreliable predictions to learn from")
        return features, labels

    def fit(self, features, labels) -> ReliabilityClassifier:
        """``features`` (N, F), ``labels`` (N,) True where the prediction's Dice >= 0.9."""
        features, labels = self._check(features, labels)
        self.model.fit(features, labels)
        return self

    def probability(self, features) -> np.ndarray:
        """Probability that each prediction is reliable, (N,) from features (N, F)."""
        features, _ = self._check(np.atleast_2d(features))
        return self.model.predict_proba(features)[:, 1]

    def probability_of(self, explanation: Explanation) -> float:
        """Probability that the prediction behind a MiSuRe explanation is reliable."""
        return float(self.probability(reliability_features(explanation, self.features))[0])

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


# -- cross-validation and bootstrap ---------------------------------------------------------------

def cross_validated_probabilities(features, labels, folds: int = 5, seed: int = 0,
                                  names=FEATURES) -> tuple[np.ndarray, int]:
    """Out-of-fold probabilities that each prediction is reliable: stratified k-fold
    (scikit-learn's ``StratifiedKFold(k, shuffle=True, random_state=seed)``), a
    :class:`ReliabilityClassifier` fitted on the other folds scoring each fold.

    ``k`` is ``folds``, or the number of predictions of the rarer label when that is smaller.
    Returns ``(probabilities (N,), k)``; ValueError when a label has fewer than 2 predictions
    (nothing to cross-validate).
    """
    from sklearn.model_selection import StratifiedKFold

    check_int(folds, "folds", 2)
    labels = np.asarray(labels).astype(bool)
    rarer = int(min(labels.sum(), (~labels).sum()))
    if rarer < 2:
        raise ValueError(
            f"labels: {int(labels.sum())} reliable and {int((~labels).sum())} unreliable "
            "predictions; cross-validation needs at least 2 of each")
    splits = min(folds, rarer)
    features = np.asarray(features, dtype=float)
    probabilities = np.zeros(len(labels))
    for train, test in StratifiedKFold(splits, shuffle=True, random_state=seed).split(features,
                                                                                      labels):
        classifier = ReliabilityClassifier(seed, names).fit(features[train], labels[train])
        probabilities[test] = classifier.probability(features[test])
    return probabilities, splits


def bootstrap_indices(n: int, resamples: int, seed) -> np.ndarray:
    """(resamples, n) indices drawn with replacement from ``numpy.random.default_rng(seed)``."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def resampled_accuracy(labels, probabilities, indices) -> np.ndarray:
    """Accuracy (probability >= 0.5 read as reliable) on each resample; (R,) from indices
    (R, n)."""
    labels, probabilities = np.asarray(labels, bool), np.asarray(probabilities, float)
    return ((probabilities[indices] >= 0.5) == labels[indices]).mean(axis=1)


def resampled_auc(labels, probabilities, indices) -> np.ndarray:
    """ROC AUC on each resample, NaN where a resample holds one label only; (R,) from indices
    (R, n).

    The Mann-Whitney form: (sum of the reliable predictions' ranks - n1 (n1 + 1) / 2) / (n1 n0),
    tied probabilities sharing their mean rank, which is scikit-learn's ``roc_auc_score``.
    """
    from scipy.stats import rankdata

    labels, probabilities = np.asarray(labels, bool), np.asarray(probabilities, float)
    chosen, scores = labels[indices], probabilities[indices]
    ranks = rankdata(scores, axis=1)
    positives = chosen.sum(axis=1).astype(float)
    negatives = chosen.shape[1] - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = ((ranks * chosen).sum(axis=1) - positives * (positives + 1) / 2) / (
            positives * negatives)
    return np.where((positives > 0) & (negatives > 0), auc, np.nan)


def percentile_interval(values, level: float = 0.95) -> list[float] | None:
    """The central ``level`` percentile interval of the finite ``values`` (numpy's linear
    percentiles), or None when there are none."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def _group_seed(seed: int, group: str) -> tuple[int, int]:
    return int(seed), int(hashlib.sha256(group.encode()).hexdigest()[:8], 16)


def group_metrics(labels, probabilities: dict, *, resamples: int = 2000, seed=0,
                  level: float = 0.95) -> dict:
    """Accuracy and ROC AUC with bootstrap intervals of one group of predictions, for each
    feature set's out-of-fold probabilities (``{set name: (n,)}``).

    Every set is resampled with the same ``resamples`` draws of the group's predictions
    (:func:`bootstrap_indices` with ``seed``), so the differences between sets are paired.
    Returns ``{set name: entry}`` and, with two or more sets, ``"difference"``: the second set
    minus the first. An entry holds ``n``, ``reliable``, ``unreliable``, ``majority_baseline``
    (the accuracy of always answering the commoner label), ``accuracy`` and
    ``accuracy_interval``, ``auc`` and ``auc_interval`` (None, with ``auc_undefined`` saying
    why, when the group holds one label only: the AUC needs both) and ``auc_resamples`` (the
    resamples holding both labels, over which the interval is taken).
    """
    labels = np.asarray(labels, bool)
    n, reliable = len(labels), int(labels.sum())
    base = {"n": n, "reliable": reliable, "unreliable": n - reliable}
    if n == 0:
        empty = {**base, "majority_baseline": None, "accuracy": None, "accuracy_interval": None,
                 "auc": None, "auc_interval": None, "auc_undefined": "no predictions"}
        return {name: dict(empty) for name in probabilities}
    indices = bootstrap_indices(n, resamples, seed)
    one_label = reliable in (0, n)
    entries, values = {}, {}
    for name, scores in probabilities.items():
        scores = np.asarray(scores, float)
        accuracy = resampled_accuracy(labels, scores, indices)
        auc = resampled_auc(labels, scores, indices)
        values[name] = (accuracy, auc)
        entry = {**base, "majority_baseline": max(reliable, n - reliable) / n,
                 "accuracy": float(((scores >= 0.5) == labels).mean()),
                 "accuracy_interval": percentile_interval(accuracy, level)}
        if one_label:
            kind = "reliable" if reliable else "unreliable"
            entry.update(auc=None, auc_interval=None, auc_resamples=0, auc_undefined=(
                f"all {n} predictions are {kind}; the ROC AUC needs reliable and unreliable ones"))
        else:
            from sklearn.metrics import roc_auc_score

            entry.update(auc=float(roc_auc_score(labels, scores)),
                         auc_interval=percentile_interval(auc, level),
                         auc_resamples=int(np.isfinite(auc).sum()))
        entries[name] = entry
    names = list(probabilities)
    if len(names) >= 2:
        first, second = entries[names[0]], entries[names[1]]
        (accuracy_a, auc_a), (accuracy_b, auc_b) = values[names[0]], values[names[1]]
        difference = {"of": f"{names[1]} - {names[0]}",
                      "accuracy": second["accuracy"] - first["accuracy"],
                      "accuracy_interval": percentile_interval(accuracy_b - accuracy_a, level)}
        if one_label:
            difference.update(auc=None, auc_interval=None)
        else:
            difference.update(auc=second["auc"] - first["auc"],
                              auc_interval=percentile_interval(auc_b - auc_a, level))
        entries["difference"] = difference
    return entries


def evaluate_reliability(rows: list[dict], *, folds: int = 5, resamples: int = 2000,
                         seed: int = 0, reliable_dice: float = RELIABLE_DICE,
                         level: float = 0.95) -> dict:
    """Cross-validated accuracy and ROC AUC of the reliability classifier on each feature set
    of :data:`FEATURE_SETS`, overall and per error source.

    ``rows`` are :data:`FEATURE_FIELDS` rows (features.csv); those with every feature are used.
    One stratified k-fold split (:func:`cross_validated_probabilities`) gives each prediction
    an out-of-fold probability from a classifier that did not see it; accuracy and AUC are
    computed on them overall and within each source ("sources", in the rows' order), with
    percentile bootstrap intervals over the predictions (:func:`group_metrics`; they cover
    which predictions were drawn, not the refitting of the classifier). ``"overall"`` and
    ``"sources"`` are the paper's features; ``"feature_sets"`` holds both sets, and
    ``"extended_minus_paper"`` their paired differences. When no classifier can be
    cross-validated (fewer than 2 predictions of a label), every metric is None and
    ``"undefined"`` says why. ``"probabilities"`` holds each used row's out-of-fold
    probabilities (``{item: {set name: p}}``), ``"roc"`` each set's overall ROC curve.
    """
    check_int(resamples, "resamples", 100)
    check_number(level, "level", 0, 1, open_low=True, open_high=True)
    names = FEATURES + EXTRA_FEATURES
    usable = [row for row in rows if all(row[name] != "" for name in names)]
    labels = np.array([float(row["prediction_dice"]) >= reliable_dice for row in usable], bool)
    sources = list(dict.fromkeys(row["source"] for row in rows))
    where = {source: np.array([row["source"] == source for row in usable], bool)
             for source in sources}
    result = {"reliable_dice": reliable_dice, "n": len(usable), "reliable": int(labels.sum()),
              "unreliable": int((~labels).sum()),
              "share_below_threshold": float(1 - labels.mean()) if len(labels) else None,
              "cross_validation": {"folds": None, "seed": seed,
                                   "classifier": "standardised features, scikit-learn "
                                                 "LogisticRegression (defaults)"},
              "bootstrap": {"resamples": resamples, "seed": seed, "level": level,
                            "kind": "percentile, over the out-of-fold predictions"}}
    rarer = int(min(labels.sum(), (~labels).sum()))
    if rarer < 2:
        reason = (f"no classifier: {int(labels.sum())} reliable and {int((~labels).sum())} "
                  "unreliable predictions; cross-validation needs at least 2 of each")
        empty = {"accuracy": None, "accuracy_interval": None, "auc": None, "auc_interval": None,
                 "undefined": reason}

        def blank(mask):
            return {"n": int(mask.sum()), "reliable": int(labels[mask].sum()),
                    "unreliable": int((~labels[mask]).sum()), **empty}

        overall = blank(np.ones(len(labels), bool))
        per_source = {source: blank(where[source]) for source in sources}
        result.update(overall=overall, sources=per_source, undefined=reason,
                      feature_sets={name: {"features": list(features), "overall": overall,
                                           "sources": per_source}
                                    for name, features in FEATURE_SETS.items()})
        return result
    probabilities = {}
    for set_name, features in FEATURE_SETS.items():
        matrix = np.array([[float(row[name]) for name in features] for row in usable])
        probabilities[set_name], splits = cross_validated_probabilities(matrix, labels, folds,
                                                                        seed, features)
    result["cross_validation"]["folds"] = splits
    groups = {"overall": np.ones(len(labels), bool), **where}
    measured = {group: group_metrics(labels[mask], {name: p[mask] for name, p in
                                                    probabilities.items()},
                                     resamples=resamples, seed=_group_seed(seed, group),
                                     level=level)
                for group, mask in groups.items()}
    sets = {name: {"features": list(features), "overall": measured["overall"][name],
                   "sources": {source: measured[source][name] for source in sources}}
            for name, features in FEATURE_SETS.items()}
    result.update(overall=sets["paper"]["overall"], sources=sets["paper"]["sources"],
                  feature_sets=sets,
                  extended_minus_paper={"overall": measured["overall"]["difference"],
                                        "sources": {source: measured[source]["difference"]
                                                    for source in sources}})
    from sklearn.metrics import roc_curve

    result["roc"] = {}
    for name, scores in probabilities.items():
        false_positive, true_positive, _ = roc_curve(labels, scores)
        result["roc"][name] = {"false_positive_rate": false_positive.tolist(),
                               "true_positive_rate": true_positive.tolist()}
    result["probabilities"] = {row["item"]: {name: float(scores[i])
                                              for name, scores in probabilities.items()}
                               for i, row in enumerate(usable)}
    return result


# -- error sources ----------------------------------------------------------------------------------

def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


@dataclasses.dataclass(frozen=True)
class GaussianNoise:
    """Gaussian noise of a standard deviation drawn from [0, ``max_sigma``] per image, then
    clipped to [0, 1]. Severity: the standard deviation."""

    max_sigma: float = 0.15
    name = "noise"

    def __post_init__(self):
        check_number(self.max_sigma, "max_sigma", 0, 5)

    def draw(self, rng: np.random.Generator) -> float:
        return _uniform(rng, 0, self.max_sigma)

    def apply(self, image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
        noise = rng.standard_normal(image.shape, np.float32)
        return np.clip(image + np.float32(severity) * noise, 0, 1)

    def settings(self) -> dict:
        return {"max_sigma": self.max_sigma}


@dataclasses.dataclass(frozen=True)
class ContrastChange:
    """Contrast scaled by a factor c drawn from [``lowest``, ``highest``] per image about each
    channel's mean m: m + c (x - m), clipped to [0, 1] (which only a factor above 1 needs).
    Severity: the factor."""

    lowest: float = 0.3
    highest: float = 1.0
    name = "contrast"

    def __post_init__(self):
        check_number(self.lowest, "lowest", 0)
        check_number(self.highest, "highest", self.lowest, 10)

    def draw(self, rng: np.random.Generator) -> float:
        return _uniform(rng, self.lowest, self.highest)

    def apply(self, image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
        axes = tuple(range(1, image.ndim))
        mean = image.mean(axis=axes, keepdims=True, dtype=np.float64)
        return np.clip(mean + severity * (image - mean), 0, 1).astype(np.float32)

    def settings(self) -> dict:
        return {"lowest": self.lowest, "highest": self.highest}


@dataclasses.dataclass(frozen=True)
class IntensityShift:
    """A shift b drawn from [-``max_shift``, ``max_shift``] added to every pixel, clipped to
    [0, 1] (an over- or under-exposed image). Severity: the shift."""

    max_shift: float = 0.25
    name = "intensity"

    def __post_init__(self):
        check_number(self.max_shift, "max_shift", 0, 1)

    def draw(self, rng: np.random.Generator) -> float:
        return _uniform(rng, -self.max_shift, self.max_shift)

    def apply(self, image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
        return np.clip(image + np.float32(severity), 0, 1)

    def settings(self) -> dict:
        return {"max_shift": self.max_shift}


def occluder_sides(fraction: float, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The sides of a box over about ``fraction`` of spatial ``shape``: each
    round(fraction^(1/d) * side); the share it hides is prod(sides) / prod(shape)."""
    return tuple(min(size, round(fraction ** (1 / len(shape)) * size)) for size in shape)


def occluder_box(fraction: float, shape: tuple[int, ...], rng: np.random.Generator
                 ) -> tuple[slice, ...]:
    """The box of :func:`occluder_sides` at a place drawn from ``rng``, wholly inside."""
    sides = occluder_sides(fraction, shape)
    starts = [int(rng.integers(0, size - side + 1)) for size, side in zip(shape, sides)]
    return tuple(slice(start, start + side) for start, side in zip(starts, sides))


@dataclasses.dataclass(frozen=True)
class Occlusion:
    """A box of constant ``value`` over a share of the image drawn from [0, ``max_fraction``]
    per image, at a random place (:func:`occluder_box`), in every channel. Severity: the share
    drawn (the box hides ``hidden_share`` of it, its sides rounded to whole pixels)."""

    max_fraction: float = 0.25
    value: float = 0.5
    name = "occlusion"

    def __post_init__(self):
        check_number(self.max_fraction, "max_fraction", 0, 1)
        check_number(self.value, "value")

    def draw(self, rng: np.random.Generator) -> float:
        return _uniform(rng, 0, self.max_fraction)

    def apply(self, image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
        hidden = image.copy()
        hidden[(slice(None), *occluder_box(severity, image.shape[1:], rng))] = self.value
        return hidden

    @staticmethod
    def hidden_share(image_shape: tuple[int, ...], severity: float) -> float:
        """The share of an image (C, *S) that the box for ``severity`` hides."""
        spatial = tuple(image_shape[1:])
        return math.prod(occluder_sides(severity, spatial)) / math.prod(spatial)

    def settings(self) -> dict:
        return {"max_fraction": self.max_fraction, "value": self.value}


@dataclasses.dataclass(frozen=True)
class Unchanged:
    """The image as it is (``name`` "clean": the model's own errors). Severity: none."""

    name: str = "clean"

    def draw(self, rng: np.random.Generator) -> float:
        return math.nan

    def apply(self, image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
        return image

    def settings(self) -> dict:
        return {}


@dataclasses.dataclass(frozen=True)
class WeakCheckpoint(Unchanged):
    """The unchanged image predicted by a weaker model: ``checkpoint`` (weights of the
    library's U-Net, e.g. an early epoch of your training, which ``testnet train`` keeps as
    ``<name>_<epoch>.pth``), or, when None, the data set's own training recipe
    (:func:`~interpret_segmentation.training.training_defaults`) run for ``epochs`` epochs,
    its schedule spread over them and no stop rule, trained once per run directory
    (``weak_model.pth``; the run's manifest records ``epochs`` and the recipe it shortens).
    On testnet one epoch gives validation Dice about 0.5: a model that segments one of the
    two left shapes whatever the context says."""

    name: str = "weak"
    checkpoint: str | None = None
    epochs: int = 1

    def __post_init__(self):
        check_positive(self.epochs, "epochs")
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise FileNotFoundError(f"weak_checkpoint: no file {self.checkpoint}")

    def settings(self) -> dict:
        if self.checkpoint is not None:
            return {"checkpoint_sha256": file_sha256(self.checkpoint)}
        return {"epochs": self.epochs}


ERROR_SOURCES = {"noise": GaussianNoise, "contrast": ContrastChange, "intensity": IntensityShift,
                 "occlusion": Occlusion, "weak": WeakCheckpoint, "clean": Unchanged}
"""The error sources by name, built with their defaults by :func:`error_sources`."""
DEFAULT_SOURCES = ("noise", "contrast", "intensity", "occlusion", "weak")
"""The error sources of a default run ("clean", the unchanged images, is left out)."""


def error_sources(sources=DEFAULT_SOURCES) -> tuple:
    """Error source objects from names ("noise,contrast", ["noise"]) or objects; ValueError
    for an unknown name or a name given twice."""
    if isinstance(sources, str):
        sources = [part.strip() for part in sources.split(",") if part.strip()]
    built = []
    for source in sources:
        if isinstance(source, str):
            if source not in ERROR_SOURCES:
                raise ValueError(f"sources: expected some of {', '.join(ERROR_SOURCES)}, got "
                                 f"{source!r}")
            source = ERROR_SOURCES[source]()
        built.append(source)
    names = [source.name for source in built]
    if not built or len(set(names)) != len(names):
        raise ValueError(f"sources: expected one or more distinct error sources, got "
                         f"{', '.join(names) or 'none'}")
    return tuple(built)


class ErrorSources:
    """Each item of ``source`` changed by each error source: item ``<name>-<key>``.

    What a source draws for an item (its severity, its noise, where its box goes) comes from
    generators seeded by ``seed``, the source's name and the item's key, so every worker and
    every rerun sees the same image, and a larger ``n`` leaves the first items as they were.
    """

    def __init__(self, source, changes: tuple, seed: int):
        self.source, self.changes, self.seed = source, tuple(changes), int(seed)
        self._keys = source.keys()

    def __len__(self) -> int:
        return len(self._keys) * len(self.changes)

    def keys(self) -> list[str]:
        return [f"{change.name}-{key}" for change in self.changes for key in self._keys]

    def _generator(self, name: str, key: str, stream: int) -> np.random.Generator:
        digits = int(hashlib.sha256(f"{name}:{key}".encode()).hexdigest()[:8], 16)
        return np.random.default_rng((self.seed, stream, digits))

    def severity(self, name: str, key: str) -> float:
        """What source ``name`` drew for the source's item ``key`` (see each source)."""
        change = next(change for change in self.changes if change.name == name)
        return change.draw(self._generator(name, key, 0))

    def item(self, position: int):
        change = self.changes[position // len(self._keys)]
        item = self.source.item(position % len(self._keys))
        severity = self.severity(change.name, item.key)
        image = change.apply(np.asarray(item.image, dtype=np.float32), severity,
                             self._generator(change.name, item.key, 1))
        return dataclasses.replace(item, key=f"{change.name}-{item.key}",
                                   image=image.astype(np.float32, copy=False))

    def describe(self) -> dict:
        return {**self.source.describe(), "seed": self.seed,
                "error_sources": {change.name: change.settings() for change in self.changes}}


# -- the study ------------------------------------------------------------------------------------

FEATURE_FIELDS = ("item", "source", "image", "severity", "prediction_pixels", "prediction_dice",
                  "reliable", *FEATURES, *EXTRA_FEATURES,
                  *(f"probability_{name}" for name in FEATURE_SETS))
"""Columns of features.csv: one row per prediction (features empty where the model predicted
nothing, so that there was nothing to explain), with what each source drew ("severity": the
noise's standard deviation, the contrast factor, the intensity shift, the share hidden) and
the out-of-fold probability of being reliable from each feature set's classifier."""
EXTRA_FIELDS = ("item", *EXTRA_FEATURES)
"""Columns of explanation_features.csv, written as each explanation comes back."""


class _FeatureTap:
    """An engine handing on another engine's results, first appending the extra features of
    each explanation (:func:`explanation_features`) to ``rows``: they need the explanation's
    masks, which the runner's rows do not keep."""

    def __init__(self, engine, rows: RowFile):
        self.engine, self.rows = engine, rows

    def run(self, work, source, missing):
        for result in self.engine.run(work, source, missing):
            found = []
            for _, _, explanation in result.explanations:
                if not explanation.info.get("nothing_to_explain"):
                    features = explanation_features(explanation)
                    found.append({"item": result.item.key,
                                  **{name: features[name] for name in EXTRA_FEATURES}})
            if found:
                self.rows.append(*found)
            yield result


def _weak_recipe(dataset_root) -> dict:
    from ..training import training_defaults

    architecture, training = training_defaults(dataset_root)
    return {"architecture": architecture, "training": training}


def _train_weak(output: OutputDirectory, dataset_root, weak: WeakCheckpoint, seed: int,
                progress: bool, log) -> Path:
    """``weak_model.pth`` in the run directory: the data set's recipe run for ``weak.epochs``
    epochs (its learning-rate schedule spread over them; its training images, or all the
    data set has when fewer), seeded by ``seed``; trained on the first call, read afterwards.
    The recipe and the validation scores of each epoch go to ``weak_model.json``."""
    from ..models.unet import UNet
    from ..training import dataset_splits, oversampling_weights, save_checkpoint, seeded, train

    path, record = output.files("weak_model.pth", "weak_model.json")
    if path.is_file():
        return path
    recipe = _weak_recipe(dataset_root)
    training = recipe["training"]
    available = len(dataset_splits(dataset_root)[0])  # a small data set: all of its part
    n_train = None if training["n_train"] is None else min(training["n_train"], available)
    train_set, val_set = dataset_splits(dataset_root, n_train, training["n_val"])
    log(f"training the weak model: {weak.epochs} epoch(s) of the data set's recipe on "
        f"{len(train_set)} images ...")
    with seeded(seed):
        model = UNet(**recipe["architecture"])
    with tempfile.TemporaryDirectory(prefix="weak-model-") as scratch:
        history = train(model, train_set, val_set, epochs=weak.epochs, lr=training["lr"],
                        batch_size=training["batch_size"], results_path=Path(scratch) / "weak.txt",
                        checkpoint_dir=scratch, checkpoint_prefix="weak", seed=seed,
                        progress=progress, augment=training["augment"],
                        schedule=training["schedule"], stop_at=None, log=log,
                        sample_weights=oversampling_weights(train_set, training["oversample"]))
    save_checkpoint(model, path, overwrite=True)
    history = [{key: value for key, value in row.items() if key != "checkpoint"}
               for row in history]
    atomic_write(record, lambda f: json.dump({**recipe, "seed": seed, "history": history}, f,
                                             indent=2), mode="w", overwrite=True)
    return path


def run_reliability(dataset_root, checkpoint, n: int = 64, out="out/reliability", *,
                    sources=DEFAULT_SOURCES, seed: int = 0, misure: dict | None = None,
                    folds: int = 5, resamples: int = 2000, reliable_dice: float = RELIABLE_DICE,
                    progress: bool = True, log=print, engine: str = "local",
                    **engine_options) -> dict:
    """``interpret-segmentation reliability``: learn when a model's predictions fail, from
    their MiSuRe explanations (seed 001, 5.5).

    Parameters
    ----------
    dataset_root : path
        A data set in the library's layout (testnet, Triangle); its first ``n`` validation
        images are used.
    checkpoint : path
        Weights of the library's U-Net for that data set.
    n : int, default 64
        Validation images per error source (5 sources x 64 = 320 predictions by default).
    out : path
        The run directory; a rerun with the same settings resumes (and may add sources),
        other settings are refused.
    sources : str or sequence, default :data:`DEFAULT_SOURCES`
        Error sources, by name (defaults of :data:`ERROR_SOURCES`) or as objects
        (:class:`GaussianNoise`, :class:`ContrastChange`, :class:`IntensityShift`,
        :class:`Occlusion`, :class:`WeakCheckpoint`, :class:`Unchanged`).
    seed : int, default 0
        Seeds what each source draws per image, the weak model's training, the folds and the
        bootstrap.
    misure : dict, optional
        MiSuRe's options (default the registry's, the paper's: 100 iterations, mask 224).
    folds : int, default 5
        Stratified cross-validation folds.
    resamples : int, default 2000
        Bootstrap resamples for the 95 % intervals.
    reliable_dice : float, default 0.9
        A prediction whose Dice with the ground truth reaches it is reliable (seed 001's 0.9).
    engine, engine_options
        Where the images are explained (:func:`~interpret_segmentation.studies.engines.
        get_engine`).

    Each changed image is predicted, its prediction's Dice with the ground truth recorded and
    the prediction explained with MiSuRe on the data-set runner; rows go to
    ``out/per_image.csv`` and the extra features to ``out/explanation_features.csv`` as they
    come (a rerun resumes). Then ``out/features.csv`` (:data:`FEATURE_FIELDS`),
    ``out/reliability.json`` (:func:`evaluate_reliability`; what the folds and the bootstrap
    use is not part of the run's settings, so a rerun with others only recomputes it),
    ``out/reliability.md`` and ``.csv`` (the table), ``out/roc.png`` and ``out/report.html``.
    Returns the dict of reliability.json, with ``predictions``, ``explained``,
    ``empty_predictions`` and ``errors`` added.
    """
    check_positive(n, "n")
    check_int(seed, "seed", 0)
    check_int(folds, "folds", 2)
    check_int(resamples, "resamples", 100)
    check_number(reliable_dice, "reliable_dice", 0, 1, open_low=True)
    changes = error_sources(sources)
    weak = [change for change in changes if isinstance(change, WeakCheckpoint)]
    plain = tuple(change for change in changes if not isinstance(change, WeakCheckpoint))
    runs = (MethodRun("misure", "misure", dict(misure or {})),)
    work = Work(ModelBuilder(str(checkpoint)), runs, save_explanations=False)
    chosen = get_engine(engine, **engine_options)
    described = {change.name: change.settings() for change in changes}
    if weak and weak[0].checkpoint is None:
        described[weak[0].name].update(_weak_recipe(dataset_root))
    settings = study_settings(checkpoint, dataset_root, work.settings(chosen)["methods"],
                              sources=described, seed=seed)
    base = ValidationSource(dataset_root, n)
    with OutputDirectory(out, "reliability", settings=settings,
                         extendable=("sources",)) as output:
        extra = RowFile(output.file("explanation_features.csv"), EXTRA_FIELDS)
        tap = _FeatureTap(chosen, extra)
        rows = []
        if plain:
            rows += run_items(output, ErrorSources(base, plain, seed), work, tap,
                              rows_name="per_image.csv", progress=progress, log=log)
        if weak:
            model = weak[0].checkpoint or _train_weak(output, dataset_root, weak[0], seed,
                                                      progress, log)
            weak_work = dataclasses.replace(work, model=ModelBuilder(str(model)))
            rows += run_items(output, ErrorSources(base, tuple(weak), seed), weak_work, tap,
                              rows_name="per_image.csv", progress=progress, log=log)
        table = _feature_rows(rows, base, changes, seed, extra.rows, reliable_dice)
        result = evaluate_reliability(table, folds=folds, resamples=resamples, seed=seed,
                                      reliable_dice=reliable_dice)
        found = result.pop("probabilities", {})
        for row in table:
            row.update({f"probability_{name}": found.get(row["item"], {}).get(name, "")
                        for name in FEATURE_SETS})
        write_csv(output.file("features.csv"), FEATURE_FIELDS, table)
        result.update(_counts(rows, table))
        atomic_write(output.file("reliability.json"),
                     lambda f: json.dump(json_ready(result), f, indent=2, allow_nan=False),
                     mode="w", overwrite=True)
        _write_tables(output, result)
        save_figure(roc_figure(result, table), output.file("roc.png"), overwrite=True)
        write_report(output.path, output=output, rows_name="per_image.csv")
    out = output.path
    log(summary_line(result) + f" ({out / 'reliability.md'}, {out / 'reliability.json'}, "
        f"{out / 'roc.png'})")
    return result


def _feature_rows(rows: list[dict], base, changes, seed: int, extra: list[dict],
                  reliable_dice: float) -> list[dict]:
    """One :data:`FEATURE_FIELDS` row per prediction that did not fail, in source then image
    order."""
    by_item = {row["item"]: row for row in rows if not row["error"]}
    more = {row["item"]: row for row in extra}  # the last one of an item explained again
    perturbed = ErrorSources(base, changes, seed)
    found = []
    for change in changes:
        for key in base.keys():
            item = f"{change.name}-{key}"
            row = by_item.get(item)
            if row is None:
                continue
            explained = row["dilations"] != "" and item in more
            severity = perturbed.severity(change.name, key)
            found.append({
                "item": item, "source": change.name, "image": key,
                "severity": "" if math.isnan(severity) else severity,
                "prediction_pixels": row["prediction_pixels"],
                "prediction_dice": row["prediction_dice"],
                "reliable": float(row["prediction_dice"]) >= reliable_dice,
                **{name: row[name] if explained else "" for name in FEATURES},
                **{name: more[item][name] if explained else "" for name in EXTRA_FEATURES}})
    return found


def _counts(rows: list[dict], table: list[dict]) -> dict:
    explained = sum(1 for row in table if row["dilations"] != "")
    return {"predictions": len(table), "explained": explained,
            "empty_predictions": sum(1 for row in table if row["prediction_pixels"] == "0"),
            "errors": sum(1 for row in rows if row["error"])}


# -- tables and figures ---------------------------------------------------------------------------

PAPER_TABLE_7 = {"accuracy": (0.77, 0.98), "auc": (0.72, 0.98), "samples": (147, 540)}
"""Seed 001's Table 7 (eight Synapse organs): the range of accuracy, ROC AUC and samples."""

TABLE_FIELDS = ("source", "predictions", "unreliable", "majority_baseline", "accuracy",
                "accuracy_low", "accuracy_high", "auc", "auc_low", "auc_high",
                "extended_accuracy", "extended_auc", "extended_auc_low", "extended_auc_high")
"""Columns of reliability.csv: per error source and overall, the paper's features, then
those with :data:`EXTRA_FEATURES` added."""


def _interval(entry: dict, key: str, side: int):
    interval = entry.get(f"{key}_interval")
    return "" if interval is None else interval[side]


def table_rows(result: dict) -> list[dict]:
    """:data:`TABLE_FIELDS` rows of a result of :func:`evaluate_reliability`: each source, then
    "overall"."""
    paper, extended = result["feature_sets"]["paper"], result["feature_sets"]["extended"]
    found = []
    for name in [*paper["sources"], "overall"]:
        entry = paper["overall"] if name == "overall" else paper["sources"][name]
        more = extended["overall"] if name == "overall" else extended["sources"][name]
        found.append({"source": name, "predictions": entry["n"], "unreliable": entry["unreliable"],
                      "majority_baseline": entry.get("majority_baseline"),
                      "accuracy": entry["accuracy"], "accuracy_low": _interval(entry, "accuracy", 0),
                      "accuracy_high": _interval(entry, "accuracy", 1), "auc": entry["auc"],
                      "auc_low": _interval(entry, "auc", 0), "auc_high": _interval(entry, "auc", 1),
                      "extended_accuracy": more["accuracy"], "extended_auc": more["auc"],
                      "extended_auc_low": _interval(more, "auc", 0),
                      "extended_auc_high": _interval(more, "auc", 1)})
    return found


def _cell(entry: dict, key: str) -> str:
    value = entry.get(key)
    if value is None:
        return "n/a"
    interval = entry.get(f"{key}_interval")
    return f"{value:.2f}" + ("" if interval is None else f" [{interval[0]:.2f}, {interval[1]:.2f}]")


def table_markdown(result: dict) -> str:
    """The table of reliability.md: per source and overall, accuracy and ROC AUC with their
    95 % intervals for both feature sets, beside seed 001's Table 7 ranges."""
    paper, extended = result["feature_sets"]["paper"], result["feature_sets"]["extended"]
    lines = ["| error source | predictions | unreliable | majority baseline | accuracy, paper "
             "features | ROC AUC, paper features | accuracy, + SR area, MSR compactness, SR "
             "Dice | ROC AUC, + those |", "|---|---|---|---|---|---|---|---|"]
    notes = []
    for name in [*paper["sources"], "overall"]:
        entry = paper["overall"] if name == "overall" else paper["sources"][name]
        more = extended["overall"] if name == "overall" else extended["sources"][name]
        baseline = entry.get("majority_baseline")
        lines.append(f"| {name} | {entry['n']} | {entry['unreliable']} | "
                     f"{'n/a' if baseline is None else f'{baseline:.2f}'} | "
                     f"{_cell(entry, 'accuracy')} | {_cell(entry, 'auc')} | "
                     f"{_cell(more, 'accuracy')} | {_cell(more, 'auc')} |")
        reason = entry.get("auc_undefined") or entry.get("undefined")
        if reason:
            notes.append(f"{name}: ROC AUC undefined, {reason}.")
    low, high = PAPER_TABLE_7["accuracy"], PAPER_TABLE_7["auc"]
    samples = PAPER_TABLE_7["samples"]
    lines.append(f"| seed 001, Table 7 (8 organs) | {samples[0]}-{samples[1]} per organ | | | "
                 f"{low[0]:.2f}-{low[1]:.2f} | {high[0]:.2f}-{high[1]:.2f} | | |")
    text = "\n".join(lines) + "\n"
    folds = result["cross_validation"]["folds"]
    text += (f"\nPredictions with Dice >= {result['reliable_dice']:g} against the ground truth "
             f"count as reliable. Out-of-fold predictions of {folds or 'no'}-fold stratified "
             "cross-validation; 95 % percentile bootstrap intervals "
             f"({result['bootstrap']['resamples']} resamples).\n")
    difference = result.get("extended_minus_paper", {}).get("overall")
    if difference and difference.get("auc") is not None:
        low_d, high_d = difference["auc_interval"]
        text += (f"\nExtra features, overall: ROC AUC {difference['auc']:+.3f} "
                 f"[{low_d:+.3f}, {high_d:+.3f}], accuracy {difference['accuracy']:+.3f} (paired "
                 "bootstrap).\n")
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    return text


def _write_tables(output: OutputDirectory, result: dict) -> None:
    write_csv(output.file("reliability.csv"), TABLE_FIELDS, table_rows(result))
    atomic_write(output.file("reliability.md"), lambda f: f.write(table_markdown(result)),
                 mode="w", overwrite=True)


def roc_figure(result: dict, rows: list[dict]):
    """Left: overall ROC curves of both feature sets; right: the paper's features per error
    source; from the out-of-fold probabilities of ``rows`` (features.csv)."""
    from sklearn.metrics import roc_curve

    figure, (left, right) = subplots(1, 2, figsize=(10, 4.6))
    for axes in (left, right):
        axes.plot([0, 1], [0, 1], color="0.8", linewidth=1)
        axes.set_xlabel("false positive rate (unreliable called reliable)")
        axes.set_ylabel("true positive rate")
        axes.set_aspect("equal")
    if result.get("undefined"):
        left.text(0.5, 0.5, "\n".join(textwrap.wrap(result["undefined"], 40)), ha="center",
                  va="center", fontsize=8)
        left.set_title("no classifier")
        return figure
    for name, curve in result["roc"].items():
        auc = result["feature_sets"][name]["overall"]["auc"]
        left.plot(curve["false_positive_rate"], curve["true_positive_rate"],
                  label=f"{name} features, AUC {auc:.2f}")
    left.legend(loc="lower right", fontsize=8)
    left.set_title(f"all error sources ({result['n']} predictions)")
    for source, entry in result["sources"].items():
        group = [row for row in rows if row["source"] == source and row["probability_paper"] != ""]
        if entry.get("auc") is None:
            continue
        false_positive, true_positive, _ = roc_curve(
            [row["reliable"] for row in group], [row["probability_paper"] for row in group])
        right.plot(false_positive, true_positive, label=f"{source}, AUC {entry['auc']:.2f}")
    right.legend(loc="lower right", fontsize=8)
    right.set_title("paper features, per error source")
    return figure


def summary_line(result: dict) -> str:
    """One line: predictions, share unreliable, overall accuracy and AUC of both sets."""
    if result.get("undefined"):
        return f"{result['n']} explained predictions; {result['undefined']}"
    paper = result["feature_sets"]["paper"]["overall"]
    extended = result["feature_sets"]["extended"]["overall"]
    return (f"{result['n']} explained predictions, {result['share_below_threshold']:.0%} below "
            f"Dice {result['reliable_dice']:g}; cross-validated accuracy {paper['accuracy']:.3f}, "
            f"ROC AUC {paper['auc']:.3f} [{paper['auc_interval'][0]:.3f}, "
            f"{paper['auc_interval'][1]:.3f}]; with the extra features {extended['accuracy']:.3f}"
            f", {extended['auc']:.3f}")
