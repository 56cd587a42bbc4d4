"""Synthetic data sets and torch ``Dataset`` wrappers.

``testnet`` (seed 000): the segment (cross or triangle, left half) is chosen by a shape that
lies outside it (square or circle, right half).
``triangle`` (MiSuRe): the segment is the three digits on three corners of an axis-aligned
square (or, ``layout="equilateral"``, of an equilateral triangle), among distractor digits.
``defects`` (seed 003): unevenly lit textured tiles, defect-free or with a crack or blowholes;
image-level labels, pixel masks and a person's coarse annotation.
``dreams`` (seed 004, issue 5): objects with an optional 135-degree line marking, and an organ
with round or elongated, real or synthetic lesions; generated in memory.
"""

from .defects import (
    DEFECT_STYLES,
    TILE_DEFECT_AREA,
    DefectDataset,
    DefectSample,
    coarse_annotation,
    defect_split,
    generate_defect_dataset,
    generate_defect_sample,
)
from .dreams import (
    LesionDataset,
    LesionSample,
    MarkingDataset,
    MarkingSample,
    generate_lesion_sample,
    generate_marking_sample,
    healthy_organ,
    line_kernel,
    marking_response,
)
from .testnet import (
    DEFAULT_SIZE,
    TestnetDataset,
    TestnetSample,
    generate_dataset,
    generate_sample,
    list_indices,
    load_sample,
    split_indices,
)
from .triangle import (
    TriangleSample,
    generate_triangle_dataset,
    generate_triangle_sample,
    triangle_split,
)

__all__ = [
    "LesionDataset",
    "LesionSample",
    "MarkingDataset",
    "MarkingSample",
    "generate_lesion_sample",
    "generate_marking_sample",
    "healthy_organ",
    "line_kernel",
    "marking_response",
    "DEFAULT_SIZE",
    "DEFECT_STYLES",
    "TILE_DEFECT_AREA",
    "DefectDataset",
    "DefectSample",
    "coarse_annotation",
    "defect_split",
    "generate_defect_dataset",
    "generate_defect_sample",
    "TestnetDataset",
    "TestnetSample",
    "TriangleSample",
    "generate_dataset",
    "generate_sample",
    "generate_triangle_dataset",
    "generate_triangle_sample",
    "list_indices",
    "load_sample",
    "split_indices",
    "triangle_split",
]
