"""Hand-built models whose answers are known, shared by the tests."""

import torch
from torch import nn


class PatchModel(nn.Module):
    """One-channel logits: the square ``out_box`` is foreground iff the patch ``in_box`` of
    channel ``channel`` is bright on average. Nothing else in the input matters."""

    def __init__(self, in_box=(30, 38, 30, 38), out_box=(5, 15, 5, 15), channel=0):
        super().__init__()
        self.in_box, self.out_box, self.channel = in_box, out_box, channel
        self.scale = nn.Parameter(torch.tensor(20.0))
        self.norm = nn.BatchNorm2d(1)  # present so that eval/train mode matters

    def forward(self, x):
        top, bottom, left, right = self.in_box
        brightness = x[:, self.channel, top:bottom, left:right].mean((1, 2))
        out = torch.full((x.shape[0], 1, x.shape[2], x.shape[3]), -10.0)
        top, bottom, left, right = self.out_box
        out[:, :, top:bottom, left:right] = ((brightness - 0.5) * self.scale)[:, None, None, None]
        return out


class ThreeClassModel(nn.Module):
    """Softmax logits over 3 classes: class 2 on the patch model's box, class 1 on the left
    half where the image is bright, background elsewhere."""

    def __init__(self):
        super().__init__()
        self.patch = PatchModel()

    def forward(self, x):
        fg = self.patch(x)[:, 0]
        left = torch.zeros_like(fg)
        left[:, :, : x.shape[3] // 2] = (x[:, 0, :, : x.shape[3] // 2] - 0.5) * 8
        return torch.stack([torch.zeros_like(fg), left, fg], dim=1)


def patch_image(height=48, width=48, channels=1):
    image = torch.zeros(channels, height, width)
    image[:, 30:38, 30:38] = 1.0
    return image


def patch_segment(height=48, width=48):
    segment = torch.zeros(height, width)
    segment[5:15, 5:15] = 1
    return segment
