"""Layer-wise Relevance Propagation through a sequential classifier.

The network is read as the sequence of its *leaf* modules (modules without children) in
``model.named_modules()`` order, i.e. the order in which they were registered. LRP needs the
model's forward pass to apply exactly these leaves, each once, in that order, as a classifier
built from ``nn.Sequential`` blocks does (e.g. :class:`interpret_segmentation.models.vgg.VGG11`,
whose forward is ``classifier(features(x))``). :func:`relevance` runs the model's own forward
pass once, with forward hooks on the leaves (removed afterwards, also after an error). They
record what the backward pass reads: the inputs of the ``Conv2d``, ``Linear`` and pooling
layers, every leaf's input shape and, for a rule that reuses it (LRP-0, LRP-epsilon), the
layer's output, i.e. its pre-activation ``z`` (copied first if an in-place layer such as
``ReLU(inplace=True)`` is about to overwrite it); everything else is freed as in a plain
forward pass. On the CPU they also let each ``MaxPool2d`` pool a channels-last copy of its
input, which is several times faster than PyTorch's pooling of (B, C, H, W) tensors and gives
the same values; its output goes on in the usual layout. On the way they check that

- the leaves run in ``named_modules()`` order, each exactly once, each called with one tensor;
  only an ``Identity``, ``Dropout`` or empty ``Sequential`` (identities in eval mode) may be
  left out;
- the input of every leaf is the output of the leaf before it (the model input for the first),
  with the same shape: the same tensor, not changed in place in between, or one with the same
  values (e.g. a copy). A reshape between leaves is refused: a flatten must be an
  ``nn.Flatten`` leaf, so that relevance can be reshaped back;
- the model's output is the output of the last leaf, in the same sense.

A model for which one of these fails is refused with a ValueError naming the layer; so is a
forward pass that fails inside a leaf (e.g. an input of the wrong size).

Supported leaves and how relevance passes through them (Bach et al., 2015; Montavon et al.,
2019; seed 003, section 3.3):

- ``Conv2d``, ``Linear``: the layer's rule from the rule set (:mod:`.rules`);
- ``ReLU``, ``Dropout`` (1d/2d/3d; identity in eval mode), ``Identity``, an empty
  ``Sequential``: unchanged;
- ``Flatten``: reshaped back to the input's shape;
- ``MaxPool2d``: its rule from the rule set, :class:`~.rules.MaxPool` (default
  ``MaxPool("winner")``: winner-take-all, each output's relevance goes to the input position
  that holds the maximum of its window, on ties the one PyTorch's max-pooling reports, and an
  input that wins several overlapping windows receives the sum; ``MaxPool("average")``: as
  through an average pooling of the same windows);
- ``AvgPool2d``, ``AdaptiveAvgPool2d``: the z-rule of the linear pooling, each input receives
  the share ``a_j w_jk / z_k`` of the relevance of every output ``k`` it is averaged into.

``BatchNorm2d`` directly after a ``Conv2d`` in an ``nn.Sequential`` is folded into the
convolution for the duration of the call (:func:`interpret_segmentation.core.folded_batchnorm`);
any other ``BatchNorm2d`` is refused like every other leaf type.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import weakref
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ...core.folding import folded_batchnorm
from ...core.model import evaluation_mode
from ...core.validate import check_bool, is_int
from .rules import RULE_SETS, MaxPool, Rule, Zero, _redistribute, channels_last_pays

__all__ = ["FLIPS", "SUPPORTED_LAYERS", "layer_rules", "relevance"]

FLIPS = ((), (-1,), (-2,), (-2, -1))
"""The mirror images ``average_flips`` averages over, as the dimensions flipped: the image
itself, left-right, up-down, and both (a half turn)."""

_WEIGHTED = (nn.Conv2d, nn.Linear)
_PASS_THROUGH = (nn.ReLU, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity,
                 nn.Sequential)
_AVERAGES = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
SUPPORTED_LAYERS = (*_WEIGHTED, nn.MaxPool2d, *_AVERAGES, nn.Flatten, *_PASS_THROUGH)
"""Leaf module types LRP can pass relevance through (``Sequential`` only when empty)."""

# identities in eval mode: a forward pass may leave them out
_SKIPPABLE = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity, nn.Sequential)
# leaves whose recorded input the backward pass reads
_READS_INPUT = (*_WEIGHTED, nn.MaxPool2d, *_AVERAGES)
_NOT_THE_LEAVES = ("model: its forward pass differs from applying its leaf modules one after the "
                   "other in named_modules() order; LRP needs a model whose forward applies "
                   "exactly these layers, each once, in that order (as nn.Sequential blocks do)")

_DEFAULT_RULE = Zero()
_DEFAULT_POOLING = MaxPool("winner")
_WITH_RULES = (*_WEIGHTED, nn.MaxPool2d)  # leaves that take a rule from the rule set


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
    named = rule_set if isinstance(rule_set, str) else None
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

    weighted = {name: module for name, module in leaves if isinstance(module, _WITH_RULES)}
    by_key: dict[str, list[tuple[str, nn.Module]]] = {}  # full name and last component
    for name, module in leaves:
        last = name.rsplit(".", 1)[-1]
        for key in (name,) if last == name else (name, last):
            by_key.setdefault(key, []).append((name, module))
    for key in by_name:
        matches = by_key.get(key, [])
        if not matches:
            hint = ""
            if named is not None:
                hint = (f"; rule set {named!r} is written for the layer names of "
                        f"interpret_segmentation.models.VGG11, for other models use 'epsilon' "
                        f"or a mapping from layer names or types to rules")
            raise ValueError(f"rule_set: key {key!r} names no layer of the model "
                             f"(layers with rules: {list(weighted)}){hint}")
        for name, module in matches:
            if name not in weighted:
                raise ValueError(f"rule_set: key {key!r} names layer {name!r} of type "
                                 f"{type(module).__name__}; rules apply to Conv2d, Linear and "
                                 f"MaxPool2d layers only")
            if not _fits(by_name[key], module):
                raise ValueError(f"rule_set: key {key!r} gives layer {name!r} of type "
                                 f"{type(module).__name__} the rule {by_name[key]!r}; MaxPool "
                                 f"rules are for MaxPool2d layers, the others for Conv2d and "
                                 f"Linear")

    rules = {}
    for name, module in weighted.items():
        rule = by_name.get(name, by_name.get(name.rsplit(".", 1)[-1]))
        if rule is None:  # by type: the first of the layer's classes with a rule that fits it
            rule = next((by_type[t] for t in type(module).__mro__
                         if t in by_type and _fits(by_type[t], module)), None)
        if rule is None:
            rule = _DEFAULT_POOLING if isinstance(module, nn.MaxPool2d) else _DEFAULT_RULE
        rules[name] = rule
    return rules


def _fits(rule: Rule, module: nn.Module) -> bool:
    """Whether ``rule`` is made for ``module``: MaxPool for max-pooling, the others for the
    layers with weights."""
    return isinstance(rule, MaxPool) == isinstance(module, nn.MaxPool2d)


def layer_rules(model: nn.Module, rule_set: str | Mapping = "montavon") -> dict[str, Rule]:
    """The rule each ``Conv2d``, ``Linear`` and ``MaxPool2d`` layer of ``model`` gets from
    ``rule_set``.

    Parameters
    ----------
    model : nn.Module
        A network of the supported leaf modules (see the module docstring).
    rule_set : str or Mapping, default "montavon"
        A name in :data:`~interpret_segmentation.methods.lrp.rules.RULE_SETS` or a mapping from layer
        names or ``nn.Module`` types to :class:`~interpret_segmentation.methods.lrp.rules.Rule`
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
    if is_int(target):
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


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` holds ``b``'s values, up to float rounding."""
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    if a.numel() == 0:
        return True
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(b.abs().max())))


class _Recording:
    """Forward hooks that record each leaf's input shape, the inputs the backward pass reads
    and the outputs ``keep`` asks for, and check that the model's forward applies the leaves in
    order (see the module docstring). Nothing else is kept, so memory is freed as in a plain
    forward pass."""

    def __init__(self, leaves: list[tuple[str, nn.Module]], x: torch.Tensor, keep: list[bool]):
        self.leaves = leaves
        self.keep = keep  # whose output to keep
        self.reads = [isinstance(module, _READS_INPUT) for _, module in leaves]
        self.inputs: list[torch.Tensor | None] = [None] * len(leaves)
        self.input_versions = [0] * len(leaves)
        self.shapes: list[torch.Size | None] = [None] * len(leaves)
        self.outputs: list[torch.Tensor | None] = [None] * len(leaves)
        self.output_versions = [0] * len(leaves)
        self.position = 0  # the leaf expected next
        self.last, self.last_version, self.last_name = x, x._version, "the model input"
        self.weighted = -1  # the last kept output, which an in-place leaf may overwrite
        self.running: int | None = None  # the leaf whose forward runs
        self.converted: int | None = None  # the max-pooling that got a channels-last copy

    def _refuse(self, detail: str) -> ValueError:
        return ValueError(f"{_NOT_THE_LEAVES}; {detail}")

    def _is_last(self, tensor) -> bool:
        """Whether ``tensor`` is (or has the values of) the output of the last leaf."""
        if tensor is self.last:
            return tensor._version == self.last_version  # else changed in place in between
        return isinstance(tensor, torch.Tensor) and _same_values(tensor, self.last)

    def before(self, index: int, module: nn.Module, args: tuple, kwargs: dict):
        name = self.leaves[index][0]
        if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
            raise self._refuse(f"layer {name!r} is called with {len(args)} positional and "
                               f"{len(kwargs)} keyword arguments, expected one tensor")
        if index < self.position:
            raise self._refuse(f"layer {name!r} runs more than once, or after layer "
                               f"{self.leaves[self.position - 1][0]!r}")
        for skipped in range(self.position, index):
            skipped_name, skipped_module = self.leaves[skipped]
            if not isinstance(skipped_module, _SKIPPABLE):
                raise self._refuse(f"layer {name!r} runs before layer {skipped_name!r}")
            self.shapes[skipped] = self.last.shape
        a = args[0]
        if not self._is_last(a):
            raise self._refuse(f"the input of layer {name!r} is not the output of "
                               f"{self.last_name}")
        if getattr(module, "inplace", False) and self.weighted >= 0:
            z = self.outputs[self.weighted]
            if z.untyped_storage().data_ptr() == a.untyped_storage().data_ptr():
                # the layer is about to overwrite the pre-activation the rule reads
                z = self.outputs[self.weighted] = z.clone()
                self.output_versions[self.weighted] = z._version
        self.shapes[index] = a.shape
        replaced = None
        if isinstance(module, nn.MaxPool2d) and channels_last_pays(a):
            # same values, several times faster on the CPU; the output goes back to (B, C, H, W)
            # in after(), and the backward pass pools the stored copy again without converting
            a = replaced = a.contiguous(memory_format=torch.channels_last)
            self.converted = index
        if self.reads[index]:
            self.inputs[index], self.input_versions[index] = a, a._version
        self.running = index
        return None if replaced is None else ((replaced,), kwargs)

    def after(self, index: int, module: nn.Module, args: tuple, output):
        name = self.leaves[index][0]
        if not isinstance(output, torch.Tensor):
            raise self._refuse(f"layer {name!r} returns a {type(output).__name__}, "
                               f"expected a tensor")
        replaced = None
        if self.converted == index:
            output = replaced = output.contiguous()  # back from channels-last (see before())
            self.converted = None
        if self.keep[index]:
            self.outputs[index], self.output_versions[index] = output, output._version
            self.weighted = index
        self.last, self.last_version, self.last_name = output, output._version, f"layer {name!r}"
        self.position = index + 1
        self.running = None
        return replaced

    def finish(self, out) -> None:
        """Check the end of the forward pass; forget any output changed in place since."""
        for skipped in range(self.position, len(self.leaves)):
            skipped_name, skipped_module = self.leaves[skipped]
            if not isinstance(skipped_module, _SKIPPABLE):
                raise self._refuse(f"layer {skipped_name!r} does not run")
            self.shapes[skipped] = self.last.shape
        if not isinstance(out, torch.Tensor):
            raise self._refuse(f"the model returns a {type(out).__name__}, expected a tensor")
        if not self._is_last(out):
            raise self._refuse(f"the model output is not the output of {self.last_name}")
        for index, (name, _) in enumerate(self.leaves):
            a = self.inputs[index]
            if a is not None and a._version != self.input_versions[index]:
                raise self._refuse(f"the input of layer {name!r} is changed in place after "
                                   f"the layer ran")
            z = self.outputs[index]
            if z is not None and z._version != self.output_versions[index]:
                self.outputs[index] = None  # overwritten: the rule computes z again


def _record(model: nn.Module, leaves: list[tuple[str, nn.Module]], x: torch.Tensor,
            keep: list[bool]):
    """Run the model's forward pass once with recording hooks; returns the inputs of the
    leaves whose backward pass reads them (None elsewhere), every leaf's input shape, the
    outputs where ``keep`` says so (None elsewhere, or where overwritten since) and the model
    output."""
    recording = _Recording(leaves, x, keep)
    handles = []
    try:
        for index, (_, module) in enumerate(leaves):
            handles.append(module.register_forward_pre_hook(
                functools.partial(recording.before, index), with_kwargs=True))
            handles.append(module.register_forward_hook(functools.partial(recording.after, index)))
        with torch.no_grad():
            try:
                out = model(x)
            except RuntimeError as error:
                if recording.running is None:
                    raise
                name, module = leaves[recording.running]
                shape = tuple(recording.shapes[recording.running])
                raise ValueError(
                    f"model: its forward pass fails at layer {name!r} ({type(module).__name__}) "
                    f"on an input of shape {shape}: {error}"
                ) from error
    finally:
        for handle in handles:
            handle.remove()
    recording.finish(out)
    return recording.inputs, recording.shapes, recording.outputs, out


_TAKES_OUTPUT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _takes_output(rule: Rule) -> bool:
    """Whether ``rule.propagate`` accepts the keyword ``output`` (a user's rule may not) and
    uses it."""
    if not rule._reads_output():
        return False
    function = type(rule).propagate
    try:
        return _TAKES_OUTPUT[function]
    except (KeyError, TypeError):
        pass
    try:
        parameters = inspect.signature(function).parameters.values()
        takes = any(p.name == "output" or p.kind is p.VAR_KEYWORD for p in parameters)
    except (TypeError, ValueError):
        takes = False
    try:
        _TAKES_OUTPUT[function] = takes
    except TypeError:
        pass
    return takes


def _pass_back(module: nn.Module, inputs: torch.Tensor | None, shape: torch.Size,
               relevance: torch.Tensor, rule: Rule | None,
               output: torch.Tensor | None) -> torch.Tensor:
    if isinstance(module, _WEIGHTED):
        if output is not None:  # kept only for a rule that takes it
            return rule.propagate(module, inputs, relevance, output=output)
        return rule.propagate(module, inputs, relevance)
    if isinstance(module, nn.Flatten):
        return relevance.reshape(shape)
    if isinstance(module, nn.MaxPool2d):
        return rule.propagate(module, inputs, relevance)
    if isinstance(module, _AVERAGES):
        return _redistribute(module, inputs, relevance)
    return relevance  # ReLU, Dropout, Identity, empty Sequential


def relevance(model: nn.Module, x: torch.Tensor, target, rule_set: str | Mapping = "montavon",
              return_layers: bool = False, average_flips: bool = False):
    """Layer-wise Relevance Propagation of one class logit of a classifier to its input.

    The relevance of the target class's logit (one-hot times the logit, i.e. the other
    logits start at 0) is propagated from the output back to the input, layer by layer, with
    the rule each ``Conv2d``/``Linear`` layer gets from ``rule_set`` (Bach et al., 2015;
    Montavon et al., 2019; seed 003, section 3.3). The model runs in eval mode, with
    ``BatchNorm2d`` folded into the convolution before it. Its forward pass runs once, with
    forward hooks on the leaf modules that record the activations and check that the forward
    applies the leaves in order (module docstring); afterwards its parameters, layers, hooks
    and train/eval modes are as before, also after an error.

    Parameters
    ----------
    model : nn.Module
        A classifier returning logits (B, K), made of the leaf modules listed in the module
        docstring and applying them in ``named_modules()`` order (checked while its forward
        pass runs; see the module docstring).
    x : torch.Tensor
        Images (B, C, H, W), floating point; moved to the device and dtype of the model's
        parameters.
    target : int or sequence of int or torch.Tensor
        The class to explain: one index for every image, or B indices (a sequence, a (B,)
        integer tensor or array), each in ``[0, K)``.
    rule_set : str or Mapping, default "montavon"
        ``"montavon"`` or ``"seibold"`` (:data:`~interpret_segmentation.methods.lrp.rules.RULE_SETS`,
        for the layer names of :class:`~interpret_segmentation.models.vgg.VGG11`), ``"epsilon"``
        (any model), or a mapping from layer names or types to rules, e.g. ``{"conv1_1": ZBox(), nn.Linear:
        Epsilon()}``; see :func:`layer_rules` for the matching. ``{}`` is LRP-0 everywhere.
    return_layers : bool, default False
        Also return the relevance at the input of every leaf layer.
    average_flips : bool, default False
        Propagate the image and its three mirror images (:data:`FLIPS`), flip each input
        relevance back and average the four (not in seed 003; four times the work). For a
        classifier trained with flips, this evens out where a max-pooling window's winner
        or a filter's asymmetry puts relevance on one side of an object. Not with
        ``return_layers``.

    Returns
    -------
    torch.Tensor
        Input relevance (B, C, H, W), detached; with LRP-0/z^B and no biases its sum over
        (C, H, W) equals the target logit (conservation; with ``average_flips`` the mean of
        the four images' logits).
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
        order or fails inside one of them, or a model output that is not (B, K).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    return_layers = check_bool(return_layers, "return_layers")
    average_flips = check_bool(average_flips, "average_flips")
    if return_layers and average_flips:
        raise ValueError("return_layers: the layers' relevance of four mirror images has no "
                         "one meaning; expected return_layers=False with average_flips=True")
    _check_input(x)
    wanted = _targets(target, x.shape[0])
    if average_flips:
        return _propagate_mirrored(model, x, functools.partial(_one_hot, wanted=wanted),
                                   rule_set, True)[0]
    current, layers, _ = _propagate(model, x, functools.partial(_one_hot, wanted=wanted),
                                    rule_set, return_layers)
    return (current, layers) if return_layers else current


def _propagate_mirrored(model: nn.Module, x: torch.Tensor, start, rule_set,
                        average_flips: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Input relevance of ``x`` and its logits; with ``average_flips`` the relevance is the
    mean over :data:`FLIPS` of each mirror image's, flipped back (the logits stay ``x``'s own,
    ``FLIPS[0]`` being ``x`` itself)."""
    maps, logits = [], None
    for dims in FLIPS if average_flips else FLIPS[:1]:
        found, _, output = _propagate(model, x.flip(dims), start, rule_set)
        maps.append(found.flip(dims))
        logits = output if logits is None else logits
    return torch.stack(maps).mean(0), logits


def _one_hot(out: torch.Tensor, wanted: torch.Tensor | int) -> torch.Tensor:
    """The relevance LRP starts from: each image's ``wanted`` logit of ``out`` (B, K), the
    other logits 0 (ValueError naming ``target`` for an index outside the K classes)."""
    classes = out.shape[1]
    index = torch.full((out.shape[0],), wanted) if isinstance(wanted, int) else wanted
    if (index < 0).any() or (index >= classes).any():
        raise ValueError(f"target: expected class indices in [0, {classes}), "
                         f"got {index.tolist() if index.numel() <= 16 else wanted}")
    index = index.to(out.device)
    current = torch.zeros_like(out)
    rows = torch.arange(out.shape[0], device=out.device)
    current[rows, index] = out[rows, index]
    return current


def _propagate(model: nn.Module, x: torch.Tensor, start, rule_set, return_layers: bool = False):
    """The work of :func:`relevance` for a checked batch ``x``: one recorded forward pass,
    ``start(logits)`` -> the output relevance (B, K), then the layers backwards.

    Returns the input relevance, the per-layer relevance (a dict, empty unless
    ``return_layers``) and the model's logits (B, K), all detached.
    """
    parameter = next(model.parameters(), None)
    x = x.detach()
    if parameter is not None:
        x = x.to(device=parameter.device, dtype=parameter.dtype)
    if x.is_inference():  # the recording reads version counters, which inference tensors lack
        with torch.inference_mode(False):
            x = x.clone()

    # evaluation_mode restores every module's mode; nothing to restore when all are in eval mode
    modes = (evaluation_mode(model) if any(module.training for module in model.modules())
             else contextlib.nullcontext())
    with torch.inference_mode(False), modes, folded_batchnorm(model):
        leaves = _leaves(model)
        rules = _resolve(leaves, rule_set)
        keep = [name in rules and _takes_output(rules[name]) for name, _ in leaves]
        inputs, shapes, outputs, out = _record(model, leaves, x, keep)
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise ValueError(f"model output: expected logits (B, K) = ({x.shape[0]}, K), "
                             f"got shape {tuple(out.shape)}")
        current = start(out)

        layers = {}
        for position in reversed(range(len(leaves))):
            name, module = leaves[position]
            current = _pass_back(module, inputs[position], shapes[position], current,
                                 rules.get(name), outputs[position])
            inputs[position] = outputs[position] = None  # free what is no longer needed
            if return_layers:
                layers[name] = current
    return current, dict(reversed(layers.items())), out
