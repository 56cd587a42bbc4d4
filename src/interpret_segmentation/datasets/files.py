"""What the synthetic data sets share: box spacing, reading images and the on-disk layout.

A data set on disk is a directory ``<root>/<index>/`` per sample holding ``image.png``,
``segment.png`` and ``context.png`` (0/255) and ``meta.json``, plus one info file
(``<root>/testnet.json``, ``<root>/triangle.json``) describing the whole set.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..core.io import atomic_write
from ..core.validate import check_int

__all__ = [
    "SAMPLE_FILES",
    "Sample",
    "StoredSamples",
    "boxes_apart",
    "check_root",
    "stored_indices",
    "selected_indices",
    "read_gray",
    "read_image",
    "read_image_file",
    "ImageFile",
    "NIFTI_SUFFIXES",
    "NIFTI_AXES",
    "is_nifti",
    "file_stem",
    "save_png",
    "write_sample",
    "replaceable",
    "write_dataset",
]

SAMPLE_FILES = ("image.png", "segment.png", "context.png", "meta.json")
"""The files of one sample directory."""


class Sample(Protocol):
    """Anything with the four parts of a sample (e.g. ``TestnetSample``, ``TriangleSample``)."""

    image: np.ndarray
    segment: np.ndarray
    context: np.ndarray
    meta: dict


# ---------------------------------------------------------------------------------------------
# layout


def boxes_apart(a, b, gap: int) -> bool:
    """Whether two boxes have at least ``gap`` free pixels between them.

    Parameters
    ----------
    a, b : tuple
        ``(start0, start1, extent0, extent1)``, e.g. ``(top, left, height, width)``, or
        ``(start0, start1, side)`` for a square, e.g. ``(x, y, side)``. Both boxes must use the
        same axis order.
    gap : int
        Minimum number of free pixels between them along one axis.
    """
    a0, a1, *a_extent = a
    b0, b1, *b_extent = b
    a_len0, a_len1 = a_extent * 2 if len(a_extent) == 1 else a_extent
    b_len0, b_len1 = b_extent * 2 if len(b_extent) == 1 else b_extent
    return (
        a0 + a_len0 + gap <= b0
        or b0 + b_len0 + gap <= a0
        or a1 + a_len1 + gap <= b1
        or b1 + b_len1 + gap <= a1
    )


# ---------------------------------------------------------------------------------------------
# reading


def check_root(root, description: str, how_to_generate: str) -> Path:
    """``root`` as a Path after checking it is an existing directory.

    Raises FileNotFoundError (saying ``how_to_generate``) or ValueError naming ``root``.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{description} data set not found at {root}; {how_to_generate}")
    if not root.is_dir():
        raise ValueError(f"root: expected a {description} data set directory, got the file {root}")
    return root


def stored_indices(root, description: str, how_to_generate: str) -> list[int]:
    """Sorted indices of the numbered sample directories under ``root`` (ValueError if none)."""
    root = check_root(root, description, how_to_generate)
    indices = sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())
    if not indices:
        raise ValueError(f"root: {root} holds no {description} samples; {how_to_generate}")
    return indices


def selected_indices(indices, available: list[int], root) -> list[int]:
    """``available`` when ``indices`` is None, else ``indices`` checked to be stored samples."""
    if indices is None:
        return list(available)
    chosen = [check_int(i, f"indices[{k}]", minimum=0) for k, i in enumerate(indices)]
    missing = sorted(set(chosen) - set(available))
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise ValueError(
            f"indices: {len(missing)} requested samples are not in {root} ({shown}); it holds "
            f"{len(available)} samples ({available[0]} .. {available[-1]})"
        )
    return chosen


def read_gray(path: Path) -> np.ndarray:
    """A PNG as a writable uint8 grayscale array (H, W) (see :func:`read_image`)."""
    return np.round(read_image(path, channels=1) * 255).astype(np.uint8)


_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
"""File names read as NIfTI volumes (with nibabel)."""

NIFTI_AXES = ("xyz", "zyx")
"""How NIfTI arrays are read: spatial axes as stored (nibabel's and MONAI's ``LoadImage``
order, what a MONAI-trained model expects) or reversed."""


