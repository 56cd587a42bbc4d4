"""The models users bring, built small from configs with seeded random weights (nothing is
downloaded): MONAI UNet, UNETR and SwinUNETR in 2-D and 3-D, SegResNet 3-D, DynUNet with deep
supervision, Hugging Face SegFormer and UperNet, a torchvision-style dict model, a
multi-label sigmoid head, a 9-class model explained for class 5, bfloat16 and float64 models
and a model on z-scored inputs.

Used by ``tests/methods/test_zoo.py`` (every method on every model, the model left as it was)
and ``bench/bench_models.py`` (the README's table of time per explanation / floor). Each
:class:`Setup` builds its model, an input and a target; ``options`` are what a user passes
to an explainer for that model (never a wrapper).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from interpret_segmentation import Target


@dataclass(frozen=True)
class Setup:
    """One model set-up: ``build(scale)`` -> (model, image (1, C, *S), target); ``scale`` 1 is
    the tests' size, larger ones are the benchmark's."""

    name: str
    build: Callable[[int], tuple[nn.Module, torch.Tensor, Target]]
    options: dict = field(default_factory=dict)
    needs: str | None = None  # "monai" or "transformers"


def seeded(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """``build()`` with the global generator seeded inside a fork (left as it was after)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


def box_image(channels: int, spatial: tuple[int, ...], low: float = 0.0, high: float = 0.3,
              bright: float = 0.7, seed: int = 1) -> torch.Tensor:
    """Noise in [low, high) with a bright box (+bright) around the centre: (1, C, *spatial)."""
    generator = torch.Generator().manual_seed(seed)
    image = low + (high - low) * torch.rand(1, channels, *spatial, generator=generator)
    image[(..., *box(spatial))] += bright
    return image


