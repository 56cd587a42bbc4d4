import copy

import numpy as np
import pytest
import torch
from oracles import FailsLater, randomise_batchnorm
from torch import nn

from interpret_segmentation import Explanation, Target, methods
from interpret_segmentation.core import ModelAdapter, resolve_target
from interpret_segmentation.methods.lrp import (
    LRP,
    RULE_SETS,
    AlphaBeta,
    Epsilon,
    Gamma,
    Rule,
    ZBox,
    Zero,
    layer_rules,
    relevance,
    segment,
)
from interpret_segmentation.models.vgg import VGG11


@pytest.fixture(autouse=True)
def _own_random_state():
    """Tests below seed torch's global generator; a fork keeps that from leaking out."""
    with torch.random.fork_rng():
        yield

# ---------------------------------------------------------------- tiny networks


def _bias_free_net(seed: int = 0) -> nn.Sequential:
    """conv + relu + maxpool + conv + relu + avgpool + adaptive avgpool + linear, no biases."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.ReLU(inplace=True),
        nn.AvgPool2d(2, stride=1), nn.AdaptiveAvgPool2d(2), nn.Dropout(0.5), nn.Flatten(),
        nn.Linear(24, 5, bias=False), nn.ReLU(), nn.Linear(5, 3, bias=False),
    ).double()


def _normalised_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4, affine=False), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 3),
    ).double()
    return randomise_batchnorm(net)


def _logits(net, x, target):
    with torch.no_grad():
        return net.eval()(x)[torch.arange(len(x)), target]


# ---------------------------------------------------------------- LRP-0, conservation, epsilon


def test_lrp0_is_gradient_times_input_and_conserves_the_logit():
    net = _bias_free_net()
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    target = [0, 2, 1]
    r = relevance(net, x, target, rule_set={})
    assert all(p.grad is None for p in net.parameters())  # relevance left no gradients behind
    x_grad = x.clone().requires_grad_(True)
    net.eval()(x_grad)[torch.arange(3), target].sum().backward()
    # equal up to the 1e-9 that stabilises every denominator
    torch.testing.assert_close(r, x_grad.grad * x, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(r.sum((1, 2, 3)), _logits(net, x, target), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("pool", [
    nn.MaxPool2d(2),
    nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),  # overlapping windows
    nn.MaxPool2d(2, stride=1, dilation=2),
], ids=["2x2", "overlapping", "dilated"])
@pytest.mark.parametrize("image", ["random", "flat"])
def test_max_pooling_passes_relevance_like_the_gradient(pool, image):
    """LRP-0 without biases is gradient x input, also through max-pooling with ties (a flat
    image gives windows of equal values): the winner is the input PyTorch's pooling picks."""
    torch.manual_seed(13)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.ReLU(), pool, nn.Flatten())
    x = torch.rand(2, 2, 9, 9, dtype=torch.float64)
    if image == "flat":
        x = torch.full_like(x, 0.5)
        x[:, :, 4, 4] = 1.0
    net = nn.Sequential(*net, nn.Linear(net.double()(x).shape[1], 2, bias=False)).double()
    r = relevance(net, x, 1, rule_set={})
    x_grad = x.clone().requires_grad_(True)
    net.eval()(x_grad)[:, 1].sum().backward()
    torch.testing.assert_close(r, x_grad.grad * x, rtol=1e-5, atol=1e-8)


def test_every_layer_conserves_under_lrp0_and_the_layer_dict_starts_at_the_input():
    net = _bias_free_net(1)
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    r, layers = relevance(net, x, 1, rule_set={nn.Conv2d: Zero()}, return_layers=True)
    assert list(layers) == [str(i) for i in range(len(net))]
    assert layers["0"] is r
    logit = _logits(net, x, 1)
    for name, value in layers.items():
        torch.testing.assert_close(value.flatten(1).sum(1), logit, rtol=1e-5, atol=1e-8, msg=name)


def test_epsilon_with_a_tiny_epsilon_conserves():
    net = _bias_free_net(2)
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    tiny = Epsilon(1e-9, relative=False)
    r = relevance(net, x, 0, rule_set={nn.Conv2d: tiny, nn.Linear: tiny})
    torch.testing.assert_close(r.sum((1, 2, 3)), _logits(net, x, 0), rtol=1e-4, atol=1e-8)


def test_epsilon_absorbs_relevance():
    # only the output layer uses epsilon: |sum R| = |z| * |z| / (|z| + eps) <= |z|
    net = _bias_free_net(3)
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    logit = _logits(net, x, 2)
    r = relevance(net, x, 2, rule_set={"11": Epsilon(0.25)})
    total = r.sum((1, 2, 3))
    assert (total.abs() <= logit.abs() + 1e-12).all()
    assert (total * logit >= 0).all()
    # non-negative weights and inputs: every relevance is >= 0 and each epsilon layer absorbs some
    for module in net:
        if hasattr(module, "weight"):
            module.weight.data.abs_()
    x = x.abs()
    logit = _logits(net, x, 0)
    everywhere = {nn.Conv2d: Epsilon(0.25), nn.Linear: Epsilon(0.25)}
    total = relevance(net, x, 0, rule_set=everywhere).sum((1, 2, 3))
    assert ((total > 0) & (total < logit)).all()
    smaller = relevance(net, x, 0, rule_set={nn.Conv2d: Epsilon(0.01), nn.Linear: Epsilon(0.01)})
    assert (smaller.sum((1, 2, 3)) > total).all()


# ---------------------------------------------------------------- each rule vs a naive version


