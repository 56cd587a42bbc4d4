import math

import numpy as np
import pytest
import torch
from oracles import PatchModel, ThreeClassModel, assert_same_explanation, patch_image
from torch import nn

from interpret_segmentation import RISE, SegmentationRISE
from interpret_segmentation.analysis.metrics import dice
from interpret_segmentation.core import ModelAdapter
from interpret_segmentation.methods import rise as rise_method
from interpret_segmentation.methods.rise import CHUNK_BYTES, RandomMasks, RISEResult, load_masks

CPU = torch.device("cpu")


def naive_rise(model, image, masks, class_index, pixels, per_pixel=False):
    """One masked image per model call, scores summed in a plain loop."""
    adapter = ModelAdapter(model)
    height, width = image.shape[-2:]
    maps = np.zeros((int(pixels.sum()) if per_pixel else 1, height, width))
    for i in range(len(masks)):
        mask = masks.batch(i, i + 1)[0, 0].numpy()
        with torch.no_grad():
            probabilities = adapter((image * torch.from_numpy(mask))[None])[0].numpy()
        if per_pixel:
            maps += probabilities[class_index][pixels][:, None, None] * mask
        else:
            maps[0] += dice(probabilities.argmax(0) == class_index, pixels) * mask
    return maps / (len(masks) * masks.p1)


def test_masks_are_lazy_deterministic_and_batch_independent():
    masks = RandomMasks(50, 6, 0.3, 40, 52, seed=3)
    whole = masks.batch(0, 50)
    assert whole.shape == (50, 1, 40, 52)
    assert torch.equal(torch.cat([masks.batch(0, 7), masks.batch(7, 50)]), whole)
    assert torch.equal(RandomMasks(50, 6, 0.3, 40, 52, seed=3).batch(10, 20), whole[10:20])
    assert not torch.equal(RandomMasks(50, 6, 0.3, 40, 52, seed=4).batch(0, 50), whole)
    assert whole.min() >= 0 and whole.max() <= 1
    assert abs(float(RandomMasks(400, 6, 0.3, 40, 52).batch(0, 400).mean()) - 0.3) < 0.03
    # only the coarse grids are kept, not full-size masks
    assert masks.cells.numel() == 50 * 6 * 6


def test_dice_weighted_map_matches_naive_loop_and_peaks_at_patch(patch_model):
    image = patch_image()[None]
    explanation = RISE(patch_model, n_masks=120, s=6, p1=0.5, progress=False).explain(image)
    masks = RandomMasks(120, 6, 0.5, 48, 48, seed=0)
    pixels = explanation.arrays["target_pixels"].astype(bool)
    expected = naive_rise(patch_model, image[0], masks, 1, pixels)[0]
    assert np.allclose(explanation.saliency, expected, atol=1e-5)
    y, x = np.unravel_index(explanation.saliency.argmax(), explanation.saliency.shape)
    assert 26 <= y < 42 and 26 <= x < 42
    assert explanation.saliency[30:38, 30:38].mean() > 1.25 * explanation.saliency[:20, :20].mean()


@pytest.mark.parametrize("batch_size", [1, 2, 7])
def test_same_map_for_batch_sizes(patch_model, batch_size):
    reference = RISE(patch_model, n_masks=40, s=5, batch_size=3, progress=False).explain(patch_image())
    other = RISE(patch_model, n_masks=40, s=5, batch_size=batch_size, progress=False).explain(patch_image())
    assert np.allclose(other.saliency, reference.saliency, atol=1e-6)


