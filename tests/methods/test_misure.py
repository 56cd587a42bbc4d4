import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import NonFiniteModel, OnlyWhenUnmasked, PatchModel, ThreeClassModel, patch_image
from scipy import ndimage

from interpret_segmentation import Target
from interpret_segmentation.methods.misure import (
    DilationSteps,
    MiSuRe,
    dilate,
    disk_kernel,
    mask_loss,
    soft_dice,
    stop_reason,
    total_variation,
)


def test_disk_dilation_and_loss_terms_by_hand():
    kernel = disk_kernel(7)
    assert kernel.shape == (7, 7) and kernel[3].sum() == 7 and kernel[0].sum() == 1
    mask = torch.zeros(1, 1, 15, 15)
    mask[0, 0, 7, 7] = 1
    grown = dilate(mask, kernel)[0, 0].numpy().astype(bool)
    expected = ndimage.binary_dilation(mask[0, 0].numpy().astype(bool), structure=kernel.numpy())
    assert np.array_equal(grown, expected) and grown.sum() == kernel.sum()
    p = torch.tensor([[[1.0, 0.5], [0.0, 0.0]]])
    q = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    assert soft_dice(p, q, epsilon=0.0).item() == pytest.approx(2 * 1.5 / 3.5)
    step = torch.zeros(1, 1, 4, 4)
    step[..., 2:] = 1.0  # one vertical edge of 4 unit jumps
    assert total_variation(step, 3.0).item() == pytest.approx(4 / 16)


def patch_explainer(**options):
    return MiSuRe(PatchModel(), **{"mask_size": 48, "iterations": 60, "progress": False, **options})


def test_patch_oracle_sufficient_region_contains_it_and_minimal_region_keeps_it():
    explanation = patch_explainer().explain(patch_image())
    info = explanation.info
    sr = explanation.arrays["sr_mask"].astype(bool)
    assert info["dilations"] > 0 and not info["sr_covers_image"] and info["sr_dice"] > 0.9
    assert sr[30:38, 30:38].mean() > 0.5  # enough of the patch to make it bright
    msr = explanation.saliency
    assert msr[30:38, 30:38].mean() > 0.5  # kept
    assert msr[:20, :20].max() == 0 and msr[40:, :].max() == 0  # the rest is pruned
    assert info["dice_explained"] == 1.0
    assert info["perturbation_ratio"] == pytest.approx(np.count_nonzero(msr) / 100)
    assert info["perturbation_ratio"] < sr.sum() / 100
    assert explanation.arrays["x_msr"].shape == (1, 48, 48)
    assert set(explanation.timings) >= {"stage1", "stage2", "total"}


