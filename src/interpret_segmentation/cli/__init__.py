"""The ``interpret-segmentation`` command."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np

DATASETS = {
    "testnet": {"dataset": "examples/testnet/dataset", "checkpoint": "examples/testnet/testnet.pth",
                "n": 1000, "size": 240, "about": "the synthetic testnet data set (seed 000)"},
    "triangle": {"dataset": "examples/triangle/dataset",
                 "checkpoint": "examples/triangle/triangle.pth", "n": 2000, "size": 224,
                 "about": "the Triangle data set of seed 001, built from scikit-learn's digits"},
}
"""The data sets the CLI generates and trains on, with their default directory and model."""
DATASET = DATASETS["testnet"]["dataset"]
CHECKPOINT = DATASETS["testnet"]["checkpoint"]


def _batch_size(text: str):
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int or 'auto', got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive int or 'auto', got {text!r}")
    return value


def _common_progress(parser):
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="hide progress bars")


def _study_options(parser, images: int) -> None:
    """The options every data-set study (evaluate, sweep, reliability) shares."""
    parser.add_argument("--dataset", default="testnet",
                        help="'testnet' (examples/testnet/dataset), 'triangle' "
                             "(examples/triangle/dataset) or a data-set directory in the same "
                             "layout (default testnet)")
    parser.add_argument("--checkpoint", default=None,
                        help="U-Net weights for that data set (default: examples/<name>/<name>.pth "
                             f"for a named data set, {CHECKPOINT} for a directory)")
    parser.add_argument("--n", type=int, default=images,
                        help=f"validation images to explain (default {images})")


def _dataset_path(args) -> str:
    known = DATASETS.get(args.dataset)
    return known["dataset"] if known else args.dataset


def _checkpoint_path(args) -> str:
    if args.checkpoint is not None:
        return args.checkpoint
    return DATASETS.get(args.dataset, DATASETS["testnet"])["checkpoint"]


def _dataset_commands(commands, name: str) -> None:
    """``NAME generate`` and ``NAME train`` for one of :data:`DATASETS`."""
    known = DATASETS[name]
    dataset, directory = known["dataset"], str(Path(known["checkpoint"]).parent)
    group = commands.add_parser(name, help=f"generate {name}, train a U-Net on it",
                                description=f"{known['about'].capitalize()}: generate it, train a U-Net "
                                            "on it.")
    steps = group.add_subparsers(dest="step", required=True, metavar="STEP")
    generate = steps.add_parser(
        "generate", help="write the data set",
        description=f"Write N {name} samples: <out>/<index>/image.png, segment.png, context.png, "
                    "meta.json. Refuses an existing directory unless --force.")
    generate.add_argument("--out", default=dataset, help=f"data-set directory (default {dataset})")
    generate.add_argument("--n", type=int, default=known["n"],
                          help=f"number of samples (default {known['n']})")
    generate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    generate.add_argument("--size", type=int, default=known["size"],
                          help=f"image side in pixels (default {known['size']})")
    generate.add_argument("--force", action="store_true", help="replace an existing data set")
    _common_progress(generate)

    share = "70/30" if name == "triangle" else "80/20"
    train = steps.add_parser(
        "train", help="train a U-Net on the data set",
        description=f"Train the library's U-Net (BCE + Dice loss, {share} split). Each epoch "
                    "prints train/val loss, val Dice and Hausdorff distance, appends them to "
                    f"<checkpoint-dir>/results/<name>.txt and saves <checkpoint-dir>/<name>_<epoch>.pth "
                    "(neither is ever overwritten). "
                    + ("By default training stops once the validation Dice has been at least "
                       "0.97 for two epochs. " if name == "testnet" else "")
                    + "The last epoch is also saved as "
                    f"<checkpoint-dir>/{name}.pth, the model the other commands load, unless "
                    "that file exists (it is never overwritten).")
    train.add_argument("--dataset", default=dataset, help=f"data-set directory (default {dataset})")
    train.add_argument("--name", default=name,
                       help=f"name of the run: results/<name>.txt and <name>_<epoch>.pth "
                            f"(default {name})")
    train.add_argument("--checkpoint-dir", default=directory,
                       help=f"where the checkpoints and results/ go (default {directory})")
    train.add_argument("--epochs", type=int, default=None,
                       help=f"epochs (default: {name}'s, see training.training_defaults)")
    train.add_argument("--lr", type=float, default=None,
                       help=f"peak learning rate (default: {name}'s)")
    train.add_argument("--batch-size", type=int, default=None,
                       help=f"images per step (default: {name}'s)")
    train.add_argument("--n-train", type=int, default=None,
                       help=f"training images used (default: {name}'s)")
    train.add_argument("--n-val", type=int, default=None,
                       help=f"validation images used (default: {name}'s)")
    train.add_argument("--width", type=int, default=None,
                       help=f"U-Net channels at full resolution (default: {name}'s)")
    train.add_argument("--depth", type=int, default=None,
                       help=f"U-Net down-sampling steps (default: {name}'s)")
    train.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                       help="turn each training image by a random symmetry of the square "
                            f"(default: {'on' if name == 'triangle' else 'off'} for {name})")
    train.add_argument("--seed", type=int, default=0,
                       help="initialisation and shuffling seed (default 0)")
    _common_progress(train)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interpret-segmentation",
        description="Explain PyTorch image-segmentation models (HDM, RISE, Seg-Grad-CAM, MiSuRe) "
                    "and run the testnet "
                    "demo. Every command has its own --help.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name in DATASETS:
        _dataset_commands(commands, name)

    explain = commands.add_parser("explain", help="explain one image with a method",
                                  description="Explain one image with HDM, RISE, Seg-Grad-CAM "
                                              "or MiSuRe.")
    methods = explain.add_subparsers(dest="method", required=True, metavar="METHOD")
    hdm = methods.add_parser(
        "hdm", help="Hausdorff Distance Masks",
        description="Occlude the image with a circle at every grid position and map how far the "
                    "segmentation moves (Hausdorff distance to the target region). Writes the "
                    "Explanation (.npz + .json), a figure and the RAW / BETTER_ONLY / WORSE_ONLY "
                    "circle maps as PNG.")
    rise = methods.add_parser(
        "rise", help="RISE for segmentation",
        description="Weight random masks by the Dice between the prediction on the masked image "
                    "and the target region (or by the class probability). Writes the Explanation "
                    "(.npz + .json) and a figure.")
    gradcam = methods.add_parser(
        "gradcam", help="Seg-Grad-CAM",
        description="Weight a layer's feature maps by the mean gradient of the class's summed "
                    "logits over the target region (one forward and one backward pass). Writes "
                    "the Explanation (.npz + .json) and a figure.")
    misure = methods.add_parser(
        "misure", help="MiSuRe: sufficient and minimally sufficient regions",
        description="Dilate the predicted mask until the kept image gives the same prediction "
                    "(sufficient region), then optimise the mask down to a minimally sufficient "
                    "region. Writes the Explanation (.npz + .json) and a figure.")
    for method in (hdm, rise, gradcam, misure):
        method.add_argument("--image", required=True,
                            help="input: a PNG or other image (scaled to [0, 1] by its bit depth, "
                                 "8 or 16; colour kept for a model taking three channels), an "
                                 ".npy array (used as is, (H, W) or (C, H, W)) or a testnet "
                                 "sample directory")
        method.add_argument("--segment", default=None,
                            help="target region as a PNG/.npy mask (default: the predicted mask)")
        method.add_argument("--class", dest="class_index", type=int, default=None,
                            help="class to explain (default 1: the foreground)")
        method.add_argument("--checkpoint", default=CHECKPOINT,
                            help=f"state dict to load (default {CHECKPOINT})")
        method.add_argument("--model", default=None, metavar="MODULE:CALLABLE",
                            help="builds the model the checkpoint belongs to, e.g. "
                                 "mypackage.models:build (default: the library's demo U-Net)")
        method.add_argument("--out", default="out/explain", help="output directory (default out/explain)")
        method.add_argument("--batch-size", type=_batch_size, default="auto",
                            help="inputs per model pass: a positive int or auto (default auto)")
        method.add_argument("--device", default="cpu", help="torch device (default cpu)")
        method.add_argument("--force", action="store_true",
                            help="replace existing output files, and write into a non-empty "
                                 "--out explain did not make (nothing else is touched)")
        _common_progress(method)
    hdm.add_argument("--circle-size", type=int, default=15, help="circle diameter in pixels (default 15)")
    hdm.add_argument("--offset", type=int, default=5, help="pixels between circle centres (default 5)")
    hdm.add_argument("--threshold", type=float, default=0.5,
                     help="class probability above which a pixel is segmented (default 0.5)")
    hdm.add_argument("--normalize", action="store_true",
                     help="circles at -1 instead of 0, for images normalised to [-1, 1]")
    hdm.add_argument("--channel", type=int, default=-1,
                     help="input channel to occlude, -1 for all (default -1)")
    hdm.add_argument("--run-all-circles", dest="skip_unchanged", action="store_false",
                     help="also run circles that leave the image unchanged (by default they are "
                          "skipped: their output is the unoccluded one); for models that are not "
                          "deterministic in eval mode")
    gradcam.add_argument("--layer", default=None,
                         help="dotted name of the layer (default: bottleneck, for the library's "
                              "U-Net)")
    misure.add_argument("--tau", type=float, default=0.9,
                        help="stage 1 dilates while the Dice is at most tau (default 0.9)")
    misure.add_argument("--kernel-size", type=int, default=7,
                        help="side of the circular dilation kernel, odd and >= 3 (default 7)")
    misure.add_argument("--mask-size", type=int, default=224,
                        help="side of the optimised mask (default 224)")
    misure.add_argument("--iterations", type=int, default=100,
                        help="optimisation steps (default 100)")
    misure.add_argument("--lr", type=float, default=0.1, help="AdamW learning rate (default 0.1)")
    misure.add_argument("--lam", type=float, default=0.01,
                        help="weight of the mask's mean, lambda (default 0.01)")
    misure.add_argument("--gamma", type=float, default=0.05,
                        help="weight of the total variation (default 0.05)")
    misure.add_argument("--beta", type=float, default=3.0,
                        help="exponent of the total variation (default 3)")
    rise.add_argument("--n-masks", type=int, default=2000, help="number of masks (default 2000)")
    rise.add_argument("--s", type=int, default=8, help="grid cells per side (default 8)")
    rise.add_argument("--p1", type=float, default=0.5, help="probability a cell is kept (default 0.5)")
    rise.add_argument("--weighting", choices=("dice", "probability"), default="dice",
                      help="score of a masked image (default dice)")
    rise.add_argument("--seed", type=int, default=0, help="mask seed (default 0)")

    evaluate = commands.add_parser(
        "evaluate", help="Table 1 of seed 001 over validation images",
        description="Explain the first N validation images (the training's split) with each "
                    "method and "
                    "write per_image.csv (row by row; rerunning resumes), table.csv and table.md "
                    "(Dice explained, perturbation ratio at the paper's thresholds, seconds per "
                    "image, context hit rate) and MiSuRe's dilations / perturbation ratio against "
                    "prediction size as PNG.")
    _study_options(evaluate, 20)
    evaluate.add_argument("--methods", default="misure,rise,gradcam,hdm",
                          help="comma-separated methods (default misure,rise,gradcam,hdm)")
    evaluate.add_argument("--out", default="out/evaluate", help="output directory (default "
                                                                 "out/evaluate)")
    _common_progress(evaluate)

    sweep = commands.add_parser(
        "sweep", help="MiSuRe's parameter studies (seed 001 Tables 2 and 6)",
        description="Run MiSuRe with learning rate x lambda over {0.001, 0.01, 0.1} (mask 224) "
                    "and mask size over {56, 112, 224} (lr 0.1, lambda 0.01) on the first N "
                    "validation images; write per_image.csv (resumable) and sweep.md with the "
                    "mean Dice explained and perturbation ratio.")
    _study_options(sweep, 10)
    sweep.add_argument("--iterations", type=int, default=100,
                       help="MiSuRe optimisation steps (default 100, as the paper)")
    sweep.add_argument("--out", default="out/sweep", help="output directory (default out/sweep)")
    _common_progress(sweep)

    reliability = commands.add_parser(
        "reliability", help="post-hoc reliability of predictions from MiSuRe (seed 001 5.5)",
        description="Add Gaussian noise (standard deviation drawn from [0, --noise]) to the first "
                    "N validation images, explain each prediction with MiSuRe, and train a "
                    "logistic regression on (dilations, Dice explained, perturbation ratio) to "
                    "predict whether the prediction's Dice with the ground truth is >= 0.9; "
                    "half the images train it, half evaluate it. Writes features.csv (resumable), "
                    "reliability.json and roc.png.")
    _study_options(reliability, 40)
    reliability.add_argument("--noise", type=float, default=0.08,
                             help="largest noise standard deviation, images in [0, 1] "
                                  "(default 0.08)")
    reliability.add_argument("--seed", type=int, default=0, help="noise and split seed (default 0)")
    reliability.add_argument("--out", default="out/reliability",
                             help="output directory (default out/reliability)")
    _common_progress(reliability)

    reproduce = commands.add_parser(
        "reproduce", help="reproduce a paper's study on synthetic data",
        description="Reproduce a seed paper's study end to end.")
    studies = reproduce.add_subparsers(dest="study", required=True, metavar="STUDY")
    lrp = studies.add_parser(
        "lrp", help="seed 003: LRP of classifiers as weakly supervised segmentation",
        description="Generate the synthetic defect set, train VGG-11 classifiers (128N, onefc) on "
                    "image labels and a U-Net on pixel labels, turn LRP relevance (montavon, "
                    "seibold) into masks (simple, gmm, bmm) and write metrics.json (classifier "
                    "balanced accuracy, TPR, TNR; IoU, precision, recall per combination), "
                    "pr_curves.png and examples.png. Trained models are kept in <out>/models "
                    "and reused by a rerun.")
    lrp.add_argument("--out", default="out/reproduce-lrp",
                     help="output directory (default out/reproduce-lrp)")
    lrp.add_argument("--quick", action="store_true",
                     help="small images, fewer samples and epochs (a few minutes)")
    lrp.add_argument("--seed", type=int, default=0, help="data and initialisation seed (default 0)")
    _common_progress(lrp)
    dreams = studies.add_parser(
        "deepdream", help="seed 004: DeepDream analysis of segmentation networks",
        description="Train U-Nets G_p on objects marked with 135-degree line textures with "
                    "probability p (0, 0.2, 0.5, 0.8, 0.9, 1) and on organs with round, elongated "
                    "or mildly darkened (synthetic) lesions; dream from one start image per "
                    "experiment and write metrics.json (Dice on unmarked images, characteristic "
                    "feature, their rank correlation; final elongation and intensity of the "
                    "dreamed lesions), marking_dreams.png, marking_summary.png, "
                    "lesion_dreams.png and lesion_curves.png. Trained models are kept in "
                    "<out>/models and reused by a rerun.")
    dreams.add_argument("--out", default="out/reproduce-deepdream",
                        help="output directory (default out/reproduce-deepdream)")
    dreams.add_argument("--quick", action="store_true",
                        help="smaller images, fewer samples and epochs (a few minutes)")
    dreams.add_argument("--seed", type=int, default=0,
                        help="data and initialisation seed (default 0)")
    _common_progress(dreams)

    demo = commands.add_parser(
        "demo", help="the end-to-end demo",
        description="Generate testnet when absent, train the default U-Net when no checkpoint is "
                    "cached, explain validation images with HDM, RISE, Seg-Grad-CAM and MiSuRe, and "
                    "write figures, "
                    "report.md and summary.json. A rerun replaces the files the previous demo wrote "
                    "(listed in --out's manifest) and deletes nothing else.")
    demo.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    demo.add_argument("--dataset", default=DATASET, help=f"data-set directory (default {DATASET})")
    demo.add_argument("--checkpoint", default=CHECKPOINT,
                      help=f"cached model; trained and written here when missing (default {CHECKPOINT})")
    demo.add_argument("--images", type=int, default=4, help="validation images to explain (default 4)")
    demo.add_argument("--force", action="store_true",
                      help="write into a non-empty --out the demo did not make (beside what "
                           "is there; nothing else is deleted)")
    demo.add_argument("--strict", action="store_true",
                      help="exit with status 1 when the model's validation Dice is below 0.97, "
                           "i.e. it did not learn testnet's rule (`make demo` and CI use it)")
    _common_progress(demo)
    return parser


def _load_array(path: Path, name: str, channels: int | None = 1) -> np.ndarray:
    """``path`` as :func:`~interpret_segmentation.datasets.files.read_image` reads it, and one
    line saying what was read (shape, dtype, value range)."""
    from ..datasets.files import read_image

    array = read_image(path, channels, name)
    values = f"values {array.min():.4g}..{array.max():.4g}" if array.size else "no values"
    print(f"read {name} {path}: shape {array.shape}, {array.dtype}, {values}")
    return array


def _build_model(spec: str | None, checkpoint: str):
    import inspect

    from torch import nn

    from ..training import load_checkpoint, load_default_model

    if spec is None:
        return load_default_model(checkpoint)
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--model: expected MODULE:CALLABLE, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, TypeError, ValueError) as error:
        raise ValueError(f"--model: cannot import {module_name!r} ({error})") from None
    build = getattr(module, attribute, None)
    if build is None:
        raise ValueError(f"--model: module {module_name!r} has no attribute {attribute!r}")
    if not callable(build):
        raise ValueError(f"--model: {spec} is a {type(build).__name__}, expected a callable "
                         "that builds the model")
    try:
        inspect.signature(build).bind()
    except TypeError as error:
        raise ValueError(f"--model: {spec} cannot be called without arguments ({error})") from None
    except ValueError:  # no signature to read (some builtins): just call it
        pass
    model = build()
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model: {spec}() returned a {type(model).__name__}, expected a "
                         "torch.nn.Module")
    return load_checkpoint(model, checkpoint)


def _explain(args) -> None:
    import torch

    from ..analysis.figures import explanation_figure, figure_png
    from ..core import Target, expected_channels
    from ..core.io import OutputDirectory, write_files
    from ..core.validate import check_device
    from ..methods import hdm, rise
    from ..methods.gradcam import SegGradCAM
    from ..methods.misure import MiSuRe

    image_path = Path(args.image)
    stem = image_path.stem
    if image_path.is_dir():
        stem = image_path.name
        image_path = image_path / "image.png"
    device = check_device(args.device, "--device")
    output = OutputDirectory(args.out, "explain", force=args.force, replace_own=False, wait=30)
    names = [f"{stem}_{args.method}{suffix}" for suffix in (".npz", ".json", ".png")]
    if args.method == "hdm":
        names += [f"{stem}_hdm_{name}.png" for name in ("raw", "better", "worse")]
    output.check(*names)  # every output path, before any work
    model = _build_model(args.model, args.checkpoint).to(device)
    conv = expected_channels(model)  # a colour image stays colour for a model taking three
    image = _load_array(image_path, "--image", None if conv is None else conv[1])
    region = None if args.segment is None else _load_array(Path(args.segment), "--segment")
    options = {"batch_size": args.batch_size, "progress": args.progress, "device": args.device}
    if args.method == "hdm":
        explainer = hdm.HDM(model, circle_size=args.circle_size, offset=args.offset,
                            threshold=args.threshold, normalize=args.normalize,
                            channel=args.channel, skip_unchanged=args.skip_unchanged, **options)
    elif args.method == "rise":
        explainer = rise.RISE(model, n_masks=args.n_masks, s=args.s, p1=args.p1,
                              weighting=args.weighting, seed=args.seed, **options)
    elif args.method == "gradcam":
        explainer = SegGradCAM(model, args.layer, **options)
    else:
        explainer = MiSuRe(model, tau=args.tau, kernel_size=args.kernel_size,
                           mask_size=args.mask_size, iterations=args.iterations, lr=args.lr,
                           lam=args.lam, gamma=args.gamma, beta=args.beta, **options)
    explanation = explainer.explain(torch.from_numpy(np.asarray(image, dtype=np.float32)),
                                    Target(args.class_index, region))
    shown = explanation.arrays["worse_only"] if args.method == "hdm" else explanation.saliency
    title = {"hdm": "HDM (worse only)", "rise": f"RISE ({getattr(args, 'weighting', '')})",
             "gradcam": "Seg-Grad-CAM", "misure": "MiSuRe (MSR mask)"}[args.method]
    panels = {title: shown}
    if args.method == "misure" and "sr_mask" in explanation.arrays:
        panels = {"MiSuRe (SR mask)": explanation.arrays["sr_mask"], title: shown}
    figure = figure_png(explanation_figure(image, panels,
                                           prediction=explanation.arrays["target_pixels"]))
    pictures = [figure]
    if args.method == "hdm":
        result = hdm.HDM.result(explanation)
        pictures += [result.circle_map(kind, color_map=colours)
                     for kind, colours in ((hdm.RAW, "Blues"), (hdm.BETTER_ONLY, "Greens"),
                                           (hdm.WORSE_ONLY, "Reds"))]
    with output:
        paths = output.files(*names)
        entries = explanation.writers(paths[0])
        entries.append((paths[2], lambda file: file.write(figure), "wb"))
        entries += [(path, lambda file, picture=picture: picture.save(file, format="PNG"), "wb")
                    for path, picture in zip(paths[3:], pictures[1:])]
        written = write_files(entries, overwrite=True)
    facts = [f"{explanation.timings['total']:.1f} s"]
    for key in ("model_passes", "dilations", "dice_explained", "perturbation_ratio", "reason"):
        if key in explanation.info:
            value = explanation.info[key]
            facts.append(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}")
    print(f"{args.method}: " + ", ".join(facts))
    for path in written:
        print(f"wrote {path}")


def _train(args) -> None:
    import torch

    from ..core.io import check_file_name
    from ..models.unet import UNet
    from ..training import (
        dataset_splits,
        oversampling_weights,
        save_checkpoint,
        train,
        training_defaults,
    )

    check_file_name(args.name, "--name")  # the results file stays in --checkpoint-dir
    architecture, settings = training_defaults(args.dataset)
    for key in ("epochs", "lr", "batch_size", "n_train", "n_val", "augment"):  # the rest as is
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    for key in ("width", "depth"):
        if getattr(args, key) is not None:
            architecture[key] = getattr(args, key)
    train_set, val_set = dataset_splits(args.dataset, settings["n_train"], settings["n_val"])
    torch.manual_seed(args.seed)
    model = UNet(**architecture)
    directory = Path(args.checkpoint_dir)
    train(model, train_set, val_set, epochs=settings["epochs"], lr=settings["lr"],
          batch_size=settings["batch_size"], results_path=directory / "results" / f"{args.name}.txt",
          checkpoint_dir=directory, checkpoint_prefix=args.name, seed=args.seed,
          progress=args.progress, augment=settings["augment"], schedule=settings["schedule"],
          stop_at=settings["stop_at"], hold=settings["hold"],
          sample_weights=oversampling_weights(train_set, settings["oversample"]))
    final = directory / f"{args.command}.pth"
    if final.exists():
        print(f"kept the existing {final}; the new epochs are {directory}/{args.name}_<epoch>.pth")
    else:
        save_checkpoint(model, final)
        print(f"wrote {final} (the last epoch); every epoch is in {directory}")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command in DATASETS and args.step == "generate":
            from ..datasets import generate_dataset, generate_triangle_dataset

            write = generate_dataset if args.command == "testnet" else generate_triangle_dataset
            path = write(args.out, n=args.n, seed=args.seed, size=args.size, force=args.force,
                         progress=args.progress)
            print(f"wrote {args.n} samples to {path}")
        elif args.command in DATASETS:
            _train(args)
        elif args.command == "explain":
            _explain(args)
        elif args.command == "reproduce":
            from ..studies.reproduce import run_deepdream_reproduction, run_lrp_reproduction

            run = run_lrp_reproduction if args.study == "lrp" else run_deepdream_reproduction
            run(args.out, quick=args.quick, seed=args.seed, progress=args.progress)
        elif args.command == "reliability":
            from ..studies.reliability import run_reliability

            run_reliability(_dataset_path(args), _checkpoint_path(args), args.n, args.out,
                            noise=args.noise, seed=args.seed, progress=args.progress)
        elif args.command == "sweep":
            from ..studies.evaluation import run_sweep

            run_sweep(_dataset_path(args), _checkpoint_path(args),
                      args.n, args.out, iterations=args.iterations, progress=args.progress)
        elif args.command == "evaluate":
            from ..studies.evaluation import run_evaluation

            run_evaluation(_dataset_path(args), _checkpoint_path(args), args.methods.split(","),
                           args.n, args.out, progress=args.progress,
                           dataset_name=args.dataset if args.dataset in DATASETS else None)
        else:
            from ..studies.demo import RuleNotLearnedError, run_demo

            try:
                run_demo(args.out, args.dataset, args.checkpoint, images=args.images,
                         force=args.force, progress=args.progress, strict=args.strict)
            except RuleNotLearnedError as error:
                print(f"interpret-segmentation: demo --strict: {error}", file=sys.stderr)
                return 1
    except (OSError, ValueError, TypeError) as error:  # OSError: FileExistsError, read-only...
        message = " ".join(str(error).split())  # one line
        print(f"interpret-segmentation: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