def test_per_pixel_maps_match_naive_loop_and_merge(patch_model, tmp_path):
    explainer = SegmentationRISE(patch_model, (48, 48), CPU, batch_size=5, progress=False)
    explainer.generate_masks(N=60, s=6, p1=0.4, savepath=tmp_path / "masks.npy", seed=1)
    result = explainer(patch_image())
    pixels = np.zeros((48, 48), bool)
    pixels[5:15, 5:15] = True
    expected = naive_rise(patch_model, patch_image(), RandomMasks(60, 6, 0.4, 48, 48, seed=1), 1,
                          pixels, per_pixel=True)
    assert result.saliencies.shape == (100, 48, 48)
    assert np.allclose(result.saliencies.numpy(), expected, atol=1e-5)
    assert np.allclose(result.max(), expected.max(0), atol=1e-5)
    assert np.allclose(result.mean(), expected.mean(0), atol=1e-5)
    # the saved recipe reproduces the masks; an existing file is kept
    reloaded = SegmentationRISE(patch_model, (48, 48), CPU, progress=False)
    reloaded.load_masks(tmp_path / "masks.npy")
    assert np.allclose(reloaded(patch_image()).max(), result.max())
    with pytest.raises(FileExistsError):
        explainer.generate_masks(N=60, s=6, p1=0.4, savepath=tmp_path / "masks.npy")
    # a plain mask array, as the original library saved it, loads too
    np.save(tmp_path / "array.npy", RandomMasks(60, 6, 0.4, 48, 48, seed=1).batch(0, 60).numpy())
    stored = load_masks(tmp_path / "array.npy")
    assert len(stored) == 60 and abs(stored.p1 - 0.4) < 0.1


