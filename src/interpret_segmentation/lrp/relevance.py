"""Layer-wise Relevance Propagation through a sequential classifier.

The network is read as the sequence of its *leaf* modules (modules without children) in
``model.named_modules()`` order, i.e. the order in which they were registered. LRP needs the
model's forward pass to apply exactly these leaves, each once, in that order, as a classifier
built from ``nn.Sequential`` blocks does (e.g. :class:`interpret_segmentation.models.vgg.VGG11`,
whose forward is ``classifier(features(x))``). :func:`relevance` checks this by comparing the
model's own output with the output of the leaves applied one after the other, and refuses a
model for which they differ.

Supported leaves and how relevance passes through them (Bach et al., 2015; Montavon et al.,
2019; seed 003, section 3.3):

- ``Conv2d``, ``Linear``: the layer's rule from the rule set (:mod:`.rules`);
- ``ReLU``, ``Dropout`` (1d/2d/3d; identity in eval mode), ``Identity``, an empty
  ``Sequential``: unchanged;
- ``Flatten``: reshaped back to the input's shape;
- ``MaxPool2d``: winner-take-all, each output's relevance goes to the input position that
  holds the maximum of its window (on ties, the one PyTorch's max-pooling reports); an input
  that wins several overlapping windows receives the sum;
- ``AvgPool2d``, ``AdaptiveAvgPool2d``: the z-rule of the linear pooling, each input receives
  the share ``a_j w_jk / z_k`` of the relevance of every output ``k`` it is averaged into.

``BatchNorm2d`` directly after a ``Conv2d`` in an ``nn.Sequential`` is folded into the
convolution for the duration of the call (:func:`interpret_segmentation.core.folded_batchnorm`);
any other ``BatchNorm2d`` is refused like every other leaf type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral

import numpy as np
import torch
from torch import nn

from ..core.folding import folded_batchnorm
from ..core.model import evaluation_mode
from .rules import RULE_SETS, Rule, Zero, _redistribute

__all__ = ["SUPPORTED_LAYERS", "layer_rules", "relevance"]

_WEIGHTED = (nn.Conv2d, nn.Linear)
_PASS_THROUGH = (nn.ReLU, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity,
                 nn.Sequential)
_AVERAGES = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
SUPPORTED_LAYERS = (*_WEIGHTED, nn.MaxPool2d, *_AVERAGES, nn.Flatten, *_PASS_THROUGH)
"""Leaf module types LRP can pass relevance through (``Sequential`` only when empty)."""

_DEFAULT_RULE = Zero()


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the model's leaf modules in ``named_modules()`` order, validated."""
    leaves = []
    for name, module in model.named_modules():
        children = next(module.children(), None) is not None
        if children:
            own = [n for n, _ in module.named_parameters(recurse=False)]
            if own:
                raise ValueError(
                    f"model: layer {name or '<model>'!r} ({type(module).__name__}) has submodules "
                    f"and parameters of its own ({own}); LRP supports models whose computation "
                    f"happens in leaf modules"
                )
            continue
        if not isinstance(module, SUPPORTED_LAYERS):
            extra = ""
            if isinstance(module, nn.BatchNorm2d):
                extra = (" (a BatchNorm2d is folded only when it directly follows a Conv2d in an "
                         "nn.Sequential and neither has hooks)")
            raise ValueError(
                f"model: layer {name or '<model>'!r} of type {type(module).__name__} is not "
                f"supported by LRP{extra}; supported are "
                f"{', '.join(t.__name__ for t in SUPPORTED_LAYERS)}"
            )
        leaves.append((name, module))
    if not leaves:
        raise ValueError("model: has no layers")
    return leaves


