"""``interpret-segmentation reproduce deepdream``: seed 004's experiments on synthetic data.

Marking experiment (section 3.1): networks G_p trained on objects whose positive regions carry
a texture of 135-degree line segments with probability p; each one's Dice on unmarked test
images, and its "characteristic feature" (the largest response of a 135-degree line filter,
:func:`~interpret_segmentation.datasets.dreams.marking_response`) along a DeepDream path from
one shared white-noise start. Networks that learned to rely on the marking lose Dice without
it and dream the marking.

Intensity and shape experiment (section 3.2): an organ with hypo-intense lesions; networks
trained on round or elongated lesions, and on "real" (markedly darker, own texture) or
"synthetic" (mildly darkened organ) lesions, dream from the same healthy organs; their
elongation and intensity curves are compared, as z-scores against the real round lesions of a
validation set. The features are measured on the dreamed lesion (:func:`dreamed_lesion`): the
networks also switch on scattered specks of a few pixels around it, and the shape of the
whole mask then describes where the specks fall rather than the lesion.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.stats import spearmanr

from ...analysis.features import FEATURES, reference_statistics
from ...core import Target
from ...core.io import OutputDirectory
from ...datasets.dreams import LesionDataset, MarkingDataset, healthy_organ, marking_response
from ...methods.deepdream import analyze, white_noise
from ...models import UNet
from ...training import noise_augment, score_segmenter, seeded
from .common import Run, write_metrics

MARKING_PROBABILITIES = (0.0, 0.2, 0.5, 0.8, 0.9, 1.0)
"""The p of the networks G_p (seed 004 trains 7; its figure shows these and p = 0.05)."""

LESION_NETWORKS = {"round": ("round", "real"), "elongated": ("elongated", "real"),
                   "synthetic": ("round", "synthetic")}
"""Network name -> (lesion shape, lesion intensity) of its training set; "round" is also the
real-intensity network of the intensity comparison."""

SHAPE_FEATURES = ("elongation", "max_diameter", "roundness", "area", "mean_intensity",
                  "rms_intensity")

SETTINGS = {
    "quick": dict(size=64, n_train=320, n_val=64, n_test=100, epochs=6, width=8, depth=3,
                  batch_size=16, lr=3e-3, finetune_epochs=6, finetune_lr=1e-3, dream_steps=100,
                  step_size=0.002, dream_starts=3),
    "full": dict(size=64, n_train=1200, n_val=200, n_test=300, epochs=12, width=8, depth=3,
                 batch_size=16, lr=3e-3, finetune_epochs=8, finetune_lr=1e-3, dream_steps=100,
                 step_size=0.002, dream_starts=3),
}
"""Image side, data-set sizes, U-Net size, training and DeepDream settings of the two runs.

