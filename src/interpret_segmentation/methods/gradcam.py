"""Seg-Grad-CAM (Vinogradova et al., 2020): Grad-CAM for a region of a segmentation.

The score explained is the sum of class ``l``'s logits over the target pixels (voxels). The
feature maps ``A`` (K channels) of a chosen layer are weighted by the mean over all spatial
axes of the score's gradient with respect to them and summed over channels; the paper then
applies ReLU:

    map = ReLU(sum_k mean_u(d score / d A_k[u]) * A_k)

and the map is upsampled to the input size (bilinearly for images, trilinearly for volumes).
With ``relu=False`` the signed sum is kept: its negative part shows where the layer's features
speak against the class. Seed 001 uses Seg-Grad-CAM on the bottleneck layer as a baseline for
MiSuRe, thresholded at 0.05 and 0.1 of the map's range.

A layer's output is read as a feature map (B, K, *grid) by :func:`read_layout`: channel-first
maps as they are, channel-last ones (Swin blocks' (B, h, w, C)) when only that reading has the
input's proportions, tokens (B, N, C) of ViT, Swin or UNETR blocks on the grid of the input's
proportions that holds them (after dropping leading class or register tokens), or through a
user's ``reshape`` function. :func:`candidate_layers` lists the layers that feed the explained
output, deepest first, and the one the explainer picks by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core import Explainer, Explanation, Item
from ..core.model import as_image_batch
from ..core.validate import check_bool, check_finite
from ..models.unet import UNet

MAX_LEADING_TOKENS = 8
"""Leading tokens (class, distillation, register tokens) a token output may carry before its grid."""

INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}

CHOOSE = ("choose a layer that runs once and feeds the output: interpret_segmentation.methods."
          "gradcam.candidate_layers(model, image) lists them")


# -- reading a layer's output as a feature map ---------------------------------------------

def proportional(grid, spatial) -> bool:
    """Whether ``grid`` could be the input's spatial shape ``spatial`` divided by one stride.

    True when some integer f >= 1 gives floor(spatial_i / f) <= grid_i <= ceil(spatial_i / f)
    on every axis (any chain of strided convolutions, pooling, patch embeddings and patch
    merging rounds each side within those bounds), and the grid keeps the input's order of
    sides (equal sides stay equal, a longer side never becomes shorter).
    """
    grid, spatial = tuple(grid), tuple(spatial)
    if len(grid) != len(spatial) or min(grid, default=0) < 1:
        return False
    for i in range(len(grid)):
        for j in range(len(grid)):
            if spatial[i] == spatial[j] and grid[i] != grid[j]:
                return False
            if spatial[i] < spatial[j] and grid[i] > grid[j]:
                return False
    return any(all(size // stride <= side <= -(-size // stride)
                   for side, size in zip(grid, spatial))
               for stride in range(1, max(spatial) + 1))


def _spread(grid, spatial) -> float:
    ratios = [math.log(size / side) for side, size in zip(grid, spatial)]
    return max(ratios) - min(ratios)


def _divisors(number: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(number) + 1) if number % d == 0]
    return sorted(set(small + [number // d for d in small]))


def _factorisations(number: int, axes: int):
    """Every tuple of ``axes`` positive ints whose product is ``number``."""
    if axes == 1:
        yield (number,)
        return
    for first in _divisors(number):
        for rest in _factorisations(number // first, axes - 1):
            yield (first, *rest)


def token_grid(tokens: int, spatial) -> tuple[int, tuple[int, ...]] | None:
    """(leading tokens to drop, grid) for ``tokens`` tokens of an input of shape ``spatial``.

    The fewest leading tokens (0 .. :data:`MAX_LEADING_TOKENS`, fewer than the rest) after
    which the rest fill a grid :func:`proportional` to the input: a square grid for a square
    image (N = g^2, or 1 + g^2 with a class token), a cube for a cubic volume, the input's
    proportions otherwise; of several such grids the closest in proportion. None when there
    is none. The tokens are taken to be in row-major order after the extra ones (as ViT, Swin,
    UNETR and SegFormer keep them); other orders need a ``reshape`` function.
    """
    for leading in range(min(MAX_LEADING_TOKENS, (tokens - 1) // 2) + 1):
        grids = [grid for grid in _factorisations(tokens - leading, len(spatial))
                 if proportional(grid, spatial)]
        if grids:
            return leading, min(grids, key=lambda grid: _spread(grid, spatial))
    return None


@dataclass(frozen=True)
class Layout:
    """How a layer's output is read as a feature map (B, channels, *grid).

    ``kind`` is "channels_first" (B, K, *grid), "channels_last" (B, *grid, K), "tokens"
    (B, leading + prod(grid), K) or "reshape" (a user's function). Calling the layout on a
    tensor shaped as the layer's output (its values or its gradient) gives the feature map.
    """

    kind: str
    grid: tuple[int, ...]
    channels: int
    leading: int = 0
    reshape: Callable | None = None

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.kind == "channels_first":
            return tensor
        if self.kind == "channels_last":
            return tensor.movedim(-1, 1)
        if self.kind == "tokens":
            grid = tensor[:, self.leading:].transpose(1, 2)
            return grid.reshape(*grid.shape[:2], *self.grid)
        return self.reshape(tensor)

    def describe(self) -> str:
        grid = " x ".join(map(str, self.grid))
        if self.kind == "tokens":
            dropped = f", {self.leading} leading token(s) dropped" if self.leading else ""
            return f"tokens on a {grid} grid{dropped}"
        return {"channels_first": "feature maps", "channels_last": "channel-last feature maps",
                "reshape": "reshape="}[self.kind] + f" ({grid})"


def read_layout(shape, spatial, reshape: Callable | None = None,
                example: torch.Tensor | None = None, batch: int | None = None) -> Layout:
    """The :class:`Layout` of a layer output of ``shape`` for an input of spatial shape ``spatial``.

    Parameters
    ----------
    shape : tuple of int
        The layer's output shape, batch first.
    spatial : tuple of int
        The input's (H, W) or (D, H, W).
    reshape : callable, optional
        tensor -> (B, C, *grid): the user's reading, used as it is (it must only rearrange
        and select values, as it is applied to the gradient too). ``example`` (a tensor of
        ``shape``) is passed through it to check what it returns.
    batch : int, optional
        The input's batch size, which the feature map's first axis must be (window attention
        runs windows along it; a reshape function must give it back).

    Without ``reshape``, an output with 2 + len(spatial) axes is channel-first (B, K, *grid),
    unless only the channel-last reading (B, *grid, K) is :func:`proportional` to the input;
    an output (B, N, C) holds tokens (:func:`token_grid`).

    Raises
    ------
    ValueError
        For outputs it cannot read (naming the shape and what would be needed).
    """
    shape, spatial, axes = tuple(shape), tuple(spatial), len(spatial)
    batch = shape[0] if batch is None else batch
    if reshape is not None:
        probe = example if example is not None else torch.zeros(shape)
        with torch.no_grad():
            out = reshape(probe)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 + axes or out.shape[0] != batch:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            grid = "h, w" if axes == 2 else "d, h, w"
            raise ValueError(f"reshape: expected a function returning a feature map (B, C, "
                             f"{grid}) with B = {batch}, got {got} for a layer output {shape}")
        return Layout("reshape", tuple(out.shape[2:]), out.shape[1], reshape=reshape)
    if shape and shape[0] != batch:
        raise ValueError(f"output {shape}: its first axis is not the batch ({batch}) (windows or "
                         "heads along it?); pass reshape=, a function output -> (B, C, *grid)")
    if len(shape) == 2 + axes:
        first, last = shape[2:], shape[1:-1]
        if not proportional(first, spatial) and proportional(last, spatial):
            return Layout("channels_last", last, shape[-1])
        return Layout("channels_first", first, shape[1])
    if len(shape) == 3:
        found = token_grid(shape[1], spatial)
        if found is None:
            raise ValueError(
                f"tokens {shape}: no grid of the input's proportions {spatial} holds {shape[1]} "
                f"tokens (nor after dropping up to {MAX_LEADING_TOKENS} leading ones); pass "
                "reshape=, a function tokens -> (B, C, *grid)")
        leading, grid = found
        return Layout("tokens", grid, shape[2], leading)
    raise ValueError(f"output {shape}: expected a feature map (B, K, *grid) with {axes} spatial "
                     f"axes, channel-last (B, *grid, C) or tokens (B, N, C); pass reshape=, a "
                     "function output -> (B, C, *grid)")


def weighted_feature_map(features: torch.Tensor, gradient: torch.Tensor,
                         relu: bool = True) -> torch.Tensor:
    """The Grad-CAM map of feature maps and their gradient, both (B, K, *grid): (B, 1, *grid).

    ``sum_k mean_u(gradient_k) * features_k``, the mean over every spatial axis, through ReLU
    when ``relu`` (default True).
    """
    weights = gradient.mean(dim=tuple(range(2, gradient.ndim)), keepdim=True)
    layer_map = (weights * features).sum(1, keepdim=True)
    return torch.relu(layer_map) if relu else layer_map


# -- which layers feed the output ------------------------------------------------------------

def _layer_tensor(output) -> torch.Tensor | None:
    """A layer's tensor output: itself, or the first element of a tuple or list."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    return output if isinstance(output, torch.Tensor) else None


