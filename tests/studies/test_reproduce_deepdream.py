"""The marking experiment of ``reproduce deepdream`` (seed 004, section 3.1): training seeds,
the rank correlation with its bootstrap interval, the metrics layout, resuming."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import bootstrap, spearmanr

from interpret_segmentation.studies.reproduce import deepdream
from interpret_segmentation.training import load_checkpoint

# twelve hand-made networks with ties in both columns, weakly related (rho -0.11): the
# bootstrap interval is far from -1 and 1 at both ends
DICE = [0.91, 0.90, 0.92, 0.88, 0.90, 0.85, 0.80, 0.86, 0.70, 0.75, 0.72, 0.75]
CHARACTERISTIC = [0.30, 0.15, 0.45, 0.20, 0.15, 0.10, 0.35, 0.50, 0.40, 0.55, 0.12, 0.45]


def _naive_interval(x, y, resamples, seed, level=0.95):
    """The same resamples drawn row by row, each correlated by scipy."""
    x, y = np.asarray(x), np.asarray(y)
    index = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    rhos = []
    for rows in index:
        if np.ptp(x[rows]) > 0 and np.ptp(y[rows]) > 0:
            rhos.append(spearmanr(x[rows], y[rows])[0])
    tail = 100 * (1 - level) / 2
    return list(np.percentile(rhos, [tail, 100 - tail])), len(rhos)


def test_rank_correlation_matches_scipy_and_a_naive_bootstrap():
    result = deepdream.rank_correlation(DICE, CHARACTERISTIC, resamples=400, seed=3)
    rho, p_value = spearmanr(DICE, CHARACTERISTIC)
    assert result["rho"] == pytest.approx(rho, abs=1e-12)
    assert result["p_value"] == pytest.approx(p_value, rel=1e-9)
    interval, used = _naive_interval(DICE, CHARACTERISTIC, 400, seed=3)
    assert result["interval"] == pytest.approx(interval, abs=1e-12)
    assert (result["n"], result["resamples"], result["level"]) == (12, used, 0.95)
    assert result["interval"][0] <= result["rho"] <= result["interval"][1]
    assert deepdream.rank_correlation(DICE, CHARACTERISTIC, resamples=400, seed=3) == result
    assert deepdream.rank_correlation(DICE, CHARACTERISTIC, resamples=400, seed=4) != result
    narrow = deepdream.rank_correlation(DICE, CHARACTERISTIC, resamples=400, seed=3, level=0.5)
    assert narrow["interval"] == pytest.approx(_naive_interval(DICE, CHARACTERISTIC, 400, 3,
                                                               level=0.5)[0], abs=1e-12)


def test_bootstrap_interval_agrees_with_scipys_bootstrap():
    """A different resampler (scipy's, other random draws): the percentile intervals agree
    to within the resampling noise."""
    ours = deepdream.rank_correlation(DICE, CHARACTERISTIC, resamples=20_000, seed=0)
    theirs = bootstrap((np.array(DICE), np.array(CHARACTERISTIC)),
                       lambda x, y: spearmanr(x, y)[0], paired=True, vectorized=False,
                       n_resamples=1500, method="percentile", rng=np.random.default_rng(1))
    interval = theirs.confidence_interval
    assert -0.8 < ours["interval"][0] < -0.6 and 0.4 < ours["interval"][1] < 0.6
    assert ours["interval"] == pytest.approx([interval.low, interval.high], abs=0.05)


def test_rank_correlation_by_hand():
    # a perfectly decreasing relation: rho -1 in the data and in every resample that has two
    # distinct networks (a resample repeating one network has no rho and is left out)
    result = deepdream.rank_correlation([1, 2, 3, 4], [8, 6, 4, 2], resamples=200)
    assert result["rho"] == pytest.approx(-1.0)
    assert result["interval"] == pytest.approx([-1.0, -1.0])
    assert 190 < result["resamples"] < 200  # 4 of 256 draws repeat one network
    # 1 - 6 * sum(d^2) / (n (n^2 - 1)) with rank differences (0, 1, -1, 0): 1 - 12 / 60
    assert deepdream.rank_correlation([1, 2, 3, 4], [1, 3, 2, 4])["rho"] == pytest.approx(0.8)
    constant = deepdream.rank_correlation([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])
    assert (constant["rho"], constant["p_value"], constant["interval"]) == (None, None, None)
    with pytest.raises(ValueError, match="x, y: expected two sequences of the same length"):
        deepdream.rank_correlation([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="x, y: expected finite values"):
        deepdream.rank_correlation([1, 2, float("nan")], [1, 2, 3])
    with pytest.raises(ValueError, match="resamples"):
        deepdream.rank_correlation([1, 2, 3], [1, 2, 3], resamples=0)


def test_row_spearman_with_ties_matches_scipy_row_by_row():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(50, 9)).astype(float)  # many ties
    y = rng.integers(0, 4, size=(50, 9)).astype(float)
    x[0] = 2.0  # a constant row: no rho
    rhos = deepdream._row_spearman(x, y)
    assert np.isnan(rhos[0])
    expected = [spearmanr(a, b)[0] for a, b in zip(x[1:], y[1:])]
    assert np.allclose(rhos[1:], expected, atol=1e-12, equal_nan=True)


def test_separation_per_seed_and_over_all_networks():
    def network(p, seed, value):
        return {"p": p, "seed": seed, "characteristic_final": value}

    networks = [network(0.0, 0, 0.1), network(0.2, 0, 0.3), network(0.9, 0, 0.5),
                network(1.0, 0, 0.4), network(0.5, 0, 0.9),  # p = 0.5 counts in neither group
                network(0.0, 1, 0.45), network(0.1, 1, 0.2), network(0.9, 1, 0.6),
                network(1.0, 1, 0.4)]
    separation = deepdream._separation(networks, [0, 1])
    assert separation["margin_per_seed"] == pytest.approx([0.4 - 0.3, 0.4 - 0.45])
    assert separation["per_seed"] == [True, False]
    assert not separation["every_seed"]
    assert separation["margin_all_networks"] == pytest.approx(0.4 - 0.45)
    assert not separation["all_networks"]


def _path(curve):
    return SimpleNamespace(features={"characteristic": np.asarray(curve, dtype=float)})


def test_marking_rows_hold_means_spreads_and_one_entry_per_seed():
    marking = deepdream._Marking()
    marking.add(0.0, 0, [_path([0.1, 0.2]), _path([0.1, 0.4])], 0.9, 0.92)
    marking.add(0.0, 1, [_path([0.3, 0.2]), _path([0.1, 0.6])], 0.8, 0.90)
    marking.add(1.0, 0, [_path([0.0, 0.5]), _path([0.2, 0.7])], 0.5, 0.95)
    rows = marking.rows()
    assert list(rows) == ["0.0", "1.0"]
    zero = rows["0.0"]
    assert zero["characteristic_final"] == pytest.approx((0.3 + 0.4) / 2)
    assert zero["characteristic_start"] == pytest.approx((0.1 + 0.2) / 2)
    assert zero["characteristic_final_per_start"] == pytest.approx([0.2, 0.5])
    assert zero["dice_unmarked"] == pytest.approx(0.85)
    assert zero["dice_unmarked_std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert zero["characteristic_final_std"] == pytest.approx(np.std([0.3, 0.4], ddof=1))
    assert [entry["seed"] for entry in zero["seeds"]] == [0, 1]
    assert [entry["characteristic_final"] for entry in zero["seeds"]] == pytest.approx([0.3, 0.4])
    assert zero["seeds"][1]["characteristic_final_per_start"] == pytest.approx([0.2, 0.6])
    assert rows["1.0"]["dice_unmarked_std"] is None  # one seed: no spread
    assert len(marking.curves[0.0]) == 2 and len(marking.curves[1.0]) == 1


TINY = dict(size=32, n_train=4, n_val=2, n_test=2, epochs=1, width=2, depth=2, batch_size=4,
            lr=0.1, finetune_epochs=1, finetune_lr=1e-12, dream_steps=2, step_size=0.01,
            dream_starts=2, marking_contrast=(0.02, 0.08))
"""Fine-tuning at a vanishing learning rate leaves every G_p at its seed's base weights."""


def _weights(path):
    model = deepdream._unet(TINY, 0)
    load_checkpoint(model, path)
    return torch.cat([w.flatten() for w in model.parameters()])


def test_tiny_run_writes_the_layout_with_distinct_seeds_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setitem(deepdream.SETTINGS, "quick", TINY)
    lines = []
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    metrics = deepdream.run_deepdream_reproduction(tmp_path / "d", quick=True, seeds=2,
                                                   progress=False, log=lines.append)
    assert torch.equal(torch.get_rng_state(), torch_state)  # the global generators untouched
    assert np.array_equal(np.random.get_state()[1], numpy_state)
    saved = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert list(saved["marking"]) == ["0.0", "0.1", "0.2", "0.5", "0.8", "0.9", "1.0"]
    for row in saved["marking"].values():
        assert [entry["seed"] for entry in row["seeds"]] == [0, 1]
        finals = [entry["characteristic_final"] for entry in row["seeds"]]
        assert row["characteristic_final"] == pytest.approx(np.mean(finals))
        assert row["characteristic_final_std"] == pytest.approx(np.std(finals, ddof=1))
        assert all(0.0 <= entry["dice_unmarked"] <= 1.0 for entry in row["seeds"])
        assert len(row["characteristic_final_per_start"]) == 2
    networks = [entry for row in saved["marking"].values() for entry in row["seeds"]]
    expected = deepdream.rank_correlation([n["dice_unmarked"] for n in networks],
                                          [n["characteristic_final"] for n in networks])
    assert saved["rank_correlation"] == json.loads(json.dumps(expected))
    assert saved["rank_correlation"]["n"] == 14
    assert set(saved["marking_rank_correlation"]) == {"spearman_rho", "p_value"}
    assert len(saved["marking_separation"]["per_seed"]) == 2
    assert set(saved["shape"]) == {"round", "elongated"}
    assert set(saved["intensity"]) == {"real", "synthetic"}
    assert saved["settings"]["training_seeds"] == [0, 1]
    assert 0 < saved["seconds_marking"] <= saved["seconds"]
    for name in deepdream.FIGURES:
        assert (tmp_path / "d" / name).read_bytes().startswith(b"\x89PNG")

    models = tmp_path / "d" / "models"
    base = {seed: _weights(models / f"marking_base_seed{seed}.pth") for seed in (0, 1)}
    initial = torch.cat([w.flatten() for w in deepdream._unet(TINY, 0).parameters()])
    assert (base[0] - initial).abs().max() > 1e-5  # trained from its initialisation
    assert (base[0] - base[1]).abs().max() > 1e-3  # the seeds give distinct networks
    for p in ("0.0", "0.5", "1.0"):  # every G_p fine-tuned from its own seed's base
        for seed in (0, 1):
            assert torch.allclose(_weights(models / f"marking_p{p}_seed{seed}.pth"), base[seed],
                                  atol=1e-8)

    lines.clear()
    monkeypatch.setattr(deepdream, "_figures", lambda *args: None)  # drawn above; saves time
    again = deepdream.run_deepdream_reproduction(tmp_path / "d", quick=True, seeds=3,
                                                 progress=False, log=lines.append)
    reused = [line for line in lines if line.startswith("reusing")]
    assert len(reused) == 2 * 8 + 3  # both seeds' bases and G_p, and the lesion networks
    assert not any("seed2" in line for line in reused)
    for key, row in again["marking"].items():  # the first two seeds' networks come back
        assert row["seeds"][:2] == metrics["marking"][key]["seeds"]
        assert [entry["seed"] for entry in row["seeds"]] == [0, 1, 2]
    assert again["rank_correlation"]["n"] == 21
    assert (models / "marking_p0.9_seed2.pth").is_file()

    with pytest.raises(ValueError, match="seeds: expected"):
        deepdream.run_deepdream_reproduction(tmp_path / "e", quick=True, seeds=0)
    assert not (tmp_path / "e").exists()  # refused before anything was written
    monkeypatch.setitem(deepdream.SETTINGS, "quick", {**TINY, "finetune_epochs": 2})
    with pytest.raises(ValueError, match=r"settings\.finetune_epochs: 1 there, 2 now"):
        deepdream.run_deepdream_reproduction(tmp_path / "d", quick=True, progress=False)


def test_cli_refuses_bad_seeds_in_one_line(tmp_path, capsys):
    from interpret_segmentation.cli import main

    assert main(["reproduce", "deepdream", "--quick", "--seeds", "0", "--out",
                 str(tmp_path / "x"), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "seeds" in error
    with pytest.raises(SystemExit) as stopped:
        main(["reproduce", "deepdream", "--seeds", "two"])
    assert stopped.value.code == 2


def test_seeds_figure_shows_one_point_per_seed_and_the_means():
    metrics = {"marking": {
        "0.0": {"characteristic_final": 0.2, "characteristic_final_std": 0.1,
                "dice_unmarked": 0.9, "dice_unmarked_std": 0.01,
                "seeds": [{"characteristic_final": 0.1, "dice_unmarked": 0.9},
                          {"characteristic_final": 0.3, "dice_unmarked": 0.91}]},
        "1.0": {"characteristic_final": 0.6, "characteristic_final_std": None,
                "dice_unmarked": 0.5, "dice_unmarked_std": None,
                "seeds": [{"characteristic_final": 0.6, "dice_unmarked": 0.5}]}}}
    figure = deepdream._marking_seeds_figure(metrics)
    characteristic = figure.axes[0]
    points = [line for line in characteristic.lines if line.get_marker() == "o"]
    assert [list(line.get_ydata()) for line in points] == [[0.1, 0.3], [0.6]]
    means = [line for line in characteristic.lines if line.get_marker() == "s"]
    assert [float(line.get_ydata()[0]) for line in means] == [0.2, 0.6]
    assert [t.get_text() for t in characteristic.get_xticklabels()] == ["p=0.0", "p=1.0"]
