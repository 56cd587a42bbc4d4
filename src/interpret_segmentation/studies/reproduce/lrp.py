"""``interpret-segmentation reproduce lrp``: seed 003's study on the synthetic defect set.

Seed 003's point is weak supervision: a classifier needs image-level labels only, a U-Net needs
pixel labels, which a person draws coarsely and for few images. The study keeps that budget:

- both classifiers (VGG-11 "128N" and "onefc") learn from the image labels (defective or not)
  of the whole training part of the 60/20/20 split;
- U-Nets learn from pixel labels for only 60 and for 119 training images (the paper's budgets
  for sewer pipes and magnetic tiles; defective images, cracks and blowholes alternating, the
  60 among the 119), and those labels are a person's coarse outlines
  (:func:`~interpret_segmentation.datasets.defects.coarse_annotation`: the defect grown by
  1-2.5 px and smoothed), not the true defect pixels; affine + elastic augmentation as in the
  paper.

An image the classifier calls defective gets the LRP relevance of its "defective" logit, made
into a mask by Simple, GMM or BMM; an image it calls defect-free gets an empty mask. Relevance
uses seed 003's rule sets ("montavon", "seibold") with the z^B bounds of the data range
(0, 1) (:data:`ZBOX_BOUNDS`; the library's default is each image's own minimum and maximum)
and with both readings of "epsilon = 0.25 std" (:data:`EPSILON_READINGS`). Two additions
not in the seed run beside the paper's pipeline: relevance averaged over the image's mirror
images (:data:`FLIP_AVERAGING`) and masks refined by closing, hole filling and a one-pixel
erosion (:data:`REFINEMENT`).

Everything is scored against the *true* defect masks (not the coarse annotations): IoU,
precision and recall of all pixels of all test images together, defect-free ones included, as
the paper's no-skill precision (the share of defect pixels in its test set) shows it did; a
mask on a defect-free image counts as false positives. The same scores over the defective test
images alone are kept too.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from ...analysis.metrics import iou_precision_recall
from ...core.io import OutputDirectory
from ...datasets.defects import (
    DefectDataset,
    defect_kind,
    defect_split,
    generate_defect_dataset,
    load_defect_sample,
)
from ...methods.lrp import (
    SEGMENTATION_METHODS,
    make_rule_set,
    refine_mask,
    relevance,
    segment,
    threshold_sweep,
)
from ...models import VGG11, UNet, vgg_parameter_groups
from ...training import affine_elastic_augment, score_classifier, seeded
from .common import Run, write_metrics

HEADS = ("128N", "onefc")
RULE_SET_NAMES = ("montavon", "seibold")
EPSILON_READINGS = {"std": "", "rms": "-rms"}
"""The two readings of "epsilon = 0.25 std" and the suffix they add to a rule set's name in
``metrics.json``: ``"std"`` (the centred standard deviation of the layer's pre-activations;
no suffix) and ``"rms"`` (their root mean square, as LRP tutorials compute it; ``"-rms"``)."""
MAX_POOLING = {"winner": "", "average": "-avgpool"}
"""The two ways relevance passes the max-pooling layers and the suffix they add to a rule
set's name: winner-take-all (no suffix) and as an average pooling (``"-avgpool"``, Montavon
et al., 2019, section 10.3.2, and their tutorial); see
:class:`~interpret_segmentation.methods.lrp.MaxPool`."""
FLIP_AVERAGING = {False: "", True: "-flips"}
"""Relevance of the image alone, or averaged with its three mirror images (``average_flips``
of :func:`~interpret_segmentation.methods.lrp.relevance`; not in seed 003), and the suffix it
adds to a rule set's name."""
REFINEMENT = {0: "", 1: "-refined"}
"""The mask as the method gives it, or refined with radius 1 (closed, holes filled, shrunk by
the first 3 x 3 convolution's half width: :func:`~interpret_segmentation.methods.lrp.refine_mask`;
not in seed 003), and the suffix it adds to a method's name."""
ZBOX_BOUNDS = (0.0, 1.0)
"""The z^B bounds of the study: the range of the pixel values (images are pixel / 255)."""
LRP_BATCH = 16  # images per relevance pass

