"""Figures: maps over images and volumes, saved as PNG. Plotting only; maps are computed
elsewhere.

Figures are plain :class:`matplotlib.figure.Figure` objects, drawn by the Agg canvas when saved:
nothing here imports ``matplotlib.pyplot`` or selects a backend, so a user's own plotting
(a notebook's inline backend, say) is left as it was, and no figure is kept alive by pyplot.

Volumes are (D, H, W) arrays, axes (z, y, x): an axial section fixes z and shows (y, x), a
coronal one fixes y and shows (z, x), a sagittal one fixes x and shows (z, y), each with
row 0 at the top. A volume is shown as a montage of axial slices through the target
(:func:`volume_montage`) or as three orthogonal sections through one voxel
(:func:`orthogonal_views`); :func:`explanation_figure` draws a 3-D explanation that way.
"""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..core import check_spacing
from ..core.io import atomic_write
from ..core.validate import as_array, check_positive, is_int, shown
from .metrics import normalize_map

__all__ = ["explanation_figure", "figure_png", "montage_slices", "orthogonal_views",
           "save_figure", "scatter_figure", "subplots", "target_point", "volume_montage"]

PANEL_INCHES = 2.6
"""Size of one image panel of the volume figures, in inches (260 pixels in a PNG)."""


def subplots(nrows: int = 1, ncols: int = 1, **options) -> tuple[Figure, np.ndarray | object]:
    """A new figure and its axes, as ``pyplot.subplots`` gives them, without pyplot.

    Parameters
    ----------
    nrows, ncols : int, default 1
        The grid of axes.
    **options
        ``figsize`` (inches) and ``dpi`` go to the figure; ``squeeze`` (default True),
        ``sharex``, ``sharey``, ``width_ratios``, ``height_ratios``, ``subplot_kw`` and
        ``gridspec_kw`` to :meth:`Figure.subplots`.

    Returns
    -------
    (Figure, Axes or numpy array of Axes)
    """
    figure = Figure(figsize=options.pop("figsize", None), dpi=options.pop("dpi", None))
    return figure, figure.subplots(nrows, ncols, **options)


