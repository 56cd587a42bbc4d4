"""Hausdorff Distance Masks with the original library's API (seed 002)."""

from .methods.hdm import BETTER_ONLY, HDM, RAW, RESULT_TYPES, WORSE_ONLY, HausdorffDistanceMasks, HDMResult

__all__ = ["BETTER_ONLY", "HDM", "RAW", "RESULT_TYPES", "WORSE_ONLY", "HDMResult", "HausdorffDistanceMasks"]
