"""What the reproductions share: log files that are never overwritten, models a rerun reuses."""

from __future__ import annotations

import os
from pathlib import Path

from ...training import load_checkpoint, save_checkpoint


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
