"""Baselines: what removed pixels (voxels) take."""

import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from interpret_segmentation.core import (
    Explainer,
    Target,
    check_baseline,
    describe_baseline,
    replace,
    resolve_baseline,
)
from interpret_segmentation.core.baseline import removal_effect


class Probe(Explainer):
    method = "probe"

    def _explain(self, item):
        self.seen = item
        return self.explanation(item, item.probabilities[0, item.target.class_index])


def _image(*shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(1, *shape))).float()


def test_numbers_min_and_mean():
    image = _image(3, 5, 6)
    assert torch.equal(resolve_baseline(0, image), torch.zeros_like(image))
    assert torch.equal(resolve_baseline(np.float32(-1.5), image), torch.full_like(image, -1.5))
    low = resolve_baseline("min", image)
    assert low.shape == image.shape and torch.equal(low, torch.full_like(image, float(image.min())))
    mean = resolve_baseline("mean", image)
    for channel in range(3):
        assert torch.allclose(mean[0, channel], image[0, channel].mean().expand(5, 6))


@pytest.mark.parametrize(("shape", "sigma"), [((2, 9, 11), 1.5), ((1, 6, 7, 8), 1.0),
                                              ((1, 6, 7, 8), (0.5, 2.0, 1.0)), ((1, 4, 4), 5.0)])
def test_blur_is_scipys_gaussian_filter_with_nearest_edges(shape, sigma):
    image = _image(*shape)
    got = resolve_baseline(("blur", sigma), image)
    sigmas = sigma if isinstance(sigma, tuple) else (sigma,) * (len(shape) - 1)
    for channel in range(shape[0]):
        expected = ndimage.gaussian_filter(image[0, channel].double().numpy(), sigmas,
                                           mode="nearest", truncate=4.0)
        assert np.allclose(got[0, channel].numpy(), expected, atol=1e-5)
    assert got.shape == image.shape and got.dtype == image.dtype


def test_blur_defaults_to_five_pixels():
    image = _image(1, 30, 30)
    assert check_baseline("blur") == ("blur", 5.0)
    assert torch.allclose(resolve_baseline("blur", image), resolve_baseline(("blur", 5), image))


def test_arrays_broadcast_to_the_image():
    image = _image(3, 4, 5)
    per_channel = np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1)
    got = resolve_baseline(per_channel, image)
    assert got.shape == image.shape and torch.allclose(got[0, :, 2, 3], torch.tensor([0.485, 0.456, 0.406]))
    per_pixel = torch.arange(20.0).reshape(4, 5)
    assert torch.equal(resolve_baseline(per_pixel, image)[0, 2], per_pixel)
    with pytest.raises(ValueError, match=r"^baseline: expected an array broadcastable to the "
                                         r"image's shape \(1, 3, 4, 5\), got shape \(2, 1, 1\)"):
        resolve_baseline(np.zeros((2, 1, 1)), image)


