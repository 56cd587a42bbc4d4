"""Shared fixtures."""

import pytest
import torch
from oracles import PatchModel


@pytest.fixture
def patch_model():
    torch.manual_seed(0)
    return PatchModel()
