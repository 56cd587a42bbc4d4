"""What the reproductions share: one run's settings, log files that are never overwritten,
models a rerun reuses, and the metrics file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...core.io import atomic_write, json_ready
from ...training import load_checkpoint, save_checkpoint, train


def free_path(path: Path) -> Path:
    """``path``, or ``stem-2.suffix``, ``stem-3.suffix``, ... if taken (logs are never
    overwritten; an interrupted run's log stays)."""
    candidate, number = path, 1
    while os.path.lexists(candidate):
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def train_or_load(model, path: Path, fit, log) -> dict | None:
    """Load ``path`` when a previous run saved it (a rerun resumes), else train and save."""
    if path.is_file():
        log(f"reusing {path}")
        load_checkpoint(model, path)
        return None
    history = fit(model)
    save_checkpoint(model, path)
    return history[-1]


@dataclass(frozen=True)
class Run:
    """One reproduction at work.

    Attributes
    ----------
    out : Path
        Its output directory, with ``models/`` and ``results/`` claimed.
    settings : dict
        One entry of the study's ``SETTINGS``.
    quick : bool
    seed : int
        Data and initialisation seed.
    progress : bool
    log : callable str -> object
    """

    out: Path
    settings: dict
    quick: bool
    seed: int
    progress: bool
    log: Callable[[str], object]

    def fit(self, model, name: str, train_set, val_set, **options) -> None:
        """Load ``models/<name>.pth`` when a previous run saved it, else train ``model`` with
        :func:`~interpret_segmentation.training.train` and save it there.

        Training uses ``options`` (epochs, lr, ...), the settings' ``batch_size``, this run's
        seed, progress and log, a new log ``results/<name>[-k].txt`` and per-epoch checkpoints
        ``models/epochs/<name>_*.pth``.
        """
        def fit(model):
            return train(model, train_set, val_set, batch_size=self.settings["batch_size"],
                         results_path=free_path(self.out / "results" / f"{name}.txt"),
                         checkpoint_dir=self.out / "models" / "epochs", checkpoint_prefix=name,
                         seed=self.seed, progress=self.progress, log=self.log, **options)

        train_or_load(model, self.out / "models" / f"{name}.pth", fit, self.log)


def write_metrics(out: Path, metrics: dict) -> Path:
    """Write ``out/metrics.json`` (indent 1, strict JSON: NaN and infinities as null) through a
    temporary file, replacing an earlier run's."""
    text = json.dumps(json_ready(metrics), indent=1, allow_nan=False) + "\n"
    return atomic_write(out / "metrics.json", lambda file: file.write(text), mode="w",
                        overwrite=True)