SETTINGS = {
    "quick": dict(n=400, size=64, style="tile", width=16, classifier_epochs=20,
                  finetune_epochs=6, budgets=[60, 119], unet_steps=400, unet_lr=3e-3,
                  batch_size=8, conv_lr=3e-4, trunk_lr=1e-4, fc_lr=1e-3, dropout=0.0),
    "full": dict(n=800, size=96, style="tile", width=16, classifier_epochs=30,
                 finetune_epochs=10, budgets=[60, 119], unet_steps=900, unet_lr=3e-3,
                 batch_size=8, conv_lr=3e-4, trunk_lr=1e-4, fc_lr=1e-3, dropout=0.0),
}
"""Data-set size, image side and style, VGG width, epochs, pixel-label budgets, U-Net
optimiser steps and learning rates of the two runs.

No pretrained weights can be downloaded here, so the "onefc" VGG is trained from scratch
first (``classifier_epochs``, convolutions at ``conv_lr``, larger than the paper's 0.0001 for
pretrained filters), and the "128N" VGG starts from its convolutions, as both of the paper's
variants started from one pretrained network, and trains ``finetune_epochs`` with the paper's
learning rates (convolutions ``trunk_lr`` = 0.0001, fully connected ``fc_lr`` = 0.001); its
head runs without dropout (with dropout 0.5 it did not leave the chance level within 30
epochs on an earlier version of the set). Each U-Net trains ``unet_steps`` batches, however
many images its budget holds (``round(unet_steps * batch_size / budget)`` epochs).

The tiles are smaller than the paper's 224 px crops (96 px, 64 px for ``--quick``) so that the
study fits an hour on one CPU thread; LRP's masks were not better on larger tiles (pooled IoU
0.24 at 128 px against 0.33 at 96 px in one development run each)."""


def _pooled_scores(predictions: list[np.ndarray], truths: list[np.ndarray]) -> dict:
    """IoU, precision and recall of all the images' pixels together (empty -> 1.0)."""
    def pooled(masks):  # one row of all the pixels, a 2-D map as the metric takes it
        return np.concatenate([np.reshape(mask, (1, -1)) for mask in masks], axis=1)

    scores = iou_precision_recall(pooled(predictions), pooled(truths))
    return {name: float(value) for name, value in scores.items()}


def pixel_label_budget(train: list[int], budget: int) -> list[int]:
    """The training images that get pixel labels: ``budget`` defective ones of ``train``.

    Cracks and blowholes alternate (each kind in ``train``'s order), so a smaller budget's
    images are the first of a larger one's, as when a person labels more images of one set.

    Parameters
    ----------
    train : list of int
        Indices of the training part (:func:`~interpret_segmentation.datasets.defects.defect_split`).
    budget : int
        Number of images with pixel labels, at most the defective images in ``train``.

    Returns
    -------
    list of int
        Sorted indices, all defective.

    Raises
    ------
    ValueError
        If ``train`` holds fewer than ``budget`` defective images.
    """
    kinds = {kind: [i for i in train if defect_kind(i) == kind] for kind in ("crack", "blowhole")}
    if budget > sum(map(len, kinds.values())):
        raise ValueError(f"budget: expected at most the {sum(map(len, kinds.values()))} "
                         f"defective training images, got {budget}")
    chosen: list[int] = []
    for position in range(max(map(len, kinds.values()))):
        for kind in ("crack", "blowhole"):
            if position < len(kinds[kind]) and len(chosen) < budget:
                chosen.append(kinds[kind][position])
    return sorted(chosen)


