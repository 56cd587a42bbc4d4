"""``evaluate``: seed 001's Table 1 of registered methods over validation images."""

from __future__ import annotations

from ..methods import registry
from .common import (
    add_study_options,
    checkpoint_path,
    dataset_name,
    dataset_path,
    engine_options,
    methods_of,
)


def add_parser(commands) -> None:
    methods = ",".join(registry.available("segmentation"))
    evaluate = commands.add_parser(
        "evaluate", help="Table 1 of seed 001 over validation images",
        description="Explain the first N validation images (the training's split) with each "
                    "method and write per_image.csv (row by row; rerunning resumes), table.csv "
                    "and table.md (Dice explained, perturbation ratio at each method's "
                    "thresholds, seconds per image, context hit rate) and, for MiSuRe, its "
                    "dilations and perturbation ratio against prediction size as PNG.")
    evaluate.set_defaults(run=run)
    add_study_options(evaluate, 20, "out/evaluate")
    evaluate.add_argument("--methods", default=methods,
                          help=f"comma-separated registered methods (default {methods})")


def run(args) -> None:
    from ..studies.evaluate import run_evaluation

    run_evaluation(dataset_path(args), checkpoint_path(args), methods_of(args.methods), args.n,
                   args.out, progress=args.progress, dataset_name=dataset_name(args),
                   **engine_options(args))
