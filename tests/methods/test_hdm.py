import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from oracles import PatchModel, ThreeClassModel, assert_same_explanation, patch_image, patch_segment
from PIL import Image
from skimage.metrics import hausdorff_distance as skimage_hausdorff
from torch import nn

from interpret_segmentation import HDM, Target, hdm
from interpret_segmentation.analysis.metrics import hausdorff_distance
from interpret_segmentation.core import ModelAdapter, normalize_map
from interpret_segmentation.methods.hdm import CircleGrid, HDMResult, occlusion_masks

CPU = torch.device("cpu")


@settings(max_examples=150, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 25), st.integers(1, 25)), elements=st.booleans()),
       st.data())
def test_hausdorff_matches_skimage(a, data):
    b = data.draw(arrays(bool, a.shape, elements=st.booleans()))
    ours = hausdorff_distance(a, b)
    assert ours == hausdorff_distance(b, a)  # symmetric
    if a.any() and b.any():
        assert ours == pytest.approx(skimage_hausdorff(a, b), abs=1e-9)
    elif a.any() or b.any():
        assert ours == pytest.approx(math.hypot(*a.shape))  # documented finite value
    else:
        assert ours == 0.0


def naive_distances(model, image, segment, circle_size, offset, threshold=0.5):
    """The original's way: one occluded image per model call, distances one by one."""
    height, width = image.shape[-2:]
    grid = CircleGrid(height, width, circle_size, offset)
    adapter = ModelAdapter(model)
    out = np.empty(len(grid))
    for k in range(len(grid)):
        mask = occlusion_masks(grid, torch.tensor([k]), normalize=False)[0]
        occluded = torch.minimum(image, torch.where(mask < 1, 0.0, image.max() + 1))
        with torch.no_grad():
            binary = adapter(occluded[None])[0, 1].numpy() > threshold
        seg = segment.numpy() > 0
        if binary.any() and seg.any():
            out[k] = skimage_hausdorff(binary, seg)
        else:
            out[k] = 0.0 if binary.any() == seg.any() else math.hypot(height, width)
    return out.reshape(grid.rows, grid.cols)


def legacy(model, image, segment, circle_size=7, offset=3, **options):
    height, width = image.shape[-2:]
    explainer = hdm.HausdorffDistanceMasks(width, height, progress=False, **options)
    explainer.generate_masks(circle_size=circle_size, offset=offset)
    return explainer.explain(model, image, segment, CPU)


def test_distances_match_naive_loop_and_peak_at_the_patch(patch_model):
    image, segment = patch_image(), patch_segment()
    result = legacy(patch_model, image, segment)
    expected = naive_distances(patch_model, image, segment, 7, 3)
    assert np.allclose(result.distances(hdm.RAW), expected)
    worse = result.distances(hdm.WORSE_ONLY)
    assert result.baseline == 0.0 and worse.max() > 0
    row, col = np.unravel_index(worse.argmax(), worse.shape)
    centre = result.grid.centres(torch.tensor([row * result.grid.cols + col]))
    assert 30 <= int(centre[0]) < 38 and 30 <= int(centre[1]) < 38
    # every circle that changes the output covers the patch
    rows, cols = result.grid.centres(torch.arange(len(result.grid)))
    changed = (result.distances(hdm.RAW) > 0).ravel()
    near = (rows - 33.5).abs().numpy() <= 3.5 + 3.5
    assert not (changed & ~near).any()


@pytest.mark.parametrize("batch_size", [1, 2, 7])
def test_same_result_for_batch_sizes(patch_model, batch_size):
    image, segment = patch_image(), patch_segment()
    reference = legacy(patch_model, image, segment, batch_size="auto").distances(hdm.RAW)
    result = legacy(patch_model, image, segment, batch_size=batch_size)
    assert np.array_equal(result.distances(hdm.RAW), reference)


def test_result_types():
    distances = np.array([[1.0, 4.0], [2.0, 6.0]])
    result = HDMResult(distances, 2.0, 10, 10, 5, 5)
    assert np.array_equal(result.distances(hdm.RAW), distances)
    assert np.array_equal(result.distances(hdm.BETTER_ONLY), [[1.0, 0.0], [0.0, 0.0]])
    assert np.array_equal(result.distances(hdm.WORSE_ONLY), [[0.0, 2.0], [0.0, 4.0]])
    with pytest.raises(ValueError, match="result_type"):
        result.distances(7)
    picture = result.circle_map(hdm.WORSE_ONLY, color_map="Reds")
    assert isinstance(picture, Image.Image) and picture.size == (10, 10) and picture.mode == "RGB"
    # the circle with the largest distance gets the colour map's top colour
    top = np.array(picture)[7, 7]
    assert np.allclose(top, np.array(__import__("matplotlib").colormaps["Reds"](1.0)[:3]) * 255, atol=1)


