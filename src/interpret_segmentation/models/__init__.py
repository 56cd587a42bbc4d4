"""Segmentation models shipped with the package (no downloads)."""

from .unet import Bottleneck, ConvBlock, DecoderContext, GlobalContext, UNet
from .vgg import VGG11, vgg_parameter_groups

__all__ = ["VGG11", "Bottleneck", "ConvBlock", "DecoderContext", "GlobalContext", "UNet",
           "vgg_parameter_groups"]
