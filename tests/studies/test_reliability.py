import json
import math
from functools import partial

import numpy as np
import pytest
import torch
from oracles import PatchModel, patch_image

from interpret_segmentation import RISE
from interpret_segmentation.methods.misure import MiSuRe
from interpret_segmentation.studies import reliability
from interpret_segmentation.studies.reliability import (
    ContrastChange,
    ErrorSources,
    GaussianNoise,
    IntensityShift,
    Occlusion,
    ReliabilityClassifier,
    WeakCheckpoint,
    cross_validated_probabilities,
    evaluate_reliability,
    explanation_features,
    group_metrics,
    percentile_interval,
    reliability_features,
    resampled_accuracy,
    resampled_auc,
)


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
    result = classifier.scores(*synthetic(100, 1))
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
    every = explanation_features(explanation)
    sr, prediction = explanation.arrays["sr_mask"] != 0, explanation.arrays["target_pixels"]
    assert every["sr_area"] == sr.sum() / sr.size
    assert every["sr_dice"] == pytest.approx(2 * prediction.sum() / (prediction.sum() + sr.sum()))
    assert 0 < every["msr_compactness"] <= 1
    assert reliability_features(explanation, ("sr_dice", "dilations")).tolist() == [
        every["sr_dice"], every["dilations"]]
    classifier = ReliabilityClassifier().fit(*synthetic(50, 2))
    assert 0 <= classifier.probability_of(explanation) <= 1
    with pytest.raises(ValueError, match="MiSuRe"):
        reliability_features(RISE(PatchModel(), n_masks=4, s=4, progress=False).explain(
            patch_image()))


def test_extra_features_of_hand_made_masks():
    from interpret_segmentation.core import Explanation

    prediction = np.zeros((20, 20), bool)
    prediction[5:9, 5:9] = True  # 16 pixels
    sufficient = np.zeros((20, 20), np.uint8)
    sufficient[4:10, 4:10] = 1  # 36 pixels, holding the prediction
    minimal = np.zeros((20, 20), np.float32)
    minimal[0, 0] = minimal[19, 19] = 0.5  # two lone pixels
    explanation = Explanation(
        np.zeros((20, 20), np.float32), method="misure", target_class=1,
        arrays={"sr_mask": sufficient, "msr_mask": minimal, "target_pixels": prediction},
        info={"dilations": 1, "dice_explained": 0.5, "perturbation_ratio": 2 / 16})
    every = explanation_features(explanation)
    assert every["sr_area"] == 36 / 400
    assert every["sr_dice"] == pytest.approx(2 * 16 / (16 + 36))
    # two lone pixels: contours of two diamonds, each area 1/2 and perimeter 4 * sqrt(2) / 2
    assert every["msr_compactness"] == pytest.approx(2 * math.sqrt(math.pi * 1.0) / (4 * math.sqrt(2)))
    minimal[:] = 0
    assert explanation_features(explanation)["msr_compactness"] == 0.0


def test_bad_input():
    classifier = ReliabilityClassifier()
    with pytest.raises(ValueError, match=r"features: expected an array \(N, 3\)"):
        classifier.fit(np.zeros((4, 2)), [True, False, True, False])
    with pytest.raises(ValueError, match="labels: need both"):
        classifier.fit(np.zeros((4, 3)), [True] * 4)
    with pytest.raises(ValueError, match="labels: expected 4 values"):
        classifier.fit(np.zeros((4, 3)), [True, False])
    with pytest.raises(ValueError, match="features: expected distinct names"):
        ReliabilityClassifier(features=("dilations", "area"))
    with pytest.raises(ValueError, match="sources: expected some of"):
        reliability.error_sources("noise,blur")
    with pytest.raises(ValueError, match="max_sigma"):
        GaussianNoise(-1)
    with pytest.raises(FileNotFoundError, match="weak_checkpoint"):
        WeakCheckpoint(checkpoint="/nonexistent/weak.pth")


# -- error sources ---------------------------------------------------------------------------

