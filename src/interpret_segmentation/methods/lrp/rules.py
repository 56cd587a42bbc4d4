"""LRP rules for the layers with weights (``Conv2d`` and ``Linear``) and for max-pooling, and the
built-in rule sets.

A rule says how the relevance ``R_k`` of a layer's output units is passed to its input units
``j``. With input activations ``a_j``, weights ``w_jk`` and biases ``b_k`` (the pre-activation
is ``z_k = sum_j a_j w_jk + b_k``), the rules are those of Montavon et al., "Layer-Wise
Relevance Propagation: An Overview" (2019):

- LRP-0: ``R_j = sum_k a_j w_jk / z_k R_k``;
- LRP-epsilon: ``R_j = sum_k a_j w_jk / (z_k + eps sign(z_k)) R_k``;
- LRP-gamma: ``R_j = sum_k a_j (w_jk + gamma w_jk^+) / sum_j' a_j' (w_j'k + gamma w_j'k^+) R_k``;
- LRP-alpha-beta: ``R_j = sum_k (alpha (a_j w_jk)^+ / z_k^+ - beta (a_j w_jk)^- / z_k^-) R_k``;
- LRP-z^B: ``R_j = sum_k (a_j w_jk - l_j w_jk^+ - h_j w_jk^-) / sum_j' (...) R_k``.

The sums over ``j`` include the bias as an extra input of value 1 (for LRP-gamma the bias is
modified like a weight: ``b + gamma b^+``; for LRP-alpha-beta ``z_k^+ = sum_j (a_j w_jk)^+ +
b_k^+`` and ``z_k^- = sum_j (a_j w_jk)^- + b_k^-``), so a bias absorbs its share of relevance;
LRP-z^B, meant for the first layer, leaves the bias out, as in Montavon's formula. Every
denominator is stabilised by ``sign(z) * 1e-9`` (``sign(+0) = 1``) on top of the rule's own
epsilon, so no denominator is ever 0.

Every rule has the form ``R_j = sum_m t_mj sum_k w^(m)_jk s^(m)_k`` for a few (input ``t^(m)``,
weight ``w^(m)``) pairs, with ``s^(m) = c_m R / z'``, and is computed exactly that way: the
layer's linear map with the modified weights gives the denominators ``z'`` (LRP-0 and
LRP-epsilon reuse the pre-activation ``z`` of the forward pass when :func:`relevance
<interpret_segmentation.methods.lrp.relevance>` hands it over, so they run no convolution forward),
and the transposed map (``F.conv_transpose2d`` for a ``Conv2d`` with zero padding, any
stride, dilation and groups; ``s @ W`` for a ``Linear``) gives ``sum_k w_jk s_k``. Several
weight sets of one rule are stacked into one convolution: ``[w^+; w^-]`` along the output
channels for LRP-alpha-beta (the transposed weights ``[alpha w^+; -beta w^-]`` carry the
factors), ``[w, -w^+, -w^-]`` along the input channels for LRP-z^B (group by group for grouped
convolutions). A convolution the explicit transpose does not cover (a ``padding_mode`` other
than ``"zeros"``, string padding such as ``"same"``, a subclass with its own ``forward``) is
transposed with autograd. No parameter of the layer is changed and no hook is registered.

Seed 003 (Seibold et al., VISAPP 2022, section 3.3.1 and Table 1) compares two rule sets for
VGG-A, available as :data:`RULE_SETS`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from ...core.validate import check_bool, check_choice, check_number, is_number

__all__ = ["EPSILON_SPREADS", "MAX_POOLING", "RULE_SETS", "AlphaBeta", "Epsilon", "Gamma", "MaxPool",
           "Rule", "ZBox", "Zero", "make_rule_set"]

STABILIZER = 1e-9

EPSILON_SPREADS = ("std", "rms")
"""Readings of "eps = 0.25 std" (:class:`Epsilon`): centred standard deviation, root mean square."""

MAX_POOLING = ("winner", "average")
"""How relevance passes a max-pooling layer (:class:`MaxPool`)."""


def _signed(z: torch.Tensor, epsilon: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``z + (epsilon + 1e-9) * sign(z)`` with ``sign(+0) = 1``: a denominator that is never 0.

    The sign is ``z``'s sign bit (``copysign``), so a negative zero counts as negative: a sum
    is ``-0.0`` only when all its terms are zeros, i.e. when the unit has no contribution to
    pass relevance to, so the choice changes no result.
    """
    return torch.copysign(_shift(epsilon, z), z).add_(z)


def _shift(epsilon: torch.Tensor | float, z: torch.Tensor) -> torch.Tensor:
    shift = epsilon + STABILIZER
    return shift if isinstance(shift, torch.Tensor) else _scalar(shift, z.dtype, z.device)