def box(spatial: tuple[int, ...]) -> tuple[slice, ...]:
    """The central box, a quarter of each side around the centre."""
    return tuple(slice(side * 3 // 8, side * 5 // 8) for side in spatial)


def box_target(class_index: int, spatial: tuple[int, ...]) -> Target:
    region = torch.zeros(spatial, dtype=torch.bool)
    region[box(spatial)] = True
    return Target(class_index, region=region.numpy())


class BrightnessHead(nn.Module):
    """Logits (B, K, *S) from the local mean brightness: channel k is
    ``sharpness * (mean - thresholds[k])``, or 0 where the threshold is None (a background
    class), plus a small seeded convolution; so a bright box is segmented and the maps have
    something to find.

    ``dict_output`` returns ``{"out": logits, "aux": logits / 2}`` as torchvision's segmentation
    models do.
    """

    def __init__(self, thresholds, spatial_dims: int = 2, in_channels: int = 1,
                 sharpness: float = 12.0, dict_output: bool = False):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        classes = len(thresholds)
        self.body = nn.Sequential(conv(in_channels, 4, 3, padding=1), norm(4), nn.ReLU(),
                                  conv(4, classes, 3, padding=1))
        self.mean = conv(in_channels, classes, 5, padding=2)
        with torch.no_grad():
            for k, threshold in enumerate(thresholds):
                on = threshold is not None
                self.mean.weight[k] = sharpness / (in_channels * 5 ** spatial_dims) * on
                self.mean.bias[k] = -sharpness * threshold if on else 0.0
        self.dict_output = dict_output

    def forward(self, x):
        logits = self.mean(x) + 0.1 * self.body(x)
        return {"out": logits, "aux": logits / 2} if self.dict_output else logits


def _head(thresholds, spatial_dims=2, **options) -> BrightnessHead:
    return seeded(lambda: BrightnessHead(thresholds, spatial_dims, **options))


NO_CLASS = 100.0  # a threshold no image reaches: the class never wins the arg-max


def dict_model(scale: int):
    spatial = (32 * scale,) * 2
    return (_head([None, 0.5], dict_output=True), box_image(1, spatial),
            box_target(1, spatial))


def multilabel(scale: int):
    """Three nested sigmoid labels (whole tumour, core, enhancing), explained for label 1."""
    spatial = (32 * scale,) * 2
    image = box_image(1, spatial)
    inner = tuple(slice(s.start + 2, s.stop - 2) for s in box(spatial))
    image[(..., *inner)] += 0.4
    return _head([0.3, 0.6, 1.0]), image, Target(1)


def nine_classes(scale: int):
    spatial = (32 * scale,) * 2
    thresholds = [None] + [NO_CLASS] * 4 + [0.5] + [NO_CLASS] * 3
    return _head(thresholds), box_image(1, spatial), Target(5)


def typed(dtype: torch.dtype):
    def build(scale: int):
        spatial = (32 * scale,) * 2
        return _head([None, 0.5]).to(dtype), box_image(1, spatial).to(dtype), Target(1)
    return build


def zscored(scale: int):
    """A model of z-scored inputs: the box is 2 standard deviations above the mean, most of
    the image below 0."""
    spatial = (32 * scale,) * 2
    image = box_image(1, spatial)
    image = (image - image.mean()) / image.std()
    return _head([None, 1.0]), image, Target(1)


# -- MONAI and Hugging Face transformers --------------------------------------------------

def _centre_class(model: nn.Module, image: torch.Tensor) -> int:
    """The class the model predicts at the centre of ``image``."""
    with torch.no_grad():
        output = model.eval()(image)
    centre = tuple(side // 2 for side in output.shape[2:])
    return int(output[(0, slice(None), *centre)].argmax())


def _random_model(make: Callable[[], nn.Module], channels: int, spatial: tuple[int, ...],
                  train: bool = False):
    """A seeded random model, a box image and its centre class over the box."""
    model = seeded(make)
    image = box_image(channels, spatial)
    class_index = _centre_class(model, image)
    return model.train(train), image, box_target(class_index, spatial)


def monai_unet(spatial_dims: int):
    def build(scale: int):
        from monai.networks.nets import UNet
        side = (32 if spatial_dims == 2 else 16) * scale
        return _random_model(lambda: UNet(spatial_dims, 1, 2, channels=(4, 8, 16),
                                          strides=(2, 2), num_res_units=1), 1,
                             (side,) * spatial_dims)
    return build


def unetr(spatial_dims: int):
    def build(scale: int):
        from monai.networks.nets import UNETR
        side = 32 * scale
        return _random_model(lambda: UNETR(1, 2, (side,) * spatial_dims, feature_size=8,
                                           hidden_size=24, mlp_dim=48, num_heads=2,
                                           spatial_dims=spatial_dims), 1, (side,) * spatial_dims)
    return build


def swinunetr(spatial_dims: int):
    def build(scale: int):
        from monai.networks.nets import SwinUNETR
        # its deepest instance norm needs more than one voxel: sides of at least 64
        side = 64 if spatial_dims == 3 else 32 * (scale + 1)
        return _random_model(lambda: SwinUNETR(in_channels=1, out_channels=2, feature_size=12,
                                               depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
                                               spatial_dims=spatial_dims), 1,
                             (side,) * spatial_dims)
    return build


def segresnet(scale: int):
    from monai.networks.nets import SegResNet
    side = 16 * scale
    return _random_model(lambda: SegResNet(spatial_dims=3, init_filters=8, in_channels=1,
                                           out_channels=2), 1, (side,) * 3)


def dynunet(scale: int):
    """DynUNet with deep supervision, left in training mode (where it returns the heads too)."""
    from monai.networks.nets import DynUNet
    side = 32 * scale
    return _random_model(lambda: DynUNet(2, 1, 2, kernel_size=[3, 3, 3], strides=[1, 2, 2],
                                         upsample_kernel_size=[2, 2], filters=[8, 16, 32],
                                         deep_supervision=True, deep_supr_num=1), 1,
                         (side,) * 2, train=True)


def _logits_at_input_size(model: nn.Module, image: torch.Tensor) -> int:
    with torch.no_grad():
        logits = model.eval()(image).logits
    logits = nn.functional.interpolate(logits, size=image.shape[2:], mode="bilinear")
    centre = tuple(side // 2 for side in logits.shape[2:])
    return int(logits[(0, slice(None), *centre)].argmax())


def segformer_model() -> nn.Module:
    """A small SegFormer (3 channels in, 3 classes, logits at 1/4 of the input)."""
    import transformers
    config = transformers.SegformerConfig(
        num_channels=3, num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1],
        hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16,
        num_labels=3)
    return seeded(lambda: transformers.SegformerForSemanticSegmentation(config))


def upernet_model() -> nn.Module:
    """A small UperNet on a ConvNeXt backbone with its auxiliary head (3 classes)."""
    import transformers
    config = transformers.UperNetConfig(
        backbone_config=transformers.ConvNextConfig(
            num_channels=3, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
            out_features=["stage1", "stage2", "stage3", "stage4"]),
        hidden_size=16, auxiliary_in_channels=24, auxiliary_channels=8,
        use_auxiliary_head=True, num_labels=3, pool_scales=[1, 2])
    return seeded(lambda: transformers.UperNetForSemanticSegmentation(config))


def segformer(scale: int):
    model = segformer_model()
    spatial = (64 * scale, 48 * scale)
    image = box_image(3, spatial)
    return model, image, box_target(_logits_at_input_size(model, image), spatial)


def upernet(scale: int):
    model = upernet_model()
    spatial = (64 * scale,) * 2
    image = box_image(3, spatial)
    return model.train(), image, box_target(_logits_at_input_size(model, image), spatial)


SETUPS = (
    Setup("MONAI UNet 2-D", monai_unet(2), needs="monai"),
    Setup("MONAI UNet 3-D", monai_unet(3), needs="monai"),
    Setup("MONAI UNETR 2-D", unetr(2), needs="monai"),
    Setup("MONAI UNETR 3-D", unetr(3), needs="monai"),
    Setup("MONAI SwinUNETR 2-D", swinunetr(2), needs="monai"),
    Setup("MONAI SwinUNETR 3-D", swinunetr(3), needs="monai"),
    Setup("MONAI SegResNet 3-D", segresnet, needs="monai"),
    Setup("MONAI DynUNet, deep supervision", dynunet, needs="monai"),
    Setup("transformers SegFormer", segformer, needs="transformers"),
    Setup("transformers UperNet, auxiliary head", upernet, needs="transformers"),
    Setup("dict output {'out', 'aux'}", dict_model),
    Setup("multi-label, 3 sigmoid channels", multilabel, {"activation": "sigmoid"}),
    Setup("9 classes, class 5", nine_classes),
    Setup("bfloat16 model", typed(torch.bfloat16)),
    Setup("float64 model", typed(torch.float64)),
    Setup("z-scored inputs", zscored, {"baseline": "min"}),
)
"""Every set-up, in the README table's order."""
