"""Seg-Grad-CAM on real architectures built from small configs with random weights (nothing
downloaded): MONAI UNETR, SwinUNETR and DynUNet with deep supervision, Hugging Face SegFormer
and UperNet with an auxiliary head. Token and channel-last outputs are checked against the
same layer read by hand through ``reshape=``; heads that do not feed the output are named."""

import numpy as np
import pytest
import torch
from oracles import assert_unchanged, model_state
from zoo import seeded, segformer_model, upernet_model

from interpret_segmentation import Target
from interpret_segmentation.methods.gradcam import SegGradCAM, candidate_layers

monai_nets = pytest.importorskip("monai.networks.nets")
transformers = pytest.importorskip("transformers")


def image(*shape, seed=1):
    return torch.rand(1, *shape, generator=torch.Generator().manual_seed(seed))


def whole(shape):
    return Target(1, np.ones(shape, bool))


def test_dynunet_deep_supervision_heads_are_named_and_the_bottleneck_is_the_default():
    model = seeded(lambda: monai_nets.DynUNet(
        2, 1, 2, kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2],
        filters=[8, 16, 32], deep_supervision=True, deep_supr_num=1)).train()
    before = model_state(model)
    x = image(1, 32, 32)
    found = candidate_layers(model, x)
    assert found.default == "bottleneck" and dict(found)["bottleneck"] == (1, 32, 8, 8)
    assert "does not feed the explained output" in found.excluded["deep_supervision_heads.0"]
    with pytest.raises(ValueError, match=r"^layer: 'deep_supervision_heads.0' does not feed the "
                                         r"explained output"):
        SegGradCAM(model, "deep_supervision_heads.0", progress=False).explain(x, whole((32, 32)))
    explanation = SegGradCAM(model, progress=False).explain(x, whole((32, 32)))
    assert explanation.info["layer"] == "bottleneck" and explanation.saliency.shape == (32, 32)
    assert explanation.saliency.max() > 0
    assert_unchanged(before, model)


def test_dynunet_3d_volume():
    model = seeded(lambda: monai_nets.DynUNet(
        3, 1, 2, kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2],
        filters=[4, 8, 16], deep_supervision=False))
    x = image(1, 8, 12, 16)
    explanation = SegGradCAM(model, progress=False).explain(x, whole((8, 12, 16)))
    assert explanation.info["layer"] == "bottleneck"
    assert explanation.arrays["layer_map"].shape == (2, 3, 4)
    assert explanation.saliency.shape == (8, 12, 16) and np.isfinite(explanation.saliency).all()


def test_unetr_vit_tokens_are_the_default_and_equal_the_hand_reshaped_map():
    model = seeded(lambda: monai_nets.UNETR(1, 2, (32, 32), feature_size=8, hidden_size=24,
                                            mlp_dim=48, num_heads=2, spatial_dims=2))
    x = image(1, 32, 32)
    found = candidate_layers(model, x)
    assert found.default == "vit" and dict(found)["vit"] == (1, 24, 2, 2)
    assert found.layouts["vit"] == "tokens on a 2 x 2 grid"
    got = SegGradCAM(model, relu=False, progress=False).explain(x, whole((32, 32)))
    by_hand = SegGradCAM(model, "vit", relu=False, progress=False,
                         reshape=lambda t: t.transpose(1, 2).reshape(len(t), -1, 2, 2)).explain(
        x, whole((32, 32)))
    assert got.info["layer"] == "vit" and np.allclose(got.saliency, by_hand.saliency, atol=1e-6)
    assert np.abs(got.saliency).max() > 0


def test_swinunetr_channel_last_blocks_read_as_feature_maps():
    model = seeded(lambda: monai_nets.SwinUNETR(in_channels=1, out_channels=2, feature_size=12,
                                                depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
                                                spatial_dims=2))
    x = image(1, 64, 64)
    layer = "swinViT.layers2.0.blocks.0"  # (B, 16, 16, 24), channel-last
    got = SegGradCAM(model, layer, relu=False, progress=False).explain(x, whole((64, 64)))
    by_hand = SegGradCAM(model, layer, relu=False, progress=False,
                         reshape=lambda t: t.permute(0, 3, 1, 2)).explain(x, whole((64, 64)))
    assert got.info["layout"] == "channel-last feature maps (16 x 16)"
    assert np.allclose(got.saliency, by_hand.saliency, atol=1e-6)
    default = SegGradCAM(model, progress=False).explain(x, whole((64, 64)))
    assert default.info["layer"] == "encoder10" and default.info["layer_shape"] == [1, 192, 2, 2]


def test_segformer_tokens_on_a_non_square_grid_equal_the_hand_reshaped_map():
    model = segformer_model()
    x = image(3, 64, 48)
    target = Target(2, np.ones((64, 48), bool))
    layer = "segformer.stages.2.layer_norm"  # tokens (1, 4 * 3, 24) of the 1/16 stage
    got = SegGradCAM(model, layer, relu=False, progress=False).explain(x, target)
    by_hand = SegGradCAM(model, layer, relu=False, progress=False,
                         reshape=lambda t: t.transpose(1, 2).reshape(len(t), -1, 4, 3)).explain(
        x, target)
    assert got.info["layout"] == "tokens on a 4 x 3 grid"
    assert np.allclose(got.saliency, by_hand.saliency, atol=1e-6)
    found = candidate_layers(model, x)
    assert found.default == "decode_head.linear_projections.3"  # the 1/32 stage, projected
    assert "runs 2 times" in found.excluded["segformer.stages.0.blocks.0.drop_path"]
    default = SegGradCAM(model, progress=False).explain(x, target)
    assert default.info["layer"] == found.default and default.saliency.shape == (64, 48)


def test_upernet_auxiliary_head_is_named_and_the_model_left_as_it_was():
    model = upernet_model().train()
    before = model_state(model)
    x = image(3, 64, 64)
    with pytest.raises(ValueError, match=r"^layer: 'auxiliary_head' does not feed the explained "
                                         r"output: no gradient flows .* auxiliary or "
                                         r"deep-supervision head"):
        SegGradCAM(model, "auxiliary_head", progress=False).explain(x, 1)
    assert_unchanged(before, model)
    found = candidate_layers(model, x)
    assert "does not feed" in found.excluded["auxiliary_head"]
    assert "pooled context" in found.layouts["decode_head.psp_modules.1"]
    assert found.default == "decode_head.bottleneck"
    explanation = SegGradCAM(model, progress=False).explain(x, Target(1, np.ones((64, 64))))
    assert explanation.info["layer"] == "decode_head.bottleneck"
    assert_unchanged(before, model)