def test_same_results_for_batch_sizes_1_2_7_and_auto():
    image = patch_image()
    results = [patch_explainer(iterations=10, kernel_size=3, batch_size=batch).explain(image)
               for batch in (1, 2, 7, "auto")]
    first = results[0]
    assert first.info["dilations"] > 7  # stage 1 spans several passes at every batch size
    for other in results[1:]:
        assert other.info["dilations"] == first.info["dilations"]
        assert other.info["sr_stop"] == first.info["sr_stop"]
        assert other.info["sr_dice"] == first.info["sr_dice"]
        assert np.array_equal(other.arrays["sr_mask"], first.arrays["sr_mask"])
        assert np.array_equal(other.saliency, first.saliency)
    assert [r.info["batch_size"] for r in results[:3]] == [1, 2, 7]
    # the steps run: all up to the one that ends stage 1, and the rest of its batch
    dilations = first.info["dilations"]
    for result, batch in zip(results[:3], (1, 2, 7)):
        assert result.info["stage1_passes"] == -(-(dilations + 1) // batch) * batch


def naive_stage_one(model, image, kernel_size, tau):
    """Seed 001's Algorithm 1, one dilation per model pass, with scipy's binary dilation:
    (M_SR, dilations, why it ended) for class 1 of a one-channel logit model."""
    with torch.no_grad():
        reference = (model(image[None])[0, 0] > 0).numpy()
    radius = kernel_size // 2
    offsets = np.arange(kernel_size) - radius
    disk = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius ** 2
    mask, dilations = reference.copy(), 0
    while True:
        with torch.no_grad():
            kept = (model((image * torch.from_numpy(mask))[None])[0, 0] > 0).numpy()
        dice = 2 * (kept & reference).sum() / (kept.sum() + reference.sum())
        if mask.all():
            return mask, dilations, "covers_image"
        if dice > tau:
            return mask, dilations, "tau"
        grown = ndimage.binary_dilation(mask, structure=disk)
        if np.array_equal(grown, mask):
            return mask, dilations, "no_growth"
        mask, dilations = grown, dilations + 1


@pytest.mark.parametrize("model, image, kernel_size, tau", [
    (PatchModel(), patch_image(), 3, 0.9),
    (PatchModel(), patch_image(), 5, 0.5),
    (PatchModel(), patch_image(40, 56), 7, 0.9),
    (PatchModel(in_box=(0, 4, 0, 4), out_box=(30, 40, 36, 46)), torch.ones(1, 48, 48), 7, 0.9),
    (OnlyWhenUnmasked(), torch.rand(1, 20, 17, generator=torch.Generator().manual_seed(0)) + 0.1,
     3, 0.9),
])
@pytest.mark.parametrize("batch_size", [1, 3, "auto"])
def test_stage_one_equals_a_naive_one_step_loop(model, image, kernel_size, tau, batch_size):
    mask, dilations, stop = naive_stage_one(model, image, kernel_size, tau)
    explainer = MiSuRe(model, kernel_size=kernel_size, tau=tau, mask_size=8, iterations=1,
                       batch_size=batch_size, progress=False)
    explanation = explainer.explain(image)
    assert explanation.info["dilations"] == dilations and explanation.info["sr_stop"] == stop
    assert np.array_equal(explanation.arrays["sr_mask"].astype(bool), mask)


def test_dilation_steps_equal_repeated_dilation_in_any_request_order():
    kernel = disk_kernel(5)
    start = torch.zeros(30, 24, dtype=torch.bool)
    start[4, 20] = start[25, 3] = True
    naive = [start.float()[None, None]]
    for _ in range(12):
        naive.append(dilate(naive[-1], kernel))
    steps = DilationSteps(start, kernel)
    # in order, a retried batch (as after an out-of-memory error), a jump back to the start
    for first, last in [(0, 3), (3, 7), (3, 5), (5, 9), (0, 2), (2, 12)]:
        assert torch.equal(steps.masks(first, last), torch.cat(naive[first:last + 1]))


@given(st.integers(1, 25), st.integers(1, 25), st.sampled_from([3, 5, 7, 9]), st.integers(0, 10 ** 6))
@settings(max_examples=60, deadline=None)
def test_dilation_count_bounds_the_steps_to_cover_the_image(height, width, kernel_size, seed):
    generator = torch.Generator().manual_seed(seed)
    start = torch.zeros(height, width, dtype=torch.bool)
    start.view(-1)[torch.randint(0, height * width, (1,), generator=generator)] = True
    steps = DilationSteps(start, disk_kernel(kernel_size))
    assert steps.masks(0, steps.count - 1)[-1].all()


def test_stop_reason_order():
    full, partial = torch.ones(1, 3, 3), torch.eye(3)[None]
    assert stop_reason(full, 0.0, False, 0.9) == "covers_image"
    assert stop_reason(partial, 0.95, False, 0.9) == "tau"
    assert stop_reason(partial, 0.9, False, 0.9) == "no_growth"
    assert stop_reason(partial, 0.9, True, 0.9) is None


def test_mask_loss_by_hand():
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[0.5, 0.5], [0.5, 0.5]]]])
    probabilities = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]],
                                  [[[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]]])
    reference = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]]] * 2)
    weights = {"lam": 0.5, "gamma": 2.0, "beta": 1.0, "alpha_background": 1.0,
               "alpha_class": 3.0}
    loss = mask_loss(mask, probabilities, reference, torch.tensor([1, 0]), **weights)
    # item 0, class 1: mean|M| = 1/4, TV = (1 + 1) / 4, softDice_0 = 3/4, softDice_1 = 5/6
    first = 0.5 * 0.25 + 2.0 * 0.5 + 1 - 0.75 - 3.0 * 5 / 6
    # item 1, class 0: mean|M| = 1/2, TV = 0, the background term left out, softDice_0 = 3/5
    second = 0.5 * 0.5 + 1 - 3.0 * 3 / 5
    assert loss.tolist() == pytest.approx([first, second])


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bars_on_stderr_only_when_asked(capsys, progress):
    MiSuRe(PatchModel(), mask_size=16, iterations=3, batch_size=2, progress=progress).explain(
        patch_image())
    captured = capsys.readouterr()
    assert captured.out == ""
    for stage in ("MiSuRe stage 1 dilations", "MiSuRe stage 2"):
        assert (stage in captured.err) == progress


def test_batched_equals_one_at_a_time():
    model = ThreeClassModel()
    image = patch_image()
    image[:, 10:20, 5:15] = 0.9  # something bright on the left half for class 1
    explainer = MiSuRe(model, mask_size=32, iterations=15, progress=False)
    single = [explainer.explain(image, 1), explainer.explain(image, 2)]
    batched = explainer.explain_batch(image, [1, 2])
    for one, many in zip(single, batched):
        assert one.target_class == many.target_class
        assert one.info["dilations"] == many.info["dilations"]
        assert np.allclose(one.saliency, many.saliency, atol=1e-5)
    second = patch_image()
    second[:, 30:38, 30:38] = 0.8
    pair = explainer.explain_batch([image, second], [2, 2])
    assert np.allclose(pair[0].saliency, single[1].saliency, atol=1e-5)
    assert np.allclose(pair[1].saliency, explainer.explain(second, 2).saliency, atol=1e-5)


def test_class_not_predicted_says_there_is_nothing_to_explain():
    explanation = patch_explainer().explain(torch.zeros(1, 48, 48))  # dark patch: nothing
    assert explanation.info["nothing_to_explain"]
    assert "empty" in explanation.info["reason"] and not explanation.saliency.any()


