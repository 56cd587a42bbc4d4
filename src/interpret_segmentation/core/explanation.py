"""The result object every method returns."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io import json_ready, read_saved_pair, write_files


def normalize_map(saliency) -> np.ndarray:
    """Min-max scale a map to [0, 1]: float64, all zeros when it is constant; NaN and
    infinities count as the minimum."""
    saliency = np.nan_to_num(np.asarray(saliency, dtype=np.float64), nan=-np.inf)
    finite = saliency[np.isfinite(saliency)]
    if finite.size == 0:
        return np.zeros(saliency.shape)
    low, high = finite.min(), finite.max()
    saliency = np.where(np.isfinite(saliency), saliency, low)
    return (saliency - low) / (high - low) if high > low else np.zeros(saliency.shape)


@dataclass
class Explanation:
    """A saliency map with everything needed to read, reproduce and compare it.

    Attributes
    ----------
    saliency : ndarray (*S) float32, (H, W) or (D, H, W)
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
        Further maps the method produced (e.g. "target_pixels", "prediction", "distances"),
        2-D or 3-D as the image is.
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
        if saliency.ndim not in (2, 3):
            raise ValueError(f"saliency: expected a 2-D map (H, W) or a 3-D map (D, H, W), got "
                             f"shape {saliency.shape}")
        self.saliency = saliency

    def normalized(self) -> np.ndarray:
        """The map min-max scaled to [0, 1] (all zeros when the map is constant)."""
        return normalize_map(self.saliency).astype(np.float32)

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``path`` (.npz: saliency and arrays) and ``path`` with suffix .json (the rest).

        Both files are written together or neither (:func:`~interpret_segmentation.core.io.
        write_files`); existing files are refused unless ``overwrite`` is True.
        """
        path = self.paths(path)[0]
        write_files(self.writers(path), overwrite=overwrite)
        return path

    @staticmethod
    def paths(path: str | os.PathLike) -> tuple[Path, Path]:
        """The .npz and .json paths :meth:`save` writes for ``path``."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        return path, path.with_suffix(".json")

    def writers(self, path: str | os.PathLike) -> list[tuple]:
        """(path, write, mode) of the two files of :meth:`save`, for
        :func:`~interpret_segmentation.core.io.write_files` with other files."""
        path, meta_path = self.paths(path)
        arrays = {"saliency": self.saliency}
        arrays.update({f"array_{name}": np.asarray(value) for name, value in self.arrays.items()})
        meta = {
            "method": self.method,
            "target_class": self.target_class,
            "parameters": json_ready(self.parameters),
            "timings": json_ready(self.timings),
            "info": json_ready(self.info),
        }
        return [(path, lambda file: np.savez_compressed(file, **arrays), "wb"),
                (meta_path, lambda file: json.dump(meta, file, indent=2), "w")]

    @classmethod
    def load(cls, path: str | os.PathLike) -> Explanation:
        """Read an explanation written by :meth:`save`.

        Raises FileNotFoundError when a file is missing and ValueError naming the file when it
        is truncated or was not written by :meth:`save`.
        """
        path, meta_path = cls.paths(path)
        written_by = "not an Explanation written by Explanation.save"
        meta, stored = read_saved_pair(path, meta_path, "Explanation.save", written_by)
        fields = {"method", "target_class", "parameters", "timings", "info"}
        if not {"method", "target_class"} <= set(meta) <= fields:
            raise ValueError(f"{meta_path}: {written_by} (expected the keys {sorted(fields)})")
        if "saliency" not in stored:
            raise ValueError(f"{path}: {written_by} (no saliency array)")
        saliency = stored["saliency"]
        arrays = {name[len("array_"):]: value for name, value in stored.items()
                  if name.startswith("array_")}
        try:
            return cls(saliency=saliency, arrays=arrays, **meta)
        except ValueError as error:
            raise ValueError(f"{path}: {written_by} ({error})") from None
