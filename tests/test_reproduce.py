import json

import numpy as np
import pytest
import torch

from interpret_segmentation.studies import reproduce
from interpret_segmentation.training import load_checkpoint


def test_lrp_reproduction_writes_every_combination_and_resumes(tmp_path, monkeypatch):
    tiny = dict(n=40, size=64, width=2, classifier_epochs=1, finetune_epochs=1, unet_epochs=1,
                batch_size=8, conv_lr=1e-3, trunk_lr=1e-4, fc_lr=1e-3, dropout=0.0)
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
    monkeypatch.setitem(reproduce.SETTINGS, "quick", {**tiny, "unet_epochs": 2})
    with pytest.raises(ValueError, match=r"settings\.unet_epochs: 1 there, 2 now"):
        reproduce.run_lrp_reproduction(tmp_path / "r", quick=True, progress=False)


def test_pooled_scores_by_hand():
    import numpy as np

    prediction = [np.array([[1, 1], [0, 0]], bool), np.zeros((2, 2), bool)]
    truth = [np.array([[1, 0], [0, 0]], bool), np.array([[0, 0], [0, 1]], bool)]
    assert reproduce.lrp._pooled_scores(prediction, truth) == {"iou": 1 / 3, "precision": 1 / 2,
                                                          "recall": 1 / 2}


def test_deepdream_reproduction_writes_metrics_and_figures_and_resumes(tmp_path, monkeypatch):
    from interpret_segmentation.studies.reproduce import deepdream

    # fine-tuning at a vanishing learning rate leaves every G_p at G_0's weights
    tiny = dict(size=32, n_train=8, n_val=4, n_test=4, epochs=1, width=2, depth=2,
                batch_size=4, lr=1e-3, finetune_epochs=1, finetune_lr=1e-12, dream_steps=3,
                step_size=0.01, dream_starts=2)
    monkeypatch.setitem(deepdream.SETTINGS, "quick", tiny)
    lines = []
    metrics = deepdream.run_deepdream_reproduction(tmp_path / "d", quick=True, progress=False,
                                                   log=lines.append)
    saved = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert set(saved["marking"]) == {"0.0", "0.2", "0.5", "0.8", "0.9", "1.0"}
    for row in saved["marking"].values():
        assert 0.0 <= row["dice_unmarked"] <= 1.0
        assert len(row["characteristic_final_per_start"]) == 2
        assert row["characteristic_final"] == pytest.approx(np.mean(
            row["characteristic_final_per_start"]))
    weights = {}
    for p in ("0.0", "0.2", "1.0"):
        model = deepdream._unet(tiny, 0)
        load_checkpoint(model, tmp_path / "d" / "models" / f"marking_p{p}.pth")
        weights[p] = torch.cat([w.flatten() for n, w in model.named_parameters()])
    initial = torch.cat([w.flatten() for w in deepdream._unet(tiny, 0).parameters()])
    assert (weights["0.0"] - initial).abs().max() > 1e-5  # G_0 trained from its initialisation
    for p in ("0.2", "1.0"):
        assert torch.allclose(weights[p], weights["0.0"], atol=1e-8)
    assert set(saved["shape"]) == {"round", "elongated"}
    assert set(saved["intensity"]) == {"real", "synthetic"}
    rho = saved["marking_rank_correlation"]["spearman_rho"]
    assert rho is None or -1.0 <= rho <= 1.0
    for name in ("marking_dreams", "marking_summary", "lesion_dreams", "lesion_curves"):
        assert (tmp_path / "d" / f"{name}.png").stat().st_size > 0
    lines.clear()
    again = deepdream.run_deepdream_reproduction(tmp_path / "d", quick=True, progress=False,
                                                 log=lines.append)
    assert sum("reusing" in line for line in lines) == 9  # 6 marking + 3 lesion networks
    assert again["marking"] == metrics["marking"]


def test_rank_correlation_by_hand_and_when_undefined():
    from interpret_segmentation.studies.reproduce.deepdream import _rank_correlation

    rows = [{"dice_unmarked": d, "characteristic_final": c}
            for d, c in ((0.9, 0.1), (0.8, 0.3), (0.5, 0.2), (0.3, 0.9))]
    assert abs(_rank_correlation(rows)["spearman_rho"] - (-0.8)) < 1e-12  # 1 - 6*2/(4*15)
    constant = [{"dice_unmarked": 0.5, "characteristic_final": c} for c in (0.1, 0.2)]
    assert _rank_correlation(constant) == {"spearman_rho": None, "p_value": None}


def test_mean_curve_skips_nan_and_extends_stopped_paths():
    from interpret_segmentation.studies.reproduce.deepdream import _nanmean

    nan = float("nan")
    mean = _nanmean([[1.0, 2.0, 3.0], [3.0, nan, 5.0], [5.0]])  # the last path stopped early
    assert np.allclose(mean, [3.0, 3.5, 13.0 / 3])
    assert np.isnan(_nanmean([[nan, 1.0], [nan, 3.0]])[0])


def test_dreamed_lesion_is_the_component_most_inside_the_region():
    from interpret_segmentation.studies.reproduce.deepdream import dreamed_lesion

    mask = np.zeros((20, 20), dtype=bool)
    mask[2:4, 2:4] = True          # a speck away from the region
    mask[8:12, 6:16] = True        # the lesion through the region
    mask[12, 16] = True            # diagonal neighbour: the same 8-connected lesion
    mask[15:19, 9:11] = True       # a second blob touching the region less
    region = np.zeros_like(mask)
    region[9:17, 9:11] = True      # 6 lesion pixels, 4 of the second blob
    expected = np.zeros_like(mask)
    expected[8:12, 6:16] = True
    expected[12, 16] = True
    assert np.array_equal(dreamed_lesion(mask, region), expected)
    assert not dreamed_lesion(mask, np.zeros_like(mask)).any()
    assert not dreamed_lesion(np.zeros_like(mask), region).any()
