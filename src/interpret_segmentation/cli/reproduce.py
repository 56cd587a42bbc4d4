"""``reproduce lrp`` and ``reproduce deepdream``: seeds 003 and 004 end to end."""

from __future__ import annotations

from .common import add_progress

STUDIES = {
    "lrp": ("seed 003: LRP of classifiers as weakly supervised segmentation",
            "Generate the synthetic defect set (magnetic-tile-like blowholes and cracks), "
            "train VGG-11 classifiers (128N, onefc) on the image labels of the whole training "
            "part and U-Nets on coarse pixel labels of only 60 and 119 training images (the "
            "paper's budgets), turn LRP relevance (montavon, seibold; z^B bounds 0 and 1; "
            "epsilon read as std and as rms; max-pooling as winner-take-all and as average) "
            "into masks (simple, gmm, bmm), each also with relevance averaged over the "
            "image's mirror images and with masks refined (closed, holes filled, eroded by "
            "1 px; both not in the paper), score everything against the true defect masks and "
            "write metrics.json (classifier balanced accuracy, TPR, TNR; IoU, precision, recall "
            "per combination and per U-Net), pr_curves.png and examples.png.",
            "smaller images and fewer epochs (3 minutes on one thread; the full run 13)"),
    "deepdream": ("seed 004: DeepDream analysis of segmentation networks",
                  "Train U-Nets G_p on objects marked with 135-degree line textures with "
                  "probability p (0, 0.1, 0.2, 0.5, 0.8, 0.9, 1), --seeds training seeds each, "
                  "and on organs with round, elongated or mildly darkened (synthetic) lesions; "
                  "dream from the same start images and write metrics.json (Dice on unmarked "
                  "images, characteristic feature, per seed and their mean and spread per p, "
                  "the rank correlation over all networks with its p-value and bootstrap "
                  "interval; final elongation and intensity of the dreamed lesions), "
                  "marking_dreams.png, marking_summary.png, marking_seeds.png, "
                  "lesion_dreams.png and lesion_curves.png.",
                  "fewer samples and epochs and a stronger marking: a check that the study "
                  "runs (about 3 minutes on one thread; the full run about 40)"),
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
        if name == "deepdream":
            study.add_argument("--seeds", type=int, default=3,
                               help="training seeds per marking network G_p: --seed, --seed + 1, "
                                    "... (default 3); a rerun with more trains only the new ones")
        add_progress(study)


def run(args) -> None:
    from ..studies.reproduce import run_deepdream_reproduction, run_lrp_reproduction

    study = run_lrp_reproduction if args.study == "lrp" else run_deepdream_reproduction
    extra = {"seeds": args.seeds} if args.study == "deepdream" else {}
    study(args.out, quick=args.quick, seed=args.seed, progress=args.progress, **extra)