def test_mask_covering_the_image_stops_and_says_so():
    image = torch.rand(1, 20, 20) + 0.1
    explanation = MiSuRe(OnlyWhenUnmasked(), mask_size=20, iterations=2, progress=False).explain(image)
    assert explanation.info["sr_covers_image"]
    assert explanation.arrays["sr_mask"].all() and explanation.info["sr_dice"] == 1.0


def test_model_mode_restored_and_no_hooks():
    model = PatchModel()
    model.train()
    MiSuRe(model, mask_size=16, iterations=3, progress=False).explain(patch_image())
    assert model.training and model.norm.training and not model._forward_hooks


def test_bad_input():
    model = PatchModel()
    for kwargs, name in [({"tau": 0}, "tau"), ({"tau": 1.5}, "tau"), ({"iterations": 0}, "iterations"),
                         ({"kernel_size": 6}, "kernel_size"), ({"lr": -1.0}, "lr"),
                         ({"lam": -0.1}, "lam"), ({"zero_below": 1.0}, "zero_below"),
                         ({"mask_size": 0}, "mask_size")]:
        with pytest.raises(ValueError, match=name):
            MiSuRe(model, **kwargs)
    explainer = MiSuRe(model, mask_size=16, iterations=2, progress=False)
    with pytest.raises(ValueError, match=r"^target: expected a class index in 0\.\.1 .*got 2$"):
        explainer.explain(patch_image(), 2)
    with pytest.raises(ValueError, match="image: expected shape"):
        explainer.explain(torch.zeros(2, 2, 1, 4, 4))
    with pytest.raises(ValueError, match="images and targets"):
        explainer.explain_batch([patch_image()], [1, 1])
    with pytest.raises(ValueError, match="images: expected one shape"):
        explainer.explain_batch([patch_image(), patch_image(40, 48)], [1, 1])
    with pytest.raises(ValueError, match="target.region"):
        explainer.explain(patch_image(), Target(1, np.ones((4, 4))))


@given(st.one_of(st.integers(-20, 40), st.sampled_from([1.0, 3.0, True, None, "7", float("nan")])))
@settings(max_examples=80, deadline=None)
def test_kernel_size_is_an_odd_int_of_at_least_three(kernel_size):
    if isinstance(kernel_size, int) and not isinstance(kernel_size, bool) \
            and kernel_size >= 3 and kernel_size % 2 == 1:
        assert MiSuRe(PatchModel(), kernel_size=kernel_size).kernel_size == kernel_size
        return
    with pytest.raises(ValueError, match=r"kernel_size: expected an odd int >= 3 \(a 1 x 1 "
                                         r"kernel never grows the mask\)"):
        MiSuRe(PatchModel(), kernel_size=kernel_size)


def test_stage_one_ends_when_a_dilation_no_longer_grows_the_mask():
    """A 1 x 1 kernel (refused up front, set here behind the check) used to loop forever."""
    results = []

    def explain(batch_size):
        explainer = MiSuRe(OnlyWhenUnmasked(), mask_size=8, iterations=1, batch_size=batch_size,
                           progress=False)
        explainer.kernel_size = 1
        results.append(explainer.explain(torch.rand(1, 12, 12) + 0.1))

    for batch_size in (1, 3):
        worker = threading.Thread(target=explain, args=(batch_size,), daemon=True)
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive(), "stage 1 did not end"
    for explanation in results:
        info = explanation.info
        assert info["sr_stop"] == "no_growth" and info["dilations"] == 0
        assert not info["sr_covers_image"] and info["sr_dice"] <= 0.9
        assert explanation.arrays["sr_mask"].sum() == 72  # the left half, M0 itself


def test_stage_one_says_why_it_stopped():
    explanation = patch_explainer(iterations=1).explain(patch_image())
    assert explanation.info["sr_stop"] == "tau" and explanation.info["sr_dice"] > 0.9


@pytest.mark.parametrize("name", ["tau", "lr", "lam", "gamma", "beta", "alpha_background",
                                  "alpha_class", "zero_below"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), np.float64("nan"),
                                   True, "0.1", None])
def test_nan_inf_and_non_numbers_are_refused_for_every_parameter(name, value):
    with pytest.raises(ValueError, match=rf"^{name}: expected a .*number.*, got"):
        MiSuRe(PatchModel(), **{name: value})


def test_numpy_numbers_are_accepted():
    explainer = MiSuRe(PatchModel(), tau=np.float32(0.5), kernel_size=np.int64(5),
                       lam=np.float64(0.1), iterations=np.int32(2))
    assert (explainer.tau, explainer.kernel_size, explainer.lam, explainer.iterations) == \
        (0.5, 5, 0.1, 2)


def test_nan_in_stage_two_is_named():
    explainer = MiSuRe(NonFiniteModel(when="gradient"), mask_size=16, iterations=3,
                       progress=False)
    with pytest.raises(ValueError, match=r"^MiSuRe stage 2: the gradient of the loss with "
                                         r"respect to the mask \(iteration 0\): \d+ of 256 "
                                         "values are NaN or inf$"):
        explainer.explain(patch_image())
