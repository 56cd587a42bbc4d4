import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import PatchModel, patch_image

from interpret_segmentation.analysis.metrics import (
    HausdorffToReference,
    binarize,
    deletion_insertion,
    dice,
    dice_explained,
    hausdorff_distance,
    perturbation_ratio,
)


def test_binarize_normalises_then_thresholds():
    saliency = np.array([[1.0, 2.0], [3.0, 5.0]])  # normalised: 0, .25, .5, 1
    assert binarize(saliency, 0.2).tolist() == [[False, True], [True, True]]
    assert binarize(saliency, 0.5).tolist() == [[False, False], [False, True]]
    assert not binarize(np.ones((2, 2)), 0.0).any()  # a constant map keeps nothing
    for bad in (1.0, -0.1, "0.2"):
        with pytest.raises(ValueError, match="threshold"):
            binarize(saliency, bad)


def test_perturbation_ratio_by_hand():
    prediction = np.zeros((6, 6), bool)
    prediction[1:3, 1:5] = True  # 8 pixels
    kept = np.zeros((6, 6))
    kept[0:2, 0:2] = 0.3  # 4 non-zero pixels, values do not matter
    kept[5, 5] = 1.0
    assert perturbation_ratio(kept, prediction) == pytest.approx(5 / 8)
    with pytest.raises(ValueError, match="prediction: expected a predicted object"):
        perturbation_ratio(kept, np.zeros((6, 6)))
    with pytest.raises(ValueError, match=r"prediction: expected the shape of kept \(6, 6\), got \(5, 6\)"):
        perturbation_ratio(kept, np.zeros((5, 6)))


def test_dice_explained_with_a_patch_model():
    model, image = PatchModel(), patch_image()
    patch = np.zeros((48, 48))
    patch[30:38, 30:38] = 1
    assert dice_explained(model, image, patch) == 1.0  # the patch is all the model needs
    assert dice_explained(model, image, np.zeros((48, 48))) == 0.0
    half = patch.copy()
    half[30:38, 34:38] = 0  # half the patch: mean brightness 0.5, not above the threshold
    assert dice_explained(model, image, half) == 0.0
    with pytest.raises(ValueError, match="kept: expected the image's size"):
        dice_explained(model, image, np.ones((4, 4)))


def test_deletion_and_insertion_curves_by_hand():
    model, image = PatchModel(), patch_image()
    on_patch = np.zeros((48, 48))
    on_patch[30:38, 30:38] = 1.0  # 64 of 2304 pixels rank first
    curves = deletion_insertion(model, image, on_patch, steps=4)
    assert np.allclose(curves["fractions"], [0, 0.25, 0.5, 0.75, 1.0])
    assert curves["deletion"].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert curves["insertion"].tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert curves["deletion_auc"] == pytest.approx(0.125)
    assert curves["insertion_auc"] == pytest.approx(0.875)
    # the patch ranked last: deleting anything else changes nothing
    reverse = deletion_insertion(model, image, -on_patch, steps=4, batch_size=3)
    assert reverse["deletion"].tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert reverse["insertion"].tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="steps"):
        deletion_insertion(model, image, on_patch, steps=0)


def test_dice_of_hand_masks():
    a = torch.zeros(4, 4)
    a[0, :2] = 1
    b = torch.zeros(4, 4)
    b[0, 1:3] = 1
    assert dice(a, b) == pytest.approx(0.5)


def test_explanation_scores_per_paper_threshold_and_for_misure():
    from interpret_segmentation import RISE
    from interpret_segmentation.analysis.faithfulness import explanation_scores
    from interpret_segmentation.methods.misure import MiSuRe
    from interpret_segmentation.methods.registry import get

    model, image = PatchModel(), patch_image()
    rise = RISE(model, n_masks=40, s=6, progress=False).explain(image)
    assert explanation_scores(model, image, rise) == {}  # no thresholds, nothing to score
    scores = explanation_scores(model, image, rise, get("rise").thresholds)
    assert set(scores) == {"0.2", "0.4"}
    for threshold, values in scores.items():
        kept = binarize(rise.saliency, float(threshold))
        assert values["dice_explained"] == dice_explained(model, image, kept)
        assert values["perturbation_ratio"] == pytest.approx(kept.sum() / 100)
    misure = MiSuRe(model, mask_size=24, iterations=5, progress=False).explain(image)
    assert explanation_scores(model, image, misure) == {"msr": {
        "dice_explained": misure.info["dice_explained"],
        "perturbation_ratio": misure.info["perturbation_ratio"]}}
    assert explanation_scores(model, image, misure, (0.2,)) == explanation_scores(
        model, image, misure)  # a method's own scores win over thresholds
    dark = RISE(model, n_masks=4, s=4, progress=False).explain(torch.zeros(1, 48, 48))
    assert explanation_scores(model, torch.zeros(1, 48, 48), dark, (0.2, 0.4)) == {}
    with pytest.raises(ValueError, match=r"thresholds\[1\]: expected a number in \[0, 1\)"):
        explanation_scores(model, image, rise, (0.2, 1.0))