def _conv_matrix(conv: nn.Conv2d, height: int, width: int) -> torch.Tensor:
    """The convolution (without bias) as a dense matrix (outputs, inputs), built by loops.

    Zero padding, any stride, dilation and groups.
    """
    (sh, sw), (ph, pw), (dh, dw) = conv.stride, conv.padding, conv.dilation
    c_out, c_group, kh, kw = conv.weight.shape
    c_in, outs_per_group = c_group * conv.groups, c_out // conv.groups
    h_out = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    matrix = torch.zeros(c_out, h_out, w_out, c_in, height, width, dtype=conv.weight.dtype)
    for o in range(c_out):
        for i in range(c_group):
            channel = o // outs_per_group * c_group + i
            for u in range(kh):
                for v in range(kw):
                    for y in range(h_out):
                        for x in range(w_out):
                            row, col = y * sh - ph + u * dh, x * sw - pw + v * dw
                            if 0 <= row < height and 0 <= col < width:
                                matrix[o, y, x, channel, row, col] = conv.weight[o, i, u, v]
    return matrix.reshape(c_out * h_out * w_out, c_in * height * width), h_out * w_out


def _naive(rule, a, weight, bias, r, value_shape=None):
    """The rule's formula on a dense layer: a (B, J), weight (K, J), bias (K,), r (B, K);
    ``value_shape`` is the shape of one input, to which tensor bounds of ZBox broadcast."""
    pos, neg = weight.clamp(min=0), weight.clamp(max=0)

    def sign(z):  # with sign(0) = 1, in z's dtype
        return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)

    def share(contributions, z):  # sum_k c_jk / z_k R_k, z stabilised by 1e-9 as documented
        return torch.einsum("bjk,bk->bj", contributions, r / (z + 1e-9 * sign(z)))

    contributions = torch.einsum("bj,kj->bjk", a, weight)
    z = contributions.sum(1) + bias
    if isinstance(rule, Zero):
        return share(contributions, z)
    if isinstance(rule, Epsilon):
        eps = rule.epsilon * z.std(1, correction=0, keepdim=True) if rule.relative else rule.epsilon
        return share(contributions, z + eps * sign(z))
    if isinstance(rule, Gamma):
        modified = torch.einsum("bj,kj->bjk", a, weight + rule.gamma * pos)
        return share(modified, modified.sum(1) + bias + rule.gamma * bias.clamp(min=0))
    if isinstance(rule, AlphaBeta):
        c_pos, c_neg = contributions.clamp(min=0), contributions.clamp(max=0)
        return (rule.alpha * share(c_pos, c_pos.sum(1) + bias.clamp(min=0))
                - rule.beta * share(c_neg, c_neg.sum(1) + bias.clamp(max=0)))
    if isinstance(rule, ZBox):
        def bound(value, extreme):  # (B, J) or (B, 1)
            if value is None:
                return extreme(1, keepdim=True).values
            if isinstance(value, float):
                return torch.full_like(a, value)
            return value.expand(len(a), *value_shape).reshape(len(a), -1)

        low, high = bound(rule.low, a.min), bound(rule.high, a.max)
        modified = (torch.einsum("bj,kj->bjk", a, weight) - torch.einsum("bj,kj->bjk", low + 0 * a, pos)
                    - torch.einsum("bj,kj->bjk", high + 0 * a, neg))
        return share(modified, modified.sum(1))
    raise AssertionError(rule)


RULES = [Zero(), Epsilon(0.25), Epsilon(0.3, relative=False), Gamma(0.25), Gamma(0.0),
         AlphaBeta(2.0, 1.0), AlphaBeta(1.0, 0.0), AlphaBeta(1.5, 0.5), ZBox(), ZBox(-3.0, 3.5),
         ZBox(torch.tensor([[[-3.0]], [[-2.5]]], dtype=torch.float64),
              torch.tensor([[[2.0, 3.0, 2.5, 3.5, 4.0, 3.0]]], dtype=torch.float64))]

# (in_channels, out_channels, kernel_size, options): stride, padding, dilation and groups,
# with output sizes that leave rows and columns of the input out at the far border
CONVS = {
    "stride": (2, 3, 3, {"padding": 1, "stride": (1, 2)}),
    "dilated-groups": (4, 6, 3, {"padding": (2, 1), "stride": 2, "dilation": (2, 1), "groups": 2}),
    "depthwise": (2, 4, (2, 3), {"stride": (2, 3), "groups": 2, "bias": False}),
}


