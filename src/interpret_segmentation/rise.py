"""RISE with the original library's API (seed 002)."""

from .methods.rise import RISE, RISEResult, SegmentationRISE

__all__ = ["RISE", "RISEResult", "SegmentationRISE"]
