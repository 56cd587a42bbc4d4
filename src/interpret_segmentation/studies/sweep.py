"""MiSuRe's parameter studies, seed 001 Tables 2 and 6 (``interpret-segmentation sweep``)."""

from __future__ import annotations

import numpy as np

from ..core.io import OutputDirectory, atomic_write
from ..core.validate import check_positive
from .common import study_settings
from .engines import get_engine
from .report import write_report
from .runner import run_items
from .work import MethodRun, ModelBuilder, ValidationSource, Work

SWEEP_RATES = (0.001, 0.01, 0.1)
SWEEP_LAMBDAS = (0.001, 0.01, 0.1)
SWEEP_MASK_SIZES = (56, 112, 224)
METRICS = ("dice_explained", "perturbation_ratio")


def sweep_settings(iterations: int = 100) -> dict:
    """MiSuRe settings of seed 001's parameter studies, by name: learning rate x lambda at mask
    size 224 (Table 2) and mask size at learning rate 0.1, lambda 0.01 (Table 6); 11 in all."""
    settings = {f"lr={lr:g} lam={lam:g} size=224": {"lr": lr, "lam": lam, "mask_size": 224}
                for lr in SWEEP_RATES for lam in SWEEP_LAMBDAS}
    settings.update({f"lr=0.1 lam=0.01 size={size}": {"lr": 0.1, "lam": 0.01, "mask_size": size}
                     for size in SWEEP_MASK_SIZES})
    for values in settings.values():
        values["iterations"] = iterations
    return settings


def run_sweep(dataset_root, checkpoint, n: int, out, iterations: int = 100,
              progress: bool = True, log=print, engine: str = "local",
              **engine_options) -> dict:
    """``interpret-segmentation sweep``: MiSuRe's parameter studies on ``n`` validation images.

    Writes ``out/per_image.csv`` (one "method" per setting of :func:`sweep_settings`;
    resumable, on any engine, as :func:`~interpret_segmentation.studies.evaluate.
    run_evaluation`; the explanations themselves are not kept) and
    ``out/sweep.md`` with, for learning rate x lambda and for mask size, the mean Dice
    explained and the mean perturbation ratio.

    Returns
    -------
    dict
        ``{setting name: {"dice_explained": mean or None, "perturbation_ratio": ...}}``.
    """
    check_positive(n, "n")
    settings = sweep_settings(iterations)
    runs = tuple(MethodRun(name, "misure", values) for name, values in settings.items())
    work = Work(ModelBuilder(str(checkpoint)), runs, save_explanations=False)
    chosen = get_engine(engine, **engine_options)
    source = ValidationSource(dataset_root, n)
    manifest = study_settings(checkpoint, dataset_root, work.settings(chosen)["methods"])
    with OutputDirectory(out, "sweep", settings=manifest, extendable=("methods",)) as output:
        rows = run_items(output, source, work, chosen, rows_name="per_image.csv",
                         progress=progress, log=log)
        rows = [row for row in rows if not row["error"]]
        means = {name: _means([row for row in rows
                               if row["method"] == name and row["dice_explained"] != ""])
                 for name in settings}
        atomic_write(output.file("sweep.md"), lambda f: f.write(sweep_markdown(means, n)),
                     mode="w", overwrite=True)
        write_report(output.path, output=output, rows_name="per_image.csv")
    log(f"results: {output.path / 'sweep.md'}, {output.path / 'per_image.csv'}")
    return means


def _means(rows: list[dict]) -> dict:
    return {metric: float(np.mean([float(row[metric]) for row in rows])) if rows else None
            for metric in METRICS}


def sweep_markdown(means: dict, n: int) -> str:
    """Tables 2 and 6 of seed 001 from :func:`run_sweep`'s means."""
    def cell(name, metric):
        value = means.get(name, {}).get(metric)
        return "" if value is None else f"{value:.3f}"

    lines = [f"# MiSuRe parameter studies ({n} validation images)", ""]
    for metric in METRICS:
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