def _check_rule(rule, layer, a, weight, bias, inputs="signed"):
    """``rule.propagate`` on ``layer`` against the naive formula on the dense ``weight``."""
    if inputs == "non-negative":
        a = a.abs()
        a[..., :2] = 0  # some exact zeros, as after a ReLU
    with torch.no_grad():
        out = layer(a)
    r = torch.randn_like(out)
    got = rule.propagate(layer, a, r)
    assert got.shape == a.shape
    expected = _naive(rule, a.flatten(1), weight.detach(), bias, r.flatten(1), a.shape[1:])
    torch.testing.assert_close(got.flatten(1), expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("inputs", ["signed", "non-negative"])
@pytest.mark.parametrize("rule", RULES, ids=repr)
@pytest.mark.parametrize("kind", ["linear", *CONVS])
def test_rule_matches_a_naive_implementation(rule, kind, inputs):
    torch.manual_seed(4)
    if kind == "linear":
        if isinstance(rule, ZBox) and isinstance(rule.low, torch.Tensor):
            rule = ZBox(torch.linspace(-3.0, -2.0, 7, dtype=torch.float64), 3.0)
        layer = nn.Linear(7, 4).double()
        a = torch.randn(2, 7, dtype=torch.float64)
        weight, bias = layer.weight.detach(), layer.bias.detach()
    else:
        c_in, c_out, kernel, options = CONVS[kind]
        if isinstance(rule, ZBox) and isinstance(rule.low, torch.Tensor) and c_in != 2:
            rule = ZBox(torch.linspace(-3.0, -2.0, c_in, dtype=torch.float64).view(-1, 1, 1), 3.0)
        layer = nn.Conv2d(c_in, c_out, kernel, **options).double()
        a = torch.randn(2, c_in, 5, 6, dtype=torch.float64)
        weight, units = _conv_matrix(layer, 5, 6)
        bias = (layer.bias.detach().repeat_interleave(units) if layer.bias is not None
                else torch.zeros(len(weight), dtype=torch.float64))
    _check_rule(rule, layer, a, weight, bias, inputs)


@pytest.mark.parametrize("rule", [Zero(), Epsilon(0.25), Gamma(0.0), Gamma(0.25), AlphaBeta()],
                         ids=repr)
def test_a_given_output_gives_the_same_relevance(rule):
    torch.manual_seed(8)
    layer = nn.Conv2d(3, 4, 3, padding=1).double()
    a = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        out = layer(a)
    r = torch.randn_like(out)
    torch.testing.assert_close(rule.propagate(layer, a, r, output=out), rule.propagate(layer, a, r),
                               rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="output"):
        Zero().propagate(layer, a, r, output=out[:, :2])


def test_an_unbatched_convolution_input_gives_the_relevance_of_a_batch_of_one():
    torch.manual_seed(9)
    layer = nn.Conv2d(2, 3, 3, padding=1).double()
    a = torch.rand(2, 5, 5, dtype=torch.float64)
    r = torch.randn(3, 5, 5, dtype=torch.float64)
    for rule in RULES[:-1]:
        torch.testing.assert_close(rule.propagate(layer, a, r), rule.propagate(layer, a[None], r[None])[0])


class _OwnForward(nn.Conv2d):
    """A convolution subclass with a forward of its own (same maths)."""

    def forward(self, x):
        return nn.functional.conv2d(x, self.weight, self.bias, self.stride, self.padding)


@pytest.mark.parametrize("rule", [Zero(), Epsilon(0.25), Gamma(0.25), AlphaBeta(), ZBox(-3.0, 3.0)],
                         ids=repr)
@pytest.mark.parametrize("padding_mode", ["reflect", "circular", "same", "subclass"])
def test_convolutions_without_an_explicit_transpose_match_autograd(rule, padding_mode):
    """Padding modes other than zeros, string padding and subclasses with their own forward
    take the autograd path: R_j = sum_m t_mj d(s . z'_m)/dt_mj with the rule's modified
    weights, computed here with F.pad + F.conv2d."""
    torch.manual_seed(10)
    if padding_mode == "subclass":
        layer = _OwnForward(2, 3, 3, padding=1).double()
        pad, mode = (1, 1, 1, 1), "constant"
    elif padding_mode == "same":
        layer = nn.Conv2d(2, 3, (3, 5), padding="same").double()
        pad, mode = (2, 2, 1, 1), "constant"
    else:
        layer = nn.Conv2d(2, 3, 3, padding=1, stride=(1, 2), padding_mode=padding_mode).double()
        pad, mode = (1, 1, 1, 1), padding_mode
    a = torch.randn(2, 2, 5, 6, dtype=torch.float64)
    if not isinstance(rule, (Zero, Epsilon, ZBox)):
        a = a.abs()
    with torch.no_grad():
        out = layer(a)
    r = torch.randn_like(out)
    w, b = layer.weight.detach(), layer.bias.detach()

    def conv(t, weight, bias=None):
        return nn.functional.conv2d(nn.functional.pad(t, pad, mode=mode), weight, bias, layer.stride)

    def share(inputs, weights, bias, epsilon=0.0):  # sum_m t_m * d(s . z')/d t_m, z' = sum_m conv
        inputs = [t.clone().requires_grad_(True) for t in inputs]
        z = sum(conv(t, weight) for t, weight in zip(inputs, weights))
        z = z + bias.view(-1, 1, 1) if bias is not None else z
        sign = torch.where(z >= 0, 1.0, -1.0).double()
        grads = torch.autograd.grad(z, inputs, r / (z + sign * (epsilon + 1e-9)))
        return sum(t.detach() * g for t, g in zip(inputs, grads))

    pos, neg = w.clamp(min=0), w.clamp(max=0)
    if isinstance(rule, Zero):
        expected = share([a], [w], b)
    elif isinstance(rule, Epsilon):
        expected = share([a], [w], b, 0.25 * out.flatten(1).std(1, correction=0).view(-1, 1, 1, 1))
    elif isinstance(rule, Gamma):
        expected = share([a], [w + 0.25 * pos], b + 0.25 * b.clamp(min=0))
    elif isinstance(rule, AlphaBeta):
        expected = (2 * share([a], [pos], b.clamp(min=0)) - share([a], [neg], b.clamp(max=0)))
    else:
        expected = share([a, torch.full_like(a, -3.0), torch.full_like(a, 3.0)], [w, -pos, -neg], None)
    torch.testing.assert_close(rule.propagate(layer, a, r), expected, rtol=1e-7, atol=1e-9)


def test_zbox_accepts_tensor_bounds_and_rejects_bad_ones():
    torch.manual_seed(5)
    layer = nn.Conv2d(2, 3, 3, padding=1).double()
    a = torch.rand(2, 2, 4, 4, dtype=torch.float64)
    r = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    by_tensor = ZBox(torch.zeros(2, 1, 1, dtype=torch.float64), torch.ones(2, 1, 1, dtype=torch.float64))
    torch.testing.assert_close(by_tensor.propagate(layer, a, r), ZBox(0.0, 1.0).propagate(layer, a, r))
    with pytest.raises(ValueError, match="low"):
        ZBox(torch.zeros(5, 1, 1)).propagate(layer, a, r)
    with pytest.raises(ValueError, match="low <= high"):
        ZBox(1.0, 0.0).propagate(layer, a, r)
    with pytest.raises(ValueError, match="high"):
        ZBox(0.0, float("inf"))


@pytest.mark.parametrize("make, name", [
    (lambda: AlphaBeta(1.0, 1.0), "alpha"),
    (lambda: AlphaBeta(-1.0, -2.0), "alpha"),
    (lambda: Epsilon(-0.1), "epsilon"),
    (lambda: Epsilon(0.1, relative=1), "relative"),
    (lambda: Gamma(float("nan")), "gamma"),
])
def test_bad_rule_parameters_name_the_parameter(make, name):
    with pytest.raises(ValueError, match=name):
        make()


# ---------------------------------------------------------------- batch norm, model restored


def _fold_by_hand(net: nn.Sequential) -> nn.Sequential:
    """A copy of ``net`` with each BatchNorm2d folded into the conv before it (an Identity in its place)."""
    folded = copy.deepcopy(net)
    for i, module in enumerate(net):
        if isinstance(module, nn.BatchNorm2d):
            folded[i] = nn.Identity()
            conv = net[i - 1]
            scale = 1 / torch.sqrt(module.running_var + module.eps)
            shift = -module.running_mean * scale
            if module.affine:
                scale, shift = scale * module.weight, shift * module.weight + module.bias
            bias = torch.zeros_like(shift) if conv.bias is None else conv.bias
            new = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1).double()
            new.weight.data = (conv.weight * scale[:, None, None, None]).detach()
            new.bias.data = (bias * scale + shift).detach()
            folded[i - 1] = new
    return folded


