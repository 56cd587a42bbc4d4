"""The demo: testnet data, the default U-Net, every registered segmentation method on a few
validation images, a report.

Everything it needs is made locally: the data set is generated when absent, the U-Net trained
when no checkpoint is cached. Results go to ``out/demo/``: the data-set runner's files
(``report.html`` to browse, ``rows.csv``, ``items/``, ``table.md``), and ``report.md``,
``summary.json`` and a figure per image.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ..analysis.faithfulness import OWN_SCORES, context_map
from ..analysis.figures import explanation_figure, save_figure
from ..analysis.metrics import context_ratio, dice
from ..core.explanation import Explanation
from ..core.io import MANIFEST, OutputDirectory, atomic_write, file_sha256, json_ready
from ..core.validate import check_positive
from ..datasets.testnet import generate_dataset
from ..methods import registry
from ..training import (
    DEFAULT_MODEL,
    DEFAULT_TRAINING,
    RULE_DICE,
    dataset_splits,
    load_default_model,
    score_segmenter,
    train_default_model,
)
from .engines import LocalEngine
from .report import write_report
from .runner import run_items
from .tables import summarize_rows, write_table
from .work import ValidationSource, Work, method_runs

DEFAULT_DATASET = Path("examples/testnet/dataset")
DEFAULT_CHECKPOINT = Path("examples/testnet/testnet.pth")
DEFAULT_OUT = Path("out/demo")
CONTEXT_FACTOR = 2.0
LEGACY_MARKER = ".interpret-segmentation-demo"
"""What demos before the output manifest left in their output directory."""
NOT_LEARNED = (
    f"the demo U-Net did not learn testnet's rule (validation Dice {{val_dice:.4f}} < {RULE_DICE}; "
    "a model that segments both left shapes gets about 0.67), so the maps explain a broken "
    "model; delete {checkpoint} to retrain it")


def _check_inputs(dataset: Path, checkpoint: Path) -> None:
    """Refuse a data set or checkpoint path of the wrong kind before anything is written."""
    if dataset.exists() and not dataset.is_dir():
        raise ValueError(f"--dataset: expected a data-set directory, got the file {dataset}")
    if checkpoint.exists() and not checkpoint.is_file():
        raise ValueError(f"--checkpoint: expected a checkpoint file, got the directory {checkpoint}")
    if checkpoint.is_file():
        load_default_model(checkpoint)  # an unreadable checkpoint is refused before --out is made
    info_path = checkpoint.with_suffix(".json")
    if not checkpoint.exists() and os.path.lexists(info_path) and _read_info(info_path) is None:
        raise FileExistsError(
            f"--checkpoint: {info_path}, where the demo records how it trained {checkpoint}, "
            "exists and was not written by the demo; move it or choose another --checkpoint")


def _read_info(path: Path) -> dict | None:
    """The training record the demo keeps beside its checkpoint, or None when ``path`` holds
    something else (or nothing, or a link)."""
    if path.is_symlink() or not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "train_seconds" in info else None


def prepare_model(dataset: Path, checkpoint: Path, progress: bool, log=print):
    """Generate the data set and train the default U-Net when they are missing.

    Returns (model, model_summary) where model_summary has ``val_dice`` (measured now on 200
    images of the validation split), ``rule_learned`` (``val_dice`` at least
    :data:`~interpret_segmentation.training.RULE_DICE`), ``train_seconds`` and ``epochs`` (of
    the run that made the checkpoint), ``cached`` and ``recipe_changed`` (a cached model made
    with other settings than today's :data:`~interpret_segmentation.training.DEFAULT_MODEL` /
    ``DEFAULT_TRAINING``; it is used, with a warning).
    """
    if not dataset.exists():
        log(f"generating the testnet data set in {dataset} ...")
        generate_dataset(dataset, progress=progress)
    info_path = checkpoint.with_suffix(".json")
    cached = checkpoint.exists()
    if not cached:
        log(f"training the default U-Net (no checkpoint at {checkpoint}) ...")
        results = checkpoint.parent / "results" / f"demo_{time.strftime('%Y%m%d-%H%M%S')}.txt"
        trained = train_default_model(dataset, checkpoint, results, progress=progress, log=log)
        info = {"train_seconds": trained["train_seconds"], "epochs": trained["epochs"],
                "n_train": trained["n_train"], "results": str(results),
                "checkpoint_sha256": file_sha256(checkpoint), **_recipe()}
        atomic_write(info_path, lambda f: json.dump(info, f, indent=2), mode="w", overwrite=True)
    info = _read_info(info_path) or {}
    if info.get("checkpoint_sha256", None) not in (None, file_sha256(checkpoint)):
        info = {}  # the record of another model that was at this path: nothing known of this one
    # a checkpoint the demo trained has its settings beside it; one from elsewhere has none
    recipe_changed = bool(info) and {key: info.get(key) for key in _recipe()} != _recipe()
    if recipe_changed:
        log(f"WARNING: the cached model {checkpoint} was not trained with today's default "
            "settings; delete it (and its .json) to train the demo model afresh")
    model = load_default_model(checkpoint)
    scores = score_segmenter(model, dataset_splits(dataset, n_val=200)[1])
    summary = {"val_dice": scores["dice"], "rule_learned": scores["dice"] >= RULE_DICE,
               "val_hausdorff": scores["hausdorff"], "val_images": scores["n"],
               "train_seconds": info.get("train_seconds"), "epochs": info.get("epochs"),
               "cached": cached, "recipe_changed": recipe_changed, "checkpoint": str(checkpoint)}
    return model, summary


def _recipe() -> dict:
    """The settings that make the demo model, as JSON values (stored beside a checkpoint)."""
    return json.loads(json.dumps({"model": DEFAULT_MODEL, "training": DEFAULT_TRAINING}))


class RuleNotLearnedError(RuntimeError):
    """The demo model's validation Dice is below the rule threshold (``demo --strict``)."""


