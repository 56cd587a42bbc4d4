"""Every segmentation method on every model users bring (tests/zoo.py): time per explanation
against the floor of the model passes it needs.

Run by hand, not by the tests: ``.venv/bin/python bench/bench_models.py`` (needs the test
extras: MONAI and transformers). Each explanation runs twice and the second, warm, run is
timed, as the floor is after a warm-up pass. The floor is the same model passes alone at the
same batch size, the model prepared as the explainers prepare it: HDM and RISE their
forward passes; Seg-Grad-CAM one forward pass plus one forward and backward pass; MiSuRe its
stage-1 and two more forward passes plus one forward and backward pass per iteration;
DeepDream one forward and backward pass per step. Prints a Markdown table (seconds per
explanation / ratio to the floor) for the README. LRP explains classifiers, so it has no
column here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from zoo import SETUPS  # noqa: E402

from interpret_segmentation import methods  # noqa: E402
from interpret_segmentation.core import (  # noqa: E402
    ModelAdapter,
    explanation_mode,
    time_model_passes,
)
from interpret_segmentation.methods.deepdream import analyze  # noqa: E402

ADAPTER_OPTIONS = ("output", "activation", "read")


def settings(name: str, spatial: tuple[int, ...]) -> dict:
    """Each method's settings for an input of spatial shape ``spatial``."""
    side = min(spatial)
    odd = side // 4 + 1 - (side // 4) % 2
    return {"hdm": {"circle_size": odd, "offset": side // 4},
            "rise": {"n_masks": 64, "s": 4},
            "gradcam": {},
            "misure": {"iterations": 20, "mask_size": 16, "kernel_size": odd},
            "deepdream": {"steps": 20}}[name]


def floor(model, image, options: dict, forward: int = 0, batch_size: int = 1,
          backward: int = 0) -> float:
    """Seconds for ``forward`` passes at ``batch_size`` plus ``backward`` forward and backward
    passes at batch size 1."""
    adapter = ModelAdapter(model, **{k: v for k, v in options.items() if k in ADAPTER_OPTIONS})
    seconds = 0.0
    with explanation_mode(model):
        if forward:
            seconds += time_model_passes(adapter, image, forward, batch_size)
        if backward:
            seconds += time_model_passes(adapter, image, backward, 1, backward=True)
    return seconds


def run(name: str, model, image, target, options: dict) -> tuple[float, float]:
    """(seconds of the warm run, seconds of its floor) for method ``name``."""
    own = settings(name, tuple(image.shape[2:]))
    if name == "deepdream":
        adapter_options = {k: v for k, v in options.items() if k in ADAPTER_OPTIONS}

        def explain():
            return analyze(model, image, target, features=[], record_images=False,
                           progress=False, **adapter_options, **own)
    else:
        explainer = methods.get(name).build(model, progress=False, **options, **own)

        def explain():
            return explainer.explain(image, target)
    explain()
    tick = time.perf_counter()
    result = explain()
    seconds = time.perf_counter() - tick
    if name == "deepdream":
        return seconds, floor(model, image, options, backward=len(result.activations))
    info = result.info
    if name == "gradcam":
        return seconds, floor(model, image, options, forward=1, backward=1)
    if name == "misure":
        return seconds, (floor(model, image, options, info["stage1_passes"], info["batch_size"])
                         + floor(model, image, options, 2, 1, backward=own["iterations"]))
    return seconds, floor(model, image, options, info["model_passes"], info["batch_size"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=2,
                        help="input size as a multiple of the tests' (default 2: 64 x 64 "
                             "images, 32^3 or 64^3 volumes)")
    parser.add_argument("--only", default=None, help="run only set-ups whose name contains this")
    args = parser.parse_args()
    names = [*methods.available("segmentation"), "deepdream"]
    print(f"machine: {torch.get_num_threads()} threads, torch {torch.__version__}; scale "
          f"{args.scale}")
    print("| model | input | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for setup in SETUPS:
        if args.only and args.only not in setup.name:
            continue
        model, image, target = setup.build(args.scale)
        cells = []
        for name in names:
            seconds, base = run(name, model, image, target, setup.options)
            cells.append(f"{seconds:.2f} s / {seconds / base:.2f}")
        shape = " x ".join(map(str, image.shape[1:]))
        print(f"| {setup.name} | {shape} {str(image.dtype).removeprefix('torch.')} | "
              + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