def test_batchnorm_folding_gives_the_relevance_of_the_model_folded_by_hand():
    net = _normalised_net().eval()
    by_hand = _fold_by_hand(net)
    x = torch.rand(2, 2, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(by_hand(x), net(x))
    rules = {"0": ZBox(), nn.Conv2d: Gamma(0.25), nn.Linear: Epsilon()}
    r, layers = relevance(net, x, [2, 0], rule_set=rules, return_layers=True)
    r_hand, layers_hand = relevance(by_hand, x, [2, 0], rule_set=rules, return_layers=True)
    torch.testing.assert_close(r, r_hand)
    assert layers.keys() == layers_hand.keys()
    for name in layers:
        torch.testing.assert_close(layers[name], layers_hand[name])


def _snapshot(net):
    return {
        "training": [m.training for m in net.modules()],
        "modules": [(name, type(m)) for name, m in net.named_modules()],
        "parameters": {name: (p, p.detach().clone(), p.requires_grad) for name, p in net.named_parameters()},
        "buffers": {name: b.clone() for name, b in net.named_buffers()},
    }


def _assert_unchanged(net, before):
    after = _snapshot(net)
    assert after["training"] == before["training"]
    assert after["modules"] == before["modules"]
    assert after["parameters"].keys() == before["parameters"].keys()
    for name, (p, value, requires_grad) in before["parameters"].items():
        now = after["parameters"][name]
        assert now[0] is p and torch.equal(now[1], value) and now[2] == requires_grad
        assert p.grad is None
    for name, value in before["buffers"].items():
        assert torch.equal(after["buffers"][name], value)
    for module in net.modules():
        assert not (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks)
        assert not getattr(module, "_backward_pre_hooks", None)


class _Failing(Rule):
    def propagate(self, layer, inputs, relevance):
        raise RuntimeError("inside the rule")


def test_the_model_is_unchanged_after_relevance_and_after_an_error():
    net = _normalised_net()
    net.train()
    net[3].eval()  # a mix of modes must come back as it was
    before = _snapshot(net)
    x = torch.rand(2, 2, 8, 8, dtype=torch.float64)
    relevance(net, x, 1, rule_set={nn.Conv2d: Gamma(), nn.Linear: Epsilon()}, return_layers=True)
    _assert_unchanged(net, before)
    with pytest.raises(RuntimeError, match="inside the rule"):
        relevance(net, x, 1, rule_set={"4": _Failing()})
    _assert_unchanged(net, before)
    with pytest.raises(ValueError, match="target"):
        relevance(net, x, 7, rule_set={})
    _assert_unchanged(net, before)


def test_relevance_works_in_inference_mode():
    net = _bias_free_net(14)
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    expected = relevance(net, x, 1, rule_set={nn.Conv2d: Gamma(), nn.Linear: Epsilon()})
    with torch.inference_mode():
        got = relevance(net, x.clone(), 1, rule_set={nn.Conv2d: Gamma(), nn.Linear: Epsilon()})
    torch.testing.assert_close(got, expected)
    _assert_no_hooks(net)


def test_the_result_of_a_batch_is_that_of_each_image_alone():
    torch.manual_seed(6)
    model = VGG11(in_channels=1, width=2, head="128N", input_size=32)
    x = torch.rand(3, 1, 32, 32)
    for rule_set in RULE_SETS:
        together = relevance(model, x, [1, 0, 1], rule_set=rule_set)
        alone = torch.cat([relevance(model, x[i:i + 1], t, rule_set=rule_set)
                           for i, t in enumerate([1, 0, 1])])
        torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- bad input


def test_bad_inputs_name_the_argument_or_the_layer():
    net = _bias_free_net()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="'conv9_9'"):
        relevance(net, x, 0, rule_set={"conv9_9": Zero()})
    with pytest.raises(ValueError, match="'1'.*ReLU"):
        relevance(net, x, 0, rule_set={"1": Zero()})
    with pytest.raises(ValueError, match="rule_set"):
        relevance(net, x, 0, rule_set="nope")
    with pytest.raises(TypeError, match="rule_set"):
        relevance(net, x, 0, rule_set={nn.Conv2d: "gamma"})
    for target in (3, -1, [0, 5], [0, 1, 2], 1.0, [0.0, 1.0], True):
        with pytest.raises(ValueError, match="target"):
            relevance(net, x, target, rule_set={})
    for bad in (x[0], x.long(), x * float("nan")):
        with pytest.raises(ValueError, match="x"):
            relevance(net, bad, 0, rule_set={})
    with pytest.raises(ValueError, match=r"'features\.conv9_9'"):
        layer_rules(VGG11(width=1, input_size=32), {"features.conv9_9": Zero()})


@pytest.mark.parametrize("layer, kind", [
    (nn.Sigmoid(), "Sigmoid"),
    (nn.LSTM(8, 8), "LSTM"),
    (nn.BatchNorm2d(2), "BatchNorm2d"),  # not after a convolution: cannot be folded
])
def test_unsupported_layers_are_named_with_their_type(layer, kind):
    net = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Sequential(layer), nn.Flatten(),
                        nn.Linear(2 * 4 * 4, 2)).eval()
    before = _snapshot(net)
    with pytest.raises(ValueError, match=rf"'1\.0' of type {kind}"):
        relevance(net, torch.rand(1, 2, 4, 4), 0, rule_set={})
    _assert_unchanged(net, before)