def test_non_square_size_not_multiple_of_offset_and_channel():
    model = PatchModel(channel=1)
    image = patch_image(50, 61, channels=3)
    segment = patch_segment(50, 61)
    result = legacy(model, image, segment, circle_size=10, offset=4)
    assert result.distances(hdm.RAW).shape == (13, 16)
    assert result.circle_map(hdm.RAW).size == (61, 50)
    assert result.distances(hdm.WORSE_ONLY).max() > 0
    explainer = hdm.HausdorffDistanceMasks(61, 50, progress=False)
    explainer.generate_masks(10, 4)
    # occluding channel 0 only: the model reads channel 1, so nothing changes
    untouched = explainer.explain(model, image, segment, CPU, channel=0)
    assert np.all(untouched.distances(hdm.RAW) == untouched.baseline)
    only = explainer.explain(model, image, segment, CPU, channel=1)
    assert np.array_equal(only.distances(hdm.RAW), result.distances(hdm.RAW))


def test_overridable_steps(patch_model):
    class Counting(hdm.HausdorffDistanceMasks):
        def calculate_distance(self, output, segment):
            return float(output.sum())

        def apply_mask(self, image, mask):
            return torch.ones(len(mask), *image.shape[1:])  # every occlusion: a white image

    explainer = Counting(48, 48, progress=False)
    explainer.generate_masks(circle_size=9, offset=8)
    result = explainer.explain(patch_model, patch_image(), patch_segment(), CPU)
    adapter = ModelAdapter(patch_model)
    with torch.no_grad():
        white = float(adapter(torch.ones(1, 1, 48, 48))[0, 1].sum())
        original = float(adapter(patch_image()[None])[0, 1].sum())
    assert np.allclose(result.distances(hdm.RAW), white)
    assert result.baseline == pytest.approx(original)


def test_mode_and_hooks_unchanged_also_after_error(patch_model):
    patch_model.train()
    hooks_before = dict(patch_model._forward_hooks)
    legacy(patch_model, patch_image(), patch_segment())
    assert patch_model.training and patch_model.norm.training
    assert dict(patch_model._forward_hooks) == hooks_before

    class Failing(PatchModel):
        calls = 0

        def forward(self, x):
            Failing.calls += 1
            if Failing.calls > 2:
                raise RuntimeError("boom")
            return super().forward(x)

    failing = Failing()
    failing.train()
    with pytest.raises(RuntimeError, match="boom"):
        legacy(failing, patch_image(), patch_segment())
    assert failing.training and failing.norm.training


def test_common_entry_point_multiclass():
    model = ThreeClassModel()
    explanation = HDM(model, circle_size=7, offset=3, progress=False).explain(patch_image(), 2)
    assert explanation.method == "hdm" and explanation.target_class == 2
    assert explanation.saliency.shape == (48, 48) and explanation.saliency.dtype == np.float32
    y, x = np.unravel_index(explanation.saliency.argmax(), explanation.saliency.shape)
    assert 27 <= y < 41 and 27 <= x < 41
    assert explanation.arrays["target_pixels"].sum() == 100
    result = HDM.result(explanation)
    assert np.array_equal(result.distances(hdm.RAW), explanation.arrays["distances"])
    assert np.isfinite(explanation.saliency).all() and np.isfinite(explanation.arrays["worse_only"]).all()
    # the legacy class gives the same distances for the same segment
    legacy_result = legacy(PatchModel(), patch_image(), torch.from_numpy(
        explanation.arrays["target_pixels"]))
    assert np.array_equal(legacy_result.distances(hdm.RAW), result.distances(hdm.RAW))


def test_empty_output_gives_documented_finite_distance():
    class Nothing(nn.Module):
        def forward(self, x):
            return torch.full_like(x[:, :1], -5.0)

    result = legacy(Nothing(), patch_image(), patch_segment())
    assert np.all(result.distances(hdm.RAW) == math.hypot(48, 48))


