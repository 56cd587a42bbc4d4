"""The mechanism every method shares: model adapter, target, baseline, batching, result object."""

from .baseline import check_baseline, describe_baseline, replace, resolve_baseline
from .explainer import Explainer, Item, check_spacing
from .explanation import Explanation, normalize_map
from .folding import explanation_mode, folded_batchnorm
from .io import OutputDirectory, RowFile, atomic_write, json_ready, write_files
from .model import (
    ModelAdapter,
    as_image_batch,
    as_mask,
    check_spatial_dims,
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
    "check_baseline",
    "check_spacing",
    "check_spatial_dims",
    "describe_baseline",
    "json_ready",
    "normalize_map",
    "Item",
    "Perturbations",
    "evaluation_mode",
    "expected_channels",
    "explanation_mode",
    "folded_batchnorm",
    "predicted_mask",
    "replace",
    "resolve_baseline",
    "resolve_target",
    "time_model_passes",
    "write_files",
]
