"""Benchmark one DeepDream analysis against the floor of its model passes.

Run by hand, not by the tests: ``make bench`` or ``.venv/bin/python bench/bench_deepdream.py``.
Needs the demo model, examples/testnet/testnet.pth (``make demo`` makes it). From a 240 x 240
white-noise start, it times ``deepdream.analyze`` with 100 steps and every default feature,
and next to it the floor: 100 forward + backward passes to the input of the same model, run
the way the analysis runs it (eval mode, BatchNorm folded). The two alternate N times; it
prints the ratio of the best times and the median of the N paired ratios (each analysis over
the floor timed right after it), which moves less with this machine's slow and fast phases.
Issue 5's target is a ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from interpret_segmentation.core import explanation_mode
from interpret_segmentation.methods.deepdream import analyze, white_noise
from interpret_segmentation.training import load_default_model

CHECKPOINT = Path(__file__).resolve().parent.parent / "examples/testnet/testnet.pth"


def floor_passes(model, image: torch.Tensor, steps: int) -> None:
    """``steps`` forward + backward passes of the centre logit to the input."""
    height, width = image.shape[-2:]
    with explanation_mode(model):
        for _ in range(steps):
            x = image.clone().requires_grad_(True)
            torch.autograd.grad(model(x)[0, 0, height // 2, width // 2], x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="DeepDream steps (default 100)")
    parser.add_argument("--repeats", type=int, default=3, help="best of N (default 3)")
    args = parser.parse_args()
    model = load_default_model(CHECKPOINT)
    start = white_noise((240, 240), seed=0, std=0.02)
    image = torch.from_numpy(start)[None, None]
    times = {"analysis": [], "floor": []}
    for _ in range(args.repeats):
        began = time.perf_counter()
        path = analyze(model, start, steps=args.steps, step_size=0.05, value_range=(0, 1),
                       progress=False)
        times["analysis"].append(time.perf_counter() - began)
        began = time.perf_counter()
        floor_passes(model, image, args.steps)
        times["floor"].append(time.perf_counter() - began)
    best = {name: min(values) for name, values in times.items()}
    paired = statistics.median(a / f for a, f in zip(times["analysis"], times["floor"]))
    print(f"DeepDream, {args.steps} steps, 240x240, {len(path.features)} features "
          f"(final predicted area {int(path.masks[-1].sum())} px): {best['analysis']:.2f} s, "
          f"floor {best['floor']:.2f} s ({args.steps} forward+backward), "
          f"ratio {best['analysis'] / best['floor']:.2f} (best of {args.repeats}), "
          f"median paired ratio {paired:.2f} ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
