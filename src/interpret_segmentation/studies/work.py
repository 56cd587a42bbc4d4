"""What a data-set run does with each item, picklable so that engines can send it to their
workers: a :class:`Work` (the model or how to build it, the method runs, the classes, the
explainer options), the :class:`Worker` that holds the model and explainers built once and
turns an item into an :class:`ItemResult` (its explanations and rows, or each failed
explanation's error), and the sources of the library's own data sets."""

from __future__ import annotations

import hashlib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..analysis.faithfulness import context_map, explanation_scores
from ..analysis.metrics import context_hit, dice
from ..core.explanation import Explanation
from ..core.io import file_sha256, json_ready
from ..core.target import Target
from ..datasets.sources import DatasetItem, FolderSource, TorchSource, safe_key
from ..methods import registry
from ..training import build_model, dataset_splits
from .common import dataset_info

ROW_FIELDS = ("item", "method", "class_index", "threshold", "dice_explained",
              "perturbation_ratio", "seconds", "context_hit", "prediction_pixels",
              "prediction_dice", "dilations", "error")
"""Columns of a run's rows: one per item, method run, class and threshold (or one with the
error when the explanation failed). ``prediction_dice`` is the Dice between the explained
segment and the item's ground truth, where it has one."""


# -- what to do --------------------------------------------------------------------------------

@dataclass(frozen=True)
class MethodRun:
    """A registered method with options, under a name (the "method" column of the rows)."""

    name: str
    method: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelBuilder:
    """Builds the model in each worker: ``spec`` "MODULE:CALLABLE" (None: the library's U-Net)
    with the weights of ``checkpoint`` (:func:`~interpret_segmentation.training.build_model`)."""

    checkpoint: str
    spec: str | None = None

    def build(self) -> nn.Module:
        return build_model(self.spec, self.checkpoint)

    def describe(self) -> dict:
        return {"model": self.spec or "library U-Net",
                "checkpoint_sha256": file_sha256(self.checkpoint)}


def method_runs(methods) -> tuple[MethodRun, ...]:
    """Method runs from names (``"hdm"``), ``{name: options}`` or MethodRuns; ValueError
    naming the registered segmentation methods for an unknown one."""
    if isinstance(methods, str):
        methods = [part.strip() for part in methods.split(",") if part.strip()]
    if isinstance(methods, dict):
        methods = [MethodRun(name, name, dict(options or {})) for name, options in methods.items()]
    runs = tuple(m if isinstance(m, MethodRun) else MethodRun(str(m), str(m)) for m in methods)
    known = registry.available("segmentation")
    unknown = [run.method for run in runs if run.method not in known]
    if not runs or unknown:
        raise ValueError(f"methods: expected some of {', '.join(known)}, got "
                         f"{', '.join(unknown) or 'none'}")
    return runs


def model_fingerprint(model) -> dict:
    """What identifies ``model`` in a manifest: a builder's checkpoint hash, a module's class
    and the SHA-256 of its parameters and buffers, or a callable's qualified name."""
    if isinstance(model, ModelBuilder):
        return model.describe()
    if isinstance(model, nn.Module):
        digest = hashlib.sha256()
        for name, value in model.state_dict().items():
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
                          .numpy().tobytes())
        return {"model": type(model).__qualname__, "state_sha256": digest.hexdigest()}
    return {"model": getattr(model, "__qualname__", type(model).__qualname__)}


@dataclass(frozen=True)
class Work:
    """What every worker does with an item; picklable, so that engines can send it.

    Attributes
    ----------
    model : nn.Module, callable or ModelBuilder
        The model (a callable for black-box methods), or how each worker builds it.
    runs : tuple of MethodRun
    classes : tuple of (int or None)
        Classes explained in every item (None: class 1, the foreground).
    explainer_options : dict
        Options every explainer takes (``spatial_dims``, ``spacing``, ``baseline``,
        ``output``, ``activation``, ``device``, ``batch_size``, ...).
    save_explanations : bool
        Whether the driver writes each Explanation (the report shows them).
    """

    model: Any
    runs: tuple[MethodRun, ...]
    classes: tuple = (None,)
    explainer_options: dict = field(default_factory=dict)
    save_explanations: bool = True

    def settings(self, engine=None) -> dict:
        """The manifest's record of this work: the model, every run's method and settings,
        the classes and the explainer options (not where it runs: engines give the same
        results). The explainers' settings come from ``engine``'s worker when it keeps one
        (the local engine), else from a worker built here."""
        worker = engine.worker_for(self) if hasattr(engine, "worker_for") else Worker(self)
        explainers = worker.explainers
        return {**model_fingerprint(self.model),
                "methods": {run.name: {"method": run.method, **explainers[run.name].settings()}
                            for run in self.runs},
                "classes": [None if c is None else int(c) for c in self.classes],
                "explainer_options": {key: _json_value(value)
                                      for key, value in sorted(self.explainer_options.items())
                                      if key not in ("progress", "device", "batch_size")}}