@functools.lru_cache(maxsize=64)
def _scalar(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 0-d tensor holding ``value`` (cached: rules use the same few numbers on every call)."""
    return torch.tensor(value, dtype=dtype, device=device)


def _ratio(relevance: torch.Tensor, z: torch.Tensor, epsilon: torch.Tensor | float = 0.0,
           owned: bool = False) -> torch.Tensor:
    """``s = R / (z + (epsilon + 1e-9) sign(z))``, the shape of ``z`` (``R`` broadcast to it).

    With ``owned=True`` (``z`` is a temporary of the caller) the result is written into ``z``.
    """
    if owned and torch.result_type(relevance, z) == z.dtype:
        z.add_(torch.copysign(_shift(epsilon, z), z))
        return torch.div(relevance, z, out=z)
    denominator = _signed(z, epsilon)
    if torch.result_type(relevance, denominator) != denominator.dtype:
        return relevance / denominator
    return torch.div(relevance, denominator, out=denominator)


def _redistribute(forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                  relevance: torch.Tensor, epsilon: torch.Tensor | float = 0.0) -> torch.Tensor:
    """LRP-0/epsilon through a linear map: ``R_j = a_j sum_k (d z_k / d a_j) R_k / z_k``.

    ``forward`` maps the inputs ``a`` to ``z`` (linear in ``a`` up to a constant, e.g. a
    convolution, a linear layer or average pooling); the result has the shape of ``inputs``.
    The transpose comes from autograd, so any such map works.
    """
    a = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        z = forward(a)
        (grad,) = torch.autograd.grad(z, a, relevance / _signed(z.detach(), epsilon))
    return a.detach() * grad


class _Linear:
    """The linear map ``a -> a W^T (+ b)`` of an ``nn.Linear`` (features last), its transpose,
    and the stacking of several weight sets (inputs) along the output (input) features."""

    part_axis = -2

    def __init__(self, layer: nn.Linear):
        self.weight = layer.weight.detach()
        self.bias = layer.bias.detach() if layer.bias is not None else None

    def forward(self, a, weight, bias=None):
        return F.linear(a, weight, bias)

    def transpose(self, s, weight, shape):
        """``sum_k w_kj s_k``: (..., K) -> (..., J)."""
        return s @ weight

    def stack_out(self, tensors):
        """Weights (K, J) or biases (K,) of ``n`` parts -> (nK, J) / (nK,)."""
        return torch.cat(tensors, 0)

    def out_parts(self, z, n):
        """(..., nK) -> (..., n, K)."""
        return z.unflatten(-1, (n, -1))

    def like_part(self, relevance):
        """(..., K) -> (..., 1, K), broadcasting against :meth:`out_parts`."""
        return relevance.unsqueeze(-2)

    def merge_out(self, s):
        return s.flatten(-2)

    def stack_in(self, tensors):
        """Inputs (..., J) of ``n`` parts -> (..., nJ)."""
        return torch.cat(tensors, -1)

    def stack_in_weights(self, weights):
        """Weights (K, J) of ``n`` parts -> (K, nJ), matching :meth:`stack_in`."""
        return torch.cat(weights, 1)

    def sum_parts(self, inputs, grad, n):
        """``sum_m t_m * g_m`` of stacked inputs and gradients (..., nJ) -> (..., J)."""
        return (inputs.unflatten(-1, (n, -1)) * grad.unflatten(-1, (n, -1))).sum(-2)


class _Conv:
    """The linear map of an ``nn.Conv2d`` (channels at dim 1), its transpose, and the stacking
    of several weight sets (inputs) along the output (input) channels, group by group."""

    part_axis = 2

    def __init__(self, layer: nn.Conv2d):
        self.layer = layer
        self.groups = layer.groups
        self.weight = layer.weight.detach()
        self.bias = layer.bias.detach() if layer.bias is not None else None
        self.plain = type(layer).forward is nn.Conv2d.forward
        self.explicit = (self.plain and layer.padding_mode == "zeros"
                         and not isinstance(layer.padding, str))

    def forward(self, a, weight, bias=None):
        """The layer's forward pass on ``a`` with ``weight`` and ``bias`` (None: no bias)."""
        if self.plain:
            return self.layer._conv_forward(a, weight, bias)
        # a subclass with its own forward: run it with the given parameters
        layer = self.layer
        params = {"weight": weight}
        if layer.bias is not None:
            params["bias"] = weight.new_zeros(weight.shape[0]) if bias is None else bias
        elif bias is not None:
            return functional_call(layer, params, (a,)) + bias.view(-1, *([1] * (a.ndim - 2)))
        return functional_call(layer, params, (a,))

    def transpose(self, s, weight, shape):
        """``sum_k w_jk s_k``: the transposed convolution of ``s`` (B, K, H', W') -> ``shape``."""
        layer = self.layer
        if self.explicit and s.ndim == 4:
            # the rows and columns the forward convolution drops at the far border come back as
            # output_padding (always < stride)
            extra = [size - ((out - 1) * stride - 2 * pad + dil * (kernel - 1) + 1)
                     for size, out, stride, pad, dil, kernel in zip(
                         shape[-2:], s.shape[-2:], layer.stride, layer.padding, layer.dilation,
                         weight.shape[-2:])]
            return F.conv_transpose2d(s, weight, None, layer.stride, layer.padding, extra,
                                      layer.groups, layer.dilation)
        a = torch.zeros(shape, dtype=s.dtype, device=s.device, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.forward(a, weight), a, s)
        return grad

    def stack_out(self, tensors):
        """Weights (K, C/g, kh, kw) or biases (K,) of ``n`` parts -> (nK, ...), ordered (g, n, K/g)."""
        return torch.stack([t.unflatten(0, (self.groups, -1)) for t in tensors], 1).flatten(0, 2)

    def out_parts(self, z, n):
        """(B, nK, H, W) -> (B, g, n, K/g, H, W)."""
        return z.unflatten(1, (self.groups, n, -1))

    def like_part(self, relevance):
        """(B, K, H, W) -> (B, g, 1, K/g, H, W), broadcasting against :meth:`out_parts`."""
        return relevance.unflatten(1, (self.groups, 1, -1))

    def merge_out(self, s):
        return s.flatten(1, 3)

    def stack_in(self, tensors):
        """Inputs (B, C, H, W) of ``n`` parts -> (B, nC, H, W), ordered (g, n, C/g)."""
        return torch.stack([t.unflatten(1, (self.groups, -1)) for t in tensors], 2).flatten(1, 3)

    def stack_in_weights(self, weights):
        """Weights (K, C/g, kh, kw) of ``n`` parts -> (K, nC/g, kh, kw), matching :meth:`stack_in`."""
        return torch.cat(weights, 1)

    def sum_parts(self, inputs, grad, n):
        """``sum_m t_m * g_m`` of stacked inputs and gradients (B, nC, H, W) -> (B, C, H, W)."""
        shape = (self.groups, n, -1)
        return (inputs.unflatten(1, shape) * grad.unflatten(1, shape)).sum(2).flatten(1, 2)


def _layer_map(layer: nn.Module, rule: Rule) -> _Linear | _Conv:
    if isinstance(layer, nn.Linear):
        return _Linear(layer)
    if isinstance(layer, nn.Conv2d):
        return _Conv(layer)
    raise ValueError(f"{type(rule).__name__} applies to Conv2d and Linear layers, "
                     f"got {type(layer).__name__}")


def _pre_activation(layer_map, inputs, output, relevance):
    """The stored pre-activation ``output`` (checked against ``relevance``) or a fresh one."""
    if output is None:
        return layer_map.forward(inputs, layer_map.weight, layer_map.bias)
    if output.shape != relevance.shape:
        raise ValueError(f"output: expected the layer's pre-activation, shaped like the "
                         f"relevance {tuple(relevance.shape)}, got shape {tuple(output.shape)}")
    return output.detach()


def _batched(propagate):
    """Run ``propagate`` under ``no_grad`` and on a batch of one for an unbatched convolution."""

    @functools.wraps(propagate)
    def wrapper(self, layer, inputs, relevance, output=None):
        with torch.no_grad():
            if isinstance(layer, nn.Conv2d) and inputs.ndim == 3:
                result = propagate(self, layer, inputs[None], relevance[None],
                                   None if output is None else output[None])
                return result[0]
            return propagate(self, layer, inputs, relevance, output)

    return wrapper


class Rule:
    """Base class of the LRP rules for ``Conv2d`` and ``Linear`` layers (and, :class:`MaxPool`,
    for ``MaxPool2d`` layers).

    A rule holds only its parameters; :meth:`propagate` does the work, so one instance can
    serve several layers and calls. A subclass may leave out the ``output`` argument; then
    :func:`~interpret_segmentation.methods.lrp.relevance` calls it without.
    """

    def propagate(self, layer: nn.Module, inputs: torch.Tensor, relevance: torch.Tensor,
                  output: torch.Tensor | None = None) -> torch.Tensor:
        """Relevance of the layer's inputs from the relevance of its outputs.

        Parameters
        ----------
        layer : nn.Conv2d or nn.Linear
            The layer; its parameters are read, never changed.
        inputs : torch.Tensor
            The layer's input activations ``a``, e.g. (B, C_in, H, W) or (B, F_in).
        relevance : torch.Tensor
            Relevance ``R`` of the layer's outputs, the shape of ``layer(inputs)``.
        output : torch.Tensor, optional
            The layer's pre-activation ``z = layer(inputs)`` (its own weights and bias), when
            already known (the forward pass of :func:`~interpret_segmentation.methods.lrp.relevance`
            records it); rules that need ``z`` then do not recompute it. Default: computed.

        Returns
        -------
        torch.Tensor
            Relevance of the inputs, the shape of ``inputs``.

        Raises
        ------
        ValueError
            If the layer is not a ``Conv2d`` or ``Linear``, or ``output`` is not shaped like
            ``relevance``.
        """
        raise NotImplementedError

    def _reads_output(self) -> bool:
        """Whether :meth:`propagate` uses a given ``output``; :func:`relevance
        <interpret_segmentation.methods.lrp.relevance>` keeps the layer's pre-activation only then."""
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Zero(Rule):
    """LRP-0: ``R_j = sum_k a_j w_jk / z_k R_k`` (Bach et al., 2015).

    Exactly gradient x input for a ReLU network without biases; conserves relevance
    (``sum_j R_j = sum_k R_k``) when the layer has no bias.
    """

    @_batched
    def propagate(self, layer, inputs, relevance, output=None):
        layer_map = _layer_map(layer, self)
        a = inputs.detach()
        z = _pre_activation(layer_map, a, output, relevance)
        s = _ratio(relevance, z, owned=output is None)
        return layer_map.transpose(s, layer_map.weight, a.shape).mul_(a)


class Epsilon(Rule):
    """LRP-epsilon: ``R_j = sum_k a_j w_jk / (z_k + eps sign(z_k)) R_k``.

    The epsilon absorbs part of the relevance of weak or contradictory outputs, which makes
    the explanation sparser and less noisy: without a bias, the relevance of output ``k`` is
    passed on scaled by ``z_k / (z_k + eps sign(z_k))``, a factor in [0, 1]; so from a single
    relevant output (the explained logit) ``|sum_j R_j| <= |R_k|``.

    Parameters
    ----------
    epsilon : float, default 0.25
        Non-negative. With ``relative=True`` a factor: for each image ``b`` of the batch
        separately, ``eps_b = epsilon * spread(z_b)``, where ``z_b`` are the pre-activations
        ``z_k`` (bias included) of *all* output units of this layer for that image (for a
        ``Conv2d`` every channel and position, for a ``Linear`` every feature). Seed 003 uses
        ``0.25 std``. With ``relative=False`` the absolute ``eps`` used for every image.
    relative : bool, default True
        Whether ``epsilon`` is relative to the spread of the layer's pre-activations (see
        above).
    spread : {"std", "rms"}, default "std"
        The two readings of "std" in ``eps = 0.25 std``: ``"std"`` the centred (population,
        divisor N) standard deviation ``sqrt(mean((z - mean z)^2))``; ``"rms"`` the root mean
        square ``sqrt(mean(z^2))``, what LRP tutorials compute (Montavon et al.'s
        ``0.25 * (z**2).mean()**0.5``). Only used with ``relative=True``.

    Raises
    ------
    ValueError
        If ``epsilon`` is negative or not finite, ``relative`` is not a bool or ``spread`` is
        not "std" or "rms".
    """

    def __init__(self, epsilon: float = 0.25, relative: bool = True, spread: str = "std"):
        self.epsilon = check_number(epsilon, "epsilon", 0)
        self.relative = check_bool(relative, "relative")
        self.spread = check_choice(spread, "spread", EPSILON_SPREADS)

    @_batched
    def propagate(self, layer, inputs, relevance, output=None):
        layer_map = _layer_map(layer, self)
        a = inputs.detach()
        z = _pre_activation(layer_map, a, output, relevance)
        epsilon: torch.Tensor | float = self.epsilon
        if self.relative:
            flat = z.flatten(1)
            if self.spread == "std":
                spread = flat.std(dim=1, correction=0)
            else:
                spread = flat.square().mean(dim=1).sqrt()
            epsilon = self.epsilon * spread.view(-1, *([1] * (z.ndim - 1)))
        s = _ratio(relevance, z, epsilon, owned=output is None)
        return layer_map.transpose(s, layer_map.weight, a.shape).mul_(a)

    def __repr__(self) -> str:
        if self.relative and self.spread != "std":
            return f"Epsilon(epsilon={self.epsilon}, relative=True, spread={self.spread!r})"
        return f"Epsilon(epsilon={self.epsilon}, relative={self.relative})"


class Gamma(Rule):
    """LRP-gamma: ``R_j = sum_k a_j (w_jk + gamma w_jk^+) / z'_k R_k``, ``z'`` the pre-activation
    with weights ``w + gamma w^+`` and bias ``b + gamma b^+``.

    Favours positive contributions, which spreads relevance over whole features and makes
    the explanation more stable (Montavon et al., 2019). Meant for layers whose inputs are
    non-negative (after a ReLU); ``gamma=0`` is LRP-0.

    Parameters
    ----------
    gamma : float, default 0.25
        Non-negative weight of the positive part.

    Raises
    ------
    ValueError
        If ``gamma`` is negative or not finite.
    """

    def __init__(self, gamma: float = 0.25):
        self.gamma = check_number(gamma, "gamma", 0)

    @_batched
    def propagate(self, layer, inputs, relevance, output=None):
        layer_map = _layer_map(layer, self)
        a = inputs.detach()
        if self.gamma == 0:
            z = _pre_activation(layer_map, a, output, relevance)
            s = _ratio(relevance, z, owned=output is None)
            return layer_map.transpose(s, layer_map.weight, a.shape).mul_(a)
        weight, bias = layer_map.weight, layer_map.bias
        positive = weight.clamp(min=0)
        weight = torch.add(weight, positive, alpha=self.gamma, out=positive)  # w + gamma w^+
        if bias is not None:
            bias = torch.add(bias, bias.clamp(min=0), alpha=self.gamma)
        z = layer_map.forward(a, weight, bias)
        return layer_map.transpose(_ratio(relevance, z, owned=True), weight, a.shape).mul_(a)

    def _reads_output(self) -> bool:
        return self.gamma == 0

    def __repr__(self) -> str:
        return f"Gamma(gamma={self.gamma})"


class AlphaBeta(Rule):
    """LRP-alpha-beta: ``R_j = sum_k (alpha (a_j w_jk)^+ / z_k^+ - beta (a_j w_jk)^- / z_k^-) R_k``.

    ``(.)^+`` and ``(.)^-`` are the positive and negative parts of each contribution
    ``a_j w_jk`` (so negative inputs are handled too: ``(a w)^+ = a^+ w^+ + a^- w^-``);
    ``z_k^+ = sum_j (a_j w_jk)^+ + b_k^+`` and ``z_k^- = sum_j (a_j w_jk)^- + b_k^-``
    (Bach et al., 2015). An output without negative (positive) contributions passes nothing
    through the beta (alpha) term.

    For non-negative inputs (after a ReLU; checked on every call) ``z^+`` and ``z^-`` come
    from one convolution with the weights ``[w^+; w^-]`` and the relevance from one transposed
    convolution; signed inputs take two of each (for ``a^+`` and ``a^-``).

    Parameters
    ----------
    alpha : float, default 2.0
        Weight of the positive contributions, >= 1.
    beta : float, default 1.0
        Weight of the negative contributions, >= 0; ``alpha - beta`` must be 1.

    Raises
    ------
    ValueError
        If ``alpha`` or ``beta`` is negative or not finite, or ``alpha - beta != 1``.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 1.0):
        self.alpha = check_number(alpha, "alpha", 0)
        self.beta = check_number(beta, "beta", 0)
        if abs(self.alpha - self.beta - 1) > 1e-9:
            raise ValueError(f"alpha, beta: expected alpha - beta = 1 (conservation), "
                             f"got alpha={alpha!r}, beta={beta!r}")

    @_batched
    def propagate(self, layer, inputs, relevance, output=None):
        layer_map = _layer_map(layer, self)
        a = inputs.detach()
        weight, bias = layer_map.weight, layer_map.bias
        positive, negative = weight.clamp(min=0), weight.clamp(max=0)
        bias_pos = bias.clamp(min=0) if bias is not None else None
        signed_inputs = a.numel() > 0 and bool(a.amin() < 0)
        if self.beta == 0 and not signed_inputs:  # only the alpha term, with a^+ = a
            z = layer_map.forward(a, positive, bias_pos)
            scaled = positive.mul_(self.alpha)  # the factor goes into the transposed weights
            return layer_map.transpose(_ratio(relevance, z, owned=True), scaled, a.shape).mul_(a)

        # parts m = 0, 1: (w^+, b^+) and (w^-, b^-), stacked along the output channels; the
        # transposed weights carry the factors alpha and -beta
        weights = layer_map.stack_out([positive, negative])
        biases = layer_map.stack_out([bias_pos, bias.clamp(max=0)]) if bias is not None else None
        alpha, minus_beta = self.alpha, -self.beta
        if not signed_inputs:
            # z^+ = a w^+ + b^+ and z^- = a w^- + b^-, both from one convolution
            z = layer_map.out_parts(layer_map.forward(a, weights, biases), 2)
            s = layer_map.merge_out(_ratio(layer_map.like_part(relevance), z, owned=True))
            scaled = layer_map.stack_out([positive * alpha, negative * minus_beta])
            return layer_map.transpose(s, scaled, a.shape).mul_(a)

        # signed inputs: z^+ = a^+ w^+ + a^- w^- + b^+ and z^- = a^+ w^- + a^- w^+ + b^-
        a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)
        from_pos = layer_map.out_parts(layer_map.forward(a_pos, weights, biases), 2)
        from_neg = layer_map.out_parts(layer_map.forward(a_neg, weights), 2)
        z = from_pos + from_neg.flip(layer_map.part_axis)  # parts: (z^+, z^-)
        s = layer_map.merge_out(_ratio(layer_map.like_part(relevance), z, owned=True))
        # a^+ meets w^+ in z^+ and w^- in z^-; a^- meets w^- in z^+ and w^+ in z^-
        scaled_pos = layer_map.stack_out([positive * alpha, negative * minus_beta])
        scaled_neg = layer_map.stack_out([negative * alpha, positive * minus_beta])
        grad_pos = layer_map.transpose(s, scaled_pos, a.shape)
        grad_neg = layer_map.transpose(s, scaled_neg, a.shape)
        return grad_pos.mul_(a_pos).add_(grad_neg.mul_(a_neg))

    def _reads_output(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"AlphaBeta(alpha={self.alpha}, beta={self.beta})"


class ZBox(Rule):
    """LRP-z^B for the first layer, whose inputs are pixels bounded by ``low <= x <= high``.

    ``R_j = sum_k (x_j w_jk - l_j w_jk^+ - h_j w_jk^-) / sum_j' (x_j' w_j'k - l_j' w_j'k^+ -
    h_j' w_j'k^-) R_k`` (Montavon et al., 2017 and 2019); the layer's bias is left out, so the
    layer conserves relevance. Zero padding pads ``x``, ``l`` and ``h`` alike with zeros. The
    three terms are one convolution of the inputs ``[x, l, h]`` with the weights
    ``[w, -w^+, -w^-]`` stacked along the input channels, and one transposed convolution.

    Parameters
    ----------
    low, high : float or torch.Tensor, optional
        Lowest and highest admissible input values. A number, or a tensor broadcastable to
        the layer's input (B, C, H, W) / (B, F) (e.g. per channel (C, 1, 1)). Default: for each
        image of the batch separately, the minimum (``low``) or maximum (``high``) of that
        image's input over all channels and positions. For pixels scaled to [0, 1], ``ZBox(0.0,
        1.0)`` bounds them by the data range instead (what seed 003's study uses; see
        :func:`make_rule_set`): a dark defect then counts as dark whatever else the image holds.

    Raises
    ------
    ValueError
        If a bound is not a finite number or tensor, or (when used) cannot be broadcast to the
        input or has ``low > high`` somewhere.
    """

    def __init__(self, low: float | torch.Tensor | None = None,
                 high: float | torch.Tensor | None = None):
        self.low = self._check_bound(low, "low")
        self.high = self._check_bound(high, "high")

    @staticmethod
    def _check_bound(value, name):
        if value is None:
            return None
        if isinstance(value, torch.Tensor):
            if not value.is_floating_point() or not torch.isfinite(value).all():
                raise ValueError(f"{name}: expected a finite floating-point tensor, "
                                 f"got dtype {value.dtype}")
            return value.detach()
        if not is_number(value) or not math.isfinite(value):
            raise ValueError(f"{name}: expected None, a finite number or a tensor, got {value!r}")
        return float(value)

    def _bound(self, value, name, inputs, reduce):
        if value is None:
            extreme = reduce(inputs.detach().flatten(1), dim=1).values
            return extreme.view(-1, *([1] * (inputs.ndim - 1))).expand_as(inputs)
        if isinstance(value, float):
            return torch.full_like(inputs, value)
        try:
            return torch.broadcast_to(value.to(inputs), inputs.shape)
        except RuntimeError as error:
            raise ValueError(f"{name}: a bound of shape {tuple(value.shape)} cannot be broadcast "
                             f"to the layer input's shape {tuple(inputs.shape)}") from error

    @_batched
    def propagate(self, layer, inputs, relevance, output=None):
        layer_map = _layer_map(layer, self)
        a = inputs.detach()
        if self.low is None and self.high is None:  # each image's minimum and maximum
            low, high = torch.aminmax(a.flatten(1), dim=1)
            shape = (-1, *([1] * (a.ndim - 1)))
            low, high = low.view(shape).expand_as(a), high.view(shape).expand_as(a)
        else:
            low = self._bound(self.low, "low", a, torch.min)
            high = self._bound(self.high, "high", a, torch.max)
            if (low > high).any():
                raise ValueError("low, high: expected low <= high everywhere")
        weight = layer_map.weight
        weights = layer_map.stack_in_weights(
            [weight, weight.clamp(min=0).neg_(), weight.clamp(max=0).neg_()])
        stacked = layer_map.stack_in([a, low, high])
        z = layer_map.forward(stacked, weights)
        grad = layer_map.transpose(_ratio(relevance, z, owned=True), weights, stacked.shape)
        return layer_map.sum_parts(stacked, grad, 3)

    def _reads_output(self) -> bool:
        return False

    def __repr__(self) -> str:
        def show(bound):
            return "input min/max" if bound is None else (
                bound if isinstance(bound, float) else f"tensor{tuple(bound.shape)}")
        return f"ZBox(low={show(self.low)}, high={show(self.high)})"


def channels_last_pays(a: torch.Tensor) -> bool:
    """Whether to max-pool a channels-last copy of ``a``: on the CPU, PyTorch's max-pooling of
    (B, C, H, W) is several times slower than converting and pooling channels-last, which gives
    the same values and the same indices (ties included)."""
    return (a.device.type == "cpu" and a.ndim == 4 and a.shape[1] > 1
            and not a.is_contiguous(memory_format=torch.channels_last))


class MaxPool(Rule):
    """How relevance passes an ``nn.MaxPool2d``: to the window's maximum, or as through an
    average pooling.

    - ``"winner"`` (winner-take-all, the default for every max-pooling): each output's
      relevance goes to the input position that holds the maximum of its window (on ties,
      the one PyTorch's max-pooling reports); an input that wins several overlapping windows
      receives the sum. It follows the forward pass (the gradient's path).
    - ``"average"``: the layer is read as an average pooling with the same windows and the
      relevance is passed by the z-rule of that linear map, ``R_j = sum_k a_j / (n z_k) R_k``
      with ``z_k`` the window's mean of ``n`` inputs (zero padding counted): each input gets a
      share in proportion to its activation. Montavon et al. (2019, section 10.3.2) treat
      max-pooling this way, and so does their LRP tutorial for VGG-16; relevance spreads over
      whole features instead of their single strongest pixel.

    Both conserve relevance (for "average" up to windows whose inputs are all 0, which pass
    nothing: ``z_k = 0``).

    Parameters
    ----------
    mode : {"winner", "average"}, default "winner"

    Raises
    ------
    ValueError
        For another ``mode``; when propagating, for a layer that is not an ``nn.MaxPool2d`` or,
        with "average", a max-pooling with a dilation other than 1.
    """

    def __init__(self, mode: str = "winner"):
        self.mode = check_choice(mode, "mode", MAX_POOLING)

    def propagate(self, layer, inputs, relevance, output=None):
        if not isinstance(layer, nn.MaxPool2d):
            raise ValueError(f"MaxPool applies to MaxPool2d layers, got {type(layer).__name__}")
        with torch.no_grad():
            if self.mode == "average":
                if layer.dilation not in (1, (1, 1)):
                    raise ValueError(f"MaxPool('average'): expected a max-pooling without "
                                     f"dilation, got dilation={layer.dilation}")
                return _redistribute(functools.partial(
                    F.avg_pool2d, kernel_size=layer.kernel_size, stride=layer.stride,
                    padding=layer.padding, ceil_mode=layer.ceil_mode, count_include_pad=True),
                    inputs, relevance)
            pooled = (inputs.contiguous(memory_format=torch.channels_last)
                      if channels_last_pays(inputs) else inputs)
            _, indices = F.max_pool2d(pooled, layer.kernel_size, layer.stride, layer.padding,
                                      layer.dilation, ceil_mode=layer.ceil_mode,
                                      return_indices=True)
            result = torch.zeros(inputs.shape, dtype=relevance.dtype, device=relevance.device)
            result.flatten(-2).scatter_add_(-1, indices.flatten(-2), relevance.flatten(-2))
            return result

    def _reads_output(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"MaxPool({self.mode!r})"


_MONTAVON = {
    "conv1_1": ZBox(),
    **{name: Gamma(0.25) for name in ("conv2_1", "conv3_1", "conv3_2")},
    **{name: Epsilon(0.25) for name in ("conv4_1", "conv4_2", "conv5_1", "conv5_2")},
    nn.Linear: Zero(),
}
_SEIBOLD = {
    "conv1_1": ZBox(),
    **{name: AlphaBeta(2.0, 1.0) for name in ("conv2_1", "conv3_1")},
    **{name: Gamma(0.25) for name in ("conv3_2", "conv4_1", "conv4_2", "conv5_1", "conv5_2")},
    nn.Linear: Epsilon(0.25),
}

_EPSILON = {nn.Conv2d: Epsilon(0.25), nn.Linear: Epsilon(0.25)}

RULE_SETS: Mapping[str, Mapping[str | type, Rule]] = MappingProxyType({
    "montavon": MappingProxyType(_MONTAVON),
    "seibold": MappingProxyType(_SEIBOLD),
    "epsilon": MappingProxyType(_EPSILON),
})
"""Named rule sets: seed 003's Table 1 for VGG-A (layer names of
:class:`interpret_segmentation.models.vgg.VGG11`), with ``eps = 0.25 std`` and ``gamma = 0.25``,
and one for any model.

``"montavon"`` (Montavon et al., 2019): z^B on conv1_1; gamma on conv2_1, conv3_1, conv3_2;
epsilon on conv4_1 ... conv5_2; LRP-0 on the fully connected layers.
``"seibold"`` (the seed's own): z^B on conv1_1; alpha=2, beta=1 on conv2_1, conv3_1; gamma on
conv3_2 ... conv5_2; epsilon on the fully connected layers.
``"epsilon"`` (not in the seed): epsilon (0.25 std) on every ``Conv2d`` and ``Linear``, keyed
by type, so it fits every model LRP supports.

In all three z^B bounds each image by its own minimum and maximum, epsilon is 0.25 times the
centred standard deviation and max-pooling passes relevance winner-take-all;
:func:`make_rule_set` copies a set with the data range as z^B bounds, the root mean square as
the epsilon's scale or max-pooling read as an average.
"""


def make_rule_set(name: str, bounds: tuple[float, float] | None = None, spread: str = "std",
                  max_pool: str = "winner") -> dict[str | type, Rule]:
    """A copy of the named rule set with its z^B bounds, its epsilon reading and its
    max-pooling rule chosen.

    Parameters
    ----------
    name : str
        A name in :data:`RULE_SETS` ("montavon", "seibold", "epsilon").
    bounds : (float, float), optional
        ``(low, high)`` for every :class:`ZBox` of the set: the range the input pixels can
        take, e.g. ``(0.0, 1.0)`` for images scaled to [0, 1] (what seed 003's study in
        :mod:`interpret_segmentation.studies.reproduce.lrp` uses). Default: each image's own
        minimum and maximum, as in :data:`RULE_SETS`.
    spread : {"std", "rms"}, default "std"
        The reading of "0.25 std" for every relative :class:`Epsilon` of the set (see there).
    max_pool : {"winner", "average"}, default "winner"
        How relevance passes the max-pooling layers (:class:`MaxPool`); "average" adds
        ``nn.MaxPool2d: MaxPool("average")`` to the set.

    Returns
    -------
    dict
        Layer name or type -> rule, to pass as ``rule_set`` to
        :func:`~interpret_segmentation.methods.lrp.relevance` or
        :class:`~interpret_segmentation.methods.lrp.LRP`; the other rules are those of the set.

    Raises
    ------
    ValueError
        For an unknown ``name``, ``spread`` or ``max_pool``, or ``bounds`` that are not two
        finite numbers with ``low <= high``.
    """
    if not isinstance(name, str) or name not in RULE_SETS:
        raise ValueError(f"name: expected one of {', '.join(RULE_SETS)}, got {name!r}")
    spread = check_choice(spread, "spread", EPSILON_SPREADS)
    max_pool = check_choice(max_pool, "max_pool", MAX_POOLING)
    if bounds is not None:
        if (not isinstance(bounds, (tuple, list)) or len(bounds) != 2
                or not all(is_number(b) and math.isfinite(b) for b in bounds)
                or bounds[0] > bounds[1]):
            raise ValueError(f"bounds: expected None or two finite numbers (low, high) with "
                             f"low <= high, got {bounds!r}")
    rules: dict[str | type, Rule] = {}
    for key, rule in RULE_SETS[name].items():
        if isinstance(rule, ZBox) and bounds is not None:
            rule = ZBox(float(bounds[0]), float(bounds[1]))
        elif isinstance(rule, Epsilon) and rule.relative:
            rule = Epsilon(rule.epsilon, relative=True, spread=spread)
        rules[key] = rule
    if max_pool != "winner":
        rules[nn.MaxPool2d] = MaxPool(max_pool)
    return rules
