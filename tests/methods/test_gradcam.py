import numpy as np
import pytest
import torch
import torch.nn.functional as F
from oracles import patch_image
from torch import nn

from interpret_segmentation import Target, methods
from interpret_segmentation.methods.gradcam import (
    SegGradCAM,
    candidate_layers,
    proportional,
    read_layout,
    token_grid,
)
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
    assert got.parameters == {"layer": "0", "relu": False, "reshape": None} == explainer.settings()
    paper = SegGradCAM(model, "0", progress=False).explain(image, Target(1, region))
    assert paper.parameters == {"layer": "0", "relu": True, "reshape": None}
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
    with pytest.warns(UserWarning, match="region given for class 1 is empty"):
        explanation = SegGradCAM(tiny_net(), "0", progress=False).explain(
            torch.rand(1, 8, 8), Target(1, np.zeros((8, 8))))
    assert explanation.info["target_empty"] and not explanation.saliency.any()


def test_bad_input():
    model = tiny_net()
    with pytest.raises(ValueError, match="layer: 'nope' is not a submodule"):
        SegGradCAM(model, "nope")
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
    image = torch.rand(1, 12, 10, generator=torch.Generator().manual_seed(5))
    target = Target(1, np.ones((12, 10)))
    expected = SegGradCAM(model, "0", progress=False).explain(image, target).saliency
    got = SegGradCAM(model.to(torch.bfloat16), "0", progress=False).explain(image, target).saliency
    assert expected.max() > 0
    assert got.dtype == np.float32 and np.abs(got - expected).max() <= 0.05 * expected.max()


# -- volumes, tokens, channel-last maps, layer diagnostics (issue 13) -------------------------

def tiny_net_3d():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv3d(3, 1, 1))


def test_volume_map_equals_hand_computation():
    model = tiny_net_3d()
    volume = torch.rand(1, 1, 6, 7, 8, generator=torch.Generator().manual_seed(0))
    region = np.zeros((6, 7, 8), bool)
    region[1:4, 2:6, 3:7] = True
    explanation = SegGradCAM(model, "0", relu=False, progress=False).explain(
        volume, Target(1, region))
    with torch.no_grad():
        features = model[0](volume)[0].numpy()  # A: (3, 6, 7, 8)
    w2 = model[2].weight.detach().numpy()[0, :, 0, 0, 0]
    weights = (w2[:, None, None, None] * (features > 0) * region[None]).mean(axis=(1, 2, 3))
    expected = (weights[:, None, None, None] * features).sum(0)
    assert explanation.saliency.shape == (6, 7, 8) and explanation.saliency.dtype == np.float32
    assert np.allclose(explanation.saliency, expected, atol=1e-5)
    assert explanation.info["layer_shape"] == [1, 3, 6, 7, 8]


