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

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from ...core.io import OutputDirectory, atomic_write
from ...datasets.defects import DefectDataset, defect_split, generate_defect_dataset
from ...methods.lrp import SEGMENTATION_METHODS, relevance, segment, threshold_sweep
from ...models import VGG11, UNet, vgg_parameter_groups
from ...training import (
    affine_elastic_augment,
    evaluate_classifier,
    train,
)
from .common import free_path, train_or_load

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
    tp = sum(float(np.logical_and(p, t).sum()) for p, t in zip(predictions, truths))
    predicted = sum(float(p.sum()) for p in predictions)
    actual = sum(float(t.sum()) for t in truths)
    union = predicted + actual - tp
    return {"iou": tp / union if union else 1.0,
            "precision": tp / predicted if predicted else 1.0,
            "recall": tp / actual if actual else 1.0}


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
    data = out / "data"
    if not (data / "defects.json").is_file():
        log(f"generating {settings['n']} defect images of {settings['size']} px in {data} ...")
        generate_defect_dataset(data, n=settings["n"], seed=seed, size=settings["size"],
                                progress=progress)
    train_idx, val_idx, test_idx = defect_split(settings["n"])
    labelled = DefectDataset(data, labels=True)
    masked = DefectDataset(data, labels=False)
    common = dict(batch_size=settings["batch_size"], seed=seed, progress=progress, log=log)

    classifiers, metrics = {}, {"classifiers": {}, "segmentation": {}}
    for head in ("onefc", "128N"):  # 128N starts from onefc's convolutions
        torch.manual_seed(seed)
        model = VGG11(in_channels=1, width=settings["width"], head=head,
                      input_size=settings["size"], dropout=settings["dropout"])
        if head == "onefc":
            epochs, conv_lr = settings["classifier_epochs"], settings["conv_lr"]
        else:
            model.features.load_state_dict(classifiers["onefc"].features.state_dict())
            epochs, conv_lr = settings["finetune_epochs"], settings["trunk_lr"]

        def fit(model, head=head, epochs=epochs, conv_lr=conv_lr):
            return train(model, Subset(labelled, train_idx), Subset(labelled, val_idx),
                         epochs=epochs, lr=1e-3, task="classification",
                         parameter_groups=vgg_parameter_groups(model, conv_lr=conv_lr,
                                                                fc_lr=settings["fc_lr"]),
                         results_path=free_path(out / "results" / f"vgg_{head}.txt"),
                         checkpoint_dir=out / "models" / "epochs", checkpoint_prefix=f"vgg_{head}",
                         augment=True, **common)

        train_or_load(model, out / "models" / f"vgg_{head}.pth", fit, log)
        classifiers[head] = model.eval()
    classifiers = {head: classifiers[head] for head in HEADS}
    torch.manual_seed(seed)
    unet = UNet(in_channels=1, out_channels=1, width=8, depth=4, global_context=False)
    train_or_load(unet, out / "models" / "unet.pth", lambda model: train(
        model, Subset(masked, train_idx), Subset(masked, val_idx),
        epochs=settings["unet_epochs"], lr=3e-3, results_path=free_path(out / "results" / "unet.txt"),
        checkpoint_dir=out / "models" / "epochs", checkpoint_prefix="unet",
        augment=affine_elastic_augment, **common), log)
    unet.eval()

    test_set = DefectDataset(data, indices=test_idx, labels=True)
    for head, model in classifiers.items():
        scores = evaluate_classifier(model, test_set)
        metrics["classifiers"][head] = {k: scores[k] for k in ("balanced_accuracy", "tpr", "tnr")}
        log(f"VGG {head}: balanced accuracy {scores['balanced_accuracy']:.3f}, TPR "
            f"{scores['tpr']:.3f}, TNR {scores['tnr']:.3f} on {scores['n']} test images")

    defective = [i for i, (_, label) in zip(test_idx, test_set) if label == 1]
    pixels = DefectDataset(data, indices=defective, labels=False)
    images = torch.stack([image for image, _ in pixels])
    truths = [segment[0].numpy() > 0.5 for _, segment in pixels]
    with torch.no_grad():
        unet_masks = [m[0].numpy() for m in (unet(images) > 0)]
    metrics["segmentation"]["unet"] = _pooled_scores(unet_masks, truths)
    curves, examples = {}, {}
    for head, model in classifiers.items():
        with torch.no_grad():
            called_defective = model(images).argmax(1).numpy() == 1
        for rule_set in RULE_SET_NAMES:
            maps = relevance(model, images, 1, rule_set=rule_set).sum(1).numpy()
            sweeps = [threshold_sweep(m, t) for m, t in zip(maps, truths)]
            curves[f"{head}/{rule_set}"] = (np.mean([s["recall"] for s in sweeps], 0),
                                           np.mean([s["precision"] for s in sweeps], 0))
            for method in SEGMENTATION_METHODS:
                masks = [segment(m, method) if gate else np.zeros_like(t)
                         for m, t, gate in zip(maps, truths, called_defective)]
                name = f"{head}/{rule_set}/{method}"
                metrics["segmentation"][name] = _pooled_scores(masks, truths)
                examples[name] = (maps, masks)
    best = max((k for k in metrics["segmentation"] if k != "unet"),
               key=lambda k: metrics["segmentation"][k]["iou"])
    for name in ("unet", best):
        score = metrics["segmentation"][name]
        log(f"{name}: IoU {score['iou']:.3f}, precision {score['precision']:.3f}, recall "
            f"{score['recall']:.3f} over {len(defective)} defective test images")
    metrics["settings"] = {**settings, "seed": seed, "quick": quick,
                           "defective_test_images": len(defective), "best": best}
    metrics["seconds"] = time.perf_counter() - started
    _figures(out, curves, metrics, images, truths, unet_masks, best, examples[best])
    atomic_write(out / "metrics.json", lambda f: f.write(json.dumps(metrics, indent=1) + "\n"),
                 mode="w", overwrite=True)
    log(f"results: {out / 'metrics.json'}, {out / 'pr_curves.png'}, {out / 'examples.png'} "
        f"({metrics['seconds']:.0f} s)")
    return metrics


def _figures(out: Path, curves, metrics, images, truths, unet_masks, best, best_maps) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...analysis.figures import save_figure

    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    for name, (recall, precision) in curves.items():
        axis.plot(recall, precision, label=f"LRP {name}")
    unet = metrics["segmentation"]["unet"]
    axis.plot([unet["recall"]], [unet["precision"]], "k*", markersize=12, label="U-Net")
    axis.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
             title="Relevance thresholds on defective test images")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    save_figure(figure, out / "pr_curves.png", overwrite=True)

    maps, masks = best_maps
    rows = min(4, len(images))
    figure, axes = plt.subplots(rows, 5, figsize=(12, 2.5 * rows), squeeze=False)
    for row in range(rows):
        limit = float(np.abs(maps[row]).max()) or 1.0
        panels = [(images[row, 0].numpy(), "input", "gray", None),
                  (truths[row], "ground truth", "gray", None),
                  (unet_masks[row], "U-Net", "gray", None),
                  (maps[row], f"relevance ({best.rsplit('/', 1)[0]})", "bwr", limit),
                  (masks[row], f"LRP {best.rsplit('/', 1)[1]}", "gray", None)]
        for axis, (array, title, colours, bound) in zip(axes[row], panels):
            axis.imshow(array, cmap=colours, vmin=-bound if bound else None, vmax=bound)
            axis.set_title(title, fontsize=9)
            axis.axis("off")
    save_figure(figure, out / "examples.png", overwrite=True)