def run_lrp_reproduction(out, quick: bool = False, seed: int = 0, progress: bool = True,
                         log=print) -> dict:
    """Run the study and write ``out/metrics.json``, precision-recall curves and examples.

    Parameters
    ----------
    out : str or Path
        Output directory: ``data/`` (the generated set), ``models/`` (checkpoints; a rerun
        reuses them), ``results/`` (training logs), ``metrics.json``, ``pr_curves.png`` and
        ``examples.png``.
    quick : bool, default False
        The small run of :data:`SETTINGS` (3 minutes instead of 13 on one thread here).
    seed : int, default 0
        Data-set and initialisation seed.

    Returns
    -------
    dict
        The content of ``metrics.json``: ``classifiers`` (per head ``balanced_accuracy``,
        ``tpr``, ``tnr`` on the test part), ``segmentation`` (``unet/<budget>`` for each
        pixel-label budget and every ``head/rule_set/method``, the rule set named with its
        epsilon reading and max-pooling rule, e.g. ``"128N/seibold-rms-avgpool/bmm"``:
        ``iou``, ``precision``, ``recall`` over all test images; with ``-flips`` after the rule
        set and ``-refined`` after the method for the two additions, e.g.
        ``"onefc/seibold-avgpool-flips/simple-refined"``), ``segmentation_defective`` (the
        same over the defective test images only), ``annotation`` (the coarse annotations of
        the test images scored like a segmentation), ``iou_gap`` (per U-Net, its IoU minus
        the best LRP mask's; seed 003 finds them about equal), ``iou_gap_seed003`` (the same
        for the best mask of the seed's own pipeline, without the additions), ``settings``
        (with ``best`` and ``best_seed003``, those two LRP combinations), ``timings`` (seconds
        per stage) and ``seconds``.

    ``out`` is an :class:`~interpret_segmentation.core.io.OutputDirectory` whose run manifest
    holds the settings and seed: a rerun with others is refused instead of reusing data and
    models made differently.
    """
    settings = dict(SETTINGS["quick" if quick else "full"])
    with OutputDirectory(out, "reproduce lrp",
                         settings={"settings": settings, "seed": seed}) as output:
        output.files("metrics.json", "pr_curves.png", "examples.png")
        for part in ("models", "results"):
            output.directory(part)
        output.directory("data", create=False)  # generated as a whole
        return _reproduce(output.path, settings, quick, seed, progress, log)


def _reproduce(out: Path, settings: dict, quick: bool, seed: int, progress: bool, log) -> dict:
    """The work of :func:`run_lrp_reproduction`, in ``out`` (its names claimed)."""
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(stage: str) -> None:
        timings[stage] = time.perf_counter() - started - sum(timings.values())

    run = Run(out, settings, quick, seed, progress, log)
    data = _defect_data(run)
    split = defect_split(settings["n"])
    lap("data")
    classifiers = _train_classifiers(run, data, split)
    lap("classifiers")
    unets = {budget: _train_unet(run, data, split, budget) for budget in settings["budgets"]}
    lap("unets")
    test = _test_data(data, split[2])
    metrics = {"classifiers": _classifier_scores(classifiers, test["dataset"], log)}
    masks = {f"unet/{budget}": _unet_masks(unet, test["images"]) for budget, unet in unets.items()}
    unet_names = list(masks)
    lrp_masks, curves, maps = _lrp_segmentations(classifiers, test)
    masks.update(lrp_masks)
    lap("lrp")
    defective = test["defective"]
    metrics["segmentation"] = {name: _pooled_scores(found, test["truths"])
                               for name, found in masks.items()}
    metrics["segmentation_defective"] = {
        name: _pooled_scores([found[k] for k in defective], [test["truths"][k] for k in defective])
        for name, found in masks.items()}
    metrics["annotation"] = _pooled_scores(test["annotations"], test["truths"])
    def best_of(names):
        return max(names, key=lambda name: metrics["segmentation"][name]["iou"])

    def gaps(lrp_name):
        return {name: metrics["segmentation"][name]["iou"]
                - metrics["segmentation"][lrp_name]["iou"] for name in unet_names}

    best = best_of(lrp_masks)
    best_seed003 = best_of([name for name in lrp_masks if _in_seed003(name)])
    metrics["iou_gap"] = gaps(best)
    metrics["iou_gap_seed003"] = gaps(best_seed003)
    for name in (*unet_names, best_seed003, best):
        _log_segmentation(name, metrics["segmentation"][name], len(test["truths"]), log)
    metrics["settings"] = {**settings, "seed": seed, "quick": quick,
                           "test_images": len(test["truths"]),
                           "defective_test_images": len(defective), "best": best,
                           "best_seed003": best_seed003,
                           "zbox_bounds": list(ZBOX_BOUNDS),
                           "epsilon_readings": {"std": "centred standard deviation",
                                                "rms": "root mean square"},
                           "rule_sets": {name: {"rules": base, "epsilon": reading,
                                                "max_pool": pooling}
                                         for name, (base, reading, pooling)
                                         in _rule_set_variants().items()},
                           "additions": {"-flips": "relevance averaged over the image and its "
                                                   "three mirror images",
                                         "-refined": "mask closed, holes filled, eroded by 1 px"},
                           "torch_threads": torch.get_num_threads()}
    largest = f"unet/{max(settings['budgets'])}"
    head_rules = best.rsplit("/", 1)[0]
    _figures(out, curves, {name: metrics["segmentation_defective"][name] for name in unet_names},
             test["images"][defective], [test["truths"][k] for k in defective],
             [masks[largest][k] for k in defective], largest, best,
             (maps[head_rules][defective], [masks[best][k] for k in defective]))
    lap("figures")
    metrics["timings"] = timings
    metrics["seconds"] = time.perf_counter() - started
    write_metrics(out, metrics)
    log(f"results: {out / 'metrics.json'}, {out / 'pr_curves.png'}, {out / 'examples.png'} "
        f"({metrics['seconds']:.0f} s)")
    return metrics


