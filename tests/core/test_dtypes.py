"""The model runs in its own dtype (and mixed precision on request); results come back float32."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from interpret_segmentation.core import Explainer, ModelAdapter, Perturbations, Target

TOLERANCE = {torch.float64: 1e-5, torch.bfloat16: 0.03, torch.float16: 2e-3}


class Probe(Explainer):
    method = "probe"

    def _explain(self, item):
        return self.explanation(item, item.probabilities[0, item.target.class_index])


def reference_model(dims=2):
    torch.manual_seed(0)
    conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
    model = nn.Sequential(conv(2, 6, 3, padding=1), norm(6), nn.ReLU(), conv(6, 3, 3, padding=1))
    with torch.no_grad():
        model[1].running_var.uniform_(0.5, 2.0)
    return model


def recording(model, seen):
    """``model`` with a hook that records the dtype of every convolution's input and output."""
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            module.register_forward_hook(
                lambda m, args, out: seen.append((args[0].dtype, out.dtype)))
    return model


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dims", [2, 3])
def test_the_model_runs_in_its_own_dtype_and_every_value_is_right(dtype, dims):
    reference = reference_model(dims)
    seen = []
    model = recording(copy.deepcopy(reference).to(dtype), seen)
    x = torch.rand(3, 2, *([6] * dims))
    expected = ModelAdapter(reference, output="logits")(x)
    adapter = ModelAdapter(model, output="logits")
    try:
        got = adapter(x)
    except RuntimeError as error:  # float16 convolutions are missing on some CPU builds
        if dtype == torch.float16 and "not implemented" in str(error).lower():
            pytest.skip(f"float16 convolution on CPU: {error}")
        raise
    assert adapter.dtype == dtype and seen and all(pair == (dtype, dtype) for pair in seen)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert (got - expected).abs().max() <= TOLERANCE[dtype]
    scores = adapter.scores(x)
    assert scores.dtype == torch.float32
    expected_scores = ModelAdapter(reference, output="logits").scores(x)
    assert (scores - expected_scores).abs().max() <= 10 * TOLERANCE[dtype] * expected_scores.abs().max()
    assert all(parameter.dtype == dtype for parameter in model.parameters())


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_gradients_through_a_low_or_high_precision_model_reach_a_float32_input(dtype):
    reference = reference_model()
    model = copy.deepcopy(reference).to(dtype)
    x = torch.rand(1, 2, 8, 8)
    gradients = []
    for net in (reference, model):
        inputs = x.clone().requires_grad_(True)
        ModelAdapter(net, output="logits").scores(inputs)[:, 1].sum().backward()
        gradients.append(inputs.grad)
    assert gradients[1].dtype == torch.float32
    scale = gradients[0].abs().max()
    assert (gradients[1] - gradients[0]).abs().max() <= 10 * TOLERANCE[dtype] * scale


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_explanations_and_perturbations_of_other_dtypes_match_float32(dtype):
    reference = reference_model()
    model = copy.deepcopy(reference).to(dtype)
    image = torch.rand(2, 8, 8)
    target = Target(1, np.ones((8, 8)))
    expected = Probe(reference, progress=False).explain(image, target).saliency
    got = Probe(model, progress=False).explain(image, target).saliency
    assert got.dtype == np.float32 and np.abs(got - expected).max() <= TOLERANCE[dtype]

    def make(start, stop):
        return slice(start, stop), image[None] * torch.linspace(0, 1, 5)[start:stop, None, None, None]

    for net, results in ((reference, []), (model, [])):
        for _, probabilities in Perturbations(ModelAdapter(net, output="logits"), 5, make,
                                              batch_size=2, progress=False):
            assert probabilities.dtype == torch.float32
            results.append(probabilities)
        if net is reference:
            expected_runs = torch.cat(results)
    assert (torch.cat(results) - expected_runs).abs().max() <= TOLERANCE[dtype]


def test_autocast_runs_the_model_in_mixed_precision_and_returns_float32():
    reference = reference_model()
    seen = []
    model = recording(copy.deepcopy(reference), seen)
    x = torch.rand(2, 2, 8, 8)
    expected = ModelAdapter(reference, output="logits")(x)
    adapter = ModelAdapter(model, output="logits", autocast=True)
    got = adapter(x)
    assert seen and all(out == torch.bfloat16 for _, out in seen)  # CPU autocast: bfloat16
    assert got.dtype == torch.float32 and (got - expected).abs().max() <= TOLERANCE[torch.bfloat16]
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    seen.clear()
    ModelAdapter(model, output="logits")(x)
    assert all(out == torch.float32 for _, out in seen)  # autocast ends with the call
    explained = Probe(model, autocast=True, progress=False).explain(x[0], Target(1, np.ones((8, 8))))
    assert explained.saliency.dtype == np.float32
    for bad in (1, "yes", None):
        with pytest.raises(ValueError, match="^autocast: expected True or False"):
            ModelAdapter(model, autocast=bad)
