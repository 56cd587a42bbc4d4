"""What the data-set studies share: the validation samples they explain, their explainers
(built from the method registry), the settings their run manifests record, and the per-image
rows they append as they go (so that a rerun resumes)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from ..analysis.faithfulness import context_map, explanation_scores
from ..analysis.metrics import context_hit
from ..core.explanation import Explanation
from ..core.io import RowFile, file_sha256
from ..methods import registry
from ..training import dataset_splits

ROW_FIELDS = ("index", "method", "threshold", "dice_explained", "perturbation_ratio", "seconds",
              "context_hit", "prediction_pixels", "dilations")
"""Columns of a study's per_image.csv; one row per image, method and threshold."""


def sample_image(sample) -> torch.Tensor:
    """A data-set sample's uint8 image (H, W) as the model takes it: float32 (1, H, W) in [0, 1]."""
    return torch.from_numpy(sample.image.astype(np.float32) / 255.0)[None]


def validation_samples(dataset_root, n: int) -> Iterator[tuple[int, object]]:
    """(index, sample) of the first ``n`` validation samples (the training's split, see
    :func:`~interpret_segmentation.training.dataset_splits`), read one at a time; the data set
    is checked at once."""
    validation = dataset_splits(dataset_root, n_val=n)[1]
    return ((validation.dataset.indices[position], validation.dataset.sample(position))
            for position in validation.indices)


def build_explainers(model, names: Iterable[str], progress: bool = True) -> dict:
    """``{name: explainer}`` of the registered methods ``names``, each at its defaults.

    Raises ValueError naming the registered methods for an unknown name.
    """
    return {name: registry.get(name).build(model, progress=progress) for name in names}


def study_settings(checkpoint, dataset_root, explainers: dict, **more) -> dict:
    """What decides a study's rows, for its run manifest: the checkpoint's content (SHA-256),
    the data set (its path and the content of its .json info files), every explainer's
    ``settings()`` and ``more`` (seed, noise, ...)."""
    root = Path(dataset_root)
    info = {}
    for path in sorted(root.glob("*.json")):
        try:
            info[path.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            info[path.name] = file_sha256(path)
    return {"checkpoint_sha256": file_sha256(checkpoint), "dataset": str(root.resolve()),
            "dataset_info": info,
            "methods": {name: explainer.settings() for name, explainer in explainers.items()},
            **more}


def explanation_rows(model, image, sample, index, name: str,
                     explanation: Explanation) -> list[dict]:
    """The per-image rows (:data:`ROW_FIELDS`) of one explanation of ``sample`` (``image`` as
    the model took it, ``index`` its data-set index): one per threshold of its registered
    method, or one for the scores the method measured itself, or one without scores when
    there are none. The context hit is empty when the sample has no context mask."""
    method = registry.get(explanation.method)
    background = sample.image == 0
    hit = (context_hit(context_map(explanation, method.shown), sample.context, background)
           if np.any(sample.context) and background.any() else "")
    scores = explanation_scores(model, image, explanation, method.thresholds) or {"": {}}
    return [{"index": index, "method": name, "threshold": threshold,
             "dice_explained": values.get("dice_explained", ""),
             "perturbation_ratio": values.get("perturbation_ratio", ""),
             "seconds": explanation.timings["total"], "context_hit": hit,
             "prediction_pixels": int(explanation.arrays["target_pixels"].sum()),
             "dilations": explanation.info.get("dilations", "")}
            for threshold, values in scores.items()]


def evaluate_samples(model, samples, explainers: dict, rows_path, log=print) -> list[dict]:
    """Explain every sample with every explainer and append its rows as they are made.

    Parameters
    ----------
    model : nn.Module
    samples : iterable of (index, sample)
        Samples with ``image`` (uint8 H x W), ``context`` (H x W; may be empty) and ``meta``.
    explainers : dict name -> explainer
        Explainers of registered methods (their thresholds and judged map come from the
        registry); the name is the ``method`` column.
    rows_path : path
        CSV of per-image rows (:data:`ROW_FIELDS`, a :class:`~interpret_segmentation.core.io.RowFile`).
        Rows already there are kept and their (index, method) pairs are not computed again,
        so an interrupted run resumes; a pair whose rows are missing (a run stopped between
        two methods) is computed.

    Returns
    -------
    list of dict
        The rows of ``samples`` and ``explainers``, old and new (rows of other images or
        methods in the file are kept there but not returned).
    """
    seen = set()
    rows = RowFile(rows_path, ROW_FIELDS)
    done = {(row["index"], row["method"]) for row in rows.rows}
    for index, sample in samples:
        seen.add(str(index))
        image = sample_image(sample)
        for name, explainer in explainers.items():
            if (str(index), name) in done:
                continue
            explanation = explainer.explain(image)
            rows.append(*explanation_rows(model, image, sample, index, name, explanation))
            log(f"image {index}: {name} {explanation.timings['total']:.1f} s")
    return [row for row in rows.rows if row["index"] in seen and row["method"] in explainers]