# -- data and models ------------------------------------------------------------------------------


def _defect_data(run: Run) -> Path:
    """``out/data``: the defect data set, generated unless a previous run did."""
    data = run.out / "data"
    if not (data / "defects.json").is_file():
        run.log(f"generating {run.settings['n']} defect images of {run.settings['size']} px in "
                f"{data} ...")
        generate_defect_dataset(data, n=run.settings["n"], seed=run.seed,
                                size=run.settings["size"], style=run.settings["style"],
                                progress=run.progress)
    return data


def _vgg(run: Run, head: str) -> VGG11:
    """A freshly initialised VGG-11 with ``head``, the same weights for every seed."""
    with seeded(run.seed):
        return VGG11(in_channels=1, width=run.settings["width"], head=head,
                     input_size=run.settings["size"], dropout=run.settings["dropout"])


def _train_classifiers(run: Run, data: Path, split) -> dict:
    """The VGG-11 classifiers on the image labels of the whole training part, in :data:`HEADS`
    order, in eval mode.

    "onefc" trains first (``classifier_epochs``, convolutions at ``conv_lr``); "128N" starts
    from its convolutions and is fine-tuned (``finetune_epochs``, convolutions at ``trunk_lr``).
    """
    labelled = DefectDataset(data, labels=True)
    onefc = _vgg(run, "onefc")
    _fit_vgg(run, onefc, labelled, split, run.settings["classifier_epochs"],
             run.settings["conv_lr"])
    net128 = _vgg(run, "128N")
    net128.features.load_state_dict(onefc.features.state_dict())
    _fit_vgg(run, net128, labelled, split, run.settings["finetune_epochs"],
             run.settings["trunk_lr"])
    trained = {"onefc": onefc, "128N": net128}
    return {head: trained[head] for head in HEADS}


def _fit_vgg(run: Run, model: VGG11, labelled, split, epochs: int, conv_lr: float) -> None:
    """Train (or reload) one classifier, then put it in eval mode."""
    groups = vgg_parameter_groups(model, conv_lr=conv_lr, fc_lr=run.settings["fc_lr"])
    run.fit(model, f"vgg_{model.head}", Subset(labelled, split[0]), Subset(labelled, split[1]),
            epochs=epochs, lr=1e-3, task="classification", parameter_groups=groups, augment=True)
    model.eval()


def _train_unet(run: Run, data: Path, split, budget: int) -> UNet:
    """A U-Net on the coarse annotations of ``budget`` defective training images (affine +
    elastic augmentation), validated on those of the defective validation images; eval mode."""
    with seeded(run.seed):
        unet = UNet(in_channels=1, out_channels=1, width=8, depth=4, global_context=False)
    labelled = pixel_label_budget(split[0], budget)
    validation = [i for i in split[1] if defect_kind(i) != "none"]
    epochs = max(1, round(run.settings["unet_steps"] * run.settings["batch_size"] / budget))
    run.log(f"U-Net on the coarse pixel labels of {budget} training images ({epochs} epochs)")
    run.fit(unet, f"unet_{budget}", DefectDataset(data, labelled, labels=False, annotation=True),
            DefectDataset(data, validation, labels=False, annotation=True), epochs=epochs,
            lr=run.settings["unet_lr"], augment=affine_elastic_augment)
    return unet.eval()