def test_occlusion_hides_the_stated_share():
    rng = np.random.default_rng(0)
    for shape, fraction in (((1, 40, 50), 0.25), ((2, 40, 50), 0.1), ((1, 8, 10, 12), 0.3),
                            ((1, 30, 30), 0.0)):
        image = np.ones(shape, np.float32)
        hidden = Occlusion(value=0.0).apply(image, fraction, rng)
        share = Occlusion.hidden_share(shape, fraction)
        assert (hidden == 0).mean() == pytest.approx(share)  # in every channel
        assert (hidden == 0).all(axis=0).mean() == pytest.approx(share)
        sides = [round(fraction ** (1 / (len(shape) - 1)) * s) for s in shape[1:]]
        assert share == math.prod(sides) / math.prod(shape[1:])
        assert abs(share - fraction) < 0.05
        changed = np.argwhere((hidden == 0).all(axis=0))
        if len(changed):  # one box: its bounding box is full
            extent = changed.max(0) - changed.min(0) + 1
            assert extent.tolist() == sides
    assert Occlusion.hidden_share((1, 100, 100), 0.25) == 0.25  # 50 x 50


def test_contrast_and_intensity_changes_are_exact():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, (2, 6, 7)).astype(np.float32)
    changed = ContrastChange(0.3).apply(image, 0.4, rng)
    mean = image.astype(np.float64).mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(changed, mean + 0.4 * (image - mean), atol=1e-6)
    np.testing.assert_allclose(changed.mean(axis=(1, 2)), mean[:, 0, 0], atol=1e-6)
    np.testing.assert_allclose(ContrastChange(0.3).apply(image, 1.0, rng), image, atol=1e-6)
    assert changed.dtype == np.float32
    shifted = IntensityShift(0.25).apply(image, 0.2, rng)
    np.testing.assert_array_equal(shifted, np.clip(image + np.float32(0.2), 0, 1))
    assert IntensityShift().apply(np.array([[[0.1, 0.9]]], np.float32), -0.2, rng).tolist() == \
        [[[0.0, pytest.approx(0.7)]]]
    flat = np.full((1, 200, 200), 0.5, np.float32)
    noisy = GaussianNoise(0.2).apply(flat, 0.1, rng)
    assert (noisy - flat).std() == pytest.approx(0.1, rel=0.03)
    np.testing.assert_array_equal(GaussianNoise(0.2).apply(flat, 0.0, rng), flat)


