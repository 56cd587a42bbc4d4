import json

import numpy as np
import pytest
import torch

from interpret_segmentation.studies import reproduce


def test_lrp_reproduction_writes_every_combination_and_resumes(tmp_path, monkeypatch):
    tiny = dict(n=40, size=64, style="tile", width=2, classifier_epochs=1, finetune_epochs=1,
                budgets=[4, 6], unet_steps=2, unet_lr=3e-3, batch_size=8, conv_lr=1e-3,
                trunk_lr=1e-4, fc_lr=1e-3, dropout=0.0)
    monkeypatch.setitem(reproduce.SETTINGS, "quick", tiny)
    lines = []
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    metrics = reproduce.run_lrp_reproduction(tmp_path / "r", quick=True, progress=False,
                                             log=lines.append)
    assert torch.equal(torch.get_rng_state(), torch_state)  # the global generators untouched
    assert np.array_equal(np.random.get_state()[1], numpy_state)
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["segmentation"] == metrics["segmentation"]
    assert set(saved["classifiers"]) == {"128N", "onefc"}
    for scores in saved["classifiers"].values():
        assert set(scores) == {"balanced_accuracy", "tpr", "tnr"}
    rule_sets = {f"{r}{e}{p}" for r in ("montavon", "seibold") for e in ("", "-rms")
                 for p in ("", "-avgpool")}
    combinations = {f"{h}/{r}{f}/{m}{refined}" for h in ("128N", "onefc") for r in rule_sets
                    for f in ("", "-flips") for m in ("simple", "gmm", "bmm")
                    for refined in ("", "-refined")}
    assert set(saved["segmentation"]) == combinations | {"unet/4", "unet/6"}
    assert set(saved["segmentation_defective"]) == set(saved["segmentation"])
    for scores in [*saved["segmentation"].values(), *saved["segmentation_defective"].values(),
                   saved["annotation"]]:
        assert all(0.0 <= scores[k] <= 1.0 for k in ("iou", "precision", "recall"))
    assert saved["annotation"]["recall"] == 1.0  # scored against the true defects it contains
    best = saved["segmentation"][saved["settings"]["best"]]["iou"]
    assert best == max(v["iou"] for k, v in saved["segmentation"].items() if "unet" not in k)
    assert saved["iou_gap"] == {k: saved["segmentation"][k]["iou"] - best
                                for k in ("unet/4", "unet/6")}
    own = saved["settings"]["best_seed003"]  # the seed's pipeline: no flips, no refinement
    assert "-flips" not in own and "-refined" not in own
    own_iou = saved["segmentation"][own]["iou"]
    assert own_iou == max(v["iou"] for k, v in saved["segmentation"].items()
                          if "unet" not in k and "-flips" not in k and "-refined" not in k)
    assert saved["iou_gap_seed003"] == {k: saved["segmentation"][k]["iou"] - own_iou
                                        for k in ("unet/4", "unet/6")}
    assert set(saved["settings"]["rule_sets"]) == rule_sets
    assert saved["settings"]["zbox_bounds"] == [0.0, 1.0]
    assert set(saved["timings"]) == {"data", "classifiers", "unets", "lrp", "figures"}
    assert (tmp_path / "r" / "pr_curves.png").stat().st_size > 0
    assert (tmp_path / "r" / "examples.png").stat().st_size > 0
    lines.clear()
    again = reproduce.run_lrp_reproduction(tmp_path / "r", quick=True, progress=False,
                                           log=lines.append)
    assert sum("reusing" in line for line in lines) == 4  # both classifiers and U-Nets
    assert again["segmentation"] == metrics["segmentation"]
    monkeypatch.setitem(reproduce.SETTINGS, "quick", {**tiny, "unet_steps": 3})
    with pytest.raises(ValueError, match=r"settings\.unet_steps: 2 there, 3 now"):
        reproduce.run_lrp_reproduction(tmp_path / "r", quick=True, progress=False)


def test_pooled_scores_by_hand():
    import numpy as np

    prediction = [np.array([[1, 1], [0, 0]], bool), np.zeros((2, 2), bool)]
    truth = [np.array([[1, 0], [0, 0]], bool), np.array([[0, 0], [0, 1]], bool)]
    assert reproduce.lrp._pooled_scores(prediction, truth) == {"iou": 1 / 3, "precision": 1 / 2,
                                                          "recall": 1 / 2}


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


# -- figures: plain Figure objects, no pyplot, no backend chosen ---------------------------------

