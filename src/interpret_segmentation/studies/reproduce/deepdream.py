"""``interpret-segmentation reproduce deepdream``: seed 004's experiments on synthetic data.

Marking experiment (section 3.1): networks G_p trained on objects whose positive regions carry
a faint texture of 135-degree line segments with probability p (seven values of p, several
training seeds each); each one's Dice on unmarked test images, and its "characteristic
feature" (the largest response of a 135-degree line filter,
:func:`~interpret_segmentation.datasets.dreams.marking_response`) along DeepDream paths from
the same white-noise starts. Networks that learned to rely on the marking lose Dice without
it and dream the marking; :func:`rank_correlation` gives Spearman's rho between the two over
all networks with its p-value and a bootstrap interval.

Intensity and shape experiment (section 3.2): an organ with hypo-intense lesions; networks
trained on round or elongated lesions, and on "real" (markedly darker, own texture) or
"synthetic" (mildly darkened organ) lesions, dream from the same healthy organs; their
elongation and intensity curves are compared, as z-scores against the real round lesions of a
validation set. The features are measured on the dreamed lesion (:func:`dreamed_lesion`): the
networks also switch on scattered specks of a few pixels around it, and the shape of the
whole mask then describes where the specks fall rather than the lesion.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata, spearmanr
from tqdm.auto import tqdm

from ...analysis.features import FEATURES, reference_statistics
from ...core import Target
from ...core.io import OutputDirectory
from ...core.validate import check_int, check_number
from ...datasets.dreams import LesionDataset, MarkingDataset, healthy_organ, marking_response
from ...methods.deepdream import analyze, white_noise
from ...models import UNet
from ...training import noise_augment, score_segmenter, seeded
from .common import Run, write_metrics

MARKING_PROBABILITIES = (0.0, 0.1, 0.2, 0.5, 0.8, 0.9, 1.0)
"""The p of the networks G_p (seed 004 trains seven)."""

TRAINING_SEEDS = 3
"""Default number of training seeds per G_p (``seeds`` of :func:`run_deepdream_reproduction`)."""

BOOTSTRAP_RESAMPLES = 10_000
"""Resamples of the bootstrap interval of the rank correlation (:func:`rank_correlation`)."""

LESION_NETWORKS = {"round": ("round", "real"), "elongated": ("elongated", "real"),
                   "synthetic": ("round", "synthetic")}
"""Network name -> (lesion shape, lesion intensity) of its training set; "round" is also the
real-intensity network of the intensity comparison."""

SHAPE_FEATURES = ("elongation", "max_diameter", "roundness", "area", "mean_intensity",
                  "rms_intensity")

SETTINGS = {
    "quick": dict(size=64, n_train=192, n_val=64, n_test=100, epochs=6, width=8, depth=3,
                  batch_size=16, lr=3e-3, finetune_epochs=4, finetune_lr=1e-3, dream_steps=100,
                  step_size=0.002, dream_starts=2, marking_contrast=(0.05, 0.25)),
    "full": dict(size=64, n_train=1200, n_val=200, n_test=300, epochs=12, width=8, depth=3,
                 batch_size=16, lr=3e-3, finetune_epochs=8, finetune_lr=1e-3, dream_steps=100,
                 step_size=0.002, dream_starts=3, marking_contrast=(0.02, 0.08)),
}
"""Image side, data-set sizes, U-Net size, training, DeepDream and marking settings of the two
runs.