def test_bad_input(patch_model):
    explainer = hdm.HausdorffDistanceMasks(48, 48, progress=False)
    with pytest.raises(RuntimeError, match="generate_masks"):
        explainer.explain(patch_model, patch_image(), patch_segment(), CPU)
    for kwargs, name in [({"circle_size": 0, "offset": 5}, "circle_size"),
                         ({"circle_size": 5, "offset": -1}, "offset"),
                         ({"circle_size": 5.5, "offset": 2}, "circle_size")]:
        with pytest.raises(ValueError, match=name):
            explainer.generate_masks(**kwargs)
    explainer.generate_masks(7, 3)
    with pytest.raises(ValueError, match=r"segment: expected a mask of the image's size \(48, 48\), "
                                         r"got \(40, 48\)"):
        explainer.explain(patch_model, patch_image(), torch.zeros(40, 48), CPU)
    with pytest.raises(ValueError, match=r"image: expected height x width 48 x 48"):
        explainer.explain(patch_model, patch_image(40, 48), patch_segment(), CPU)
    with pytest.raises(ValueError, match="image: expected shape"):
        explainer.explain(patch_model, torch.zeros(2, 2, 1, 48, 48), patch_segment(), CPU)
    nan_image = patch_image()
    nan_image[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="image: contains NaN"):
        explainer.explain(patch_model, nan_image, patch_segment(), CPU)
    with pytest.raises(ValueError, match="channel"):
        explainer.explain(patch_model, patch_image(), patch_segment(), CPU, channel=3)

    class Scalar(nn.Module):
        def forward(self, x):
            return x.mean()

    with pytest.raises(ValueError, match="model output"):
        explainer.explain(Scalar(), patch_image(), patch_segment(), CPU)
    with pytest.raises(ValueError, match="image_width"):
        hdm.HausdorffDistanceMasks(0, 48)
    with pytest.raises(ValueError, match="offset"):
        HDM(patch_model, offset=0)


def test_circles_that_change_nothing_are_skipped_with_the_same_result(patch_model):
    image = patch_image()  # black except the 8 x 8 patch
    explainer = HDM(patch_model, circle_size=7, offset=3, progress=False)
    skipping = explainer.explain(image)
    explainer.skip_unchanged = False
    running = explainer.explain(image)
    assert np.array_equal(skipping.arrays["distances"], running.arrays["distances"])
    grid = CircleGrid(48, 48, 7, 3)
    rows, cols = grid.centres(torch.arange(len(grid)))
    # a circle changes the image only where it overlaps the patch (rows and columns 30..37)
    touching = int((grid.inside(torch.arange(len(grid)))[:, 30:38, 30:38]).flatten(1).any(1).sum())
    assert skipping.info["model_passes"] == touching + 1
    assert skipping.info["unchanged_skipped"] == len(grid) - touching
    assert running.info["model_passes"] == len(grid) + 1


def test_overridden_occlusion_is_checked_circle_by_circle(patch_model):
    class SameOcclusion(hdm.HausdorffDistanceMasks):
        def apply_mask(self, image, mask):
            return torch.where(mask < 1, torch.clamp(image, max=0.0), image)

    image, segment = patch_image(), patch_segment()
    default = legacy(patch_model, image, segment)
    explainer = SameOcclusion(48, 48, progress=False)
    explainer.generate_masks(circle_size=7, offset=3)
    overridden = explainer.explain(patch_model, image, segment, CPU)
    assert np.array_equal(overridden.distances(hdm.RAW), default.distances(hdm.RAW))
    assert (overridden.explanation.info["model_passes"]
            == default.explanation.info["model_passes"] < len(default.grid))


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), -float("inf"), 1.0, -0.5,
                                       True, "0.5", None])
def test_nan_inf_and_out_of_range_thresholds_are_refused(patch_model, threshold):
    if threshold is not None:  # HDM's default: the class's segment, no threshold
        with pytest.raises(ValueError, match=r"^threshold: expected a number in \[0, 1\), got"):
            HDM(patch_model, threshold=threshold)
    with pytest.raises(ValueError, match=r"^threshold: expected a number in \[0, 1\), got"):
        hdm.HausdorffDistanceMasks(48, 48, threshold=threshold)


def test_bad_channel_and_numpy_sizes(patch_model):
    for channel in (float("nan"), -2, 1.0, True):
        with pytest.raises(ValueError, match="channel: expected an int >= -1"):
            HDM(patch_model, channel=channel)
    explainer = HDM(patch_model, circle_size=np.int64(9), offset=np.int32(8),
                    threshold=np.float32(0.5), progress=False)
    assert (explainer.circle_size, explainer.offset, explainer.threshold) == (9, 8, 0.5)





