"""Batch normalisation folded into the convolution before it, for the duration of a block.

In eval mode ``BatchNorm2d`` (``BatchNorm3d``) is a fixed per-channel affine map, so
``bn(conv(x))`` equals one convolution with scaled weights and a shifted bias. Folding removes
one pass over every normalised feature map, forward and backward, without changing the outputs
beyond float rounding. Explainers that run the model many times fold for the duration of
``explain``; the model is restored afterwards, also after an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from .model import evaluation_mode

__all__ = ["explanation_mode", "folded_batchnorm", "foldable_pairs"]


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None))


PAIRS = ((nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d))
"""The (convolution, normalisation) types that are folded: 2-D and 3-D."""


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        any(isinstance(conv, kinds[0]) and isinstance(norm, kinds[1]) for kinds in PAIRS)
        and not norm.training
        and norm.running_mean is not None
        and norm.num_features == conv.out_channels
        and not parametrize.is_parametrized(conv)
        and not _has_hooks(conv)
        and not _has_hooks(norm)
    )


def foldable_pairs(model: nn.Module) -> list[tuple[nn.Sequential, int]]:
    """``(sequential, i)`` for every ``Conv2d`` (``Conv3d``) at position ``i`` of an
    ``nn.Sequential`` followed directly by an eval-mode ``BatchNorm2d`` (``BatchNorm3d``) that
    can be folded into it (neither has hooks); none for a callable that is no module."""
    if not isinstance(model, nn.Module):
        return []
    pairs = []
    for sequential in model.modules():
        if isinstance(sequential, nn.Sequential):
            children = list(sequential)
            pairs.extend((sequential, i) for i in range(len(children) - 1)
                         if _foldable(children[i], children[i + 1]))
    return pairs


@contextlib.contextmanager
def folded_batchnorm(model: nn.Module) -> Iterator[int]:
    """Fold eval-mode ``BatchNorm2d`` / ``3d`` layers into the convolution before them, for the
    block.

    Only pairs that sit next to each other in an ``nn.Sequential`` are folded (there the
    convolution's output goes nowhere else); a normalisation in training mode, or a layer
    with hooks, is left alone. Inside the block the convolution carries the folded weight
    and bias and the normalisation's place holds an ``nn.Identity``; afterwards the original
    parameters and layers are back, also after an exception. Yields the number of folded
    pairs.
    """
    changes = []
    try:
        for sequential, i in foldable_pairs(model):
            conv, norm = sequential[i], sequential[i + 1]
            with torch.no_grad():
                scale = torch.rsqrt(norm.running_var + norm.eps)
                shift = -norm.running_mean * scale
                if norm.weight is not None:
                    scale = scale * norm.weight
                    shift = shift * norm.weight + norm.bias
                weight = torch.empty_like(conv.weight)  # keeps the memory format
                weight.copy_(conv.weight * scale.view(-1, *([1] * (conv.weight.ndim - 1))))
                bias = shift if conv.bias is None else conv.bias * scale + shift
            changes.append((sequential, i, conv, norm, conv.weight, conv.bias))
            conv.weight = nn.Parameter(weight, requires_grad=conv.weight.requires_grad)
            conv.bias = nn.Parameter(bias.to(weight.dtype), requires_grad=False)
            sequential[i + 1] = nn.Identity()
        yield len(changes)
    finally:
        for sequential, i, conv, norm, weight, bias in reversed(changes):
            conv.weight = weight
            conv.bias = bias
            sequential[i + 1] = norm


@contextlib.contextmanager
def explanation_mode(model: nn.Module, fold_batchnorm: bool = True) -> Iterator[nn.Module]:
    """The model as explainers run it: eval mode and, with ``fold_batchnorm``, BatchNorm
    folded (:func:`folded_batchnorm`); both undone on exit, also after an error. A callable
    that is no ``nn.Module`` is run as it is."""
    with evaluation_mode(model), (folded_batchnorm(model) if fold_batchnorm
                                  else contextlib.nullcontext()):
        yield model