class Squares:
    """A source of n images (1, 12, 12) of value (k + 1) / 10, ground truth the top left."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def keys(self):
        return [str(k) for k in range(self.n)]

    def item(self, position):
        from interpret_segmentation.datasets.sources import DatasetItem

        mask = np.zeros((12, 12), bool)
        mask[:4, :4] = True
        return DatasetItem(str(position), np.full((1, 12, 12), (position + 1) / 10, np.float32),
                           mask)

    def describe(self):
        return {"kind": "squares", "n": self.n}


def test_error_sources_draw_per_item_and_repeat():
    changes = (GaussianNoise(0.2), ContrastChange(0.5, 0.8), IntensityShift(0.3),
               Occlusion(0.2, 1.0), WeakCheckpoint())
    source = ErrorSources(Squares(4), changes, seed=3)
    assert len(source) == 20
    assert source.keys()[:5] == ["noise-0", "noise-1", "noise-2", "noise-3", "contrast-0"]
    items = [source.item(p) for p in range(len(source))]
    assert [item.key for item in items] == source.keys()
    again = ErrorSources(Squares(6), changes, seed=3)  # a larger n keeps the first items
    for position, item in enumerate(items):
        other = again.item((position // 4) * 6 + position % 4)
        assert other.key == item.key
        np.testing.assert_array_equal(other.image, item.image)
        np.testing.assert_array_equal(item.mask, Squares(4).item(position % 4).mask)
    for key in map(str, range(4)):
        assert 0 <= source.severity("noise", key) <= 0.2
        assert 0.5 <= source.severity("contrast", key) <= 0.8
        assert -0.3 <= source.severity("intensity", key) <= 0.3
        assert math.isnan(source.severity("weak", key))
    severities = [source.severity("noise", key) for key in map(str, range(4))]
    assert len(set(severities)) == 4
    assert ErrorSources(Squares(4), changes, seed=4).severity("noise", "0") != severities[0]
    flat = items[8]  # intensity, image 0 of value 0.1: shifted exactly, then clipped
    assert flat.image == pytest.approx(np.clip(0.1 + source.severity("intensity", "0"), 0, 1))
    np.testing.assert_array_equal(items[16].image, Squares(4).item(0).image)  # weak: unchanged
    hidden = items[12].image == 1.0  # occlusion of value 1 on an image of 0.1
    assert hidden.mean() == pytest.approx(Occlusion.hidden_share((1, 12, 12),
                                                                 source.severity("occlusion", "0")))


# -- cross-validation and bootstrap -----------------------------------------------------------

def test_cross_validation_and_bootstrap_agree_with_scikit_learn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = synthetic(90, 5)
    features[:, 1] += np.random.default_rng(6).normal(0, 0.05, 90)  # overlapping classes
    probabilities, folds = cross_validated_probabilities(features, labels, 5, seed=7)
    expected = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(random_state=7)),
                                 features, labels, cv=StratifiedKFold(5, shuffle=True,
                                                                      random_state=7),
                                 method="predict_proba")[:, 1]
    assert folds == 5
    np.testing.assert_allclose(probabilities, expected, atol=1e-12)

    indices = np.random.default_rng(8).integers(0, 90, (60, 90))
    naive_auc = [roc_auc_score(labels[i], probabilities[i]) if 0 < labels[i].sum() < 90
                 else np.nan for i in indices]
    naive_accuracy = [accuracy_score(labels[i], probabilities[i] >= 0.5) for i in indices]
    np.testing.assert_allclose(resampled_auc(labels, probabilities, indices), naive_auc,
                               atol=1e-12)
    np.testing.assert_allclose(resampled_accuracy(labels, probabilities, indices),
                               naive_accuracy, atol=1e-12)
    ties = np.round(probabilities, 1)  # tied scores share their mean rank, as in scikit-learn
    np.testing.assert_allclose(resampled_auc(labels, ties, indices[:30]),
                               [roc_auc_score(labels[i], ties[i]) for i in indices[:30]],
                               atol=1e-12)
    assert percentile_interval(naive_auc) == pytest.approx(
        np.percentile(naive_auc, [2.5, 97.5]).tolist())

    entry = group_metrics(labels, {"a": probabilities, "b": ties}, resamples=60, seed=9)
    a, b = entry["a"], entry["b"]
    assert a["accuracy"] == accuracy_score(labels, probabilities >= 0.5)
    assert a["auc"] == pytest.approx(roc_auc_score(labels, probabilities))
    drawn = np.random.default_rng(9).integers(0, 90, (60, 90))
    assert a["auc_interval"] == pytest.approx(percentile_interval(
        [roc_auc_score(labels[i], probabilities[i]) for i in drawn]))
    assert a["auc_interval"][0] <= a["auc"] <= a["auc_interval"][1]
    assert a["n"] == 90 and a["reliable"] == labels.sum() and a["auc_resamples"] == 60
    assert entry["difference"]["auc"] == pytest.approx(b["auc"] - a["auc"])
    paired = [roc_auc_score(labels[i], ties[i]) - roc_auc_score(labels[i], probabilities[i])
              for i in drawn]
    assert entry["difference"]["auc_interval"] == pytest.approx(percentile_interval(paired))

    few = np.array([True, True, True] + [False] * 20)  # 3 reliable: 3 folds
    assert cross_validated_probabilities(np.arange(23.0)[:, None].repeat(3, 1), few, 5)[1] == 3
    with pytest.raises(ValueError, match="at least 2 of each"):
        cross_validated_probabilities(np.zeros((5, 3)), [True] + [False] * 4)


def rows_of(features, labels, sources):
    names = reliability.FEATURES + reliability.EXTRA_FEATURES
    return [{"item": f"{source}-{k}", "source": source, "prediction_dice": 0.95 if label else 0.5,
             **{name: float(value) for name, value in zip(names, np.r_[row, row])}}
            for k, (row, label, source) in enumerate(zip(features, labels, sources))]


def test_a_source_of_one_label_has_no_auc_and_says_why():
    features, labels = synthetic(80, 10)
    sources = np.where(np.arange(80) < 60, "noise", "clean")
    labels[60:] = True  # every clean prediction reliable
    result = evaluate_reliability(rows_of(features, labels, sources), resamples=200)
    json.dumps(result, allow_nan=False)
    clean = result["sources"]["clean"]
    assert clean["auc"] is None and clean["auc_interval"] is None
    assert clean["auc_undefined"] == ("all 20 predictions are reliable; the ROC AUC needs "
                                      "reliable and unreliable ones")
    assert 0 <= clean["accuracy"] <= 1 and clean["n"] == 20 and clean["unreliable"] == 0
    assert result["sources"]["noise"]["auc"] > 0.9
    assert result["overall"]["n"] == 80 and len(result["overall"]["auc_interval"]) == 2
    assert result["extended_minus_paper"]["sources"]["clean"]["auc"] is None
    assert "n/a" in reliability.table_markdown(result)

    everything_reliable = evaluate_reliability(rows_of(features, np.ones(80, bool), sources),
                                               resamples=200)
    json.dumps(everything_reliable, allow_nan=False)
    assert everything_reliable["overall"]["auc"] is None
    assert everything_reliable["overall"]["accuracy"] is None
    assert "80 reliable and 0 unreliable" in everything_reliable["undefined"]
    assert everything_reliable["sources"]["clean"]["undefined"] == everything_reliable["undefined"]


# -- the study, end to end --------------------------------------------------------------------

def tiny_model(checkpoint, dataset, depth=None, share=0.9):
    """A seeded random U-Net whose (amplified) output varies with the image, predicting about
    1 - ``share`` of the pixels of ``dataset``'s first validation images."""
    from interpret_segmentation.models.unet import UNet
    from interpret_segmentation.studies.work import ValidationSource
    from interpret_segmentation.training import DEFAULT_MODEL, save_checkpoint, seeded

    with seeded(0):
        model = UNet(**{**DEFAULT_MODEL, **({} if depth is None else {"depth": depth})}).eval()
    source = ValidationSource(dataset, 4)
    images = torch.from_numpy(np.stack([source.item(p).image for p in range(len(source))]))
    with torch.no_grad():
        model.head.weight.mul_(1000)
        model.head.bias.sub_(float(np.quantile(model(images).numpy(), share)))
    return save_checkpoint(model, checkpoint)


