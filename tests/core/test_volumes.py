"""Volumes (1, C, D, H, W) through the core: reading arrays, masks, spacing, errors, results."""

import numpy as np
import pytest
import torch
from torch import nn

from interpret_segmentation.core import (
    Explainer,
    Explanation,
    ModelAdapter,
    Perturbations,
    Target,
    as_image_batch,
    as_mask,
    explanation_mode,
    folded_batchnorm,
)


class Probe(Explainer):
    """The target class's probability as the map; keeps the item it saw."""

    method = "probe"

    def _explain(self, item):
        self.seen = item
        return self.explanation(item, item.probabilities[0, item.target.class_index])


def conv3d_model(channels=1, classes=2, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv3d(channels, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
                          nn.Conv3d(4, classes, 1))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize(("shape", "spatial_dims", "expected"), [
    ((5, 6), None, (1, 1, 5, 6)),
    ((3, 5, 6), None, (1, 3, 5, 6)),
    ((1, 3, 5, 6), None, (1, 3, 5, 6)),
    ((1, 2, 4, 5, 6), None, (1, 2, 4, 5, 6)),
    ((3, 5, 6), 2, (1, 3, 5, 6)),
    ((4, 5, 6), 3, (1, 1, 4, 5, 6)),
    ((2, 4, 5, 6), 3, (1, 2, 4, 5, 6)),
    ((1, 2, 4, 5, 6), 3, (1, 2, 4, 5, 6)),
])
def test_arrays_are_read_as_images_or_volumes(shape, spatial_dims, expected):
    values = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    batch = as_image_batch(values, spatial_dims=spatial_dims)
    assert batch.shape == expected and batch.dtype == torch.float32
    assert np.array_equal(batch.numpy().ravel(), values.ravel())


def test_shapes_that_do_not_fit_name_the_layouts_and_spatial_dims():
    with pytest.raises(ValueError, match=r"^image: expected shape \(H, W\), \(C, H, W\), \(1, C, H, "
                                         r"W\), \(1, C, D, H, W\) \(a \(C, D, H, W\) or \(D, H, W\) "
                                         r"volume needs spatial_dims=3\), got \(2, 3, 5, 6\)"):
        as_image_batch(np.zeros((2, 3, 5, 6)))
    with pytest.raises(ValueError, match=r"^vol: expected shape \(D, H, W\), \(C, D, H, W\), \(1, C, "
                                         r"D, H, W\), got \(5, 6\)"):
        as_image_batch(np.zeros((5, 6)), "vol", spatial_dims=3)
    with pytest.raises(ValueError, match=r"got \(2, 1, 4, 5, 6\)"):
        as_image_batch(np.zeros((2, 1, 4, 5, 6)))
    with pytest.raises(ValueError, match=r"^image: expected shape .* got \(1, 1, 4, 5, 6\)"):
        as_image_batch(np.zeros((1, 1, 4, 5, 6)), spatial_dims=2)
    with pytest.raises(ValueError, match=r"^image: expected at least one channel and 1 x 1 x 1 voxels"):
        as_image_batch(np.zeros((1, 1, 0, 5, 6)))
    for bad in (1, 4, 2.0, True, "3"):
        with pytest.raises(ValueError, match=r"^spatial_dims: expected an int in \[2, 3\]"):
            as_image_batch(np.zeros((5, 6)), spatial_dims=bad)


def test_masks_of_volumes():
    mask = np.zeros((1, 3, 4, 5))
    mask[0, 1, 2, 3] = 1
    got = as_mask(mask, (3, 4, 5), "target.region")
    assert got.shape == (3, 4, 5) and got.dtype == torch.bool and got.sum() == 1 and got[1, 2, 3]
    with pytest.raises(ValueError, match=r"target.region: expected a mask of the image's size "
                                         r"\(3, 4, 5\), got \(4, 5\)"):
        as_mask(np.zeros((4, 5)), (3, 4, 5), "target.region")


def test_an_explainer_runs_on_a_volume_with_its_spacing():
    model = conv3d_model()
    volume = torch.rand(6, 7, 8)
    explainer = Probe(model, spatial_dims=3, spacing=(3.0, 0.8, 0.8), progress=False)
    region = np.zeros((6, 7, 8))
    region[2:4, 3:5, 1:6] = 1
    explanation = explainer.explain(volume, Target(1, region))
    item = explainer.seen
    assert item.image.shape == (1, 1, 6, 7, 8) and item.probabilities.shape == (1, 2, 6, 7, 8)
    assert item.target.pixels.shape == (6, 7, 8) and item.target.pixels.sum() == 20
    assert item.spacing == (3.0, 0.8, 0.8) and item.spatial_shape == (6, 7, 8)
    with torch.no_grad():
        expected = torch.softmax(model.eval()(volume[None, None]), 1)[0, 1]
    assert explanation.saliency.shape == (6, 7, 8)
    assert np.allclose(explanation.saliency, expected.numpy(), atol=1e-5)  # BatchNorm folded
    assert explanation.arrays["target_pixels"].shape == (6, 7, 8)
    # without spatial_dims a 5-D tensor is a volume, and spacing defaults to 1.0 per axis
    default = Probe(model, progress=False)
    default.explain(volume[None, None], Target(1, region))
    assert default.seen.spacing == (1.0, 1.0, 1.0)
    isotropic = Probe(model, spacing=2, progress=False)
    isotropic.explain(volume[None, None], Target(1, region))
    assert isotropic.seen.spacing == (2.0, 2.0, 2.0)


def test_spacing_is_checked():
    for bad, message in [((1.0, -1.0, 1.0), r"spacing: expected a positive number, got -1.0"),
                         ((1.0, 0, 1.0), "spacing: expected a positive number, got 0"),
                         ((1.0, float("nan"), 1.0), "spacing: expected a positive number, got nan"),
                         ((1.0,) * 4, "spacing: expected 2 or 3 voxel sizes"),
                         ("1,1,1", "spacing: expected None, a positive number or one"),
                         ((True, 1.0, 1.0), "spacing: expected a positive number, got True")]:
        with pytest.raises(ValueError, match=f"^{message}"):
            Probe(nn.Identity(), spacing=bad)
    with pytest.raises(ValueError, match=r"^spacing: expected 2 voxel sizes .* got 3"):
        Probe(nn.Identity(), spatial_dims=2, spacing=(1.0, 1.0, 1.0))
    explainer = Probe(conv3d_model(), spacing=(1.0, 2.0), progress=False)
    with pytest.raises(ValueError, match=r"^spacing: expected 3 voxel sizes for a 3-D image \(one "
                                         r"per spatial axis\), got 2"):
        explainer.explain(torch.rand(1, 1, 4, 4, 4))


def test_explanations_of_volumes_save_and_load(tmp_path):
    saliency = np.random.default_rng(0).normal(size=(3, 4, 5))
    explanation = Explanation(saliency=saliency, method="probe", target_class=1,
                              arrays={"target_pixels": np.ones((3, 4, 5), np.uint8)})
    assert explanation.saliency.dtype == np.float32 and explanation.saliency.shape == (3, 4, 5)
    loaded = Explanation.load(explanation.save(tmp_path / "volume"))
    assert np.array_equal(loaded.saliency, explanation.saliency)
    assert loaded.arrays["target_pixels"].shape == (3, 4, 5)
    with pytest.raises(ValueError, match=r"^saliency: expected a 2-D map \(H, W\) or a 3-D map "
                                         r"\(D, H, W\), got shape \(2, 3, 4, 5\)"):
        Explanation(saliency=np.zeros((2, 3, 4, 5)), method="x", target_class=1)


def test_errors_on_volumes_name_voxels_cubes_and_dimensions():
    model = nn.Sequential(nn.Conv3d(1, 2, 5), nn.MaxPool3d(2), nn.Conv3d(2, 1, 3))
    # needs (side - 4) // 2 >= 3: side >= 10
    with pytest.raises(ValueError, match=r"^image: 6 x 7 x 9 voxels is too small for the model; "
                                         r"the smallest cube it runs on is 10 x 10 x 10 voxels "
                                         r"\(found with blank volumes\)"):
        Probe(model, progress=False).explain(torch.rand(1, 1, 6, 7, 9))
    with pytest.raises(ValueError, match=r"^image: image has 2 channel\(s\); the model's first "
                                         r"convolution \(0\) expects 1"):
        Probe(model, progress=False).explain(torch.rand(1, 2, 12, 12, 12))
    flat = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1))
    with pytest.raises(ValueError, match=r"^image: the model's first convolution \(0\) is 2-D but "
                                         r"the input was read as a volume .*: pass 2-D images"):
        Probe(flat, progress=False).explain(torch.rand(1, 1, 4, 5, 6))
    # a (C, D, H, W) array without spatial_dims=3 is a 2-D image of D channels: the 3-D model
    # is named first, with the way out, rather than the channels it miscounts
    deep = nn.Sequential(nn.Conv3d(2, 2, 3, padding=1))
    with pytest.raises(ValueError, match=r"^image: the model's first convolution \(0\) is 3-D "
                                         r"but the input was read as a 2-D image .*spatial_dims=3"):
        Probe(deep, progress=False).explain(torch.rand(1, 4, 5, 6))
    single = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1))
    with pytest.raises(ValueError, match=r"is 3-D but the input was read as a 2-D image .*"
                                         r"spatial_dims=3 to read a \(C, D, H, W\)"):
        Probe(single, progress=False).explain(torch.rand(1, 1, 5, 6))
    assert Probe(single, spatial_dims=3, progress=False).explain(torch.rand(1, 4, 5, 6),
                                                                 Target(1, np.ones((4, 5, 6))))


