"""``reproduce lrp`` and ``reproduce deepdream``: seeds 003 and 004 end to end."""

from __future__ import annotations

from .common import add_progress

STUDIES = {
    "lrp": ("seed 003: LRP of classifiers as weakly supervised segmentation",
            "Generate the synthetic defect set, train VGG-11 classifiers (128N, onefc) on "
            "image labels and a U-Net on pixel labels, turn LRP relevance (montavon, seibold) "
            "into masks (simple, gmm, bmm) and write metrics.json (classifier balanced "
            "accuracy, TPR, TNR; IoU, precision, recall per combination), pr_curves.png and "
            "examples.png.",
            "small images, fewer samples and epochs (a few minutes)"),
    "deepdream": ("seed 004: DeepDream analysis of segmentation networks",
                  "Train U-Nets G_p on objects marked with 135-degree line textures with "
                  "probability p (0, 0.2, 0.5, 0.8, 0.9, 1) and on organs with round, elongated "
                  "or mildly darkened (synthetic) lesions; dream from one start image per "
                  "experiment and write metrics.json (Dice on unmarked images, characteristic "
                  "feature, their rank correlation; final elongation and intensity of the "
                  "dreamed lesions), marking_dreams.png, marking_summary.png, "
                  "lesion_dreams.png and lesion_curves.png.",
                  "smaller images, fewer samples and epochs (a few minutes)"),
}
"""Each study's help, description and what --quick does."""


def add_parser(commands) -> None:
    reproduce = commands.add_parser(
        "reproduce", help="reproduce a paper's study on synthetic data",
        description="Reproduce a seed paper's study end to end.")
    studies = reproduce.add_subparsers(dest="study", required=True, metavar="STUDY")
    for name, (about, does, quick) in STUDIES.items():
        study = studies.add_parser(
            name, help=about, description=f"{does} Trained models are kept in <out>/models and "
                                          "reused by a rerun.")
        study.set_defaults(run=run)
        study.add_argument("--out", default=f"out/reproduce-{name}",
                           help=f"output directory (default out/reproduce-{name})")
        study.add_argument("--quick", action="store_true", help=quick)
        study.add_argument("--seed", type=int, default=0,
                           help="data and initialisation seed (default 0)")
        add_progress(study)


def run(args) -> None:
    from ..studies.reproduce import run_deepdream_reproduction, run_lrp_reproduction

    study = run_lrp_reproduction if args.study == "lrp" else run_deepdream_reproduction
    study(args.out, quick=args.quick, seed=args.seed, progress=args.progress)