class DownsamplingNet3D(nn.Module):
    """Two-class logits at full size from a half-size 3-D feature map."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.features = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.Tanh(), nn.AvgPool3d(2))
        self.head = nn.Conv3d(4, 2, 3, padding=1)

    def forward(self, x):
        return F.interpolate(self.head(self.features(x)), size=x.shape[2:], mode="trilinear",
                             align_corners=False)


@pytest.mark.parametrize("class_index", [0, 1])
def test_volume_equals_captum_recipe_and_is_upsampled_trilinearly(class_index):
    model = DownsamplingNet3D()
    volume = torch.rand(1, 2, 8, 12, 10, generator=torch.Generator().manual_seed(4))
    region = np.zeros((8, 12, 10), bool)
    region[2:6, 3:11, 2:9] = True
    captured = {}
    handle = model.features.register_forward_hook(lambda m, i, output: captured.update(a=output))
    try:
        score = (model(volume)[0, class_index] * torch.from_numpy(region)).sum()
        gradient, = torch.autograd.grad(score, captured["a"])
    finally:
        handle.remove()
    weights = gradient.mean(dim=(2, 3, 4), keepdim=True)  # the mean over every spatial axis
    expected = (weights * captured["a"]).sum(1, keepdim=True).detach()
    got = SegGradCAM(model, "features", relu=False, progress=False).explain(
        volume, Target(class_index, region))
    assert got.arrays["layer_map"].shape == (4, 6, 5)
    assert np.allclose(got.arrays["layer_map"], expected[0, 0].numpy(), atol=1e-6)
    upsampled = F.interpolate(expected, size=(8, 12, 10), mode="trilinear", align_corners=False)
    assert np.allclose(got.saliency, upsampled[0, 0].numpy(), atol=1e-6)


class TokenNet(nn.Module):
    """ViT-like: a patch embedding (strided convolution), the patches as tokens (B, N, C)
    behind ``leading`` extra tokens, a block on the tokens (Linear + GELU), the extra tokens
    dropped and the rest put back on the grid, a 1 x 1 convolution head, upsampled.

    With ``layout="channels_last"`` the block runs on (B, *grid, C) instead (Swin style);
    with ``layout="channels_first"`` it is the same block as a 1 x 1 convolution on the grid:
    the oracle the other two must match."""

    def __init__(self, dims=2, patch=4, width=6, leading=1, layout="tokens", classes=2):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        generator = torch.Generator().manual_seed(7)
        self.dims, self.leading, self.layout = dims, leading, layout
        self.embed = conv(1, width, patch, stride=patch)
        linear = nn.Linear(width, width)
        if layout == "channels_first":
            pointwise = conv(width, width, 1)
            self.block = nn.Sequential(pointwise, nn.GELU())
        else:
            pointwise = linear
            self.block = nn.Sequential(linear, nn.GELU())
        self.head = conv(width, classes, 1)
        with torch.no_grad():
            for parameter in [*self.embed.parameters(), *self.head.parameters()]:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
            weight = torch.randn(width, width, generator=generator) * 0.5
            bias = torch.randn(width, generator=generator) * 0.5
            pointwise.weight.copy_(weight.reshape(pointwise.weight.shape))
            pointwise.bias.copy_(bias)
        self.extra = nn.Parameter(torch.randn(1, max(leading, 1), width, generator=generator))

    def forward(self, x):
        grid = self.embed(x)  # (B, C, *g)
        if self.layout == "channels_first":
            grid = self.block(grid)
        elif self.layout == "channels_last":
            grid = self.block(grid.movedim(1, -1)).movedim(-1, 1)
        else:
            tokens = grid.flatten(2).transpose(1, 2)
            if self.leading:
                tokens = torch.cat([self.extra[:, :self.leading].expand(len(x), -1, -1), tokens], 1)
            tokens = self.block(tokens)[:, self.leading:]
            grid = tokens.transpose(1, 2).reshape(grid.shape)
        mode = "bilinear" if self.dims == 2 else "trilinear"
        return F.interpolate(self.head(grid), size=x.shape[2:], mode=mode, align_corners=False)


@pytest.mark.parametrize("dims, shape", [(2, (24, 16)), (2, (32, 32)), (3, (16, 12, 8)),
                                         (3, (8, 8, 8))])
@pytest.mark.parametrize("layout, leading", [("tokens", 0), ("tokens", 1), ("tokens", 4),
                                             ("channels_last", 0)])
def test_tokens_and_channel_last_outputs_give_the_channel_first_map(dims, shape, layout, leading):
    image = torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(1))
    region = np.zeros(shape, bool)
    region[tuple(slice(1, side - 2) for side in shape)] = True
    oracle = SegGradCAM(TokenNet(dims, layout="channels_first"), "block", relu=False,
                        progress=False).explain(image, Target(1, region))
    got = SegGradCAM(TokenNet(dims, leading=leading, layout=layout), "block", relu=False,
                     progress=False).explain(image, Target(1, region))
    grid = tuple(side // 4 for side in shape)
    assert got.arrays["layer_map"].shape == grid and got.info["layer_shape"] == [1, 6, *grid]
    assert np.allclose(got.saliency, oracle.saliency, atol=1e-5)
    assert np.abs(oracle.saliency).max() > 1e-3
    expected = ("tokens" if layout == "tokens" else "channel-last feature maps")
    assert got.info["layout"].startswith(expected)
    assert (f"{leading} leading token(s) dropped" in got.info["layout"]) == (leading > 0)


def test_token_grid_and_layout_rules():
    assert token_grid(197, (224, 224)) == (1, (14, 14))  # ViT-B/16 with its class token
    assert token_grid(196, (224, 224)) == (0, (14, 14))
    assert token_grid(6 * 4, (24, 16)) == (0, (6, 4))  # the input's proportions, not a square
    assert token_grid(1 + 8, (32, 32, 32)) == (1, (2, 2, 2))  # UNETR-like, patch 16
    assert token_grid(50, (64, 48)) == (2, (8, 6))  # class and distillation tokens
    assert not proportional((2, 2, 3), (8, 8, 8))  # equal sides stay equal
    assert token_grid(4 + 8, (8, 8, 8)) == (4, (2, 2, 2))  # four register tokens
    assert token_grid(5, (64, 64, 64)) is None  # no more extra tokens than grid positions
    assert proportional((8, 6), (32, 24)) and proportional((7, 7), (50, 50))  # ceil(50 / 8)
    assert not proportional((6, 6), (32, 24)) and not proportional((12, 16), (224, 224))
    # channel-first unless only the channel-last reading has the input's proportions
    assert read_layout((1, 96, 8, 8), (64, 64)).kind == "channels_first"
    assert read_layout((1, 8, 8, 96), (64, 64)).kind == "channels_last"
    assert read_layout((1, 16, 16, 12), (32, 32)).kind == "channels_last"
    assert read_layout((1, 8, 8, 8), (64, 64)).kind == "channels_first"  # ambiguous: PyTorch's
    assert read_layout((1, 64, 388, 388), (572, 572)).kind == "channels_first"  # unpadded
    with pytest.raises(ValueError, match=r"^tokens \(1, 5000, 8\): no grid .* pass reshape="):
        read_layout((1, 5000, 8), (64, 48))  # more tokens than pixels
    with pytest.raises(ValueError, match=r"^output \(1, 8\): expected a feature map"):
        read_layout((1, 8), (64, 48))


class TrailingTokenNet(TokenNet):
    """Tokens followed by 9 register tokens (no grid after dropping leading tokens)."""

    def __init__(self):
        super().__init__(leading=9)

    def forward(self, x):
        grid = self.embed(x)
        tokens = grid.flatten(2).transpose(1, 2)
        tokens = self.block(torch.cat([tokens, self.extra.expand(len(x), -1, -1)], 1))
        grid = tokens[:, :-9].transpose(1, 2).reshape(grid.shape)
        return F.interpolate(self.head(grid), size=x.shape[2:], mode="bilinear",
                             align_corners=False)


def test_reshape_function_reads_outputs_the_rules_cannot():
    image = torch.rand(1, 1, 24, 16, generator=torch.Generator().manual_seed(2))
    target = Target(1, np.ones((24, 16), bool))
    model = TrailingTokenNet()
    with pytest.raises(ValueError, match=r"^layer: 'block' returned tokens \(1, 33, 6\): no "
                                         r"grid .* pass reshape="):
        SegGradCAM(model, "block", progress=False).explain(image, target)

    def to_grid(tokens):
        return tokens[:, :-9].transpose(1, 2).reshape(len(tokens), -1, 6, 4)

    got = SegGradCAM(model, "block", relu=False, reshape=to_grid, progress=False).explain(
        image, target)
    oracle = SegGradCAM(TokenNet(layout="channels_first"), "block", relu=False,
                        progress=False).explain(image, target)
    assert np.allclose(got.saliency, oracle.saliency, atol=1e-5)
    assert got.parameters["reshape"].endswith("to_grid") and got.info["layout"] == "reshape= (6 x 4)"
    with pytest.raises(ValueError, match=r"^reshape: expected a function returning a feature map"):
        SegGradCAM(model, "block", reshape=lambda t: t[0], progress=False).explain(image, target)
    with pytest.raises(TypeError, match=r"^reshape: expected a function"):
        SegGradCAM(model, "block", reshape="grid")


class SharedAndAuxiliary(nn.Module):
    """A shared activation (runs twice), a deep-supervision head whose output is kept aside
    (does not feed the output) and a main path."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.down = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.aux = nn.Conv2d(4, 2, 1)
        self.head = nn.Conv2d(4, 2, 1)
        self.kept = []

    def forward(self, x):
        deep = self.act(self.down(self.act(self.stem(x))))
        self.kept.append(self.aux(deep))  # deep supervision: used by a loss, not the output
        self.kept.clear()
        return self.head(F.interpolate(deep, size=x.shape[2:], mode="nearest"))