class _Reordered(nn.Module):
    """Registers the head before the body: named_modules() order is not the forward order."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(16, 2)
        self.body = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Flatten())

    def forward(self, x):
        return self.head(self.body(x))


class _Functional(nn.Module):
    """Applies a computation that no leaf module stands for."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Flatten(), nn.Linear(16, 2))

    def forward(self, x):
        return self.body(torch.sigmoid(x))


class _Steps(nn.Module):
    """conv, relu, flatten, linear, applied by ``forward`` (which subclasses change)."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        torch.manual_seed(11)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=inplace)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(32, 2)

    def forward(self, x):
        return self.linear(self.flatten(self.relu(self.conv(x))))


class _InPlaceBetween(_Steps):
    def forward(self, x):
        x = self.conv(x)
        x.mul_(2)  # changes the conv output before the next leaf sees it
        return self.linear(self.flatten(self.relu(x)))


class _CalledTwice(_Steps):
    def forward(self, x):
        return self.linear(self.flatten(self.relu(self.relu(self.conv(x)))))


class _ReshapeBetween(_Steps):
    """Reshapes between two leaves (the values stay): relevance could not follow."""

    def forward(self, x):
        return self.linear(self.flatten(self.relu(self.conv(x)).flatten(2)))


class _ChangedOutput(_Steps):
    def forward(self, x):
        return super().forward(x) + 1


class _LeafLeftOut(_Steps):
    def forward(self, x):
        return self.linear(self.flatten(self.conv(x)))


class _KeywordCall(_Steps):
    def forward(self, x):
        return self.linear(self.flatten(self.relu(input=self.conv(x))))


class _FailsBetween(_Steps):
    def forward(self, x):
        x = self.relu(self.conv(x))
        raise RuntimeError("between the layers")


class _Copies(_Steps):
    """A copy or a view with the same values between leaves is the same input."""

    def forward(self, x):
        x = self.relu(self.conv(x.clone())).contiguous()
        return self.linear(self.flatten(x).view(len(x), -1))


class _SkipsIdentities(_Steps):
    """Registers a Dropout and an Identity that ``forward`` never calls."""

    def __init__(self):
        super().__init__()
        self.dropout = nn.Dropout(0.5)
        self.identity = nn.Identity()


def _assert_no_hooks(model):
    for module in model.modules():
        assert not (module._forward_hooks or module._forward_pre_hooks)


@pytest.mark.parametrize("model, detail", [
    (_Reordered(), "'body.0' runs before layer 'head'"),
    (_Functional(), "input of layer 'body.0'"),
    (_InPlaceBetween(), "input of layer 'relu'"),
    (_CalledTwice(), "'relu' runs more than once"),
    (_ReshapeBetween(), "input of layer 'flatten'"),
    (_ChangedOutput(), "model output"),
    (_LeafLeftOut(), "'flatten' runs before layer 'relu'"),
    (_KeywordCall(), "'relu' is called with 0 positional and 1 keyword"),
], ids=["reordered", "functional", "in-place", "twice", "reshape", "output", "left out", "keyword"])
def test_a_forward_that_is_not_the_leaf_sequence_is_refused(model, detail):
    model.train()
    with pytest.raises(ValueError, match="named_modules") as error:
        relevance(model, torch.rand(2, 1, 4, 4), 0, rule_set={})
    assert detail in str(error.value)
    _assert_no_hooks(model)  # the recording hooks are gone after the error
    assert all(module.training for module in model.modules())


def test_an_error_inside_the_forward_pass_removes_the_hooks():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"'2' \(Linear\) on an input of shape \(1, 18\)"):
        relevance(model, torch.rand(1, 1, 5, 5), 0, rule_set={})  # fc sized for 4 x 4 inputs
    _assert_no_hooks(model)
    model = _FailsBetween()
    with pytest.raises(RuntimeError, match="between the layers"):  # not in a layer: as it came
        relevance(model, torch.rand(1, 1, 4, 4), 0, rule_set={})
    _assert_no_hooks(model)


@pytest.mark.parametrize("model", [_Steps(inplace=True), _Copies(), _SkipsIdentities()],
                         ids=["in-place relu", "copies", "skipped identities"])
def test_forwards_equivalent_to_the_leaf_sequence_give_its_relevance(model):
    x = torch.rand(2, 1, 4, 4) - 0.3
    rules = {nn.Conv2d: Epsilon(0.25), nn.Linear: Zero()}  # both read the recorded z
    expected = relevance(_Steps(), x, [0, 1], rule_set=rules)
    x_before = x.clone()
    torch.testing.assert_close(relevance(model, x, [0, 1], rule_set=rules), expected)
    assert torch.equal(x, x_before)
    _assert_no_hooks(model)


class _ToOutput(Rule):
    """A user's rule without the ``output`` argument: LRP-0 through ``Zero``."""

    def propagate(self, layer, inputs, relevance):
        return Zero().propagate(layer, inputs, relevance)


def test_a_rule_without_the_output_argument_is_called_without_it():
    net = _bias_free_net(12)
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(relevance(net, x, 1, rule_set={nn.Conv2d: _ToOutput()}),
                               relevance(net, x, 1, rule_set={}))


# ---------------------------------------------------------------- VGG and the rule sets of seed 003


