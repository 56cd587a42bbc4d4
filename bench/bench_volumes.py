"""Benchmark HDM, RISE and MiSuRe on a 3-D U-Net-like network and a 64^3 volume.

Run by hand, not by the tests: ``.venv/bin/python bench/bench_volumes.py``. Prints, for each
method, its time next to the floor (the same number of model passes alone at the same batch
size, the model prepared as the explainers prepare it), and the peak resident memory of
Dice-weighted RISE with N = 250 and N = 4000 masks (separate processes). MiSuRe's run is
short, so it is warmed up once (as the floor is) and it and its floor are each the best of
three; HDM and RISE run once. The network has
seeded random weights plus a bias that makes it segment the bright cube, so nothing is
trained or downloaded.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from torch import nn

from interpret_segmentation import HDM, RISE, MiSuRe, Target
from interpret_segmentation.core import ModelAdapter, explanation_mode, time_model_passes


class VolumeNet(nn.Module):
    """A small 3-D encoder-decoder: two poolings, skip connection, two-class logits."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.down = nn.Sequential(nn.Conv3d(1, width, 3, padding=1), nn.BatchNorm3d(width),
                                  nn.ReLU())
        self.deep = nn.Sequential(nn.MaxPool3d(2), nn.Conv3d(width, 2 * width, 3, padding=1),
                                  nn.BatchNorm3d(2 * width), nn.ReLU(), nn.MaxPool3d(2),
                                  nn.Conv3d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
                                  nn.Upsample(scale_factor=4, mode="trilinear"))
        self.head = nn.Conv3d(3 * width, 2, 1)
        self.brightness = nn.Conv3d(1, 2, 5, padding=2, bias=False)

    def forward(self, x):
        features = torch.cat([self.down(x), self.deep(self.down(x))], dim=1)
        return 0.1 * self.head(features) + self.brightness(x)


def volume_and_model(side: int = 64):
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = VolumeNet().eval()
    with torch.no_grad():
        model.brightness.weight.zero_()
        model.brightness.weight[1] = 20 / 125  # class 1 where the 5^3 mean is above 0.5
        model.brightness.weight[0] = 10 / 125
    volume = torch.rand(1, 1, side, side, side, generator=generator) * 0.3
    low, high = side // 3, side // 3 + side // 4
    volume[..., low:high, low:high, low:high] += 0.7
    region = torch.zeros(side, side, side, dtype=torch.bool)
    region[low:high, low:high, low:high] = True
    return model, volume, region


def floor(model, volume, passes: int, batch_size: int, backward: bool = False) -> float:
    adapter = ModelAdapter(model)
    with explanation_mode(model):
        return time_model_passes(adapter, volume, passes, batch_size, backward=backward)


def best_of(repeats: int, run, *args) -> tuple[float, object]:
    """(seconds, result) of the shortest of ``repeats`` calls ``run(*args)``."""
    best = None
    for _ in range(repeats):
        tick = time.perf_counter()
        result = run(*args)
        seconds = time.perf_counter() - tick
        if best is None or seconds < best[0]:
            best = (seconds, result)
    return best


def misure_floor(model, volume, stage1: int, batch_size: int, iterations: int) -> float:
    """MiSuRe's floor: X0, stage 1's steps and X_MSR forward, then forward and backward per
    iteration of stage 2."""
    return (floor(model, volume, stage1, batch_size) + floor(model, volume, 2, 1)
            + floor(model, volume, iterations, 1, backward=True))


def memory_probe(n_masks: int, batch_size: int) -> None:
    model, volume, region = volume_and_model(32)
    RISE(model, n_masks=n_masks, s=4, batch_size=batch_size, progress=False).explain(
        volume, Target(1, region=region))
    print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=64, help="volume side in voxels (default 64)")
    parser.add_argument("--batch-size", type=int, default=4, help="batch size (default 4)")
    parser.add_argument("--rise-masks", type=int, default=200, help="RISE masks timed (default 200)")
    parser.add_argument("--memory-probe", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe is not None:
        memory_probe(args.memory_probe, args.batch_size)
        return
    torch.set_num_threads(torch.get_num_threads())
    model, volume, region = volume_and_model(args.side)
    target = Target(1, region=region)
    print(f"machine: {torch.get_num_threads()} threads, torch {torch.__version__}; volume "
          f"{tuple(volume.shape)}, batch {args.batch_size}")
    runs = [
        ("HDM, ball 9, offset 8", HDM(model, circle_size=9, offset=8,
                                      batch_size=args.batch_size, progress=False), False, 1),
        (f"RISE, Dice, {args.rise_masks} masks", RISE(model, n_masks=args.rise_masks, s=6,
                                                      batch_size=args.batch_size,
                                                      progress=False), False, 1),
        ("MiSuRe, 20 iterations", MiSuRe(model, iterations=20, mask_size=32,
                                         batch_size=args.batch_size, progress=False), True, 3),
    ]
    for name, explainer, backward, repeats in runs:
        if repeats > 1:  # short runs: warmed up as the floor is, the best of a few
            explainer.explain(volume, target)
        seconds, explanation = best_of(repeats, explainer.explain, volume, target)
        if backward:
            stage1 = explanation.info["stage1_passes"]
            base = min(misure_floor(model, volume, stage1, args.batch_size, explainer.iterations)
                       for _ in range(repeats))
            passes = f"{stage1} + 2 forward + {explainer.iterations} forward+backward"
        else:
            count = explanation.info["model_passes"]
            base = floor(model, volume, count, args.batch_size)
            passes = f"{count} passes"
        print(f"{name:28s} {seconds:7.2f} s   floor {base:7.2f} s ({passes})   "
              f"ratio {seconds / base:5.2f}")
    peaks = {}
    for n_masks in (250, 4000):
        out = subprocess.run([sys.executable, __file__, "--memory-probe", str(n_masks),
                              "--batch-size", str(args.batch_size)],
                             capture_output=True, text=True, check=True).stdout
        peaks[n_masks] = json.loads(out.strip().splitlines()[-1])["peak_mib"]
    print(f"RISE peak memory (32^3): {peaks[250]:.0f} MiB with N = 250, {peaks[4000]:.0f} MiB "
          f"with N = 4000 (ratio {peaks[4000] / peaks[250]:.2f})")


if __name__ == "__main__":
    main()
