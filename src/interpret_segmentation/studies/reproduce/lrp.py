"""``interpret-segmentation reproduce lrp``: seed 003's study on the synthetic defect set.

Classifiers trained on image-level labels only (VGG-11 "128N" and "onefc") are turned into
segmenters: an image the classifier calls defective gets the LRP relevance of its "defective"
logit (rule sets "montavon" and "seibold"), made into a mask by Simple, GMM or BMM; an image it
calls defect-free gets an empty mask. A U-Net trained on the pixel labels (affine + elastic
augmentation) is the baseline. Everything is scored on the test part of the 60/20/20 split.

Segmentation scores are pooled over the defective test images: IoU, precision and recall of
all their pixels together (one defect-free image would otherwise count as a perfect 1.0).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from ...analysis.metrics import iou_precision_recall
from ...core.io import OutputDirectory
from ...datasets.defects import DefectDataset, defect_split, generate_defect_dataset
from ...methods.lrp import SEGMENTATION_METHODS, relevance, segment, threshold_sweep
from ...models import VGG11, UNet, vgg_parameter_groups
from ...training import affine_elastic_augment, score_classifier, seeded
from .common import Run, write_metrics

HEADS = ("128N", "onefc")
RULE_SET_NAMES = ("montavon", "seibold")

SETTINGS = {
    "quick": dict(n=240, size=96, width=16, classifier_epochs=40, finetune_epochs=20,
                  unet_epochs=8, batch_size=8, conv_lr=3e-4, trunk_lr=1e-4, fc_lr=1e-3,
                  dropout=0.0),
    "full": dict(n=1000, size=224, width=16, classifier_epochs=45, finetune_epochs=12,
                 unet_epochs=15, batch_size=8, conv_lr=3e-4, trunk_lr=1e-4, fc_lr=1e-3,
                 dropout=0.0),
}
"""Data-set size, image side, VGG width, epochs, learning rates and the 128N head's dropout of
the two runs.

No pretrained weights can be downloaded here, so the "onefc" VGG is trained from scratch
first (``classifier_epochs``, convolutions at ``conv_lr``, larger than the paper's 0.0001 for
pretrained filters), and the "128N" VGG starts from its convolutions, as both of the paper's
variants started from one pretrained network, and trains ``finetune_epochs`` with the paper's
learning rates (convolutions ``trunk_lr`` = 0.0001, fully connected ``fc_lr`` = 0.001).
Trained from scratch itself, 128N stayed at the chance level on the 224 px set for 38 of 50
epochs (loss 0.693), and on the 96 px set it needed 22 epochs to start learning; with dropout
0.5 it did not start within 30 epochs there, so its head runs without dropout."""


def _pooled_scores(predictions: list[np.ndarray], truths: list[np.ndarray]) -> dict:
    """IoU, precision and recall of all the images' pixels together (empty -> 1.0)."""
    def pooled(masks):  # one row of all the pixels, a 2-D map as the metric takes it
        return np.concatenate([np.reshape(mask, (1, -1)) for mask in masks], axis=1)

    scores = iou_precision_recall(pooled(predictions), pooled(truths))
    return {name: float(value) for name, value in scores.items()}


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
        The small run of :data:`SETTINGS` (minutes instead of an hour here).
    seed : int, default 0
        Data-set and initialisation seed.

    Returns
    -------
    dict
        The content of ``metrics.json``: ``classifiers`` (per head ``balanced_accuracy``,
        ``tpr``, ``tnr`` on the test part), ``segmentation`` (``unet`` and every
        ``head/rule_set/method``: ``iou``, ``precision``, ``recall``), ``settings`` and
        ``seconds``.

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
    run = Run(out, settings, quick, seed, progress, log)
    data = _defect_data(run)
    split = defect_split(settings["n"])
    classifiers = _train_classifiers(run, data, split)
    unet = _train_unet(run, data, split)
    test_set = DefectDataset(data, indices=split[2], labels=True)
    metrics = {"classifiers": _classifier_scores(classifiers, test_set, log)}
    images, truths = _defective_images(data, split[2], test_set)
    unet_masks = _unet_masks(unet, images)
    segmentation, curves, examples = _lrp_segmentations(classifiers, images, truths)
    metrics["segmentation"] = {"unet": _pooled_scores(unet_masks, truths), **segmentation}
    best = max(segmentation, key=lambda name: segmentation[name]["iou"])
    for name in ("unet", best):
        _log_segmentation(name, metrics["segmentation"][name], len(images), log)
    metrics["settings"] = {**settings, "seed": seed, "quick": quick,
                           "defective_test_images": len(images), "best": best}
    metrics["seconds"] = time.perf_counter() - started
    _figures(out, curves, metrics, images, truths, unet_masks, best, examples[best])
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
                                size=run.settings["size"], progress=run.progress)
    return data


def _vgg(run: Run, head: str) -> VGG11:
    """A freshly initialised VGG-11 with ``head``, the same weights for every seed."""
    with seeded(run.seed):
        return VGG11(in_channels=1, width=run.settings["width"], head=head,
                     input_size=run.settings["size"], dropout=run.settings["dropout"])


