"""Layer-wise Relevance Propagation (LRP) for classifiers built from sequential blocks.

:func:`relevance` propagates a class logit back to the input with per-layer rules
(:mod:`.rules`) chosen by a rule set: a mapping from layer names or types to rules, or one of
seed 003's Table 1 sets in :data:`RULE_SETS` (``"montavon"``, ``"seibold"``) for VGG-A
(:class:`interpret_segmentation.models.vgg.VGG11`).
"""

from .relevance import SUPPORTED_LAYERS, layer_rules, relevance
from .rules import RULE_SETS, AlphaBeta, Epsilon, Gamma, Rule, ZBox, Zero

__all__ = [
    "RULE_SETS",
    "SUPPORTED_LAYERS",
    "AlphaBeta",
    "Epsilon",
    "Gamma",
    "Rule",
    "ZBox",
    "Zero",
    "layer_rules",
    "relevance",
]