class CountingMasks(RandomMasks):
    """RandomMasks that record how many masks each ``batch`` call makes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.made = []

    def batch(self, start, stop, device=None):
        self.made.append(stop - start)
        return super().batch(start, stop, device)


@pytest.mark.parametrize("chunk", [1, 2, 7, 30, 1000])
def test_per_pixel_maps_are_the_same_for_any_chunk_and_masks_are_made_in_chunks(patch_model,
                                                                                 chunk):
    explainer = SegmentationRISE(patch_model, (48, 48), CPU, batch_size=4, progress=False)
    explainer.generate_masks(N=30, s=5, p1=0.5, seed=2)
    whole = explainer(patch_image())
    assert whole.chunk == CHUNK_BYTES // (8 * 48 * 48) >= 30  # all masks made once
    saliencies, merged_max, merged_mean = whole.saliencies, whole.max(), whole.mean()
    assert np.allclose(merged_max, saliencies.amax(0).numpy(), atol=1e-6)
    assert np.allclose(merged_mean, saliencies.mean(0).numpy(), atol=1e-6)
    masks = CountingMasks(30, 5, 0.5, 48, 48, seed=2)
    chunked = RISEResult(whole.scores, masks, whole.pixels, chunk_bytes=chunk * 8 * 48 * 48)
    assert chunked.chunk == chunk
    np.testing.assert_allclose(chunked.max(), merged_max, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(chunked.mean(), merged_mean, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(chunked.saliencies, saliencies, rtol=1e-6, atol=1e-7)
    # the memory bound: never more than ``chunk`` masks made at once, all of them only if
    # they fit
    assert max(masks.made) == min(chunk, 30) and sum(masks.made) >= 3 * 30


def test_pixels_can_be_chosen(patch_model):
    explainer = SegmentationRISE(patch_model, (48, 48), CPU, batch_size=4, progress=False)
    explainer.generate_masks(N=30, s=5, p1=0.5, seed=2)
    chosen = np.zeros((48, 48), bool)
    chosen[0, :5] = True  # pixels the model never segments: probability ~ sigmoid(-10)
    result = explainer(patch_image(), pixels=chosen)
    assert result.scores.shape == (30, 5) and float(result.scores.max()) < 1e-4
    assert torch.equal(result.pixels, torch.from_numpy(chosen))
    assert not result.explanation.info["target_from_prediction"]
    with pytest.raises(ValueError, match="pixels"):
        explainer(patch_image(), pixels=np.zeros((4, 4)))


def test_probability_weighting_is_mean_of_per_pixel_maps(patch_model):
    image = patch_image()
    explainer = SegmentationRISE(patch_model, (48, 48), CPU, progress=False)
    explainer.generate_masks(N=30, s=4, p1=0.5, seed=0)
    per_pixel = explainer(image).mean()
    explanation = RISE(patch_model, n_masks=30, s=4, p1=0.5, weighting="probability",
                       progress=False).explain(image)
    assert np.allclose(explanation.saliency, per_pixel, atol=1e-5)


def test_multiclass_and_empty_target():
    model = ThreeClassModel()
    image = patch_image()
    explanation = RISE(model, n_masks=60, s=6, progress=False).explain(image, 2)
    y, x = np.unravel_index(explanation.saliency.argmax(), explanation.saliency.shape)
    assert 24 <= y < 44 and 24 <= x < 44
    dark = torch.zeros(1, 48, 48)
    nothing = RISE(PatchModel(), n_masks=10, s=4, progress=False).explain(dark)
    assert nothing.info["target_empty"] and np.isfinite(nothing.saliency).all()
    assert SegmentationRISE(PatchModel(), (48, 48), CPU, progress=False).__class__  # builds


def test_model_unchanged_also_after_error(patch_model):
    patch_model.train()
    RISE(patch_model, n_masks=10, s=4, progress=False).explain(patch_image())
    assert patch_model.training and patch_model.norm.training and not patch_model._forward_hooks

    class FailsOnBatches(PatchModel):
        def forward(self, x):
            if x.shape[0] > 1:
                raise RuntimeError("boom")
            return super().forward(x)

    failing = FailsOnBatches()
    failing.train()
    for explain in (lambda: RISE(failing, n_masks=10, s=4, batch_size=5, progress=False)
                    .explain(patch_image()),
                    lambda: _per_pixel(failing)):
        with pytest.raises(RuntimeError, match="boom"):
            explain()
        assert failing.training and failing.norm.training and not failing._forward_hooks


def _per_pixel(model):
    explainer = SegmentationRISE(model, (48, 48), CPU, batch_size=5, progress=False)
    explainer.generate_masks(10, 4, 0.5)
    return explainer(patch_image())


def test_bad_input(patch_model, tmp_path):
    explainer = SegmentationRISE(patch_model, (48, 48), CPU, progress=False)
    with pytest.raises(RuntimeError, match="generate_masks"):
        explainer(patch_image())
    for kwargs, name in [({"N": 0, "s": 4, "p1": 0.5}, "N"), ({"N": 5, "s": 0, "p1": 0.5}, "s"),
                         ({"N": 5, "s": 4, "p1": 1.5}, "p1"), ({"N": 5, "s": 4, "p1": -0.1}, "p1")]:
        with pytest.raises(ValueError, match=name):
            explainer.generate_masks(**kwargs)
    explainer.generate_masks(5, 4, 0.5)
    with pytest.raises(ValueError, match=r"image: expected size \(48, 48\)"):
        explainer(torch.zeros(1, 40, 48))
    bad = patch_image()
    bad[0, 3, 3] = float("inf")
    with pytest.raises(ValueError, match="image: contains NaN or inf"):
        explainer(bad)
    with pytest.raises(ValueError, match="input_size"):
        SegmentationRISE(patch_model, 48, CPU)
    with pytest.raises(FileNotFoundError, match="generate_masks"):
        explainer.load_masks(tmp_path / "none.npy")
    with pytest.raises(ValueError, match="weighting"):
        RISE(patch_model, weighting="max")
    with pytest.raises(ValueError, match="n_masks: expected a positive int, got -3"):
        RISE(patch_model, n_masks=-3)
    with pytest.raises(ValueError, match="p1"):
        RISE(patch_model, p1=0.0)

    class FiveDimensional(nn.Module):  # (B, K) would be read as a classifier's scores
        def forward(self, x):
            return x[..., None]

    with pytest.raises(ValueError, match="model output"):
        RISE(FiveDimensional(), n_masks=4, progress=False).explain(patch_image())


def _bad_mask_files(tmp_path):
    """(file, what the error says) for mask files load_masks must refuse."""
    good = np.full((3, 1, 8, 8), 0.5, np.float32)
    cases = {}

    def npy(name, array, said):
        np.save(tmp_path / f"{name}.npy", array)
        cases[name] = (tmp_path / f"{name}.npy", said)

    npy("zeros", np.zeros_like(good), "every mask value is 0")
    for name, value in (("nan", np.nan), ("above", 1.5), ("below", -0.2), ("inf", np.inf)):
        array = good.copy()
        array[1, 0, 2, 3] = value
        npy(name, array, r"expected mask values in \[0, 1\]")
    npy("empty", np.zeros((0, 8, 8), np.float32), r"expected an array \(N, 1, H, W\)")
    npy("four_channels", np.full((3, 4, 8, 8), 0.5), r"expected an array \(N, 1, H, W\)")
    npy("strings", np.array(["a", "b"]), "expected an array of numbers")
    (tmp_path / "pickled.npy").write_bytes(b"\x80\x04K\x01.")
    cases["pickled"] = (tmp_path / "pickled.npy", "neither a RISE mask recipe nor a mask array")
    np.save(tmp_path / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases["object"] = (tmp_path / "object.npy", "neither a RISE mask recipe nor a mask array")
    whole = (tmp_path / "zeros.npy").read_bytes()
    (tmp_path / "truncated.npy").write_bytes(whole[: len(whole) // 2])
    cases["truncated"] = (tmp_path / "truncated.npy", "or truncated")
    (tmp_path / "blank.npy").write_bytes(b"")
    cases["blank"] = (tmp_path / "blank.npy", "or truncated")
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    cases["other_npz"] = (tmp_path / "other.npz", "expected the recipe")
    for name, recipe in (("nan_recipe", [5, 4, np.nan, 8, 8, 0]), ("short_recipe", [5, 4, 0.5]),
                         ("fractional_recipe", [5.5, 4, 0.5, 8, 8, 0])):
        np.savez(tmp_path / f"{name}.npz", **{rise_method.RECIPE_KEY: np.array(recipe)})
        cases[name] = (tmp_path / f"{name}.npz", "expected the recipe")
    np.savez(tmp_path / "zero_height.npz", **{rise_method.RECIPE_KEY: np.array([5, 4, 0.5, 0, 8, 0])})
    cases["zero_height"] = (tmp_path / "zero_height.npz", "height: expected a positive int")
    return cases


def test_load_masks_refuses_zero_nan_out_of_range_and_unreadable_masks(tmp_path):
    for path, said in _bad_mask_files(tmp_path).values():
        with pytest.raises(ValueError, match=said) as refused:
            load_masks(path)
        assert str(refused.value).startswith(str(path))  # names the file
    # what is refused above is fine when it is in [0, 1] (float rounding included)
    almost = np.full((2, 1, 8, 8), 0.5, np.float32)
    almost[0, 0, 0, 0], almost[1, 0, 0, 0] = 1 + 1e-7, -1e-7
    np.save(tmp_path / "almost.npy", almost)
    stored = load_masks(tmp_path / "almost.npy")
    assert stored.masks.min() == 0 and stored.masks.max() == 1


@pytest.mark.parametrize("p1", [float("nan"), float("inf"), 0.0, 1.5, True, "0.5"])
def test_nan_and_out_of_range_probabilities_are_refused(patch_model, p1):
    with pytest.raises(ValueError, match=r"p1: expected a number in \(0, 1\]"):
        RISE(patch_model, p1=p1)
    assert RISE(patch_model, n_masks=np.int64(3), s=np.int32(2), p1=np.float32(0.5)).p1 == 0.5





@pytest.mark.parametrize("weighting", ["dice", "probability", "per_pixel"])
@pytest.mark.parametrize("model,target", [(PatchModel(), None), (ThreeClassModel(), 2)])
def test_identical_explanations_for_batch_sizes_1_2_7(model, target, weighting):
    def explain(batch_size):
        return RISE(model, n_masks=23, s=5, p1=0.4, weighting=weighting, seed=3,
                    batch_size=batch_size, progress=False).explain(patch_image(), target)

    reference = explain(1)
    assert reference.info["model_passes"] == 24 and reference.info["batch_size"] == 1
    for batch_size in (2, 7):
        assert_same_explanation(explain(batch_size), reference)


def test_per_pixel_explanation_holds_the_scores_and_the_probability_map(patch_model):
    image = patch_image()
    per_pixel = RISE(patch_model, n_masks=30, s=4, weighting="per_pixel", batch_size=4,
                     progress=False).explain(image)
    probability = RISE(patch_model, n_masks=30, s=4, weighting="probability", batch_size=4,
                       progress=False).explain(image)
    assert np.array_equal(per_pixel.saliency, probability.saliency)
    scores = per_pixel.arrays["scores"]
    assert scores.shape == (30, 100) and scores.dtype == np.float32
    masks = RandomMasks(30, 4, 0.5, 48, 48, seed=0)
    pixels = per_pixel.arrays["target_pixels"].astype(bool)
    adapter = ModelAdapter(patch_model)
    with torch.no_grad():
        expected = np.stack([adapter(image[None] * masks.batch(i, i + 1))[0, 1].numpy()[pixels]
                             for i in range(30)])
    assert np.allclose(scores, expected, atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 2, 7])
def test_adapter_gives_the_explainers_numbers(patch_model, batch_size, tmp_path):
    explainer = SegmentationRISE(patch_model, (48, 48), CPU, batch_size=batch_size,
                                 progress=False)
    explainer.generate_masks(N=25, s=5, p1=0.5, seed=4)
    result = explainer(patch_image())
    rise = RISE(patch_model, n_masks=25, s=5, p1=0.5, seed=4, weighting="per_pixel",
                batch_size=batch_size, progress=False)
    direct = rise.explain(patch_image())
    assert_same_explanation(result.explanation, direct)
    assert np.array_equal(result.scores.numpy(), direct.arrays["scores"])
    from_explainer = rise.result(direct)
    for merge in ("max", "mean"):
        assert np.array_equal(getattr(result, merge)(), getattr(from_explainer, merge)())
    # the mean merge is RISE's probability weighting
    probability = RISE(patch_model, n_masks=25, s=5, p1=0.5, seed=4, weighting="probability",
                       batch_size=batch_size, progress=False).explain(patch_image())
    assert np.allclose(result.mean(), probability.saliency, rtol=1e-6, atol=1e-7)
    # stored masks (a plain array, as the original saved them) go through the same explainer
    np.save(tmp_path / "masks.npy", explainer.masks.batch(0, 25).numpy())
    explainer.load_masks(tmp_path / "masks.npy")
    stored = explainer(patch_image())
    assert np.array_equal(stored.scores.numpy(), result.scores.numpy())
    assert stored.explanation.parameters["s"] is None
    assert np.allclose(stored.max(), result.max() * 0.5 / stored.masks.p1, rtol=1e-6)


def test_result_needs_a_per_pixel_explanation_of_the_same_masks(patch_model):
    rise = RISE(patch_model, n_masks=6, s=4, weighting="per_pixel", progress=False)
    explanation = rise.explain(patch_image())
    with pytest.raises(ValueError, match="explanation: expected a RISE explanation with "
                                         "weighting 'per_pixel'"):
        rise.result(RISE(patch_model, n_masks=6, s=4, progress=False).explain(patch_image()))
    with pytest.raises(ValueError, match="explanation: made with the settings"):
        RISE(patch_model, n_masks=6, s=4, seed=1, weighting="per_pixel").result(explanation)
    with pytest.raises(ValueError, match=r"masks: made for 40 x 40, image is 48 x 48"):
        RISE(patch_model, masks=RandomMasks(6, 4, 0.5, 40, 40), progress=False).explain(patch_image())
    with pytest.raises(TypeError, match="masks: expected RandomMasks, StoredMasks or None, got "
                                        "ndarray"):
        RISE(patch_model, masks=np.ones((6, 1, 48, 48)))
    with pytest.raises(ValueError, match=r"scores: expected \(6, P\)"):
        RISEResult(torch.zeros(5, 3), RandomMasks(6, 4, 0.5, 48, 48), torch.zeros(48, 48, dtype=bool))
    with pytest.raises(ValueError, match="chunk_bytes: expected a positive int"):
        rise.result(explanation, chunk_bytes=0)


# ---------------------------------------------------------------------------------------------
# volumes and baselines (issue 13)


def test_image_masks_are_the_same_numbers_as_before_volumes_came():
    masks = RandomMasks(7, 5, 0.4, 37, 29, seed=11).batch(0, 7)
    assert masks.shape == (7, 1, 37, 29)
    assert float(masks.double().sum()) == pytest.approx(2791.8509409571707, rel=1e-12)
    np.testing.assert_array_equal(masks[3, 0, 10, :6].numpy(), np.array(
        [0.9477719664573669, 0.9202835559844971, 0.8927950859069824, 0.8653066754341125,
         0.8378182649612427, 0.8103298544883728], dtype=np.float32))


def linear_upsample(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear interpolation along ``axis`` to ``size`` samples, half-pixel centres
    (``align_corners=False``): sample x reads position (x + 0.5) * n / size - 0.5, clamped."""
    n = array.shape[axis]
    position = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, n - 1)
    weight = position - low
    shape = [1] * array.ndim
    shape[axis] = size
    return (np.take(array, low, axis) * (1 - weight).reshape(shape)
            + np.take(array, high, axis) * weight.reshape(shape))


