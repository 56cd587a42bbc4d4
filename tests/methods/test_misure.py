import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import NonFiniteModel, OnlyWhenUnmasked, PatchModel, ThreeClassModel, patch_image
from scipy import ndimage
from torch import nn

from interpret_segmentation import Target
from interpret_segmentation.methods import misure
from interpret_segmentation.methods.misure import (
    DilationSteps,
    MiSuRe,
    ball_kernel,
    dilate,
    disk_kernel,
    mask_loss,
    resized,
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
    assert stop_reason(True, 0.0, False, 0.9) == "covers_image"  # told, not a mask
    assert stop_reason(False, 0.95, True, 0.9) == "tau"


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
    with pytest.warns(UserWarning, match="class 1 is predicted nowhere"):
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


# -- volumes, baselines, multi-label heads (issue 13) ------------------------------------------

class PatchModel3D(nn.Module):
    """One-channel logits on a volume: the cube ``out_box`` is foreground iff the cube
    ``in_box`` of the input is bright on average. Nothing else matters."""

    def __init__(self, in_box=(10, 14), out_box=(2, 6)):
        super().__init__()
        self.in_box, self.out_box = in_box, out_box
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x):
        low, high = self.in_box
        brightness = x[:, 0, low:high, low:high, low:high].mean((1, 2, 3))
        out = torch.full((x.shape[0], 1, *x.shape[2:]), -10.0)
        low, high = self.out_box
        out[:, :, low:high, low:high, low:high] = (
            (brightness - 0.5) * self.scale)[:, None, None, None, None]
        return out


def patch_volume(side=16):
    volume = torch.zeros(1, 1, side, side, side)
    volume[..., 10:14, 10:14, 10:14] = 1.0
    return volume


def scipy_ball(size, dims):
    radius = size // 2
    offsets = np.indices((size,) * dims) - radius
    return (offsets ** 2).sum(0) <= radius ** 2


@pytest.mark.parametrize("size", [3, 5, 7])
def test_ball_kernel_and_3d_dilation_equal_scipy(size):
    kernel = ball_kernel(size, 3)
    assert kernel.shape == (size,) * 3 and np.array_equal(kernel.numpy(), scipy_ball(size, 3))
    assert np.array_equal(ball_kernel(size, 2).numpy(), disk_kernel(size).numpy())
    generator = torch.Generator().manual_seed(size)
    mask = (torch.rand(2, 1, 9, 11, 13, generator=generator) > 0.97).float()
    grown = dilate(mask, kernel).numpy().astype(bool)
    for one, expected_from in zip(grown, mask.numpy().astype(bool)):
        expected = ndimage.binary_dilation(expected_from[0], structure=scipy_ball(size, 3))
        assert np.array_equal(one[0], expected)


@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9), st.sampled_from([3, 5, 7]),
       st.integers(0, 10 ** 6))
@settings(max_examples=40, deadline=None)
def test_dilation_count_bounds_the_steps_to_cover_a_volume(depth, height, width, kernel_size,
                                                           seed):
    generator = torch.Generator().manual_seed(seed)
    start = torch.zeros(depth, height, width, dtype=torch.bool)
    start.view(-1)[torch.randint(0, start.numel(), (1,), generator=generator)] = True
    steps = DilationSteps(start, ball_kernel(kernel_size, 3))
    assert steps.count == -(-(depth + height + width - 3) // (kernel_size // 2)) + 1
    assert steps.masks(0, steps.count - 1)[-1].all()


def test_dilation_steps_refuse_a_kernel_of_other_dimensions():
    with pytest.raises(ValueError, match=r"^kernel: expected 3 spatial axes"):
        DilationSteps(torch.ones(4, 4, 4, dtype=torch.bool), disk_kernel(3))


def test_total_variation_and_resize_over_every_spatial_axis():
    step = torch.zeros(1, 1, 4, 3, 2)
    step[:, :, 2:] = 1.0  # one jump along depth at each of 3 x 2 positions
    assert total_variation(step, 3.0).item() == pytest.approx(6 / 24)
    step[..., 1] += 0.5  # and a jump of 0.5 along width at each of 4 x 3 positions
    assert total_variation(step, 2.0).item() == pytest.approx((6 + 12 * 0.25) / 24)
    masks = torch.rand(2, 1, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(masks, size=(6, 8, 10), mode="trilinear", align_corners=False)
    assert torch.equal(resized(masks, (6, 8, 10)), expected)


def test_mask_loss_of_a_multilabel_head_uses_the_channels_complement():
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]] * 2)
    probabilities = torch.tensor([[[[0.9, 0.1], [0.0, 0.0]], [[0.9, 0.9], [0.2, 0.0]]]] * 2)
    reference = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]]]] * 2)
    weights = {"lam": 0.0, "gamma": 0.0, "beta": 1.0, "alpha_background": 1.0,
               "alpha_class": 2.0}
    loss = mask_loss(mask, probabilities, reference, torch.tensor([0, 1]), **weights,
                     multilabel=True)
    # channel 0 (a label, not a background): softDice(p0, r0) = (2 * 1.0 + 1) / (1 + 2 + 1),
    # its complement (0.1, 0.9, 1, 1) against (0, 0, 1, 1): (2 * 2 + 1) / (3 + 2 + 1)
    first = 1 - (2 * 2 + 1) / 6 - 2 * 3 / 4
    # channel 1: (2 * 2.0 + 1) / (2.0 + 3 + 1); complement (0.1, 0.1, 0.8, 1) vs (0, 0, 0, 1)
    second = 1 - (2 * 1 + 1) / (2.0 + 1 + 1) - 2 * 5 / 6
    assert loss.tolist() == pytest.approx([first, second])
    softmax = mask_loss(mask, probabilities, reference, torch.tensor([0, 1]), **weights)
    assert softmax[0].item() == pytest.approx(1 - 2 * 3 / 4)  # background left out for l = 0