@pytest.mark.parametrize("model,target", [(PatchModel(), None), (ThreeClassModel(), 2)])
def test_identical_explanations_for_batch_sizes_1_2_7(model, target):
    def explain(batch_size, **hooks):
        return HDM(model, circle_size=7, offset=3, batch_size=batch_size, progress=False,
                   **hooks).explain(patch_image(), target)

    reference = explain(1)
    assert reference.info["batch_size"] == 1
    for batch_size in (2, 7):
        assert_same_explanation(explain(batch_size), reference)
    # also with the occlusion given as a hook (its circles found by building each image)
    hooked = explain(1, occlude=hdm.occlude_minimum)
    for batch_size in (2, 7):
        assert_same_explanation(explain(batch_size, occlude=hdm.occlude_minimum), hooked)
    assert np.array_equal(hooked.arrays["distances"], reference.arrays["distances"])


def skimage_distance(output, segment):
    """The Hausdorff distance of the seed, written plainly with scikit-image."""
    binary = output > 0.5
    if binary.any() and segment.any():
        return skimage_hausdorff(binary, segment)
    return 0.0 if binary.any() == segment.any() else math.hypot(*segment.shape)


def test_hooks_replace_the_steps_and_give_the_defaults_numbers(patch_model):
    image = patch_image()
    default = HDM(patch_model, circle_size=7, offset=3, progress=False).explain(image)
    hooked = HDM(patch_model, circle_size=7, offset=3, progress=False, occlude=hdm.occlude_minimum,
                 distance=skimage_distance).explain(image)
    assert np.allclose(hooked.arrays["distances"], default.arrays["distances"])
    assert hooked.info["model_passes"] == default.info["model_passes"]  # the same circles skipped
    assert hooked.parameters == {**default.parameters, "occlude": "occlude_minimum",
                                 "distance": "skimage_distance"}
    # a distance hook sees the class probabilities (H, W) and the target pixels (H, W) bool
    seen = []
    HDM(patch_model, circle_size=24, offset=24, progress=False,
        distance=lambda output, segment: seen.append((output, segment)) or 0.0).explain(image)
    assert all(o.shape == s.shape == (48, 48) and s.dtype == bool and 0 <= o.min() <= o.max() <= 1
               for o, s in seen)
    assert len(seen) == 1 + 1  # the unoccluded image and the one circle that covers the patch
    with pytest.raises(TypeError, match="occlude: expected a callable or None, got int"):
        HDM(patch_model, occlude=3)


def test_adapter_gives_the_explainers_numbers(patch_model):
    image, segment = patch_image(50, 61, channels=2), patch_segment(50, 61)
    for channel in (-1, 0):
        explainer = hdm.HausdorffDistanceMasks(61, 50, progress=False)
        explainer.generate_masks(circle_size=9, offset=4)
        result = explainer.explain(patch_model, image, segment, CPU, channel=channel)
        direct = HDM(patch_model, circle_size=9, offset=4, channel=channel, progress=False,
                     threshold=0.5, occlude=hdm.occlude_minimum).explain(image, Target(1, segment))
        assert_same_explanation(result.explanation, direct)
        assert np.array_equal(result.distances(hdm.RAW), direct.arrays["distances"])
        assert result.baseline == direct.info["baseline_distance"]
        assert HDM.result(direct).circle_map(hdm.WORSE_ONLY).tobytes() == \
            result.circle_map(hdm.WORSE_ONLY).tobytes()


def test_subclass_overrides_are_the_explainers_hooks(patch_model):
    class Clamping(hdm.HausdorffDistanceMasks):
        def apply_mask(self, image, mask):
            return torch.where(mask < 1, torch.clamp(image, max=-1.0), image)

        def calculate_distance(self, output, segment):
            return float(np.abs((output > 0.5) ^ segment).sum())  # pixels that differ

    explainer = Clamping(48, 48, progress=False)
    explainer.generate_masks(circle_size=7, offset=3)
    hdm_explainer = explainer.explainer(patch_model)
    assert hdm_explainer.occlude == explainer.apply_mask
    assert hdm_explainer.distance == explainer.calculate_distance
    plain = hdm.HausdorffDistanceMasks(48, 48, progress=False)
    plain.generate_masks(circle_size=7, offset=3)
    assert plain.explainer(patch_model).occlude is hdm.occlude_minimum  # the seed's occluder
    assert plain.explainer(patch_model).distance is None  # the fast Hausdorff distance
    result = explainer.explain(patch_model, patch_image(), patch_segment(), CPU)
    direct = HDM(patch_model, circle_size=7, offset=3, progress=False, threshold=0.5,
                 occlude=explainer.apply_mask, distance=explainer.calculate_distance).explain(
        patch_image(), Target(1, patch_segment()))
    assert_same_explanation(result.explanation, direct)
    # a circle of -1 over the middle of the patch: the 100 output pixels vanish
    assert result.baseline == 0 and result.distances(hdm.RAW).max() == 100