def test_context_map_is_the_named_array_when_there_is_one():
    from interpret_segmentation import Explanation
    from interpret_segmentation.analysis.faithfulness import context_map

    saliency, circles = np.zeros((3, 4), np.float32), np.ones((3, 4), np.float32)
    explanation = Explanation(saliency=saliency, method="toy", target_class=1,
                              arrays={"circles": circles})
    assert context_map(explanation, "circles") is circles
    assert context_map(explanation) is explanation.saliency
    assert context_map(explanation, "absent") is explanation.saliency


def _metric(name, model, class_index):
    image = patch_image()
    if name == "dice_explained":
        return dice_explained(model, image, np.ones((48, 48)), class_index=class_index)
    return deletion_insertion(model, image, np.random.default_rng(0).random((48, 48)),
                              class_index=class_index, steps=2)


@pytest.mark.parametrize("metric", ["dice_explained", "deletion_insertion"])
@pytest.mark.parametrize("class_index", [9, 2, -1, -2, np.int64(5)])
def test_every_metric_refuses_a_class_index_out_of_range_or_negative(metric, class_index):
    with pytest.raises(IndexError, match=rf"class_index: expected a class index in 0\.\.1 "
                                         rf"\(the model's classes\), got {class_index}"):
        _metric(metric, PatchModel(), class_index)


@pytest.mark.parametrize("metric", ["dice_explained", "deletion_insertion"])
@pytest.mark.parametrize("class_index", [1.0, True, "1", None])
def test_every_metric_refuses_a_class_index_that_is_no_int(metric, class_index):
    with pytest.raises(TypeError, match="class_index: expected an int class index"):
        _metric(metric, PatchModel(), class_index)


@given(st.integers(-1000, 1000))
@settings(max_examples=40, deadline=None)
def test_dice_explained_takes_exactly_the_model_classes(class_index):
    if class_index in (0, 1):
        assert _metric("dice_explained", PatchModel(), class_index) == 1.0
    else:
        with pytest.raises(IndexError):
            _metric("dice_explained", PatchModel(), class_index)


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), True, None])
def test_binarize_refuses_nan_and_inf_thresholds(threshold):
    with pytest.raises(ValueError, match=r"threshold: expected a number in \[0, 1\)"):
        binarize(np.ones((2, 2)), threshold)
    assert binarize(np.array([[0.0, 1.0]]), np.float32(0.5)).tolist() == [[False, True]]


# ---------------------------------------------------------------------------------------------
# volumes, voxel spacing and baselines (issue 13)


def brute_force_hausdorff(a, b, spacing):
    """From every pair of points, coordinates scaled by the spacing."""
    from scipy.spatial.distance import cdist

    pairs = cdist(np.argwhere(a) * np.asarray(spacing), np.argwhere(b) * np.asarray(spacing))
    return max(pairs.min(1).max(), pairs.min(0).max())


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([(5, 7), (4, 6, 5), (3, 1, 8)]), st.integers(0, 2**32 - 1),
       st.tuples(st.floats(0.1, 5), st.floats(0.1, 5), st.floats(0.1, 5)))
def test_hausdorff_with_anisotropic_spacing_matches_brute_force(shape, seed, steps):
    rng = np.random.default_rng(seed)
    a, b = rng.random(shape) < 0.2, rng.random(shape) < rng.random()
    spacing = steps[:len(shape)]
    ours = hausdorff_distance(a, b, spacing=spacing)
    assert ours == hausdorff_distance(b, a, spacing=spacing)
    if a.any() and b.any():
        assert ours == pytest.approx(brute_force_hausdorff(a, b, spacing), rel=1e-9)
    elif a.any() or b.any():  # the diagonal, in physical units
        assert ours == pytest.approx(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))
    else:
        assert ours == 0.0


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([(9, 11), (6, 7, 8), (1, 9, 9)]), st.integers(0, 2**32 - 1),
       st.tuples(st.floats(0.1, 5), st.floats(0.1, 5), st.floats(0.1, 5)))