The dreams maximise the sum of the foreground logit over a disk of radius ``size / 10`` at
the image centre (a single pixel's logit can have a zero gradient where the last layers'
ReLUs are all off), with the gradient scaled by its mean absolute value (``gradient_scaling="mean"``:
the pixel with the steepest gradient alone moved too little for the marking networks'
spiky gradients to draw anything), from white noise of standard deviation 0.02 around 0.5
(noise of 0.1 already looks like the objects' grain to the networks) or from a healthy organ.
The full run has 3.75 times the training images and about twice the epochs of the quick one,
with the same image size and U-Net.

G_0 is trained from scratch on unmarked images; every other G_p starts from G_0's weights and
is fine-tuned on its own data (``finetune_epochs`` at ``finetune_lr``), as seed 004's networks
started from features that already knew the objects. Trained from scratch, the marking is the
quicker cue to learn, and even G_0.2 learned it well enough to dream sharp 135-degree stripes
(characteristic 0.53 against 0.38 for G_1 in a full run). The characteristic feature is the
mean over ``dream_starts`` white-noise starts (seeds 0, 1, ...); a single start moved it by up
to 0.15.

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


def run_deepdream_reproduction(out, quick: bool = False, seed: int = 0, progress: bool = True,
                               log=print) -> dict:
    """Train the networks of both experiments, dream, and write ``out/metrics.json`` + figures.

    Parameters
    ----------
    out : str or Path
        Output directory: ``models/`` (a rerun reuses them), ``results/`` (training logs),
        ``metrics.json``, ``marking_dreams.png``, ``marking_summary.png`` (seed 004's Fig. 4),
        ``lesion_dreams.png`` and ``lesion_curves.png`` (Fig. 5).
    quick : bool, default False
        The small run of :data:`SETTINGS`.
    seed : int, default 0
        Data and initialisation seed.

    Returns
    -------
    dict
        The content of ``metrics.json``: ``marking`` (per p: ``dice_unmarked``,
        ``dice_marked`` on the network's own validation distribution,
        ``characteristic_start``, ``characteristic_final``: means over the white-noise starts,
        ``characteristic_final_per_start``), ``marking_rank_correlation``
        (Spearman's rho between ``dice_unmarked`` and ``characteristic_final`` over all p, and
        its p-value), ``shape`` (``round``/``elongated``: ``elongation_final``, its z-score,
        ``dice``), ``intensity`` (``real``/``synthetic``: final mean and RMS intensity inside
        the dreamed mask, z-scores, ``dice``), ``settings`` and ``seconds``.

    ``out`` is an :class:`~interpret_segmentation.core.io.OutputDirectory` whose run manifest
    holds the settings and seed: a rerun with others is refused instead of reusing models
    trained differently.
    """
    settings = dict(SETTINGS["quick" if quick else "full"])
    with OutputDirectory(out, "reproduce deepdream",
                         settings={"settings": settings, "seed": seed}) as output:
        output.files("metrics.json", *FIGURES)
        for part in ("models", "results"):
            output.directory(part)
        return _reproduce(output.path, settings, quick, seed, progress, log)


FIGURES = ("marking_dreams.png", "marking_summary.png", "lesion_dreams.png", "lesion_curves.png")


def _reproduce(out: Path, settings: dict, quick: bool, seed: int, progress: bool, log) -> dict:
    """The work of :func:`run_deepdream_reproduction`, in ``out`` (its names claimed)."""
    started = time.perf_counter()
    run = Run(out, settings, quick, seed, progress, log)
    centre = _centre_disk(settings["size"])
    dream = dict(target=Target(1, centre), steps=settings["dream_steps"],
                 step_size=settings["step_size"], gradient_scaling="mean",
                 value_range=(0.0, 1.0), output="logits", progress=False)
    marking = _marking_experiment(run, dream)
    lesions = _lesion_experiment(run, dream, centre)
    metrics = {"marking": marking.rows, "shape": lesions.shape, "intensity": lesions.intensity,
               "marking_rank_correlation": marking.correlation,
               "settings": {**settings, "seed": seed, "quick": quick,
                            "probabilities": list(MARKING_PROBABILITIES)}}
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


@dataclass
class _Marking:
    """The marking experiment's results, per p: ``rows`` (metrics.json's ``marking``, keyed
    ``"0.2"``), ``paths`` (the first start's dream), ``curves`` (characteristic feature, mean
    of the starts); ``correlation`` once every network is in."""

    rows: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)
    correlation: dict | None = None

    def add(self, p: float, paths: list, dice_unmarked: float, dice_marked: float) -> dict:
        """Record G_p's dreams (one path per start) and Dice scores; returns its row."""
        curve = _nanmean([path.features["characteristic"] for path in paths])
        self.paths[p], self.curves[p] = paths[0], curve
        self.rows[f"{p:.1f}"] = {
            "dice_unmarked": dice_unmarked, "dice_marked": dice_marked,
            "characteristic_start": float(curve[0]), "characteristic_final": float(curve[-1]),
            "characteristic_final_per_start": [float(path.features["characteristic"][-1])
                                               for path in paths]}
        return self.rows[f"{p:.1f}"]


