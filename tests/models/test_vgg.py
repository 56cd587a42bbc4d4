import numpy as np
import pytest
import torch
from torch import nn

from interpret_segmentation.models.vgg import VGG11, vgg_parameter_groups

FEATURES = [
    "conv1_1", "relu1_1", "pool1", "conv2_1", "relu2_1", "pool2",
    "conv3_1", "relu3_1", "conv3_2", "relu3_2", "pool3",
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "pool4",
    "conv5_1", "relu5_1", "conv5_2", "relu5_2", "pool5",
]


@pytest.mark.parametrize("head, classifier", [
    ("128N", ["flatten", "fc1", "relu_fc1", "dropout1", "fc2", "relu_fc2", "dropout2", "fc3"]),
    ("onefc", ["flatten", "fc"]),
])
def test_layer_names_and_output_shapes(head, classifier):
    torch.manual_seed(0)
    model = VGG11(in_channels=1, width=2, head=head, input_size=32)
    assert [name for name, _ in model.features.named_children()] == FEATURES
    assert [name for name, _ in model.classifier.named_children()] == classifier
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model(torch.rand(3, 1, 32, 32)).shape == (3, 2)
    rgb = VGG11(in_channels=3, num_classes=5, width=2, head=head, input_size=(64, 96))
    assert rgb(torch.rand(2, 3, 64, 96)).shape == (2, 5)


def test_widths_follow_vgg_a_and_the_first_linear_layer_fits_the_input_size():
    model = VGG11(width=64)  # the standard model, 224 x 224 RGB
    widths = [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)]
    assert widths == [64, 128, 256, 256, 512, 512, 512, 512]
    assert model.features.conv1_1.in_channels == 3
    assert model.classifier.fc1.in_features == 512 * 7 * 7
    assert model.classifier.fc1.out_features == 128 and model.classifier.fc2.out_features == 128
    assert model.classifier.fc3.out_features == 2
    small = VGG11(in_channels=1, width=3, head="onefc", input_size=64)
    assert small.classifier.fc.in_features == 24 * 2 * 2


def test_parameter_groups_cover_every_parameter_once_with_the_papers_rates():
    model = VGG11(width=2, input_size=32)
    groups = vgg_parameter_groups(model)
    assert [(g["name"], g["lr"]) for g in groups] == [("conv", 1e-4), ("fc", 1e-3)]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.features.parameters()}
    optimizer = torch.optim.SGD(vgg_parameter_groups(model, conv_lr=0.5, fc_lr=2.0), lr=0.1)
    assert [g["lr"] for g in optimizer.param_groups] == [0.5, 2.0]


@pytest.mark.parametrize("kwargs, name", [
    ({"width": 0}, "width"),
    ({"in_channels": -1}, "in_channels"),
    ({"num_classes": 1.5}, "num_classes"),
    ({"head": "fc"}, "head"),
    ({"input_size": 16}, "input_size"),
    ({"input_size": (32, 32, 3)}, "input_size"),
    ({"hidden": 0}, "hidden"),
    ({"dropout": 1.0}, "dropout"),
])
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        VGG11(**kwargs)


def test_numpy_ints_are_ints_and_bools_are_not():
    """The models take the library's one meaning of an int (core.validate)."""
    from interpret_segmentation.models.unet import UNet

    vgg = VGG11(in_channels=np.int64(1), width=np.int32(2), input_size=np.int64(32),
                hidden=np.int64(4), dropout=np.float32(0.25))
    assert vgg.input_size == (32, 32) and type(vgg.input_size[0]) is int
    unet = UNet(in_channels=np.int64(1), width=np.int64(2), depth=np.int64(2))
    assert type(unet.width) is int and unet(torch.zeros(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    for build, name in ((lambda: VGG11(width=True), "width"), (lambda: UNet(depth=True), "depth"),
                        (lambda: VGG11(dropout=True), "dropout"),
                        (lambda: VGG11(input_size=(32, True)), r"input_size\[1\]")):
        with pytest.raises(TypeError, match=f"^{name}: expected .*, got True$"):
            build()
    with pytest.raises(ValueError, match="^norm: expected one of batch, group, none, got 'layer'$"):
        UNet(norm="layer")


def test_bad_parameter_group_arguments():
    model = VGG11(width=2, input_size=32)
    with pytest.raises(ValueError, match="conv_lr"):
        vgg_parameter_groups(model, conv_lr=0)
    with pytest.raises(ValueError, match="fc_lr"):
        vgg_parameter_groups(model, fc_lr=float("nan"))
    with pytest.raises(ValueError, match="features"):
        vgg_parameter_groups(nn.Linear(2, 2))
    model.extra = nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="extra"):
        vgg_parameter_groups(model)
