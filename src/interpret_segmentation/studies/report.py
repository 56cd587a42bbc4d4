"""The browsable report of a data-set run: one self-contained HTML page, ``report.html``.

:func:`write_report` reads a run directory as the data-set runner writes it
(:func:`~interpret_segmentation.studies.runner.explain_dataset`): ``rows.csv``,
``items/<key>/image.npy`` (and ``mask.npy``), ``items/<key>/<run>[_class<k>].npz`` + ``.json``
(each :class:`~interpret_segmentation.core.explanation.Explanation`) and the manifest's
settings. The page needs nothing but a browser: no network, its pictures embedded as PNG
data URIs, plain HTML and CSS and a little JavaScript. It holds

- the summary table (per method run and threshold: Dice explained and perturbation ratio,
  seed 001's Table 1, seconds per item, context hit rate where context masks exist), sorted
  by a click on a column's header;
- a grid of items: the input (with the ground truth's outline when there is a mask), the
  prediction (the explanation's ``target_pixels``) and each method's map over the input,
  filtered by method and by key, sorted by any score;
- a larger view of an item on a click: all maps, its rows, each explanation's parameters, and
  for volumes a slider through up to :data:`VOLUME_SLICES` axial slices across the target;
- the failed explanations with their messages, and the run's settings.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image
from scipy import ndimage

from ..analysis.figures import montage_slices, target_point
from ..core.explanation import Explanation, normalize_map
from ..core.io import MANIFEST, OutputDirectory, atomic_write, read_own
from ..core.validate import check_int, check_positive
from ..datasets.sources import safe_key
from ..methods import registry
from .tables import summarize_rows
from .work import explanation_name

PICTURE_SIZE = 320
"""Longest side of an embedded picture, in pixels: larger images are scaled down, smaller ones
embedded as they are and enlarged by the browser (pixel by pixel)."""

VOLUME_SLICES = 16
"""Most axial slices a volume's larger view embeds per map (evenly spaced through the target)."""

GENERATOR = "interpret-segmentation report"
"""The page's ``<meta name="generator">``: a ``report.html`` without it is not replaced."""

_PREDICTION = np.array([0.20, 0.85, 0.25])  # lime: the prediction (fill and outline)
_TRUTH = np.array([1.00, 0.85, 0.10])  # amber: the ground truth's outline


@dataclass
class _Column:
    """One map per item: a method run explaining one class."""

    index: int
    run: int  # index of the method run (the filter acts on runs)
    name: str  # the run's name (rows' "method")
    class_text: str  # rows' "class_index": "" for the default class
    label: str


@dataclass
class _Item:
    key: str
    rows: list[dict] = field(default_factory=list)


def write_report(run_dir, title: str | None = None, output: OutputDirectory | None = None, *,
                 rows_name: str = "rows.csv", max_items: int | None = 200,
                 max_megabytes: float = 64.0) -> Path:
    """Write ``run_dir/report.html``, the browsable page of a data-set run.

    Parameters
    ----------
    run_dir : path
        A directory the data-set runner wrote: ``rows_name`` (its rows), ``items/<key>/``
        (``image.npy``, optional ``mask.npy``, each explanation) and the manifest.
    title : str, optional
        The page's heading; default "Explanations: <directory name>".
    output : OutputDirectory, optional
        The run's open output directory: the page's path comes from ``output.file``, which
        records it as the command's own. Without it, an existing ``report.html`` is replaced
        only when this function wrote it (FileExistsError otherwise).
    rows_name : str, default "rows.csv"
    max_items : int or None, default 200
        Most items in the grid (in key order; None: all), to keep the page's size sane: each
        item embeds a picture per map (and up to :data:`VOLUME_SLICES` per map for volumes).
        The summary table and the list of errors cover every row.
    max_megabytes : float, default 64
        The grid stops taking items once its pictures pass this size (volumes' slices add
        up), so that a browser opens the page quickly.

    Returns
    -------
    Path of the page.

    Raises
    ------
    ValueError
        When ``run_dir`` is not a directory holding ``rows_name`` with the runner's columns.
    FileExistsError
        Without ``output``, for a ``report.html`` this function did not write.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run_dir: expected a directory written by explain_dataset, got {run_dir}")
    if max_items is not None:
        max_items = check_int(max_items, "max_items", minimum=0)
    max_megabytes = check_positive(max_megabytes, "max_megabytes", kind=float)
    rows = _read_rows(run_dir / rows_name)
    page = _page(run_dir, rows, title, max_items, max_megabytes * 2**20)
    if output is not None:
        target = output.file("report.html")
    else:
        target = run_dir / "report.html"
        _check_replaceable(target)
    return atomic_write(target, lambda file: file.write(page.encode()), overwrite=True)


# -- reading the run ------------------------------------------------------------------------------

def _read_rows(path: Path) -> list[dict]:
    content = read_own(path)
    if content is None:
        raise ValueError(f"run_dir: expected the rows of a data-set run, {path} not found")
    reader = csv.DictReader(io.StringIO(content.decode(errors="replace"), newline=""))
    missing = {"item", "method"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"run_dir: expected {path} to have the runner's columns (item, method, "
                         f"...), got {', '.join(reader.fieldnames or ()) or 'none'}")
    known = ("class_index", "threshold", "dice_explained", "perturbation_ratio", "seconds",
             "context_hit", "prediction_pixels", "prediction_dice", "dilations", "error")
    return [{**dict.fromkeys(known, ""),
             **{key: value or "" for key, value in row.items() if key is not None}}
            for row in reader if None not in row.values()]


def _check_replaceable(path: Path) -> None:
    """Refuse to replace a ``report.html`` that this function did not write."""
    if path.is_symlink() or not path.exists():
        return  # the atomic writer replaces a link, never writes through it
    with open(path, "rb") as file:
        head = file.read(2048).decode(errors="replace")
    if f'<meta name="generator" content="{GENERATOR}">' not in head:
        raise FileExistsError(f"{path} exists and was not written by write_report; move it away "
                              "or pass the run's OutputDirectory")


def _settings(run_dir: Path, rows_name: str = "rows.csv") -> dict:
    """The settings of the manifest's command that wrote the rows (the first with settings
    otherwise); {} without a readable manifest."""
    try:
        manifest = json.loads(read_own(run_dir / MANIFEST) or b"{}")
        sections = [s for s in manifest.get("commands", {}).values() if isinstance(s, dict)]
    except (ValueError, AttributeError):
        return {}
    sections = [s for s in sections if isinstance(s.get("settings"), dict)]
    sections.sort(key=lambda s: rows_name not in s.get("files", ()))
    return sections[0]["settings"] if sections else {}


def _natural(text: str) -> list:
    """Sort key reading digit runs as numbers (``img2`` before ``img10``)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _columns(rows: list[dict], settings: dict) -> list[_Column]:
    """The map columns: method runs in the manifest's order (then the rows'), each class."""
    runs = list(settings.get("methods") or {}) if isinstance(settings.get("methods"), dict) else []
    runs = [r for r in runs if any(row["method"] == r for row in rows)]
    runs += [r for r in dict.fromkeys(row["method"] for row in rows) if r not in runs]
    classes = sorted({row.get("class_index", "") for row in rows},
                     key=lambda c: (c != "", _natural(c)))
    several = len(classes) > 1
    columns = []
    for run_index, run in enumerate(runs):
        for class_text in classes:
            if any(row["method"] == run and row.get("class_index", "") == class_text
                   for row in rows):
                label = run if not several else f"{run} · class {class_text or 1}"
                columns.append(_Column(len(columns), run_index, run, class_text, label))
    return columns


