"""The data-set runner on 16 testnet validation images: local against Ray with 1 and 2 workers.

Run by hand, not by the tests: ``.venv/bin/python bench/bench_dataset.py`` (needs the extra
``interpret-segmentation[ray]``). Generates a small testnet data set (``--size`` pixels a side,
120 by default so that the whole benchmark takes minutes on 2 cores) and explains its first
``--images`` validation images with HDM (default circles) and with MiSuRe (``--iterations``),
once per engine, with :func:`~interpret_segmentation.studies.runner.explain_dataset`.

The model is the demo U-Net's architecture with seeded random weights, plus a fixed
brightness term so that it segments the bright shapes (nothing is trained or downloaded).
Ray is started once beforehand (its start is reported apart); each Ray run still starts its
actors, which import the library and build the model and explainers. Every process runs
torch with ``--threads`` threads (default 1: the local run, and each Ray worker), so that the
runs differ in the engine alone and give the same maps (on this shared 2-core machine one
thread per process is also the fastest: two threads lose more to waiting for each other than
they gain).

Prints a Markdown table per method and engine: seconds for the run, images per second, the
start-up (until the first image is back, less a typical explanation time; for Ray, the
actors' start), the seconds per image after it, the overhead per image against the local
run's, and whether the maps are bit-identical to the local run's.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from interpret_segmentation.core.io import OutputDirectory
from interpret_segmentation.datasets import generate_dataset
from interpret_segmentation.studies.engines import LocalEngine
from interpret_segmentation.studies.ray_engine import RayEngine
from interpret_segmentation.studies.runner import run_items
from interpret_segmentation.studies.work import MethodRun, ValidationSource, Work
from interpret_segmentation.training.recipes import default_unet

ENGINES = (("local", 1), ("ray", 1), ("ray", 2))


class BrightUNet(nn.Module):
    """The demo U-Net with seeded random weights, its logits scaled by 0.1, plus
    20 (image - 0.6): foreground where the image is bright, shaped a little by the U-Net."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.unet = default_unet(seed)

    def forward(self, x):
        return 0.1 * self.unet(x) + 20 * (x[:, :1] - 0.6)


def run(work: Work, source, out: Path, engine):
    """Seconds of the run, the times (from its start) each image came back, the rows: the
    data-set runner's driver (:func:`run_items`) on ``engine``."""
    arrivals = []
    began = time.perf_counter()

    def log(message):
        if message.startswith("item "):
            arrivals.append(time.perf_counter() - began)

    with OutputDirectory(out, "bench-dataset", settings={"engine": repr(engine)}) as output:
        run_items(output, source, work, engine, progress=False, log=log)
    seconds = time.perf_counter() - began
    with open(out / "rows.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return seconds, arrivals, rows


def maps(out: Path) -> dict:
    found = {}
    for path in sorted((out / "items").rglob("*.npz")):
        with np.load(path) as data:
            found[path.relative_to(out).as_posix()] = data["saliency"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=120, help="testnet image side")
    parser.add_argument("--iterations", type=int, default=50, help="MiSuRe's iterations")
    parser.add_argument("--methods", default="hdm,misure")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the local run and of each Ray worker")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the runs are written (default: a temporary directory)")
    args = parser.parse_args()

    import ray

    work_dir = Path(args.out or tempfile.mkdtemp(prefix="bench-dataset-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    runs = Path(tempfile.mkdtemp(prefix="runs-", dir=work_dir))  # fresh: nothing to resume
    data = generate_dataset(work_dir / "testnet", n=5 * args.images, seed=0, size=args.size,
                            progress=False, force=True)
    source = ValidationSource(data, args.images)
    model = BrightUNet().eval()
    options = {"hdm": {}, "misure": {"iterations": args.iterations}}
    torch.set_num_threads(args.threads)

    began = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    cluster = time.perf_counter() - began

    lines = [f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()}"
             f" threads here), Ray {ray.__version__} (started in {cluster:.1f} s); "
             f"{len(source)} testnet images of {args.size} x {args.size}; {args.threads} torch "
             "thread(s) per process",
             "", "| method | engine | workers | run s | images/s | start-up s | s/image after | "
             "overhead/image vs local | maps = local |", "|---|---|---|---|---|---|---|---|---|"]
    try:
        for method in args.methods.split(","):
            local_step = local_maps = None
            for engine, workers in ENGINES:
                out = runs / f"{method}-{engine}{workers}"
                chosen = (LocalEngine() if engine == "local" else
                          RayEngine(workers=workers, cpus_per_worker=args.threads))
                work = Work(model, (MethodRun(method, method, options[method]),))
                seconds, arrivals, rows = run(work, source, out, chosen)
                errors = [row["error"] for row in rows if row["error"]]
                assert not errors, errors[:3]
                typical = float(np.median([float(row["seconds"]) for row in rows]))
                startup = (max(chosen.stats["ready_seconds"]) if engine == "ray"
                           else arrivals[0] - typical)
                step = (arrivals[-1] - arrivals[0]) / max(1, len(arrivals) - 1)
                found = maps(out)
                if engine == "local":
                    local_step, local_maps = step, found
                same = found.keys() == local_maps.keys() and all(
                    np.array_equal(found[name], local_maps[name]) for name in found)
                overhead = "-" if engine == "local" else f"{1000 * (step - local_step):+.0f} ms"
                lines.append(f"| {method} | {engine} | {workers} | {seconds:.1f} | "
                             f"{len(arrivals) / seconds:.2f} | {startup:.1f} | {step:.2f} | "
                             f"{overhead} | {'yes' if same else 'no'} |")
                print(lines[-1], flush=True)
    finally:
        ray.shutdown()
    print("\n".join(lines))
    print(f"\nruns written under {runs}")


if __name__ == "__main__":
    main()
