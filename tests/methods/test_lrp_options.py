"""The LRP options seed 003's study reads in its own way: z^B bounds from the data range, the
two readings of "epsilon = 0.25 std", max-pooling passed as an average, and the rule sets
built from them (:func:`make_rule_set`)."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from interpret_segmentation.methods.lrp import (
    RULE_SETS,
    Epsilon,
    Gamma,
    MaxPool,
    ZBox,
    Zero,
    layer_rules,
    make_rule_set,
    relevance,
)
from interpret_segmentation.models.vgg import VGG11


def _linear(weight, bias=None) -> nn.Linear:
    weight = torch.as_tensor(weight, dtype=torch.float64)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float64))
    return layer


# ---------------------------------------------------------------- z^B with the data range


def test_zbox_bounds_by_hand():
    # R_j = (x_j w_j - l w_j^+ - h w_j^-) / sum_j' (...) * R, one output, w = (1, -2)
    layer = _linear([[1.0, -2.0]])
    x = torch.tensor([[0.5, 0.25]], dtype=torch.float64)
    r = torch.tensor([[4.0]], dtype=torch.float64)
    # data range l = 0, h = 1: terms 0.5 and -0.5 + 2 = 1.5
    torch.testing.assert_close(ZBox(0.0, 1.0).propagate(layer, x, r),
                               torch.tensor([[1.0, 3.0]], dtype=torch.float64))
    # the image's own range l = 0.25, h = 0.5: terms 0.25 and -0.5 + 1 = 0.5
    torch.testing.assert_close(ZBox().propagate(layer, x, r),
                               torch.tensor([[4 / 3, 8 / 3]], dtype=torch.float64))


def _naive_zbox(conv: nn.Conv2d, x: np.ndarray, r_out: np.ndarray, low: float, high: float):
    """z^B through a 3x3 convolution with padding 1, one output unit at a time (float64)."""
    w = conv.weight.detach().double().numpy()
    _, _, height, width = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    lows = np.pad(np.full_like(x, low), ((0, 0), (0, 0), (1, 1), (1, 1)))
    highs = np.pad(np.full_like(x, high), ((0, 0), (0, 0), (1, 1), (1, 1)))
    result = np.zeros_like(padded)
    for b in range(x.shape[0]):
        for k in range(w.shape[0]):
            for i in range(height):
                for j in range(width):
                    window = np.s_[b, :, i:i + 3, j:j + 3]
                    terms = (padded[window] * w[k] - lows[window] * np.maximum(w[k], 0)
                             - highs[window] * np.minimum(w[k], 0))
                    result[window] += terms / terms.sum() * r_out[b, k, i, j]
    return result[:, :, 1:-1, 1:-1]


def test_a_rule_set_with_the_data_range_matches_a_naive_zbox_on_vgg():
    torch.manual_seed(0)
    model = VGG11(in_channels=1, width=2, input_size=32, head="onefc").double().eval()
    x = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    rules = make_rule_set("montavon", bounds=(0.0, 1.0))
    r, layers = relevance(model, x, 1, rule_set=rules, return_layers=True)
    after_conv1 = layers["features.relu1_1"].numpy()  # relevance of conv1_1's outputs
    expected = _naive_zbox(model.features.conv1_1, x.numpy(), after_conv1, 0.0, 1.0)
    np.testing.assert_allclose(r.numpy(), expected, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(r.sum((1, 2, 3)).numpy(), after_conv1.sum((1, 2, 3)), rtol=1e-8)
    # each image's own range is another map (and the library's default)
    own = relevance(model, x, 1, rule_set="montavon")
    assert not torch.allclose(own, r, rtol=1e-3)
    assert torch.equal(relevance(model, x, 1, rule_set=make_rule_set("montavon")), own)


# ---------------------------------------------------------------- the two readings of "0.25 std"


@pytest.mark.parametrize("spread", ["std", "rms"])
def test_epsilon_readings_against_numpy_for_a_linear_layer(spread):
    rng = np.random.default_rng(1)
    weight, bias = rng.normal(size=(5, 6)), rng.normal(size=5) + 1.0  # pre-activations off 0
    a, r = rng.random((3, 6)), rng.normal(size=(3, 5))
    z = a @ weight.T + bias
    scale = z.std(axis=1) if spread == "std" else np.sqrt((z**2).mean(axis=1))
    eps = 0.25 * scale[:, None]
    s = r / (z + (eps + 1e-9) * np.where(z >= 0, 1.0, -1.0))
    expected = a * (s @ weight)
    got = Epsilon(0.25, spread=spread).propagate(_linear(weight, bias), torch.from_numpy(a),
                                                 torch.from_numpy(r))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("spread", ["std", "rms"])
def test_epsilon_readings_against_numpy_for_a_convolution(spread):
    torch.manual_seed(2)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    a = torch.rand(2, 2, 6, 5, dtype=torch.float64)
    r = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    z = conv(a).detach().numpy()
    flat = z.reshape(2, -1)  # all output units of one image: every channel and position
    scale = flat.std(axis=1) if spread == "std" else np.sqrt((flat**2).mean(axis=1))
    s = r.numpy() / (z + (0.25 * scale[:, None, None, None] + 1e-9) * np.where(z >= 0, 1.0, -1.0))
    # sum_k w_jk s_k by autograd of the convolution (without its bias)
    x = a.clone().requires_grad_(True)
    F.conv2d(x, conv.weight, None, padding=1).backward(torch.from_numpy(s))
    expected = a.numpy() * x.grad.numpy()
    got = Epsilon(0.25, spread=spread).propagate(conv, a, r)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_the_readings_differ_by_the_mean_of_the_pre_activations():
    # rms^2 = std^2 + mean^2: equal for centred pre-activations, rms larger otherwise
    layer = _linear([[1.0, 0.0], [0.0, 1.0]])
    r = torch.ones(1, 2, dtype=torch.float64)
    centred = torch.tensor([[1.0, -1.0]], dtype=torch.float64)  # z = (1, -1): std = rms = 1
    torch.testing.assert_close(Epsilon(spread="std").propagate(layer, centred, r),
                               Epsilon(spread="rms").propagate(layer, centred, r))
    shifted = torch.tensor([[3.0, 1.0]], dtype=torch.float64)  # std 1, rms sqrt(5)
    by_std = Epsilon(spread="std").propagate(layer, shifted, r)
    by_rms = Epsilon(spread="rms").propagate(layer, shifted, r)
    torch.testing.assert_close(by_std, shifted / (shifted + 0.25))
    torch.testing.assert_close(by_rms, shifted / (shifted + 0.25 * 5**0.5))
    # an absolute epsilon ignores the reading
    torch.testing.assert_close(Epsilon(0.5, relative=False, spread="rms").propagate(layer, shifted, r),
                               shifted / (shifted + 0.5))


# ---------------------------------------------------------------- max-pooling as an average


def test_max_pooling_rules_by_hand():
    pool = nn.MaxPool2d(2)
    a = torch.tensor([[[[1.0, 3.0], [0.0, 4.0]]]], dtype=torch.float64)
    r = torch.tensor([[[[8.0]]]], dtype=torch.float64)
    torch.testing.assert_close(MaxPool("winner").propagate(pool, a, r),
                               torch.tensor([[[[0.0, 0.0], [0.0, 8.0]]]], dtype=torch.float64))
    # as an average: each input's share of the window's sum, 8 * a / 8
    torch.testing.assert_close(MaxPool("average").propagate(pool, a, r), a)


def test_max_pooling_as_an_average_conserves_and_spreads():
    torch.manual_seed(3)
    pool = nn.MaxPool2d(2)
    a = torch.rand(2, 3, 8, 6, dtype=torch.float64)
    r = torch.rand(2, 3, 4, 3, dtype=torch.float64)
    spread = MaxPool("average").propagate(pool, a, r)
    torch.testing.assert_close(spread.sum((1, 2, 3)), r.sum((1, 2, 3)))
    assert (spread > 0).all()  # every input of a window gets a share
    winner = MaxPool("winner").propagate(pool, a, r)
    assert (winner > 0).sum() == r.numel()  # one input per window
    # through a network: LRP-0 without biases conserves the logit either way
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(2 * 4 * 4, 2, bias=False)).double().eval()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        logit = net(x)[:, 1]
    for mode in ("winner", "average"):
        total = relevance(net, x, 1, rule_set={nn.MaxPool2d: MaxPool(mode)}).sum((1, 2, 3))
        torch.testing.assert_close(total, logit)


def test_max_pooling_rules_are_checked():
    with pytest.raises(ValueError, match="^mode: expected one of winner, average"):
        MaxPool("max")
    with pytest.raises(ValueError, match="dilation"):
        MaxPool("average").propagate(nn.MaxPool2d(2, dilation=2), torch.rand(1, 1, 8, 8),
                                     torch.rand(1, 1, 3, 3))
    with pytest.raises(ValueError, match="MaxPool applies to MaxPool2d layers, got Conv2d"):
        MaxPool().propagate(nn.Conv2d(1, 1, 1), torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2))
    model = VGG11(width=1, input_size=32)
    with pytest.raises(ValueError, match=r"^rule_set: key 'pool1' gives layer 'features\.pool1'"):
        layer_rules(model, {"pool1": Zero()})
    with pytest.raises(ValueError, match=r"^rule_set: key 'conv1_1' gives layer"):
        layer_rules(model, {"conv1_1": MaxPool("average")})
    # by type, a rule goes only to the layers it is made for
    rules = layer_rules(model, {nn.Module: Gamma(), nn.MaxPool2d: MaxPool("average")})
    assert isinstance(rules["features.conv1_1"], Gamma)
    assert rules["features.pool1"].mode == "average"
    assert layer_rules(model, {nn.Module: Gamma()})["features.pool3"].mode == "winner"


# ---------------------------------------------------------------- rule sets with the options


def test_make_rule_set_copies_a_named_set_with_the_options():
    rules = make_rule_set("seibold", bounds=(0.0, 1.0), spread="rms", max_pool="average")
    assert rules["conv1_1"].low == 0.0 and rules["conv1_1"].high == 1.0
    assert rules[nn.Linear].spread == "rms" and rules[nn.Linear].epsilon == 0.25
    assert rules["conv2_1"] is RULE_SETS["seibold"]["conv2_1"]  # the other rules as they were
    assert rules[nn.MaxPool2d].mode == "average"
    # the named set itself is unchanged
    assert RULE_SETS["seibold"]["conv1_1"].low is None
    assert RULE_SETS["seibold"][nn.Linear].spread == "std"
    assert nn.MaxPool2d not in RULE_SETS["seibold"]
    montavon = make_rule_set("montavon", spread="rms")
    assert all(montavon[name].spread == "rms" for name in ("conv4_1", "conv5_2"))
    assert montavon["conv1_1"].low is None and nn.MaxPool2d not in montavon
    assert repr(montavon["conv4_1"]) == "Epsilon(epsilon=0.25, relative=True, spread='rms')"
    # relevance with the copy is relevance with the same rules written out
    torch.manual_seed(4)
    model = VGG11(in_channels=1, width=2, input_size=32).double().eval()
    x = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    written = {**RULE_SETS["seibold"], "conv1_1": ZBox(0.0, 1.0),
               nn.Linear: Epsilon(0.25, spread="rms"), nn.MaxPool2d: MaxPool("average")}
    torch.testing.assert_close(relevance(model, x, 1, rule_set=rules),
                               relevance(model, x, 1, rule_set=written))


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"name": "zennit"}, "name"),
    ({"name": "seibold", "spread": "var"}, "spread"),
    ({"name": "seibold", "max_pool": "min"}, "max_pool"),
    ({"name": "seibold", "bounds": (1.0, 0.0)}, "bounds"),
    ({"name": "seibold", "bounds": (0.0, float("inf"))}, "bounds"),
    ({"name": "seibold", "bounds": 1.0}, "bounds"),
])
def test_make_rule_set_names_a_bad_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        make_rule_set(**kwargs)
    with pytest.raises(ValueError, match="^spread: expected one of std, rms"):
        Epsilon(spread="mad")