@pytest.mark.parametrize("s", [3, (2, 4, 3)])
def test_volume_masks_are_trilinear_cells_cropped_at_their_shift(s):
    masks = RandomMasks(9, s, 0.5, 13, 11, seed=5, depth=10)
    cells_per_axis = s if isinstance(s, tuple) else (s,) * 3
    assert masks.shape == (10, 13, 11) and masks.cells.shape == (9, *cells_per_axis)
    made = masks.batch(0, 9)
    assert made.shape == (9, 1, 10, 13, 11)
    for i in range(9):
        smooth = masks.cells[i].numpy().astype(np.float64)
        for axis, (cells, size) in enumerate(zip(cells_per_axis, (10, 13, 11))):
            smooth = linear_upsample(smooth, axis, (cells + 1) * math.ceil(size / cells))
        shift = masks.shifts[i].tolist()
        assert all(0 <= o < math.ceil(n / c) for o, n, c in zip(shift, (10, 13, 11),
                                                                  cells_per_axis))
        expected = smooth[tuple(slice(o, o + n) for o, n in zip(shift, (10, 13, 11)))]
        np.testing.assert_allclose(made[i, 0].numpy(), expected, atol=1e-6)
    assert torch.equal(torch.cat([masks.batch(0, 4), masks.batch(4, 9)]), made)
    with pytest.raises(ValueError, match="s: expected a positive int or 3 of them"):
        RandomMasks(9, (2, 4), 0.5, 13, 11, depth=10)