def naive_stage_one_3d(model, volume, kernel_size, tau):
    """Algorithm 1 on a volume, one dilation per pass, with scipy's binary dilation by a ball."""
    with torch.no_grad():
        reference = (model(volume)[0, 0] > 0).numpy()
    mask, dilations = reference.copy(), 0
    while True:
        with torch.no_grad():
            kept = (model(volume * torch.from_numpy(mask))[0, 0] > 0).numpy()
        dice = 2 * (kept & reference).sum() / (kept.sum() + reference.sum())
        if mask.all():
            return mask, dilations, "covers_image"
        if dice > tau:
            return mask, dilations, "tau"
        grown = ndimage.binary_dilation(mask, structure=scipy_ball(kernel_size, 3))
        if np.array_equal(grown, mask):
            return mask, dilations, "no_growth"
        mask, dilations = grown, dilations + 1


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_volume_stage_one_equals_a_naive_loop_and_the_msr_keeps_the_patch(kernel_size):
    model, volume = PatchModel3D(), patch_volume()
    mask, dilations, stop = naive_stage_one_3d(model, volume, kernel_size, 0.9)
    results = [MiSuRe(model, kernel_size=kernel_size, iterations=40, batch_size=batch,
                      progress=False).explain(volume) for batch in (1, 3)]
    explanation = results[0]
    assert explanation.saliency.shape == (16, 16, 16) and explanation.saliency.dtype == np.float32
    assert (explanation.info["dilations"], explanation.info["sr_stop"]) == (dilations, stop)
    assert dilations > 0 and stop == "tau"
    assert np.array_equal(explanation.arrays["sr_mask"].astype(bool), mask)
    assert explanation.arrays["x_sr"].shape == explanation.arrays["x_msr"].shape == (1, 16, 16, 16)
    assert explanation.info["mask_size"] == [16, 16, 16]  # the volume's own size by default
    msr = explanation.saliency
    assert msr[10:14, 10:14, 10:14].mean() > 0.5 and explanation.info["dice_explained"] == 1.0
    assert msr[:8].max() == 0  # everything away from the patch is pruned
    assert np.array_equal(results[1].saliency, msr)
    assert results[1].info["dilations"] == dilations


def test_volume_mask_size_per_axis_and_batch_equals_one_at_a_time():
    model = PatchModel3D()
    volume = patch_volume()
    second = patch_volume()
    second[..., 12:14, 10:14, 10:14] = 0.9
    explainer = MiSuRe(model, mask_size=(8, 6, 4), kernel_size=5, iterations=8, progress=False)
    together = explainer.explain_batch([volume, second], [1, 1])
    for image, many in zip([volume, second], together):
        one = explainer.explain(image)
        assert one.info["mask_size"] == many.info["mask_size"] == [8, 6, 4]
        assert np.allclose(one.saliency, many.saliency, atol=1e-6)
    assert explainer.settings()["mask_size"] == [8, 6, 4]


def test_mask_size_is_checked_per_axis():
    assert MiSuRe(PatchModel(), mask_size=(32, 24)).mask_shape((48, 48)) == (32, 24)
    assert MiSuRe(PatchModel(), mask_size=np.int64(16)).mask_shape((8, 9, 10)) == (16, 16, 16)
    default = MiSuRe(PatchModel())
    assert default.mask_shape((48, 40)) == (224, 224)  # seed 001's, whatever the image
    assert default.mask_shape((300, 64, 32)) == (224, 64, 32)
    assert default.settings()["mask_size"] is None
    for bad in [(16,), (4, 4, 4, 4), (16, 0), (16, 2.5)]:
        with pytest.raises(ValueError, match=r"^mask_size"):
            MiSuRe(PatchModel(), mask_size=bad)
    with pytest.raises(ValueError, match=r"^mask_size: expected an int or 3 ints \(one per "
                                         r"spatial axis of the volume"):
        MiSuRe(PatchModel3D(), mask_size=(8, 8), progress=False).explain(patch_volume())