def _resolve(leaves: list[tuple[str, nn.Module]], rule_set) -> dict[str, Rule]:
    if isinstance(rule_set, str):
        if rule_set not in RULE_SETS:
            raise ValueError(f"rule_set: expected one of {sorted(RULE_SETS)} or a mapping, "
                             f"got {rule_set!r}")
        rule_set = RULE_SETS[rule_set]
    if not isinstance(rule_set, Mapping):
        raise TypeError(f"rule_set: expected a name in {sorted(RULE_SETS)} or a mapping from "
                        f"layer names or types to rules, got {type(rule_set).__name__}")
    by_name: dict[str, Rule] = {}
    by_type: dict[type, Rule] = {}
    for key, rule in rule_set.items():
        if not isinstance(rule, Rule):
            raise TypeError(f"rule_set[{key!r}]: expected an LRP rule (e.g. Epsilon()), "
                            f"got {type(rule).__name__}")
        if isinstance(key, str):
            by_name[key] = rule
        elif isinstance(key, type) and issubclass(key, nn.Module):
            by_type[key] = rule
        else:
            raise TypeError(f"rule_set: keys are layer names (str) or nn.Module types, got {key!r}")

    weighted = {name: module for name, module in leaves if isinstance(module, _WEIGHTED)}
    for key in by_name:
        matches = [(name, module) for name, module in leaves
                   if name == key or name.rsplit(".", 1)[-1] == key]
        if not matches:
            raise ValueError(f"rule_set: key {key!r} names no layer of the model "
                             f"(layers with rules: {list(weighted)})")
        for name, module in matches:
            if name not in weighted:
                raise ValueError(f"rule_set: key {key!r} names layer {name!r} of type "
                                 f"{type(module).__name__}; rules apply to Conv2d and Linear only")

    rules = {}
    for name, module in weighted.items():
        rule = by_name.get(name, by_name.get(name.rsplit(".", 1)[-1]))
        if rule is None:
            rule = next((by_type[t] for t in type(module).__mro__ if t in by_type), _DEFAULT_RULE)
        rules[name] = rule
    return rules


def layer_rules(model: nn.Module, rule_set: str | Mapping = "montavon") -> dict[str, Rule]:
    """The rule each ``Conv2d`` / ``Linear`` layer of ``model`` gets from ``rule_set``.

    Parameters
    ----------
    model : nn.Module
        A network of the supported leaf modules (see the module docstring).
    rule_set : str or Mapping, default "montavon"
        A name in :data:`~interpret_segmentation.lrp.rules.RULE_SETS` or a mapping from layer
        names or ``nn.Module`` types to :class:`~interpret_segmentation.lrp.rules.Rule`
        instances. A layer is matched first by name, its full dotted name (``"features.conv1_1"``)
        before its last component (``"conv1_1"``), then by type (its own class before its
        base classes); layers left unmatched get LRP-0.

    Returns
    -------
    dict
        Full layer name -> rule, for every ``Conv2d`` and ``Linear`` layer, in model order.

    Raises
    ------
    ValueError
        For an unknown rule-set name, a key naming no layer (or a layer that is not a Conv2d
        or Linear), or an unsupported layer; the message names the key or layer.
    TypeError
        For a rule set that is not a mapping, or a key or value of the wrong type.
    """
    return _resolve(_leaves(model), rule_set)


def _targets(target, batch: int) -> torch.Tensor | int:
    """Validate the form of ``target``; returns an int or a (B,) int64 tensor."""
    if isinstance(target, Integral) and not isinstance(target, (bool, np.bool_)):
        return int(target)
    if isinstance(target, (torch.Tensor, np.ndarray, Sequence)) and not isinstance(target, str):
        tensor = torch.as_tensor(target) if not isinstance(target, torch.Tensor) else target.detach()
        if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
            raise ValueError(f"target: expected integer class indices, got dtype {tensor.dtype}")
        if tensor.ndim == 0:
            return int(tensor)
        if tensor.shape != (batch,):
            raise ValueError(f"target: expected an int or {batch} class indices (one per image), "
                             f"got shape {tuple(tensor.shape)}")
        return tensor.cpu().long()
    raise ValueError(f"target: expected an int class index or a sequence of class indices, "
                     f"got {type(target).__name__}")