def test_circle_map_scales_with_the_one_normaliser():
    distances = np.array([[1.0, 4.0], [2.0, 6.0]])
    result = HDMResult(distances, 2.0, 10, 10, 5, 5)
    import matplotlib

    for kind in hdm.RESULT_TYPES:
        painted = result.grid.render(normalize_map(result.distances(kind)), reduce="max")
        expected = matplotlib.colormaps["Blues"](np.nan_to_num(painted))[..., :3]
        expected[np.isnan(painted)] = 0
        assert np.array_equal(np.array(result.circle_map(kind, color_map="Blues")),
                              (expected * 255).round().astype(np.uint8))
    constant = HDMResult(np.full((2, 2), 3.0), 3.0, 10, 10, 5, 5)
    assert np.array(constant.circle_map(hdm.WORSE_ONLY)).max() == round(
        matplotlib.colormaps["Reds"](0.0)[0] * 255)  # constant distances: the map's lowest colour


# ---------------------------------------------------------------------------------------------
# volumes, spacing, the class's segment and baselines (issue 13)


class PatchModel3D(nn.Module):
    """One-channel logits of a volume: the cube ``out_box`` is foreground iff the cube
    ``in_box`` of the input is bright on average (above ``level``). Nothing else matters."""

    def __init__(self, in_box=(8, 12), out_box=(2, 5), level=0.5):
        super().__init__()
        self.in_box, self.out_box, self.level = in_box, out_box, level
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x):
        low, high = self.in_box
        brightness = x[:, 0, low:high, low:high, low:high].mean((1, 2, 3))
        out = torch.full((x.shape[0], 1, *x.shape[2:]), -10.0)
        low, high = self.out_box
        out[:, :, low:high, low:high, low:high] = ((brightness - self.level)
                                                   * self.scale)[:, None, None, None, None]
        return out


def patch_volume(shape=(14, 16, 15)):
    volume = torch.zeros(1, 1, *shape)
    volume[..., 8:12, 8:12, 8:12] = 1.0
    return volume


def brute_force_hausdorff(a, b, spacing):
    """Max over both directions of the distance to the nearest point of the other set, from
    every pair of points (coordinates scaled by the spacing)."""
    from scipy.spatial.distance import cdist

    points_a = np.argwhere(a) * np.asarray(spacing)
    points_b = np.argwhere(b) * np.asarray(spacing)
    pairs = cdist(points_a, points_b)
    return max(pairs.min(1).max(), pairs.min(0).max())


def naive_volume_distances(model, volume, circle_size, offset, spacing, baseline=0.0):
    """One occluded volume per model call (a ball of ``baseline`` drawn voxel by voxel),
    distances by brute force."""
    shape = volume.shape[2:]
    grid = hdm.BallGrid(shape, circle_size, offset)
    adapter = ModelAdapter(model)
    with torch.no_grad():
        target = adapter(volume)[0, 1].numpy() > 0.5
    coordinates = np.indices(shape)
    distances = []
    for centre in zip(*(c.tolist() for c in grid.centres(torch.arange(len(grid))))):
        squared = sum((coordinates[axis] - centre[axis]) ** 2 for axis in range(3))
        ball = torch.from_numpy(squared <= (circle_size / 2) ** 2)
        occluded = torch.where(ball, torch.tensor(baseline), volume)
        with torch.no_grad():
            output = adapter(occluded)[0, 1].numpy() > 0.5
        if output.any() and target.any():
            distances.append(brute_force_hausdorff(output, target, spacing))
        else:
            distances.append(0.0 if output.any() == target.any()
                             else math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))
    return np.array(distances).reshape(grid.counts)


@pytest.mark.parametrize("shape,circle_size,offset", [((9, 11, 10), 5, (3, 4, 2)),
                                                      ((7, 8, 6), 4, 3), ((5, 6, 7), 1, 2)])