class PatchModel3D(nn.Module):
    """One-channel logits of a volume: the cube (2:5)^3 is foreground iff the cube (8:12)^3
    of the input averages above ``level``."""

    def __init__(self, level=0.5):
        super().__init__()
        self.level = level

    def forward(self, x):
        brightness = x[:, 0, 8:12, 8:12, 8:12].mean((1, 2, 3))
        out = torch.full((x.shape[0], 1, *x.shape[2:]), -10.0)
        out[:, :, 2:5, 2:5, 2:5] = ((brightness - self.level) * 20)[:, None, None, None, None]
        return out


def patch_volume(value=1.0, background=0.0):
    volume = torch.full((1, 1, 14, 16, 15), background)
    volume[..., 8:12, 8:12, 8:12] = value
    return volume


def naive_volume_rise(model, volume, masks, baseline=0.0, per_pixel=False):
    """One masked volume per model call: ``volume * mask + baseline * (1 - mask)``."""
    adapter = ModelAdapter(model)
    with torch.no_grad():
        target = adapter(volume)[0, 1].numpy() > 0.5
    maps = np.zeros((int(target.sum()) if per_pixel else 1, *volume.shape[2:]))
    for i in range(len(masks)):
        mask = masks.batch(i, i + 1)
        with torch.no_grad():
            probabilities = adapter(volume * mask + baseline * (1 - mask))[0].numpy()
        mask = mask[0, 0].numpy()
        if per_pixel:
            maps += probabilities[1][target][:, None, None, None] * mask
        else:
            maps[0] += dice(probabilities[1] > 0.5, target) * mask
    return maps / (len(masks) * masks.p1)


