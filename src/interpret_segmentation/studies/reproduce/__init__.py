"""``interpret-segmentation reproduce``: the seeds' studies on synthetic data.

:mod:`.lrp` (seed 003: LRP of classifiers turned into segmentations, against a U-Net) and
:mod:`.deepdream` (seed 004: DeepDream analysis of segmentation networks).
"""

from .deepdream import run_deepdream_reproduction
from .lrp import SETTINGS, run_lrp_reproduction

__all__ = ["SETTINGS", "run_deepdream_reproduction", "run_lrp_reproduction"]