def _explanation_path(folder: Path, run: str, class_text: str) -> Path | None:
    """``<run>.npz`` or ``<run>_class<k>.npz`` in ``folder`` (the runner's file names); None
    for a class the runner does not write."""
    try:
        class_index = None if class_text == "" else int(class_text)
    except ValueError:
        return None
    return folder / f"{explanation_name(run, class_index)}.npz"


def _load(path: Path):
    """An array or an Explanation at ``path``; None when absent, the error's text when it
    cannot be read."""
    if path.is_symlink() or not path.exists():
        return None
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        return Explanation.load(path)
    except (OSError, ValueError, KeyError) as error:
        return f"{path.name}: {type(error).__name__}: {error}"


# -- pictures -------------------------------------------------------------------------------------

_JET = (colormaps["jet"](np.linspace(0, 1, 256))[:, :3]).astype(np.float32)


def _resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (h, w) float array resized to ``size`` (w, h), smoothing while it shrinks."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(array, np.float32), mode="F")
                      .resize(size, Image.Resampling.BILINEAR))


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _picture(base: np.ndarray, overlay=None, fill=None, outline=None,
             outline_colour=_PREDICTION) -> str:
    """A PNG data URI: ``base`` (h, w) grey or (h, w, 3) colour in [0, 1], optionally an
    ``overlay`` (h, w) in [0, 1] in "jet" at half opacity, a ``fill`` mask tinted lime and an
    ``outline`` mask's border; at most :data:`PICTURE_SIZE` pixels a side."""
    height, width = base.shape[:2]
    scale = min(1.0, PICTURE_SIZE / max(height, width))
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if base.ndim == 3:
            base = np.stack([_resize(base[..., c], size) for c in range(3)], axis=-1)
        else:
            base = _resize(base, size)
        if overlay is not None:
            overlay = _resize(overlay, size)
        fill = None if fill is None else _resize(fill.astype(np.float32), size) >= 0.5
        outline = None if outline is None else _resize(outline.astype(np.float32), size) >= 0.5
    rgb = np.repeat(base[..., None], 3, axis=-1) if base.ndim == 2 else base.copy()
    if overlay is not None:
        colours = _JET[np.clip(np.nan_to_num(overlay) * 255, 0, 255).astype(np.intp)]
        rgb = 0.5 * rgb + 0.5 * colours
    if fill is not None and fill.any():
        rgb[fill] = 0.55 * rgb[fill] + 0.45 * _PREDICTION
    if outline is not None and outline.any():
        rgb[_outline(outline)] = outline_colour
    picture = Image.fromarray(np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    if picture.getcolors(256) is None:  # a palette of 256 colours: a third of the bytes
        picture = picture.quantize(256, method=Image.Quantize.FASTOCTREE)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _base(image, shape: tuple[int, ...]) -> np.ndarray:
    """The input as shown under the maps: the first channel (RGB for a 3-channel image),
    scaled to [0, 1] over the whole image or volume; black when it does not fit ``shape``."""
    if not isinstance(image, np.ndarray):
        return np.zeros(shape, np.float32)
    image = np.asarray(image, dtype=np.float32)
    dims = len(shape)
    if image.ndim == dims + 1 and dims == 2 and image.shape[0] == 3:
        image = np.moveaxis(image, 0, -1)
        fits = image.shape[:2] == shape
    else:
        if image.ndim == dims + 1:
            image = image[0]
        fits = image.shape == shape
    return normalize_map(image).astype(np.float32) if fits else np.zeros(shape, np.float32)


# -- the page -------------------------------------------------------------------------------------

def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _format(value, kind: str = "") -> str:
    """A cell's text: "int" whole; else 3 decimals below 10, one below 1000, none above."""
    number = _number(value)
    if number is None:
        return "" if value in (None, "") else str(value)
    if kind == "int" and number.is_integer():
        return f"{number:.0f}"
    if abs(number) < 10:
        return f"{number:.3f}"
    return f"{number:.1f}" if abs(number) < 1000 else f"{number:,.0f}"


def _cell(value, kind: str = "", missing: str = "") -> str:
    number = _number(value)
    data = "" if number is None else repr(number)
    text = _format(value, kind) or missing
    return f'<td class="num" data-value="{data}">{_e(text)}</td>'


def _summary(rows: list[dict], settings: dict, columns: list[_Column]) -> str:
    good = [row for row in rows if not row["error"]]
    dataset = (settings.get("dataset") or {}).get("kind", "data") \
        if isinstance(settings.get("dataset"), dict) else "data"
    table = summarize_rows(good, dataset, "model") if good else []
    runs = {column.name: column.run for column in columns}
    hit = any(entry["context_hit_rate"] is not None for entry in table)
    heads = [("method", "text"), ("threshold", "text"), ("Dice explained", "num"),
             ("perturbation ratio", "num"), ("seconds per item", "num")]
    heads += [("context hit rate", "num")] if hit else []
    heads += [("items", "num")]
    lines = ['<table id="summary" class="sortable"><thead><tr>']
    lines += [f'<th class="{kind}" scope="col"><button type="button">{_e(name)}</button></th>'
              for name, kind in heads]
    lines.append("</tr></thead><tbody>")
    for entry in table:
        cells = [f'<td data-value="{_e(entry["method"])}">{_e(entry["method"])}</td>',
                 f'<td data-value="{_e(entry["threshold"])}">{_e(entry["threshold"])}</td>',
                 _cell(entry["dice_explained"], "unit", "–"),
                 _cell(entry["perturbation_ratio"], "", "–"),
                 _cell(entry["seconds_per_image"], "seconds", "–")]
        cells += [_cell(entry["context_hit_rate"], "unit", "–")] if hit else []
        cells += [_cell(entry["images"], "int")]
        lines.append(f'<tr data-run="{runs.get(entry["method"], "")}">{"".join(cells)}</tr>')
    lines.append("</tbody></table>")
    if not table:
        lines.append('<p class="note">No explanation finished without an error.</p>')
    return "\n".join(lines)


def _threshold_text(threshold: str) -> str:
    return {"": "", "msr": " (MSR)"}.get(threshold, f" @{threshold}")


def _score_keys(rows: list[dict], columns: list[_Column]) -> list[tuple[str, str]]:
    """(key, label) of every score the grid sorts by; a key is "field|column|threshold"."""
    keys = []
    for column in columns:
        mine = [row for row in rows if row["method"] == column.name
                and row.get("class_index", "") == column.class_text and not row.get("error")]
        for threshold in dict.fromkeys(row.get("threshold", "") for row in mine):
            for name, label in (("dice_explained", "Dice explained"),
                                ("perturbation_ratio", "perturbation ratio")):
                if any(_number(row.get(name)) is not None for row in mine
                       if row.get("threshold", "") == threshold):
                    keys.append((f"{name}|{column.index}|{threshold}",
                                 f"{column.label}: {label}{_threshold_text(threshold)}"))
        if any(_number(row.get("seconds")) is not None for row in mine):
            keys.append((f"seconds|{column.index}|", f"{column.label}: seconds"))
    several = len({column.class_text for column in columns}) > 1
    for class_text in dict.fromkeys(column.class_text for column in columns):
        if any(_number(row.get("prediction_dice")) is not None for row in rows
               if row.get("class_index", "") == class_text):
            keys.append((f"prediction_dice||{class_text}", "prediction Dice (ground truth)"
                         + (f" · class {class_text or 1}" if several else "")))
    return keys


def _item_scores(item: _Item, columns: list[_Column], keys: list[tuple[str, str]]) -> dict:
    scores = {}
    by_column = {(c.name, c.class_text): c.index for c in columns}
    for row in item.rows:
        if row.get("error"):
            continue
        index = by_column.get((row["method"], row.get("class_index", "")))
        for name in ("dice_explained", "perturbation_ratio", "seconds"):
            number = _number(row.get(name))
            threshold = "" if name == "seconds" else row.get("threshold", "")
            if number is not None and index is not None:
                scores[f"{name}|{index}|{threshold}"] = number
        number = _number(row.get("prediction_dice"))
        if number is not None:
            scores[f"prediction_dice||{row.get('class_index', '')}"] = number
    known = {key for key, _ in keys}
    return {key: value for key, value in scores.items() if key in known}


def _rows_table(rows: list[dict]) -> str:
    """An item's rows; the class, context hit, prediction Dice and dilations columns only
    where some row has a value."""
    names = {"method": "method", "class_index": "class", "threshold": "threshold",
             "dice_explained": "Dice explained", "perturbation_ratio": "perturbation ratio",
             "seconds": "seconds", "context_hit": "context hit",
             "prediction_pixels": "prediction pixels",
             "prediction_dice": "prediction Dice (ground truth)", "dilations": "dilations"}
    optional = ("class_index", "context_hit", "prediction_dice", "dilations")
    fields = [name for name in names
              if name not in optional or any(row.get(name) for row in rows)]
    kinds = {"dice_explained": "unit", "prediction_dice": "unit", "prediction_pixels": "int",
             "dilations": "int"}
    lines = ['<table class="rows"><thead><tr>'
             + "".join(f"<th>{_e(names[name])}</th>" for name in fields) + "</tr></thead><tbody>"]
    for row in rows:
        lead = [f"<td>{_e(row.get(name, ''))}</td>" for name in fields if name in (
            "method", "class_index")]
        if row.get("error"):
            lines.append(f'<tr class="failed">{"".join(lead)}<td colspan="{len(fields) - len(lead)}"'
                         f' class="error">{_e(row["error"])}</td></tr>')
            continue
        cells = lead + [f"<td>{_e(row.get('threshold', ''))}</td>"]
        cells += [f"<td>{_e(row.get(name, ''))}</td>" if name == "context_hit" else
                  _cell(row.get(name, ""), kinds.get(name, ""))
                  for name in fields[len(lead) + 1:]]
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _parameters(explanations: list[tuple[_Column, Explanation]]) -> str:
    if not explanations:
        return ""
    parts = ["<h3>Parameters</h3>", '<div class="params">']
    for column, explanation in explanations:
        entries = [(key, value) for key, value in explanation.parameters.items()]
        entries += [(key, value) for key, value in explanation.info.items()
                    if isinstance(value, (int, float, str, bool))
                    and key not in explanation.parameters]
        cells = "".join(f"<tr><th>{_e(key)}</th><td>{_e(_json(value))}</td></tr>"
                        for key, value in entries)
        parts.append(f'<section data-run="{column.run}"><h4>{_e(column.label)} '
                     f'<span class="muted">({_e(explanation.method)})</span></h4>'
                     f'<table class="kv">{cells}</table></section>')
    parts.append("</div>")
    return "\n".join(parts)


def _json(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 300 else text[:297] + "..."


def _item_explanations(folder: Path, item: _Item, columns: list[_Column],
                       notes: list[str]) -> list[tuple[_Column, Explanation]]:
    """The saved Explanation of each column the item has a row without error for; what could
    not be read goes to ``notes``."""
    loaded = []
    for column in columns:
        if not any(row["method"] == column.name and row.get("class_index", "") ==
                   column.class_text and not row.get("error") for row in item.rows):
            continue
        path = _explanation_path(folder, column.name, column.class_text)
        explanation = None if path is None else _load(path)
        if isinstance(explanation, Explanation):
            loaded.append((column, explanation))
        elif isinstance(explanation, str):
            notes.append(explanation)
    return loaded


def _item_panels(image, mask, loaded: list[tuple[_Column, Explanation]],
                 columns: list[_Column], notes: list[str]) -> tuple:
    """(shape, panels, targets) of an item: the map shape (None when nothing can be drawn);
    panels (run index or "", label, base, overlay, fill, outline, colour), each picture (h, w)
    or (d, h, w) in [0, 1] or None; and the target pixels per class."""
    if loaded:
        shape = loaded[0][1].saliency.shape
    elif isinstance(image, np.ndarray) and image.ndim in (2, 3, 4):
        shape = image.shape[-3:] if image.ndim == 4 else image.shape[-2:]
    else:
        return None, [], {}
    truth = (np.asarray(mask) != 0) if isinstance(mask, np.ndarray) and mask.shape == shape \
        else None
    targets = {}
    for column, explanation in loaded:
        pixels = explanation.arrays.get("target_pixels")
        if pixels is not None and np.shape(pixels) == shape:
            targets.setdefault(column.class_text, np.asarray(pixels) != 0)
    base = _base(image, shape)
    panels = [("", "input" + (" + ground truth" if truth is not None else ""), base, None, None,
               truth, _TRUTH)]
    several = len({c.class_text for c in columns}) > 1
    for class_text, target in targets.items():
        label = "prediction" + (f" · class {class_text or 1}" if several else "")
        panels.append(("", label, base, None, target, None, _PREDICTION))
    for column, explanation in loaded:
        try:
            shown = registry.get(explanation.method).shown_map(explanation)
        except ValueError:  # a method not registered here: its raw map
            shown = explanation.saliency
        shown = np.asarray(shown)
        if shown.shape != shape:
            notes.append(f"{column.label}: map of shape {shown.shape}, expected {shape}")
            continue
        panels.append((str(column.run), column.label, base,
                       normalize_map(shown).astype(np.float32), None,
                       targets.get(column.class_text), _PREDICTION))
    return shape, panels, targets


def _slice_slider(depth: int, target) -> tuple[int, list[int], int, str]:
    """(slice the thumbnails show, slices of the large view, the one shown first, slider
    HTML) of a volume of ``depth`` slices whose target is ``target`` (or None)."""
    holding = target if target is not None and target.any() else None
    z0 = target_point(holding)[0] if holding is not None else depth // 2
    slices = [int(z) for z in montage_slices(depth, holding, VOLUME_SLICES)]
    start = int(np.argmin([abs(z - z0) for z in slices]))
    slider = (f'<div class="slider"><label>axial slice <input type="range" min="0" '
              f'max="{len(slices) - 1}" value="{start}" data-z="{_e(json.dumps(slices))}">'
              f'</label> <output>z = {slices[start]} of {depth}</output></div>')
    return z0, slices, start, slider


def _panel_html(ident: str, panel: tuple, slicing) -> tuple[str, str]:
    """(thumbnail figure, large-view figure) of one panel; ``slicing`` is ``(z0, slices,
    start)`` for a volume, None for an image."""
    run, label, base, overlay, fill, outline, colour = panel
    run_attribute = f' data-run="{run}"' if run != "" else ""
    if slicing is not None:
        z0, slices, start = slicing

        def at(z):
            return _picture(base[z], None if overlay is None else overlay[z],
                            None if fill is None else fill[z],
                            None if outline is None else outline[z], colour)
        thumb = at(z0)
        stack = "".join(f'<img alt="{_e(label)}, slice {z}" data-slice="{i}"'
                        f'{"" if i == start else " hidden"} src="{at(z)}">'
                        for i, z in enumerate(slices))
        view = (f'<figure class="view"{run_attribute}><div class="stack">{stack}</div>'
                f"<figcaption>{_e(label)}</figcaption></figure>")
    else:
        thumb = _picture(base, overlay, fill, outline, colour)
        view = (f'<figure class="view"{run_attribute}><img alt="{_e(label)}" '
                f'data-ref="{ident}"><figcaption>{_e(label)}</figcaption></figure>')
    return (f'<figure class="panel"{run_attribute}><img id="{ident}" alt="{_e(label)}"'
            f' src="{thumb}"><figcaption>{_e(label)}</figcaption></figure>'), view


def _item_html(position: int, item: _Item, run_dir: Path, columns: list[_Column],
               scores: dict) -> str:
    """One card of the grid with its larger view in a ``<template>``."""
    folder = run_dir / "items" / safe_key(item.key)
    image = _load(folder / "image.npy")
    mask = _load(folder / "mask.npy")
    notes = [value for value in (image, mask) if isinstance(value, str)]
    loaded = _item_explanations(folder, item, columns, notes)
    shape, panels, targets = _item_panels(image, mask, loaded, columns, notes)
    volume = shape is not None and len(shape) == 3
    slicing, slider = None, ""
    if volume:
        z0, slices, start, slider = _slice_slider(shape[0], next(iter(targets.values()), None))
        slicing = (z0, slices, start)
    pictures = [_panel_html(f"p{position}-{number}", panel, slicing)
                for number, panel in enumerate(panels)]
    if not panels:
        notes.append("no pictures saved for this item")
    errors = sum(1 for row in item.rows if row.get("error"))
    note_html = "".join(f'<p class="note">{_e(note)}</p>' for note in notes)
    badge = (f'<span class="badge error">{errors} error{"s" if errors != 1 else ""}</span>'
             if errors else "")
    where = (f'<p class="muted">{"volume" if volume else "image"} '
             f'{" × ".join(map(str, shape))}</p>' if shape is not None else "")
    views = "".join(view for _, view in pictures)
    detail = (f"{where}{slider}<div class=\"views\">{views}</div>{note_html}"
              f"<h3>Scores</h3>{_rows_table(item.rows)}{_parameters(loaded)}")
    return (f'<article class="card" tabindex="0" data-position="{position}" '
            f'data-key="{_e(item.key)}" data-scores="{_e(json.dumps(scores))}" '
            'aria-haspopup="dialog">'
            f'<header><span class="key">{_e(item.key)}</span>{badge}'
            f'<span class="score"></span></header>'
            f'<div class="panels">{"".join(thumb for thumb, _ in pictures)}</div>{note_html}'
            f"<template>{detail}</template></article>")


def _errors(rows: list[dict], shown: set[str]) -> str:
    failed = [row for row in rows if row.get("error")]
    if not failed:
        return ""
    lines = [f'<section id="errors"><h2>Failed explanations <span class="count">{len(failed)}'
             '</span></h2><table class="rows"><thead><tr><th>item</th><th>method</th>'
             "<th>class</th><th>error</th></tr></thead><tbody>"]
    for row in failed:
        key = _e(row["item"])
        item = (f'<a href="#" class="open" data-key="{key}">{key}</a>' if row["item"] in shown
                else key)
        lines.append(f"<tr><td>{item}</td><td>{_e(row['method'])}</td>"
                     f"<td>{_e(row.get('class_index', ''))}</td>"
                     f'<td class="error">{_e(row["error"])}</td></tr>')
    lines.append("</tbody></table></section>")
    return "\n".join(lines)


def _page(run_dir: Path, rows: list[dict], title: str | None, max_items: int | None,
          budget: float) -> str:
    settings = _settings(run_dir)
    columns = _columns(rows, settings)
    items: dict[str, _Item] = {}
    for row in rows:
        items.setdefault(row["item"], _Item(row["item"])).rows.append(row)
    ordered = sorted(items.values(), key=lambda item: _natural(item.key))
    keys = _score_keys(rows, columns)
    cards, size = [], 0
    for position, item in enumerate(ordered[:max_items] if max_items is not None else ordered):
        if size > budget:
            break
        cards.append(_item_html(position, item, run_dir, columns,
                                _item_scores(item, columns, keys)))
        size += len(cards[-1])
    shown = ordered[:len(cards)]
    runs = list(dict.fromkeys((column.run, column.name) for column in columns))
    title = title or f"Explanations: {run_dir.resolve().name}"

    methods = settings.get("methods") if isinstance(settings.get("methods"), dict) else {}
    facts = [f"{len(items)} item{'s' if len(items) != 1 else ''}",
             f"{len(rows)} row{'s' if len(rows) != 1 else ''}"]
    if settings.get("model"):
        facts.append(f"model {settings['model']}")
    dataset = settings.get("dataset") if isinstance(settings.get("dataset"), dict) else {}
    if dataset:
        facts.append("data " + " ".join(str(dataset[k]) for k in ("kind", "images", "dataset")
                                        if dataset.get(k)))
    run_names = []
    for _, name in runs:
        method = (methods.get(name) or {}).get("method", name)
        try:
            described = registry.get(method).title
        except ValueError:
            described = method
        run_names.append(name if described == name else f"{name} ({described})")
    filters = "".join(f'<label><input type="checkbox" class="run-filter" value="{run}" checked>'
                      f" {_e(name)}</label>" for run, name in runs)
    options = '<option value="item">item key</option>' + "".join(
        f'<option value="{_e(key)}">{_e(label)}</option>' for key, label in keys)
    hidden = "\n".join(f'.hide-run-{run} [data-run="{run}"] {{ display: none; }}'
                       for run, _ in runs)
    why = ("max_items" if max_items is not None and len(shown) == max_items
           else f"a page size of {budget / 2**20:g} MB")
    capped = (f'<p class="note">The grid shows the first {len(shown)} of {len(ordered)} items '
              f"(in key order; {why}); the table and the errors cover all of them.</p>"
              if len(shown) < len(ordered) else "")
    gradient = ", ".join(f"rgb({r * 255:.0f},{g * 255:.0f},{b * 255:.0f}) {i / 8:.1%}"
                         for i, (r, g, b) in enumerate(_JET[::32].tolist() + [_JET[-1].tolist()]))
    settings_text = json.dumps(settings, indent=1, default=str)
    return _TEMPLATE.format(
        generator=_e(GENERATOR), title=_e(title), style=_STYLE + hidden, facts=_e(" · ".join(facts)),
        methods=_e(", ".join(run_names)), summary=_summary(rows, settings, columns),
        filters=filters, options=options, count=len(shown), capped=capped,
        cards="\n".join(cards), errors=_errors(rows, {item.key for item in shown}),
        settings=_e(settings_text), script=_SCRIPT, gradient=gradient)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{generator}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>
{style}
</style>
</head>
<body>
<header class="top">
<h1>{title}</h1>
<p class="muted">{facts}</p>
<p class="muted">methods: {methods}</p>
</header>
<main>
<section id="table-section">
<h2>Summary</h2>
<p class="muted">Means over the items, per method and threshold (seed 001, Table 1). Click a
column's header to sort.</p>
{summary}
</section>
<section id="items-section">
<h2>Items <span class="count" id="shown-count">{count}</span></h2>
<div class="toolbar">
<fieldset><legend>methods</legend>{filters}</fieldset>
<label>sort by <select id="sort-key">{options}</select></label>
<button type="button" id="sort-direction" data-ascending="true">ascending</button>
<label>find <input type="search" id="find" placeholder="item key"></label>
<span class="legend"><span class="swatch truth"></span>ground truth
<span class="swatch prediction"></span>prediction
<span class="bar" style="background: linear-gradient(to right, {gradient})"></span>
map low → high</span>
</div>
{capped}
<div id="grid">
{cards}
</div>
</section>
{errors}
<details id="settings"><summary>Run settings</summary><pre>{settings}</pre></details>
</main>
<dialog id="detail" aria-labelledby="detail-title">
<header><h2 id="detail-title"></h2>
<span class="nav"><button type="button" id="previous" title="previous item (←)">←</button>
<button type="button" id="next" title="next item (→)">→</button>
<button type="button" id="close" title="close (Esc)">✕</button></span></header>
<div id="detail-body"></div>
</dialog>
<script>
{script}
</script>
</body>
</html>
"""

_STYLE = """
:root { --fg: #1d2330; --muted: #5d6677; --line: #dfe3ea; --bg: #f6f7f9; --card: #fff;
  --accent: #2f6fde; --error: #b42318; font-family: system-ui, -apple-system, "Segoe UI",
  Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg); background: var(--bg); }
body { margin: 0; font-size: 14px; line-height: 1.45; }
header.top { padding: 18px 28px 8px; background: var(--card); border-bottom: 1px solid var(--line); }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 24px 0 8px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
h4 { font-size: 13px; margin: 0 0 4px; }
main { padding: 0 28px 40px; }
.muted { color: var(--muted); margin: 2px 0; }
.note { color: var(--muted); font-style: italic; margin: 4px 0; }
.count { display: inline-block; min-width: 20px; padding: 0 7px; border-radius: 10px;
  background: var(--line); font-size: 12px; text-align: center; vertical-align: 2px; }
table { border-collapse: collapse; background: var(--card); font-variant-numeric: tabular-nums; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; }
td.num, th.num { text-align: right; }
#summary th { padding: 0; }
#summary th button { all: unset; cursor: pointer; display: block; padding: 7px 10px;
  font-weight: 600; }
