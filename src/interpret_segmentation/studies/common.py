"""What the data-set studies share: the settings their run manifests record."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.io import file_sha256


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