class StoredSamples:
    """Base of the torch data sets over a directory of numbered samples: each sample is read
    once by :meth:`read` and, with ``cache``, kept in memory.

    A subclass calls ``super().__init__(root, indices, cache)``, gives ``kind`` and
    ``how_to_generate`` (for the message about an incomplete sample) and :meth:`read`.
    """

    kind = "stored"
    how_to_generate = ""

    def __init__(self, root: Path, indices: list[int], cache: bool = True):
        self.root, self.indices, self.cache = root, indices, bool(cache)
        self._cache: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, directory: Path, index: int) -> tuple:
        """The arrays of the sample stored in ``directory`` (FileNotFoundError when a file
        is missing)."""
        raise NotImplementedError

    def stored(self, item: int) -> tuple:
        """The arrays :meth:`read` gives for position ``item``, from the cache when there."""
        index = self.indices[item]
        arrays = self._cache.get(index)
        if arrays is None:
            try:
                arrays = self.read(self.root / str(index), index)
            except FileNotFoundError as error:
                raise FileNotFoundError(
                    f"{self.kind} sample {index} in {self.root} is incomplete "
                    f"({error.filename}); {self.how_to_generate}") from error
            if self.cache:
                self._cache[index] = arrays
        return arrays


class ImageFile(NamedTuple):
    """What :func:`read_image_file` read.

    Attributes
    ----------
    array : np.ndarray
        float32: (H, W) or (3, H, W) from an image file, the stored array from ``.npy``,
        (H, W), (D, H, W) or (C, D, H, W) from NIfTI.
    spacing : tuple of float or None
        Voxel size along each spatial axis of ``array``, in its order ((D, H, W) or (H, W));
        None when the file does not say (image files, ``.npy``).
    """

    array: np.ndarray
    spacing: tuple[float, ...] | None