The dreams maximise the sum of the foreground logit over a disk of radius ``size / 10`` at
the image centre (a single pixel's logit can have a zero gradient where the last layers'
ReLUs are all off), with the gradient scaled by its mean absolute value
(``gradient_scaling="mean"``: the pixel with the steepest gradient alone moved too little for
the marking networks' spiky gradients to draw anything), from white noise of standard
deviation 0.02 around 0.5 (noise of 0.1 already looks like the objects' grain to the
networks) or from a healthy organ. The full run has 6.25 times the training images and two
to three times the epochs of the quick one, with the same image size and U-Net.

Marking networks: for each training seed a base network is trained from scratch on unmarked
images (``epochs`` at ``lr``), and every G_p, G_0 included, is fine-tuned from it on its own
data (``finetune_epochs`` at ``finetune_lr``), as seed 004's networks started from features
that already knew the objects; G_0 gets the same training budget as the others. Trained from
scratch, the marking is the quicker cue to learn, and even G_0.2 learned it well enough to
dream sharp 135-degree stripes. The marking is faint (``marking_contrast``: each segment
changes the gray level by 0.02-0.08, about the strength of the objects' own texture): with
segments of 0.05-0.25, G_0.1 and G_0.2 learned it within their fine-tuning and dreamed
135-degree stripes as strong as G_1's (characteristic about 0.5 for p >= 0.2). The quick
run's networks (192 training images, 6 + 4 epochs) learned so faint a marking at no p in a
development run (rank correlation -0.22, p = 0.35), so the quick run keeps segments of
0.05-0.25, which so short a training picks up mainly at high p. The characteristic
feature is a network's mean over ``dream_starts`` white-noise starts (seeds ``seed``,
``seed + 1``, ...); a single start moved it by up to 0.15.

All networks train with additive white noise (:func:`~interpret_segmentation.training.
noise_augment`, standard deviation up to 0.05 per image). Without it, a network that relies on
the marking is convinced by a faint pixel-level perturbation of the white-noise start before
any line is drawn (its logit over the disk plateaus at about three times the level of a real
marked object, higher than drawn 135-degree lines reach), so its dream shows no marking.
"""

_SEEDS = {"train": 0, "val": 1, "test": 2}


def _characteristic(image: np.ndarray, mask: np.ndarray) -> float:
    """Seed 004's characteristic feature of the marking (the mask is not used)."""
    return marking_response(image)


def dreamed_lesion(mask: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The lesion a dream grew at the maximised region: the 8-connected component of ``mask``
    (bool (H, W)) with the most pixels inside ``region``; all False when none touches it."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    hits = np.bincount(labels[region & (labels > 0)], minlength=count + 1)
    if count == 0 or hits.max() == 0:
        return np.zeros_like(mask, dtype=bool)
    return labels == int(hits.argmax())


def _on_dreamed_lesion(feature, region: np.ndarray):
    """``feature(image, mask)`` evaluated on :func:`dreamed_lesion` of the mask instead."""
    return lambda image, mask: feature(image, dreamed_lesion(mask, region))


def _nanmean(curves) -> np.ndarray:
    """Step-wise mean of feature curves ignoring NaN (NaN where all are NaN); a path that
    stopped early keeps its last value."""
    curves = [np.asarray(curve, dtype=np.float64).reshape(-1) for curve in curves]
    length = max(len(curve) for curve in curves)
    stacked = np.stack([np.pad(curve, (0, length - len(curve)), mode="edge") for curve in curves])
    counts = np.sum(~np.isnan(stacked), axis=0)
    sums = np.nansum(stacked, axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _rank_correlation(rows) -> dict:
    """Spearman's rho (and p-value) of Dice on unmarked images vs final characteristic feature;
    None where undefined (a constant column)."""
    rows = list(rows)
    dice = [r["dice_unmarked"] for r in rows]
    characteristic = [r["characteristic_final"] for r in rows]
    if len(set(dice)) < 2 or len(set(characteristic)) < 2:
        return {"spearman_rho": None, "p_value": None}
    rho, p_value = spearmanr(dice, characteristic)
    return {"spearman_rho": float(rho), "p_value": float(p_value)}


def _unet(settings: dict, seed: int) -> UNet:
    with seeded(seed):
        return UNet(in_channels=1, out_channels=1, width=settings["width"],
                    depth=settings["depth"], global_context=False)


def _fit(run: Run, name: str, model, train_set, val_set, finetune: bool = False) -> None:
    """Train (or reload) one network with noise augmentation, then put it in eval mode;
    ``finetune``: ``finetune_epochs`` at ``finetune_lr`` instead of ``epochs`` at ``lr``."""
    settings = run.settings
    epochs, lr = ((settings["finetune_epochs"], settings["finetune_lr"]) if finetune
                  else (settings["epochs"], settings["lr"]))
    run.fit(model, name, train_set, val_set, epochs=epochs, lr=lr, augment=noise_augment)
    model.eval()


def run_deepdream_reproduction(out, quick: bool = False, seed: int = 0,
                               seeds: int = TRAINING_SEEDS, progress: bool = True,
                               log=print) -> dict:
    """Train the networks of both experiments, dream, and write ``out/metrics.json`` + figures.

    Parameters
    ----------
    out : str or Path
        Output directory: ``models/`` (a rerun reuses them), ``results/`` (training logs),
        ``metrics.json`` and the figures of :data:`FIGURES`: ``marking_dreams.png``,
        ``marking_summary.png`` (seed 004's Fig. 4), ``marking_seeds.png`` (the final
        characteristic feature and Dice on unmarked images per p, one point per training
        seed), ``lesion_dreams.png`` and ``lesion_curves.png`` (Fig. 5).
    quick : bool, default False
        The small run of :data:`SETTINGS`.
    seed : int, default 0
        Data seed (training, validation and test sets, dream starts), the bootstrap's seed,
        and the first training seed.
    seeds : int, default 3
        Training seeds per G_p: ``seed, seed + 1, ...``; each seeds a network's
        initialisation, shuffling and augmentation (every G_p is fine-tuned from its seed's
        base network). The data and the dream starts are the same for every seed. Networks are saved
        as ``models/marking_p<p>_seed<s>.pth``, so a rerun with more seeds trains only the
        new ones.

    Returns
    -------
    dict
        The content of ``metrics.json``:

        * ``marking``: per p (``"0.0"``, ``"0.1"``, ...) the means over the training seeds of
          ``dice_unmarked`` (Dice on unmarked test images), ``dice_marked`` (on the network's
          own validation distribution), ``characteristic_start`` and
          ``characteristic_final`` (each a network's mean over the white-noise starts), and
          ``characteristic_final_per_start``; the spreads ``dice_unmarked_std`` and
          ``characteristic_final_std`` (sample standard deviation over the seeds, None for
          one seed); ``seeds``: one entry per training seed with its network's values.
        * ``rank_correlation``: Spearman's ``rho`` of ``dice_unmarked`` and
          ``characteristic_final`` over every network (7 x ``seeds``), its ``p_value`` and
          a 95 % bootstrap ``interval`` resampling networks (:func:`rank_correlation`).
        * ``marking_rank_correlation``: ``spearman_rho`` and ``p_value`` over the 7 means.
        * ``marking_separation``: whether the networks with p >= 0.9 end above those with
          p <= 0.2 in the characteristic feature, per seed and over all networks, with margins.
        * ``shape`` (``round``/``elongated``: ``elongation_final``, its z-score, ``dice``),
          ``intensity`` (``real``/``synthetic``: final mean and RMS intensity inside the
          dreamed lesion, z-scores, ``dice``), ``settings``, ``seconds`` (the whole run)
          and ``seconds_marking``.

    Raises
    ------
    TypeError, ValueError
        If ``seeds`` is not an int of at least 1, or ``out`` holds a run of other settings.

    ``out`` is an :class:`~interpret_segmentation.core.io.OutputDirectory` whose run manifest
    holds the settings and seed: a rerun with others is refused instead of reusing models
    trained differently. The number of training seeds is not part of it.
    """
    seeds = check_int(seeds, "seeds", minimum=1)
    settings = dict(SETTINGS["quick" if quick else "full"])
    with OutputDirectory(out, "reproduce deepdream",
                         settings={"settings": settings, "seed": seed}) as output:
        output.files("metrics.json", *FIGURES)
        for part in ("models", "results"):
            output.directory(part)
        return _reproduce(output.path, settings, quick, seed, seeds, progress, log)


FIGURES = ("marking_dreams.png", "marking_summary.png", "marking_seeds.png", "lesion_dreams.png",
           "lesion_curves.png")


def _reproduce(out: Path, settings: dict, quick: bool, seed: int, seeds: int, progress: bool,
               log) -> dict:
    """The work of :func:`run_deepdream_reproduction`, in ``out`` (its names claimed)."""
    started = time.perf_counter()
    run = Run(out, settings, quick, seed, progress, log)
    centre = _centre_disk(settings["size"])
    dream = dict(target=Target(1, centre), steps=settings["dream_steps"],
                 step_size=settings["step_size"], gradient_scaling="mean",
                 value_range=(0.0, 1.0), output="logits", progress=False)
    training_seeds = [seed + k for k in range(seeds)]
    marking, metrics = _marking_experiment(run, dream, training_seeds)
    metrics["seconds_marking"] = time.perf_counter() - started
    lesions = _lesion_experiment(run, dream, centre)
    metrics.update(shape=lesions.shape, intensity=lesions.intensity,
                   settings={**settings, "seed": seed, "quick": quick,
                             "training_seeds": training_seeds,
                             "probabilities": list(MARKING_PROBABILITIES),
                             "bootstrap_resamples": BOOTSTRAP_RESAMPLES})
    metrics["seconds"] = time.perf_counter() - started
    _figures(out, marking.paths, marking.curves, metrics, lesions.paths, lesions.curves)
    write_metrics(out, metrics)
    log(f"results: {out / 'metrics.json'} and figures in {out} ({metrics['seconds']:.0f} s)")
    return metrics


def _centre_disk(size: int) -> np.ndarray:
    """The region every dream maximises: bool (size, size), radius ``size / 10`` at the centre."""
    yy, xx = np.mgrid[:size, :size]
    return (yy - size // 2) ** 2 + (xx - size // 2) ** 2 <= (size / 10) ** 2


# -- marking experiment (section 3.1) -------------------------------------------------------------


def rank_correlation(x, y, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Spearman's rank correlation of ``x`` and ``y`` with its p-value and a bootstrap interval.

    Parameters
    ----------
    x, y : sequence of float, (n,)
        Paired values, one pair per network (here Dice on unmarked images and the final
        characteristic feature).
    resamples : int, default 10000
        Bootstrap resamples: each draws ``n`` pairs with replacement
        (``numpy.random.default_rng(seed).integers(0, n, (resamples, n))``, one row per
        resample) and computes Spearman's rho of the drawn pairs (ties get average ranks).
    seed : int, default 0
        Seed of the resampling.
    level : float, default 0.95
        Coverage of the percentile interval: the ``(1 - level) / 2`` and ``(1 + level) / 2``
        quantiles (``numpy.percentile``, linear) of the resampled rhos. Resamples whose x or y
        are all equal have no rho and are left out.

    Returns
    -------
    dict
        ``rho`` and ``p_value`` (``scipy.stats.spearmanr``, two-sided), ``interval`` [lo, hi],
        ``n``, ``resamples`` (those with a rho) and ``level``. ``rho``, ``p_value`` and
        ``interval`` are None when x or y is constant (rho undefined).

    Raises
    ------
    ValueError
        If ``x`` and ``y`` differ in length, hold fewer than 3 values or a non-finite one.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"x, y: expected two sequences of the same length (at least 3), got "
                         f"lengths {len(x)} and {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x, y: expected finite values, got NaN or infinity")
    resamples = check_int(resamples, "resamples", minimum=1)
    level = check_number(level, "level", 0, 1)
    result = {"rho": None, "p_value": None, "interval": None, "n": len(x), "resamples": 0,
              "level": level}
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return result
    rho, p_value = spearmanr(x, y)
    index = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    rhos = _row_spearman(x[index], y[index])
    rhos = rhos[np.isfinite(rhos)]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(rhos, [tail, 100 - tail])
    return {**result, "rho": float(rho), "p_value": float(p_value),
            "interval": [float(low), float(high)], "resamples": int(len(rhos))}


def _row_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of ``x`` and ``y`` (m, n): the Pearson correlation of
    their average ranks; NaN for a row whose x or y is constant."""
    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    scale = np.sqrt(np.sum(rx * rx, axis=1) * np.sum(ry * ry, axis=1))
    defined = scale > 0
    return np.where(defined, np.sum(rx * ry, axis=1) / np.where(defined, scale, 1.0), np.nan)


def _separation(networks: list[dict], seeds: list[int]) -> dict:
    """Whether the networks with p >= 0.9 end with a higher characteristic feature than those
    with p <= 0.2: per training seed (``margin``: the lowest high-p value minus the highest
    low-p value of that seed) and across all networks at once."""
    def values(seed, high):
        return [n["characteristic_final"] for n in networks
                if (seed is None or n["seed"] == seed) and (n["p"] >= 0.9 if high else n["p"] <= 0.2)]

    margins = [min(values(s, True)) - max(values(s, False)) for s in seeds]
    overall = min(values(None, True)) - max(values(None, False))
    return {"per_seed": [m > 0 for m in margins], "margin_per_seed": margins,
            "every_seed": all(m > 0 for m in margins), "all_networks": overall > 0,
            "margin_all_networks": overall}


def _spread(values: list[float]) -> float | None:
    """Sample standard deviation (ddof 1); None for a single value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


@dataclass
class _Marking:
    """The marking experiment's results: ``networks`` (one row per G_p and training seed),
    ``paths`` (per p, the first seed's dream from the first start) and ``curves`` (per p, the
    characteristic feature along the path, mean of the starts, one curve per seed)."""

    networks: list = field(default_factory=list)
    paths: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)

    def add(self, p: float, seed: int, paths: list, dice_unmarked: float,
            dice_marked: float) -> dict:
        """Record G_p of training seed ``seed``: its dreams (one path per start) and Dice
        scores; returns its row."""
        curve = _nanmean([path.features["characteristic"] for path in paths])
        self.paths.setdefault(p, paths[0])
        self.curves.setdefault(p, []).append(curve)
        row = {"p": p, "seed": seed, "dice_unmarked": dice_unmarked, "dice_marked": dice_marked,
               "characteristic_start": float(curve[0]),
               "characteristic_final": float(curve[-1]),
               "characteristic_final_per_start": [float(path.features["characteristic"][-1])
                                                  for path in paths]}
        self.networks.append(row)
        return row

    def rows(self) -> dict:
        """metrics.json's ``marking``: per p (keyed ``"0.2"``) the means over the training
        seeds, their spreads (``*_std``) and ``seeds``, the networks' own values."""
        rows = {}
        for p in dict.fromkeys(n["p"] for n in self.networks):
            networks = [n for n in self.networks if n["p"] == p]
            row = {key: float(np.mean([n[key] for n in networks]))
                   for key in ("dice_unmarked", "dice_marked", "characteristic_start",
                               "characteristic_final")}
            row["characteristic_final_per_start"] = np.mean(
                [n["characteristic_final_per_start"] for n in networks], axis=0).tolist()
            for key in ("dice_unmarked", "characteristic_final"):
                row[f"{key}_std"] = _spread([n[key] for n in networks])
            row["seeds"] = [{k: v for k, v in n.items() if k != "p"} for n in networks]
            rows[f"{p:.1f}"] = row
        return rows


def _marking_experiment(run: Run, dream: dict, seeds: list[int]) -> tuple[_Marking, dict]:
    """Train a base network and every G_p for every training seed, dream from the shared
    white-noise starts and score each G_p; returns the results and metrics.json's marking
    entries."""
    size = run.settings["size"]
    starts = [white_noise((size, size), seed=run.seed + k, std=0.02)
              for k in range(run.settings["dream_starts"])]
    unmarked = MarkingDataset(run.settings["n_test"], p=0.0, seed=run.seed + _SEEDS["test"],
                              size=size, marking=False)  # no segments: the contrast is moot
    result, bases = _Marking(), {}
    bar = tqdm(total=(len(MARKING_PROBABILITIES) + 1) * len(seeds), desc="marking networks",
               unit="network", file=sys.stderr, disable=not run.progress)
    with bar:
        for p in (None, *MARKING_PROBABILITIES):  # None: the base networks
            data = dict(p=p or 0.0, size=size, contrast=run.settings["marking_contrast"])
            val_set = MarkingDataset(run.settings["n_val"], seed=run.seed + _SEEDS["val"], **data)
            train_set = MarkingDataset(run.settings["n_train"], seed=run.seed + _SEEDS["train"],
                                       **data)
            for seed in seeds:
                model = _marking_network(run, p, seed, bases.get(seed), train_set, val_set)
                bar.update()
                if p is None:
                    bases[seed] = {k: v.clone() for k, v in model.state_dict().items()}
                    continue
                paths = [analyze(model, start, features={"characteristic": _characteristic},
                                 **dream) for start in starts]
                row = result.add(p, seed, paths, score_segmenter(model, unmarked)["dice"],
                                 score_segmenter(model, val_set)["dice"])
                run.log(f"G_{p:.1f} seed {seed}: " + ", ".join(
                    f"{k} {v:.3f}" for k, v in row.items() if k not in ("p", "seed")
                    and not isinstance(v, list)))
    metrics = _marking_metrics(result, seeds, run.seed)
    correlation = metrics["rank_correlation"]
    run.log(f"rank correlation over {correlation['n']} networks of Dice on unmarked images and "
            f"final characteristic feature: {_describe(correlation)}")
    return result, metrics


def _marking_metrics(result: _Marking, seeds: list[int], seed: int) -> dict:
    """metrics.json's ``marking``, ``rank_correlation`` (over every network),
    ``marking_rank_correlation`` (over the means per p) and ``marking_separation``."""
    rows = result.rows()
    networks = result.networks
    return {
        "marking": rows,
        "rank_correlation": rank_correlation([n["dice_unmarked"] for n in networks],
                                             [n["characteristic_final"] for n in networks],
                                             seed=seed),
        "marking_rank_correlation": _rank_correlation(rows.values()),
        "marking_separation": _separation(networks, seeds),
    }


def _describe(correlation: dict) -> str:
    """``rho -0.61 (p = 0.003, 95 % interval [-0.83, -0.29])``, or why there is none."""
    if correlation["rho"] is None:
        return "undefined (a constant column)"
    low, high = correlation["interval"]
    return (f"rho {correlation['rho']:.2f} (p = {correlation['p_value']:.2g}, "
            f"{100 * correlation['level']:g} % interval [{low:.2f}, {high:.2f}])")


def _marking_network(run: Run, p: float | None, seed: int, base: dict | None, train_set,
                     val_set) -> UNet:
    """A network of training seed ``seed`` (initialisation, shuffling and augmentation),
    trained or reloaded: the base network (``p`` None, ``models/marking_base_seed<seed>.pth``),
    trained from scratch on unmarked images, or G_p (``models/marking_p<p>_seed<seed>.pth``),
    fine-tuned from that seed's ``base`` state dict."""
    model = _unet(run.settings, seed)
    if base is not None:
        model.load_state_dict(base)
    name = "marking_base" if p is None else f"marking_p{p:.1f}"
    _fit(replace(run, seed=seed), f"{name}_seed{seed}", model, train_set, val_set,
         finetune=p is not None)
    return model


# -- intensity and shape experiment (section 3.2) -------------------------------------------------


@dataclass
class _Lesions:
    """The lesion experiment's results: ``shape`` and ``intensity`` (metrics.json's entries),
    and per network ``paths`` (the first organ's dream) and ``curves`` (feature -> z-score
    curve, mean of the starts)."""

    shape: dict = field(default_factory=dict)
    intensity: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)

    def add(self, name: str, paths: list, dice: float) -> dict:
        """Record a network's dreams (one path per organ); returns the final feature values
        (means over the starts, NaN where no dream has a mask)."""
        shape, intensity = LESION_NETWORKS[name]
        self.paths[name] = paths[0]
        self.curves[name] = {feature: _nanmean([path.zscores[feature] for path in paths])
                             for feature in SHAPE_FEATURES}
        final = {feature: float(_nanmean([path.features[feature] for path in paths])[-1])
                 for feature in SHAPE_FEATURES}
        z = {feature: float(curve[-1]) for feature, curve in self.curves[name].items()}
        if shape == "elongated" or name == "round":
            self.shape[shape] = {"elongation_final": final["elongation"],
                                 "elongation_final_z": z["elongation"], "dice": dice}
        if intensity == "synthetic" or name == "round":
            self.intensity[intensity] = {
                "mean_intensity_final": final["mean_intensity"],
                "rms_intensity_final": final["rms_intensity"],
                "mean_intensity_final_z": z["mean_intensity"], "dice": dice}
        return final


def _lesion_experiment(run: Run, dream: dict, centre: np.ndarray) -> _Lesions:
    """Train the lesion networks, dream from healthy organs, measure the dreamed lesions."""
    size, seed = run.settings["size"], run.seed
    reference = reference_statistics(
        LesionDataset(run.settings["n_val"], seed=seed + _SEEDS["val"], size=size, shape="round",
                      intensity="real"), features=SHAPE_FEATURES)
    organs = [healthy_organ(seed + _SEEDS["test"], size=size, index=k)
              for k in range(run.settings["dream_starts"])]
    features = {name: _on_dreamed_lesion(FEATURES[name], centre) for name in SHAPE_FEATURES}
    result = _Lesions()
    for name in LESION_NETWORKS:
        model, val_set = _lesion_network(run, name)
        paths = [analyze(model, organ, features=features, reference=reference, **dream)
                 for organ in organs]
        dice = score_segmenter(model, val_set)["dice"]
        final = result.add(name, paths, dice)
        run.log(f"lesions {name}: Dice {dice:.3f}, final elongation {final['elongation']:.3f}, "
                f"mean intensity {final['mean_intensity']:.3f}, area {final['area']:.0f} px")
    return result


def _lesion_network(run: Run, name: str) -> tuple[UNet, LesionDataset]:
    """The lesion network ``name`` of :data:`LESION_NETWORKS`, trained (or reloaded), and its
    validation set."""
    shape, intensity = LESION_NETWORKS[name]
    model = _unet(run.settings, run.seed)
    data = dict(size=run.settings["size"], shape=shape, intensity=intensity)
    val_set = LesionDataset(run.settings["n_val"], seed=run.seed + _SEEDS["val"], **data)
    train_set = LesionDataset(run.settings["n_train"], seed=run.seed + _SEEDS["train"], **data)
    _fit(run, f"lesions_{name}", model, train_set, val_set)
    return model, val_set


# -- figures --------------------------------------------------------------------------------------


def _dream_grid(paths: dict, title: str, columns: int = 5):
    """One row per network: the dream at evenly spaced steps with its mask outlined."""
    from ...analysis.figures import subplots

    figure, axes = subplots(len(paths), columns, figsize=(2.1 * columns, 2.2 * len(paths)),
                            squeeze=False)
    for row, (name, path) in enumerate(paths.items()):
        shown = np.linspace(0, path.steps_taken, columns).round().astype(int)
        for axis, step in zip(axes[row], shown):
            axis.imshow(path.images[step, 0], cmap="gray", vmin=0, vmax=1)
            if path.masks[step].any():
                axis.contour(path.masks[step], levels=[0.5], colors="red", linewidths=0.8)
            axis.set_title(f"{name}, step {step}", fontsize=8)
            axis.axis("off")
    figure.suptitle(title, fontsize=10)
    return figure


def _p_colour(p: float):
    """The colour of G_p in every marking figure: viridis from p = 0 (purple) to 1 (yellow)."""
    from matplotlib import colormaps

    return colormaps["viridis"](0.9 * float(p))


def _marking_summary_figure(characteristic_curves: dict, metrics: dict):
    """Seed 004's Fig. 4: the characteristic feature along the paths (per p, mean of the
    training seeds' curves), and Dice on unmarked images against the final characteristic
    feature, one point per network."""
    from ...analysis.figures import subplots

    figure, (curves, summary) = subplots(1, 2, figsize=(11, 4.2))
    for p, seed_curves in characteristic_curves.items():
        curves.plot(_nanmean(seed_curves), color=_p_colour(p), label=f"p = {p:.1f}")
    curves.set(xlabel="DeepDream step", ylabel="characteristic feature (135-degree lines)",
               title="Characteristic feature along the path (mean of starts and seeds)")
    curves.title.set_fontsize(9)
    curves.legend(fontsize=8)
    for key, row in metrics["marking"].items():
        networks = row["seeds"]
        summary.plot([n["dice_unmarked"] for n in networks],
                     [n["characteristic_final"] for n in networks], "o",
                     color=_p_colour(float(key)), label=f"p = {key}")
    correlation = metrics["rank_correlation"]
    title = "Sensitivity vs robustness, one point per network"
    if correlation["rho"] is not None:
        title += f"\nSpearman {_describe(correlation)}"
    summary.set(xlabel="Dice on unmarked test images", ylabel="final characteristic feature",
                title=title)
    summary.title.set_fontsize(9)
    summary.legend(fontsize=7)
    for axis in (curves, summary):
        axis.grid(alpha=0.3)
    return figure


def _marking_seeds_figure(metrics: dict):
    """Per p: the final characteristic feature and Dice on unmarked images of each training
    seed's network (small points, side by side) and their mean (a bar with one standard
    deviation)."""
    from ...analysis.figures import subplots

    figure, axes = subplots(1, 2, figsize=(11, 4))
    names = (("characteristic_final", "final characteristic feature"),
             ("dice_unmarked", "Dice on unmarked test images"))
    for axis, (key, label) in zip(axes, names):
        for position, (p, row) in enumerate(metrics["marking"].items()):
            values = [n[key] for n in row["seeds"]]
            offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
            axis.plot(position + np.asarray(offsets), values, "o", ms=4, color=_p_colour(float(p)))
            spread = row.get(f"{key}_std")
            axis.errorbar(position + 0.3, row[key], yerr=spread, fmt="s", ms=5, color="black",
                          capsize=3)
        axis.set_xticks(range(len(metrics["marking"])), [f"p={p}" for p in metrics["marking"]])
        axis.set(ylabel=label, title=f"{label}: one point per training seed, mean +- std")
        axis.title.set_fontsize(9)
        axis.grid(alpha=0.3)
    return figure


def _lesion_curves_figure(lesion_curves: dict):
    """Seed 004's Fig. 5 curves: z-scores of the dreamed lesions' features along the paths."""
    from ...analysis.figures import subplots

    names = ("elongation", "max_diameter", "mean_intensity", "rms_intensity")
    figure, axes = subplots(1, len(names), figsize=(4 * len(names), 3.6))
    for axis, feature in zip(axes, names):
        for name, curves in lesion_curves.items():
            axis.plot(curves[feature], label=name)
        axis.axhspan(-1, 1, color="0.85", zorder=0)
        axis.set(title=f"{feature} (z-score vs real round lesions)", xlabel="DeepDream step")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return figure


def _figures(out: Path, marking_paths: dict, characteristic_curves: dict, metrics: dict,
             lesion_paths: dict, lesion_curves: dict) -> None:
    """Write the figures of :data:`FIGURES` (no pyplot, no backend chosen).

    ``marking_paths``: p -> a dream path; ``characteristic_curves``: p -> list of curves (one
    per training seed); ``metrics``: metrics.json's content (``marking`` with ``seeds``,
    ``rank_correlation``); ``lesion_paths``: name -> path; ``lesion_curves``: name -> feature
    -> z-score curve.
    """
    from ...analysis.figures import save_figure

    marking = _dream_grid({f"p={p:.1f}": path for p, path in marking_paths.items()},
                          "DeepDreams of the networks G_p (first training seed) from one "
                          "white-noise start (red: predicted mask)")
    save_figure(marking, out / "marking_dreams.png", overwrite=True)
    save_figure(_marking_summary_figure(characteristic_curves, metrics),
                out / "marking_summary.png", overwrite=True)
    save_figure(_marking_seeds_figure(metrics), out / "marking_seeds.png", overwrite=True)
    lesions = _dream_grid(lesion_paths, "DeepDreams of the lesion networks from a healthy organ "
                                        "(red: predicted mask)")
    save_figure(lesions, out / "lesion_dreams.png", overwrite=True)
    save_figure(_lesion_curves_figure(lesion_curves), out / "lesion_curves.png", overwrite=True)
