import json

from interpret_segmentation import reproduce


def test_lrp_reproduction_writes_every_combination_and_resumes(tmp_path, monkeypatch):
    tiny = dict(n=40, size=64, width=2, classifier_epochs=1, unet_epochs=1, batch_size=8,
                conv_lr=1e-3, fc_lr=1e-3, dropout=0.0)
    monkeypatch.setitem(reproduce.SETTINGS, "quick", tiny)
    lines = []
    metrics = reproduce.run_lrp_reproduction(tmp_path / "r", quick=True, progress=False,
                                             log=lines.append)
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["segmentation"] == metrics["segmentation"]
    assert set(saved["classifiers"]) == {"128N", "onefc"}
    for scores in saved["classifiers"].values():
        assert set(scores) == {"balanced_accuracy", "tpr", "tnr"}
    combinations = {f"{h}/{r}/{m}" for h in ("128N", "onefc") for r in ("montavon", "seibold")
                    for m in ("simple", "gmm", "bmm")}
    assert set(saved["segmentation"]) == combinations | {"unet"}
    for scores in saved["segmentation"].values():
        assert all(0.0 <= scores[k] <= 1.0 for k in ("iou", "precision", "recall"))
    assert (tmp_path / "r" / "pr_curves.png").stat().st_size > 0
    assert (tmp_path / "r" / "examples.png").stat().st_size > 0
    lines.clear()
    again = reproduce.run_lrp_reproduction(tmp_path / "r", quick=True, progress=False,
                                           log=lines.append)
    assert sum("reusing" in line for line in lines) == 3  # both classifiers and the U-Net
    assert again["segmentation"] == metrics["segmentation"]


def test_pooled_scores_by_hand():
    import numpy as np

    prediction = [np.array([[1, 1], [0, 0]], bool), np.zeros((2, 2), bool)]
    truth = [np.array([[1, 0], [0, 0]], bool), np.array([[0, 0], [0, 1]], bool)]
    assert reproduce._pooled_scores(prediction, truth) == {"iou": 1 / 3, "precision": 1 / 2,
                                                          "recall": 1 / 2}
