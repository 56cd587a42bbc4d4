"""interpret-segmentation: explain PyTorch image-segmentation models.

Every explainer is built from a model and its options and has
``explain(image, target=None) -> Explanation``. The original library's documented classes
(``hdm.HausdorffDistanceMasks``, ``rise.SegmentationRISE``) keep working and share the same
core.
"""

from . import hdm, rise
from .analysis import metrics
from .core import Explainer, Explanation, ModelAdapter, Target, evaluation_mode
from .methods.hdm import HDM, HausdorffDistanceMasks, HDMResult
from .methods.rise import RISE, RISEResult, SegmentationRISE

__version__ = "0.1.0"

__all__ = [
    "HDM",
    "RISE",
    "Explainer",
    "Explanation",
    "HDMResult",
    "HausdorffDistanceMasks",
    "ModelAdapter",
    "RISEResult",
    "SegmentationRISE",
    "Target",
    "evaluation_mode",
    "hdm",
    "metrics",
    "rise",
]