def test_rule_sets_follow_table_1():
    model = VGG11(width=1, input_size=32)
    montavon = {name.split(".")[-1]: type(rule).__name__ for name, rule in layer_rules(model).items()}
    assert montavon == {
        "conv1_1": "ZBox", "conv2_1": "Gamma", "conv3_1": "Gamma", "conv3_2": "Gamma",
        "conv4_1": "Epsilon", "conv4_2": "Epsilon", "conv5_1": "Epsilon", "conv5_2": "Epsilon",
        "fc1": "Zero", "fc2": "Zero", "fc3": "Zero",
        **{f"pool{k}": "MaxPool" for k in range(1, 6)},
    }
    assert all(rule.mode == "winner" for name, rule in layer_rules(model).items() if "pool" in name)
    seibold = {name.split(".")[-1]: type(rule).__name__
               for name, rule in layer_rules(model, "seibold").items()}
    assert seibold == {
        "conv1_1": "ZBox", "conv2_1": "AlphaBeta", "conv3_1": "AlphaBeta", "conv3_2": "Gamma",
        "conv4_1": "Gamma", "conv4_2": "Gamma", "conv5_1": "Gamma", "conv5_2": "Gamma",
        "fc1": "Epsilon", "fc2": "Epsilon", "fc3": "Epsilon",
        **{f"pool{k}": "MaxPool" for k in range(1, 6)},
    }
    rules = layer_rules(model, "seibold")
    assert rules["features.conv2_1"].alpha == 2.0 and rules["features.conv2_1"].beta == 1.0
    assert rules["features.conv3_2"].gamma == 0.25
    assert rules["classifier.fc1"].epsilon == 0.25 and rules["classifier.fc1"].relative
    # a full name wins over a last name component, which wins over a type
    custom = layer_rules(model, {"features.conv1_1": Zero(), "conv1_1": Gamma(), nn.Conv2d: Epsilon()})
    assert isinstance(custom["features.conv1_1"], Zero)
    assert isinstance(custom["features.conv2_1"], Epsilon)
    assert isinstance(custom["classifier.fc1"], Zero)


@pytest.mark.parametrize("head", ["128N", "onefc"])
@pytest.mark.parametrize("rule_set", ["montavon", "seibold"])
def test_relevance_on_vgg(head, rule_set):
    torch.manual_seed(7)
    model = VGG11(in_channels=3, width=2, head=head, input_size=32)
    x = torch.rand(2, 3, 32, 32)
    r = relevance(model, x, torch.tensor([0, 1]), rule_set=rule_set)
    assert r.shape == x.shape and r.dtype == x.dtype
    assert torch.isfinite(r).all() and r.abs().sum() > 0
    assert model.training  # the model's mode came back


# ---------------------------------------------------------------- the LRP explainer


def _vgg(head: str = "onefc", seed: int = 21) -> VGG11:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return VGG11(in_channels=1, width=2, head=head, input_size=32)


def _image(seed: int, shape=(1, 32, 32), dtype=torch.float32) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("rule_set", ["montavon", "seibold", "epsilon",
                                      {"conv1_1": ZBox(0.0, 1.0), nn.Conv2d: AlphaBeta(),
                                       nn.Linear: Epsilon(0.01, relative=False)}],
                         ids=["montavon", "seibold", "epsilon", "mapping"])
@pytest.mark.parametrize("target", [None, 0, Target(1)])
def test_the_explanation_is_the_relevance_of_the_functional_api(rule_set, target):
    model = _vgg("128N")
    image = _image(1)
    explanation = LRP(model, rule_set=rule_set).explain(image, target)
    class_index = 1 if target is None else int(getattr(target, "class_index", target))
    expected = relevance(model, image[None], class_index, rule_set=rule_set)[0]
    assert explanation.method == "lrp" and explanation.target_class == class_index
    assert explanation.saliency.dtype == np.float32 and explanation.saliency.shape == (32, 32)
    np.testing.assert_array_equal(explanation.saliency, expected.sum(0).numpy())
    np.testing.assert_array_equal(explanation.arrays["relevance"], expected.numpy())
    with torch.no_grad():
        logits = model.eval()(image[None])[0]
    np.testing.assert_allclose(explanation.info["logits"], logits.double().numpy(), rtol=1e-6)
    assert explanation.info["logit"] == pytest.approx(float(logits[class_index]), rel=1e-6)
    assert explanation.info["predicted_class"] == int(logits.argmax())
    predicted = int(logits.argmax()) == class_index
    assert explanation.arrays["target_pixels"].shape == (32, 32)
    assert (explanation.arrays["target_pixels"] == predicted).all()  # seed 003's gate
    assert explanation.info["probability"] == pytest.approx(
        float(torch.softmax(logits, 0)[class_index]), rel=1e-5)
    assert set(explanation.parameters["rules"]) == set(layer_rules(model, rule_set))


@pytest.mark.parametrize("method, options", [("simple", {}), ("gmm", {"seed": 3}),
                                             ("bmm", {"max_iter": 20})])
def test_the_mask_is_the_segmentation_of_the_summed_relevance(method, options):
    model = _vgg()
    image = _image(2)
    explanation = LRP(model, rule_set="seibold", segmentation=method,
                      segmentation_options=options).explain(image)
    summed = relevance(model, image[None], 1, rule_set="seibold")[0].sum(0)
    expected = segment(summed, method, **options)
    assert explanation.arrays["mask"].dtype == bool
    np.testing.assert_array_equal(explanation.arrays["mask"], expected)
    assert explanation.parameters["segmentation"] == method
    assert explanation.parameters["segmentation_options"] == options
    assert "segmentation" in explanation.timings


@pytest.mark.parametrize("rules", [{}, {nn.Conv2d: Epsilon(1e-9, relative=False),
                                        nn.Linear: Epsilon(1e-9, relative=False)},
                                   {"0": ZBox(-3.0, 3.0)}],
                         ids=["lrp-0", "tiny-epsilon", "z-box-first"])
@pytest.mark.parametrize("class_index", [0, 2])
def test_the_explanation_conserves_the_explained_logit(rules, class_index):
    """LRP-0, epsilon -> 0 and z^B without biases conserve: the map sums to the logit."""
    net = _bias_free_net(4)  # float64; the image is float32 (as every explainer takes it)
    image = _image(3, (2, 8, 8)) * 2 - 1
    explanation = LRP(net, rule_set=rules).explain(image, class_index)
    with torch.no_grad():
        logit = float(net.eval()(image[None].double())[0, class_index])
    assert explanation.info["logit"] == pytest.approx(logit, rel=1e-12)
    assert explanation.info["relevance_sum"] == pytest.approx(logit, rel=1e-6, abs=1e-9)
    assert float(explanation.saliency.astype(np.float64).sum()) == pytest.approx(
        logit, rel=1e-4, abs=1e-5)


class _OneLogit(nn.Sequential):
    """A binary classifier with a single logit, as trained with BCEWithLogitsLoss."""

    def __init__(self):
        with torch.random.fork_rng():
            torch.manual_seed(5)
            super().__init__(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(3 * 4 * 4, 1))


