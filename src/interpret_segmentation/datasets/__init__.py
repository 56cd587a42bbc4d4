"""Synthetic data sets and torch ``Dataset`` wrappers.

``testnet`` (seed 000): the segment (cross or triangle, left half) is chosen by a shape that
lies outside it (square or circle, right half).
"""

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

__all__ = [
    "DEFAULT_SIZE",
    "TestnetDataset",
    "TestnetSample",
    "generate_dataset",
    "generate_sample",
    "list_indices",
    "load_sample",
    "split_indices",
]
