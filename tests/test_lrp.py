import copy

import pytest
import torch
from torch import nn

from interpret_segmentation.lrp import (
    RULE_SETS,
    AlphaBeta,
    Epsilon,
    Gamma,
    Rule,
    ZBox,
    Zero,
    layer_rules,
    relevance,
)
from interpret_segmentation.models.vgg import VGG11

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
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            if module.affine:
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.5, 0.5)
    return net


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
    """The convolution (without bias) as a dense matrix (outputs, inputs), built by loops."""
    (sh, sw), (ph, pw) = conv.stride, conv.padding
    c_out, c_in, kh, kw = conv.weight.shape
    h_out, w_out = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    matrix = torch.zeros(c_out, h_out, w_out, c_in, height, width, dtype=conv.weight.dtype)
    for o in range(c_out):
        for i in range(c_in):
            for u in range(kh):
                for v in range(kw):
                    for y in range(h_out):
                        for x in range(w_out):
                            row, col = y * sh - ph + u, x * sw - pw + v
                            if 0 <= row < height and 0 <= col < width:
                                matrix[o, y, x, i, row, col] = conv.weight[o, i, u, v]
    return matrix.reshape(c_out * h_out * w_out, c_in * height * width), h_out * w_out


def _naive(rule, a, weight, bias, r):
    """The rule's formula on a dense layer: a (B, J), weight (K, J), bias (K,), r (B, K)."""
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
        low = a.min(1, keepdim=True).values if rule.low is None else torch.full_like(a, rule.low)
        high = a.max(1, keepdim=True).values if rule.high is None else torch.full_like(a, rule.high)
        modified = (torch.einsum("bj,kj->bjk", a, weight) - torch.einsum("bj,kj->bjk", low + 0 * a, pos)
                    - torch.einsum("bj,kj->bjk", high + 0 * a, neg))
        return share(modified, modified.sum(1))
    raise AssertionError(rule)


RULES = [Zero(), Epsilon(0.25), Epsilon(0.3, relative=False), Gamma(0.25), AlphaBeta(2.0, 1.0),
         AlphaBeta(1.0, 0.0), ZBox(), ZBox(-3.0, 3.5)]


@pytest.mark.parametrize("rule", RULES, ids=repr)
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_rule_matches_a_naive_implementation(rule, kind):
    torch.manual_seed(4)
    if kind == "conv":
        layer = nn.Conv2d(2, 3, 3, padding=1, stride=(1, 2)).double()
        a = torch.randn(2, 2, 5, 6, dtype=torch.float64)
        weight, units = _conv_matrix(layer, 5, 6)
        bias = layer.bias.detach().repeat_interleave(units)
    else:
        layer = nn.Linear(7, 4).double()
        a = torch.randn(2, 7, dtype=torch.float64)
        weight, bias = layer.weight.detach(), layer.bias.detach()
    with torch.no_grad():
        out = layer(a)
    r = torch.randn_like(out)
    got = rule.propagate(layer, a, r)
    assert got.shape == a.shape
    expected = _naive(rule, a.flatten(1), weight.detach(), bias, r.flatten(1))
    torch.testing.assert_close(got.flatten(1), expected, rtol=1e-7, atol=1e-9)


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


@pytest.mark.parametrize("model", [_Reordered(), _Functional()], ids=["reordered", "functional"])
def test_a_forward_that_is_not_the_leaf_sequence_is_refused(model):
    with pytest.raises(ValueError, match="named_modules"):
        relevance(model, torch.rand(1, 1, 4, 4), 0, rule_set={})


# ---------------------------------------------------------------- VGG and the rule sets of seed 003


def test_rule_sets_follow_table_1():
    model = VGG11(width=1, input_size=32)
    montavon = {name.split(".")[-1]: type(rule).__name__ for name, rule in layer_rules(model).items()}
    assert montavon == {
        "conv1_1": "ZBox", "conv2_1": "Gamma", "conv3_1": "Gamma", "conv3_2": "Gamma",
        "conv4_1": "Epsilon", "conv4_2": "Epsilon", "conv5_1": "Epsilon", "conv5_2": "Epsilon",
        "fc1": "Zero", "fc2": "Zero", "fc3": "Zero",
    }
    seibold = {name.split(".")[-1]: type(rule).__name__
               for name, rule in layer_rules(model, "seibold").items()}
    assert seibold == {
        "conv1_1": "ZBox", "conv2_1": "AlphaBeta", "conv3_1": "AlphaBeta", "conv3_2": "Gamma",
        "conv4_1": "Gamma", "conv4_2": "Gamma", "conv5_1": "Gamma", "conv5_2": "Gamma",
        "fc1": "Epsilon", "fc2": "Epsilon", "fc3": "Epsilon",
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