def _json_value(value):
    """An explainer option as a manifest value: an array by its SHA-256, anything else as
    plain JSON (:func:`json_ready`), an object JSON cannot hold by its repr."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
        return {"array_sha256": hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    plain = json_ready(value)
    return plain if isinstance(plain, (str, int, float, bool, type(None))) else repr(value)


@dataclass
class ItemResult:
    """What a worker made of one item: its explanations (run name, class, Explanation), its
    rows (:data:`ROW_FIELDS`) and the item itself (for the report's images)."""

    position: int
    item: DatasetItem
    explanations: list[tuple[str, Any, Explanation]]
    rows: list[dict]


class Worker:
    """The model and the explainers of a :class:`Work`, built once; explains items."""

    def __init__(self, work: Work):
        self.work = work
        model = work.model.build() if isinstance(work.model, ModelBuilder) else work.model
        self.model = model
        options = {**work.explainer_options, "progress": False}
        self.explainers = {run.name: registry.get(run.method).build(model, **options,
                                                                     **run.options)
                           for run in work.runs}

    def explain(self, source, position: int, todo: set | None = None) -> ItemResult:
        """Item ``position`` of ``source`` explained for every class and run (only the
        (run name, class) pairs in ``todo`` when given). An explanation that raises becomes a
        row with the error, and the others go on; an item that cannot be read gets an error
        row for each pair (:func:`error_result`)."""
        try:
            item = source.item(position)
        except Exception as error:  # an unreadable item: its error rows, and the run goes on
            return error_result(self.work, str(source.keys()[position]), position, todo, error)
        image = torch.from_numpy(np.asarray(item.image, dtype=np.float32))
        explanations, rows = [], []
        for class_index in self.work.classes:
            for run in self.work.runs:
                if todo is not None and (run.name, class_text(class_index)) not in todo:
                    continue
                try:
                    explanation = self.explainers[run.name].explain(image, Target(class_index))
                    made = item_rows(self.model, image, item, run.name, class_index, explanation)
                except Exception as error:  # recorded for this item; the others go on
                    rows.append(_error_row(item.key, run.name, class_index, error))
                    continue
                explanations.append((run.name, class_index, explanation))
                rows += made
        return ItemResult(position, item, explanations, rows)


def class_text(class_index) -> str:
    return "" if class_index is None else str(int(class_index))


def explanation_name(run_name: str, class_index) -> str:
    """The file stem of a run's explanation of a class: ``<run>`` or ``<run>_class<k>``."""
    stem = safe_key(run_name)
    return stem if class_index is None else f"{stem}_class{int(class_index)}"


def _error_row(key: str, name: str, class_index, error: BaseException) -> dict:
    where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    at = f" (at {Path(where.filename).name}:{where.lineno})" if where else ""
    row = dict.fromkeys(ROW_FIELDS, "")
    row.update(item=key, method=name, class_index=class_text(class_index),
               error=f"{type(error).__name__}: {' '.join(str(error).split())}{at}")
    return row


def error_result(work: Work, key: str, position: int, todo, error: BaseException) -> ItemResult:
    """An ItemResult with one error row per (run, class) of ``todo`` (all when None) and an
    item holding only ``key`` and an empty image (shape (0,)), which the driver does not
    write."""
    rows = [_error_row(key, run.name, class_index, error)
            for class_index in work.classes for run in work.runs
            if todo is None or (run.name, class_text(class_index)) in todo]
    return ItemResult(position, DatasetItem(key, np.zeros((0,), np.float32)), [], rows)


def item_rows(model, image: torch.Tensor, item: DatasetItem, name: str, class_index,
              explanation: Explanation) -> list[dict]:
    """The rows (:data:`ROW_FIELDS`) of one explanation: one per threshold of its registered
    method (Dice explained and perturbation ratio, seed 001), one with the scores the method
    measured itself (MiSuRe), or one without scores. The context hit needs the item's
    context mask and is empty otherwise."""
    method = registry.get(explanation.method)
    hit = ""
    if item.context is not None and np.any(item.context):
        background = np.all(np.asarray(item.image).reshape(-1, *item.context.shape) == 0, axis=0)
        if background.any():
            hit = context_hit(context_map(explanation, method.shown), item.context, background)
    scores = explanation_scores(model, image, explanation, method.thresholds) or {"": {}}
    predicted = explanation.arrays["target_pixels"].astype(bool)
    truth = "" if item.mask is None else dice(predicted, item.mask)
    return [{"item": item.key, "method": name, "class_index": class_text(class_index),
             "threshold": threshold, "dice_explained": values.get("dice_explained", ""),
             "perturbation_ratio": values.get("perturbation_ratio", ""),
             "seconds": explanation.timings["total"], "context_hit": hit,
             "prediction_pixels": int(predicted.sum()), "prediction_dice": truth,
             "dilations": explanation.info.get("dilations", ""), "error": ""}
            for threshold, values in scores.items()]


# -- data sets -----------------------------------------------------------------------------------

class ValidationSource:
    """The first ``n`` validation samples of a data set in the library's layout (testnet,
    Triangle), split as training splits it; items carry the segment as mask and the context."""

    def __init__(self, dataset_root, n: int | None = None):
        self.root = Path(dataset_root)
        self.n = n
        self._split = dataset_splits(self.root, n_val=n)[1]

    def __len__(self) -> int:
        return len(self._split)

    def keys(self) -> list[str]:
        return [str(self._split.dataset.indices[p]) for p in self._split.indices]

    def item(self, position: int) -> DatasetItem:
        inner = self._split.indices[position]
        sample = self._split.dataset.sample(inner)
        return DatasetItem(str(self._split.dataset.indices[inner]),
                           (sample.image.astype(np.float32) / 255.0)[None],
                           np.asarray(sample.segment) != 0, np.asarray(sample.context) != 0)

    def describe(self) -> dict:
        return {"kind": "validation", **dataset_info(self.root), "n": self.n}


def as_source(dataset, masks=None):
    """A source for ``dataset``: a source as it is, a directory (of the library's layout when
    it holds numbered sample directories, else of images with ``masks``), or a torch
    Dataset."""
    if hasattr(dataset, "item") and hasattr(dataset, "describe"):
        return dataset
    if isinstance(dataset, (str, Path)):
        root = Path(dataset)
        if root.is_dir() and any(p.is_dir() and p.name.isdigit() for p in root.iterdir()):
            return ValidationSource(root)
        return FolderSource(root, masks)
    return TorchSource(dataset)