@pytest.mark.parametrize(("bad", "message"), [
    ("max", r"baseline: expected a number, 'min', 'mean', 'blur', \('blur', sigma\) or an array "
            r"broadcastable to the image \(1, C, \*S\), got 'max'"),
    (True, "baseline: expected a number, .* got bool"),
    (None, "baseline: expected a number, .* got NoneType"),
    (float("nan"), "baseline: expected a number, .* got nan"),
    (("blur", -1), "baseline sigma: expected a positive number, got -1"),
    (("blur", 0), "baseline sigma: expected a positive number, got 0"),
    (("blur",), r"baseline: expected a number, .* got \('blur',\)"),
    (("mean", 2), r"baseline: expected a number, .* got \('mean', 2\)"),
    (("blur", "x"), "baseline: expected \\('blur', sigma\\) with sigma a positive number"),
    (np.array(["a"]), "baseline: expected .* got an array of dtype <U1"),
    (np.array([1.0, np.inf]), "baseline: expected finite values, got 1 NaN or inf of 2"),
    (np.zeros(0), "baseline: expected .* got an empty array"),
    ([0.5, 0.5], "baseline: expected a number, .* got list"),
])
def test_bad_baselines_are_refused_naming_baseline(bad, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        check_baseline(bad)
    with pytest.raises(ValueError, match=f"^{message}"):
        Probe(nn.Identity(), baseline=bad)


def test_a_sigma_per_axis_must_match_the_image():
    with pytest.raises(ValueError, match=r"^baseline: expected \('blur', sigma\) with one sigma per "
                                         r"spatial axis \(2\), got 3"):
        resolve_baseline(("blur", (1, 2, 3)), _image(1, 5, 5))


def test_replace_keeps_blends_and_removes():
    image, baseline = _image(2, 3, 4), torch.full((1, 2, 3, 4), -7.0)
    keep = torch.stack([torch.ones(1, 3, 4), torch.zeros(1, 3, 4), torch.full((1, 3, 4), 0.25)])
    got = replace(image, keep, baseline)
    assert got.shape == (3, 2, 3, 4)
    assert torch.equal(got[0], image[0]) and torch.equal(got[1], baseline[0])
    assert torch.allclose(got[2], 0.25 * image[0] + 0.75 * baseline[0])


def test_the_explainer_puts_the_resolved_baseline_in_each_item():
    image = _image(1, 6, 6)[0] - 3  # an all-negative, z-scored-like image
    model = nn.Sequential(nn.Conv2d(1, 2, 1))
    region = Target(1, np.ones((6, 6)))
    default = Probe(model, progress=False)
    default.explain(image, region)
    assert torch.equal(default.seen.baseline, torch.zeros(1, 1, 6, 6))
    lowest = Probe(model, baseline="min", progress=False)
    lowest.explain(image, region)
    assert torch.equal(lowest.seen.baseline, torch.full((1, 1, 6, 6), float(image.min())))
    assert lowest.seen.baseline.dtype == lowest.seen.image.dtype
    assert lowest.seen.baseline.device == lowest.seen.image.device
    volume = Probe(nn.Sequential(nn.Conv3d(1, 2, 1)), baseline=("blur", 1.0), progress=False)
    volume.explain(_image(1, 4, 5, 6), Target(1, np.ones((4, 5, 6))))
    assert volume.seen.baseline.shape == (1, 1, 4, 5, 6)


def test_description_and_removal_effect():
    assert describe_baseline(0) == 0.0 and describe_baseline("mean") == "mean"
    assert describe_baseline("blur") == ["blur", 5.0]
    assert describe_baseline(("blur", (1, 2, 2))) == ["blur", [1.0, 2.0, 2.0]]
    assert describe_baseline(np.zeros((3, 1, 1))) == "array (3, 1, 1)"
    image = _image(1, 16, 16)
    for value in (0.0, 5.0, float(image.mean())):
        assert removal_effect(image, torch.full_like(image, value)) >= 1 - 1e-6
    negative = image - image.max() - 1  # every value below 0
    assert removal_effect(negative, torch.minimum(negative, torch.zeros(()))) == 0.0
    assert removal_effect(torch.ones(1, 1, 3, 3), torch.zeros(1, 1, 3, 3)) == 1.0


def test_a_baseline_that_leaves_the_image_as_it_was_is_a_warning():
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    smooth = ((x + y) / 62).reshape(1, 1, 32, 32)  # a ramp: a blur hardly changes it
    with pytest.warns(UserWarning, match=r"baseline: removing every pixel .* changes the image by only"):
        resolve_baseline(("blur", 1.0), smooth)
    with pytest.warns(UserWarning, match="fill: removing every pixel"):
        resolve_baseline(smooth.numpy() + 0.01, smooth, name="fill")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for constant in (0.0, "min", "mean", 3.0):
            resolve_baseline(constant, smooth)
        resolve_baseline(("blur", 1.0), _image(1, 32, 32))  # noise: the blur removes it
        resolve_baseline(np.zeros((1, 1, 1)), smooth)
