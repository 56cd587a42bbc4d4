"""``reliability``: post-hoc reliability of predictions from MiSuRe (seed 001, 5.5)."""

from __future__ import annotations

import argparse

from .common import add_study_options, checkpoint_path, dataset_path, engine_options

SOURCES = "noise,contrast,intensity,occlusion,weak"


def add_parser(commands) -> None:
    reliability = commands.add_parser(
        "reliability", help="post-hoc reliability of predictions from MiSuRe (seed 001 5.5)",
        description="Make the model err: the first N validation images get Gaussian noise, lower "
                    "contrast, an intensity shift, a hidden box (severity drawn per image), and "
                    "go through a weaker checkpoint (--weak-checkpoint, or the data set's "
                    "training recipe run for --weak-epochs, trained once into --out). Each "
                    "prediction is explained with MiSuRe; a logistic regression on (dilations, "
                    "Dice explained, perturbation ratio), and on those plus the sufficient "
                    "region's area, the MSR's compactness and the SR's Dice with the "
                    "prediction, predicts whether the prediction's Dice with the ground truth "
                    "is >= 0.9. Reports stratified k-fold cross-validated accuracy and ROC AUC "
                    "with 95 %% bootstrap intervals, per error source and overall. Writes "
                    "per_image.csv (resumable), features.csv, reliability.json, reliability.md, "
                    "roc.png and report.html.")
    reliability.set_defaults(run=run)
    add_study_options(reliability, 64, "out/reliability")
    reliability.add_argument("--sources", default=SOURCES,
                             help="error sources, separated by commas: noise, contrast, "
                                  "intensity, occlusion, weak, clean (the unchanged images) "
                                  f"(default {SOURCES}); --n images each")
    reliability.add_argument("--noise", type=float, default=0.15,
                             help="largest noise standard deviation, images in [0, 1] "
                                  "(default 0.15)")
    reliability.add_argument("--contrast", type=float, default=0.3,
                             help="lowest contrast factor: each image's contrast is scaled by a "
                                  "factor drawn from [--contrast, 1] about its mean "
                                  "(default 0.3)")
    reliability.add_argument("--intensity", type=float, default=0.25,
                             help="largest intensity shift: each image gets a shift drawn from "
                                  "[-x, x] added, then clipped to [0, 1] (default 0.25)")
    reliability.add_argument("--occlusion", type=float, default=0.25,
                             help="largest share of the image hidden by a box of "
                                  "--occlusion-value (default 0.25)")
    reliability.add_argument("--occlusion-value", type=float, default=0.5,
                             help="value of the hiding box (default 0.5, mid-grey)")
    reliability.add_argument("--weak-checkpoint", default=None, metavar="PTH",
                             help="the weaker model: weights of the library's U-Net, e.g. an "
                                  "early epoch <name>_<epoch>.pth that `testnet train` keeps "
                                  "(default: train the data set's recipe for --weak-epochs "
                                  "into --out/weak_model.pth)")
    reliability.add_argument("--weak-epochs", type=int, default=1,
                             help="epochs of the weak model trained without --weak-checkpoint "
                                  "(default 1)")
    reliability.add_argument("--iterations", type=int, default=100,
                             help="MiSuRe optimisation steps (default 100, as the paper); "
                                  "the time of a run grows with them")
    reliability.add_argument("--folds", type=int, default=5,
                             help="stratified cross-validation folds (default 5)")
    reliability.add_argument("--resamples", type=int, default=2000,
                             help="bootstrap resamples of the 95 %% intervals (default 2000)")
    reliability.add_argument("--reliable-dice", type=float, default=0.9,
                             help="a prediction with at least this Dice against the ground "
                                  "truth is reliable (default 0.9, as the paper)")
    reliability.add_argument("--seed", type=int, default=0,
                             help="seed of the per-image errors, the weak model, the folds and "
                                  "the bootstrap (default 0)")


def _sources(args) -> list:
    from ..studies import reliability as study

    built = {"noise": lambda: study.GaussianNoise(args.noise),
             "contrast": lambda: study.ContrastChange(args.contrast),
             "intensity": lambda: study.IntensityShift(args.intensity),
             "occlusion": lambda: study.Occlusion(args.occlusion, args.occlusion_value),
             "weak": lambda: study.WeakCheckpoint(checkpoint=args.weak_checkpoint,
                                                  epochs=args.weak_epochs),
             "clean": study.Unchanged}
    names = [name.strip() for name in args.sources.split(",") if name.strip()]
    unknown = [name for name in names if name not in built]
    if unknown or not names:
        raise ValueError(f"--sources: expected some of {', '.join(built)}, separated by commas, "
                         f"got {args.sources!r}")
    flags = (("--noise", args.noise, 0, 5), ("--contrast", args.contrast, 0, 1),
             ("--intensity", args.intensity, 0, 1), ("--occlusion", args.occlusion, 0, 1))
    for flag, value, low, high in flags:
        if not low <= value <= high:
            raise ValueError(f"{flag}: expected a number in [{low}, {high}], got {value!r}")
    for flag, value, low in (("--weak-epochs", args.weak_epochs, 1), ("--iterations",
                             args.iterations, 1), ("--folds", args.folds, 2),
                             ("--resamples", args.resamples, 100), ("--n", args.n, 1)):
        if value < low:
            raise ValueError(f"{flag}: expected an int >= {low}, got {value}")
    if not 0 < args.reliable_dice <= 1:
        raise ValueError(f"--reliable-dice: expected a number in (0, 1], got {args.reliable_dice}")
    return [built[name]() for name in names]


def run(args: argparse.Namespace) -> None:
    from ..studies.reliability import run_reliability

    run_reliability(dataset_path(args), checkpoint_path(args), args.n, args.out,
                    sources=_sources(args), seed=args.seed,
                    misure={"iterations": args.iterations}, folds=args.folds,
                    resamples=args.resamples, reliable_dice=args.reliable_dice,
                    progress=args.progress, **engine_options(args))