PASSING = ("Upsample", "_Upsample", "View", "Reshape", "Unsafe", "Permute", "Transpose",
           "Squeeze", "Unsqueeze", "Clone", "ToCopy", "Slice", "Expand", "Alias", "Add", "Sub",
           "Cat", "Neg", "Log", "Clamp", "Div")
"""Autograd nodes (by name prefix) between a model's logits and the scores explained: resizing,
rearranging, adding up, and the adapter's own reading (log-odds, the one-channel [-z, z])."""


def _producers(scores: torch.Tensor, nodes: dict) -> list:
    """The records whose outputs make ``scores`` up to the operations in :data:`PASSING`: the
    layers that make the model's output (its logits)."""
    found, seen = [], set()
    queue = [scores.grad_fn]
    while queue and len(seen) < 256:
        node = queue.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in nodes:
            found.append(nodes[node])
        elif type(node).__name__.startswith(PASSING):
            queue.extend(next_node for next_node, _ in node.next_functions)
    return found


@dataclass
class LayerRecord:
    """One submodule in a survey forward pass: its name, how often it ran, its (first) tensor
    output, when it finished, its :class:`Layout` and why it cannot be used (None if it can)."""

    name: str
    module: nn.Module
    calls: int = 0
    output: torch.Tensor | None = None
    inputs: tuple = ()
    finished: int = -1
    layout: Layout | None = None
    problem: str | None = None
    is_output: bool = False
    pooled: bool = False

    @property
    def positions(self) -> int:
        return math.prod(self.layout.grid)


