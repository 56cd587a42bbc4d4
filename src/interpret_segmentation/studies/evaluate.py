"""Registered methods over a data set, scored as seed 001's Table 1 (sections 3.2 and 5.3):
Dice explained and perturbation ratio at each method's thresholds, seconds per image and
context hit rate (``interpret-segmentation evaluate``)."""

from __future__ import annotations

from pathlib import Path

from ..analysis.figures import save_figure, scatter_figure
from ..core.io import OutputDirectory
from ..core.validate import check_positive
from ..methods import registry
from .common import study_settings
from .engines import get_engine
from .report import write_report
from .runner import run_items
from .tables import summarize_rows, write_table
from .work import ModelBuilder, ValidationSource, Work, method_runs


def run_evaluation(dataset_root, checkpoint, methods, n: int, out, progress: bool = True,
                   log=print, dataset_name: str | None = None, engine: str = "local",
                   **engine_options) -> list[dict]:
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
    engine, engine_options
        Where the images are explained (:func:`~interpret_segmentation.studies.engines.
        get_engine`: "local", or "ray" with ``workers``, ``address``, ``gpus_per_worker``).

    Runs on the data-set runner (:func:`~interpret_segmentation.studies.runner.run_items`):
    writes ``out/per_image.csv`` item by item and ``out/items/`` (each explanation), then
    ``out/table.csv`` and ``out/table.md`` (Table 1 layout) and, for methods that report
    dilations (MiSuRe), ``out/dilations_vs_size.png`` and
    ``out/perturbation_ratio_vs_size.png``. Returns the table (a list of dicts with
    :data:`~interpret_segmentation.studies.tables.TABLE_COLUMNS`).
    """
    check_positive(n, "n")
    work = Work(ModelBuilder(str(checkpoint)), method_runs(list(methods)))
    chosen = get_engine(engine, **engine_options)
    source = ValidationSource(dataset_root, n)
    settings = study_settings(checkpoint, dataset_root, work.settings(chosen)["methods"])
    dataset_name = dataset_name or Path(dataset_root).name
    with OutputDirectory(out, "evaluate", settings=settings, extendable=("methods",)) as output:
        rows = run_items(output, source, work, chosen, rows_name="per_image.csv",
                         progress=progress, log=log)
        rows = [row for row in rows if not row["error"]]
        table = summarize_rows(rows, dataset_name, "U-Net")
        write_table(output, table)
        size_figures(output, rows, dataset_name)
        write_report(output.path, output=output, rows_name="per_image.csv")
    out = output.path
    log(f"results: {out / 'table.md'}, {out / 'table.csv'}, {out / 'per_image.csv'}")
    return table


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
