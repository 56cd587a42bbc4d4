import numpy as np
import pytest
import torch
from oracles import patch_image
from torch import nn

from interpret_segmentation import Target
from interpret_segmentation.methods.gradcam import SegGradCAM, candidate_layers
from interpret_segmentation.models import UNet


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 1, 1))


def test_equals_hand_computation_on_a_tiny_conv_net():
    model = tiny_net()
    image = torch.rand(1, 12, 10)
    region = np.zeros((12, 10), bool)
    region[3:8, 2:6] = True
    explanation = SegGradCAM(model, "0", progress=False).explain(image, Target(1, region))
    with torch.no_grad():
        features = model[0](image[None])[0].numpy()  # A: (3, 12, 10)
    w2 = model[2].weight.detach().numpy()[0, :, 0, 0]
    # score = sum over the region of sum_k w2_k relu(A_k) + b: d score / d A_k = w2_k [A_k > 0]
    gradient = w2[:, None, None] * (features > 0) * region[None]
    weights = gradient.mean(axis=(1, 2))
    expected = np.maximum((weights[:, None, None] * features).sum(0), 0)
    assert np.allclose(explanation.saliency, expected, atol=1e-5)  # layer at full size
    assert explanation.method == "gradcam" and explanation.info["layer"] == "0"
    with torch.no_grad():
        score = float((model(image[None])[0, 0] * torch.from_numpy(region)).sum())
    assert explanation.info["score"] == pytest.approx(score, rel=1e-5)
    # class 0 of a one-channel model is scored by -z: the map of the opposite weights
    background = SegGradCAM(model, model[0], progress=False).explain(image, Target(0, region))
    assert np.allclose(background.saliency, np.maximum(-(weights[:, None, None] * features).sum(0),
                                                       0), atol=1e-5)


def test_unet_default_layer_is_the_bottleneck_and_map_is_upsampled():
    torch.manual_seed(0)
    model = UNet(width=4, depth=2)
    image = torch.rand(1, 32, 36)
    explanation = SegGradCAM(model, progress=False).explain(image, Target(1, np.ones((32, 36))))
    assert explanation.info["layer"] == "bottleneck"
    assert explanation.arrays["layer_map"].shape == (8, 9)
    assert explanation.saliency.shape == (32, 36) and explanation.saliency.dtype == np.float32
    assert (explanation.saliency >= 0).all()
    names = [name for name, _ in candidate_layers(model, image)]
    assert "bottleneck" in names and "encoders.0" in names
    assert dict(candidate_layers(model, image))["bottleneck"] == (1, 16, 8, 9)


def test_model_mode_and_hooks_restored_also_after_error():
    model = tiny_net()
    model.train()
    SegGradCAM(model, "0", progress=False).explain(torch.rand(1, 8, 8), Target(1, np.ones((8, 8))))
    assert model.training and all(not m._forward_hooks for m in model.modules())
    explainer = SegGradCAM(model, "1", progress=False)
    explainer.layer_name = "1"

    class Broken(nn.Module):
        def forward(self, x):
            return x  # not called by the model: the explainer must say so

    explainer.layer = Broken()
    with pytest.raises(ValueError, match="was not called"):
        explainer.explain(torch.rand(1, 8, 8), Target(1, np.ones((8, 8))))
    assert model.training and all(not m._forward_hooks for m in model.modules())


def test_nothing_to_explain_gives_a_zero_map():
    explanation = SegGradCAM(tiny_net(), "0", progress=False).explain(
        torch.rand(1, 8, 8), Target(1, np.zeros((8, 8))))
    assert explanation.info["target_empty"] and not explanation.saliency.any()


def test_bad_input():
    model = tiny_net()
    with pytest.raises(ValueError, match="layer: 'nope' is not a submodule"):
        SegGradCAM(model, "nope")
    with pytest.raises(ValueError, match="layer: no default"):
        SegGradCAM(model)
    with pytest.raises(ValueError, match="not part of the model"):
        SegGradCAM(model, nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="target: class index 3"):
        SegGradCAM(model, "0", progress=False).explain(patch_image(), 3)


def test_nan_gradient_is_named_not_a_zero_map():
    from oracles import NonFiniteModel

    with pytest.raises(ValueError, match=r"^Seg-Grad-CAM: the gradient of the score with respect "
                                         r"to the output of layer 'conv': \d+ of \d+ values are "
                                         "NaN or inf$"):
        SegGradCAM(NonFiniteModel(when="gradient"), "conv", progress=False).explain(patch_image())


def test_bfloat16_model_gives_a_float32_map_close_to_float32():
    model = tiny_net()
    image = torch.rand(1, 12, 10)
    expected = SegGradCAM(model, "0", progress=False).explain(image).saliency
    got = SegGradCAM(model.to(torch.bfloat16), "0", progress=False).explain(image).saliency
    assert got.dtype == np.float32 and np.abs(got - expected).max() <= 0.05 * expected.max()