ADAPTIVE_POOLING = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)


def _mark_pooled(called: list[LayerRecord]) -> None:
    """Mark the layers that work on a pooled summary of the image: an adaptive pooling's
    output and the layers after it at its grid (pyramid pooling branches, PSP and ASPP): their
    few positions are bins of context, not a coarse map of the image."""
    pooled: dict[int, tuple] = {}
    for record in called:
        tensor = record.output
        if tensor is None or tensor.ndim < 3:
            continue
        grid = tuple(tensor.shape[2:])
        fed = any(pooled.get(id(t)) == grid for t in record.inputs)
        if isinstance(record.module, ADAPTIVE_POOLING) or id(tensor) in pooled or fed:
            record.pooled = True
            pooled[id(tensor)] = grid


def survey_layers(model, run: Callable[[], torch.Tensor], spatial) -> list[LayerRecord]:
    """Run ``run()`` (the explained scores, differentiable) once with temporary forward hooks
    on every named submodule of ``model`` and say, for each, whether Seg-Grad-CAM can use it.

    A layer cannot be used when it runs more than once in the pass, returns no tensor, returns
    something :func:`read_layout` cannot read as a feature map, or does not feed the explained
    output (no gradient flows from it to the scores: auxiliary and deep-supervision heads). A
    layer whose output is the same tensor as a later one's (a container and its last child, an
    in-place activation) is left to the later one. Hooks are removed afterwards, also on error.

    Returns
    -------
    list of LayerRecord, in the order the layers finished (those never called left out).
    """
    records = {name: LayerRecord(name, module) for name, module in model.named_modules() if name}
    finished = [0]

    def hook_for(record: LayerRecord):
        def hook(module, inputs, output):
            record.calls += 1
            if record.calls == 1:
                record.output = _layer_tensor(output)
                record.inputs = tuple(t for t in inputs if isinstance(t, torch.Tensor))
                record.finished = finished[0]
                finished[0] += 1
        return hook

    handles = []
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(hook_for(records[name])))
        with torch.enable_grad():
            scores = run()
            called = sorted((r for r in records.values() if r.calls), key=lambda r: r.finished)
            _judge(called, scores, spatial, len(scores))
            _mark_pooled(called)
            nodes = {r.output.grad_fn: r for r in called
                     if r.problem is None and r.output.grad_fn is not None}
            for producer in _producers(scores, nodes):
                producer.is_output = True
    finally:
        for handle in handles:
            handle.remove()
    for record in called:
        record.output, record.inputs = None, ()  # the survey keeps no activations
    return called