def test_tiny_testnet_run_resumes_refuses_other_settings_and_reports(tmp_path):
    from interpret_segmentation.datasets import generate_dataset

    dataset = generate_dataset(tmp_path / "data", n=30, size=48, progress=False)
    checkpoint = tiny_model(tmp_path / "model.pth", dataset, share=0.6)
    weaker = str(tiny_model(tmp_path / "weak.pth", dataset, share=0.3))
    out = tmp_path / "reliability"
    lines = []
    run = partial(reliability.run_reliability, dataset, checkpoint, out=out, progress=False,
                  log=lines.append, misure={"iterations": 2, "mask_size": 16, "batch_size": 4},
                  resamples=200)
    sources = [GaussianNoise(), Occlusion(), WeakCheckpoint(checkpoint=weaker)]
    first = run(n=4, sources=sources)
    assert first["predictions"] == 12 and first["errors"] == 0
    assert first["explained"] + first["empty_predictions"] == 12
    assert not (out / "weak_model.pth").exists()  # given, not trained
    features = (out / "features.csv").read_text().splitlines()
    assert features[0].split(",") == list(reliability.FEATURE_FIELDS) and len(features) == 13
    dice = sorted(float(line.split(",")[5]) for line in features[1:] if line.split(",")[7])
    assert len(set(dice)) > 2

    lines.clear()  # a threshold between the predictions' Dice: both labels, nothing recomputed
    middle = (dice[len(dice) // 2 - 1] + dice[len(dice) // 2]) / 2
    result = run(n=4, sources=sources, reliable_dice=middle, folds=2)
    assert [line for line in lines if line.startswith("resuming")] == [
        "resuming: 8 of 8 items already done", "resuming: 4 of 4 items already done"]
    assert not any(line.startswith(("item ", "training")) for line in lines)
    assert result["cross_validation"]["folds"] == 2
    assert result["overall"]["n"] == first["explained"]
    assert set(result["sources"]) == {"noise", "occlusion", "weak"}
    for entry in [result["overall"], *result["sources"].values()]:
        assert set(entry) >= {"accuracy", "auc", "auc_interval", "n"}
        assert entry["auc"] is None or 0 <= entry["auc"] <= 1
    saved = json.loads((out / "reliability.json").read_text())
    assert saved["overall"] == result["overall"]
    assert set(saved["feature_sets"]) == {"paper", "extended"}
    table = (out / "reliability.md").read_text()
    assert "| overall |" in table and "seed 001, Table 7" in table
    assert (out / "roc.png").stat().st_size > 0 and (out / "report.html").is_file()

    lines.clear()  # another source joins the run; the others are not explained again
    assert run(n=4, sources=[*sources, ContrastChange()])["predictions"] == 16
    assert "resuming: 8 of 12 items already done" in lines
    for changed, named in (({"sources": [GaussianNoise(0.3)]}, r"sources\.noise\.max_sigma: "
                            r"0\.15 there, 0\.3 now"), ({"seed": 1}, "seed: 0 there, 1 now"),
                           ({"misure": {"iterations": 3}}, "iterations: 2 there, 3 now")):
        with pytest.raises(ValueError, match=f"--out: {out} holds .*{named}"):
            run(n=4, **changed)
    with pytest.raises(ValueError, match="sources.weak.checkpoint_sha256"):
        run(n=4, sources=[WeakCheckpoint(checkpoint=str(checkpoint))])
    with pytest.raises(ValueError, match="sources.weak.checkpoint_sha256: .* there, null now"):
        run(n=4, sources="weak")  # the weak model would be trained now: another model


def test_tiny_triangle_run_trains_the_triangle_recipe(tmp_path):
    from interpret_segmentation.datasets import generate_triangle_dataset
    from interpret_segmentation.training import training_defaults

    dataset = generate_triangle_dataset(tmp_path / "triangle", n=10, size=96, progress=False)
    checkpoint = tiny_model(tmp_path / "triangle.pth", dataset, depth=5)
    lines = []
    run = partial(reliability.run_reliability, dataset, checkpoint, 2, tmp_path / "out",
                  sources="intensity,weak", progress=False, log=lines.append,
                  misure={"iterations": 2, "mask_size": 16}, resamples=100)
    assert run()["predictions"] == 4
    assert any(line.startswith("training the weak model: 1 epoch(s)") for line in lines)
    weak = json.loads((tmp_path / "out" / "weak_model.json").read_text())
    architecture, training = training_defaults(dataset)
    assert weak["architecture"] == architecture and weak["training"] == training
    assert len(weak["history"]) == 1 and weak["architecture"]["depth"] == 5
    trained = (tmp_path / "out" / "weak_model.pth").read_bytes()
    lines.clear()
    assert run()["predictions"] == 4  # the weak model is read, not trained again
    assert not any(line.startswith("training") for line in lines)
    assert (tmp_path / "out" / "weak_model.pth").read_bytes() == trained
    from interpret_segmentation.core.io import MANIFEST

    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["commands"]["reliability"]["settings"]["sources"]["weak"]["epochs"] == 1


def test_cli_refuses_bad_input_in_one_line(capsys):
    from interpret_segmentation.cli import main

    for flags, said in ((["--sources", "noise,blur"], "--sources: expected some of"),
                        (["--contrast", "2"], "--contrast: expected a number in [0, 1]"),
                        (["--folds", "1"], "--folds: expected an int >= 2"),
                        (["--reliable-dice", "0"], "--reliable-dice"),
                        (["--weak-checkpoint", "/nonexistent.pth"], "weak_checkpoint: no file")):
        assert main(["reliability", "--dataset", "/nonexistent", *flags]) == 2
        error = capsys.readouterr().err
        assert said in error and len(error.strip().splitlines()) == 1
