import numpy as np
import pytest
import torch
import torch.nn.functional as F
from oracles import patch_image
from torch import nn

from interpret_segmentation import Target, methods
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


def test_signed_map_equals_hand_computation_and_relu_is_its_positive_part():
    model = tiny_net()
    image = torch.rand(1, 12, 10, generator=torch.Generator().manual_seed(1))
    region = np.zeros((12, 10), bool)
    region[2:9, 1:7] = True
    with torch.no_grad():
        features = model[0](image[None])[0].numpy()
    w2 = model[2].weight.detach().numpy()[0, :, 0, 0]
    weights = (w2[:, None, None] * (features > 0) * region[None]).mean(axis=(1, 2))
    signed = (weights[:, None, None] * features).sum(0)
    assert (signed < -1e-3).any() and (signed > 1e-3).any()  # a map with both signs
    explainer = SegGradCAM(model, "0", relu=False, progress=False)
    got = explainer.explain(image, Target(1, region))
    assert np.allclose(got.saliency, signed, atol=1e-5)
    assert np.allclose(got.arrays["layer_map"], signed, atol=1e-5)
    assert got.parameters == {"layer": "0", "relu": False} == explainer.settings()
    paper = SegGradCAM(model, "0", progress=False).explain(image, Target(1, region))
    assert paper.parameters == {"layer": "0", "relu": True}
    assert np.allclose(paper.saliency, np.maximum(got.saliency, 0), atol=1e-6)


class DownsamplingNet(nn.Module):
    """Two-class logits at full size from a half-size feature map."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.features = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2))
        self.head = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        return F.interpolate(self.head(self.features(x)), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)


def captum_like_layer_gradcam(model, layer, image, class_index, region, relu):
    """Captum's LayerGradCam recipe: the layer's output and the gradient of the target's
    score with respect to it, weights = the gradient's mean over the spatial dimensions,
    the weighted sum over channels, optionally through ReLU; at the layer's resolution."""
    captured = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.update(a=output))
    try:
        score = (model(image[None])[0, class_index] * torch.from_numpy(region)).sum()
        gradient, = torch.autograd.grad(score, captured["a"])
    finally:
        handle.remove()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    attribution = (weights * captured["a"]).sum(1, keepdim=True).detach()
    return torch.relu(attribution) if relu else attribution


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("class_index", [0, 1])
def test_equals_captum_recipe_on_a_downsampling_layer(relu, class_index):
    model = DownsamplingNet()
    image = torch.rand(2, 16, 12, generator=torch.Generator().manual_seed(4))
    region = np.zeros((16, 12), bool)
    region[3:11, 2:9] = True
    expected = captum_like_layer_gradcam(model, model.features, image, class_index, region, relu)
    got = SegGradCAM(model, "features", relu=relu, progress=False).explain(
        image, Target(class_index, region))
    assert got.arrays["layer_map"].shape == (8, 6)
    assert np.allclose(got.arrays["layer_map"], expected[0, 0].numpy(), atol=1e-6)
    upsampled = F.interpolate(expected, size=(16, 12), mode="bilinear", align_corners=False)
    assert np.allclose(got.saliency, upsampled[0, 0].numpy(), atol=1e-6)
    assert relu or (got.saliency < 0).any()


def test_registry_option_signed_turns_relu_off():
    method = methods.get("gradcam")
    option = {option.name: option for option in method.options}["relu"]
    assert option.type is bool and option.cli_flag == "--signed"
    assert method.defaults()["relu"] is True
    explainer = method.build(tiny_net(), layer="0", relu=False, progress=False)
    assert explainer.relu is False and explainer.settings()["relu"] is False


@pytest.mark.parametrize("relu", [1, 0, "yes", None])
def test_relu_must_be_a_bool(relu):
    with pytest.raises(TypeError, match=rf"^relu: expected True or False, got {relu!r}$"):
        SegGradCAM(tiny_net(), "0", relu=relu)


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
    with pytest.raises(ValueError, match=r"^target: expected a class index in 0\.\.1 .*got 3$"):
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