def test_volume_rise_matches_a_naive_loop_and_peaks_at_the_patch():
    model, volume = PatchModel3D(), patch_volume()
    explanation = RISE(model, n_masks=60, s=(3, 4, 4), p1=0.5, progress=False).explain(volume)
    masks = RandomMasks(60, (3, 4, 4), 0.5, 16, 15, seed=0, depth=14)
    expected = naive_volume_rise(model, volume, masks)[0]
    assert explanation.saliency.shape == (14, 16, 15)
    np.testing.assert_allclose(explanation.saliency, expected, atol=1e-5)
    assert explanation.parameters["s"] == [3, 4, 4]
    assert explanation.saliency[8:12, 8:12, 8:12].mean() > 1.25 * explanation.saliency[:4, :4,
                                                                                       :4].mean()
    with pytest.raises(ValueError, match=r"s: expected an int or 3 ints"):
        RISE(model, n_masks=4, s=(3, 4), progress=False).explain(volume)


@pytest.mark.parametrize("weighting", ["dice", "per_pixel"])
def test_volume_maps_do_not_depend_on_the_batch_and_masks_are_made_per_batch(weighting):
    seen = []

    class Recording(PatchModel3D):
        def forward(self, x):
            seen.append(len(x))
            return super().forward(x)

    def explain(batch_size, model):
        return RISE(model, n_masks=23, s=3, weighting=weighting, batch_size=batch_size,
                    progress=False).explain(patch_volume())

    reference = explain(1, PatchModel3D())
    for batch_size in (2, 7):
        seen.clear()
        assert_same_explanation(explain(batch_size, Recording()), reference)
        assert max(seen) <= batch_size


