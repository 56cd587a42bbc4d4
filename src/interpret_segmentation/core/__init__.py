"""The mechanism every method shares: model adapter, target, batching, result object."""

from .explainer import Explainer, Item
from .explanation import Explanation, normalize_map
from .folding import explanation_mode, folded_batchnorm
from .io import OutputDirectory, RowFile, atomic_write, json_ready, write_files
from .model import (
    ModelAdapter,
    as_image_batch,
    as_mask,
    evaluation_mode,
    expected_channels,
    predicted_mask,
)
from .perturb import BatchSize, Perturbations, changed_items, time_model_passes
from .target import ResolvedTarget, Target, as_target, resolve_target
from .validate import ClassIndexError

__all__ = [
    "BatchSize",
    "ClassIndexError",
    "Explainer",
    "Explanation",
    "Item",
    "ModelAdapter",
    "OutputDirectory",
    "Perturbations",
    "ResolvedTarget",
    "RowFile",
    "Target",
    "as_image_batch",
    "changed_items",
    "as_mask",
    "as_target",
    "atomic_write",
    "json_ready",
    "normalize_map",
    "Item",
    "Perturbations",
    "evaluation_mode",
    "expected_channels",
    "explanation_mode",
    "folded_batchnorm",
    "predicted_mask",
    "resolve_target",
    "time_model_passes",
    "write_files",
]
