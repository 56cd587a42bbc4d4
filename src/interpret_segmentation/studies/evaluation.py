"""Scores of an explanation as seed 001 evaluates them: Dice explained and perturbation ratio.

Continuous maps (RISE, Seg-Grad-CAM) are normalised to [0, 1] and binarised at the paper's
thresholds (:data:`~interpret_segmentation.analysis.metrics.PAPER_THRESHOLDS`); MiSuRe's minimally
sufficient region is used as it is (its mask is the explanation, X_MSR = X_SR * M_MSR).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..analysis.metrics import PAPER_THRESHOLDS, binarize, dice_explained, perturbation_ratio
from ..core import Explanation
from ..core.io import OutputDirectory, RowFile, file_sha256
from ..core.validate import check_positive


def explanation_scores(model, image, explanation: Explanation) -> dict:
    """Dice explained and perturbation ratio of ``explanation`` of ``image``.

    Returns
    -------
    dict
        For MiSuRe ``{"msr": {"dice_explained": ..., "perturbation_ratio": ...}}`` (read from
        the Explanation, computed on X_MSR); for a method with paper thresholds one entry per
        threshold, keyed by it as text (``"0.2"``); an empty dict for other methods or when the
        explained class is not predicted (there is no object to relate to).
    """
    prediction = explanation.arrays.get("target_pixels")
    if prediction is None or not np.any(prediction):
        return {}
    if explanation.method == "misure":
        if explanation.info.get("nothing_to_explain"):
            return {}
        return {"msr": {"dice_explained": explanation.info["dice_explained"],
                        "perturbation_ratio": explanation.info["perturbation_ratio"]}}
    scores = {}
    for threshold in PAPER_THRESHOLDS.get(explanation.method, ()):
        kept = binarize(explanation.saliency, threshold)
        scores[str(threshold)] = {
            "dice_explained": dice_explained(model, image, kept, explanation.target_class),
            "perturbation_ratio": perturbation_ratio(kept, prediction),
        }
    return scores


# ---------------------------------------------------------------------------------------------
# evaluating methods over a data set (seed 001, Table 1 and sections 3.2, 5.3)

ROW_FIELDS = ("index", "method", "threshold", "dice_explained", "perturbation_ratio", "seconds",
              "context_hit", "prediction_pixels", "dilations")
"""Columns of the per-image CSV; one row per image, method and threshold."""


def context_map(explanation: Explanation) -> np.ndarray:
    """The map judged for context hits: HDM's WORSE_ONLY circle map, other methods' saliency."""
    return explanation.arrays["worse_only"] if explanation.method == "hdm" else explanation.saliency


def validation_samples(dataset_root, n: int):
    """(index, sample) of the first ``n`` validation samples (the training's split, see
    :func:`~interpret_segmentation.training.dataset_splits`), read one at a time; the data set
    is checked at once."""
    from ..training import dataset_splits

    validation = dataset_splits(dataset_root, n_val=n)[1]
    return ((validation.dataset.indices[position], validation.dataset.sample(position))
            for position in validation.indices)


def explainer_settings(explainer) -> dict:
    """An explainer's options that decide its maps (plain values; not batch size or progress)."""
    return {key: value for key, value in sorted(vars(explainer).items())
            if isinstance(value, (bool, int, float, str)) and key not in ("batch_size", "progress")}