def test_a_single_logit_is_class_1_and_its_negative_class_0():
    model = _OneLogit()
    image = _image(4, (1, 8, 8))
    explainer = LRP(model, rule_set={nn.Conv2d: Gamma(0.25), nn.Linear: Epsilon()})
    expected = relevance(model, image[None], 0, rule_set=explainer.rule_set)[0].sum(0).numpy()
    positive, negative = explainer.explain_batch([image, image], [1, 0])
    np.testing.assert_array_equal(positive.saliency, expected)
    np.testing.assert_array_equal(negative.saliency, -expected)
    assert negative.info["logit"] == -positive.info["logit"]
    assert positive.info["logits"] == negative.info["logits"] and len(positive.info["logits"]) == 1
    with torch.no_grad():
        probability = float(torch.sigmoid(model(image[None]))[0, 0])
    assert positive.info["probability"] == pytest.approx(probability, rel=1e-6)
    assert negative.info["probability"] == pytest.approx(1 - probability, rel=1e-5)
    with pytest.raises(ValueError, match="target"):
        explainer.explain(image, 2)


def test_explain_batch_equals_one_at_a_time():
    model = _vgg("128N")
    explainer = LRP(model, rule_set="seibold", segmentation="simple")
    images = [_image(seed) for seed in (5, 6, 7)]
    targets = [None, 0, Target(1)]
    together = explainer.explain_batch(images, targets)
    for image, target, batch in zip(images, targets, together):
        alone = explainer.explain(image, target)
        assert batch.target_class == alone.target_class
        np.testing.assert_array_equal(batch.saliency, alone.saliency)
        assert batch.arrays.keys() == alone.arrays.keys()
        for key, array in alone.arrays.items():
            np.testing.assert_array_equal(batch.arrays[key], array, err_msg=key)
        assert batch.info == alone.info


def test_save_and_load_give_the_same_explanation(tmp_path):
    explanation = LRP(_vgg(), segmentation="gmm").explain(_image(8), Target(1))
    explanation.save(tmp_path / "lrp")
    loaded = Explanation.load(tmp_path / "lrp")
    np.testing.assert_array_equal(loaded.saliency, explanation.saliency)
    assert (loaded.method, loaded.target_class) == ("lrp", 1)
    assert loaded.parameters == explanation.parameters and loaded.info == explanation.info
    assert loaded.arrays.keys() == explanation.arrays.keys() == {"relevance", "mask",
                                                                  "target_pixels"}
    for key, array in explanation.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[key], array, err_msg=key)
        assert loaded.arrays[key].dtype == array.dtype


def test_the_model_is_unchanged_after_explaining_and_after_errors():
    net = _normalised_net()
    net.train()
    net[3].eval()
    net[4].weight.requires_grad_(False)
    before = _snapshot(net)
    image = _image(9, (2, 8, 8), torch.float64)
    LRP(net, rule_set={"0": ZBox(), nn.Conv2d: Gamma(), nn.Linear: Epsilon()},
        segmentation="bmm").explain_batch([image, image], [1, 2])
    _assert_unchanged(net, before)
    with pytest.raises(RuntimeError, match="inside the rule"):  # fails in the propagation
        LRP(net, rule_set={"4": _Failing()}).explain(image)
    _assert_unchanged(net, before)
    for fail_at, error in ((1, ValueError), (2, RuntimeError)):  # first pass, recorded pass
        wrapped = FailsLater(net, fail_at)
        with pytest.raises(error, match="the model broke down"):
            LRP(wrapped, rule_set={}).explain(image)
        _assert_unchanged(net, before)
    with pytest.raises(ValueError, match="target"):
        LRP(net, rule_set={}).explain(image, 3)
    _assert_unchanged(net, before)


def test_a_target_with_a_region_is_refused_before_any_work():
    model = _vgg()
    explainer = LRP(model, rule_set="epsilon")
    region = np.ones((32, 32), dtype=bool)
    with pytest.raises(ValueError, match="target: a classifier's output has no pixels"):
        explainer.explain(_image(10), Target(1, region=region))
    calls = []
    handle = model.features.conv1_1.register_forward_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(ValueError, match="has no pixels"):
            explainer.explain_batch([_image(10), _image(11)], [1, Target(0, region=region)])
    finally:
        handle.remove()
    assert len(calls) == 2  # the two first passes, no propagation


def test_bad_options_are_refused_at_construction():
    model = _vgg()
    plain = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * 32 * 32, 2))
    with pytest.raises(ValueError, match="rule set 'montavon' is written for the layer names of "
                                         "interpret_segmentation.models.VGG11.*'epsilon'"):
        LRP(plain)
    LRP(plain, rule_set="epsilon")  # the rule set for any model
    with pytest.raises(ValueError, match="rule_set: expected one of"):
        LRP(model, rule_set="zennit")
    with pytest.raises(TypeError, match="rule_set"):
        LRP(model, rule_set=3)
    with pytest.raises(ValueError, match="not supported by LRP"):
        LRP(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sigmoid(), nn.Flatten(), nn.LazyLinear(2)))
    with pytest.raises(ValueError, match=r"segmentation: expected one of \('simple', 'gmm', "
                                         r"'bmm'\) or None, got 'otsu'"):
        LRP(model, segmentation="otsu")
    with pytest.raises(ValueError, match="segmentation_options: not taken by the 'simple'"):
        LRP(model, segmentation="simple", segmentation_options={"seed": 1})
    with pytest.raises(ValueError, match="max_iter: expected a positive int, got 0"):
        LRP(model, segmentation="bmm", segmentation_options={"max_iter": 0})
    with pytest.raises(ValueError, match="'return_model' is not taken here"):
        LRP(model, segmentation="bmm", segmentation_options={"return_model": True})
    with pytest.raises(ValueError, match="given without a segmentation"):
        LRP(model, segmentation_options={"seed": 1})
    with pytest.raises(TypeError, match="segmentation_options: expected a dict"):
        LRP(model, segmentation="gmm", segmentation_options=[("seed", 1)])
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        LRP(model, rules="montavon")


