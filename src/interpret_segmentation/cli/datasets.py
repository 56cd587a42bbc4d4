"""``testnet`` and ``triangle``: ``generate`` writes the data set, ``train`` a U-Net on it."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import DATASETS, add_progress


def add_parser(commands) -> None:
    for name in DATASETS:
        _add_dataset(commands, name)


def _add_dataset(commands, name: str) -> None:
    """``NAME generate`` and ``NAME train`` for one of :data:`~.common.DATASETS`."""
    known = DATASETS[name]
    group = commands.add_parser(name, help=f"generate {name}, train a U-Net on it",
                                description=f"{known['about'].capitalize()}: generate it, train a "
                                            "U-Net on it.")
    steps = group.add_subparsers(dest="step", required=True, metavar="STEP")
    _add_generate(steps, name)
    _add_train(steps, name)


def _add_generate(steps, name: str) -> None:
    known = DATASETS[name]
    dataset = known["dataset"]
    generate = steps.add_parser(
        "generate", help="write the data set",
        description=f"Write N {name} samples: <out>/<index>/image.png, segment.png, context.png, "
                    "meta.json. Refuses an existing directory unless --force.")
    generate.set_defaults(run=run_generate)
    generate.add_argument("--out", default=dataset, help=f"data-set directory (default {dataset})")
    generate.add_argument("--n", type=int, default=known["n"],
                          help=f"number of samples (default {known['n']})")
    generate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    generate.add_argument("--size", type=int, default=known["size"],
                          help=f"image side in pixels (default {known['size']})")
    if name == "triangle":
        generate.add_argument("--layout", choices=("square", "equilateral"), default="square",
                              help="where the three segmented digits sit: on three corners of an "
                                   "axis-aligned 100 px square (Riva et al., default) or on the "
                                   "corners of an equilateral triangle of random side and "
                                   "rotation (harder)")
    generate.add_argument("--force", action="store_true", help="replace an existing data set")
    add_progress(generate)


def _add_train(steps, name: str) -> None:
    known = DATASETS[name]
    dataset, directory = known["dataset"], str(Path(known["checkpoint"]).parent)
    share = "70/30" if name == "triangle" else "80/20"
    train = steps.add_parser(
        "train", help="train a U-Net on the data set",
        description=f"Train the library's U-Net (BCE + Dice loss, {share} split). Each epoch "
                    "prints train/val loss, val Dice and Hausdorff distance, appends them to "
                    f"<checkpoint-dir>/results/<name>.txt and saves <checkpoint-dir>/<name>_<epoch>.pth "
                    "(neither is ever overwritten). "
                    + ("By default training stops once the validation Dice has been at least "
                       f"{0.97 if name == 'testnet' else 0.98} for two epochs. ")
                    + "The last epoch is also saved as "
                    f"<checkpoint-dir>/{name}.pth, the model the other commands load, unless "
                    "that file exists (it is never overwritten).")
    train.set_defaults(run=run_train)
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
    add_progress(train)


def run_generate(args) -> None:
    from ..datasets import generate_dataset, generate_triangle_dataset

    options = {"layout": args.layout} if args.command == "triangle" else {}
    write = generate_dataset if args.command == "testnet" else generate_triangle_dataset
    path = write(args.out, n=args.n, seed=args.seed, size=args.size, force=args.force,
                 progress=args.progress, **options)
    print(f"wrote {args.n} samples to {path}")


def run_train(args) -> None:
    from ..core.io import check_file_name
    from ..models.unet import UNet
    from ..training import (
        dataset_splits,
        oversampling_weights,
        save_checkpoint,
        seeded,
        train,
        training_defaults,
    )

    check_file_name(args.name, "--name")  # the results file stays in --checkpoint-dir
    directory = Path(args.checkpoint_dir)
    final = directory / f"{args.command}.pth"
    for path in (directory, directory / "results", final):
        if path.is_symlink():
            raise ValueError(f"--checkpoint-dir: {path} is a symbolic link; training never "
                             "writes through links: remove it or choose another --checkpoint-dir")
    architecture, settings = training_defaults(args.dataset)
    for key in ("epochs", "lr", "batch_size", "n_train", "n_val", "augment"):  # the rest as is
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    for key in ("width", "depth"):
        if getattr(args, key) is not None:
            architecture[key] = getattr(args, key)
    train_set, val_set = dataset_splits(args.dataset, settings["n_train"], settings["n_val"])
    with seeded(args.seed):  # the caller's global generator is left alone
        model = UNet(**architecture)
    train(model, train_set, val_set, epochs=settings["epochs"], lr=settings["lr"],
          batch_size=settings["batch_size"], results_path=directory / "results" / f"{args.name}.txt",
          checkpoint_dir=directory, checkpoint_prefix=args.name, seed=args.seed,
          progress=args.progress, augment=settings["augment"], schedule=settings["schedule"],
          stop_at=settings["stop_at"], hold=settings["hold"],
          sample_weights=oversampling_weights(train_set, settings["oversample"]))
    if final.exists():
        print(f"kept the existing {final}; the new epochs are {directory}/{args.name}_<epoch>.pth")
    else:
        save_checkpoint(model, final, overwrite=False)
        print(f"wrote {final} (the last epoch); every epoch is in {directory}")
