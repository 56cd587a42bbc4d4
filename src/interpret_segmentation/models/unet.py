"""A small U-Net with a global-context bottleneck.

The encoder halves the resolution ``depth`` times, the decoder doubles it back and
concatenates the encoder features of the same resolution (skip connections), as in
Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation" (2015).

A plain U-Net's receptive field barely reaches from one side of a 240 px testnet image to the
other, yet the segment on the left depends on the shape on the right. The bottleneck
therefore adds a global-context path: average- and max-pooled bottleneck features go through
a small MLP whose output scales and shifts every bottleneck position (feature-wise
modulation), so each position sees a summary of the whole image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validate import check_choice, check_positive

__all__ = ["UNet", "ConvBlock", "GlobalContext", "Bottleneck", "DecoderContext"]

_NORMS = ("batch", "group", "none")
_PRIOR = 0.05  # initial foreground probability of one-channel models


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels) if channels % min(8, channels) == 0 else 1, channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by normalisation and ReLU; keeps H and W.

    Parameters
    ----------
    in_channels, out_channels : int
    norm : {"batch", "group", "none"}, default "batch"
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch"):
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class GlobalContext(nn.Module):
    """Feature-wise modulation of a feature map by a summary of the whole map.

    The global average and maximum of each channel (B, 2C) go through a two-layer MLP that
    yields a scale ``g`` and a shift ``b`` per channel; the output is ``x * (1 + g) + b``
    broadcast over all positions. (Starting the MLP at zero, i.e. as the identity, makes the
    testnet U-Net much slower to discover the context rule, so it keeps PyTorch's default
    initialisation.)

    With ``robust`` the summary is layer-normalised before the MLP and its hidden layer uses a
    leaky ReLU. The pooled features are outputs of ReLUs, never negative, and without this the
    hidden ReLUs of the MLP could all die during training (seen for the demo U-Net: 3 % of them
    still active for any image): no gradient then reaches the context path, and a testnet model
    stays at "segment both left shapes" for good.

    Parameters
    ----------
    channels : int
        Number of channels C of the input (B, C, H, W); the output has the same shape.
    hidden : int, optional
        Width of the MLP's hidden layer; default ``channels``.
    robust : bool, default False
        LayerNorm on the summary and a leaky ReLU (slope 0.1) in the MLP (see above).
    """

    def __init__(self, channels: int, hidden: int | None = None, robust: bool = False):
        super().__init__()
        hidden = channels if hidden is None else hidden
        self.norm = nn.LayerNorm(2 * channels) if robust else nn.Identity()
        self.mlp = nn.Sequential(
            nn.Linear(2 * channels, hidden),
            nn.LeakyReLU(0.1, inplace=True) if robust else nn.ReLU(inplace=True),
            nn.Linear(hidden, 2 * channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        summary = self.norm(torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1))
        scale, shift = self.mlp(summary)[:, :, None, None].chunk(2, dim=1)
        return x * (1.0 + scale) + shift


class DecoderContext(nn.Module):
    """A scale and a shift for every decoder level, from a summary of the bottleneck.

    The channel means and maxima of the bottleneck output (B, 2C), layer-normalised, go through
    a hidden layer (leaky ReLU) and one linear map per decoder level to a scale ``g`` and a
    shift ``b`` per channel of that level; the U-Net turns each decoder block's output ``x``
    into ``x * (1 + g) + b``. The summary of the whole image thus reaches the last layers
    directly: with context at the bottleneck only, the decoder could segment from the skip
    connections alone, pass hardly any gradient back to the context path (norms of about 1e-4
    against 1e-2 for the output layer) and leave a testnet model at "segment both left
    shapes".

    Parameters
    ----------
    channels : int
        Channels C of the bottleneck (B, C, h, w).
    level_channels : sequence of int
        Channels of each decoder level, in the order the decoder runs.
    hidden : int, optional
        Width of the hidden layer; default ``channels``.
    """

    def __init__(self, channels: int, level_channels, hidden: int | None = None):
        super().__init__()
        hidden = channels if hidden is None else hidden
        self.norm = nn.LayerNorm(2 * channels)
        self.hidden = nn.Sequential(nn.Linear(2 * channels, hidden),
                                    nn.LeakyReLU(0.1, inplace=True))
        self.levels = nn.ModuleList(nn.Linear(hidden, 2 * c) for c in level_channels)

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(scale, shift), each (B, C_level, 1, 1), per decoder level."""
        summary = self.norm(torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1))
        hidden = self.hidden(summary)
        return [level(hidden)[:, :, None, None].chunk(2, dim=1) for level in self.levels]