def _marking_experiment(run: Run, dream: dict) -> _Marking:
    """Train every G_p, dream from the shared white-noise starts and score it."""
    size, seed = run.settings["size"], run.seed
    starts = [white_noise((size, size), seed=seed + k, std=0.02)
              for k in range(run.settings["dream_starts"])]
    unmarked = MarkingDataset(run.settings["n_test"], p=0.0, seed=seed + _SEEDS["test"],
                              size=size, marking=False)
    result, baseline = _Marking(), None
    for p in MARKING_PROBABILITIES:
        model, val_set = _marking_network(run, p, baseline)
        if baseline is None:
            baseline = {k: v.clone() for k, v in model.state_dict().items()}
        paths = [analyze(model, start, features={"characteristic": _characteristic}, **dream)
                 for start in starts]
        row = result.add(p, paths, score_segmenter(model, unmarked)["dice"],
                         score_segmenter(model, val_set)["dice"])
        run.log(f"G_{p:.1f}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()
                                            if not isinstance(v, list)))
    result.correlation = _rank_correlation(result.rows.values())
    run.log(f"rank correlation of Dice on unmarked images and final characteristic feature: "
            f"{result.correlation}")
    return result


def _marking_network(run: Run, p: float, baseline: dict | None) -> tuple[UNet, MarkingDataset]:
    """G_p, trained (or reloaded), and its validation set: from scratch without a
    ``baseline`` (G_0's state dict), else fine-tuned from it."""
    model = _unet(run.settings, run.seed)
    if baseline is not None:  # G_p, p > 0, starts from G_0
        model.load_state_dict(baseline)
    data = dict(p=p, size=run.settings["size"])
    val_set = MarkingDataset(run.settings["n_val"], seed=run.seed + _SEEDS["val"], **data)
    train_set = MarkingDataset(run.settings["n_train"], seed=run.seed + _SEEDS["train"], **data)
    _fit(run, f"marking_p{p:.1f}", model, train_set, val_set, finetune=baseline is not None)
    return model, val_set


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


def _marking_summary_figure(characteristic_curves: dict, metrics: dict):
    """Seed 004's Fig. 4: the characteristic feature along the paths, and Dice on unmarked
    images against the final characteristic feature."""
    from ...analysis.figures import subplots

    figure, (curves, summary) = subplots(1, 2, figsize=(11, 4.2))
    for p, curve in characteristic_curves.items():
        curves.plot(curve, label=f"p = {p:.1f}")
    curves.set(xlabel="DeepDream step", ylabel="characteristic feature (135-degree lines)",
               title="Characteristic feature along the path (mean of the starts)")
    curves.legend(fontsize=8)
    for p, row in metrics["marking"].items():
        summary.plot(row["dice_unmarked"], row["characteristic_final"], "o", color="C0")
        summary.annotate(f"p={p}", (row["dice_unmarked"], row["characteristic_final"]),
                         textcoords="offset points", xytext=(4, 4), fontsize=8)
    rho = metrics["marking_rank_correlation"]["spearman_rho"]
    summary.set(xlabel="Dice on unmarked test images", ylabel="final characteristic feature",
                title="Sensitivity vs robustness" + ("" if rho is None else
                                                     f" (Spearman rho {rho:.2f})"))
    for axis in (curves, summary):
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
    """Write the four figures of :data:`FIGURES` (no pyplot, no backend chosen)."""
    from ...analysis.figures import save_figure

    marking = _dream_grid({f"p={p:.1f}": path for p, path in marking_paths.items()},
                          "DeepDreams of the networks G_p from one white-noise start "
                          "(red: predicted mask)")
    save_figure(marking, out / "marking_dreams.png", overwrite=True)
    save_figure(_marking_summary_figure(characteristic_curves, metrics),
                out / "marking_summary.png", overwrite=True)
    lesions = _dream_grid(lesion_paths, "DeepDreams of the lesion networks from a healthy organ "
                                        "(red: predicted mask)")
    save_figure(lesions, out / "lesion_dreams.png", overwrite=True)
    save_figure(_lesion_curves_figure(lesion_curves), out / "lesion_curves.png", overwrite=True)
