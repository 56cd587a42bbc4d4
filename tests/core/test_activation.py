"""Softmax classes, sigmoid labels and one-channel models: one definition of a class's segment."""

import warnings

import numpy as np
import pytest
import torch
from oracles import Fixed, Probe
from torch import nn

from interpret_segmentation.core import ModelAdapter, Target, predicted_mask, resolve_target


def overlapping_labels(x):
    """Three sigmoid label logits (B, 3, H, W), BraTS-like nested regions: label k is 3 + k
    inside its rows (label 0, the whole tumour, rows 2..9; label 1 rows 4..7; label 2 rows
    5..6) and -3 outside."""
    height = x.shape[2]
    rows = torch.arange(height)[:, None].expand(height, x.shape[3])
    logits = []
    for label, (top, bottom) in enumerate(((2, 10), (4, 8), (5, 7))):
        inside = (rows >= top) & (rows < bottom)
        logits.append(torch.where(inside, 3.0 + label, -3.0))
    return torch.stack(logits)[None].expand(x.shape[0], -1, -1, -1) + 0 * x[:, :1]


def test_sigmoid_labels_are_independent_channels_with_overlapping_segments():
    x = torch.rand(2, 1, 12, 5)
    adapter = ModelAdapter(Fixed(overlapping_labels), activation="sigmoid")
    probabilities = adapter(x)
    assert adapter.multilabel and probabilities.shape == (2, 3, 12, 5)
    assert torch.allclose(probabilities, torch.sigmoid(overlapping_labels(x)))
    rows = torch.arange(12)
    for label, (top, bottom) in enumerate(((2, 10), (4, 8), (5, 7))):
        expected = ((rows >= top) & (rows < bottom))[:, None].expand(12, 5)
        assert torch.equal(adapter.segment(probabilities, label), expected.expand(2, 12, 5))
    # read as softmax classes instead, the nested labels would steal each other's pixels
    softmax = ModelAdapter(Fixed(overlapping_labels), output="logits")
    assert not softmax.multilabel
    assert not softmax.segment(softmax(x), 0)[:, 5].any()


def test_explainer_resolves_a_label_target_per_channel():
    explainer = Probe(Fixed(overlapping_labels), activation="sigmoid", progress=False)
    explainer.explain(torch.rand(1, 12, 5), 0)
    pixels = explainer.seen.target.pixels
    assert pixels.shape == (12, 5) and pixels[2:10].all() and not pixels[:2].any()
    # the default "auto" reads the same channels as classes: label 0's rows 4..9 are lost
    auto = Probe(Fixed(overlapping_labels), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto.explain(torch.rand(1, 12, 5), 0)
    assert not auto.seen.target.pixels[4:8].any()


def test_probabilities_of_labels_give_log_odds_scores():
    x = torch.rand(1, 1, 12, 5)
    probabilities = torch.sigmoid(overlapping_labels(x))
    adapter = ModelAdapter(Fixed(lambda v: torch.sigmoid(overlapping_labels(v))),
                           output="probabilities", activation="sigmoid")
    assert torch.allclose(adapter(x), probabilities)
    assert torch.allclose(adapter.scores(x), overlapping_labels(x), atol=1e-4)


@pytest.mark.parametrize("activation", ["auto", "sigmoid"])
def test_one_channel_is_a_foreground_read_as_two_classes(activation):
    logits = torch.tensor([[-2.0, 0.0], [3.0, 0.5]]).reshape(1, 1, 2, 2)
    adapter = ModelAdapter(Fixed(lambda x: logits), output="logits", activation=activation)
    probabilities = adapter(torch.zeros(1, 1, 2, 2))
    assert probabilities.shape == (1, 2, 2, 2) and not adapter.multilabel
    assert torch.allclose(probabilities[:, 1], torch.sigmoid(logits[:, 0]))
    assert adapter.segment(probabilities, 1).tolist() == [[[False, False], [True, True]]]
    assert adapter.segment(probabilities, 0).tolist() == [[[True, True], [False, False]]]
    assert torch.allclose(adapter.scores(torch.zeros(1, 1, 2, 2)), torch.cat([-logits, logits], 1))


def test_softmax_needs_several_channels():
    adapter = ModelAdapter(Fixed(lambda x: x), activation="softmax")
    with pytest.raises(ValueError, match="^activation: 'softmax' needs at least 2 output channels"):
        adapter(torch.rand(1, 1, 3, 3))
    with pytest.raises(ValueError, match="activation: expected one of auto, softmax, sigmoid"):
        ModelAdapter(nn.Identity(), activation="relu")


def test_a_nine_class_target_is_its_arg_max_even_below_one_half():
    generator = torch.Generator().manual_seed(9)
    logits = torch.randn(1, 9, 16, 16, generator=generator) * 0.3  # an unsure model
    adapter = ModelAdapter(Fixed(lambda x: logits), output="logits")
    probabilities = adapter(torch.zeros(1, 1, 16, 16))
    segment = adapter.segment(probabilities, 5)
    assert torch.equal(segment, probabilities.argmax(1) == 5) and segment.any()
    assert (probabilities[:, 5][segment] < 0.5).all()  # "p > 0.5" would see nothing at all
    resolved = resolve_target(5, probabilities, adapter.segment)
    assert torch.equal(resolved.pixels, segment[0])


def test_resolve_target_uses_the_segment_it_is_given():
    probabilities = torch.full((1, 3, 2, 2), 0.6)
    probabilities[0, 2, 0, 0] = 0.9
    assert resolve_target(1, probabilities, lambda p, k: p[:, k] > 0.5).pixels.all()
    assert torch.equal(resolve_target(2, probabilities).pixels, predicted_mask(probabilities, 2)[0])


def test_an_empty_target_is_a_warning_naming_the_class_not_a_silent_zero_map():
    model = Fixed(lambda x: torch.stack([x[:, 0] * 0 + 2, x[:, 0] * 0, x[:, 0] * 0 - 2], 1))
    explainer = Probe(model, progress=False)
    with pytest.warns(UserWarning, match=r"^target: class 2 is predicted nowhere in the image"):
        explanation = explainer.explain(torch.rand(1, 4, 4), 2)
    assert explanation.saliency.shape == (4, 4)  # the method still returns its result
    assert not explanation.arrays["target_pixels"].any()
    with pytest.warns(UserWarning, match=r"^target.region: the region given for class 0 is empty"):
        explainer.explain(torch.rand(1, 4, 4), Target(0, np.zeros((4, 4))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explainer.explain(torch.rand(1, 4, 4), 0)  # predicted: no warning
