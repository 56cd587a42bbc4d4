import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from oracles import assert_unchanged, model_state
from torch import nn

from interpret_segmentation.analysis.features import FeatureReference, area, compute_features
from interpret_segmentation.core import Target
from interpret_segmentation.methods.deepdream import (
    AscentSettings,
    DreamPath,
    analyze,
    plot_curves,
    plot_path,
    white_noise,
)
from interpret_segmentation.models.unet import UNet

SIZE = 24
CENTRE = (SIZE // 2, SIZE // 2)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: threading only adds synchronisation (slow on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pattern_kernel() -> torch.Tensor:
    """A fixed 5x5 pattern with no symmetry: a diagonal bright line with a dark blob."""
    kernel = torch.full((5, 5), -0.2)
    for i in range(5):
        kernel[i, i] = 1.0
    kernel[0, 3:] = -1.0
    kernel[4, 0] = 0.5
    return kernel


class LinearModel(nn.Module):
    """One-channel logits: cross-correlation of the image with a fixed 5x5 kernel, minus a bias."""

    def __init__(self, kernel=None, bias=3.0):
        super().__init__()
        kernel = pattern_kernel() if kernel is None else kernel
        self.conv = nn.Conv2d(1, 1, 5, padding=2)
        with torch.no_grad():
            self.conv.weight.copy_(kernel[None, None])
            self.conv.bias.fill_(-bias)

    def forward(self, x):
        return self.conv(x)


class PatternModel(nn.Module):
    """A softplus, then the pattern correlation and an eval-foldable BatchNorm: the logit at
    every pixel responds to the kernel's pattern around it, a little non-linearly."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Softplus(beta=4.0), nn.Conv2d(1, 1, 5, padding=2),
                                  nn.BatchNorm2d(1))
        with torch.no_grad():
            self.body[1].weight.copy_(pattern_kernel()[None, None])
            self.body[1].bias.fill_(-4.0)
            self.body[2].running_mean.fill_(0.5)
            self.body[2].running_var.fill_(4.0)
            self.body[2].weight.fill_(1.5)
            self.body[2].bias.fill_(-0.5)

    def forward(self, x):
        return self.body(x)


class SaturatingModel(nn.Module):
    """Logit 3 z / sqrt(1 + z^2) of a linear z: the activation rises, then flattens out below 3
    (slowly enough that its gradient stays non-zero in float32, unlike tanh)."""

    def __init__(self):
        super().__init__()
        self.linear = LinearModel(bias=1.0)

    def forward(self, x):
        z = self.linear(x)
        return 3.0 * z * torch.rsqrt(1.0 + z * z)


class ConstantModel(nn.Module):
    """The same logits whatever the image."""

    def __init__(self, uses_input: bool):
        super().__init__()
        self.uses_input = uses_input
        self.bias = nn.Parameter(torch.tensor(-1.0))

    def forward(self, x):
        base = x[:, :1] * 0.0 if self.uses_input else torch.zeros_like(x[:, :1])
        return base + self.bias


class ThreeClass(nn.Module):
    """Three classes: background 0, class 1 = mean brightness, class 2 = the pattern response."""

    def __init__(self):
        super().__init__()
        self.pattern = LinearModel(bias=2.0)

    def forward(self, x):
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, :1] - 0.6, self.pattern(x)], dim=1)


def placed(kernel: torch.Tensor, y: int, x: int, size: int = SIZE) -> np.ndarray:
    """d conv_out[y, x] / d image for a 'same' 5x5 cross-correlation: the kernel put at (y, x)."""
    padded = np.zeros((size + 4, size + 4))
    padded[y:y + 5, x:x + 5] = kernel.numpy()
    return padded[2:-2, 2:-2]


def flat_image(value=0.5):
    return np.full((SIZE, SIZE), value, dtype=np.float32)


def run(model, image=None, target=None, **options):
    options = {"steps": 10, "step_size": 0.05, "features": {}, "progress": False, **options}
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # only the current names here
        return analyze(model, flat_image() if image is None else image, target, **options)


def one_pixel(y, x, size=SIZE):
    region = np.zeros((size, size), dtype=bool)
    region[y, x] = True
    return region


# -- oracles ---------------------------------------------------------------------------------


def pattern_response(y, x):
    kernel = pattern_kernel().numpy()

    def response(image, mask):
        return float((image[y - 2:y + 3, x - 2:x + 3] * kernel).sum())
    return response


def test_dream_grows_the_known_pattern_around_the_neuron():
    neuron = (9, 14)
    start = white_noise((SIZE, SIZE), seed=3)
    path = run(PatternModel(), start, pixel=neuron, steps=40, step_size=0.02,
               features={"pattern": pattern_response(*neuron)})
    assert path.steps_taken == 40 and path.stop_reason == "steps"
    change = path.images[-1, 0] - path.images[0, 0]
    y, x = neuron
    window = change[y - 2:y + 3, x - 2:x + 3]
    correlation = np.corrcoef(window.ravel(), pattern_kernel().numpy().ravel())[0, 1]
    assert correlation > 0.9
    outside = change.copy()
    outside[y - 2:y + 3, x - 2:x + 3] = 0
    assert np.abs(outside).max() == 0  # nothing beyond the neuron's receptive field moves
    assert np.all(np.diff(path.activations) > 0)
    assert np.all(np.diff(path.features["pattern"]) > 0)
    # the start has no foreground, the end has the neuron's pixel as foreground
    assert not path.masks[0].any() and path.masks[-1][neuron]


def test_one_step_of_a_linear_model_is_the_scaled_gradient():
    start = white_noise((SIZE, SIZE), seed=1)
    neuron = (5, 17)
    path = run(LinearModel(), start, pixel=neuron, steps=1, step_size=0.03)
    gradient = placed(pattern_kernel(), *neuron)
    expected = start + 0.03 * gradient / np.abs(gradient).max()
    np.testing.assert_allclose(path.images[1, 0], expected, atol=1e-5)
    np.testing.assert_array_equal(path.images[0, 0], start)
    logit = F.conv2d(torch.from_numpy(start)[None, None], pattern_kernel()[None, None],
                     padding=2)[0, 0] - 3.0
    assert path.activations[0] == pytest.approx(float(logit[neuron]), abs=1e-5)
    assert path.parameters["gradient_scaling"] == "max"


def test_mean_scaling_divides_by_the_mean_absolute_gradient():
    start = white_noise((SIZE, SIZE), seed=1)
    neuron = (9, 12)
    path = run(LinearModel(), start, pixel=neuron, steps=1, step_size=0.001, gradient_scaling="mean")
    gradient = placed(pattern_kernel(), *neuron)
    expected = start + 0.001 * gradient / np.abs(gradient).mean()
    np.testing.assert_allclose(path.images[1, 0], expected, atol=1e-5)
    assert path.parameters["gradient_scaling"] == "mean"


def test_region_uses_the_sum_of_the_pixel_gradients():
    start = white_noise((SIZE, SIZE), seed=2)
    region = np.zeros((SIZE, SIZE), dtype=bool)
    region[4:8, 10:13] = True
    region[15, 3] = True
    path = run(LinearModel(), start, Target(region=region), steps=1, step_size=0.02)
    gradient = sum(placed(pattern_kernel(), y, x) for y, x in zip(*np.nonzero(region)))
    expected = start + 0.02 * gradient / np.abs(gradient).max()
    np.testing.assert_allclose(path.images[1, 0], expected, atol=1e-5)
    logits = F.conv2d(torch.from_numpy(start)[None, None], pattern_kernel()[None, None],
                      padding=2)[0, 0] - 3.0
    assert path.activations[0] == pytest.approx(float(logits[torch.from_numpy(region)].sum()),
                                                abs=1e-4)
    assert path.parameters["pixel"] is None and path.parameters["region_pixels"] == 13
    np.testing.assert_array_equal(path.region, region)


def test_default_pixel_is_the_centre_and_value_range_clamps():
    path = run(LinearModel(), steps=5, step_size=0.5, value_range=(0.0, 1.0))
    assert path.parameters["pixel"] == list(CENTRE) and path.parameters["class_index"] == 1
    assert path.images.min() >= 0.0 and path.images.max() <= 1.0
    assert path.images.min() == 0.0 and path.images.max() == 1.0  # the range was reached
    free = run(LinearModel(), steps=5, step_size=0.5)
    assert free.images.max() > 1.0


def test_pixels_pinned_at_a_bound_do_not_shrink_the_step_of_the_others():
    # the kernel's weights +1 (diagonal) and -1 (top row) meet a start pinned at the top and
    # the bottom of the range there; the step is then scaled by the largest gradient of
    # the free pixels (0.5), not by 1
    neuron = (10, 10)
    start = np.full((SIZE, SIZE), 0.5, dtype=np.float32)
    gradient = placed(pattern_kernel(), *neuron)
    start[gradient == gradient.max()] = 1.0
    start[gradient == gradient.min()] = 0.0
    path = run(LinearModel(), start, pixel=neuron, steps=1, step_size=0.1,
               value_range=(0.0, 1.0))
    free = np.where((start >= 1.0) | (start <= 0.0), 0.0, gradient)
    expected = np.clip(start + 0.1 * free / np.abs(free).max(), 0.0, 1.0)
    np.testing.assert_allclose(path.images[1, 0], expected, atol=1e-6)
    assert np.abs(path.images[1, 0] - start).max() == pytest.approx(0.1, abs=1e-6)


def test_masks_follow_the_models_decision():
    model = LinearModel(bias=0.8)
    path = run(model, white_noise((SIZE, SIZE), seed=4), steps=15, step_size=0.05)
    assert path.masks.shape == (16, SIZE, SIZE) and path.masks.dtype == bool
    with torch.no_grad():
        logits = model(torch.from_numpy(path.images))[:, 0].numpy()
    clear = np.abs(logits) > 1e-4
    np.testing.assert_array_equal(path.masks[clear], (logits > 0)[clear])
    assert path.masks[-1].sum() > path.masks[0].sum()


def test_background_class_of_a_one_channel_model_is_the_negated_logit():
    model = LinearModel(bias=-1.0)
    path = run(model, steps=3, target=0, pixel=(8, 8))
    with torch.no_grad():
        logits = model(torch.from_numpy(path.images))[:, 0, 8, 8].numpy()
    np.testing.assert_allclose(path.activations, -logits, atol=1e-5)
    assert np.all(np.diff(logits) < 0)
    with torch.no_grad():
        full = model(torch.from_numpy(path.images))[:, 0].numpy()
    np.testing.assert_array_equal(path.masks, full <= 0)


def test_multi_class_model_uses_the_class_channel_and_argmax():
    model = ThreeClass()
    path = run(model, steps=8, target=2, pixel=(6, 6), step_size=0.1)
    with torch.no_grad():
        outputs = model(torch.from_numpy(path.images)).numpy()
    np.testing.assert_allclose(path.activations, outputs[:, 2, 6, 6], atol=1e-5)
    np.testing.assert_array_equal(path.masks, outputs.argmax(1) == 2)
    assert path.masks[-1].any() and not path.masks[0].any()


def test_dict_output_and_smaller_outputs_are_understood():
    class Halved(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = LinearModel()

        def forward(self, x):
            return {"out": F.avg_pool2d(self.linear(x), 2), "aux": x}

    path = run(Halved(), steps=3)
    assert path.masks.shape == (4, SIZE, SIZE)
    assert np.all(np.diff(path.activations) > 0)


# -- stopping --------------------------------------------------------------------------------


def test_saturating_activation_converges_early():
    path = run(SaturatingModel(), steps=200, step_size=0.05, tolerance=1e-3, patience=4,
               features={"mean": lambda image, mask: float(image.mean())})
    assert path.stop_reason == "converged" and path.steps_taken < 200
    n = path.steps_taken
    assert path.activations.shape == (n + 1,) and path.masks.shape[0] == n + 1
    assert path.images.shape[0] == n + 1 and path.features["mean"].shape == (n + 1,)
    rises = np.diff(path.activations)[-4:]
    assert np.all(rises < 1e-3 * np.maximum(1.0, np.abs(path.activations[-5:-1])))
    assert path.activations[-1] > 2.9
    # without tolerance every step is made
    assert run(SaturatingModel(), steps=30).steps_taken == 30


@pytest.mark.parametrize("uses_input", [True, False])
def test_zero_gradient_stops(uses_input):
    path = run(ConstantModel(uses_input), steps=10)
    assert path.stop_reason == "zero gradient" and path.steps_taken == 0
    assert path.activations.shape == (1,) and path.images.shape == (1, 1, SIZE, SIZE)


# -- the model is left as it was ---------------------------------------------------------------


def mixed_mode_model():
    model = PatternModel()
    model.eval()
    model.body[2].train()  # one submodule in train mode
    model.body[1].bias.requires_grad_(False)
    return model


def test_model_unchanged_after_analysis():
    model = mixed_mode_model()
    before = model_state(model)
    path = run(model, steps=5)
    assert path.steps_taken == 5
    assert_unchanged(before, model)


def test_model_unchanged_after_an_error_mid_analysis():
    model = mixed_mode_model()
    model.body[2].eval()  # now foldable: the error happens while BatchNorm is folded
    before = model_state(model)
    calls = []
    forward = model.forward

    def failing_forward(x):
        calls.append(1)
        if len(calls) == 4:
            assert isinstance(model.body[2], nn.Identity)  # folded at this moment
            raise RuntimeError("model failed at step 3")
        return forward(x)

    model.forward = failing_forward
    with pytest.raises(RuntimeError, match="step 3"):
        run(model, steps=10)
    del model.forward
    assert len(calls) == 4
    assert_unchanged(before, model)
    assert isinstance(model.body[2], nn.BatchNorm2d)


def test_a_failing_feature_propagates_and_leaves_the_model_unchanged():
    model = mixed_mode_model()
    before = model_state(model)

    def failing(image, mask):
        raise RuntimeError("feature failed")

    with pytest.raises(RuntimeError, match="feature failed"):
        run(model, steps=3, features={"failing": failing})
    assert_unchanged(before, model)


def test_small_batchnorm_unet_runs_and_is_unchanged():
    torch.manual_seed(0)
    model = UNet(in_channels=1, out_channels=1, width=4, depth=2)
    before = model_state(model)
    path = run(model, white_noise((32, 32), seed=0), steps=5, step_size=0.02)
    assert path.steps_taken == 5 and path.masks.shape == (6, 32, 32)
    assert path.activations[-1] > path.activations[0]
    assert_unchanged(before, model)
    assert model.training


# -- features, results, figures ------------------------------------------------------------------


def test_features_are_recorded_on_the_first_channel_and_mask():
    seen = []

    def area(image, mask):
        seen.append((image.shape, mask.dtype))
        return float(mask.sum())

    image = np.stack([flat_image(0.5), flat_image(9.0)])
    model = LinearModel(bias=0.5)

    class FirstChannel(nn.Module):
        def forward(self, x):
            return model(x[:, :1])

    path = run(FirstChannel(), image, steps=6, features={"area": area,
                                                         "top": lambda im, m: float(im.max())})
    np.testing.assert_array_equal(path.features["area"], path.masks.reshape(7, -1).sum(1))
    np.testing.assert_allclose(path.features["top"], path.images[:, 0].reshape(7, -1).max(1))
    assert path.features["area"].dtype == np.float64 and path.images.dtype == np.float32
    assert seen[0] == ((SIZE, SIZE), np.dtype(bool))
    assert path.final_features() == {"area": path.features["area"][-1],
                                     "top": pytest.approx(path.features["top"][-1])}
    assert path.zscores is None


def test_record_images_off_and_json_summary():
    path = run(LinearModel(), steps=4, record_images=False,
               features={"nan": lambda image, mask: float("nan")})
    assert path.images is None
    summary = path.to_dict()
    text = json.dumps(summary, allow_nan=False)
    assert "images" not in summary and "masks" not in summary
    assert summary["steps_taken"] == 4 and len(summary["activations"]) == 5
    assert summary["features"]["nan"] == [None] * 5
    assert json.loads(text)["parameters"]["step_size"] == 0.05


def test_default_features_and_reference():
    features = pytest.importorskip("interpret_segmentation.analysis.features")
    path = run(LinearModel(bias=0.5), white_noise((SIZE, SIZE), seed=0), features=None, steps=3)
    names = set(features.resolve_features(None))
    assert set(path.features) == names
    assert all(curve.shape == (4,) for curve in path.features.values())
    assert np.isfinite(path.features["mean_intensity"]).all()
    reference = features.FeatureReference(
        mean={name: 1.0 for name in names}, std={name: 2.0 for name in names},
        count={name: 10 for name in names})
    scored = run(LinearModel(bias=0.5), white_noise((SIZE, SIZE), seed=0), features=None,
                 steps=3, reference=reference)
    for name in names:  # z-scores: (value - mean) / std
        np.testing.assert_allclose(scored.zscores[name], (scored.features[name] - 1.0) / 2.0)
    assert scored.final_features(zscores=True).keys() == names
    with pytest.raises(ValueError, match="zscores"):
        path.final_features(zscores=True)


def test_progress_bar_can_be_turned_off(capsys):
    run(LinearModel(), steps=3, progress=False)
    assert capsys.readouterr().err == ""
    run(LinearModel(), steps=3, progress=True)
    assert "deepdream" in capsys.readouterr().err


def test_white_noise_is_seeded():
    a, b = white_noise((2, 50, 60), seed=7), white_noise((2, 50, 60), seed=7)
    assert a.dtype == np.float32 and a.shape == (2, 50, 60)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, white_noise((2, 50, 60), seed=8))
    assert abs(a.mean() - 0.5) < 0.01 and abs(a.std() - 0.1) < 0.01
    with pytest.raises(ValueError, match="std"):
        white_noise((4, 4), std=-1)


def test_plots_return_figures_and_write_pngs(tmp_path):
    path = run(LinearModel(bias=0.5), steps=7,
               features={"area": lambda image, mask: float(mask.sum()),
                         "mean": lambda image, mask: float(image.mean())})
    figure = plot_path(path, n_columns=4, path_png=tmp_path / "path.png")
    assert isinstance(figure, Figure)
    titles = [axis.get_title() for axis in figure.axes]
    assert titles[:4] == ["step 0", "step 2", "step 5", "step 7"]
    assert (tmp_path / "path.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError):
        plot_path(path, path_png=tmp_path / "path.png")
    curves = plot_curves(path, path_png=tmp_path / "curves.png")
    assert isinstance(curves, Figure)
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert [axis.get_title() for axis in curves.axes[:3]] == ["activation", "area", "mean"]
    with pytest.raises(ValueError, match="names"):
        plot_curves(path, names=["nope"])
    no_images = run(LinearModel(), steps=2, record_images=False)
    assert isinstance(plot_path(no_images), Figure)


def test_curves_show_zscores_with_a_band():
    path = run(LinearModel(bias=0.5), steps=4,
               features={"area": lambda image, mask: float(mask.sum())})
    scored = DreamPath(**{**path.__dict__, "zscores": {"area": (path.features["area"] - 2) / 4}})
    figure = plot_curves(scored)
    axis = figure.axes[1]
    assert axis.get_title() == "area (z-score)" and axis.patches  # the [-1, 1] band
    np.testing.assert_allclose(axis.lines[-1].get_ydata(), scored.zscores["area"])
    raw = plot_curves(scored, zscores=False).axes[1]
    np.testing.assert_allclose(raw.lines[-1].get_ydata(), path.features["area"])
    assert not raw.patches


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("options, error, words", [
    ({"steps": 0}, ValueError, "steps"),
    ({"steps": 2.5}, ValueError, "steps"),
    ({"step_size": 0.0}, ValueError, "step_size"),
    ({"step_size": -0.1}, ValueError, "step_size"),
    ({"step_size": float("nan")}, ValueError, "step_size"),
    ({"pixel": (SIZE, 3)}, ValueError, rf"pixel.*{SIZE} x {SIZE}"),
    ({"pixel": (-1, 3)}, ValueError, "pixel"),
    ({"pixel": (1.5, 3)}, TypeError, "pixel"),
    ({"pixel": (1, 2, 3)}, TypeError, "pixel"),
    ({"target": Target(1, np.ones((SIZE, SIZE + 1), bool))}, ValueError, r"target\.region"),
    ({"target": Target(1, np.zeros((SIZE, SIZE), bool))}, ValueError, r"target\.region.*empty"),
    ({"target": Target(region=[[True]])}, TypeError, r"target\.region"),
    ({"pixel": (3, 3), "target": Target(1, np.ones((SIZE, SIZE), bool))}, ValueError,
     r"pixel and target\.region"),
    ({"target": 2}, ValueError, r"target: expected a class index in 0\.\.1 .*got 2"),
    ({"target": Target(2)}, ValueError, r"target\.class_index: expected a class index .*got 2"),
    ({"target": -1}, ValueError, "target"),
    ({"target": 1.0}, TypeError, "target"),
    ({"target": Target(1.0)}, TypeError, r"target\.class_index"),
    ({"target": "foreground"}, TypeError, "target"),
    ({"value_range": (1.0, 0.0)}, ValueError, "value_range"),
    ({"gradient_scaling": "l2"}, ValueError, "gradient_scaling"),
    ({"tolerance": -1.0}, ValueError, "tolerance"),
    ({"patience": 0}, ValueError, "patience"),
    ({"reference": {"mean": {}}}, TypeError, "reference"),
])
def test_bad_input_is_rejected_naming_the_argument(options, error, words):
    with pytest.raises(error, match=words):
        run(LinearModel(), **options)


def test_class_index_out_of_range_for_a_multi_class_model():
    with pytest.raises(IndexError, match=r"target: expected a class index in 0\.\.2 .*got 3"):
        run(ThreeClass(), target=3)


# -- the target vocabulary ---------------------------------------------------------------------


class PixelwiseModel(nn.Module):
    """Three classes, a 1x1 convolution: class k's logit at each pixel is w_k * x + b_k, so the
    gradient of a sum over a region R is w_k on R and 0 elsewhere."""

    WEIGHTS = (0.5, -2.0, 3.0)
    BIASES = (0.0, 0.1, -0.2)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(self.WEIGHTS)[:, None, None, None])
            self.conv.bias.copy_(torch.tensor(self.BIASES))

    def forward(self, x):
        return self.conv(x)


def expected_first_step(start, class_index, region, step_size, scaling="max"):
    """The activation at X_0 and the image X_1 for :class:`PixelwiseModel`, by hand."""
    weight, bias = PixelwiseModel.WEIGHTS[class_index], PixelwiseModel.BIASES[class_index]
    activation = float((weight * start[region].astype(np.float64) + bias).sum())
    moved = step_size if scaling == "max" else step_size * region.size / region.sum()
    after = start.copy()
    after[region] += np.float32(np.sign(weight) * moved)
    return activation, after


@pytest.mark.parametrize("target, pixel, class_index, region", [
    (None, None, 1, one_pixel(*CENTRE)),                    # default: class 1 at the centre
    (2, None, 2, one_pixel(*CENTRE)),                       # an int: that class, the centre
    (0, (3, 20), 0, one_pixel(3, 20)),                      # an int and a pixel
    (Target(2), (7, 1), 2, one_pixel(7, 1)),                # a Target without region, a pixel
    (Target(None, one_pixel(5, 6)), None, 1, one_pixel(5, 6)),  # a one-pixel region
    (Target(2, np.pad(np.ones((3, 4), bool), ((2, 19), (9, 11)))), None, 2,
     np.pad(np.ones((3, 4), bool), ((2, 19), (9, 11)))),    # a region of 12 pixels
])
@pytest.mark.parametrize("scaling", ["max", "mean"])
def test_target_vocabulary_gives_the_hand_computed_objective(target, pixel, class_index, region,
                                                             scaling):
    start = white_noise((SIZE, SIZE), seed=5)
    path = run(PixelwiseModel(), start, target, pixel=pixel, steps=1, step_size=0.01,
               gradient_scaling=scaling)
    activation, after = expected_first_step(start, class_index, region, 0.01, scaling)
    assert path.activations[0] == pytest.approx(activation, rel=1e-6, abs=1e-6)
    np.testing.assert_allclose(path.images[1, 0], after, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(path.images[1, 0][~region], start[~region])  # nothing else
    np.testing.assert_array_equal(path.region, region)
    single = region.sum() == 1
    assert path.parameters["class_index"] == class_index
    assert path.parameters["pixel"] == (np.argwhere(region)[0].tolist() if single else None)
    assert path.parameters["region_pixels"] == region.sum()
    # the mask recorded is the analysed class's arg-max
    with torch.no_grad():
        outputs = PixelwiseModel()(torch.from_numpy(path.images)).numpy()
    np.testing.assert_array_equal(path.masks, outputs.argmax(1) == class_index)


def test_a_pixel_and_a_one_pixel_region_are_the_same_target():
    start = white_noise((SIZE, SIZE), seed=6)
    by_pixel = run(PatternModel(), start, 1, pixel=(9, 14), steps=6)
    by_region = run(PatternModel(), start, Target(1, one_pixel(9, 14)), steps=6)
    by_tensor = run(PatternModel(), start, Target(1, torch.from_numpy(one_pixel(9, 14))), steps=6)
    for other in (by_region, by_tensor):
        np.testing.assert_array_equal(by_pixel.images, other.images)
        np.testing.assert_array_equal(by_pixel.activations, other.activations)
        assert by_pixel.parameters == other.parameters
    assert by_pixel.parameters["pixel"] == [9, 14]


def reference_ascent(model, start, class_index, region, steps, step_size, scaling, value_range):
    """A plain loop of the rule, written out: forward, gradient of the summed logit, zero where
    pinned at a bound, scale, step, clamp."""
    x = torch.from_numpy(start)[None, None]
    images, activations = [x[0].numpy().copy()], []
    pixels = torch.from_numpy(region)
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        logits = model(x)[0, 0]
        logit = logits if class_index == 1 else -logits
        activation = logit[pixels].sum()
        activations.append(float(activation.detach()))
        gradient, = torch.autograd.grad(activation, x)
        low, high = value_range
        gradient = gradient.masked_fill(((x <= low) & (gradient < 0)) | ((x >= high) & (gradient > 0)), 0)
        scale = gradient.abs().max() if scaling == "max" else gradient.abs().mean()
        x = (x.detach() + (step_size / scale) * gradient).clamp_(low, high)
        images.append(x[0].detach().numpy().copy())
    return np.stack(images), np.asarray(activations)


@pytest.mark.parametrize("scaling", ["max", "mean"])
def test_the_ascent_is_the_plain_rule_bit_for_bit(scaling):
    model = PatternModel().eval()  # eval: BatchNorm with running statistics, as folded
    region = np.zeros((SIZE, SIZE), dtype=bool)
    region[10:13, 8:15] = True
    start = white_noise((SIZE, SIZE), seed=8)
    step_size = 0.004 if scaling == "max" else 0.0004
    path = run(model, start, Target(1, region), steps=12, step_size=step_size,
               gradient_scaling=scaling, value_range=(0.35, 0.65))
    assert path.stop_reason == "steps"
    assert ((path.images[-1] == 0.35) | (path.images[-1] == 0.65)).any()  # some pixels pinned
    images, activations = reference_ascent(model, start, 1, region, 12, step_size, scaling,
                                           (0.35, 0.65))
    # BatchNorm folded into the convolution rounds differently: equal to float32 precision
    np.testing.assert_allclose(path.images, images, rtol=0, atol=1e-6)
    np.testing.assert_allclose(path.activations[:-1], activations, rtol=1e-5, atol=1e-5)
    linear = LinearModel()
    path = run(linear, start, Target(0, region), steps=12, step_size=step_size,
               gradient_scaling=scaling, value_range=(0.35, 0.65))
    assert path.stop_reason == "steps"
    images, activations = reference_ascent(linear, start, 0, region, 12, step_size, scaling,
                                           (0.35, 0.65))
    np.testing.assert_array_equal(path.images, images)  # nothing to fold: the same operations
    np.testing.assert_array_equal(path.activations[:-1], activations)


# -- conflicting and deprecated arguments ------------------------------------------------------


def old_run(model, image=None, **options):
    options = {"steps": 4, "step_size": 0.05, "features": {}, "progress": False, **options}
    return analyze(model, flat_image() if image is None else image, **options)


@pytest.mark.parametrize("options, words", [
    ({"neuron": (3, 3), "pixel": (3, 3)}, "neuron and pixel"),
    ({"region": one_pixel(2, 2), "target": Target(1, one_pixel(2, 2))}, r"region and target\.region"),
    ({"class_index": 1, "target": 1}, "class_index and target"),
    ({"class_index": 0, "target": Target(1, one_pixel(2, 2))}, "class_index and target"),
    ({"neuron": (3, 3), "region": one_pixel(2, 2)}, "neuron and region"),
    ({"normalise": "mean", "gradient_scaling": "max"}, None),  # same meaning: accepted
    ({"normalise": "max", "gradient_scaling": "mean"}, "gradient_scaling and normalise"),
    ({"normalise": "l2"}, "normalise: expected one of"),
])
def test_conflicting_deprecated_arguments_are_refused(options, words):
    with pytest.warns(DeprecationWarning):
        if words is None:
            assert old_run(LinearModel(), **options).parameters["gradient_scaling"] == "mean"
            return
        with pytest.raises(ValueError, match=words):
            old_run(LinearModel(), **options)


def test_a_pixel_with_a_region_target_is_refused():
    with pytest.raises(ValueError, match=r"pixel and target\.region: expected at most one"):
        run(LinearModel(), target=Target(1, one_pixel(2, 2)), pixel=(3, 3))


def test_deprecated_names_warn_at_the_callers_line_and_give_the_same_path():
    start = white_noise((SIZE, SIZE), seed=9)
    region = one_pixel(4, 4) | one_pixel(9, 17)
    new = run(ThreeClass(), start, 2, pixel=(6, 6), steps=4, gradient_scaling="mean",
              step_size=0.001)
    with pytest.warns(DeprecationWarning) as caught:
        old = old_run(ThreeClass(), start, class_index=2, neuron=(6, 6), normalise="mean",
                      step_size=0.001)
    assert {str(w.message).split(" is deprecated")[0] for w in caught} == {
        "class_index=", "neuron=", "normalise="}
    assert all(w.filename == __file__ for w in caught)
    np.testing.assert_array_equal(new.images, old.images)
    assert new.parameters == old.parameters
    with pytest.warns(DeprecationWarning) as caught:
        old = old_run(ThreeClass(), start, region=region, class_index=2)
    assert {str(w.message).split(" is deprecated")[0] for w in caught} == {"class_index=", "region="}
    new = run(ThreeClass(), start, Target(2, region), steps=4)
    np.testing.assert_array_equal(new.images, old.images)


def test_deprecated_zscore_names_warn_and_still_work():
    path = run(LinearModel(bias=0.5), steps=3, features={"area": lambda image, mask: float(mask.sum())})
    scored = DreamPath(**{**path.__dict__, "zscores": {"area": path.features["area"] / 10}})
    with pytest.warns(DeprecationWarning, match="zscores") as caught:
        assert scored.normalised is scored.zscores
    assert caught[0].filename == __file__
    with pytest.warns(DeprecationWarning, match="final_features"):
        assert scored.final_features(normalised=True) == scored.final_features(zscores=True)
    with pytest.warns(DeprecationWarning, match="plot_curves"):
        raw = plot_curves(scored, normalised=False).axes[1]
    assert raw.get_title() == "area" and not raw.patches
    assert "zscores" in scored.to_dict() and "normalised" not in scored.to_dict()


# -- settings, figures ---------------------------------------------------------------------------


def test_ascent_settings_are_checked_frozen_and_know_convergence():
    settings = AscentSettings(steps=np.int64(7), step_size=1, tolerance=0, patience=2,
                              value_range=[0, 1])
    assert settings.steps == 7 and type(settings.steps) is int
    assert settings.step_size == 1.0 and type(settings.step_size) is float
    assert settings.value_range == (0.0, 1.0) and settings.tolerance == 0.0
    with pytest.raises(AttributeError):
        settings.steps = 3
    # tolerance 0: converged once the activation fell in each of the last 2 steps
    assert not settings.converged([1.0, 2.0, 1.9])
    assert settings.converged([1.0, 2.0, 1.9, 1.5])
    assert not settings.converged([1.0, 2.0, 2.0, 1.5])  # no rise is not "less than 0"
    assert not settings.converged([2.0, 1.0, 3.0])
    assert not AscentSettings().converged([1.0] * 50)  # no tolerance: never
    loose = AscentSettings(tolerance=0.1, patience=1)
    assert loose.converged([10.0, 10.9]) and not loose.converged([10.0, 11.1])  # 0.1 * |a|
    assert loose.converged([0.0, 0.09]) and not loose.converged([0.0, 0.11])    # 0.1 * 1
    with pytest.raises(ValueError, match="gradient_scaling"):
        AscentSettings(gradient_scaling="normalise")
    with pytest.raises(ValueError, match="tolerance"):
        AscentSettings(tolerance=float("inf"))


def test_figures_touch_no_pyplot_state_and_outline_a_region(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    region = np.zeros((SIZE, SIZE), dtype=bool)
    region[5:9, 5:12] = True
    path = run(LinearModel(bias=0.5), steps=3, target=Target(1, region),
               features={"area": lambda image, mask: float(mask.sum())})
    figure = plot_path(path, path_png=tmp_path / "path.png")
    assert figure.axes[0].collections  # the region's outline
    assert not figure.axes[0].lines    # and no cross
    plot_curves(path, path_png=tmp_path / "curves.png")
    assert plt.get_fignums() == before


# -- volumes ----------------------------------------------------------------------------------

DEPTH = 10


def volume_kernel() -> torch.Tensor:
    """A fixed 3x3x3 pattern with no symmetry."""
    kernel = torch.linspace(-1.0, 1.0, 27).reshape(3, 3, 3)
    kernel[1, 1, 1] = 2.0
    kernel[0, 2, 1] = -1.5
    return kernel


class LinearVolumeModel(nn.Module):
    """One-channel logits on volumes: cross-correlation with a fixed 3x3x3 kernel, minus 3."""

    def __init__(self, bias=3.0):
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(volume_kernel()[None, None])
            self.conv.bias.fill_(-bias)

    def forward(self, x):
        return self.conv(x)


def placed_3d(z, y, x, shape=(DEPTH, 12, 14)) -> np.ndarray:
    """d conv_out[z, y, x] / d volume for a 'same' 3x3x3 cross-correlation."""
    padded = np.zeros(tuple(size + 2 for size in shape))
    padded[z:z + 3, y:y + 3, x:x + 3] = volume_kernel().numpy()
    return padded[1:-1, 1:-1, 1:-1]


def noise_volume(seed=0, shape=(DEPTH, 12, 14)):
    return white_noise((1, 1, *shape), seed=seed)


def test_one_step_on_a_volume_is_the_scaled_3d_gradient():
    start = noise_volume(1)
    voxel = (3, 5, 9)
    path = run(LinearVolumeModel(), start, pixel=voxel, steps=1, step_size=0.03)
    gradient = placed_3d(*voxel)
    expected = start[0, 0] + 0.03 * gradient / np.abs(gradient).max()
    assert path.images.shape == (2, 1, DEPTH, 12, 14) and path.masks.shape == (2, DEPTH, 12, 14)
    np.testing.assert_allclose(path.images[1, 0], expected, atol=1e-5)
    logit = F.conv3d(torch.from_numpy(start), volume_kernel()[None, None], padding=1)[0, 0] - 3.0
    assert path.activations[0] == pytest.approx(float(logit[voxel]), abs=1e-5)
    assert path.parameters["pixel"] == list(voxel)
    np.testing.assert_array_equal(path.region, np.asarray(one_voxel(*voxel)))


def one_voxel(z, y, x, shape=(DEPTH, 12, 14)):
    region = np.zeros(shape, dtype=bool)
    region[z, y, x] = True
    return region


def test_a_dream_on_a_volume_grows_the_object_and_its_3d_features():
    start = white_noise((1, 1, DEPTH, 12, 14), seed=2, mean=0.0)  # logits near -3: no object
    path = run(LinearVolumeModel(), start, steps=30, step_size=0.2,
               features=["area", "roundness", "elongation", "max_diameter"],
               spacing=(2.0, 1.0, 1.0))
    centre = (DEPTH // 2, 6, 7)  # the default voxel: the centre
    assert path.parameters["pixel"] == list(centre) and path.parameters["spacing"] == [2, 1, 1]
    assert not path.masks[0].any() and path.masks[-1][centre]
    assert np.all(np.diff(path.activations) > 0)
    # the curves are the 3-D features of each step's first channel and mask, in millimetres
    for step in (0, 15, 30):
        expected = compute_features(path.images[step, 0], path.masks[step],
                                    list(path.features), spacing=(2.0, 1.0, 1.0))
        got = {name: curve[step] for name, curve in path.features.items()}
        assert got == pytest.approx(expected, nan_ok=True)
    assert path.features["area"][-1] == 2.0 * path.masks[-1].sum()
    assert 0 < path.features["roundness"][-1] <= 1


def test_a_volume_reads_the_same_in_every_layout():
    start = noise_volume(3)
    five = run(LinearVolumeModel(), start, steps=3)
    four = run(LinearVolumeModel(), start[0], steps=3, spatial_dims=3)  # (C, D, H, W)
    three = run(LinearVolumeModel(), torch.from_numpy(start[0, 0]), steps=3, spatial_dims=3)
    for other in (four, three):
        np.testing.assert_array_equal(other.images, five.images)
        np.testing.assert_array_equal(other.activations, five.activations)


def test_a_3d_region_target_sums_its_voxels_and_is_checked():
    start = noise_volume(4)
    region = np.zeros((DEPTH, 12, 14), dtype=bool)
    region[2:4, 3:5, 6:9] = True
    path = run(LinearVolumeModel(), start, Target(1, region), steps=1, step_size=0.01)
    gradient = sum(placed_3d(*voxel) for voxel in np.argwhere(region))
    expected = start[0, 0] + 0.01 * gradient / np.abs(gradient).max()
    np.testing.assert_allclose(path.images[1, 0], expected, atol=1e-5)
    assert path.parameters["pixel"] is None and path.parameters["region_pixels"] == 12
    with pytest.raises(ValueError, match=r"pixel.*D x H x W = 10 x 12 x 14"):
        run(LinearVolumeModel(), start, pixel=(DEPTH, 0, 0), steps=1)
    with pytest.raises(TypeError, match=r"pixel: expected three ints \(z, y, x\)"):
        run(LinearVolumeModel(), start, pixel=(3, 4), steps=1)
    with pytest.raises(ValueError, match="target.region"):
        run(LinearVolumeModel(), start, Target(1, region[0]), steps=1)
    with pytest.raises(ValueError, match="spacing"):
        run(LinearVolumeModel(), start, steps=1, spacing=(1.0, 1.0))


class TwoLabelVolumeModel(nn.Module):
    """Two sigmoid labels that overlap: label 0 is the pattern response, label 1 that plus 2."""

    def __init__(self):
        super().__init__()
        self.pattern = LinearVolumeModel()

    def forward(self, x):
        z = self.pattern(x)
        return torch.cat([z, z + 2.0], dim=1)


def test_multi_label_masks_are_each_labels_own_segment():
    start = noise_volume(5)
    labels = run(TwoLabelVolumeModel(), start, target=0, steps=4, activation="sigmoid")
    classes = run(TwoLabelVolumeModel(), start, target=0, steps=4)  # read as softmax classes
    logits = TwoLabelVolumeModel()(torch.from_numpy(labels.images[-1][None]))[0].detach()
    np.testing.assert_array_equal(labels.masks[-1], (logits[0] > 0).numpy())  # p_0 > 0.5
    assert not classes.masks.any()  # label 1 always wins the arg-max
    np.testing.assert_array_equal(labels.images, classes.images)  # same logit climbed


def test_volume_paths_save_load_and_plot(tmp_path):
    path = run(LinearVolumeModel(), noise_volume(6), steps=4, step_size=0.2,
               features=["area", "roundness"])
    written = path.save(tmp_path / "dream")
    assert written == tmp_path / "dream.npz" and (tmp_path / "dream.json").exists()
    loaded = DreamPath.load(tmp_path / "dream")
    for name in ("activations", "masks", "images", "region"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(path, name))
    assert loaded.masks.dtype == bool and loaded.images.dtype == np.float32
    assert list(loaded.features) == ["area", "roundness"] and loaded.zscores is None
    for name, curve in path.features.items():
        np.testing.assert_array_equal(loaded.features[name], curve)
    assert loaded.to_dict() == path.to_dict()
    with pytest.raises(FileExistsError):
        path.save(tmp_path / "dream.npz")
    path.save(tmp_path / "dream.npz", overwrite=True)
    figure = plot_path(path, n_columns=3)
    assert "axial slice z=5" in figure._suptitle.get_text()
    assert len(figure.axes) == 6


def test_saved_paths_keep_zscores_and_refuse_foreign_files(tmp_path):
    reference = FeatureReference(mean={"area": 1.0, "ones": 0.0}, std={"area": 2.0, "ones": 1.0},
                                 count={"area": 3, "ones": 3})
    path = run(LinearModel(), white_noise((SIZE, SIZE), seed=1), steps=3, record_images=False,
               features={"area": area, "ones": lambda image, mask: 1.0}, reference=reference)
    loaded = DreamPath.load(path.save(tmp_path / "flat.npz"))
    assert loaded.images is None and loaded.masks.shape == (4, SIZE, SIZE)
    for name in ("area", "ones"):
        np.testing.assert_array_equal(loaded.zscores[name], path.zscores[name])
    assert loaded.parameters == json.loads(json.dumps(path.parameters))
    (tmp_path / "other.json").write_text(json.dumps({"method": "hdm"}))
    np.savez(tmp_path / "other.npz", saliency=np.zeros(3))
    with pytest.raises(ValueError, match="other.json: not a DreamPath"):
        DreamPath.load(tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        DreamPath.load(tmp_path / "missing")


def test_white_noise_makes_volumes_that_start_a_dream():
    noise = white_noise((1, 1, 4, 5, 6), seed=7)
    assert noise.shape == (1, 1, 4, 5, 6) and noise.dtype == np.float32
    np.testing.assert_array_equal(noise, white_noise((1, 1, 4, 5, 6), seed=7))
    assert run(LinearVolumeModel(), noise, steps=1).masks.shape == (2, 4, 5, 6)


def test_monai_3d_unet_dreams_and_is_unchanged():
    monai = pytest.importorskip("monai.networks.nets")
    torch.manual_seed(0)
    model = monai.UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8),
                       strides=(2,), num_res_units=1)
    before = model_state(model)
    path = run(model, white_noise((1, 1, 16, 16, 16), seed=0), steps=3, step_size=0.05,
               features=["area", "roundness", "glcm_contrast"])
    assert path.masks.shape == (4, 16, 16, 16) and path.activations[-1] > path.activations[0]
    assert_unchanged(before, model)
    assert model.training