def figure_png(figure) -> bytes:
    """A matplotlib figure as PNG bytes (100 dpi, tight box).

    A figure made by ``pyplot`` is closed afterwards, so pyplot does not keep it alive; a
    plain :class:`Figure` needs no closing.
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    pyplot = sys.modules.get("matplotlib.pyplot")  # only if the caller imported it
    if pyplot is not None:
        pyplot.close(figure)  # nothing to do for a figure pyplot does not manage
    return buffer.getvalue()


def save_figure(figure, path, overwrite: bool = False) -> Path:
    """Write a matplotlib figure as PNG through a temporary file (see :func:`figure_png`)."""
    content = figure_png(figure)
    return atomic_write(path, lambda file: file.write(content), overwrite=overwrite)


def explanation_figure(image, panels: dict, *, prediction=None, title: str | None = None,
                       point=None, spacing=None) -> Figure:
    """The input, optionally the prediction, then each map over the input.

    A 2-D explanation is one row of panels. A 3-D one (maps (D, H, W)) is one row of three
    orthogonal sections (:func:`orthogonal_views`) per panel, all through the same voxel: the
    input first, then each map over it, with the prediction outlined in every row.

    Parameters
    ----------
    image : array (H, W) or (C, H, W); for volumes (D, H, W), (C, D, H, W) or (1, C, D, H, W)
        The input (first channel shown, grey).
    panels : dict name -> array (H, W) or (D, H, W)
        Maps to overlay; each is min-max normalised (over the whole map) and drawn with the
        "jet" colour map. Volumes when the maps are 3-D (or, without maps, when the
        prediction is 3-D or the image 4-D or 5-D).
    prediction : array (H, W) or (D, H, W), optional
        Binary prediction (the target), drawn as a contour.
    title : str, optional
    point : three ints (z, y, x), optional
        Volumes only: the voxel the sections pass through. Default: the prediction's
        :func:`target_point`, else the largest value of the first map, else the centre.
    spacing : three positive floats (dz, dy, dx), optional
        Volumes only: voxel size, for the sections' aspect ratios; default isotropic.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        For maps, a prediction or an image whose shape does not fit the explanation's.
    """
    maps = [np.asarray(saliency) for saliency in panels.values()]
    dims = maps[0].ndim if maps else (np.ndim(prediction) if prediction is not None
                                      else (3 if np.ndim(image) >= 4 else 2))
    if dims == 3:
        return _volume_explanation(image, panels, prediction, title, point, spacing)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[0]
    count = 1 + len(panels)
    figure, axes = subplots(1, count, figsize=(3.2 * count, 3.4), squeeze=False)
    axes = axes[0]
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title("input" if prediction is None else "input + prediction")
    if prediction is not None and np.any(prediction):
        axes[0].contour(np.asarray(prediction, dtype=float), levels=[0.5], colors="lime",
                        linewidths=1)
    for axis, (name, saliency) in zip(axes[1:], panels.items()):
        axis.imshow(image, cmap="gray")
        shown_map = axis.imshow(normalize_map(saliency), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        axis.set_title(name)
    for axis in axes:
        axis.set_axis_off()
    if panels:
        figure.colorbar(shown_map, ax=list(axes), fraction=0.02, pad=0.01)
    if title:
        figure.suptitle(title)
    return figure


def _volume_explanation(image, panels: dict, prediction, title, point, spacing) -> Figure:
    """:func:`explanation_figure` for maps (D, H, W): a row of orthogonal sections per panel."""
    maps = {name: _volume(saliency, f"panels[{name!r}]", channels=False)
            for name, saliency in panels.items()}
    volume = _volume(image, "image")
    shape = volume.shape
    for name, saliency in maps.items():
        if saliency.shape != shape:
            raise ValueError(f"panels[{name!r}]: expected the image's shape {shape}, got "
                             f"{saliency.shape}")
    mask = None if prediction is None else _mask(prediction, "prediction", shape)
    spacing = _spacing(spacing)
    if point is None:
        if mask is not None and mask.any():
            point = target_point(mask, spacing)
        elif maps:
            first = np.nan_to_num(next(iter(maps.values())), nan=-np.inf)
            point = tuple(int(v) for v in np.unravel_index(np.argmax(first), shape))
    point = _point(point, shape)
    figure, axes = subplots(1 + len(maps), 3, squeeze=False,
                            figsize=(3 * PANEL_INCHES, (1 + len(maps)) * PANEL_INCHES))
    grey = _grey_range(volume)
    _draw_sections(axes[0], volume, point, mask, None, spacing, grey,
                   "input" if mask is None else "input + prediction")
    drawn = None
    for row, (name, saliency) in zip(axes[1:], maps.items()):
        drawn = _draw_sections(row, volume, point, mask, normalize_map(saliency), spacing, grey,
                               name)
    if drawn is not None:
        figure.colorbar(drawn, ax=list(axes[1:].flat), fraction=0.02, pad=0.01)
    figure.suptitle(title or f"sections through (z, y, x) = {point}")
    return figure


# ---------------------------------------------------------------------------------------------
# volumes
# ---------------------------------------------------------------------------------------------

_VOLUME = "a volume (D, H, W), (C, D, H, W) or (1, C, D, H, W)"


def _volume(value, name: str, *, channels: bool = True) -> np.ndarray:
    """``value`` as a float32 (D, H, W) volume: its first channel when ``channels``, else a
    single map with leading axes of length 1 dropped."""
    array = as_array(value, name)
    while array.ndim > 3 and (channels or array.shape[0] == 1):
        array = array[0]
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(f"{name}: expected {_VOLUME if channels else 'a map (D, H, W)'}, got "
                         f"shape {np.shape(value)}")
    return array.astype(np.float32, copy=False)


def _mask(value, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as a bool (D, H, W) mask of ``shape`` (leading axes of length 1 dropped)."""
    array = as_array(value, name)
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.shape != tuple(shape):
        raise ValueError(f"{name}: expected the volume's shape {tuple(shape)}, got "
                         f"{np.shape(value)}")
    return array != 0


def _spacing(spacing) -> tuple[float, float, float]:
    """``spacing`` as three positive voxel sizes (dz, dy, dx); None or one number: isotropic."""
    checked = check_spacing(spacing, 3) or (1.0,)
    return checked * 3 if len(checked) == 1 else checked