def test_removed_pixels_take_the_baseline_and_zero_is_the_papers_product():
    image = patch_image()
    image[:, :10, :] = 0.3  # something for a baseline to differ from
    plain = MiSuRe(PatchModel(), mask_size=48, iterations=5, progress=False).explain(image)
    sr = plain.arrays["sr_mask"].astype(np.float32)
    assert np.array_equal(plain.arrays["x_sr"], image.numpy() * sr)  # X0 * M_SR, as before
    assert np.array_equal(plain.arrays["x_msr"], image.numpy() * sr * plain.saliency)
    assert plain.info["sr_stop"] == "tau"
    shifted = MiSuRe(PatchModel(), mask_size=48, iterations=5, baseline=0.25,
                     progress=False).explain(image)
    sr = shifted.arrays["sr_mask"].astype(bool)
    assert np.array_equal(shifted.arrays["x_sr"], np.where(sr, image.numpy(), 0.25))
    kept = shifted.saliency
    expected = shifted.arrays["x_sr"] * kept + 0.25 * (1 - kept)
    assert np.allclose(shifted.arrays["x_msr"], expected, atol=1e-7)


def test_removing_with_the_baseline_reaches_a_model_of_normalised_inputs():
    """A z-scored image whose patch is bright (above 0) against a dark (negative) rest: with
    the baseline "min", removed pixels are dark, so the sufficient region must reach the patch;
    with 0 (brighter than the rest) stage 1 stops at once."""

    class Normalised(nn.Module):
        def forward(self, x):
            return PatchModel()(x + 0.5)

    image = patch_image() - 0.5  # background -0.5, patch +0.5
    with_min = MiSuRe(Normalised(), mask_size=48, iterations=2, baseline="min",
                      progress=False).explain(image)
    assert with_min.info["dilations"] > 0
    assert with_min.arrays["sr_mask"][30:38, 30:38].mean() > 0.5
    assert with_min.arrays["x_sr"][0][~with_min.arrays["sr_mask"].astype(bool)].max() == -0.5


class TwoLabels(nn.Module):
    """Two sigmoid labels that overlap: label 0 on rows 0:20 when patch A (top left) is bright,
    label 1 on rows 10:30 when patch B (bottom right) is; both confident."""

    def forward(self, x):
        a = x[:, 0, 2:8, 2:8].mean((1, 2))
        b = x[:, 0, 30:38, 30:38].mean((1, 2))
        out = torch.full((x.shape[0], 2, *x.shape[2:]), -8.0)
        out[:, 0, 0:20] = ((a - 0.5) * 20)[:, None, None]
        out[:, 1, 10:30] = ((b - 0.5) * 30)[:, None, None]
        return out


def test_multilabel_head_segments_by_channel_and_loss_has_no_class_zero_background(monkeypatch):
    image = patch_image()
    image[:, 2:8, 2:8] = 1.0
    calls = []
    original = misure.mask_loss

    def recording(*args, **kwargs):
        calls.append(kwargs["multilabel"])
        return original(*args, **kwargs)

    monkeypatch.setattr(misure, "mask_loss", recording)
    explainer = MiSuRe(TwoLabels(), activation="sigmoid", mask_size=48, iterations=30,
                       progress=False)
    for label, patch in [(0, (slice(2, 8), slice(2, 8))), (1, (slice(30, 38), slice(30, 38)))]:
        explanation = explainer.explain(image, label)
        # the label's own segment, p > 0.5, overlap included (arg-max would give 0:10 or 20:30)
        assert explanation.info["prediction_pixels"] == 20 * 48
        assert explanation.info["dice_explained"] == 1.0
        assert explanation.saliency[patch].mean() > 0.5
    assert calls and all(calls)
    softmax = MiSuRe(ThreeClassModel(), mask_size=16, iterations=1, progress=False)
    softmax.explain(patch_image(), 2)
    assert calls[-1] is False


def test_a_plain_callable_and_a_float64_model_give_the_modules_map():
    model = PatchModel()
    expected = MiSuRe(model, mask_size=48, iterations=10, progress=False).explain(patch_image())
    function = MiSuRe(lambda x: model(x), mask_size=48, iterations=10,
                      progress=False).explain(patch_image())
    double = MiSuRe(PatchModel().double(), mask_size=48, iterations=10,
                    progress=False).explain(patch_image())
    for got in (function, double):
        assert got.saliency.dtype == np.float32
        assert got.info["dilations"] == expected.info["dilations"] > 0
        assert np.allclose(got.saliency, expected.saliency, atol=1e-5)