def test_layers_that_run_twice_or_do_not_feed_the_output_are_named_with_the_reason():
    model = SharedAndAuxiliary()
    image = torch.rand(1, 16, 16)
    target = Target(1, np.ones((16, 16)))
    with pytest.raises(ValueError, match=r"^layer: 'act' runs 2 times in one forward pass .*"
                                         r"candidate_layers\(model, image\) lists them$"):
        SegGradCAM(model, "act", progress=False).explain(image, target)
    with pytest.raises(ValueError, match=r"^layer: 'aux' does not feed the explained output: no "
                                         r"gradient flows .* deep-supervision head"):
        SegGradCAM(model, "aux", progress=False).explain(image, target)
    assert all(not m._forward_hooks for m in model.modules())
    found = candidate_layers(model, image)
    assert [layer.name for layer in found] == ["down", "head", "stem"]
    assert found[0] == ("down", (1, 4, 8, 8)) and found.default == "down"
    assert "runs 2 times" in found.excluded["act"]
    assert "does not feed the explained output" in found.excluded["aux"]
    assert "down" in str(found) and "not usable: aux" in str(found)
    explanation = SegGradCAM(model, progress=False).explain(image, target)
    assert explanation.info["layer"] == "down" and explanation.parameters["layer"] == "down"


def test_candidate_layers_deepest_first_and_default_of_other_models():
    model = DownsamplingNet()
    image = torch.rand(2, 16, 12)
    found = candidate_layers(model, image)
    # the half-size maps first, the last to finish first; the pooling's output is the
    # Sequential's, listed once
    assert [name for name, _ in found] == ["head", "features", "features.1", "features.0"]
    assert dict(found)["features.0"] == (1, 4, 16, 12) and "features.2" in found.excluded
    assert found.default == "features"  # the head makes the model's output (upsampled)
    assert found.layouts["head"].endswith("makes the model's output")
    assert SegGradCAM(model, progress=False).explain(image).info["layer"] == "features"
    assert candidate_layers(tiny_net(), torch.rand(1, 8, 8)).default == "1"
    tokens = candidate_layers(TokenNet(leading=1), torch.rand(1, 32, 32))
    assert dict(tokens)["block"] == (1, 6, 8, 8)
    assert "tokens on a 8 x 8 grid, 1 leading token(s) dropped" in tokens.layouts["block"]
    assert tokens.default == "block"  # tokens whose grid the patch embedding's map confirms


