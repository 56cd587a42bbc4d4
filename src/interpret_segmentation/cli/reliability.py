"""``reliability``: post-hoc reliability of predictions from MiSuRe (seed 001, 5.5)."""

from __future__ import annotations

from .common import add_study_options, checkpoint_path, dataset_path, engine_options


def add_parser(commands) -> None:
    reliability = commands.add_parser(
        "reliability", help="post-hoc reliability of predictions from MiSuRe (seed 001 5.5)",
        description="Add Gaussian noise (standard deviation drawn from [0, --noise]) to the first "
                    "N validation images, explain each prediction with MiSuRe, and train a "
                    "logistic regression on (dilations, Dice explained, perturbation ratio) to "
                    "predict whether the prediction's Dice with the ground truth is >= 0.9; "
                    "half the images train it, half evaluate it. Writes features.csv (resumable), "
                    "reliability.json and roc.png.")
    reliability.set_defaults(run=run)
    add_study_options(reliability, 40, "out/reliability")
    reliability.add_argument("--noise", type=float, default=0.08,
                             help="largest noise standard deviation, images in [0, 1] "
                                  "(default 0.08)")
    reliability.add_argument("--seed", type=int, default=0, help="noise and split seed (default 0)")


def run(args) -> None:
    from ..studies.reliability import run_reliability

    run_reliability(dataset_path(args), checkpoint_path(args), args.n, args.out,
                    noise=args.noise, seed=args.seed, progress=args.progress,
                    **engine_options(args))
