"""Hand-built models whose answers are known, and checks shared by the tests."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from interpret_segmentation.core import Explainer
from interpret_segmentation.datasets import files


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


class OnlyWhenUnmasked(nn.Module):
    """Foreground on the left half, but only when no pixel of the image is zero (nothing
    masked): MiSuRe's stage 1 never reaches tau before its mask covers the image."""

    def forward(self, x):
        whole = (x > 0).flatten(1).all(1).float()[:, None, None, None]
        out = torch.full_like(x[:, :1], -5.0)
        out[..., : x.shape[-1] // 2] = 10 * (2 * whole - 1)
        return out


def patch_image(height=48, width=48, channels=1):
    image = torch.zeros(channels, height, width)
    image[:, 30:38, 30:38] = 1.0
    return image


def patch_segment(height=48, width=48):
    segment = torch.zeros(height, width)
    segment[5:15, 5:15] = 1
    return segment


def components(mask):
    """Number of connected components of a boolean mask."""
    return ndimage.label(mask)[1]


def assert_sample_basics(sample, seed, index, size):
    """A synthetic data-set sample: uint8 image, bool masks, all (size, size), and the meta
    data naming where it comes from."""
    assert sample.image.shape == sample.segment.shape == sample.context.shape == (size, size)
    assert sample.image.dtype == np.uint8
    assert sample.segment.dtype == sample.context.dtype == bool
    meta = sample.meta
    assert (meta["seed"], meta["index"], meta["size"]) == (seed, index, size)


def assert_force_spares(generate, directory, match):
    """``generate(directory)`` (with force) must refuse a directory holding a foreign file
    with a ValueError matching ``match``, and leave the directory as it was."""
    directory.mkdir()
    (directory / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=match):
        generate(directory)
    assert [p.name for p in directory.iterdir()] == ["notes.txt"]
    assert (directory / "notes.txt").read_text() == "keep me"


def interrupt_writes(monkeypatch, at=2):
    """Make the ``at``-th sample write of a data-set generator raise KeyboardInterrupt."""
    calls = []
    original = files.write_sample

    def broken(sample, directory):
        calls.append(directory)
        if len(calls) == at:
            raise KeyboardInterrupt
        original(sample, directory)

    monkeypatch.setattr(files, "write_sample", broken)


class NonFiniteModel(nn.Module):
    """PatchModel's answer with a small convolution in its graph (a layer for Seg-Grad-CAM),
    spoiled by ``value`` (NaN or inf):

    * ``when="always"``: the whole output is ``value``;
    * ``when="perturbed"``: the output is ``value`` once any pixel of the bright patch of
      :func:`patch_image` differs from 1, i.e. for every perturbation that touches it;
    * ``when="gradient"``: the output stays finite, but the gradient through the convolution
      is NaN (the derivative of sqrt at 0 times 0);
    * ``when="never"``: finite output and gradients.
    """

    def __init__(self, value=float("nan"), when="always"):
        super().__init__()
        self.patch = PatchModel()
        self.conv = nn.Conv2d(1, 1, 1)
        self.value, self.when = value, when

    def forward(self, x):
        features = self.conv(x[:, :1])
        if self.when == "gradient":
            return self.patch(x) + torch.sqrt(features * 0)  # sqrt(0): 0, with a NaN gradient
        out = self.patch(x) + 0.01 * features
        if self.when == "never":
            return out
        spoiled = torch.ones(x.shape[0], dtype=torch.bool)
        if self.when == "perturbed":
            spoiled = (x[:, :, 30:38, 30:38] != 1).flatten(1).any(1)
        return torch.where(spoiled[:, None, None, None], torch.full_like(out, self.value), out)


class FailsLater(nn.Module):
    """Wraps a model and raises on its ``fail_at``-th call (counting from 1)."""

    def __init__(self, model: nn.Module, fail_at: int):
        super().__init__()
        self.model, self.fail_at, self.calls = model, fail_at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RuntimeError("the model broke down")
        return self.model(x)


def assert_same_explanation(a, b, ignore_info=("batch_size",)):
    """Every number of two explanations equal (timings and the batch size aside)."""
    assert (a.method, a.target_class, a.parameters) == (b.method, b.target_class, b.parameters)
    assert np.array_equal(a.saliency, b.saliency)
    assert a.arrays.keys() == b.arrays.keys()
    for name in a.arrays:
        assert np.array_equal(a.arrays[name], b.arrays[name]), name
    assert ({k: v for k, v in a.info.items() if k not in ignore_info}
            == {k: v for k, v in b.info.items() if k not in ignore_info})


def randomise_batchnorm(net: nn.Module) -> nn.Module:
    """Give every BatchNorm2d of ``net`` running statistics (and affine parameters) away from
    the identity, so that folding or eval mode changes the numbers; returns ``net``."""
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            if module.affine:
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.5, 0.5)
    return net


class Fixed(nn.Module):
    """Returns whatever ``make(x)`` builds."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def forward(self, x):
        return self.make(x)


class Probe(Explainer):
    """The smallest method: the target class's probability as the map, and what it saw."""

    method = "probe"

    def _explain(self, item):
        self.seen = item
        return self.explanation(item, item.probabilities[0, item.target.class_index])


def model_state(model: nn.Module) -> dict:
    """Everything of a model an explainer must leave as it was."""
    return {
        "modes": [module.training for module in model.modules()],
        "parameters": {name: value.detach().clone() for name, value in model.state_dict().items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad is None for p in model.parameters()],
        "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                  + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules()],
        "attributes": [sorted(vars(module)) for module in model.modules()],
    }


def assert_unchanged(before: dict, model: nn.Module) -> None:
    """``model`` is as :func:`model_state` found it in ``before``."""
    after = model_state(model)
    for key in ("modes", "requires_grad", "grads", "hooks", "attributes"):
        assert after[key] == before[key], key
    assert after["parameters"].keys() == before["parameters"].keys()
    for name, value in before["parameters"].items():
        assert torch.equal(after["parameters"][name], value), name


def cli_error(capsys, argv, *said) -> str:
    """Run the command line ``argv``: it must exit with status 2 and print one line on stderr
    holding each of ``said``; returns that line."""
    from interpret_segmentation.cli import main

    try:
        status = main(argv)
    except SystemExit as stop:  # argparse's own errors
        status = stop.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for words in said:
        assert words in err, err
    return err