def _judge(called: list[LayerRecord], scores: torch.Tensor, spatial, batch: int) -> None:
    """Fill in each record's layout and problem (see :func:`survey_layers`)."""
    last_owner = {}
    for record in called:
        if record.output is not None:
            last_owner[id(record.output)] = record.name
    differentiable = []
    for record in called:
        tensor = record.output
        if record.calls > 1:
            record.problem = (f"runs {record.calls} times in one forward pass (a module used in "
                              "several places); Seg-Grad-CAM needs the one feature map it returns")
        elif tensor is None:
            record.problem = "returns no tensor (nor a tuple or list starting with one)"
        elif last_owner[id(tensor)] != record.name:
            record.problem = f"returns the same tensor as {last_owner[id(tensor)]!r}"
        elif not tensor.is_floating_point() or not tensor.requires_grad:
            record.problem = ("does not feed the explained output (its output does not depend "
                              "on the image through a differentiable path)")
        else:
            try:
                record.layout = read_layout(tensor.shape, spatial, batch=batch)
            except ValueError as error:
                record.problem = f"returns {error}"
                continue
            differentiable.append(record)
    if not differentiable:
        return
    gradients = [None] * len(differentiable)
    if scores.requires_grad:
        gradients = torch.autograd.grad(scores.sum(), [r.output for r in differentiable],
                                        allow_unused=True)
    for record, gradient in zip(differentiable, gradients):
        if gradient is None:
            record.problem = ("does not feed the explained output (an auxiliary or "
                              "deep-supervision head, or a branch the output does not use)")
            record.layout = None


def default_layer(model: nn.Module, records: list[LayerRecord], spatial) -> str | None:
    """The layer Seg-Grad-CAM explains by default.

    ``"bottleneck"`` for the library's :class:`~interpret_segmentation.models.UNet` (seed
    001's choice). For other models the deepest usable feature map: of the layers that run
    once, feed the explained output and return a feature map of more than one position, the
    coarsest (fewest positions along the input's longest axis, where rounding matters least:
    a bottleneck, the last stage of an encoder), and of those the last to finish (the end of
    the deepest block). Left out: layers that make the model's output (its logits, up to
    resizing and adding), pooled context (an adaptive pooling and the layers after it at its
    grid, as in pyramid pooling heads), and tokens whose grid no feature map of the model has
    (a token count may fit a grid by chance: object queries, attention windows), unless the
    model has no feature map at all (a pure transformer). None when no layer qualifies.
    """
    if isinstance(model, UNet):
        return "bottleneck"
    usable = [r for r in records if r.problem is None and not r.is_output and not r.pooled
              and r.positions > 1]
    maps = [r for r in usable if r.layout.kind != "tokens"]
    grids = {r.layout.grid for r in maps}
    if maps:
        usable = [r for r in usable if r.layout.kind != "tokens" or r.layout.grid in grids]
    return deepest_first(usable, spatial)[0].name if usable else None