def test_balls_are_the_voxels_within_half_the_diameter_of_the_grid_points(shape, circle_size,
                                                                          offset):
    grid = hdm.BallGrid(shape, circle_size, offset)
    steps = offset if isinstance(offset, tuple) else (offset,) * 3
    assert grid.counts == tuple(math.ceil(n / o) for n, o in zip(shape, steps))
    index = torch.arange(len(grid))
    inside = grid.inside(index).numpy()
    assert inside.shape == (len(grid), *shape)
    coordinates = np.indices(shape)
    for k, centre in enumerate(zip(*(c.tolist() for c in grid.centres(index)))):
        cell = np.unravel_index(k, grid.counts)  # row-major numbering
        assert centre == tuple(min(c * o + o // 2, n - 1)
                               for c, o, n in zip(cell, steps, shape))
        squared = sum((coordinates[axis] - centre[axis]) ** 2 for axis in range(3))
        assert np.array_equal(inside[k], squared <= (circle_size / 2) ** 2)
    lone = hdm.BallGrid((21, 21, 21), circle_size, 21)  # one ball, centred at voxel 10
    reach = circle_size // 2
    window = (slice(10 - reach, 11 + reach),) * 3
    assert np.array_equal(lone.ball(), lone.inside(torch.arange(1))[0].numpy()[window])
    assert lone.inside(torch.arange(1)).sum() == lone.ball().sum()  # nothing outside the window
    assert hdm.CircleGrid(20, 30, 7, (2, 5)) == hdm.BallGrid((20, 30), 7, (2, 5))


@settings(max_examples=60, deadline=None)
@given(st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)),
       st.integers(1, 7), st.integers(1, 4), st.data())
def test_touching_balls_are_exactly_those_over_a_changeable_voxel(shape, circle_size, offset,
                                                                   data):
    """The skip-unchanged fast path: a ball is run iff some voxel under it can change."""
    changeable = data.draw(arrays(bool, shape, elements=st.booleans()))
    grid = hdm.BallGrid(shape, circle_size, offset)
    inside = grid.inside(torch.arange(len(grid))).numpy()
    expected = np.flatnonzero((inside & changeable).reshape(len(grid), -1).any(1))
    assert grid.touching(changeable).tolist() == expected.tolist()


def test_render_paints_each_ball_with_its_value_in_3d():
    grid = hdm.BallGrid((7, 9, 8), 5, 3)
    values = np.random.default_rng(0).random(grid.counts)
    inside = grid.inside(torch.arange(len(grid))).numpy()
    painted = np.where(inside, values.reshape(-1, 1, 1, 1), -np.inf)
    expected_max = painted.max(0)
    expected_max[~inside.any(0)] = np.nan
    np.testing.assert_allclose(grid.render(values, "max"), expected_max)
    counts = inside.sum(0)
    expected_mean = np.where(counts > 0, (inside * values.reshape(-1, 1, 1, 1)).sum(0)
                             / np.maximum(counts, 1), 0)
    np.testing.assert_allclose(grid.render(values, "mean"), expected_mean)


@settings(max_examples=40, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(1, 8)),
              elements=st.booleans()), st.data())
def test_volume_hausdorff_matches_skimage(a, data):
    b = data.draw(arrays(bool, a.shape, elements=st.booleans()))
    ours = hausdorff_distance(a, b)
    assert ours == hausdorff_distance(b, a)
    if a.any() and b.any():
        assert ours == pytest.approx(skimage_hausdorff(a, b), abs=1e-9)
    elif a.any() or b.any():
        assert ours == pytest.approx(math.sqrt(sum(n * n for n in a.shape)))  # the diagonal
    else:
        assert ours == 0.0


def test_hdm_on_a_volume_matches_a_naive_loop_with_anisotropic_spacing():
    model, volume = PatchModel3D(), patch_volume()
    spacing = (2.5, 1.0, 0.7)
    explanation = HDM(model, circle_size=5, offset=(4, 3, 3), spacing=spacing,
                      progress=False).explain(volume)
    expected = naive_volume_distances(model, volume, 5, (4, 3, 3), spacing)
    assert explanation.arrays["distances"].shape == (4, 6, 5)
    np.testing.assert_allclose(explanation.arrays["distances"], expected, rtol=1e-12)
    assert explanation.saliency.shape == explanation.arrays["worse_only"].shape == (14, 16, 15)
    worse = explanation.arrays["worse_only"]
    assert worse.max() > 0 and worse[:6].max() == 0  # only balls near the patch (8..11) hurt
    assert np.unravel_index(explanation.saliency.argmax(), (14, 16, 15)) >= (6, 6, 6)
    # every ball that changes the output covers the patch
    grid = hdm.BallGrid((14, 16, 15), 5, (4, 3, 3))
    covers = grid.inside(torch.arange(len(grid)))[:, 8:12, 8:12, 8:12].flatten(1).any(1)
    assert not ((expected.ravel() > 0) & ~covers.numpy()).any()
    # the empty output's distance is the volume's diagonal in physical units
    assert expected.max() == pytest.approx(math.sqrt((14 * 2.5) ** 2 + 16 ** 2 + (15 * 0.7) ** 2))
    result = HDM.result(explanation)
    assert result.depth == 14 and np.array_equal(result.distances(hdm.RAW), expected)
    with pytest.raises(ValueError, match="circle_map: a picture of a 2-D image"):
        result.circle_map(hdm.RAW)