def test_the_registry_builds_lrp_with_its_defaults():
    method = methods.get("lrp")
    assert method.model_kind == "classification" and method.cls is LRP
    assert "lrp" in methods.available("classification")
    assert "lrp" not in methods.available("segmentation")
    assert method.defaults() == {"rule_set": "montavon", "segmentation": None, "refine": 0,
                                 "average_flips": False}
    for option in method.options:
        assert option.choices is None or method.defaults()[option.name] in (None, *option.choices)
    assert set(method.options[0].choices) == set(RULE_SETS)
    explanation = method.build(_vgg(), segmentation="simple").explain(_image(12))
    assert explanation.parameters["rule_set"] == "montavon" and "mask" in explanation.arrays


# ---------------------------------------------------------------- the core reads classifiers


def test_the_model_adapter_reads_class_scores_as_the_same_scores_at_every_pixel():
    model = _vgg()
    image = _image(13)
    with torch.no_grad():
        logits = model.eval()(image[None])
    adapter = ModelAdapter(model)
    probabilities = adapter.first_pass(image[None])
    assert adapter.output == "logits"
    assert probabilities.shape == (1, 2, 32, 32)
    expected = torch.softmax(logits, 1)[:, :, None, None].expand(1, 2, 32, 32)
    torch.testing.assert_close(probabilities, expected, rtol=0, atol=0)
    scores = adapter.scores(image[None])
    torch.testing.assert_close(scores, logits[:, :, None, None].expand_as(scores), rtol=0, atol=0)
    winner = int(logits.argmax())
    assert resolve_target(None, probabilities).pixels.all() == (winner == 1)
    assert resolve_target(winner, probabilities).pixels.all()
    assert not resolve_target(1 - winner, probabilities).pixels.any()
    one = ModelAdapter(_OneLogit())(_image(14, (1, 8, 8))[None])
    assert one.shape == (1, 2, 8, 8) and (one[:, 1] == one[0, 1, 0, 0]).all()


# ---------------------------------------------------------------- mirror images, refined masks


def test_average_flips_is_the_mean_of_the_mirror_images_flipped_back():
    net = _bias_free_net(6)
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    target = [1, 2]
    averaged = relevance(net, x, target, rule_set={}, average_flips=True)
    naive = [relevance(net, x.flip(dims), target, rule_set={}).flip(dims)
             for dims in ((), (3,), (2,), (2, 3))]
    torch.testing.assert_close(averaged, sum(naive) / 4, rtol=1e-12, atol=1e-12)
    logits = [_logits(net, x.flip(dims), target) for dims in ((), (3,), (2,), (2, 3))]
    # LRP-0 without biases conserves: each mirror image's map sums to its own logit
    torch.testing.assert_close(averaged.sum((1, 2, 3)), sum(logits) / 4, rtol=1e-5, atol=1e-8)
    assert not torch.allclose(averaged, naive[0])  # the mirror images do change the map


def test_average_flips_of_a_mirror_symmetric_image_and_network_is_the_plain_map():
    """A network whose filters are symmetric both ways gives a symmetric image's mirror
    images the same map: the average is the plain relevance."""
    torch.manual_seed(7)
    conv = nn.Conv2d(1, 3, 3, padding=1, bias=False).double()
    with torch.no_grad():
        weight = conv.weight
        weight.copy_((weight + weight.flip(2) + weight.flip(3) + weight.flip((2, 3))) / 4)
    net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(3, 2, bias=False)).double()
    half = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    half = torch.cat([half, half.flip(3)], 3)
    image = torch.cat([half, half.flip(2)], 2)  # symmetric both ways
    torch.testing.assert_close(relevance(net, image, 0, rule_set={}, average_flips=True),
                               relevance(net, image, 0, rule_set={}), rtol=1e-12, atol=1e-14)


def test_average_flips_arguments_are_checked():
    net = _bias_free_net()
    x = torch.rand(1, 2, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="return_layers: .*expected return_layers=False with "
                                         "average_flips=True"):
        relevance(net, x, 0, rule_set={}, return_layers=True, average_flips=True)
    with pytest.raises(ValueError, match="average_flips: expected True or False"):
        relevance(net, x, 0, rule_set={}, average_flips="yes")


def test_the_explainer_averages_mirror_images_and_refines_its_mask():
    model = _vgg("128N")
    image = _image(12)
    explanation = LRP(model, rule_set="seibold", segmentation="simple", refine=1,
                      average_flips=True).explain(image)
    expected = relevance(model, image[None], 1, rule_set="seibold", average_flips=True)[0]
    np.testing.assert_allclose(explanation.arrays["relevance"], expected.numpy(), rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_array_equal(explanation.arrays["mask"],
                                  segment(explanation.saliency, "simple", refine=1))
    with torch.no_grad():
        logits = model.eval()(image[None])[0]
    assert explanation.info["logit"] == pytest.approx(float(logits[1]), rel=1e-6)  # its own
    np.testing.assert_allclose(explanation.info["logits"], logits.double().numpy(), rtol=1e-6)
    assert explanation.info["model_passes"] == 5
    assert explanation.parameters["refine"] == 1 and explanation.parameters["average_flips"]
    plain = LRP(model, rule_set="seibold").explain(image)
    assert plain.parameters["refine"] == 0 and not plain.parameters["average_flips"]
    assert plain.info["model_passes"] == 2


def test_refine_needs_a_segmentation_and_is_not_a_segmentation_option():
    model = _vgg()
    with pytest.raises(ValueError, match="refine: refines a mask; expected segmentation="):
        LRP(model, refine=1)
    with pytest.raises(ValueError, match="refine: expected a non-negative int, got -1"):
        LRP(model, segmentation="gmm", refine=-1)
    with pytest.raises(ValueError, match="segmentation_options: 'refine' is LRP's own argument"):
        LRP(model, segmentation="gmm", segmentation_options={"refine": 1})
    with pytest.raises(ValueError, match="average_flips: expected True or False"):
        LRP(model, average_flips=1)