def deepest_first(records: list[LayerRecord], spatial) -> list[LayerRecord]:
    """``records`` ordered coarsest first: by their grid's size along the input's longest
    axis (``spatial``), then the last to finish first."""
    longest = max(range(len(spatial)), key=lambda axis: spatial[axis])
    return sorted(records, key=lambda record: (record.layout.grid[longest], -record.finished))


class CandidateLayer(NamedTuple):
    """A layer Seg-Grad-CAM can use: its dotted name and its feature map's shape (1, K, *grid)."""

    name: str
    shape: tuple[int, ...]


class CandidateLayers(list):
    """:func:`candidate_layers`' answer: a list of :class:`CandidateLayer`, deepest first.

    Attributes
    ----------
    default : str or None
        The layer :class:`SegGradCAM` picks when ``layer=None`` (see :func:`default_layer`).
    layouts : dict
        Name -> how its output is read (:meth:`Layout.describe`).
    excluded : dict
        Name -> why a layer that ran cannot be used (runs several times, does not feed the
        output, returns no feature map, ...).
    """

    def __init__(self, layers, default, layouts, excluded):
        super().__init__(layers)
        self.default, self.layouts, self.excluded = default, layouts, excluded

    def __str__(self) -> str:
        lines = [f"{'*' if layer.name == self.default else ' '} {layer.name}  {layer.shape}  "
                 f"{self.layouts[layer.name]}" for layer in self]
        lines.append(f"default (*): {self.default}")
        lines += [f"  not usable: {name}: {why}" for name, why in self.excluded.items()]
        return "\n".join(lines)


def candidate_layers(model: nn.Module, image, **options) -> CandidateLayers:
    """The layers of ``model`` Seg-Grad-CAM can explain ``image`` with, deepest first.

    Runs the model once forward and once backward on ``image`` (hooks removed afterwards,
    also on error; the model is left as it was) and lists every submodule that runs once,
    feeds the explained output and returns something read as a feature map
    (:func:`read_layout`), with the feature map's shape. "Deepest" means the coarsest map
    (:func:`deepest_first`: fewest positions along the input's longest axis), then the last to
    finish. The readings are the automatic ones; a ``reshape`` option is not used here.

    Parameters
    ----------
    model : nn.Module
    image : array or tensor
        As for :meth:`SegGradCAM.explain`.
    **options
        As for :class:`SegGradCAM` (``spatial_dims``, ``output``, ``read``, ``device``, ...).

    Returns
    -------
    CandidateLayers
        A list of ``(name, shape)`` with ``.default`` (the layer picked when ``layer=None``),
        ``.layouts`` and ``.excluded`` (why the other layers that ran cannot be used); print
        it for a table.
    """
    return SegGradCAM(model, progress=False, **options).candidate_layers(image)


# -- the explainer ------------------------------------------------------------------------

def resolve_layer(model: nn.Module, layer) -> tuple[str | None, nn.Module | None]:
    """``layer`` as its dotted name and a module of ``model``.

    ``layer`` is a submodule, a dotted name such as ``"bottleneck"`` or ``"encoder.3.conv"``,
    or None: the bottleneck of the library's :class:`~interpret_segmentation.models.UNet`, and
    (None, None) for other models, whose default is found on the first image
    (:func:`default_layer`).
    """
    if layer is None:
        if isinstance(model, UNet):
            return "bottleneck", model.bottleneck
        return None, None
    names = {module: name for name, module in model.named_modules()}
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer not in modules or not layer:
            shown = ", ".join(name for name in list(modules)[1:12])
            raise ValueError(f"layer: {layer!r} is not a submodule of the model (some names: "
                             f"{shown}, ...)")
        return layer, modules[layer]
    if isinstance(layer, nn.Module):
        if layer not in names or layer is model:
            raise ValueError("layer: the module given is not part of the model (or is the "
                             "model itself)")
        return names[layer], layer
    raise TypeError(f"layer: expected a module, a dotted name or None, got {type(layer).__name__}")