def run_demo(out=DEFAULT_OUT, dataset=DEFAULT_DATASET, checkpoint=DEFAULT_CHECKPOINT,
             images: int = 4, force: bool = False, progress: bool = True, strict: bool = False,
             log=print) -> dict:
    """Run the whole demo and return the summary written to ``out/summary.json``.

    The summary's ``rule_learned`` says whether the model (trained now or cached) reached
    validation Dice :data:`~interpret_segmentation.training.RULE_DICE`; when it did not, a
    warning is logged and heads the report, and with ``strict`` a :class:`RuleNotLearnedError`
    is raised after the results are written (``demo --strict`` exits with status 1).

    Every argument is checked before anything is written. ``out`` is an
    :class:`~interpret_segmentation.core.io.OutputDirectory`: a rerun deletes the files the
    previous demo wrote there and nothing else; a non-empty directory the demo did not make is
    refused unless ``force``, and then the demo writes its files beside what is there.
    """
    started = time.perf_counter()
    out, dataset, checkpoint = Path(out), Path(dataset), Path(checkpoint)
    check_positive(images, "images")
    _check_inputs(dataset, checkpoint)
    legacy = out / LEGACY_MARKER  # an older demo's output: all of it the demo's own
    adopted = legacy.is_file() and not legacy.is_symlink() and not (out / MANIFEST).exists()
    if adopted:
        log(f"{out} holds an older demo's output; writing the new results over it")
    with OutputDirectory(out, "demo", force=force or adopted) as output:
        if adopted:
            legacy.unlink()
        if output.resumed:
            log(f"replacing the previous results in {out}")
        output.clear()
        summary = _demo(output, dataset, checkpoint, images, progress, log, started)
    if strict and not summary["rule_learned"]:
        raise RuleNotLearnedError(NOT_LEARNED.format(**summary["model"]))
    return summary


def demo_methods() -> list[str]:
    """The methods the demo runs: every registered segmentation method."""
    return registry.available("segmentation")


