"""Benchmark HDM and RISE against the floor (model passes alone) and the original's loops.

Run by hand, not by the tests: ``make bench`` or ``.venv/bin/python bench/bench_perturbation.py``.
Needs the demo model, examples/testnet/testnet.pth (``make demo`` makes it). Prints, from one
run on the same image and model:

* HDM (circle 15, offset 5) and Dice-weighted RISE (2000 masks): time / floor, where the floor
  is the same number of forward passes of the model alone at the same batch size, run as the
  explainers run it (eval mode, BatchNorm folded into the convolutions);
* what folding BatchNorm saves on one forward + backward pass;
* HDM against a per-mask loop written the original library's way (one occluded image per model
  call, distances one at a time);
* per-pixel RISE (``SegmentationRISE``) against a per-pixel-chunk loop like the original's;
* peak memory of RISE with N = 250 and N = 4000 masks (separate processes).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import hausdorff_distance as skimage_hausdorff

from interpret_segmentation import HDM, RISE, SegmentationRISE
from interpret_segmentation.core import ModelAdapter, explanation_mode, time_model_passes
from interpret_segmentation.datasets import load_sample
from interpret_segmentation.methods.gradcam import SegGradCAM
from interpret_segmentation.methods.hdm import CircleGrid, occlusion_masks
from interpret_segmentation.methods.misure import MiSuRe
from interpret_segmentation.training import load_default_model

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "examples/testnet/testnet.pth"
DATASET = ROOT / "examples/testnet/dataset"


def load(index: int):
    model = load_default_model(CHECKPOINT)
    sample = load_sample(DATASET, index)
    image = torch.from_numpy(sample.image.astype(np.float32) / 255.0)[None]
    return model, image, sample


def naive_hdm(model, image, segment, circle_size=15, offset=5):
    """The original's loop: one occluded image per model call, one skimage distance per mask
    (with the library's circle positions, so the distances can be compared)."""
    height, width = image.shape[-2:]
    grid = CircleGrid(height, width, circle_size, offset)
    distances = []
    segment = segment.astype(bool)
    for k in range(len(grid)):
        mask = occlusion_masks(grid, torch.tensor([k]), normalize=False)[0]
        with torch.no_grad():
            output = torch.sigmoid(model(torch.min(image, mask)[None]))[0, 0].numpy() > 0.5
        if output.any() and segment.any():
            distances.append(skimage_hausdorff(output, segment))
        else:
            distances.append(math.hypot(height, width))
    return np.array(distances)


def naive_pixel_rise(model, image, masks, pixels, batch_size=100, pixels_per_chunk=1000):
    """Per-pixel RISE the original library's way: for each chunk of 1000 target pixels, every
    mask goes through the model (batches of 100, its default) and each pixel's value is
    picked out in a Python loop and collected into a tensor; the chunk's maps are merged into
    running max and mean maps. (The original read only the first output of each batch; this
    reads all of them.)"""
    height, width = image.shape[-2:]
    coordinates = [(y, x) for y in range(height) for x in range(width) if pixels[y, x]]
    flat_masks = masks.view(len(masks), -1)
    merged_max = torch.full((height * width,), -torch.inf)
    merged_sum = torch.zeros(height * width)
    for start in range(0, len(coordinates), pixels_per_chunk):
        chunk = coordinates[start:start + pixels_per_chunk]
        rows = []
        for first in range(0, len(masks), batch_size):
            with torch.no_grad():
                out = torch.sigmoid(model(image * masks[first:first + batch_size]))[:, 0]
            for probability in out:
                rows.append(torch.tensor([[probability[y][x] for y, x in chunk]]))
        maps = torch.cat(rows).T @ flat_masks / len(masks)
        merged_max = torch.maximum(merged_max, maps.amax(0))
        merged_sum += maps.sum(0)
    return merged_max.view(height, width), (merged_sum / len(coordinates)).view(height, width)


def memory_probe(n_masks: int, index: int) -> None:
    """Child process: one Dice-weighted RISE run; prints the resident memory before it and
    its peak during it, in MiB (the peak is reset first, Linux /proc)."""
    model, image, _ = load(index)
    RISE(model, n_masks=8, batch_size=16, progress=False).explain(image)  # warm-up
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM)

    def status(key):
        line = next(line for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith(key))
        return int(line.split()[1]) / 1024

    before = status("VmRSS")
    RISE(model, n_masks=n_masks, batch_size=16, progress=False).explain(image)
    print(json.dumps({"before": before, "peak": status("VmHWM")}))