#summary th.num button { text-align: right; }
#summary th button:focus-visible { outline: 2px solid var(--accent); }
#summary th[aria-sort="ascending"] button::after { content: " ▲"; color: var(--accent); }
#summary th[aria-sort="descending"] button::after { content: " ▼"; color: var(--accent); }
#summary tbody tr:hover, table.rows tbody tr:hover { background: #f0f4fc; }
.toolbar { display: flex; flex-wrap: wrap; gap: 10px 18px; align-items: center;
  margin-bottom: 12px; }
.toolbar fieldset { border: 1px solid var(--line); border-radius: 6px; padding: 2px 10px 4px;
  margin: 0; background: var(--card); }
.toolbar fieldset label { margin-right: 10px; }
.toolbar legend { color: var(--muted); font-size: 12px; padding: 0 4px; }
select, input[type=search], button { font: inherit; }
button { border: 1px solid var(--line); background: var(--card); border-radius: 5px;
  padding: 2px 10px; cursor: pointer; }
.legend { color: var(--muted); font-size: 12px; display: inline-flex; align-items: center;
  gap: 5px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-left: 6px; }
.swatch.truth { border: 2px solid rgb(255,217,26); }
.swatch.prediction { background: rgb(51,217,64); }
.bar { display: inline-block; width: 90px; height: 10px; border-radius: 2px; margin-left: 8px; }
#grid { display: flex; flex-wrap: wrap; gap: 14px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 8px 10px 6px; cursor: pointer; transition: box-shadow .15s; }
.card:hover, .card:focus-visible { box-shadow: 0 2px 10px rgba(20,40,80,.15);
  border-color: #b9c6dc; outline: none; }
.card[hidden] { display: none; }
.card header { display: flex; gap: 8px; align-items: baseline; margin-bottom: 6px; }
.card .key { font-weight: 600; overflow-wrap: anywhere; }
.card .score { margin-left: auto; color: var(--accent); font-variant-numeric: tabular-nums; }
.badge.error { background: #fde8e6; color: var(--error); border-radius: 9px; padding: 0 7px;
  font-size: 12px; }
.panels { display: flex; gap: 6px; }
figure { margin: 0; }
.panel img { width: 128px; height: 128px; object-fit: contain; background: #000;
  image-rendering: pixelated; display: block; border-radius: 3px; }
figcaption { font-size: 12px; color: var(--muted); text-align: center; max-width: 128px;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
td.error, .error { color: var(--error); overflow-wrap: anywhere; }
tr.failed td { background: #fff6f5; }
dialog { border: none; border-radius: 10px; padding: 0; width: min(1200px, 94vw);
  max-height: 92vh; box-shadow: 0 10px 40px rgba(0,0,0,.35); }
dialog::backdrop { background: rgba(15,20,30,.55); }
dialog > header { display: flex; align-items: center; gap: 12px; padding: 10px 18px;
  border-bottom: 1px solid var(--line); position: sticky; top: 0; background: var(--card);
  z-index: 1; }
dialog > header h2 { margin: 0; font-size: 18px; overflow-wrap: anywhere; }
dialog .nav { margin-left: auto; display: flex; gap: 6px; }
#detail-body { padding: 4px 18px 18px; }
.views { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr));
  gap: 12px; max-width: 1400px; }
.view img { width: 100%; aspect-ratio: 1; object-fit: contain; background: #000;
  image-rendering: pixelated; display: block; border-radius: 4px; }
.view figcaption { max-width: none; font-size: 13px; }
.stack img[hidden] { display: none; }
.slider { margin: 8px 0 10px; display: flex; gap: 10px; align-items: center; }
.slider input { width: 260px; vertical-align: middle; }
.params { display: flex; flex-wrap: wrap; gap: 12px; }
.params section { border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; }
table.kv th { font-weight: 500; color: var(--muted); padding: 2px 10px 2px 0; }
table.kv td { padding: 2px 0; font-family: ui-monospace, monospace; font-size: 12px; }
table.rows { font-size: 13px; }
#settings { margin-top: 24px; }
#settings pre { background: var(--card); border: 1px solid var(--line); padding: 10px;
  overflow: auto; max-height: 400px; font-size: 12px; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  const collator = new Intl.Collator(undefined, {numeric: true, sensitivity: "base"});
  const grid = document.getElementById("grid");
  const cards = Array.from(grid.querySelectorAll(".card"));
  const dialog = document.getElementById("detail");
  const body = document.getElementById("detail-body");
  let current = null;

  function value(text) {
    if (text === undefined || text === null || text === "") return null;
    const number = Number(text);
    return Number.isFinite(number) ? number : text;
  }
  function compare(a, b, ascending) {
    if (a === null && b === null) return 0;
    if (a === null) return 1;  // missing values last, either way
    if (b === null) return -1;
    const order = (typeof a === "number" && typeof b === "number") ? a - b
      : collator.compare(String(a), String(b));
    return ascending ? order : -order;
  }

  // the summary table: a click on a header sorts by its column, again reverses
  document.querySelectorAll("table.sortable").forEach(function (table) {
    const heads = Array.from(table.tHead.rows[0].cells);
    heads.forEach(function (head, column) {
      head.querySelector("button").addEventListener("click", function () {
        const ascending = head.getAttribute("aria-sort") !== "ascending";
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        head.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        const rows = Array.from(table.tBodies[0].rows);
        rows.sort(function (x, y) {
          return compare(value(x.cells[column].dataset.value),
                         value(y.cells[column].dataset.value), ascending);
        });
        rows.forEach(function (row) { table.tBodies[0].appendChild(row); });
      });
    });
  });

  // the grid: sort by a score, filter by method and key
  const sortKey = document.getElementById("sort-key");
  const direction = document.getElementById("sort-direction");
  const labels = {};
  Array.from(sortKey.options).forEach(function (o) { labels[o.value] = o.textContent; });
  function scores(card) {
    if (!card._scores) card._scores = JSON.parse(card.dataset.scores || "{}");
    return card._scores;
  }
  function format(number) {
    return Math.abs(number) < 10 ? number.toFixed(3) : number.toPrecision(3);
  }
  function sortGrid() {
    const key = sortKey.value;
    const ascending = direction.dataset.ascending === "true";
    const ordered = cards.slice().sort(function (a, b) {
      if (key === "item") return compare(a.dataset.key, b.dataset.key, ascending);
      const x = scores(a)[key], y = scores(b)[key];
      const order = compare(x === undefined ? null : x, y === undefined ? null : y, ascending);
      return order || collator.compare(a.dataset.key, b.dataset.key);
    });
    ordered.forEach(function (card) {
      grid.appendChild(card);
      const score = scores(card)[key];
      card.querySelector(".score").textContent = key === "item" ? ""
        : (score === undefined ? "–" : format(score));
      card.querySelector(".score").title = key === "item" ? "" : labels[key];
    });
  }
  sortKey.addEventListener("change", sortGrid);
  direction.addEventListener("click", function () {
    const ascending = direction.dataset.ascending !== "true";
    direction.dataset.ascending = String(ascending);
    direction.textContent = ascending ? "ascending" : "descending";
    sortGrid();
  });
  document.querySelectorAll(".run-filter").forEach(function (box) {
    box.addEventListener("change", function () {
      document.documentElement.classList.toggle("hide-run-" + box.value, !box.checked);
    });
  });
  const find = document.getElementById("find");
  find.addEventListener("input", function () {
    const text = find.value.trim().toLowerCase();
    let shown = 0;
    cards.forEach(function (card) {
      card.hidden = text !== "" && !card.dataset.key.toLowerCase().includes(text);
      if (!card.hidden) shown += 1;
    });
    document.getElementById("shown-count").textContent = String(shown);
  });

  // the larger view
  function visible() {
    return Array.from(grid.querySelectorAll(".card")).filter(function (c) { return !c.hidden; });
  }
  function open(card) {
    current = card;
    document.getElementById("detail-title").textContent = card.dataset.key;
    body.replaceChildren(card.querySelector("template").content.cloneNode(true));
    body.querySelectorAll("img[data-ref]").forEach(function (img) {
      img.src = document.getElementById(img.dataset.ref).src;
    });
    body.querySelectorAll(".slider input").forEach(function (range) {
      const slices = JSON.parse(range.dataset.z);
      const output = range.closest(".slider").querySelector("output");
      const total = output.textContent.split(" of ")[1];
      range.addEventListener("input", function () {
        body.querySelectorAll(".stack img").forEach(function (img) {
          img.hidden = img.dataset.slice !== range.value;
        });
        output.textContent = "z = " + slices[Number(range.value)] + " of " + total;
      });
    });
    if (!dialog.open) dialog.showModal();
    body.scrollTop = 0;
  }
  function step(offset) {
    const list = visible();
    const index = list.indexOf(current);
    if (index >= 0 && list.length) open(list[(index + offset + list.length) % list.length]);
  }
  cards.forEach(function (card) {
    card.addEventListener("click", function () { open(card); });
    card.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); open(card); }
    });
  });
  document.querySelectorAll("a.open").forEach(function (link) {
    link.addEventListener("click", function (event) {
      event.preventDefault();
      const card = cards.find(function (c) { return c.dataset.key === link.dataset.key; });
      if (card) open(card);
    });
  });
  document.getElementById("close").addEventListener("click", function () { dialog.close(); });
  document.getElementById("previous").addEventListener("click", function () { step(-1); });
  document.getElementById("next").addEventListener("click", function () { step(1); });
  dialog.addEventListener("click", function (event) {
    if (event.target === dialog) dialog.close();  // a click on the backdrop
  });
  dialog.addEventListener("keydown", function (event) {
    if (event.target.tagName === "INPUT") return;
    if (event.key === "ArrowLeft") step(-1);
    if (event.key === "ArrowRight") step(1);
  });
  dialog.addEventListener("close", function () { if (current) current.focus(); });
  sortGrid();
})();
"""