def _point(point, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``point`` checked: three ints inside ``shape``; None is the centre."""
    if point is None:
        return tuple(size // 2 for size in shape)
    values = tuple(point) if isinstance(point, (tuple, list, np.ndarray)) else None
    if values is None or len(values) != 3 or not all(is_int(v) for v in values):
        raise ValueError(f"point: expected three ints (z, y, x), got {shown(point)}")
    if not all(0 <= v < size for v, size in zip(values, shape)):
        raise ValueError(f"point: expected (z, y, x) inside the volume's shape {tuple(shape)}, "
                         f"got {tuple(int(v) for v in values)}")
    return tuple(int(v) for v in values)


def _grey_range(volume: np.ndarray) -> tuple[float, float]:
    """One grey scale for every section: the volume's finite minimum and maximum."""
    finite = volume[np.isfinite(volume)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)


def montage_slices(depth: int, mask=None, n_slices: int = 9) -> np.ndarray:
    """The axial slices a montage shows: evenly spread over the slices that hold the mask.

    Parameters
    ----------
    depth : int
        D, the number of axial slices.
    mask : array (D, H, W), optional
        The target; without it, or when it is empty, the slices spread over the whole volume.
    n_slices : int, default 9
        Most slices (fewer when fewer slices hold the mask).

    Returns
    -------
    ndarray of int, ascending
        Slice indices z; with a non-empty mask, every one holds a voxel of it, the first and
        the last of them included.
    """
    depth = check_positive(depth, "depth")
    n_slices = check_positive(n_slices, "n_slices")
    candidates = np.arange(depth)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.ndim != 3 or mask.shape[0] != depth:
            raise ValueError(f"mask: expected a (D, H, W) mask with D = {depth}, got shape "
                             f"{mask.shape}")
        holding = np.flatnonzero(mask.any(axis=(1, 2)))
        if holding.size:
            candidates = holding
    positions = np.linspace(0, candidates.size - 1, min(n_slices, candidates.size))
    return np.unique(candidates[np.round(positions).astype(int)])


def target_point(mask, spacing=None) -> tuple[int, int, int]:
    """The voxel of ``mask`` nearest its centroid (physical distance with ``spacing``): inside
    the target even when the centroid is not (a shell, a crescent), so that all three
    orthogonal sections through it cut the target.

    Parameters
    ----------
    mask : array (D, H, W)
        Non-zero means inside; must hold at least one voxel.
    spacing : three positive floats (dz, dy, dx), optional

    Returns
    -------
    tuple of three ints (z, y, x)
    """
    mask = as_array(mask, "mask", ndim=3, expected="a mask (D, H, W)") != 0
    voxels = np.argwhere(mask)
    if voxels.size == 0:
        raise ValueError("mask: expected at least one voxel, got an empty mask")
    scale = np.asarray(_spacing(spacing))
    physical = voxels * scale
    distance = ((physical - physical.mean(axis=0)) ** 2).sum(axis=1)
    return tuple(int(v) for v in voxels[np.argmin(distance)])


def _sections(volume: np.ndarray, point) -> list[np.ndarray]:
    """The axial (y, x), coronal (z, x) and sagittal (z, y) sections through ``point``."""
    z, y, x = point
    return [volume[z], volume[:, y], volume[:, :, x]]


def _draw_section(axis, section, aspect: float, grey, mask=None, overlay=None):
    """One section: grey image, the overlay in "jet" and the mask's outline in lime; returns
    what was drawn last (for a colour bar)."""
    drawn = axis.imshow(section, cmap="gray", vmin=grey[0], vmax=grey[1], aspect=aspect,
                        interpolation="nearest")
    if overlay is not None:
        drawn = axis.imshow(overlay, cmap="jet", alpha=0.5, vmin=0, vmax=1, aspect=aspect,
                            interpolation="nearest")
    if mask is not None and mask.any() and not mask.all():
        axis.contour(mask.astype(float), levels=[0.5], colors="lime", linewidths=1)
    axis.set_axis_off()
    return drawn


def _draw_sections(axes, volume, point, mask, overlay, spacing, grey, name: str):
    """The three orthogonal sections through ``point`` in ``axes`` (3), dashed crosshairs at
    the point; returns what was drawn last."""
    dz, dy, dx = spacing
    z, y, x = point
    masks = [None] * 3 if mask is None else _sections(mask, point)
    overlays = [None] * 3 if overlay is None else _sections(overlay, point)
    views = (("axial", f"z={z}", dy / dx, (y, x)), ("coronal", f"y={y}", dz / dx, (z, x)),
             ("sagittal", f"x={x}", dz / dy, (z, y)))
    drawn = None
    for axis, (view, fixed, aspect, (row, column)), section, part, cover in zip(
            axes, views, _sections(volume, point), masks, overlays):
        drawn = _draw_section(axis, section, aspect, grey, part, cover)
        axis.axhline(row, color="white", linewidth=0.5, alpha=0.5, linestyle="--")
        axis.axvline(column, color="white", linewidth=0.5, alpha=0.5, linestyle="--")
        axis.set_title(f"{name}\n{view} {fixed}", fontsize=9)
    return drawn


def orthogonal_views(volume, point=None, mask=None, overlay=None, *, spacing=None,
                     title: str | None = None) -> Figure:
    """Axial, coronal and sagittal sections of a volume through one voxel.

    Parameters
    ----------
    volume : array (D, H, W), (C, D, H, W) or (1, C, D, H, W)
        The image (first channel shown, one grey scale for all three sections).
    point : three ints (z, y, x), optional
        The voxel the sections pass through (marked by dashed crosshairs). Default: the
        mask's :func:`target_point` (its centroid, moved to the nearest voxel of the mask),
        or the centre of the volume without a mask.
    mask : array (D, H, W), optional
        The target, outlined in lime.
    overlay : array (D, H, W), optional
        A map (saliency) drawn over the image with the "jet" colour map, min-max normalised
        over the whole volume, with a colour bar.
    spacing : three positive floats (dz, dy, dx), optional
        Voxel size: each section is drawn with its true aspect ratio. Default isotropic.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        One row of three panels, each titled with its view and the fixed coordinate.

    Raises
    ------
    ValueError
        For arrays of the wrong shape, a point outside the volume, a bad spacing.
    """
    volume, mask, overlay, spacing = _volume_arguments(volume, mask, overlay, spacing)
    shape = volume.shape
    if point is None and mask is not None and mask.any():
        point = target_point(mask, spacing)
    point = _point(point, shape)
    figure, axes = subplots(1, 3, squeeze=False, figsize=(3 * PANEL_INCHES, PANEL_INCHES + 0.4))
    drawn = _draw_sections(axes[0], volume, point, mask, overlay, spacing, _grey_range(volume),
                           "volume" if overlay is None else "overlay")
    if overlay is not None:
        figure.colorbar(drawn, ax=list(axes[0]), fraction=0.02, pad=0.01)
    if title:
        figure.suptitle(title)
    return figure


def _volume_arguments(volume, mask, overlay, spacing) -> tuple:
    """The arguments of the volume figures checked: the volume (D, H, W), the mask and the
    min-max normalised overlay of its shape (or None), and the spacing (dz, dy, dx)."""
    volume = _volume(volume, "volume")
    shape = volume.shape
    mask = None if mask is None else _mask(mask, "mask", shape)
    overlay = None if overlay is None else normalize_map(_volume(overlay, "overlay",
                                                                 channels=False))
    if overlay is not None and overlay.shape != shape:
        raise ValueError(f"overlay: expected the volume's shape {shape}, got {overlay.shape}")
    return volume, mask, overlay, _spacing(spacing)


def volume_montage(volume, mask=None, n_slices: int = 9, *, overlay=None,
                   columns: int | None = None, spacing=None, title: str | None = None) -> Figure:
    """A montage of axial slices of a volume through the target.

    Parameters
    ----------
    volume : array (D, H, W), (C, D, H, W) or (1, C, D, H, W)
        The image (first channel shown, one grey scale for every slice).
    mask : array (D, H, W), optional
        The target: the slices are chosen among those that hold it
        (:func:`montage_slices`), and it is outlined in lime.
    n_slices : int, default 9
        Most slices shown.
    overlay : array (D, H, W), optional
        A map drawn over each slice ("jet", min-max normalised over the whole volume).
    columns : int, optional
        Slices per row; default ``ceil(sqrt(count))``.
    spacing : three positive floats (dz, dy, dx), optional
        Voxel size; only dy / dx matters here (the slices' aspect ratio).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Each panel titled ``z=<index>``.

    Raises
    ------
    ValueError
        For arrays of the wrong shape, a bad ``n_slices``, ``columns`` or spacing.
    """
    volume, mask, overlay, spacing = _volume_arguments(volume, mask, overlay, spacing)
    shape = volume.shape
    chosen = montage_slices(shape[0], mask, n_slices)
    columns = math.ceil(math.sqrt(chosen.size)) if columns is None else \
        check_positive(columns, "columns")
    columns = min(columns, chosen.size)
    rows = math.ceil(chosen.size / columns)
    figure, axes = subplots(rows, columns, squeeze=False,
                            figsize=(columns * PANEL_INCHES, rows * PANEL_INCHES))
    grey = _grey_range(volume)
    drawn = None
    for axis, z in zip(axes.flat, chosen):
        drawn = _draw_section(axis, volume[z], spacing[1] / spacing[2], grey,
                              None if mask is None else mask[z],
                              None if overlay is None else overlay[z])
        axis.set_title(f"z={z}", fontsize=9)
    for axis in list(axes.flat)[chosen.size:]:
        axis.set_axis_off()
    if overlay is not None:
        figure.colorbar(drawn, ax=list(axes.flat), fraction=0.02, pad=0.01)
    figure.suptitle(title or f"{chosen.size} of {shape[0]} axial slices")
    return figure


def scatter_figure(x, y, *, xlabel: str, ylabel: str, title: str) -> Figure:
    """One scatter plot (e.g. number of dilations against prediction size, seed 001 sec. 3.2)."""
    figure, axis = subplots(figsize=(5, 4))
    axis.scatter(np.asarray(x, dtype=float), np.asarray(y, dtype=float), s=14, alpha=0.7)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    return figure
