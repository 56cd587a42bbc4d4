"""Benchmark LRP of one image against one forward + backward pass of the same classifier.

Run by hand, not by the tests: ``make bench`` or ``.venv/bin/python bench/bench_lrp.py``.
For VGG-11 (both heads) at 224 x 224, seeded random weights (the time does not depend on
what the network learned), it prints the best-of-N time of ``lrp.relevance`` for the rule
sets "montavon" and "seibold" and for the variant seed 003's study also reads
("seibold-study": z^B bounds (0, 1), epsilon scaled by the root mean square, max-pooling passed as
an average; see ``make_rule_set``), the best-of-N time of one forward pass plus the gradient of
the same logit with respect to the input (eval mode), and their ratio. Issue 4's target is a
ratio <= 2. It also prints the time of ``LRP(model, rule_set).explain(image)``, the same
relevance through the common entry point, which adds the first pass every explainer runs
(one more forward pass) and the bookkeeping of an Explanation. Timings alternate so that
machine noise hits all alike.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from interpret_segmentation.methods.lrp import LRP, make_rule_set, relevance
from interpret_segmentation.models import VGG11


def forward_backward(model, image, target):
    x = image.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[0, target], x)
    return grad


def best_times(functions, repeats):
    """Best-of-``repeats`` seconds of each function, calls interleaved."""
    best = [float("inf")] * len(functions)
    for _ in range(repeats):
        for k, function in enumerate(functions):
            started = time.perf_counter()
            function()
            best[k] = min(best[k], time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224, help="image side (default 224)")
    parser.add_argument("--widths", default="16,64",
                        help="comma-separated VGG widths, 64 = the original VGG-A (default 16,64)")
    parser.add_argument("--repeats", type=int, default=5, help="best of N (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    image = torch.rand(1, 1, args.size, args.size, generator=torch.Generator().manual_seed(0))
    print(f"LRP of one {args.size}x{args.size} image vs one forward + backward "
          f"(best of {args.repeats}, {torch.get_num_threads()} threads)")
    for width in (int(w) for w in args.widths.split(",")):
        for head in ("128N", "onefc"):
            with torch.random.fork_rng():  # the layers' initialisation draws from the global one
                torch.manual_seed(0)
                model = VGG11(in_channels=1, width=width, head=head, input_size=args.size).eval()
            variants = {"montavon": "montavon", "seibold": "seibold",
                        "seibold-study": make_rule_set("seibold", bounds=(0.0, 1.0), spread="rms",
                                                       max_pool="average")}
            for name, rule_set in variants.items():
                explainer = LRP(model, rule_set=rule_set, progress=False)
                lrp_s, floor_s, explain_s = best_times(
                    [partial(relevance, model, image, 1, rule_set=rule_set),
                     partial(forward_backward, model, image, 1),
                     partial(explainer.explain, image[0], 1)], args.repeats)
                print(f"width {width:3d} {head:5s} {name:13s}: LRP {lrp_s * 1000:7.1f} ms, "
                      f"forward+backward {floor_s * 1000:7.1f} ms, ratio {lrp_s / floor_s:.2f}; "
                      f"LRP.explain {explain_s * 1000:7.1f} ms, ratio {explain_s / floor_s:.2f}")


if __name__ == "__main__":
    main()
