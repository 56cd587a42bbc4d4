"""Segmentation models shipped with the package (no downloads)."""

from .unet import Bottleneck, ConvBlock, GlobalContext, UNet

__all__ = ["Bottleneck", "ConvBlock", "GlobalContext", "UNet"]