def _demo(output: OutputDirectory, dataset: Path, checkpoint: Path, images: int, progress: bool,
          log, started: float) -> dict:
    """The demo's work, every file written into ``output``: the data-set runner's files
    (``rows.csv``, ``items/``, ``table.md``, ``report.html``), one figure per image,
    ``summary.json`` and ``report.md``."""
    model, model_summary = prepare_model(dataset, checkpoint, progress, log)
    log(f"model: validation Dice {model_summary['val_dice']:.4f}")
    if not model_summary["rule_learned"]:
        log(f"WARNING: {NOT_LEARNED.format(**model_summary)}")
    work = Work(model, method_runs(demo_methods()))
    engine = LocalEngine()
    source = ValidationSource(dataset, images)
    rows = run_items(output, source, work, engine, progress=progress, log=log)
    write_table(output, summarize_rows([row for row in rows if not row["error"]], "testnet",
                                       "U-Net"))
    validation = dataset_splits(dataset, n_val=images)[1]
    settings = work.settings(engine)["methods"]
    per_image = [_sample_summary(output, model, validation.dataset.sample(position), rows,
                                 list(settings))
                 for position in validation.indices]
    summary = {
        "rule_learned": model_summary["rule_learned"],
        "model": model_summary,
        "images": len(per_image),
        "methods": {name: _method_summary(name, settings[name], per_image) for name in settings},
        "per_image": per_image,
        "seconds_total": time.perf_counter() - started,
    }
    atomic_write(output.file("summary.json"),
                 lambda f: json.dump(json_ready(summary), f, indent=2, allow_nan=False), mode="w",
                 overwrite=True)
    atomic_write(output.file("report.md"), lambda f: f.write(report_markdown(summary)), mode="w",
                 overwrite=True)
    write_report(output.path, "interpret-segmentation demo", output=output)
    log(f"results: {output.path / 'report.html'}, {output.path / 'report.md'} and "
        f"{output.path / 'summary.json'} ({summary['seconds_total']:.0f} s)")
    return summary


def _sample_summary(output: OutputDirectory, model, sample, rows: list[dict],
                    names: list[str]) -> dict:
    """One validation sample's row of the summary, from the runner's rows and explanations:
    each method's seconds, context ratio and scores, and the sample's figure."""
    index = sample.meta["index"]
    row = {"index": index, "right_shape": sample.meta["right_shape"],
           "segmented": sample.meta["segmented"]}
    maps = {}
    for name in names:
        explanation = Explanation.load(output.path / "items" / str(index) / f"{name}.npz")
        method = registry.get(explanation.method)
        shown = context_map(explanation, method.shown)
        ratio = context_ratio(shown, sample.context, sample.image == 0)
        scores = {found["threshold"]: {"dice_explained": float(found["dice_explained"]),
                                       "perturbation_ratio": float(found["perturbation_ratio"])}
                  for found in rows if found["item"] == str(index) and found["method"] == name
                  and found["dice_explained"] != ""}
        row[name] = {"seconds": explanation.timings["total"], "context_ratio": ratio,
                     "context_hit": ratio >= CONTEXT_FACTOR, "scores": scores}
        if "dilations" in explanation.info:
            row[name]["dilations"] = explanation.info["dilations"]
        prediction = explanation.arrays["target_pixels"].astype(bool)
        row["prediction_dice"] = dice(prediction, sample.segment)
        maps[method.title] = shown
    figure = explanation_figure(
        sample.image, maps, prediction=prediction,
        title=f"sample {index}: {sample.meta['right_shape']} on the right, "
              f"{sample.meta['segmented']} segmented")
    row["figure"] = f"sample_{index}.png"
    save_figure(figure, output.file(row["figure"]), overwrite=True)
    return row


def _method_summary(name: str, settings: dict, rows: list) -> dict:
    """Means over the images: seconds, context hits, and Dice explained / perturbation ratio
    (per threshold, or one value for scores a method measured itself, MiSuRe's MSR), the
    number of dilations for a method that reports them, and the explainer's settings."""
    summary = {
        "seconds_per_image": float(np.mean([r[name]["seconds"] for r in rows])),
        "context_hit_rate": float(np.mean([r[name]["context_hit"] for r in rows])),
        "parameters": {key: value for key, value in settings.items() if key != "method"},
    }
    keys = sorted({key for r in rows for key in r[name]["scores"]})
    for metric in ("dice_explained", "perturbation_ratio"):
        means = {key: float(np.mean([r[name]["scores"][key][metric] for r in rows
                                     if key in r[name]["scores"]])) for key in keys}
        if means:
            summary[metric] = means[OWN_SCORES] if list(means) == [OWN_SCORES] else means
    if any("dilations" in r[name] for r in rows):
        counts = [r[name]["dilations"] for r in rows if r[name].get("dilations") is not None]
        summary["dilations"] = float(np.mean(counts)) if counts else None
    return summary


