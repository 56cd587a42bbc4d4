"""Does the default recipe teach the demo U-Net testnet's rule for every seed and thread count?

Trains the demo model (``training.train_default_model``, default settings) for seeds 0..4 with
1 and with 2 torch threads, one run after the other, and prints a Markdown table of the
validation Dice (200 images), the epochs run (training stops once the Dice has been at least
0.97 for two epochs) and the training seconds. Run by hand from the repository root:

    .venv/bin/python bench/bench_training.py [--dataset DIR] [--seeds 0 1 2 3 4] [--threads 1 2]

The data set is generated (testnet, 1000 samples of seed 0) into a temporary directory unless
``--dataset`` names one. Nothing is written elsewhere.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from interpret_segmentation.datasets.testnet import generate_dataset
from interpret_segmentation.training import RULE_DICE, train_default_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="testnet directory (default: generate one)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-training-") as scratch:
        scratch = Path(scratch)
        dataset = Path(args.dataset) if args.dataset else generate_dataset(
            scratch / "testnet", progress=False)
        rows = []
        for threads in args.threads:
            for seed in args.seeds:
                run = scratch / f"seed{seed}-threads{threads}"
                result = train_default_model(
                    dataset, run / "model.pth", run / "results.txt", seed=seed,
                    num_threads=threads, progress=False,
                    log=lambda line, s=seed, t=threads: print(f"seed {s}, {t} threads: {line}",
                                                              flush=True))
                rows.append((seed, threads, result))
        print(f"\n| seed | threads | validation Dice | rule learned (>= {RULE_DICE}) | epochs | "
              "seconds |\n|---|---|---|---|---|---|")
        for seed, threads, result in rows:
            print(f"| {seed} | {threads} | {result['val_dice']:.4f} | "
                  f"{'yes' if result['rule_learned'] else 'NO'} | {result['epochs']} | "
                  f"{result['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