def _train_classifiers(run: Run, data: Path, split) -> dict:
    """The VGG-11 classifiers on the image labels, in :data:`HEADS` order, in eval mode.

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


def _train_unet(run: Run, data: Path, split) -> UNet:
    """The baseline U-Net on the pixel labels (affine + elastic augmentation), in eval mode."""
    with seeded(run.seed):
        unet = UNet(in_channels=1, out_channels=1, width=8, depth=4, global_context=False)
    masked = DefectDataset(data, labels=False)
    run.fit(unet, "unet", Subset(masked, split[0]), Subset(masked, split[1]),
            epochs=run.settings["unet_epochs"], lr=3e-3, augment=affine_elastic_augment)
    return unet.eval()


def _defective_images(data: Path, test_idx, test_set) -> tuple[torch.Tensor, list[np.ndarray]]:
    """The defective test images (N, 1, H, W) and their defect masks (bool (H, W) each)."""
    defective = [i for i, (_, label) in zip(test_idx, test_set) if label == 1]
    pixels = DefectDataset(data, indices=defective, labels=False)
    images = torch.stack([image for image, _ in pixels])
    truths = [segment[0].numpy() > 0.5 for _, segment in pixels]
    return images, truths


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
        return [m[0].numpy() for m in (unet(images) > 0)]


def _lrp_segmentations(classifiers: dict, images: torch.Tensor, truths: list) -> tuple:
    """Every ``head/rule_set/method`` segmentation of the defective images.

    Returns
    -------
    (dict, dict, dict)
        Pooled scores per ``head/rule_set/method``; mean (recall, precision) threshold curves
        per ``head/rule_set``; (relevance maps (N, H, W), masks) per ``head/rule_set/method``.
    """
    scores, curves, examples = {}, {}, {}
    for head, model in classifiers.items():
        with torch.no_grad():
            called_defective = model(images).argmax(1).numpy() == 1
        for rule_set in RULE_SET_NAMES:
            maps = relevance(model, images, 1, rule_set=rule_set).sum(1).numpy()
            curves[f"{head}/{rule_set}"] = _mean_threshold_curve(maps, truths)
            for method in SEGMENTATION_METHODS:
                masks = _gated_masks(maps, truths, called_defective, method)
                scores[f"{head}/{rule_set}/{method}"] = _pooled_scores(masks, truths)
                examples[f"{head}/{rule_set}/{method}"] = (maps, masks)
    return scores, curves, examples


def _mean_threshold_curve(maps, truths) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision of :func:`threshold_sweep`, averaged over the images."""
    sweeps = [threshold_sweep(m, t) for m, t in zip(maps, truths)]
    return (np.mean([s["recall"] for s in sweeps], 0),
            np.mean([s["precision"] for s in sweeps], 0))


def _gated_masks(maps, truths, called_defective, method: str) -> list[np.ndarray]:
    """``segment(map, method)`` where the classifier called the image defective, else empty."""
    return [segment(m, method) if gate else np.zeros_like(t)
            for m, t, gate in zip(maps, truths, called_defective)]


def _log_segmentation(name: str, score: dict, images: int, log) -> None:
    """One line: a segmentation's pooled IoU, precision and recall."""
    log(f"{name}: IoU {score['iou']:.3f}, precision {score['precision']:.3f}, recall "
        f"{score['recall']:.3f} over {images} defective test images")


# -- figures --------------------------------------------------------------------------------------


def _figures(out: Path, curves, metrics, images, truths, unet_masks, best, best_maps) -> None:
    """Write ``pr_curves.png`` and ``examples.png`` (no pyplot, no backend chosen)."""
    from ...analysis.figures import save_figure

    save_figure(_pr_figure(curves, metrics["segmentation"]["unet"]), out / "pr_curves.png",
                overwrite=True)
    save_figure(_examples_figure(images, truths, unet_masks, best, *best_maps),
                out / "examples.png", overwrite=True)


def _pr_figure(curves: dict, unet: dict):
    """Precision against recall: one line per ``head/rule_set`` curve, the U-Net as a star."""
    from ...analysis.figures import subplots

    figure, axis = subplots(figsize=(5.5, 4.5))
    for name, (recall, precision) in curves.items():
        axis.plot(recall, precision, label=f"LRP {name}")
    axis.plot([unet["recall"]], [unet["precision"]], "k*", markersize=12, label="U-Net")
    axis.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
             title="Relevance thresholds on defective test images")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return figure


def _examples_figure(images, truths, unet_masks, best: str, maps, masks):
    """Up to four defective images, one row each: input, truth, U-Net, relevance, LRP mask."""
    from ...analysis.figures import subplots

    rows = min(4, len(images))
    figure, axes = subplots(rows, 5, figsize=(12, 2.5 * rows), squeeze=False)
    head_rules, method = best.rsplit("/", 1)
    for row in range(rows):
        limit = float(np.abs(maps[row]).max()) or 1.0
        panels = [(images[row, 0].numpy(), "input", "gray", None),
                  (truths[row], "ground truth", "gray", None),
                  (unet_masks[row], "U-Net", "gray", None),
                  (maps[row], f"relevance ({head_rules})", "bwr", limit),
                  (masks[row], f"LRP {method}", "gray", None)]
        for axis, (array, title, colours, bound) in zip(axes[row], panels):
            axis.imshow(array, cmap=colours, vmin=-bound if bound else None, vmax=bound)
            axis.set_title(title, fontsize=9)
            axis.axis("off")
    return figure