def report_markdown(summary: dict) -> str:
    """The demo report: model, a table per method, then one figure per image."""
    return "\n".join([*_report_head(summary), *_method_lines(summary), *_image_lines(summary)])


def _report_head(summary: dict) -> list[str]:
    model = summary["model"]
    return [
        "# interpret-segmentation demo",
        "",
        "Testnet images (seed 000): the right-hand shape (circle or square) decides which left "
        "shape the U-Net segments. A good explanation shows that shape as well as the segment; "
        f"it *hits the context* when its map, scaled to [0, 1], is on average at least "
        f"{CONTEXT_FACTOR:g} times higher on the right-hand shape than on empty background."
        + "".join(f" {name} is judged on its {registry.get(name).shown} map."
                  for name in summary["methods"] if registry.get(name).shown),
        "",
        *([f"**Warning: {NOT_LEARNED.format(**model)}.**", ""] if not model["rule_learned"]
          else []),
        f"Model: default U-Net, validation Dice {model['val_dice']:.4f} on "
        f"{model['val_images']} validation images"
        + (f", trained in {model['train_seconds']:.0f} s" if model.get("train_seconds") else "")
        + (" (cached checkpoint)" if model["cached"] else "") + ".",
        "",
    ]


def _method_lines(summary: dict) -> list[str]:
    """Per method: parameters, seconds and context hits; then its Dice explained and
    perturbation ratio (seed 001's Table 1)."""
    lines = ["| method | parameters | seconds / image | context hit rate |", "|---|---|---|---|"]
    for name, method in summary["methods"].items():
        parameters = ", ".join(f"{k}={v}" for k, v in method["parameters"].items())
        lines.append(f"| {name} | {parameters} | {method['seconds_per_image']:.1f} | "
                     f"{method['context_hit_rate']:.2f} |")
    lines += ["", "Dice explained (class prediction on the image times the binarised map, against "
              "the prediction on the image) and perturbation ratio (kept pixels per predicted "
              "pixel), as in seed 001's Table 1; MiSuRe's MSR mask is used as it is.", "",
              "| method | threshold | Dice explained | perturbation ratio |", "|---|---|---|---|"]
    for name, method in summary["methods"].items():
        dice_values, ratios = method.get("dice_explained"), method.get("perturbation_ratio")
        if isinstance(dice_values, dict):
            for threshold in dice_values:
                lines.append(f"| {name} | {threshold} | {dice_values[threshold]:.3f} | "
                             f"{ratios[threshold]:.2f} |")
        elif dice_values is not None:
            lines.append(f"| {name} | (MSR) | {dice_values:.3f} | {ratios:.2f} |")
    if "misure" in summary["methods"]:
        hits = [row for row in summary["per_image"] if row["misure"]["context_hit"]]
        lines += ["", f"MiSuRe's minimally sufficient region shows the right-hand shape in "
                  f"{len(hits)} of {len(summary['per_image'])} images. It keeps only what the "
                  "model needs to make the same prediction: where the model segments the left "
                  "shape anyway once the other shapes are blacked out, the deciding shape is not "
                  "needed and the map does not show it, although the rule depends on it."]
    return lines


def _image_lines(summary: dict) -> list[str]:
    """A row per image (shapes, prediction Dice, each method's context ratio), its figure."""
    methods = summary["methods"]
    lines = ["", "| image | right shape | segmented | prediction Dice | "
             + " | ".join(f"{name} context ratio" for name in methods) + " |",
             "|---|---|---|---|" + "---|" * len(methods)]
    for row in summary["per_image"]:
        lines.append(f"| {row['index']} | {row['right_shape']} | {row['segmented']} | "
                     f"{row['prediction_dice']:.3f} | "
                     + " | ".join(f"{row[name]['context_ratio']:.2f}" for name in methods) + " |")
    lines.append("")
    for row in summary["per_image"]:
        lines += [f"![sample {row['index']}]({row['figure']})", ""]
    return lines
