"""Shared by the examples: the testnet U-Net and one validation sample, or how to make them."""

import sys
from pathlib import Path

import numpy as np
import torch

from interpret_segmentation.datasets import load_sample
from interpret_segmentation.training import load_default_model

HERE = Path(__file__).parent
CHECKPOINT = HERE / "testnet" / "testnet.pth"
DATASET = HERE / "testnet" / "dataset"


def model_and_sample(index: int = 1):
    """(model, image tensor (1, 240, 240) in [0, 1], segment tensor (240, 240), sample)."""
    if not CHECKPOINT.exists() or not DATASET.exists():
        sys.exit(f"{CHECKPOINT} or {DATASET} is missing. Make both with `make demo`, or run\n"
                 "  python examples/testnet/generate.py\n"
                 "  python examples/testnet/train.py\n"
                 "and rename the epoch you want, e.g. examples/testnet/testnet_6.pth, to testnet.pth.")
    model = load_default_model(CHECKPOINT)
    sample = load_sample(DATASET, index)
    image = torch.from_numpy(sample.image.astype(np.float32) / 255.0)[None]
    segment = torch.from_numpy(sample.segment.astype(np.float32))
    return model, image, segment, sample
