"""Figures: maps over images, saved as PNG. Plotting only; maps are computed elsewhere.

Figures are plain :class:`matplotlib.figure.Figure` objects, drawn by the Agg canvas when saved:
nothing here imports ``matplotlib.pyplot`` or selects a backend, so a user's own plotting
(a notebook's inline backend, say) is left as it was, and no figure is kept alive by pyplot.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..core.io import atomic_write
from .metrics import normalize_map


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


def explanation_figure(image, panels: dict, *, prediction=None, title: str | None = None) -> Figure:
    """A row of panels: the input, optionally the prediction, then each map over the input.

    Parameters
    ----------
    image : array (H, W) or (C, H, W)
        The input (first channel shown, grey).
    panels : dict name -> array (H, W)
        Maps to overlay; each is min-max normalised and drawn with the "jet" colour map.
    prediction : array (H, W), optional
        Binary prediction, drawn as a contour over the input.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
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
        shown = axis.imshow(normalize_map(saliency), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        axis.set_title(name)
    for axis in axes:
        axis.set_axis_off()
    if panels:
        figure.colorbar(shown, ax=list(axes), fraction=0.02, pad=0.01)
    if title:
        figure.suptitle(title)
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