def study_settings(checkpoint, dataset_root, explainers: dict, **more) -> dict:
    """What decides a study's rows, for its run manifest: the checkpoint's content (SHA-256),
    the data set (its path and the content of its .json info files), every method's
    parameters (:func:`explainer_settings`) and ``more`` (seed, noise, ...)."""
    root = Path(dataset_root)
    info = {}
    for path in sorted(root.glob("*.json")):
        try:
            info[path.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            info[path.name] = file_sha256(path)
    return {"checkpoint_sha256": file_sha256(checkpoint), "dataset": str(root.resolve()),
            "dataset_info": info,
            "methods": {name: explainer_settings(e) for name, e in explainers.items()}, **more}


def evaluate_samples(model, samples, explainers: dict, rows_path, log=print) -> list[dict]:
    """Explain every sample with every method and append one CSV row per result as it is made.

    Parameters
    ----------
    model : nn.Module
    samples : iterable of (index, sample)
        Samples with ``image`` (uint8 H x W), ``context`` (H x W; may be empty) and ``meta``.
    explainers : dict name -> explainer
    rows_path : path
        CSV of per-image rows (:data:`ROW_FIELDS`, a :class:`RowFile`). Rows already there are
        kept and their (index, method) pairs are not computed again, so an interrupted run
        resumes; a pair whose rows are missing (a run stopped between two methods) is
        computed.

    Returns the rows of ``samples`` and ``explainers``, old and new (rows of other images or
    methods in the file are kept there but not returned).
    """
    import torch

    from ..analysis.metrics import context_hit

    seen = set()
    with RowFile(rows_path, ROW_FIELDS) as rows:
        done = {(row["index"], row["method"]) for row in rows.rows}
        for index, sample in samples:
            seen.add(str(index))
            image = torch.from_numpy(sample.image.astype(np.float32) / 255.0)[None]
            background = sample.image == 0
            for name, explainer in explainers.items():
                if (str(index), name) in done:
                    continue
                explanation = explainer.explain(image)
                hit = (context_hit(context_map(explanation), sample.context, background)
                       if np.any(sample.context) and background.any() else "")
                scores = explanation_scores(model, image, explanation) or {"": {}}
                rows.append(*({"index": index, "method": name, "threshold": threshold,
                               "dice_explained": values.get("dice_explained", ""),
                               "perturbation_ratio": values.get("perturbation_ratio", ""),
                               "seconds": explanation.timings["total"], "context_hit": hit,
                               "prediction_pixels": int(explanation.arrays["target_pixels"].sum()),
                               "dilations": explanation.info.get("dilations", "")}
                              for threshold, values in scores.items()))
                log(f"image {index}: {name} {explanation.timings['total']:.1f} s")
    return [row for row in rows.rows if row["index"] in seen and row["method"] in explainers]


def summarize_rows(rows: list[dict], dataset: str, model_name: str) -> list[dict]:
    """Table 1: means per (method, threshold) of Dice explained, perturbation ratio, seconds
    per image and, where the data set has context masks, the context hit rate."""
    table = []
    keys = sorted({(row["method"], row["threshold"]) for row in rows})
    for method, threshold in keys:
        group = [row for row in rows if (row["method"], row["threshold"]) == (method, threshold)]

        def mean(field, group=group):
            values = [float(row[field] == "True") if field == "context_hit" else float(row[field])
                      for row in group if row[field] != ""]
            return float(np.mean(values)) if values else None

        table.append({"dataset": dataset, "model": model_name, "method": method,
                      "threshold": {"": "-", "msr": "MSR"}.get(threshold, threshold),
                      "dice_explained": mean("dice_explained"),
                      "perturbation_ratio": mean("perturbation_ratio"),
                      "seconds_per_image": mean("seconds"),
                      "context_hit_rate": mean("context_hit"), "images": len(group)})
    return table


def table_markdown(table: list[dict]) -> str:
    """The Table-1 layout as a Markdown table (empty cells where a value does not apply)."""
    columns = ("dataset", "model", "method", "threshold", "dice_explained", "perturbation_ratio",
               "seconds_per_image", "context_hit_rate", "images")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for entry in table:
        cells = [("" if entry[c] is None else f"{entry[c]:.3f}" if isinstance(entry[c], float)
                  else str(entry[c])) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_evaluation(dataset_root, checkpoint, methods, n: int, out, progress: bool = True,
                   log=print, dataset_name: str | None = None) -> list[dict]:
    """``interpret-segmentation evaluate``: methods on the first ``n`` validation images.

    The data set is a directory in the testnet layout (``<index>/image.png``, ``context.png``,
    ...), split as the training did (:func:`~interpret_segmentation.training.dataset_splits`);
    ``checkpoint`` holds the library's U-Net. Writes
    ``out/per_image.csv`` row by row (a rerun resumes where it stopped), ``out/table.csv`` and
    ``out/table.md`` (Table 1 layout, the data set named ``dataset_name``, default the
    directory's name) and, for MiSuRe, ``out/dilations_vs_size.png`` and
    ``out/perturbation_ratio_vs_size.png``. Returns the table.
    """
    import io

    from ..analysis.figures import save_figure, scatter_figure
    from ..core.io import atomic_write
    from ..training import load_default_model
    from .demo import build_explainers

    check_positive(n, "n")
    known = ("misure", "rise", "gradcam", "hdm")
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise ValueError(f"methods: expected some of {', '.join(known)}, got {', '.join(methods)}")
    model = load_default_model(checkpoint)
    explainers = {name: e for name, e in build_explainers(model, progress).items() if name in methods}
    samples = validation_samples(dataset_root, n)
    settings = study_settings(checkpoint, dataset_root, explainers)
    with OutputDirectory(out, "evaluate", settings=settings, extendable=("methods",)) as output:
        out = output.path
        rows = evaluate_samples(model, samples, explainers, output.file("per_image.csv"), log=log)
        dataset_name = dataset_name or Path(dataset_root).name
        table = summarize_rows(rows, dataset_name, "U-Net")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(table[0]) if table else ["dataset"])
        writer.writeheader()
        writer.writerows(table)
        atomic_write(output.file("table.csv"), lambda f: f.write(buffer.getvalue()), mode="w",
                     overwrite=True)
        atomic_write(output.file("table.md"), lambda f: f.write(table_markdown(table)), mode="w",
                     overwrite=True)
        misure_rows = [row for row in rows if row["method"] == "misure" and row["dilations"] != ""]
        if misure_rows:
            sizes = [float(row["prediction_pixels"]) for row in misure_rows]
            for field, name, label in (("dilations", "dilations_vs_size", "number of dilations"),
                                       ("perturbation_ratio", "perturbation_ratio_vs_size",
                                        "perturbation ratio (MSR)")):
                figure = scatter_figure(sizes, [float(row[field]) for row in misure_rows],
                                        xlabel="prediction size (pixels)", ylabel=label,
                                        title=f"MiSuRe on {dataset_name}")
                save_figure(figure, output.file(f"{name}.png"), overwrite=True)
    log(f"results: {out / 'table.md'}, {out / 'table.csv'}, {out / 'per_image.csv'}")
    return table


SWEEP_RATES = (0.001, 0.01, 0.1)
SWEEP_LAMBDAS = (0.001, 0.01, 0.1)
SWEEP_MASK_SIZES = (56, 112, 224)


def sweep_settings(iterations: int = 100) -> dict:
    """MiSuRe settings of seed 001's parameter studies, by name: learning rate x lambda at mask
    size 224 (Table 2) and mask size at learning rate 0.1, lambda 0.01 (Table 6)."""
    settings = {f"lr={lr:g} lam={lam:g} size=224": {"lr": lr, "lam": lam, "mask_size": 224}
                for lr in SWEEP_RATES for lam in SWEEP_LAMBDAS}
    settings.update({f"lr=0.1 lam=0.01 size={size}": {"lr": 0.1, "lam": 0.01, "mask_size": size}
                     for size in SWEEP_MASK_SIZES})
    for values in settings.values():
        values["iterations"] = iterations
    return settings


def run_sweep(dataset_root, checkpoint, n: int, out, iterations: int = 100,
              progress: bool = True, log=print) -> dict:
    """``interpret-segmentation sweep``: MiSuRe's parameter studies on ``n`` validation images.

    Writes ``out/per_image.csv`` (resumable, as :func:`run_evaluation`) and ``out/sweep.md``
    with, for learning rate x lambda and for mask size, the mean Dice explained and the mean
    perturbation ratio. Returns ``{setting name: {"dice_explained": ..., "perturbation_ratio":
    ...}}``.
    """
    from ..core.io import atomic_write
    from ..methods.misure import MiSuRe
    from ..training import load_default_model

    check_positive(n, "n")
    model = load_default_model(checkpoint)
    settings = sweep_settings(iterations)
    explainers = {name: MiSuRe(model, progress=progress, **values)
                  for name, values in settings.items()}
    samples = validation_samples(dataset_root, n)
    with OutputDirectory(out, "sweep", settings=study_settings(checkpoint, dataset_root, explainers),
                         extendable=("methods",)) as output:
        out = output.path
        rows = evaluate_samples(model, samples, explainers, output.file("per_image.csv"), log=log)
        means = {}
        for name in settings:
            group = [row for row in rows if row["method"] == name and row["dice_explained"] != ""]
            means[name] = {metric: (float(np.mean([float(row[metric]) for row in group]))
                                    if group else None)
                           for metric in ("dice_explained", "perturbation_ratio")}
        atomic_write(output.file("sweep.md"), lambda f: f.write(sweep_markdown(means, n)),
                     mode="w", overwrite=True)
    log(f"results: {out / 'sweep.md'}, {out / 'per_image.csv'}")
    return means


def sweep_markdown(means: dict, n: int) -> str:
    """Tables 2 and 6 of seed 001 from :func:`run_sweep`'s means."""
    def cell(name, metric):
        value = means.get(name, {}).get(metric)
        return "" if value is None else f"{value:.3f}"

    lines = [f"# MiSuRe parameter studies ({n} validation images)", ""]
    for metric in ("dice_explained", "perturbation_ratio"):
        lines += [f"## {metric}: rows lambda, columns learning rate (mask 224)", "",
                  "| lambda | " + " | ".join(f"lr {lr:g}" for lr in SWEEP_RATES) + " |",
                  "|---|" + "---|" * len(SWEEP_RATES)]
        for lam in SWEEP_LAMBDAS:
            lines.append(f"| {lam:g} | " + " | ".join(
                cell(f"lr={lr:g} lam={lam:g} size=224", metric) for lr in SWEEP_RATES) + " |")
        lines.append("")
    lines += ["## mask size (lr 0.1, lambda 0.01)", "",
              "| mask size | dice_explained | perturbation_ratio |", "|---|---|---|"]
    for size in SWEEP_MASK_SIZES:
        name = f"lr=0.1 lam=0.01 size={size}"
        lines.append(f"| {size} | {cell(name, 'dice_explained')} | "
                     f"{cell(name, 'perturbation_ratio')} |")
    return "\n".join(lines) + "\n"
