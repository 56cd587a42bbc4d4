import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import PatchModel, patch_image

from interpret_segmentation.analysis.metrics import (
    binarize,
    deletion_insertion,
    dice,
    dice_explained,
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