def _check_input(x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"x: expected a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x: expected a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError("x: expected at least one image, got an empty batch")
    if not torch.isfinite(x).all():
        raise ValueError("x: contains NaN or inf values")


def _forward(leaves, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Apply the leaves one after the other; returns each leaf's input and the output."""
    inputs = []
    with torch.no_grad():
        for name, module in leaves:
            inputs.append(x)
            try:
                # an in-place ReLU may overwrite its own stored input; that one is never read
                x = module(x)
            except RuntimeError as error:
                raise ValueError(
                    f"model: applying the leaf modules in named_modules() order fails at layer "
                    f"{name!r} ({type(module).__name__}) on an input of shape {tuple(x.shape)}: "
                    f"{error}. LRP needs a forward pass that applies the leaf modules in that order"
                ) from error
    return inputs, x


def _check_same_output(model: nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
    with torch.no_grad():
        expected = model(x)
    same = (isinstance(expected, torch.Tensor) and expected.shape == out.shape
            and torch.allclose(expected, out, rtol=1e-4,
                               atol=1e-5 * max(1.0, float(expected.abs().max()))))
    if not same:
        raise ValueError(
            "model: its forward pass differs from applying its leaf modules one after the other "
            "in named_modules() order; LRP needs a model whose forward applies exactly these "
            "layers, each once, in that order (as nn.Sequential blocks do)"
        )


def _pass_back(module: nn.Module, inputs: torch.Tensor, relevance: torch.Tensor,
               rule: Rule | None) -> torch.Tensor:
    if isinstance(module, _WEIGHTED):
        return rule.propagate(module, inputs, relevance)
    if isinstance(module, nn.Flatten):
        return relevance.reshape(inputs.shape)
    if isinstance(module, nn.MaxPool2d):
        a = inputs.detach().requires_grad_(True)
        with torch.enable_grad():
            (result,) = torch.autograd.grad(module(a), a, relevance)
        return result
    if isinstance(module, _AVERAGES):
        return _redistribute(module, inputs, relevance)
    return relevance  # ReLU, Dropout, Identity, empty Sequential


def relevance(model: nn.Module, x: torch.Tensor, target, rule_set: str | Mapping = "montavon",
              return_layers: bool = False):
    """Layer-wise Relevance Propagation of one class logit of a classifier to its input.

    The relevance of the target class's logit (one-hot times the logit, i.e. the other
    logits start at 0) is propagated from the output back to the input, layer by layer, with
    the rule each ``Conv2d``/``Linear`` layer gets from ``rule_set`` (Bach et al., 2015;
    Montavon et al., 2019; seed 003, section 3.3). The model runs in eval mode, with
    ``BatchNorm2d`` folded into the convolution before it; afterwards its parameters, layers
    and train/eval modes are as before, also after an error, and no hook is ever registered.

    Parameters
    ----------
    model : nn.Module
        A classifier returning logits (B, K), made of the leaf modules listed in the module
        docstring and applying them in ``named_modules()`` order (checked).
    x : torch.Tensor
        Images (B, C, H, W), floating point; moved to the device and dtype of the model's
        parameters.
    target : int or sequence of int or torch.Tensor
        The class to explain: one index for every image, or B indices (a sequence, a (B,)
        integer tensor or array), each in ``[0, K)``.
    rule_set : str or Mapping, default "montavon"
        ``"montavon"`` or ``"seibold"`` (:data:`~interpret_segmentation.lrp.rules.RULE_SETS`,
        for the layer names of :class:`~interpret_segmentation.models.vgg.VGG11`), or a
        mapping from layer names or types to rules, e.g. ``{"conv1_1": ZBox(), nn.Linear:
        Epsilon()}``; see :func:`layer_rules` for the matching. ``{}`` is LRP-0 everywhere.
    return_layers : bool, default False
        Also return the relevance at the input of every leaf layer.

    Returns
    -------
    torch.Tensor
        Input relevance (B, C, H, W), detached; with LRP-0/z^B and no biases its sum over
        (C, H, W) equals the target logit (conservation).
    dict of str to torch.Tensor, only with ``return_layers=True``
        Leaf layer name -> relevance at that layer's input (the input's shape), in model
        order; the first entry is the input relevance.

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module``, ``x`` not a tensor, or ``rule_set`` malformed.
    ValueError
        For a bad ``x`` (shape, dtype, non-finite), a ``target`` of the wrong form or out of
        range, an unknown rule-set name or a key naming no layer, an unsupported layer (the
        message names it and its type), a forward pass that does not apply the leaves in
        order, or a model output that is not (B, K).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(return_layers, bool):
        raise TypeError(f"return_layers: expected a bool, got {type(return_layers).__name__}")
    _check_input(x)
    wanted = _targets(target, x.shape[0])
    parameter = next(model.parameters(), None)
    x = x.detach()
    if parameter is not None:
        x = x.to(device=parameter.device, dtype=parameter.dtype)

    with evaluation_mode(model), folded_batchnorm(model):
        leaves = _leaves(model)
        rules = _resolve(leaves, rule_set)
        inputs, out = _forward(leaves, x)
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise ValueError(f"model output: expected logits (B, K) = ({x.shape[0]}, K), "
                             f"got shape {tuple(out.shape)}")
        _check_same_output(model, x, out)
        classes = out.shape[1]
        index = torch.full((x.shape[0],), wanted) if isinstance(wanted, int) else wanted
        if (index < 0).any() or (index >= classes).any():
            raise ValueError(f"target: expected class indices in [0, {classes}), "
                             f"got {index.tolist() if index.numel() <= 16 else wanted}")
        index = index.to(out.device)
        current = torch.zeros_like(out)
        rows = torch.arange(out.shape[0], device=out.device)
        current[rows, index] = out[rows, index]

        layers = {}
        for (name, module), a in zip(reversed(leaves), reversed(inputs)):
            current = _pass_back(module, a, current, rules.get(name))
            if return_layers:
                layers[name] = current
    if return_layers:
        return current, dict(reversed(layers.items()))
    return current
