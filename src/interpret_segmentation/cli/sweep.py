"""``sweep``: MiSuRe's parameter studies (seed 001 Tables 2 and 6)."""

from __future__ import annotations

from .common import add_study_options, checkpoint_path, dataset_path, engine_options


def add_parser(commands) -> None:
    sweep = commands.add_parser(
        "sweep", help="MiSuRe's parameter studies (seed 001 Tables 2 and 6)",
        description="Run MiSuRe with learning rate x lambda over {0.001, 0.01, 0.1} (mask 224) "
                    "and mask size over {56, 112, 224} (lr 0.1, lambda 0.01) on the first N "
                    "validation images; write per_image.csv (resumable) and sweep.md with the "
                    "mean Dice explained and perturbation ratio.")
    sweep.set_defaults(run=run)
    add_study_options(sweep, 10, "out/sweep")
    sweep.add_argument("--iterations", type=int, default=100,
                       help="MiSuRe optimisation steps (default 100, as the paper)")


def run(args) -> None:
    from ..studies.sweep import run_sweep

    run_sweep(dataset_path(args), checkpoint_path(args), args.n, args.out,
              iterations=args.iterations, progress=args.progress, **engine_options(args))