def test_volume_per_pixel_maps_match_a_naive_loop_and_the_seed_adapter_says_it_is_2d(tmp_path):
    model, volume = PatchModel3D(), patch_volume()
    rise = RISE(model, n_masks=20, s=3, weighting="per_pixel", progress=False)
    result = rise.result(rise.explain(volume))
    expected = naive_volume_rise(model, volume, RandomMasks(20, 3, 0.5, 16, 15, depth=14),
                                 per_pixel=True)
    assert result.saliencies.shape == (27, 14, 16, 15)
    np.testing.assert_allclose(result.saliencies.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(result.max(), expected.max(0), atol=1e-5)
    np.testing.assert_allclose(result.mean(), expected.mean(0), atol=1e-5)
    explainer = SegmentationRISE(model, (16, 15), CPU, progress=False)
    explainer.generate_masks(5, 3, 0.5)
    with pytest.raises(ValueError, match=r"SegmentationRISE explains 2-D images \(seed 002\).*"
                                         r"for a volume use RISE"):
        explainer(volume)


@pytest.mark.parametrize("s,depth", [((2, 3, 4), 6), (3, 6), ((2, 5), None)])
def test_volume_and_per_axis_recipes_round_trip(tmp_path, s, depth):
    masks = RandomMasks(8, s, 0.3, 9, 7, seed=4, depth=depth)
    masks.save(tmp_path / "masks.npz")
    loaded = load_masks(tmp_path / "masks.npz")
    assert loaded.shape == masks.shape and loaded.s == masks.s
    assert torch.equal(loaded.batch(0, 8), masks.batch(0, 8))
    np.save(tmp_path / "array.npy", masks.batch(0, 8).numpy())
    stored = load_masks(tmp_path / "array.npy")
    assert stored.shape == masks.shape and torch.equal(stored.batch(0, 8), masks.batch(0, 8))
    np.savez(tmp_path / "bad.npz", **{rise_method.SHAPED_RECIPE_KEY: np.array([8, 0.3, 4, 4, 1])})
    with pytest.raises(ValueError, match="expected the recipe"):
        load_masks(tmp_path / "bad.npz")


def naive_masked(image, masks, baseline):
    return [image * masks.batch(i, i + 1) + baseline * (1 - masks.batch(i, i + 1))
            for i in range(len(masks))]


@pytest.mark.parametrize("baseline,value", [(0.0, 0.0), ("min", -2.0), (-1.5, -1.5)])
def test_masked_images_take_the_baseline(baseline, value):
    image = torch.full((1, 48, 48), -2.0)
    image[:, 30:38, 30:38] = -1.0  # z-scored: everything below 0
    seen = []

    class Normalised(PatchModel):
        def forward(self, x):
            seen.append(x.clone())
            return super().forward(x + 2)  # bright patch iff it averages above -1.5

    explanation = RISE(Normalised(), n_masks=12, s=4, baseline=baseline, batch_size=5,
                       progress=False).explain(image)
    masks = RandomMasks(12, 4, 0.5, 48, 48)
    expected = torch.cat(naive_masked(image[None], masks, value))
    torch.testing.assert_close(torch.cat(seen[1:]), expected, rtol=0, atol=1e-6)
    assert explanation.info["model_passes"] == 13