def is_nifti(path) -> bool:
    """Whether ``path`` is named like a NIfTI file (``.nii`` or ``.nii.gz``, any case)."""
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def file_stem(path) -> str:
    """The name of ``path`` without its suffix; ``.nii.gz`` counts as one (``ct.nii.gz`` ->
    ``ct``)."""
    path = Path(path)
    return path.name[:-len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem


def read_image(path, channels: int | None = 1, name: str = "image") -> np.ndarray:
    """An image file as a float32 array: :func:`read_image_file` without the spacing."""
    return read_image_file(path, channels, name).array


def read_image_file(path, channels: int | None = 1, name: str = "image",
                    nifti_axes: str = "xyz") -> ImageFile:
    """An image, array or volume file as float32 values and voxel spacing: the one place the
    library reads images.

    - ``.npy``: the array as it is (no pickles); spacing None.
    - ``.nii`` / ``.nii.gz`` (NIfTI, read with nibabel, installed by
      ``pip install interpret-segmentation[nifti]``): the voxel values with the header's
      scaling applied. NIfTI stores (x, y, z[, channels]); a 4-D file's fourth axis (e.g.
      stacked MRI sequences) is read as channels and put first, a 5-D one with a single time
      point as (x, y, z, c). With ``nifti_axes="xyz"`` (default) the spatial axes stay as
      stored: (x, y, z) is the (D, H, W) of the explainers, as nibabel and MONAI's
      ``LoadImage`` give it to a MONAI-trained model. With "zyx" they are reversed: (x, y)
      -> (H, W) = (y, x), (x, y, z) -> (D, H, W) = (z, y, x), (x, y, z, c) -> (c, z, y, x).
      No reorientation: voxels keep the file's order. Spacing: the header's voxel sizes
      (``header.get_zooms()``) in the array's axis order ((dz, dy, dx) for "zyx"); None,
      with a warning, when the header's sizes are not positive.
    - Any other file Pillow reads, scaled to [0, 1] by its bit depth: 16-bit images are
      divided by 65535, 8-bit ones by 255, bilevel ones are 0/1. ``channels`` 1 gives
      (H, W) (colour turned into luminance), 3 gives (3, H, W) (grey repeated), None keeps
      what the file holds: (H, W) for grey, (3, H, W) for colour. Alpha is dropped. Spacing
      None.

    Parameters
    ----------
    path : str or Path
    channels : {1, 3, None}, default 1
        Channels wanted from an image file; ``.npy`` and NIfTI arrays are returned as stored.
    name : str, default "image"
        How messages name the file (e.g. ``"--image"``).
    nifti_axes : {"xyz", "zyx"}, default "xyz"
        The order of a NIfTI file's spatial axes in the array (see above).

    Returns
    -------
    ImageFile
        ``(array, spacing)``.

    Raises
    ------
    FileNotFoundError
        When ``path`` is not a file.
    ModuleNotFoundError
        For a NIfTI file when nibabel is not installed (saying how to install it).
    ValueError
        Naming ``name`` and the file when it is empty, truncated or no image, or when it
        cannot give ``channels`` channels.
    """
    path = Path(path)
    if nifti_axes not in NIFTI_AXES:
        raise ValueError(f"nifti_axes: expected one of {', '.join(NIFTI_AXES)}, got "
                         f"{nifti_axes!r}")
    if path.exists() and not path.is_file():
        raise ValueError(f"{name}: expected an image file, got {path}, a directory or other "
                         "non-file (for a testnet sample directory, its image.png)")
    if not path.is_file():
        raise FileNotFoundError(f"{name}: {path} not found")
    if path.suffix.lower() == ".npy":
        return ImageFile(_read_npy(path, name), None)
    if is_nifti(path):
        return _read_nifti(path, name, nifti_axes)
    return ImageFile(_read_picture(path, channels, name), None)


def _read_npy(path: Path, name: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{name}: {path} is not a readable .npy array ({error})") from None
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name}: {path} holds {array.dtype} values, expected numbers")
    return array.astype(np.float32)


def _read_nifti(path: Path, name: str, axes: str) -> ImageFile:
    try:
        import nibabel
    except ImportError:
        raise ModuleNotFoundError(
            f"{name}: reading the NIfTI file {path} needs nibabel; install it with "
            "`pip install interpret-segmentation[nifti]` (or `pip install nibabel`)") from None
    try:
        volume = nibabel.load(path)
        data = np.asarray(volume.get_fdata(dtype=np.float32))
        zooms = [float(size) for size in volume.header.get_zooms()]
    except (OSError, ValueError, EOFError, zlib.error, nibabel.filebasedimages.ImageFileError) as error:
        raise ValueError(f"{name}: {path} is not a NIfTI file nibabel can read, or it is "
                         f"truncated ({' '.join(str(error).split())})") from None
    if data.ndim == 5 and data.shape[3] == 1:  # (x, y, z, t=1, c): one time point
        data, zooms = data[:, :, :, 0], zooms[:3] + zooms[4:]
    if data.ndim not in (2, 3, 4):
        raise ValueError(f"{name}: {path} holds a NIfTI array of shape {data.shape}; expected "
                         "(x, y), (x, y, z) or (x, y, z, channels)")
    spatial = min(data.ndim, 3)
    order = list(range(spatial)) if axes == "xyz" else list(reversed(range(spatial)))
    if data.ndim == 4:
        order = [3, *order]
    array = np.ascontiguousarray(data.transpose(order))
    spacing = tuple(zooms[axis] for axis in order if axis < spatial)
    if len(spacing) != spatial or not all(np.isfinite(size) and size > 0 for size in spacing):
        warnings.warn(f"{name}: the header of {path} gives voxel sizes {tuple(zooms)}, not "
                      f"{spatial} positive numbers; its spacing is left unknown (1 per voxel "
                      "unless given)", UserWarning, stacklevel=3)
        spacing = None
    return ImageFile(array, spacing)


def _read_picture(path: Path, channels: int | None, name: str) -> np.ndarray:
    if channels not in (None, 1, 3):
        raise ValueError(f"{name}: the model takes {channels} channels, which an image file "
                         "cannot give; pass an .npy array (C, H, W)")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in _SIXTEEN_BIT or image.mode == "I":
                gray = np.asarray(image).astype(np.float32)
                if gray.size and (gray.min() < 0 or gray.max() > 65535):
                    raise ValueError("32-bit integer values; save it as a 16-bit PNG or .npy")
                gray /= 65535
                return gray if channels in (None, 1) else np.repeat(gray[None], 3, axis=0)
            if image.mode == "F":
                gray = np.asarray(image, dtype=np.float32)
                return gray if channels in (None, 1) else np.repeat(gray[None], 3, axis=0)
            colour = image.mode not in ("1", "L", "LA", "I")
            if channels == 3 or (channels is None and colour):
                return np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255
            return np.asarray(image.convert("L"), dtype=np.float32) / 255
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{name}: {path} is not an image file Pillow can read, or it is "
                         f"truncated ({error})") from None