def per_pixel_merges(explainer, image, pixels):
    result = explainer(image, pixels=pixels)
    return result.max(), result.mean()


def timed(function, *args):
    start = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, default=1, help="testnet sample (default 1)")
    parser.add_argument("--batch-size", default="8",
                        help="batch size for HDM and RISE: an int or auto (default 8; auto spends "
                             "its first batches probing sizes, a few %% on short runs)")
    parser.add_argument("--pixel-masks", type=int, default=200,
                        help="masks for the per-pixel RISE comparison (default 200)")
    parser.add_argument("--skip-naive", action="store_true", help="skip the original-style loops")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs under 1000 model passes (and their floors) are timed this many "
                             "times and the best kept (default 3)")
    parser.add_argument("--parts", default="hdm,rise,pixel,misure,memory",
                        help="comma-separated parts to run (default hdm,rise,pixel,misure,memory)")
    parser.add_argument("--memory-probe", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe is not None:
        memory_probe(args.memory_probe, args.index)
        return
    if not CHECKPOINT.exists():
        sys.exit(f"{CHECKPOINT} is missing: run `make demo` first")
    batch_size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    parts = set(args.parts.split(","))
    torch.set_num_threads(torch.get_num_threads())
    model, image, sample = load(args.index)
    adapter = ModelAdapter(model)
    print(f"machine: {torch.get_num_threads()} threads, torch {torch.__version__}; image "
          f"{tuple(image.shape)}, sample {args.index}")
    rows = []

    def floor_time(passes, used_batch, tries, backward=False, fold=True):
        """Best of ``tries`` timings of the model passes alone, as the explainers run them."""
        with explanation_mode(model, fold_batchnorm=fold):
            return min(time_model_passes(adapter, image[None], passes, used_batch, backward)
                       for _ in range(tries))

    floor_time(3, 1, 1, True, False), floor_time(3, 1, 1, True)  # warm-up of both, not timed
    as_built, folded = floor_time(20, 1, args.repeats, True, False), floor_time(20, 1, args.repeats, True)
    print(f"{'BatchNorm folded':<28} one forward+backward {folded / 20 * 1000:.1f} ms vs "
          f"{as_built / 20 * 1000:.1f} ms as built ({as_built / folded:.2f} x faster)")

    def report(name, seconds, passes, used_batch, extra=""):
        # short runs are noisy here: the floor is the best of as many tries as the method had
        floor = floor_time(passes, used_batch, args.repeats if passes < 1000 else 1)
        rows.append((name, seconds, floor))
        print(f"{name:<28} {seconds:7.2f} s   floor {floor:7.2f} s ({passes} passes, batch "
              f"{used_batch})   ratio {seconds / floor:5.2f}{extra}")

    if "hdm" in parts:
        for skip in (True, False):
            explainer = HDM(model, circle_size=15, offset=5, batch_size=batch_size,
                            skip_unchanged=skip, progress=False)
            tries = [explainer.explain(image) for _ in range(args.repeats if skip else 1)]
            explanation = min(tries, key=lambda e: e.timings["total"])
            name = "HDM 15/5" + ("" if skip else ", all circles run")
            report(name, explanation.timings["total"], explanation.info["model_passes"],
                   explanation.info["batch_size"],
                   f"   ({explanation.info['unchanged_skipped']} of 2304 circles skipped)")
            if skip:
                skipping = explanation
        if not args.skip_naive:
            distances, seconds = timed(lambda: naive_hdm(model, image, skipping.arrays["target_pixels"]))
            same = np.allclose(distances, skipping.arrays["distances"].ravel())
            print(f"{'HDM original-style loop':<28} {seconds:7.2f} s   speed-up of HDM "
                  f"{seconds / skipping.timings['total']:.1f} x   (same distances: {same})")
    if "rise" in parts:
        explanation = RISE(model, n_masks=2000, batch_size=batch_size, progress=False).explain(image)
        report("RISE Dice, 2000 masks", explanation.timings["total"],
               explanation.info["model_passes"], explanation.info["batch_size"])

    if "pixel" in parts:
        n = args.pixel_masks
        pixel_batch = 8 if batch_size == "auto" else batch_size
        with torch.no_grad():
            logits = model(image[None])[0, 0]
        pixel_sets = {"predicted pixels": (logits > 0).numpy(),
                      "pixels above the mean logit": (logits > logits.mean()).numpy()}
        explainer = SegmentationRISE(model, (240, 240), "cpu", batch_size=pixel_batch, progress=False)
        explainer.generate_masks(N=n, s=8, p1=0.5)
        for label, pixels in pixel_sets.items():
            tries = [timed(per_pixel_merges, explainer, image, pixels) for _ in range(args.repeats)]
            (merged_max, merged_mean), seconds = min(tries, key=lambda t: t[1])
            report(f"RISE per-pixel, {n} masks", seconds, n, pixel_batch,
                   f"   ({int(pixels.sum())} {label}, max and mean merges)")
            if not args.skip_naive:
                masks = explainer.masks.batch(0, n)
                (naive_max, naive_mean), naive_seconds = timed(
                    naive_pixel_rise, model, image, masks, pixels)
                difference = max(float((naive_max / 0.5 - torch.from_numpy(merged_max)).abs().max()),
                                 float((naive_mean / 0.5 - torch.from_numpy(merged_mean)).abs().max()))
                print(f"{'RISE per-pixel original-style':<28} {naive_seconds:7.2f} s   speed-up "
                      f"{naive_seconds / seconds:.1f} x   (max |difference| of the merged maps "
                      f"{difference:.1e})")

    if "misure" in parts:
        # MiSuRe's floor: its stage-1 forward passes (dilation steps, 4 per pass) and one
        # forward + backward pass per optimisation step; Seg-Grad-CAM's: one of each
        explainer = MiSuRe(model, progress=False)
        explainer.explain(image)  # warm-up of the backward kernels, not timed
        misure = min((explainer.explain(image) for _ in range(args.repeats)),
                     key=lambda e: e.timings["total"])
        steps = misure.info["dilations"] + 1
        floor = (floor_time(steps, 4, args.repeats)
                 + floor_time(explainer.iterations, 1, args.repeats, backward=True))
        print(f"{'MiSuRe (100 iterations)':<28} {misure.timings['total']:7.2f} s   floor "
              f"{floor:7.2f} s ({steps} dilation steps + {explainer.iterations} forward+backward)"
              f"   ratio {misure.timings['total'] / floor:5.2f}   (Dice explained "
              f"{misure.info['dice_explained']:.3f}, perturbation ratio "
              f"{misure.info['perturbation_ratio']:.2f})")
        gradcam = SegGradCAM(model, progress=False)
        gradcam.explain(image)
        seconds = min(gradcam.explain(image).timings["total"] for _ in range(5))
        floor = floor_time(1, 1, 5, backward=True, fold=False)  # Seg-Grad-CAM does not fold
        print(f"{'Seg-Grad-CAM (bottleneck)':<28} {seconds:7.3f} s   floor {floor:7.3f} s (1 "
              f"forward+backward)   ratio {seconds / floor:5.2f}")

    if "memory" in parts:
        peaks = {}
        for count in (250, 4000):
            output = subprocess.run([sys.executable, __file__, "--memory-probe", str(count),
                                     "--index", str(args.index)], capture_output=True, text=True,
                                    check=True).stdout
            peaks[count] = json.loads(output.strip().splitlines()[-1])
        growth = {n: peaks[n]["peak"] - peaks[n]["before"] for n in peaks}
        print(f"RISE peak RSS during explain: N=250 {peaks[250]['peak']:.0f} MiB, N=4000 "
              f"{peaks[4000]['peak']:.0f} MiB (ratio {peaks[4000]['peak'] / peaks[250]['peak']:.3f}); "
              f"above the RSS before it: {growth[250]:.0f} vs {growth[4000]:.0f} MiB")


if __name__ == "__main__":
    main()
