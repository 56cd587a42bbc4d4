"""Layer-wise Relevance Propagation (LRP) for classifiers built from sequential blocks.

:func:`relevance` propagates a class logit back to the input with per-layer rules
(:mod:`.rules`) chosen by a rule set: a mapping from layer names or types to rules, or one of
seed 003's Table 1 sets in :data:`RULE_SETS` (``"montavon"``, ``"seibold"``) for VGG-A
(:class:`interpret_segmentation.models.vgg.VGG11`), or ``"epsilon"`` for any model;
:func:`make_rule_set` copies one with fixed z^B bounds (e.g. the data range (0, 1)) and either
reading of "epsilon = 0.25 std" (centred standard deviation or root mean square) and max-pooling
passed winner-take-all or as an average (:class:`MaxPool`).
:mod:`.segmentation` turns a relevance map into a mask (seed 003's Simple, GMM and BMM).
:class:`LRP` is the explainer on the library's one entry point (``explain(image, target)``).
"""

from .explainer import LRP
from .relevance import SUPPORTED_LAYERS, layer_rules, relevance
from .rules import (
    EPSILON_SPREADS,
    MAX_POOLING,
    RULE_SETS,
    AlphaBeta,
    Epsilon,
    Gamma,
    MaxPool,
    Rule,
    ZBox,
    Zero,
    make_rule_set,
)
from .segmentation import (
    SEGMENTATION_METHODS,
    bmm_segmentation,
    gmm_segmentation,
    refine_mask,
    segment,
    simple_segmentation,
    threshold_sweep,
)

__all__ = [
    "LRP",
    "EPSILON_SPREADS",
    "MAX_POOLING",
    "RULE_SETS",
    "SUPPORTED_LAYERS",
    "AlphaBeta",
    "Epsilon",
    "Gamma",
    "MaxPool",
    "Rule",
    "ZBox",
    "Zero",
    "SEGMENTATION_METHODS",
    "bmm_segmentation",
    "gmm_segmentation",
    "layer_rules",
    "make_rule_set",
    "refine_mask",
    "relevance",
    "segment",
    "simple_segmentation",
    "threshold_sweep",
]
