"""interpret-segmentation: explain PyTorch image-segmentation models.

Every explainer is built from a model and its options and has
``explain(image, target=None) -> Explanation``; :func:`explain` does both in one call for any
method of the registry (:mod:`interpret_segmentation.methods`). The original library's
documented classes (``hdm.HausdorffDistanceMasks``, ``rise.SegmentationRISE``) keep working
and share the same core.

Importing the package selects no matplotlib backend and imports neither matplotlib nor Pillow
until a figure or an image file asks for them.
"""

from . import hdm, methods, rise
from .analysis import metrics
from .core import Explainer, Explanation, ModelAdapter, Target, evaluation_mode
from .hdm import HausdorffDistanceMasks, HDMResult
from .methods.gradcam import SegGradCAM
from .methods.hdm import HDM
from .methods.lrp import LRP
from .methods.misure import MiSuRe
from .methods.rise import RISE
from .rise import RISEResult, SegmentationRISE

__version__ = "0.1.0"

__all__ = [
    "HDM",
    "LRP",
    "RISE",
    "Explainer",
    "Explanation",
    "HDMResult",
    "HausdorffDistanceMasks",
    "MiSuRe",
    "ModelAdapter",
    "RISEResult",
    "SegGradCAM",
    "SegmentationRISE",
    "Target",
    "evaluation_mode",
    "explain",
    "hdm",
    "methods",
    "metrics",
    "rise",
]


def explain(model, image, method: str = "hdm", target=None, **options) -> Explanation:
    """Explain ``target`` in ``image`` with one registered method, in one call.

    The same as ``methods.get(method).build(model, **options).explain(image, target)``.

    Parameters
    ----------
    model : nn.Module
        Any segmentation model :class:`ModelAdapter` understands.
    image : array or tensor (H, W), (C, H, W) or (1, C, H, W)
    method : str, default "hdm"
        A name from ``methods.available()``: "hdm", "rise", "gradcam", "misure", ...
    target : None, int or Target, default None
        ``None``: class 1 over its predicted pixels; an int: that class; a :class:`Target`:
        class and region.
    **options
        The explainer's keyword arguments (e.g. ``circle_size=15`` for HDM, ``seed=0`` for
        RISE, ``batch_size``, ``progress``); the others keep their defaults.

    Returns
    -------
    Explanation

    Raises
    ------
    ValueError
        For an unknown method (naming the known ones), and for anything the explainer refuses.
    TypeError
        For an option the explainer does not take.
    """
    return methods.get(method).build(model, **options).explain(image, target)
