"""Data sets as the data-set runner reads them: numbered items with a key, an image or volume,
and optionally a ground-truth mask and a context mask.

A source is picklable (an engine sends it to its workers, which read their own items) and
says what it is (:meth:`describe`, recorded in a run's manifest so that a rerun on other data
is refused rather than mixed). :class:`FolderSource` reads a user's directory of images (PNG,
16-bit PNG, ``.npy``, NIfTI) with optional masks; :class:`TorchSource` wraps any torch
``Dataset`` yielding ``image`` or ``(image, mask)``; the library's own data sets come with
their validation split from :class:`interpret_segmentation.studies.work.ValidationSource`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import NIFTI_SUFFIXES, file_stem, read_image_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy") + NIFTI_SUFFIXES
"""Files :class:`FolderSource` reads as images (any case)."""


@dataclass(frozen=True)
class DatasetItem:
    """One item of a data set.

    Attributes
    ----------
    key : str
        Names the item in results and file names (letters, digits, ``-``, ``_``, ``.``).
    image : ndarray float32
        As the model takes it: (H, W), (C, H, W), or a volume (D, H, W) / (C, D, H, W).
    mask : ndarray bool (*S) or None
        Ground truth, when the data set has it.
    context : ndarray bool (*S) or None
        Seed 001's context mask (what decides the segment from outside it), when known.
    spacing : tuple of float or None
        Voxel sizes read from the file (NIfTI), else None.
    """

    key: str
    image: np.ndarray
    mask: np.ndarray | None = None
    context: np.ndarray | None = None
    spacing: tuple | None = None


def safe_key(text: str) -> str:
    """``text`` as a file-name-safe key: other characters become ``_``."""
    key = re.sub(r"[^A-Za-z0-9._-]", "_", str(text)).strip(".")
    return key or "_"


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


class FolderSource:
    """The images of a directory, in name order, with masks of the same stem from another.

    Parameters
    ----------
    images : path
        A directory of image files (:data:`IMAGE_SUFFIXES`); other files are ignored.
    masks : path, optional
        A directory holding, for some or all images, a mask file with the same stem (any
        readable suffix); non-zero is inside. Images without one have no mask.
    channels : {1, 3, None}, default None
        Channels wanted from picture files (None: as stored); arrays and NIfTI as stored.
    nifti_axes : {"xyz", "zyx"}, default "xyz"
        How NIfTI volumes are read (:func:`~interpret_segmentation.datasets.files.read_image_file`).

    Raises ValueError naming the argument when a directory is missing or holds no image, or
    when two files would give the same key.
    """

    def __init__(self, images, masks=None, channels: int | None = None, nifti_axes: str = "xyz"):
        self.root = Path(images)
        if not self.root.is_dir():
            raise ValueError(f"images: expected a directory of images, got {str(self.root)!r}")
        self.paths = sorted(path for path in self.root.iterdir() if _is_image_file(path))
        if not self.paths:
            raise ValueError(f"images: {self.root} holds no image file (expected one of "
                             f"{', '.join(IMAGE_SUFFIXES)})")
        self._keys = [safe_key(file_stem(path)) for path in self.paths]
        repeated = sorted({key for key in self._keys if self._keys.count(key) > 1})
        if repeated:
            raise ValueError(f"images: {self.root} holds several files named {repeated[0]!r} "
                             "(with different suffixes); keep one of them")
        self.mask_paths: dict[str, Path] = {}
        if masks is not None:
            mask_root = Path(masks)
            if not mask_root.is_dir():
                raise ValueError(f"masks: expected a directory of masks, got {str(mask_root)!r}")
            for path in sorted(mask_root.iterdir()):
                if _is_image_file(path):
                    self.mask_paths.setdefault(safe_key(file_stem(path)), path)
        self.channels, self.nifti_axes = channels, nifti_axes

    def __len__(self) -> int:
        return len(self.paths)

    def keys(self) -> list[str]:
        return list(self._keys)

    def item(self, position: int) -> DatasetItem:
        """Item ``position`` (0 .. len - 1), read from disk."""
        key = self._keys[position]
        image, spacing = read_image_file(self.paths[position], self.channels, "images",
                                         self.nifti_axes)
        mask = None
        if key in self.mask_paths:
            mask = read_image_file(self.mask_paths[key], None, "masks", self.nifti_axes).array
            mask = mask != 0
        return DatasetItem(key, image, mask, None, spacing)

    def describe(self) -> dict:
        """What decides the items: the directories, and each file's name, size and time."""
        listing = hashlib.sha256()
        for path in [*self.paths, *self.mask_paths.values()]:
            stat = path.stat()
            listing.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return {"kind": "folder", "images": str(self.root.resolve()),
                "masks": (None if not self.mask_paths
                          else str(next(iter(self.mask_paths.values())).parent.resolve())),
                "channels": self.channels, "nifti_axes": self.nifti_axes,
                "files": len(self.paths), "listing_sha256": listing.hexdigest()}


def _as_array(value, name: str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numbers, got {array.dtype}")
    return array


class TorchSource:
    """Any torch ``Dataset`` (anything with ``__len__`` and ``__getitem__``) yielding an image,
    or ``(image, mask)``; tensors or arrays, the image as the model takes it.

    Parameters
    ----------
    dataset : Dataset
    name : str, optional
        Recorded in the manifest (default the class name). A rerun is keyed by the name, the
        length and a hash of the first item, so a changed data set under the same name is
        only noticed when one of those changed.
    """

    def __init__(self, dataset, name: str | None = None):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise ValueError(f"dataset: expected a torch Dataset (with __len__ and "
                             f"__getitem__), got {type(dataset).__name__}")
        self.dataset, self.name = dataset, name or type(dataset).__name__

    def __len__(self) -> int:
        return len(self.dataset)

    def keys(self) -> list[str]:
        return [str(position) for position in range(len(self))]

    def item(self, position: int) -> DatasetItem:
        entry = self.dataset[position]
        image, mask = (entry[0], entry[1]) if isinstance(entry, (tuple, list)) else (entry, None)
        image = _as_array(image, f"dataset[{position}] image").astype(np.float32)
        if mask is not None:
            mask = _as_array(mask, f"dataset[{position}] mask")
            mask = (mask[0] if mask.ndim == image.ndim and mask.shape[0] == 1 else mask) != 0
        return DatasetItem(str(position), image, mask)

    def describe(self) -> dict:
        first = self.item(0) if len(self) else None
        digest = hashlib.sha256(first.image.tobytes()).hexdigest() if first else None
        return {"kind": "torch", "name": self.name, "length": len(self),
                "first_item_sha256": digest}
