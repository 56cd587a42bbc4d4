"""The contract every registered method keeps, run over the registry.

A method added to the registry without an entry in ``FAST_OPTIONS`` fails here: say how to
run it quickly, and it is held to the same contract as the others.
"""

import numpy as np
import pytest
import torch
from oracles import FailsLater, assert_unchanged, model_state
from torch import nn

from interpret_segmentation import Explanation, Target, methods

FAST_OPTIONS = {
    "hdm": {"circle_size": 5, "offset": 4},
    "rise": {"n_masks": 24, "s": 4},
    "gradcam": {"layer": "body.0"},
    "misure": {"iterations": 4, "mask_size": 16, "kernel_size": 3},
    "lrp": {"rule_set": "epsilon"},  # the default, "montavon", names VGG11's layers
}
"""Small settings per method, so that the contract runs in seconds."""

SIZE = 20


def _initialised(module: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return module


class TinySegmenter(nn.Module):
    """Two-class logits (B, 2, H, W); BatchNorm and Dropout so that modes matter."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.Dropout(0.5), nn.Conv2d(4, 2, 3, padding=1))
        _initialised(self, 0)
        self.body[1].running_var.fill_(1.5)

    def forward(self, x):
        return self.body(x)


class TinyClassifier(nn.Module):
    """Two-class logits (B, 2) from a conv layer, pooling and a linear layer."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4 * (SIZE // 2) ** 2, 2))
        _initialised(self, 1)

    def forward(self, x):
        return self.classifier(self.features(x))


def _model(method: methods.Method) -> nn.Module:
    return TinyClassifier() if method.model_kind == "classification" else TinySegmenter()


def _images(count: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    images = []
    for _ in range(count):
        image = torch.rand(1, SIZE, SIZE, generator=generator) * 0.3
        top, left = torch.randint(0, SIZE - 8, (2,), generator=generator).tolist()
        image[:, top:top + 8, left:left + 8] += 0.7
        images.append(image)
    return images


def _explainer(name: str, model: nn.Module, **options):
    return methods.get(name).build(model, **{"progress": False, **FAST_OPTIONS[name], **options})


REGISTERED = methods.available()


def test_every_registered_method_has_contract_settings():
    assert set(REGISTERED) <= set(FAST_OPTIONS), "add the new method to FAST_OPTIONS"


@pytest.mark.parametrize("name", REGISTERED)
def test_registry_entry_matches_the_explainer(name):
    method = methods.get(name)
    defaults = method.defaults()
    assert set(defaults) == {option.name for option in method.options}
    assert method.description and method.title and method.cls.method == name
    explanation = _explainer(name, _model(method)).explain(_images(1)[0])
    assert set(defaults) <= set(explanation.parameters), "settings() must record every option"


@pytest.mark.parametrize("name", REGISTERED)
def test_same_results_for_batch_sizes_1_2_and_7(name):
    method = methods.get(name)
    model = _model(method)
    image = _images(1)[0]
    results = [_explainer(name, model, batch_size=size).explain(image) for size in (1, 2, 7)]
    for other in results[1:]:
        np.testing.assert_allclose(other.saliency, results[0].saliency, rtol=1e-5, atol=1e-5)
        assert other.arrays.keys() == results[0].arrays.keys()
        for key, array in results[0].arrays.items():
            np.testing.assert_allclose(other.arrays[key], array, rtol=1e-5, atol=1e-5,
                                       err_msg=key)


@pytest.mark.parametrize("name", REGISTERED)
def test_explain_batch_equals_one_at_a_time(name):
    method = methods.get(name)
    explainer = _explainer(name, _model(method), batch_size=2)
    images = _images(3)
    batch = explainer.explain_batch(images, [None, 1, 0])
    for image, target, together in zip(images, [None, 1, 0], batch):
        alone = explainer.explain(image, target)
        assert together.target_class == alone.target_class
        np.testing.assert_allclose(together.saliency, alone.saliency, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", REGISTERED)
def test_model_is_left_as_it_was(name):
    method = methods.get(name)
    model = _model(method).train()  # a model in training mode must come back in training mode
    model.requires_grad_(False)
    before = model_state(model)
    explanation = _explainer(name, model).explain(_images(1)[0])
    assert isinstance(explanation, Explanation)
    assert_unchanged(before, model)


@pytest.mark.parametrize("name", REGISTERED)
@pytest.mark.parametrize("fail_at", [1, 2])
def test_model_is_left_as_it_was_after_an_error(name, fail_at):
    method = methods.get(name)
    inner = _model(method).train()
    model = FailsLater(inner, fail_at)
    options = {"layer": "model.body.0"} if name == "gradcam" else {}
    explainer = _explainer(name, model, **options)
    before = model_state(inner)
    with pytest.raises((RuntimeError, ValueError)):
        explainer.explain(_images(1)[0])
    model.calls = 0
    assert_unchanged(before, inner)
    assert model.training


@pytest.mark.parametrize("name", REGISTERED)
def test_explanation_save_load_round_trip(name, tmp_path):
    method = methods.get(name)
    explanation = _explainer(name, _model(method)).explain(_images(1)[0], Target(1))
    explanation.save(tmp_path / name)
    loaded = Explanation.load(tmp_path / name)
    np.testing.assert_array_equal(loaded.saliency, explanation.saliency)
    assert (loaded.method, loaded.target_class) == (name, 1)
    assert loaded.parameters == explanation.parameters
    assert loaded.arrays.keys() == explanation.arrays.keys()
    for key, array in explanation.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[key], array)


@pytest.mark.parametrize("name", REGISTERED)
def test_bad_input_is_refused_naming_the_argument(name):
    method = methods.get(name)
    model = _model(method)
    explainer = _explainer(name, model)
    with pytest.raises(ValueError, match="image"):
        explainer.explain(torch.rand(3, SIZE, SIZE))  # the model takes one channel
    with pytest.raises(ValueError, match="target"):
        explainer.explain(_images(1)[0], 7)  # two classes
    with pytest.raises(TypeError, match="target"):
        explainer.explain(_images(1)[0], "class one")
    with pytest.raises(ValueError, match="images and targets"):
        explainer.explain_batch(_images(2), [None])
    with pytest.raises(ValueError, match="batch_size"):
        _explainer(name, model, batch_size=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'no_such_option'"):
        _explainer(name, model, no_such_option=1)


# ---------------------------------------------------------------------------------------------
# the same contract on volumes (1, C, D, H, W), for every method that explains a segmentation

DEPTH = 12
VOLUME_OPTIONS = {"misure": {"mask_size": 8}}
"""Changes to FAST_OPTIONS for volumes (an 8^3 mask instead of 16^2)."""


class TinyVolumeSegmenter(nn.Module):
    """Two-class logits (B, 2, D, H, W): class 1 where the 3 x 3 x 3 mean of the volume is
    above 0.5 (logit 10 m - 5 against 0). BatchNorm3d and Dropout so that modes matter."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.BatchNorm3d(3), nn.ReLU(),
                                  nn.Dropout(0.5), nn.Conv3d(3, 2, 3, padding=1))
        with torch.no_grad():
            first, norm, last = self.body[0], self.body[1], self.body[4]
            first.weight.fill_(1 / 27)
            first.bias.zero_()
            norm.running_mean.fill_(0.1)  # eval mode shifts by 0.1 * 1.2, as 1.2 scales back
            norm.running_var.fill_(1 / 1.44 - norm.eps)
            norm.weight.fill_(1.0)
            norm.bias.fill_(0.12)
            last.weight.zero_()
            last.bias.copy_(torch.tensor([0.0, -5.0]))
            last.weight[1, :, 1, 1, 1] = 10 / 3 / 1.2

    def forward(self, x):
        return self.body(x)


BOX = (slice(3, 8), slice(4, 9), slice(2, 7))


def _volume() -> torch.Tensor:
    generator = torch.Generator().manual_seed(4)
    volume = torch.rand(1, 1, DEPTH, DEPTH, DEPTH, generator=generator) * 0.3
    volume[(..., *BOX)] += 0.7
    return volume


def _box() -> np.ndarray:
    region = np.zeros((DEPTH, DEPTH, DEPTH), dtype=bool)
    region[BOX] = True
    return region


VOLUME_METHODS = methods.available("segmentation")


@pytest.mark.parametrize("name", VOLUME_METHODS)
def test_volumes_same_results_for_batch_sizes_and_model_left_as_it_was(name, tmp_path):
    model = TinyVolumeSegmenter().train()
    before = model_state(model)
    options = VOLUME_OPTIONS.get(name, {})
    results = [_explainer(name, model, batch_size=size, **options).explain(
        _volume(), Target(1, region=_box())) for size in (1, 2, 7)]
    assert_unchanged(before, model)
    assert results[0].saliency.shape == (DEPTH, DEPTH, DEPTH)
    assert results[0].arrays["target_pixels"].sum() == _box().sum()
    assert np.abs(results[0].saliency).max() > 0
    for other in results[1:]:
        np.testing.assert_allclose(other.saliency, results[0].saliency, rtol=1e-5, atol=1e-5)
    results[0].save(tmp_path / name)
    loaded = Explanation.load(tmp_path / name)
    np.testing.assert_array_equal(loaded.saliency, results[0].saliency)
