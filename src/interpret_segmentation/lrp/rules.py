"""LRP rules for the layers with weights (``Conv2d`` and ``Linear``) and the built-in rule sets.

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
denominator is stabilised by ``sign(z) * 1e-9`` (``sign(0) = 1``) on top of the rule's own
epsilon, so no denominator is ever 0.

Each rule is computed exactly with the "modified forward pass + gradient" scheme: the layer
is run with the modified weights on the (sign-split) inputs, giving the denominators ``z'``;
the gradient of ``z'`` against ``s = R / z'`` is ``sum_k w'_jk s_k``, and multiplying by the
inputs gives the relevance. No parameter of the layer is changed and no hook is registered.

Seed 003 (Seibold et al., VISAPP 2022, section 3.3.1 and Table 1) compares two rule sets for
VGG-A, available as :data:`RULE_SETS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from numbers import Real
from types import MappingProxyType

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["RULE_SETS", "AlphaBeta", "Epsilon", "Gamma", "Rule", "ZBox", "Zero"]

STABILIZER = 1e-9


def _signed(z: torch.Tensor, epsilon: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``z + (epsilon + 1e-9) * sign(z)`` with ``sign(0) = 1``: a denominator that is never 0."""
    return z + torch.where(z >= 0, 1.0, -1.0).to(z.dtype) * (epsilon + STABILIZER)


def _redistribute(forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                  relevance: torch.Tensor, epsilon: torch.Tensor | float = 0.0) -> torch.Tensor:
    """LRP-0/epsilon through a linear map: ``R_j = a_j sum_k (d z_k / d a_j) R_k / z_k``.

    ``forward`` maps the inputs ``a`` to ``z`` (linear in ``a`` up to a constant, e.g. a
    convolution, a linear layer or average pooling); the result has the shape of ``inputs``.
    """
    a = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        z = forward(a)
        (grad,) = torch.autograd.grad(z, a, relevance / _signed(z.detach(), epsilon))
    return a.detach() * grad


def _check_number(value, name: str, minimum: float = 0.0) -> float:
    if (isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value)
            or value < minimum):
        raise ValueError(f"{name}: expected a finite number >= {minimum}, got {value!r}")
    return float(value)


def _check_layer(layer: nn.Module, rule: Rule) -> None:
    if not isinstance(layer, (nn.Conv2d, nn.Linear)):
        raise ValueError(f"{type(rule).__name__} applies to Conv2d and Linear layers, "
                         f"got {type(layer).__name__}")


def _apply(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor,
           bias: torch.Tensor | None) -> torch.Tensor:
    """``layer``'s forward pass on ``x`` with ``weight`` and ``bias`` in place of its own.

    ``bias=None`` means no bias (zero), whether or not the layer has one.
    """
    if isinstance(layer, nn.Linear):
        return nn.functional.linear(x, weight, bias)
    params = {"weight": weight}
    if layer.bias is not None:
        params["bias"] = torch.zeros_like(layer.bias) if bias is None else bias
    elif bias is not None:
        return functional_call(layer, params, (x,)) + bias.view(-1, *([1] * (x.ndim - 2)))
    return functional_call(layer, params, (x,))


