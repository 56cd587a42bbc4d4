"""What the data-set studies share: the validation samples they explain, their explainers
(built from the method registry) and the settings their run manifests record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..core.io import file_sha256
from ..training import dataset_splits


def sample_image(sample) -> torch.Tensor:
    """A data-set sample's uint8 image (H, W) as the model takes it: float32 (1, H, W) in [0, 1]."""
    return torch.from_numpy(sample.image.astype(np.float32) / 255.0)[None]


def validation_samples(dataset_root, n: int) -> Iterator[tuple[int, object]]:
    """(index, sample) of the first ``n`` validation samples (the training's split, see
    :func:`~interpret_segmentation.training.dataset_splits`), read one at a time; the data set
    is checked at once."""
    validation = dataset_splits(dataset_root, n_val=n)[1]
    return ((validation.dataset.indices[position], validation.dataset.sample(position))
            for position in validation.indices)


def dataset_info(dataset_root) -> dict:
    """A data set's path and the content of its .json info files (their hash when unreadable),
    for run manifests."""
    root = Path(dataset_root)
    info = {}
    for path in sorted(root.glob("*.json")):
        try:
            info[path.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            info[path.name] = file_sha256(path)
    return {"dataset": str(root.resolve()), "dataset_info": info}


def study_settings(checkpoint, dataset_root, methods: dict, **more) -> dict:
    """What decides a study's rows, for its run manifest: the checkpoint's content (SHA-256),
    the data set (:func:`dataset_info`), each method run's settings (``{name: settings}``)
    and ``more`` (seed, noise, ...)."""
    return {"checkpoint_sha256": file_sha256(checkpoint), **dataset_info(dataset_root),
            "methods": methods, **more}