def test_volume_spacing_scales_distances_and_is_checked():
    model, volume = PatchModel3D(), patch_volume()
    unit = HDM(model, circle_size=5, offset=4, progress=False).explain(volume)
    doubled = HDM(model, circle_size=5, offset=4, spacing=2.0, progress=False).explain(volume)
    np.testing.assert_allclose(doubled.arrays["distances"], 2 * unit.arrays["distances"])
    with pytest.raises(ValueError, match="offset: expected an int or 3 ints"):
        HDM(model, offset=(2, 2), progress=False).explain(volume)
    with pytest.raises(ValueError, match=r"offset\[1\]: expected a positive int"):
        HDM(model, offset=(2, 0, 2))


@pytest.mark.parametrize("batch_size", [1, 2, 7])
def test_volume_results_do_not_depend_on_the_batch_and_inputs_stay_within_it(batch_size):
    sizes = []

    class Recording(PatchModel3D):
        def forward(self, x):
            sizes.append(len(x))
            return super().forward(x)

    explain = HDM(Recording(), circle_size=5, offset=3, batch_size=batch_size, progress=False)
    explanation = explain.explain(patch_volume())
    reference = HDM(PatchModel3D(), circle_size=5, offset=3, batch_size=3,
                    progress=False).explain(patch_volume())
    assert_same_explanation(explanation, reference)
    assert max(sizes) <= batch_size  # one batch of occluded volumes at a time


class LowConfidenceThreeClasses(nn.Module):
    """Softmax logits (0, 0, z) on the patch model's output box, z = 0.6 (brightness - 0.5):
    class 2 is the arg-max there when the patch is bright, with probability e^.3 / (2 + e^.3)
    ~ 0.40 < 0.5; elsewhere class 2 is far below."""

    def forward(self, x):
        brightness = x[:, 0, 30:38, 30:38].mean((1, 2))
        out = torch.zeros(x.shape[0], 3, *x.shape[2:])
        out[:, 2] = -10.0
        out[:, 2, 5:15, 5:15] = (0.6 * (brightness - 0.5))[:, None, None]
        return out


def test_multiclass_segment_is_the_arg_max_not_probability_above_a_half():
    model, image = LowConfidenceThreeClasses(), patch_image()
    probabilities = ModelAdapter(model)(image[None])
    assert 0.35 < float(probabilities[0, 2, 10, 10]) < 0.5  # the arg-max, below 0.5
    explanation = HDM(model, circle_size=7, offset=3, progress=False).explain(image, 2)
    assert explanation.arrays["target_pixels"].sum() == 100
    assert explanation.info["baseline_distance"] == 0.0  # nothing occluded: on target
    worse = explanation.arrays["worse_only"]
    assert worse.max() > 0
    y, x = np.unravel_index(worse.argmax(), worse.shape)
    assert 27 <= y < 41 and 27 <= x < 41
    # seed 002's threshold is still there, for one-channel models, when asked for
    thresholded = HDM(model, circle_size=7, offset=3, threshold=0.5, progress=False).explain(
        image, 2)
    assert thresholded.info["baseline_distance"] == pytest.approx(math.hypot(48, 48))


class NearMinusOne(nn.Module):
    """One-channel logits of a z-scored image: the box (5:15, 5:15) is foreground iff the
    patch (30:38, 30:38) averages within 0.25 of -1. Every input value is negative."""

    def forward(self, x):
        mean = x[:, 0, 30:38, 30:38].mean((1, 2))
        out = torch.full((x.shape[0], 1, *x.shape[2:]), -10.0)
        out[:, :, 5:15, 5:15] = ((0.25 - (mean + 1).abs()) * 40)[:, None, None, None]
        return out


def z_scored_image():
    image = torch.full((1, 48, 48), -2.0)
    image[:, 30:38, 30:38] = -1.0
    return image


