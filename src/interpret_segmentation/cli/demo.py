"""``demo``: the end-to-end demo on testnet."""

from __future__ import annotations

import sys

from ..methods import registry
from .common import CHECKPOINT, DATASET, add_progress


def add_parser(commands) -> None:
    methods = ", ".join(registry.available("segmentation"))
    demo = commands.add_parser(
        "demo", help="the end-to-end demo",
        description="Generate testnet when absent, train the default U-Net when no checkpoint is "
                    f"cached, explain validation images with every registered method ({methods}) "
                    "and write figures, report.md and summary.json. A rerun replaces the files "
                    "the previous demo wrote (listed in --out's manifest) and deletes nothing "
                    "else.")
    demo.set_defaults(run=run)
    demo.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    demo.add_argument("--dataset", default=DATASET, help=f"data-set directory (default {DATASET})")
    demo.add_argument("--checkpoint", default=CHECKPOINT,
                      help=f"cached model; trained and written here when missing (default {CHECKPOINT})")
    demo.add_argument("--images", type=int, default=4,
                      help="validation images to explain (default 4)")
    demo.add_argument("--force", action="store_true",
                      help="write into a non-empty --out the demo did not make (beside what "
                           "is there; nothing else is deleted)")
    demo.add_argument("--strict", action="store_true",
                      help="exit with status 1 when the model's validation Dice is below 0.97, "
                           "i.e. it did not learn testnet's rule (`make demo` and CI use it)")
    add_progress(demo)


def run(args) -> int:
    from ..studies.demo import RuleNotLearnedError, run_demo

    try:
        run_demo(args.out, args.dataset, args.checkpoint, images=args.images, force=args.force,
                 progress=args.progress, strict=args.strict)
    except RuleNotLearnedError as error:
        print(f"interpret-segmentation: demo --strict: {error}", file=sys.stderr)
        return 1
    return 0
