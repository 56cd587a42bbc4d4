"""``evaluate``: seed 001's Table 1 of registered methods over validation images."""

from __future__ import annotations

from ..methods import registry
from .common import (
    add_study_options,
    checkpoint_path,
    dataset_name,
    dataset_path,
    engine_options,
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


def methods_of(text: str) -> list[str]:
    """The method names ``--methods`` lists (ValueError naming the flag otherwise)."""
    known = registry.available("segmentation")
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"--methods: expected some of {', '.join(known)}, separated by commas, "
                         f"got {text!r}")
    return names


def run(args) -> None:
    from ..studies.evaluate import run_evaluation

    run_evaluation(dataset_path(args), checkpoint_path(args), methods_of(args.methods), args.n,
                   args.out, progress=args.progress, dataset_name=dataset_name(args),
                   **engine_options(args))