# ---------------------------------------------------------------------------------------------
# files


def save_png(array: np.ndarray, path: Path) -> None:
    """Write a uint8 array as a PNG (grayscale for 2-D arrays); an existing file is refused."""
    atomic_write(path, lambda file: Image.fromarray(array).save(file, format="PNG"), sync=False)


def _save_json(value, path: Path) -> None:
    atomic_write(path, lambda file: file.write(json.dumps(value, indent=1) + "\n"), mode="w",
                 sync=False)


def write_sample(sample: Sample, directory: Path) -> None:
    """Create ``directory`` (it must not exist) and write the :data:`SAMPLE_FILES` of ``sample``.

    The masks are stored as 0/255 images, the meta data as indented JSON.
    """
    directory.mkdir(parents=True, exist_ok=False)
    save_png(sample.image, directory / "image.png")
    save_png(sample.segment.astype(np.uint8) * 255, directory / "segment.png")
    save_png(sample.context.astype(np.uint8) * 255, directory / "context.png")
    _save_json(sample.meta, directory / "meta.json")


def replaceable(path: Path, info_file: str) -> bool:
    """Whether ``force`` may delete ``path``: a real directory that is empty, holds
    ``info_file``, or holds nothing but numbered sample directories (no links)."""
    if not path.is_dir() or path.is_symlink():
        return False
    if (path / info_file).is_file():
        return True
    return all(e.is_dir() and not e.is_symlink() and e.name.isdigit() for e in path.iterdir())


def write_dataset(
    root,
    n: int,
    make_sample: Callable[[int], Sample],
    info: dict,
    info_file: str,
    force: bool,
    progress: bool,
    description: str,
) -> Path:
    """Write samples ``make_sample(0) .. make_sample(n - 1)`` and ``info`` as a data set at ``root``.

    Everything goes first into a temporary sibling directory that is renamed to ``root`` once
    complete; an existing ``root`` is only replaced then, so an interrupted run leaves neither
    a partial data set nor a temporary directory behind.

    Parameters
    ----------
    root : str or Path
        Target directory; gets ``root/<index>/`` (see :func:`write_sample`) per sample and
        ``root/<info_file>``.
    n : int
        Number of samples (at least 1).
    make_sample : callable
        ``make_sample(index)`` returns the sample to store under ``root/<index>``.
    info : dict
        JSON-ready description of the whole set, written to ``root/<info_file>``.
    info_file : str
        Name of the info file, e.g. ``"testnet.json"``; its stem labels the progress bar.
    force : bool
        Replace an existing ``root`` when :func:`replaceable` allows it.
    progress : bool
        Show a tqdm progress bar on stderr.
    description : str
        Name of the data set in error messages, e.g. ``"testnet"``.

    Returns
    -------
    Path
        ``root``.

    Raises
    ------
    FileExistsError
        If ``root`` exists and ``force`` is False.
    ValueError
        If ``n`` is below 1, or ``force`` is True but ``root`` does not look like a data set
        (nothing is deleted then).
    """
    root = Path(root)
    n = check_int(n, "n", minimum=1)
    if root.exists() or root.is_symlink():
        if not force:
            raise FileExistsError(
                f"{root} already exists; pass force=True (or `--force` on the command line) "
                "to replace it"
            )
        if not replaceable(root, info_file):
            raise ValueError(
                f"root: {root} exists but does not look like a {description} data set "
                f"(expected {info_file} or only numbered sample directories); refusing to "
                "delete it, choose another path"
            )
    root.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = root.with_name(f".{root.name}.tmp-{token}")
    try:
        tmp.mkdir()
        for index in tqdm(range(n), desc=Path(info_file).stem, unit="img", file=sys.stderr,
                          disable=not progress):
            write_sample(make_sample(index), tmp / str(index))
        _save_json(info, tmp / info_file)
        if root.exists() or root.is_symlink():
            old = root.with_name(f".{root.name}.old-{token}")
            os.replace(root, old)
            os.replace(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
