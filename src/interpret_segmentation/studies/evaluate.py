"""Registered methods over a data set, scored as seed 001's Table 1 (sections 3.2 and 5.3):
Dice explained and perturbation ratio at each method's thresholds, seconds per image and
context hit rate (``interpret-segmentation evaluate``)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..analysis.faithfulness import OWN_SCORES
from ..analysis.figures import save_figure, scatter_figure
from ..core.io import OutputDirectory, atomic_write
from ..core.validate import check_positive
from ..methods import registry
from ..training import load_default_model
from . import common
from .common import evaluate_samples, study_settings, validation_samples

TABLE_COLUMNS = ("dataset", "model", "method", "threshold", "dice_explained",
                 "perturbation_ratio", "seconds_per_image", "context_hit_rate", "images")
"""Columns of table.csv and table.md."""


def run_evaluation(dataset_root, checkpoint, methods, n: int, out, progress: bool = True,
                   log=print, dataset_name: str | None = None) -> list[dict]:
    """``interpret-segmentation evaluate``: methods on the first ``n`` validation images.

    Parameters
    ----------
    dataset_root : path
        A directory in the testnet layout (``<index>/image.png``, ``context.png``, ...),
        split as the training did (:func:`~interpret_segmentation.training.dataset_splits`).
    checkpoint : path
        Weights of the library's U-Net.
    methods : sequence of str
        Registered segmentation methods (``methods.registry.available("segmentation")``),
        each run at its defaults.
    n : int
        Validation images.
    out : path
        An :class:`~interpret_segmentation.core.io.OutputDirectory`; a rerun with the same
        settings resumes, and may add methods.
    dataset_name : str, optional
        The data set's name in the table; default the directory's name.

    Writes ``out/per_image.csv`` row by row, ``out/table.csv`` and ``out/table.md`` (Table 1
    layout) and, for methods that report dilations (MiSuRe), ``out/dilations_vs_size.png``
    and ``out/perturbation_ratio_vs_size.png``. Returns the table (a list of dicts with
    :data:`TABLE_COLUMNS`).
    """
    check_positive(n, "n")
    methods = list(methods)
    known = registry.available("segmentation")
    if not methods or any(name not in known for name in methods):
        raise ValueError(f"methods: expected some of {', '.join(known)}, got {', '.join(methods)}")
    model = load_default_model(checkpoint)
    explainers = common.build_explainers(model, methods, progress)
    samples = validation_samples(dataset_root, n)
    settings = study_settings(checkpoint, dataset_root, explainers)
    dataset_name = dataset_name or Path(dataset_root).name
    with OutputDirectory(out, "evaluate", settings=settings, extendable=("methods",)) as output:
        rows = evaluate_samples(model, samples, explainers, output.file("per_image.csv"), log=log)
        table = summarize_rows(rows, dataset_name, "U-Net")
        write_table(output, table)
        size_figures(output, rows, dataset_name)
    out = output.path
    log(f"results: {out / 'table.md'}, {out / 'table.csv'}, {out / 'per_image.csv'}")
    return table


def summarize_rows(rows: list[dict], dataset: str, model_name: str) -> list[dict]:
    """Table 1: means per (method, threshold) of Dice explained, perturbation ratio, seconds
    per image and, where the data set has context masks, the context hit rate (None where
    no row has a value)."""
    table = []
    for method, threshold in sorted({(row["method"], row["threshold"]) for row in rows}):
        group = [row for row in rows if (row["method"], row["threshold"]) == (method, threshold)]

        def mean(field, group=group):
            values = [float(row[field] == "True") if field == "context_hit" else float(row[field])
                      for row in group if row[field] != ""]
            return float(np.mean(values)) if values else None

        table.append({"dataset": dataset, "model": model_name, "method": method,
                      "threshold": {"": "-", OWN_SCORES: "MSR"}.get(threshold, threshold),
                      "dice_explained": mean("dice_explained"),
                      "perturbation_ratio": mean("perturbation_ratio"),
                      "seconds_per_image": mean("seconds"),
                      "context_hit_rate": mean("context_hit"), "images": len(group)})
    return table


def table_markdown(table: list[dict]) -> str:
    """The Table-1 layout as a Markdown table (empty cells where a value does not apply)."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for entry in table:
        cells = [("" if entry[c] is None else f"{entry[c]:.3f}" if isinstance(entry[c], float)
                  else str(entry[c])) for c in TABLE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(output: OutputDirectory, table: list[dict]) -> None:
    """``table.csv`` and ``table.md`` of :func:`summarize_rows`'s table into ``output``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]) if table else ["dataset"])
    writer.writeheader()
    writer.writerows(table)
    atomic_write(output.file("table.csv"), lambda f: f.write(buffer.getvalue()), mode="w",
                 overwrite=True)
    atomic_write(output.file("table.md"), lambda f: f.write(table_markdown(table)), mode="w",
                 overwrite=True)


def size_figures(output: OutputDirectory, rows: list[dict], dataset_name: str) -> None:
    """Seed 001, section 3.2: number of dilations and perturbation ratio against prediction
    size, over the rows that report dilations (``dilations_vs_size.png`` and
    ``perturbation_ratio_vs_size.png``; nothing when no row does)."""
    rows = [row for row in rows if row["dilations"] != ""]
    if not rows:
        return
    methods = sorted({row["method"] for row in rows})
    names = " and ".join(registry.get(name).title.split(" (")[0] for name in methods)
    sizes = [float(row["prediction_pixels"]) for row in rows]
    for field, name, label in (("dilations", "dilations_vs_size", "number of dilations"),
                               ("perturbation_ratio", "perturbation_ratio_vs_size",
                                "perturbation ratio (MSR)")):
        figure = scatter_figure(sizes, [float(row[field]) for row in rows],
                                xlabel="prediction size (pixels)", ylabel=label,
                                title=f"{names} on {dataset_name}")
        save_figure(figure, output.file(f"{name}.png"), overwrite=True)