def _parameters(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    bias = layer.bias.detach() if layer.bias is not None else None
    return layer.weight.detach(), bias


class Rule:
    """Base class of the LRP rules for ``Conv2d`` and ``Linear`` layers.

    A rule holds only its parameters; :meth:`propagate` does the work, so one instance can
    serve several layers and calls.
    """

    def propagate(self, layer: nn.Module, inputs: torch.Tensor,
                  relevance: torch.Tensor) -> torch.Tensor:
        """Relevance of the layer's inputs from the relevance of its outputs.

        Parameters
        ----------
        layer : nn.Conv2d or nn.Linear
            The layer; its parameters are read, never changed.
        inputs : torch.Tensor
            The layer's input activations ``a``, e.g. (B, C_in, H, W) or (B, F_in).
        relevance : torch.Tensor
            Relevance ``R`` of the layer's outputs, the shape of ``layer(inputs)``.

        Returns
        -------
        torch.Tensor
            Relevance of the inputs, the shape of ``inputs``.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Zero(Rule):
    """LRP-0: ``R_j = sum_k a_j w_jk / z_k R_k`` (Bach et al., 2015).

    Exactly gradient x input for a ReLU network without biases; conserves relevance
    (``sum_j R_j = sum_k R_k``) when the layer has no bias.
    """

    def propagate(self, layer, inputs, relevance):
        _check_layer(layer, self)
        weight, bias = _parameters(layer)
        return _redistribute(lambda a: _apply(layer, a, weight, bias), inputs, relevance)


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
        separately, ``eps_b = epsilon * std(z_b)``, where ``z_b`` are the pre-activations
        ``z_k`` (bias included) of *all* output units of this layer for that image (for a
        ``Conv2d`` every channel and position, for a ``Linear`` every feature) and ``std`` is
        the population standard deviation (divisor N). Seed 003 uses ``0.25 std``. With
        ``relative=False`` the absolute ``eps`` used for every image.
    relative : bool, default True
        Whether ``epsilon`` is relative to the standard deviation of the layer's
        pre-activations (see above).

    Raises
    ------
    ValueError
        If ``epsilon`` is negative or not finite, or ``relative`` is not a bool.
    """

    def __init__(self, epsilon: float = 0.25, relative: bool = True):
        self.epsilon = _check_number(epsilon, "epsilon")
        if not isinstance(relative, bool):
            raise ValueError(f"relative: expected a bool, got {relative!r}")
        self.relative = relative

    def propagate(self, layer, inputs, relevance):
        _check_layer(layer, self)
        weight, bias = _parameters(layer)
        epsilon: torch.Tensor | float = self.epsilon
        if self.relative:
            with torch.no_grad():
                z = _apply(layer, inputs, weight, bias)
                std = z.flatten(1).std(dim=1, correction=0)
            epsilon = self.epsilon * std.view(-1, *([1] * (z.ndim - 1)))
        return _redistribute(lambda a: _apply(layer, a, weight, bias), inputs, relevance, epsilon)

    def __repr__(self) -> str:
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
        self.gamma = _check_number(gamma, "gamma")

    def propagate(self, layer, inputs, relevance):
        _check_layer(layer, self)
        weight, bias = _parameters(layer)
        weight = weight + self.gamma * weight.clamp(min=0)
        if bias is not None:
            bias = bias + self.gamma * bias.clamp(min=0)
        return _redistribute(lambda a: _apply(layer, a, weight, bias), inputs, relevance)

    def __repr__(self) -> str:
        return f"Gamma(gamma={self.gamma})"


class AlphaBeta(Rule):
    """LRP-alpha-beta: ``R_j = sum_k (alpha (a_j w_jk)^+ / z_k^+ - beta (a_j w_jk)^- / z_k^-) R_k``.

    ``(.)^+`` and ``(.)^-`` are the positive and negative parts of each contribution
    ``a_j w_jk`` (so negative inputs are handled too: ``(a w)^+ = a^+ w^+ + a^- w^-``);
    ``z_k^+ = sum_j (a_j w_jk)^+ + b_k^+`` and ``z_k^- = sum_j (a_j w_jk)^- + b_k^-``
    (Bach et al., 2015). An output without negative (positive) contributions passes nothing
    through the beta (alpha) term.

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
        self.alpha = _check_number(alpha, "alpha")
        self.beta = _check_number(beta, "beta")
        if abs(self.alpha - self.beta - 1) > 1e-9:
            raise ValueError(f"alpha, beta: expected alpha - beta = 1 (conservation), "
                             f"got alpha={alpha!r}, beta={beta!r}")

    def propagate(self, layer, inputs, relevance):
        _check_layer(layer, self)
        weight, bias = _parameters(layer)
        positive, negative = weight.clamp(min=0), weight.clamp(max=0)
        bias_pos = bias.clamp(min=0) if bias is not None else None
        bias_neg = bias.clamp(max=0) if bias is not None else None
        a_pos = inputs.detach().clamp(min=0).requires_grad_(True)
        a_neg = inputs.detach().clamp(max=0).requires_grad_(True)
        result = torch.zeros_like(inputs)
        # (part weight, weight for a^+, weight for a^-, bias part)
        for factor, w_pos_in, w_neg_in, b in ((self.alpha, positive, negative, bias_pos),
                                              (-self.beta, negative, positive, bias_neg)):
            if factor == 0:
                continue
            with torch.enable_grad():
                z = _apply(layer, a_pos, w_pos_in, b) + _apply(layer, a_neg, w_neg_in, None)
                scaled = relevance / _signed(z.detach())
                grad_pos, grad_neg = torch.autograd.grad(z, (a_pos, a_neg), scaled)
            result = result + factor * (a_pos.detach() * grad_pos + a_neg.detach() * grad_neg)
        return result

    def __repr__(self) -> str:
        return f"AlphaBeta(alpha={self.alpha}, beta={self.beta})"


class ZBox(Rule):
    """LRP-z^B for the first layer, whose inputs are pixels bounded by ``low <= x <= high``.

    ``R_j = sum_k (x_j w_jk - l_j w_jk^+ - h_j w_jk^-) / sum_j' (x_j' w_j'k - l_j' w_j'k^+ -
    h_j' w_j'k^-) R_k`` (Montavon et al., 2017 and 2019); the layer's bias is left out, so the
    layer conserves relevance. Zero padding pads ``x``, ``l`` and ``h`` alike with zeros.

    Parameters
    ----------
    low, high : float or torch.Tensor, optional
        Lowest and highest admissible input values. A number, or a tensor broadcastable to
        the layer's input (B, C, H, W) / (B, F) (e.g. per channel (C, 1, 1)). Default: for each
        image of the batch separately, the minimum (``low``) or maximum (``high``) of that
        image's input over all channels and positions.

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
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
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

    def propagate(self, layer, inputs, relevance):
        _check_layer(layer, self)
        weight, _ = _parameters(layer)
        low = self._bound(self.low, "low", inputs, torch.min)
        high = self._bound(self.high, "high", inputs, torch.max)
        if (low > high).any():
            raise ValueError("low, high: expected low <= high everywhere")
        x, lo, hi = (t.detach().clone().requires_grad_(True) for t in (inputs, low, high))
        with torch.enable_grad():
            z = (_apply(layer, x, weight, None) - _apply(layer, lo, weight.clamp(min=0), None)
                 - _apply(layer, hi, weight.clamp(max=0), None))
            scaled = relevance / _signed(z.detach())
            grads = torch.autograd.grad(z, (x, lo, hi), scaled)
        return sum(t.detach() * g for t, g in zip((x, lo, hi), grads))

    def __repr__(self) -> str:
        def show(bound):
            return "input min/max" if bound is None else (
                bound if isinstance(bound, float) else f"tensor{tuple(bound.shape)}")
        return f"ZBox(low={show(self.low)}, high={show(self.high)})"


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

RULE_SETS: Mapping[str, Mapping[str | type, Rule]] = MappingProxyType({
    "montavon": MappingProxyType(_MONTAVON),
    "seibold": MappingProxyType(_SEIBOLD),
})
"""Seed 003's Table 1 rule sets for VGG-A (layer names of
:class:`interpret_segmentation.models.vgg.VGG11`), with ``eps = 0.25 std`` and ``gamma = 0.25``.

``"montavon"`` (Montavon et al., 2019): z^B on conv1_1; gamma on conv2_1, conv3_1, conv3_2;
epsilon on conv4_1 ... conv5_2; LRP-0 on the fully connected layers.
``"seibold"`` (the seed's own): z^B on conv1_1; alpha=2, beta=1 on conv2_1, conv3_1; gamma on
conv3_2 ... conv5_2; epsilon on the fully connected layers.
"""