def test_missed_pixels_measured_in_a_growing_box_match_brute_force(shape, seed, steps):
    """A reference block and a mask that misses a few of its pixels and adds others, as an
    occluder does (a box around the missed pixels, grown until exact)."""
    rng = np.random.default_rng(seed)
    reference = np.zeros(shape, bool)
    reference[tuple(slice(side // 4, side - side // 4 + 1) for side in shape)] = True
    mask = reference ^ (rng.random(shape) < 0.1)
    spacing = steps[:len(shape)]
    ours = HausdorffToReference(reference, spacing).distance(mask)
    if mask.any():
        assert ours == pytest.approx(brute_force_hausdorff(mask, reference, spacing), rel=1e-9)


def test_hausdorff_by_hand_and_its_arguments_checked():
    a, b = np.zeros((3, 4, 5), bool), np.zeros((3, 4, 5), bool)
    a[0, 0, 0], b[2, 3, 0] = True, True
    assert hausdorff_distance(a, b) == pytest.approx(math.hypot(2, 3))
    assert hausdorff_distance(a, b, spacing=(2.0, 0.5, 9.0)) == pytest.approx(math.hypot(4, 1.5))
    assert hausdorff_distance(a, np.zeros_like(b), spacing=2) == pytest.approx(
        2 * math.sqrt(9 + 16 + 25))
    with pytest.raises(ValueError, match="spacing: expected a positive number or 3 of them"):
        hausdorff_distance(a, b, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"spacing\[2\]: expected a positive number"):
        hausdorff_distance(a, b, spacing=(1.0, 1.0, 0.0))
    with pytest.raises(ValueError, match=r"a: expected a 2-D map \(H, W\) or a 3-D volume"):
        hausdorff_distance(np.zeros((2, 2, 2, 2)), np.zeros((2, 2, 2, 2)))


def test_dice_and_perturbation_ratio_of_volumes_by_hand():
    a, b = np.zeros((4, 5, 6), bool), np.zeros((4, 5, 6), bool)
    a[1:3, 1:3, 1:3] = True  # 8 voxels
    b[2:4, 1:3, 1:3] = True  # 8 voxels, 4 shared
    assert dice(a, b) == pytest.approx(0.5)
    kept = np.zeros((4, 5, 6))
    kept[0, 0, :3] = 0.2
    assert perturbation_ratio(kept, a) == pytest.approx(3 / 8)
    from interpret_segmentation.analysis.metrics import batch_dice

    stacked = torch.from_numpy(np.stack([a, b, np.zeros_like(a)]))
    assert batch_dice(stacked, torch.from_numpy(a)).tolist() == pytest.approx([1.0, 0.5, 0.0])


class PatchModel3D(torch.nn.Module):
    """One-channel logits of a volume: (2:5)^3 is foreground iff the input's (8:12)^3 averages
    within 0.25 of ``value``."""

    def __init__(self, value=1.0):
        super().__init__()
        self.value = value

    def forward(self, x):
        mean = x[:, 0, 8:12, 8:12, 8:12].mean((1, 2, 3))
        out = torch.full((x.shape[0], 1, *x.shape[2:]), -10.0)
        out[:, :, 2:5, 2:5, 2:5] = ((0.25 - (mean - self.value).abs()) * 40)[:, None, None, None,
                                                                               None]
        return out


def patch_volume(value=1.0, background=0.0):
    volume = torch.full((1, 1, 14, 16, 15), background)
    volume[..., 8:12, 8:12, 8:12] = value
    return volume


def test_dice_explained_on_volumes_and_with_a_baseline():
    model, volume = PatchModel3D(), patch_volume()
    patch = np.zeros((14, 16, 15))
    patch[8:12, 8:12, 8:12] = 1
    assert dice_explained(model, volume, patch) == 1.0
    assert dice_explained(model, volume, np.zeros((14, 16, 15))) == 0.0
    assert dice_explained(model, volume[0], patch) == 1.0  # (C, D, H, W): kept says 3-D
    with pytest.raises(ValueError, match=r"kept: expected the image's size \(14, 16, 15\)"):
        dice_explained(model, volume, np.ones((14, 16, 14)))
    # z-scored: the patch at -1 on -2; removing to 0 hides it, removing to -1 keeps it
    z_model, z_volume = PatchModel3D(value=-1.0), patch_volume(-1.0, -2.0)
    nothing = np.zeros((14, 16, 15))
    assert dice_explained(z_model, z_volume, nothing) == 0.0
    assert dice_explained(z_model, z_volume, nothing, baseline=-1.0) == 1.0
    assert dice_explained(z_model, z_volume, patch, baseline="min") == 1.0
    assert dice_explained(z_model, z_volume, nothing, baseline="min") == 0.0


def test_deletion_and_insertion_of_a_volume_by_hand_and_with_a_baseline():
    model, volume = PatchModel3D(), patch_volume()
    on_patch = np.zeros((14, 16, 15))
    on_patch[8:12, 8:12, 8:12] = 1.0  # 64 of 3360 voxels rank first
    curves = deletion_insertion(model, volume, on_patch, steps=4, batch_size=3)
    assert curves["deletion"].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert curves["insertion"].tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert curves["deletion_auc"] == pytest.approx(0.125)
    # a baseline at the patch's own value: deleting it changes nothing, inserting the rest
    # neither
    same = deletion_insertion(model, volume, on_patch, steps=4, baseline=1.0)
    assert same["deletion"].tolist() == [1.0] * 5 and same["insertion"].tolist() == [1.0] * 5
    with pytest.raises(ValueError, match=r"saliency: expected the image's size"):
        deletion_insertion(model, volume, on_patch[:, :, :3], steps=4)


def test_default_baseline_gives_the_papers_product():
    model, image = PatchModel(), patch_image() * 0.9 + 0.1
    kept = np.random.default_rng(1).random((48, 48))
    assert dice_explained(model, image, kept) == dice_explained(model, image, kept, baseline=0.0)
    seen = []

    class Recording(PatchModel):
        def forward(self, x):
            seen.append(x.clone())
            return super().forward(x)

    dice_explained(Recording(), image, kept)
    torch.testing.assert_close(seen[-1], image[None] * torch.from_numpy(kept).float(), rtol=0,
                               atol=0)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([(1, 9), (6, 7), (4, 6, 5), (2, 1, 9)]), st.integers(0, 2**32 - 1),
       st.sampled_from([None, (0.5, 2.0, 1.0), (3.0, 0.8, 0.8)]), st.integers(1, 300))
def test_squared_distance_transform_equals_scipy(shape, seed, spacing, chunk):
    from scipy import ndimage

    from interpret_segmentation.analysis.metrics import squared_distance_transform

    rng = np.random.default_rng(seed)
    masks = rng.random((3, *shape)) < rng.random()
    masks[2] = False
    spacing = None if spacing is None else spacing[:len(shape)]
    squared = squared_distance_transform(torch.from_numpy(masks), spacing, chunk_elements=chunk)
    assert squared.dtype == torch.float64 and squared.shape == masks.shape
    for mask, ours in zip(masks[:2], squared[:2].numpy()):
        if mask.any():
            expected = ndimage.distance_transform_edt(~mask, sampling=spacing) ** 2
            np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)
        else:
            assert np.isinf(ours).all()
    assert np.isinf(squared[2].numpy()).all()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([(6, 7), (4, 6, 5)]), st.integers(0, 2**32 - 1),
       st.sampled_from([None, (2.5, 1.0, 0.7)]))
def test_batched_distances_on_the_device_path_equal_one_by_one(shape, seed, spacing):
    from interpret_segmentation.analysis.metrics import HausdorffToReference

    rng = np.random.default_rng(seed)
    spacing = None if spacing is None else spacing[:len(shape)]
    reference = rng.random(shape) < rng.random() * 0.5
    masks = torch.from_numpy(rng.random((5, *shape)) < rng.random())
    masks[0] = False
    masks[1] = torch.from_numpy(reference)
    measure = HausdorffToReference(reference, spacing)
    one_by_one = np.array([measure.distance(mask) for mask in masks.numpy()])
    np.testing.assert_allclose(measure.distances(masks, on_device=True), one_by_one,
                               rtol=1e-12)
    assert np.array_equal(measure.distances(masks), one_by_one)  # CPU masks: one by one
    with pytest.raises(ValueError, match="masks: expected"):
        measure.distances(masks[:, :2])