class QueriesAndPyramid(nn.Module):
    """A strided backbone (1/4), a pyramid pooling branch (adaptive pooling to 2 x 2, a
    convolution, upsampled back) and four learned queries (B, 4, C) that attend to the map and
    shift the logits: the queries' 4 tokens fit a 2 x 2 grid by chance, the pooled branch is
    2 x 2 context; neither is the deepest map of the image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.backbone = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.pyramid = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Conv2d(8, 8, 1), nn.ReLU())
        self.fuse = nn.Conv2d(16, 8, 3, padding=1)
        self.queries = nn.Linear(8, 8)
        self.query_embedding = nn.Parameter(torch.randn(1, 4, 8))
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        deep = self.backbone(x)
        context = F.interpolate(self.pyramid(deep), size=deep.shape[2:], mode="bilinear",
                                align_corners=False)
        fused = self.fuse(torch.cat([deep, context], 1))
        queries = self.queries(self.query_embedding + fused.mean((2, 3))[:, None])  # (B, 4, 8)
        logits = self.head(fused) + queries.mean((1, 2))[:, None, None, None]
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)


def test_default_skips_pooled_context_and_tokens_on_a_chance_grid():
    found = candidate_layers(QueriesAndPyramid(), torch.rand(1, 32, 32))
    assert dict(found)["queries"] == (1, 8, 2, 2)  # listed: a user may still choose it
    assert dict(found)["pyramid"] == (1, 8, 2, 2) and "pooled context" in found.layouts["pyramid"]
    assert found.default == "fuse"  # the last 8 x 8 map, not the 2 x 2 ones


class PureTokenNet(nn.Module):
    """A transformer with no convolution: 4 x 4 patches as tokens, a linear embedding, a block,
    a linear head back to per-pixel logits of two classes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.embed = nn.Linear(16, 8)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.GELU())
        self.head = nn.Linear(8, 2 * 16)

    def forward(self, x):
        batch, _, height, width = x.shape
        patches = x.reshape(batch, height // 4, 4, width // 4, 4).permute(0, 1, 3, 2, 4)
        tokens = self.block(self.embed(patches.reshape(batch, -1, 16)))
        logits = self.head(tokens).reshape(batch, height // 4, width // 4, 2, 4, 4)
        return logits.permute(0, 3, 1, 4, 2, 5).reshape(batch, 2, height, width)


def test_default_of_a_pure_token_model_is_its_last_block():
    found = candidate_layers(PureTokenNet(), torch.rand(1, 24, 16))
    assert found.default == "block" and dict(found)["block"] == (1, 8, 6, 4)
    assert found.layouts["head"].endswith("makes the model's output")


def test_no_default_layer_when_no_map_has_more_than_one_position():
    model = nn.Sequential(nn.Conv2d(1, 2, 4, stride=4), nn.Flatten(0), nn.Unflatten(0, (1, 2, 1, 1)))
    with pytest.raises(ValueError, match=r"^layer: no default for this model"):
        SegGradCAM(model, progress=False).explain(torch.rand(1, 4, 4), Target(1, np.ones((4, 4))))


def test_a_plain_callable_model_is_refused_with_the_reason():
    with pytest.raises(TypeError, match=r"^model: Seg-Grad-CAM needs a torch.nn.Module \(it reads "
                                        r"a layer's output and its gradient\), got function"):
        SegGradCAM(lambda x: x.sum(1), "0")
