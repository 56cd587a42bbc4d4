import numpy as np
import pytest
from oracles import PatchModel, patch_image

from interpret_segmentation import RISE
from interpret_segmentation.methods.misure import MiSuRe
from interpret_segmentation.studies.reliability import ReliabilityClassifier, reliability_features


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


def test_reliability_study_counts_the_current_n_and_refuses_other_settings(tmp_path, monkeypatch):
    from functools import partial

    import torch

    from interpret_segmentation.datasets import generate_dataset
    from interpret_segmentation.methods import misure
    from interpret_segmentation.studies import reliability
    from interpret_segmentation.training import default_unet, save_checkpoint

    monkeypatch.setattr(misure, "MiSuRe", partial(misure.MiSuRe, iterations=2, mask_size=16))

    class Fixed:  # the classifier is not under test here, only which rows reach it
        def __init__(self, seed):
            pass

        def fit(self, features, labels):
            return self

        def scores(self, features, labels):
            return {"accuracy": 1.0, "roc_auc": 1.0, "false_positive_rate": [0.0, 1.0],
                    "true_positive_rate": [0.0, 1.0]}

    monkeypatch.setattr(reliability, "ReliabilityClassifier", Fixed)
    torch.manual_seed(0)
    model = default_unet()
    with torch.no_grad():
        model.head.bias.fill_(5.0)  # predicts the whole image: every image is explained
    checkpoint = save_checkpoint(model, tmp_path / "model.pth")
    dataset = generate_dataset(tmp_path / "data", n=30, size=48, progress=False)
    out = tmp_path / "reliability"
    lines = []
    run = partial(reliability.run_reliability, dataset, checkpoint, out=out, progress=False,
                  log=lines.append)
    assert run(n=5)["images"] == 5
    lines.clear()
    assert run(n=4)["images"] == 4  # the first 4 of the 5 rows, none computed again
    assert lines[0] == "resuming: 4 of 4 items already done" and not lines[1:-1]
    assert len((out / "per_image.csv").read_text().splitlines()) == 6  # header and 5 rows kept
    assert len((out / "features.csv").read_text().splitlines()) == 5  # the first 4
    for changed, named in (({"noise": 0.2}, "noise: 0.08 there, 0.2 now"),
                           ({"seed": 1}, "seed: 0 there, 1 now")):
        with pytest.raises(ValueError, match=f"--out: {out} holds .*{named}"):
            run(n=4, **changed)
    torch.manual_seed(1)
    save_checkpoint(default_unet(), checkpoint)
    with pytest.raises(ValueError, match="checkpoint_sha256"):
        run(n=4)