def test_default_baseline_hides_negative_pixels_and_seed_adapter_keeps_and_warns():
    model, image = NearMinusOne(), z_scored_image()
    explanation = HDM(model, circle_size=7, offset=3, progress=False).explain(image)
    assert explanation.info["unchanged_skipped"] == 0  # every pixel differs from 0
    worse = explanation.arrays["worse_only"]
    y, x = np.unravel_index(worse.argmax(), worse.shape)
    assert worse.max() > 0 and 27 <= y < 41 and 27 <= x < 41
    # seed 002's min(image, 0) leaves every pixel as it is: the same all-zero map as before,
    # with a warning that names normalize and the occluder
    legacy_explainer = hdm.HausdorffDistanceMasks(48, 48, progress=False)
    legacy_explainer.generate_masks(7, 3)
    with pytest.warns(UserWarning, match=r"100% of the occluded pixels.*normalize=False.*"
                                         r"min\(image, 0\)"):
        result = legacy_explainer.explain(model, image, patch_segment(), CPU)
    assert result.explanation.info["model_passes"] == 1
    assert np.all(result.distances(hdm.RAW) == result.baseline)


def test_seed_adapter_is_silent_on_images_in_0_1(patch_model, recwarn):
    legacy(patch_model, patch_image(), patch_segment())  # black is 0: hidden, not below
    assert not [w for w in recwarn if "occluded pixels" in str(w.message)]


def naive_replacement_distances(model, image, circle_size, offset, baseline):
    grid = CircleGrid(*image.shape[-2:], circle_size, offset)
    adapter = ModelAdapter(model)
    with torch.no_grad():
        target = adapter(image[None])[0, 1].numpy() > 0.5
    out = []
    for k in range(len(grid)):
        inside = grid.inside(torch.tensor([k]))[0]
        occluded = torch.where(inside, torch.as_tensor(baseline, dtype=torch.float32), image)
        with torch.no_grad():
            output = adapter(occluded[None])[0, 1].numpy() > 0.5
        out.append(hausdorff_distance(output, target))
    return np.array(out).reshape(grid.rows, grid.cols)


@pytest.mark.parametrize("baseline", [0.0, -1.0, "min", 0.4])
def test_circles_take_the_baseline_and_skipping_stays_exact(baseline):
    model = NearMinusOne()
    image = z_scored_image()
    image[:, :, :10] = 0.4  # a band at 0.4: balls inside it leave the image as it was there
    explanation = HDM(model, circle_size=7, offset=3, baseline=baseline,
                      progress=False).explain(image)
    value = {"min": -2.0}.get(baseline, baseline)
    expected = naive_replacement_distances(model, image, 7, 3, value)
    np.testing.assert_array_equal(explanation.arrays["distances"], expected)
    run_all = HDM(model, circle_size=7, offset=3, baseline=baseline, skip_unchanged=False,
                  progress=False).explain(image)
    np.testing.assert_array_equal(run_all.arrays["distances"], expected)
    grid = CircleGrid(48, 48, 7, 3)
    inside = grid.inside(torch.arange(len(grid)))
    changes = (inside & (image[0] != value)).flatten(1).any(1)
    assert explanation.info["model_passes"] == int(changes.sum()) + 1


def test_normalize_fills_with_minus_one_and_refuses_another_baseline(patch_model):
    image = patch_image() * 2 - 1  # in [-1, 1]
    normalized = HDM(patch_model, circle_size=7, offset=3, normalize=True,
                     progress=False).explain(image)
    explicit = HDM(patch_model, circle_size=7, offset=3, baseline=-1.0,
                   progress=False).explain(image)
    np.testing.assert_array_equal(normalized.arrays["distances"], explicit.arrays["distances"])
    assert normalized.info["model_passes"] == explicit.info["model_passes"] < len(
        CircleGrid(48, 48, 7, 3))
    with pytest.raises(ValueError, match="normalize and baseline"):
        HDM(patch_model, normalize=True, baseline="mean")


def test_gpu_distance_path_gives_the_cpu_numbers(monkeypatch):
    """On a GPU the distances of a batch are measured there; forced here on the CPU."""
    from interpret_segmentation.analysis.metrics import HausdorffToReference

    model, volume, spacing = PatchModel3D(), patch_volume(), (2.5, 1.0, 0.7)
    cpu = HDM(model, circle_size=5, offset=3, spacing=spacing, progress=False).explain(volume)
    batched = HausdorffToReference.distances
    calls = []

    def on_device(self, masks, on_device=None):
        calls.append(len(masks))
        return batched(self, masks, on_device=True)

    monkeypatch.setattr(HausdorffToReference, "distances", on_device)
    device = HDM(model, circle_size=5, offset=3, spacing=spacing, batch_size=4,
                 progress=False).explain(volume)
    assert calls and max(calls) <= 4
    np.testing.assert_allclose(device.arrays["distances"], cpu.arrays["distances"], rtol=1e-12)
