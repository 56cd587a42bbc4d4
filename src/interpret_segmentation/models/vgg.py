"""VGG-11 (configuration "A") without batch normalisation, for image classification.

The architecture of Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale
Image Recognition" (ICLR 2015), configuration A: five stages of 1, 1, 2, 2 and 2 3x3
convolutions (padding 1, each followed by a ReLU), each stage closed by a 2x2 max-pooling
with stride 2. Seed 003 (Seibold et al., "From Explanations to Segmentation: Using
Explainable AI for Image Segmentation", VISAPP 2022, section 3.2.1) classifies images into two
classes with it, with two heads:

- ``"128N"``: the classical three fully connected layers, but with only 128 neurons in each
  hidden layer;
- ``"onefc"``: the last max-pooling output flattened straight into the output layer.

The layers are named as in the paper's Table 1 (``conv1_1`` ... ``conv5_2``, ``fc1`` ...) so
that LRP rule sets (:mod:`interpret_segmentation.methods.lrp`) can address them, and the forward pass
is ``classifier(features(x))``: every leaf module is applied once, in registration order,
which is what the LRP engine needs.

The first fully connected layer is sized for a fixed input size (``input_size``, default 224):
there is no adaptive pooling, so the model accepts exactly the inputs whose size after five
halvings (rounded down) equals that of ``input_size``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from ..core.validate import check_choice, check_number, check_positive

__all__ = ["HEADS", "VGG11", "vgg_parameter_groups"]

HEADS = ("128N", "onefc")

# VGG-A: convolutions per stage; stage s has width * _MULTIPLIERS[s] channels
_STAGES = (1, 1, 2, 2, 2)
_MULTIPLIERS = (1, 2, 4, 8, 8)


def _input_size(value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"input_size: expected an int or a pair (H, W), got {value!r}")
        size = tuple(check_positive(v, f"input_size[{k}]") for k, v in enumerate(value))
    else:
        size = (check_positive(value, "input_size"),) * 2
    if min(size) < 2 ** len(_STAGES):
        raise ValueError(
            f"input_size: expected at least {2 ** len(_STAGES)} pixels per side (five 2x2 "
            f"max-poolings), got {value!r}"
        )
    return size


class VGG11(nn.Module):
    """VGG-11 (VGG-A) without batch normalisation, with a small classification head.

    Parameters
    ----------
    in_channels : int, default 3
        Channels of the input images (1 for grayscale, 3 for RGB).
    num_classes : int, default 2
        Number of output logits.
    width : int, default 64
        Channels of the first convolution; the five stages have ``width``, ``2 width``,
        ``4 width``, ``8 width`` and ``8 width`` channels (64 ... 512 in the original).
    head : {"128N", "onefc"}, default "128N"
        ``"128N"``: flatten, ``fc1`` (-> ``hidden``), ReLU, dropout, ``fc2`` (-> ``hidden``),
        ReLU, dropout, ``fc3`` (-> ``num_classes``). ``"onefc"``: flatten, ``fc``
        (-> ``num_classes``), as in seed 003's adapted VGG.
    input_size : int or (int, int), default 224
        Input height and width (H, W) the first fully connected layer is sized for; the last
        feature map has ``input_size // 32`` pixels per side. At least 32.
    hidden : int, default 128
        Neurons of the two hidden fully connected layers of the ``"128N"`` head.
    dropout : float, default 0.5
        Dropout probability of the ``"128N"`` head, in [0, 1).

    Attributes
    ----------
    features : nn.Sequential
        ``conv1_1, relu1_1, pool1, conv2_1, relu2_1, pool2, conv3_1, relu3_1, conv3_2,
        relu3_2, pool3, conv4_1, relu4_1, conv4_2, relu4_2, pool4, conv5_1, relu5_1, conv5_2,
        relu5_2, pool5``.
    classifier : nn.Sequential
        ``flatten, fc1, relu_fc1, dropout1, fc2, relu_fc2, dropout2, fc3`` (``"128N"``) or
        ``flatten, fc`` (``"onefc"``).

    Raises
    ------
    ValueError
        For a non-positive ``in_channels``, ``num_classes``, ``width`` or ``hidden``, an
        unknown ``head``, an ``input_size`` below 32 or a ``dropout`` outside [0, 1); the
        message names the argument.

    Notes
    -----
    Convolutions are initialised with He (Kaiming) normal weights for ReLU (fan-in) and zero
    biases, linear layers with PyTorch's default. The model takes (B, in_channels, H, W) and
    returns logits (B, num_classes).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 2, width: int = 64,
                 head: str = "128N", input_size: int | tuple[int, int] = 224, hidden: int = 128,
                 dropout: float = 0.5):
        super().__init__()
        in_channels = check_positive(in_channels, "in_channels")
        num_classes = check_positive(num_classes, "num_classes")
        width = check_positive(width, "width")
        hidden = check_positive(hidden, "hidden")
        check_choice(head, "head", HEADS)
        size = _input_size(input_size)
        dropout = check_number(dropout, "dropout", 0, 1, open_high=True)
        self.head = head
        self.input_size = size

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for stage, (convs, multiplier) in enumerate(zip(_STAGES, _MULTIPLIERS), start=1):
            out_channels = width * multiplier
            for i in range(1, convs + 1):
                layers[f"conv{stage}_{i}"] = nn.Conv2d(channels, out_channels, 3, padding=1)
                layers[f"relu{stage}_{i}"] = nn.ReLU()
                channels = out_channels
            layers[f"pool{stage}"] = nn.MaxPool2d(2, 2)
        self.features = nn.Sequential(layers)

        side = [s // 2 ** len(_STAGES) for s in size]
        flat = channels * math.prod(side)
        if head == "128N":
            head_layers = OrderedDict([
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(flat, hidden)),
                ("relu_fc1", nn.ReLU()),
                ("dropout1", nn.Dropout(dropout)),
                ("fc2", nn.Linear(hidden, hidden)),
                ("relu_fc2", nn.ReLU()),
                ("dropout2", nn.Dropout(dropout)),
                ("fc3", nn.Linear(hidden, num_classes)),
            ])
        else:
            head_layers = OrderedDict([("flatten", nn.Flatten()), ("fc", nn.Linear(flat, num_classes))])
        self.classifier = nn.Sequential(head_layers)

        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of images (B, in_channels, H, W)."""
        return self.classifier(self.features(x))


def vgg_parameter_groups(model: nn.Module, conv_lr: float = 1e-4, fc_lr: float = 1e-3) -> list[dict]:
    """Optimizer parameter groups with seed 003's learning rates for a VGG classifier.

    Seed 003 (section 3.2.1) fine-tunes the convolutional layers with learning rate 0.0001
    and trains the fully connected layers with 0.001.

    Parameters
    ----------
    model : nn.Module
        A model with ``features`` (the convolutional part) and ``classifier`` (the fully
        connected part), such as :class:`VGG11`; every parameter must belong to one of them.
    conv_lr : float, default 1e-4
        Learning rate of the parameters in ``model.features``.
    fc_lr : float, default 1e-3
        Learning rate of the parameters in ``model.classifier``.

    Returns
    -------
    list of dict
        ``[{"name": "conv", "params": [...], "lr": conv_lr}, {"name": "fc", "params": [...],
        "lr": fc_lr}]``, to pass to a ``torch.optim`` optimizer; every parameter of the model
        appears in exactly one group (frozen ones included).

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module``.
    ValueError
        If a learning rate is not a positive finite number, or ``model`` lacks ``features`` /
        ``classifier`` or has parameters outside them.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    conv_lr = check_positive(conv_lr, "conv_lr", float)
    fc_lr = check_positive(fc_lr, "fc_lr", float)
    parts = {}
    for part in ("features", "classifier"):
        module = getattr(model, part, None)
        if not isinstance(module, nn.Module):
            raise ValueError(f"model: expected a VGG-like model with a '{part}' submodule, "
                             f"got {type(model).__name__} without one")
        parts[part] = list(module.parameters())
    seen = set()
    groups = []
    for name, part, lr in (("conv", "features", conv_lr), ("fc", "classifier", fc_lr)):
        params = [p for p in parts[part] if id(p) not in seen]
        seen.update(id(p) for p in params)
        groups.append({"name": name, "params": params, "lr": float(lr)})
    outside = [name for name, p in model.named_parameters() if id(p) not in seen]
    if outside:
        raise ValueError(f"model: parameters outside 'features' and 'classifier': {outside}")
    return groups