def _test_data(data: Path, test_idx: list[int]) -> dict:
    """The test part: ``dataset`` (image labels), ``images`` (N, 1, H, W), ``truths`` and
    ``annotations`` (bool (H, W) each: the true defects and their coarse annotations) and
    ``defective`` (positions of the defective images)."""
    dataset = DefectDataset(data, indices=test_idx, labels=True)
    pixels = DefectDataset(data, indices=test_idx, labels=False)
    return {"dataset": dataset,
            "images": torch.stack([image for image, _ in pixels]),
            "truths": [segment[0].numpy() > 0.5 for _, segment in pixels],
            "annotations": [load_defect_sample(data, i).annotation for i in test_idx],
            "defective": [k for k, (_, label) in enumerate(dataset) if label == 1]}


# -- scores ---------------------------------------------------------------------------------------


def _classifier_scores(classifiers: dict, test_set, log) -> dict:
    """Balanced accuracy, TPR and TNR of each classifier on the test part (logged)."""
    scores = {}
    for head, model in classifiers.items():
        result = score_classifier(model, test_set)
        scores[head] = {k: result[k] for k in ("balanced_accuracy", "tpr", "tnr")}
        log(f"VGG {head}: balanced accuracy {result['balanced_accuracy']:.3f}, TPR "
            f"{result['tpr']:.3f}, TNR {result['tnr']:.3f} on {result['n']} test images")
    return scores


def _unet_masks(unet: UNet, images: torch.Tensor) -> list[np.ndarray]:
    """The U-Net's masks (bool (H, W)): logit above 0."""
    with torch.no_grad():
        return [m[0].numpy() for batch in images.split(LRP_BATCH) for m in (unet(batch) > 0)]


def study_rule_sets() -> dict[str, dict]:
    """The rule sets of the study by their ``metrics.json`` names: each of
    :data:`RULE_SET_NAMES` with z^B bounds :data:`ZBOX_BOUNDS`, for each reading of
    :data:`EPSILON_READINGS` and each of :data:`MAX_POOLING` (``"montavon"``,
    ``"montavon-rms"``, ``"montavon-avgpool"``, ``"montavon-rms-avgpool"``, the same for
    ``"seibold"``)."""
    return {name: make_rule_set(base, bounds=ZBOX_BOUNDS, spread=reading, max_pool=pooling)
            for name, (base, reading, pooling) in _rule_set_variants().items()}


def _rule_set_variants() -> dict[str, tuple[str, str, str]]:
    """``metrics.json`` name -> (rule set, epsilon reading, max-pooling) of every variant."""
    return {f"{base}{eps_suffix}{pool_suffix}": (base, reading, pooling)
            for base in RULE_SET_NAMES for reading, eps_suffix in EPSILON_READINGS.items()
            for pooling, pool_suffix in MAX_POOLING.items()}


def _relevance_maps(model, images: torch.Tensor, rule_set, average_flips: bool = False
                    ) -> np.ndarray:
    """Relevance of the "defective" logit summed over channels (N, H, W), in batches."""
    return torch.cat([relevance(model, batch, 1, rule_set=rule_set,
                                average_flips=average_flips).sum(1)
                      for batch in images.split(LRP_BATCH)]).numpy()


def _in_seed003(name: str) -> bool:
    """Whether a ``head/rule_set/method`` name is seed 003's own pipeline (no addition)."""
    return not any(suffix and suffix in name
                   for suffix in (*FLIP_AVERAGING.values(), *REFINEMENT.values()))