_FIGURE_INPUTS = """
from types import SimpleNamespace
import numpy as np
import torch
from interpret_segmentation.studies.reproduce import deepdream, lrp

rng = np.random.default_rng(0)
def path(steps):
    return SimpleNamespace(steps_taken=steps, images=rng.random((steps + 1, 1, 8, 8)),
                           masks=rng.random((steps + 1, 8, 8)) > 0.5)
features = ("elongation", "max_diameter", "mean_intensity", "rms_intensity")
dream_args = dict(
    marking_paths={0.0: path(3), 1.0: path(2)},
    characteristic_curves={0.0: [np.linspace(0, 1, 4)], 1.0: [np.linspace(1, 0, 3)] * 2},
    metrics={"marking": {
                 "0.0": {"dice_unmarked": 0.9, "characteristic_final": 0.1,
                         "seeds": [{"dice_unmarked": 0.9, "characteristic_final": 0.1}]},
                 "1.0": {"dice_unmarked": 0.2, "characteristic_final": 0.8,
                         "seeds": [{"dice_unmarked": 0.2, "characteristic_final": 0.8}]}},
             "rank_correlation": {"rho": -1.0, "p_value": 0.0, "interval": [-1.0, -1.0],
                                  "level": 0.95}},
    lesion_paths={"round": path(3), "elongated": path(1)},
    lesion_curves={name: {f: rng.normal(size=4) for f in features}
                   for name in ("round", "elongated")})
images = torch.rand(6, 1, 8, 8)
truths = [rng.random((8, 8)) > 0.5 for _ in range(6)]
maps = rng.normal(size=(6, 8, 8))
lrp_args = dict(
    curves={"128N/montavon": (np.linspace(1, 0, 5), np.linspace(0, 1, 5)),
            "onefc/seibold-rms": (np.linspace(1, 0, 5), np.full(5, 0.5))},
    unets={"unet/60": {"recall": 0.4, "precision": 0.7, "iou": 0.3},
           "unet/119": {"recall": 0.5, "precision": 0.6, "iou": 0.4}},
    images=images, truths=truths, unet_masks=truths[::-1], unet_name="unet/119",
    best="128N/montavon/gmm", best_maps=(maps, [m > 0 for m in maps]))
"""


def _figure_inputs() -> dict:
    scope: dict = {}
    exec(_FIGURE_INPUTS, scope)
    return scope


def test_figures_keep_the_users_backend_and_never_load_pyplot(tmp_path):
    """The reproductions' figures are drawn without pyplot: a notebook's backend stays."""
    import os
    import subprocess
    import sys

    code = _FIGURE_INPUTS + f"""
import sys
from pathlib import Path
import matplotlib
matplotlib.use("svg")
out = Path({str(tmp_path)!r})
deepdream._figures(out, **dream_args)
lrp._figures(out, **lrp_args)
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    environment.pop("MPLBACKEND", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["svg", "False"]
    for name in (*reproduce.deepdream.FIGURES, "pr_curves.png", "examples.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")


def test_lrp_figures_show_every_curve_and_at_most_four_examples():
    from matplotlib.figure import Figure

    from interpret_segmentation.studies.reproduce import lrp

    inputs = _figure_inputs()["lrp_args"]
    curves = lrp._pr_figure(inputs["curves"], inputs["unets"])
    assert isinstance(curves, Figure) and curves.canvas.manager is None  # not pyplot's
    lines = curves.axes[0].lines
    assert [line.get_label() for line in lines] == [
        "LRP 128N/montavon", "LRP onefc/seibold-rms", "U-Net, pixel labels: 60",
        "U-Net, pixel labels: 119"]
    assert [line.get_linestyle() for line in lines[:2]] == ["-", "--"]  # rms dashed
    assert np.array_equal(lines[0].get_xdata(), inputs["curves"]["128N/montavon"][0])
    assert (lines[2].get_xdata()[0], lines[2].get_ydata()[0]) == (0.4, 0.7)
    assert (lines[3].get_xdata()[0], lines[3].get_ydata()[0]) == (0.5, 0.6)
    maps, masks = inputs["best_maps"]
    examples = lrp._examples_figure(inputs["images"], inputs["truths"], inputs["unet_masks"],
                                    inputs["unet_name"], inputs["best"], maps, masks)
    assert len(examples.axes) == 4 * 5  # six defective images, four shown
    titles = [axis.get_title() for axis in examples.axes[:5]]
    assert titles == ["input", "ground truth", "U-Net (119 labels)", "relevance (128N/montavon)",
                      "LRP gmm"]
    relevance = examples.axes[3].images[0]
    limit = float(np.abs(maps[0]).max())
    assert relevance.get_clim() == (-limit, limit)  # signed map, centred colour scale
    one = lrp._examples_figure(inputs["images"][:1], inputs["truths"][:1],
                               inputs["unet_masks"][:1], inputs["unet_name"], inputs["best"],
                               maps[:1], masks[:1])
    assert len(one.axes) == 5


def test_dream_grids_show_evenly_spaced_steps_and_outline_only_nonempty_masks():
    from types import SimpleNamespace

    from interpret_segmentation.studies.reproduce import deepdream

    images = np.arange(5, dtype=float).reshape(5, 1, 1, 1) * np.ones((1, 1, 6, 6)) / 4
    masks = np.zeros((5, 6, 6), dtype=bool)
    masks[4, 2:4, 2:4] = True  # only the last step has a mask
    path = SimpleNamespace(steps_taken=4, images=images, masks=masks)
    figure = deepdream._dream_grid({"a": path, "b": path}, "title", columns=3)
    assert len(figure.axes) == 2 * 3
    assert [axis.get_title() for axis in figure.axes[:3]] == ["a, step 0", "a, step 2",
                                                              "a, step 4"]
    assert [axis.images[0].get_array()[0, 0] for axis in figure.axes[:3]] == [0.0, 0.5, 1.0]
    assert [bool(axis.collections) for axis in figure.axes[:3]] == [False, False, True]
    inputs = _figure_inputs()["dream_args"]
    summary = deepdream._marking_summary_figure(inputs["characteristic_curves"],
                                                inputs["metrics"])
    assert len(summary.axes[0].lines) == 2 and len(summary.axes[1].lines) == 2
    assert "Spearman rho -1.00" in summary.axes[1].get_title()
    curves = deepdream._lesion_curves_figure(inputs["lesion_curves"])
    assert [len(axis.lines) for axis in curves.axes] == [2, 2, 2, 2]
