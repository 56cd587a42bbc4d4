"""The result object every method returns."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def atomic_write(path: str | os.PathLike, write, *, overwrite: bool = False,
                 mode: str = "wb") -> Path:
    """Write a file through ``write(file_object)`` to a temporary name, then rename it.

    Refuses (FileExistsError) when ``path`` exists and ``overwrite`` is False, so nothing
    the user made is replaced by accident, and an interrupted write leaves no half file.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--force) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode) as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def _json_ready(value):
    """Numpy scalars and arrays, tuples and paths -> plain JSON values."""
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass
class Explanation:
    """A saliency map with everything needed to read, reproduce and compare it.

    Attributes
    ----------
    saliency : ndarray (H, W) float32
        The raw map at the input's resolution (signed where the method is signed). Normalising,
        thresholding and colouring are separate steps.
    method : str
        Name of the method, e.g. "hdm" or "rise".
    target_class : int
        The class that was explained.
    parameters : dict
        The method's parameters (JSON values).
    timings : dict
        Seconds: "total", "model" (time inside model passes) and method-specific entries.
    arrays : dict of str -> ndarray
        Further maps the method produced (e.g. "target_pixels", "prediction", "distances").
    info : dict
        Further JSON values (e.g. "model_passes", "batch_size", "baseline_distance").
    """

    saliency: np.ndarray
    method: str
    target_class: int
    parameters: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        saliency = np.asarray(self.saliency, dtype=np.float32)
        if saliency.ndim != 2:
            raise ValueError(f"saliency: expected a 2-D map (H, W), got shape {saliency.shape}")
        self.saliency = saliency

    def normalized(self) -> np.ndarray:
        """The map min-max scaled to [0, 1] (all zeros when the map is constant)."""
        low, high = float(self.saliency.min()), float(self.saliency.max())
        if high <= low:
            return np.zeros_like(self.saliency)
        return (self.saliency - low) / (high - low)

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``path`` (.npz: saliency and arrays) and ``path`` with suffix .json (the rest).

        Both are written to temporary names and renamed; existing files are refused unless
        ``overwrite`` is True.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        meta_path = path.with_suffix(".json")
        if not overwrite:
            for existing in (path, meta_path):
                if existing.exists():
                    raise FileExistsError(
                        f"{existing} exists; pass overwrite=True (--force) to replace it")
        arrays = {"saliency": self.saliency}
        arrays.update({f"array_{name}": np.asarray(value) for name, value in self.arrays.items()})
        meta = {
            "method": self.method,
            "target_class": self.target_class,
            "parameters": _json_ready(self.parameters),
            "timings": _json_ready(self.timings),
            "info": _json_ready(self.info),
        }
        atomic_write(path, lambda file: np.savez_compressed(file, **arrays), overwrite=True)
        atomic_write(meta_path, lambda file: json.dump(meta, file, indent=2), overwrite=True,
                     mode="w")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Explanation:
        """Read an explanation written by :meth:`save`."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        meta_path = path.with_suffix(".json")
        for needed in (path, meta_path):
            if not needed.exists():
                raise FileNotFoundError(f"{needed} not found (Explanation.save writes .npz + .json)")
        meta = json.loads(meta_path.read_text())
        with np.load(path, allow_pickle=False) as data:
            saliency = data["saliency"]
            arrays = {name[len("array_"):]: data[name] for name in data.files
                      if name.startswith("array_")}
        return cls(saliency=saliency, arrays=arrays, **meta)