class Bottleneck(nn.Module):
    """The U-Net's lowest level: a :class:`ConvBlock`, then :class:`GlobalContext` (optional).

    Input (B, in_channels, h, w), output (B, out_channels, h, w) at 1 / 2**depth of the input
    resolution. Its output is the natural layer for Seg-Grad-CAM: it is the deepest spatial
    feature map and already carries the global context.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch",
                 global_context: bool = True, robust_context: bool = False):
        super().__init__()
        self.block = ConvBlock(in_channels, out_channels, norm)
        self.context = (GlobalContext(out_channels, robust=robust_context) if global_context
                        else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.context(self.block(x))


class UNet(nn.Module):
    """U-Net returning per-pixel logits, with an optional global-context bottleneck.

    Parameters
    ----------
    in_channels : int, default 1
        Channels of the input image.
    out_channels : int, default 1
        Channels of the output (one logit map per class; 1 = foreground logit for a sigmoid).
    width : int, default 8
        Channels at full resolution; level ``i`` has ``width * 2**i`` channels and the
        bottleneck ``width * 2**depth``.
    depth : int, default 4
        Number of down-sampling steps (2x2 max pooling).
    global_context : bool, default True
        Add :class:`GlobalContext` at the bottleneck, so every pixel's decision can depend on
        the whole image.
    norm : {"batch", "group", "none"}, default "batch"
        Normalisation after each convolution.
    robust_context : bool, default False
        Layer-normalised summary and leaky ReLU in the global-context MLP
        (:class:`GlobalContext`), so that its path keeps learning; the demo model uses it.
    decoder_context : bool, default False
        Also scale and shift every decoder level from a summary of the bottleneck
        (:class:`DecoderContext`); the demo model uses it.

    Attributes
    ----------
    encoders : nn.ModuleList
        ``depth`` :class:`ConvBlock` s at resolutions 1, 1/2, ..., 1/2**(depth-1).
    bottleneck : Bottleneck
        Lowest-resolution features (B, width * 2**depth, H / 2**depth, W / 2**depth) after
        the global-context path: the default layer for Seg-Grad-CAM.
    upsamplers, decoders : nn.ModuleList
        Transposed convolutions (x2) and :class:`ConvBlock` s, lowest resolution first.
    head : nn.Conv2d
        1x1 convolution to ``out_channels`` logits. With one output channel its bias starts
        at logit(0.05), a small foreground prior, which shortens the start of training.

    Notes
    -----
    ``forward`` takes (B, in_channels, H, W) for any H, W >= 1 and returns logits
    (B, out_channels, H, W). Inputs whose sides are not multiples of ``2**depth`` are
    zero-padded at the bottom/right and the output is cropped back.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 8,
                 depth: int = 4, global_context: bool = True, norm: str = "batch",
                 robust_context: bool = False, decoder_context: bool = False):
        super().__init__()
        in_channels = check_positive(in_channels, "in_channels")
        out_channels = check_positive(out_channels, "out_channels")
        width = check_positive(width, "width")
        depth = check_positive(depth, "depth")
        check_choice(norm, "norm", _NORMS)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.width = width
        self.depth = depth
        self.global_context = bool(global_context)
        self.norm = norm
        self.robust_context = bool(robust_context)

        channels = [width * 2**i for i in range(depth + 1)]
        self.encoders = nn.ModuleList()
        previous = in_channels
        for c in channels[:-1]:
            self.encoders.append(ConvBlock(previous, c, norm))
            previous = c
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = Bottleneck(channels[-2], channels[-1], norm, global_context,
                                     self.robust_context)
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in reversed(range(depth)):
            self.upsamplers.append(nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2))
            self.decoders.append(ConvBlock(2 * channels[i], channels[i], norm))
        self.decoder_context = (DecoderContext(channels[-1], channels[-2::-1]) if decoder_context
                                else None)
        self.head = nn.Conv2d(channels[0], out_channels, 1)
        if out_channels == 1:
            # start from a small foreground probability: segments are a few % of the image
            nn.init.constant_(self.head.bias, math.log(_PRIOR / (1.0 - _PRIOR)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x: expected a tensor (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        modulations = ([None] * self.depth if self.decoder_context is None
                       else self.decoder_context(x))
        for upsample, decoder, skip, modulation in zip(self.upsamplers, self.decoders,
                                                       reversed(skips), modulations, strict=True):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
            if modulation is not None:
                scale, shift = modulation
                x = x * (1.0 + scale) + shift
        x = self.head(x)
        return x[..., :height, :width]
