"""Figures: maps over images, saved as PNG. Plotting only; maps are computed elsewhere."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..core.io import atomic_write  # noqa: E402
from .metrics import normalize_map  # noqa: E402


def figure_png(figure) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def save_figure(figure, path, overwrite: bool = False) -> Path:
    """Write a matplotlib figure as PNG through a temporary file, then close it."""
    content = figure_png(figure)
    return atomic_write(path, lambda file: file.write(content), overwrite=overwrite)


def explanation_figure(image, panels: dict, *, prediction=None, title: str | None = None):
    """A row of panels: the input, optionally the prediction, then each map over the input.

    Parameters
    ----------
    image : array (H, W) or (C, H, W)
        The input (first channel shown, grey).
    panels : dict name -> array (H, W)
        Maps to overlay; each is min-max normalised and drawn with the "jet" colour map.
    prediction : array (H, W), optional
        Binary prediction, drawn as a contour over the input.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[0]
    count = 1 + len(panels)
    figure, axes = plt.subplots(1, count, figsize=(3.2 * count, 3.4))
    axes = np.atleast_1d(axes)
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


def scatter_figure(x, y, *, xlabel: str, ylabel: str, title: str):
    """One scatter plot (e.g. number of dilations against prediction size, seed 001 sec. 3.2)."""
    figure, axis = plt.subplots(figsize=(5, 4))
    axis.scatter(np.asarray(x, dtype=float), np.asarray(y, dtype=float), s=14, alpha=0.7)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    return figure