def _lrp_segmentations(classifiers: dict, test: dict) -> tuple:
    """Every ``head/rule_set/method`` segmentation of the test images (:func:`_test_data`).

    An image the classifier calls defect-free gets an empty mask; the others get
    ``segment(relevance map, method, refine)``; every rule set runs with and without
    :data:`FLIP_AVERAGING`, every method with and without :data:`REFINEMENT`.

    Returns
    -------
    (dict, dict, dict)
        Masks (bool (H, W) per test image) per ``head/rule_set/method``; mean (recall,
        precision) threshold curves over the defective images per ``head/rule_set`` (seed
        003's rule sets only, without flips); the relevance maps (N, H, W) of all test images
        per ``head/rule_set``.
    """
    images, truths, defective = test["images"], test["truths"], test["defective"]
    masks, curves, all_maps = {}, {}, {}
    for head, model in classifiers.items():
        with torch.no_grad():
            called = torch.cat([model(batch).argmax(1) for batch in images.split(LRP_BATCH)])
        called = called.numpy() == 1
        for rules_name, rules in study_rule_sets().items():
            for flips, flips_suffix in FLIP_AVERAGING.items():
                name = f"{head}/{rules_name}{flips_suffix}"
                maps = all_maps[name] = _relevance_maps(model, images, rules, flips)
                if not flips:
                    curves[name] = _mean_threshold_curve(maps[defective],
                                                         [truths[k] for k in defective])
                for method in SEGMENTATION_METHODS:
                    found = [segment(m, method) if gate else np.zeros_like(t)
                             for m, t, gate in zip(maps, truths, called)]
                    for refine, refine_suffix in REFINEMENT.items():
                        masks[f"{name}/{method}{refine_suffix}"] = (
                            [refine_mask(mask, refine) for mask in found] if refine else found)
    return masks, curves, all_maps


def _mean_threshold_curve(maps, truths) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision of :func:`threshold_sweep`, averaged over the images."""
    sweeps = [threshold_sweep(m, t) for m, t in zip(maps, truths)]
    return (np.mean([s["recall"] for s in sweeps], 0),
            np.mean([s["precision"] for s in sweeps], 0))


def _log_segmentation(name: str, score: dict, images: int, log) -> None:
    """One line: a segmentation's pooled IoU, precision and recall."""
    log(f"{name}: IoU {score['iou']:.3f}, precision {score['precision']:.3f}, recall "
        f"{score['recall']:.3f} over {images} test images")


# -- figures --------------------------------------------------------------------------------------


def _figures(out: Path, curves, unets: dict, images, truths, unet_masks, unet_name: str,
             best: str, best_maps) -> None:
    """Write ``pr_curves.png`` and ``examples.png`` (no pyplot, no backend chosen)."""
    from ...analysis.figures import save_figure

    save_figure(_pr_figure(curves, unets), out / "pr_curves.png", overwrite=True)
    save_figure(_examples_figure(images, truths, unet_masks, unet_name, best, *best_maps),
                out / "examples.png", overwrite=True)


def _pr_figure(curves: dict, unets: dict):
    """Precision against recall: one line per ``head/rule_set`` curve, each U-Net a marker."""
    from ...analysis.figures import subplots

    figure, axis = subplots(figsize=(7.5, 5))
    for name, (recall, precision) in curves.items():
        axis.plot(recall, precision, label=f"LRP {name}", linestyle="--" if "-rms" in name else "-")
    for (name, scores), marker in zip(unets.items(), "*Psd"):
        axis.plot([scores["recall"]], [scores["precision"]], "k" + marker, markersize=11,
                  label=name.replace("unet/", "U-Net, pixel labels: "), linestyle="none")
    axis.set(xlabel="recall", ylabel="precision", xlim=(0, 1.03), ylim=(0, 1.02),
             title="Relevance thresholds on defective test images")
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    axis.grid(alpha=0.3)
    return figure


def _examples_figure(images, truths, unet_masks, unet_name: str, best: str, maps, masks):
    """Up to four defective images, one row each: input, truth, U-Net, relevance, LRP mask."""
    from ...analysis.figures import subplots

    rows = min(4, len(images))
    figure, axes = subplots(rows, 5, figsize=(12, 2.5 * rows), squeeze=False)
    head_rules, method = best.rsplit("/", 1)
    unet_title = unet_name.replace("unet/", "U-Net (") + " labels)"
    for row in range(rows):
        limit = float(np.abs(maps[row]).max()) or 1.0
        panels = [(images[row, 0].numpy(), "input", "gray", None),
                  (truths[row], "ground truth", "gray", None),
                  (unet_masks[row], unet_title, "gray", None),
                  (maps[row], f"relevance ({head_rules})", "bwr", limit),
                  (masks[row], f"LRP {method}", "gray", None)]
        for axis, (array, title, colours, bound) in zip(axes[row], panels):
            axis.imshow(array, cmap=colours, vmin=-bound if bound else None, vmax=bound)
            axis.set_title(title, fontsize=9)
            axis.axis("off")
    return figure