def test_volume_perturbations_are_batched_and_bounded_by_the_batch_size():
    model = conv3d_model()
    largest = []
    model.register_forward_pre_hook(lambda module, args: largest.append(args[0].shape[0]))
    base = torch.rand(1, 1, 5, 6, 7)

    def make(start, stop):
        scale = torch.arange(start, stop, dtype=torch.float32).reshape(-1, 1, 1, 1, 1) / 10
        return slice(start, stop), base * scale

    results = {}
    for batch_size in (1, 3, 8):
        seen = torch.zeros(11, 2, 5, 6, 7)
        largest.clear()
        run = Perturbations(ModelAdapter(model, output="logits"), 11, make, batch_size=batch_size,
                            progress=False)
        for items, probabilities in run:
            seen[items] = probabilities
        assert max(largest) <= batch_size and run.passes == 11
        results[batch_size] = seen
    assert torch.allclose(results[1], results[3], atol=1e-6)
    assert torch.allclose(results[1], results[8], atol=1e-6)


def test_batchnorm_3d_is_folded_for_the_block_and_restored():
    model = conv3d_model().eval()
    x = torch.rand(2, 1, 5, 6, 7)
    with torch.no_grad():
        expected = model(x)
    weight = model[0].weight
    with folded_batchnorm(model) as folded, torch.no_grad():
        assert folded == 1 and isinstance(model[1], nn.Identity)
        assert torch.allclose(model(x), expected, atol=1e-5)
    assert model[0].weight is weight and isinstance(model[1], nn.BatchNorm3d)
    with explanation_mode(model, fold_batchnorm=True), torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-5)