class SegGradCAM(Explainer):
    """Seg-Grad-CAM through the common entry point, for images and volumes.

    Parameters
    ----------
    model : nn.Module
        Seg-Grad-CAM reads a layer's output and its gradient, so it needs the module (a
        plain callable is refused with a TypeError).
    layer : nn.Module, str or None, default None
        The layer whose output is weighted: a submodule or its dotted name. None means
        ``model.bottleneck`` for the library's UNet (the deepest feature map, after the
        global-context path) and, for other models, the deepest layer that feeds the output
        (:func:`default_layer`), found on the first image explained and kept.
    relu : bool, default True
        True: the paper's map, the ReLU of the weighted sum of feature maps (non-negative).
        False: the signed sum, negative where the layer's features lower the score.
    reshape : callable, optional
        The layer's output -> feature maps (B, C, *grid), for outputs :func:`read_layout`
        cannot read by itself (tokens with no grid of the input's proportions, a channel-last
        map whose channel count could be a side). It is applied to the gradient as well, so it
        must only rearrange and select values (as pytorch-grad-cam's ``reshape_transform``).
    spatial_dims, output, activation, read, device, progress, ...
        As for every explainer; Seg-Grad-CAM runs one forward and one backward pass, on the
        model as built (it never folds BatchNorm).

    The Explanation's ``saliency`` (*S) is the raw map (not normalised); ``arrays
    ["layer_map"]`` the map at the layer's resolution; ``info["layer"]`` the layer's name,
    ``info["layout"]`` how its output was read, ``info["score"]`` the summed logit that was
    explained, ``info["target_empty"]`` and ``info["layer_shape"]`` (the feature map's shape).
    ``parameters`` records the layer's name, ``relu`` and the reshape function's name.

    Raises
    ------
    ValueError
        When the layer runs more than once in a forward pass, does not feed the explained
        output (an auxiliary or deep-supervision head), is not called, or returns nothing
        read as a feature map; each names the layer and says why.
    """

    method = "gradcam"

    def __init__(self, model, layer=None, relu: bool = True, reshape: Callable | None = None,
                 **options):
        if options.pop("fold_batchnorm", False):
            raise ValueError("fold_batchnorm: Seg-Grad-CAM reads its layer's own output, which "
                             "folding would change; expected False, got True")
        relu = check_bool(relu, "relu")
        if reshape is not None and not callable(reshape):
            raise TypeError(f"reshape: expected a function output -> (B, C, *grid) or None, got "
                            f"{type(reshape).__name__}")
        super().__init__(model, **options, fold_batchnorm=False)
        self.model.require_module("Seg-Grad-CAM", "it reads a layer's output and its gradient")
        self.layer_name, self.layer = resolve_layer(model, layer)
        self.relu = bool(relu)
        self.reshape = reshape

    def settings(self) -> dict:
        """The method's parameters, as recorded in each Explanation."""
        reshape = None if self.reshape is None else getattr(
            self.reshape, "__qualname__", type(self.reshape).__name__)
        return {"layer": self.layer_name, "relu": self.relu, "reshape": reshape}

    def candidate_layers(self, image) -> CandidateLayers:
        """:func:`candidate_layers` of this explainer's model and options for ``image``."""
        batch = as_image_batch(image, "image", spatial_dims=self.spatial_dims)
        with self.prepared_model():
            records = self._survey(batch.to(self.model.device))
        spatial = tuple(batch.shape[2:])
        usable = deepest_first([r for r in records if r.problem is None], spatial)
        layers = [CandidateLayer(r.name, (len(batch), r.layout.channels, *r.layout.grid))
                  for r in usable]
        notes = {r.name: ", makes the model's output" if r.is_output
                 else ", pooled context" if r.pooled else "" for r in usable}
        return CandidateLayers(layers, default_layer(self.model.model, records, spatial),
                               {r.name: r.layout.describe() + notes[r.name] for r in usable},
                               {r.name: r.problem for r in records if r.problem is not None})

    def _survey(self, batch: torch.Tensor) -> list[LayerRecord]:
        return survey_layers(
            self.model.model,
            lambda: self.model.scores(batch.detach().clone().requires_grad_(True),
                                      where="on the unperturbed image"),
            tuple(batch.shape[2:]))

    def _chosen_layer(self, item: Item) -> None:
        """Find the default layer on the first image explained (models other than UNet)."""
        if self.layer is not None:
            return
        records = self._survey(item.image)
        name = default_layer(self.model.model, records, item.spatial_shape)
        if name is None:
            raise ValueError(
                "layer: no default for this model: no layer that runs once and feeds the output "
                "returns a feature map of more than one position; pass a module or a dotted "
                "name (interpret_segmentation.methods.gradcam.candidate_layers(model, image) "
                "lists the layers and why the others cannot be used)")
        self.layer_name, self.layer = name, dict(self.model.model.named_modules())[name]

    def _explain(self, item: Item) -> Explanation:
        self._chosen_layer(item)
        features, gradient, score, layout = self._features_and_gradient(item)
        layer_map = weighted_feature_map(features, gradient, self.relu)
        saliency = F.interpolate(layer_map, size=tuple(item.image.shape[2:]),
                                 mode=INTERPOLATION[item.image.ndim - 2], align_corners=False)
        return self.explanation(
            item, saliency[0, 0],
            arrays={"layer_map": layer_map[0, 0].cpu().numpy().astype(np.float32)},
            info={"layer": self.layer_name, "layout": layout.describe(), "score": score,
                  "target_empty": not bool(item.target.pixels.any()),
                  "layer_shape": list(features.shape)})

    def _features_and_gradient(self, item: Item
                               ) -> tuple[torch.Tensor, torch.Tensor, float, Layout]:
        """The layer's feature maps (1, K, *grid), the score's gradient with respect to them
        (zero for an empty target), both float32, the score and the layout they were read by."""
        outputs = []
        handle = self.layer.register_forward_hook(
            lambda module, inputs, output: outputs.append(output))
        try:
            with torch.enable_grad():
                # the input takes part in the graph, so frozen models work as well
                scores = self.model.scores(item.image.detach().clone().requires_grad_(True),
                                           where="on the unperturbed image")
                raw = self._layer_output(outputs)
                layout = self._layout(raw, tuple(item.image.shape[2:]))
                pixels = item.target.pixels.to(scores.device, scores.dtype)
                score = (scores[0, item.target.class_index] * pixels).sum()
                gradient = None
                if raw.requires_grad and score.requires_grad:
                    gradient, = torch.autograd.grad(score, raw, allow_unused=True)
                if gradient is None:
                    raise ValueError(
                        f"layer: {self.layer_name!r} does not feed the explained output: no "
                        "gradient flows from the model's output to it (an auxiliary or "
                        f"deep-supervision head, or a branch the output does not use); {CHOOSE}")
                if not pixels.any():
                    gradient = torch.zeros_like(raw)
        finally:
            handle.remove()
        # float32 maps whatever the model's precision
        features, gradient = layout(raw.detach()).float(), layout(gradient).float()
        check_finite(features, f"layer {self.layer_name!r} output")
        check_finite(gradient, f"Seg-Grad-CAM: the gradient of the score with respect to the "
                               f"output of layer {self.layer_name!r}")
        return features, gradient, float(score.detach()), layout

    def _layer_output(self, outputs: list) -> torch.Tensor:
        """The layer's one tensor output of the pass (ValueError naming the layer otherwise)."""
        if not outputs:
            raise ValueError(f"layer: {self.layer_name!r} was not called by the model's forward "
                             f"pass; {CHOOSE}")
        if len(outputs) > 1:
            raise ValueError(f"layer: {self.layer_name!r} runs {len(outputs)} times in one "
                             "forward pass (a module used in several places), so it has no one "
                             f"feature map to explain; {CHOOSE}")
        raw = _layer_tensor(outputs[0])
        if raw is None or not raw.is_floating_point():
            raise ValueError(f"layer: {self.layer_name!r} returned "
                             f"{type(outputs[0]).__name__}, expected a float tensor (feature "
                             f"maps, channel-last maps or tokens); {CHOOSE}")
        return raw

    def _layout(self, raw: torch.Tensor, spatial: tuple[int, ...]) -> Layout:
        try:
            return read_layout(raw.shape, spatial, self.reshape,
                               example=raw.detach() if self.reshape is not None else None,
                               batch=1)
        except ValueError as error:
            if str(error).startswith("reshape:"):
                raise
            raise ValueError(f"layer: {self.layer_name!r} returned {error}") from None
