"""How the adapter reads a model's output: forms, ``read=``, callables and the "auto" guess."""

import warnings
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from oracles import Fixed, Probe
from torch import nn

from interpret_segmentation.core import ModelAdapter, Target, explanation_mode


class ModelOutputLike(OrderedDict):
    """Like a Hugging Face ``ModelOutput``: an OrderedDict whose fields are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class ReadOnlyMapping(Mapping):
    """A Mapping that is no dict."""

    def __init__(self, **items):
        self._items = items

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)


def _logits(x, classes=3):
    """Three-class logits (B, 3, *S) depending on the input, outside [0, 1]."""
    return torch.cat([x[:, :1] * (k + 1) - k for k in range(classes)], dim=1) * 4


@pytest.mark.parametrize("form", ["tensor", "model_output", "mapping", "dict_out", "tuple", "list",
                                  "nested"])
def test_every_output_form_reads_the_same_probabilities(form):
    wrap = {
        "tensor": lambda t: t,
        "model_output": lambda t: ModelOutputLike(logits=t, hidden_states=None),
        "mapping": lambda t: ReadOnlyMapping(logits=t, extra="x"),
        "dict_out": lambda t: {"out": t, "aux": t * 0},
        "tuple": lambda t: (t, t * 0),
        "list": lambda t: [t],
        "nested": lambda t: ({"logits": t},),
    }[form]
    x = torch.rand(2, 1, 5, 6)
    got = ModelAdapter(Fixed(lambda v: wrap(_logits(v))))(x)
    assert torch.allclose(got, torch.softmax(_logits(x), 1), atol=1e-6)


def test_smaller_outputs_are_upsampled_bilinear_in_2d_and_trilinear_in_3d():
    x2, x3 = torch.rand(1, 1, 16, 12), torch.rand(1, 1, 8, 12, 10)
    small2 = _logits(torch.rand(1, 1, 4, 3))
    small3 = _logits(torch.rand(1, 1, 2, 3, 5))
    got2 = ModelAdapter(Fixed(lambda v: {"logits": small2}))(x2)
    got3 = ModelAdapter(Fixed(lambda v: ModelOutputLike(logits=small3)))(x3)
    expected2 = torch.softmax(F.interpolate(small2, size=(16, 12), mode="bilinear"), 1)
    expected3 = torch.softmax(F.interpolate(small3, size=(8, 12, 10), mode="trilinear"), 1)
    assert got2.shape == (1, 3, 16, 12) and torch.allclose(got2, expected2, atol=1e-6)
    assert got3.shape == (1, 3, 8, 12, 10) and torch.allclose(got3, expected3, atol=1e-6)


def test_hugging_face_segformer_works_without_a_wrapper():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.SegformerConfig(
        num_channels=1, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
        num_attention_heads=[1, 1], decoder_hidden_size=16, num_labels=3, patch_sizes=[7, 3],
        strides=[4, 2], mlp_ratios=[2, 2])
    model = transformers.SegformerForSemanticSegmentation(config)
    model.train()
    image = torch.rand(1, 32, 32)
    explainer = Probe(model, progress=False)
    explanation = explainer.explain(image, Target(2, np.ones((32, 32))))
    with torch.no_grad():
        logits = model.eval()(image[None]).logits  # 1/4 of the input's size
    model.train()
    assert logits.shape == (1, 3, 8, 8)
    expected = torch.softmax(F.interpolate(logits, size=(32, 32), mode="bilinear"), 1)[0, 2]
    assert np.allclose(explanation.saliency, expected.numpy(), atol=1e-5)
    assert all(module.training for module in model.modules())  # modes restored


def test_read_takes_a_key_an_attribute_or_a_function():
    x = torch.rand(2, 1, 4, 4)
    masks = _logits(x)
    expected = torch.softmax(masks, 1)
    by_key = ModelAdapter(Fixed(lambda v: {"masks": _logits(v), "boxes": None}), read="masks")
    assert torch.allclose(by_key(x), expected)

    class Detections:
        def __init__(self, v):
            self.masks = _logits(v)

    assert torch.allclose(ModelAdapter(Fixed(Detections), read="masks")(x), expected)
    function = ModelAdapter(Fixed(lambda v: {"heads": [_logits(v) * 0, _logits(v)]}),
                            read=lambda out: out["heads"][1])
    assert torch.allclose(function(x), expected)
    with pytest.raises(ValueError, match=r"^read: the model's output has no key 'mask' \(keys "
                                         r"\['boxes', 'masks'\]\)"):
        ModelAdapter(Fixed(lambda v: {"masks": v, "boxes": v}), read="mask")(x)
    with pytest.raises(ValueError, match=r"^read: the model's output \(Detections\) has no key or "
                                         "attribute 'logits'"):
        ModelAdapter(Fixed(Detections), read="logits")(x)
    with pytest.raises(ValueError, match=r"^read: expected the model's output tensor .* got list"):
        ModelAdapter(Fixed(lambda v: [v]), read=lambda out: out)(x)
    for bad in (3, "", ["logits"]):
        with pytest.raises(TypeError, match="^read: expected None, a key"):
            ModelAdapter(nn.Identity(), read=bad)


def test_an_unreadable_output_says_how_to_read_it():
    with pytest.raises(ValueError, match=r"model output: got dict \(keys \['aux', 'masks'\]\); "
                                         r"supported outputs .* pass read="):
        ModelAdapter(Fixed(lambda v: {"masks": v, "aux": v}))(torch.rand(1, 1, 4, 4))


def test_a_callable_that_is_no_module_is_a_model_for_black_box_methods():
    weights = torch.tensor([2.0, -1.0])

    def model(x):  # a plain function: no parameters, no modes
        return _logits(x * weights.sum())

    image = torch.rand(1, 6, 6)
    explanation = Probe(model, progress=False).explain(image, Target(1, np.ones((6, 6))))
    expected = torch.softmax(_logits(image[None] * weights.sum()), 1)[0, 1]
    assert np.allclose(explanation.saliency, expected.numpy(), atol=1e-6)
    adapter = ModelAdapter(model)
    assert not adapter.is_module and adapter.dtype == torch.float32
    assert adapter.device == torch.device("cpu")
    with explanation_mode(model) as same:
        assert same is model
    with pytest.raises(TypeError, match=r"^model: Seg-Grad-CAM needs a torch.nn.Module \(it hooks "
                                        r"a layer\), got function"):
        adapter.require_module("Seg-Grad-CAM", "it hooks a layer")
    assert ModelAdapter(nn.Identity()).require_module("x") is not None
    with pytest.raises(TypeError, match="^model: expected a torch.nn.Module or a callable"):
        Probe(np.zeros(3))


def _caught(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [w for w in caught if issubclass(w.category, UserWarning)]


def test_auto_says_once_when_it_guesses_and_the_guess_can_be_overridden():
    # one-channel logits that happen to lie in [0, 1] (a weak model early in training)
    model = Fixed(lambda x: x[:, :1] * 0.8 + 0.1)
    image = torch.rand(1, 1, 6, 6)
    adapter = ModelAdapter(model)
    first, said = _caught(lambda: adapter(image))
    assert len(said) == 1 and "output='auto'" in str(said[0].message)
    assert "output='logits'" in str(said[0].message) and adapter.output == "probabilities"
    assert torch.allclose(first[:, 1], image[:, 0] * 0.8 + 0.1)
    _, again = _caught(lambda: adapter(image))
    assert again == []  # once per adapter
    told, quiet = _caught(lambda: ModelAdapter(model, output="logits")(image))
    assert quiet == [] and torch.allclose(told[:, 1], torch.sigmoid(image[:, 0] * 0.8 + 0.1))
    # values outside [0, 1] can only be logits, and softmax probabilities sum to 1: no guess
    for certain in (lambda x: x[:, :1] * 4 - 2, lambda x: torch.softmax(_logits(x), 1)):
        _, none = _caught(lambda m=certain: ModelAdapter(Fixed(m))(image))
        assert none == []
    # channels in [0, 1] not summing to 1: logits of classes, or probabilities of labels?
    labels = Fixed(lambda x: torch.sigmoid(_logits(x)))
    _, said = _caught(lambda: ModelAdapter(labels)(image))
    assert len(said) == 1 and "activation='sigmoid'" in str(said[0].message)
    _, said = _caught(lambda: ModelAdapter(labels, activation="sigmoid")(image))
    assert len(said) == 1 and "read as probabilities" in str(said[0].message)
    _, none = _caught(lambda: ModelAdapter(labels, output="probabilities",
                                           activation="sigmoid")(image))
    assert none == []


def test_explainer_warns_once_for_its_guess_over_several_images():
    model = Fixed(lambda x: x[:, :1] * 0.5 + 0.25)
    explainer = Probe(model, progress=False)
    _, said = _caught(lambda: explainer.explain_batch([torch.rand(1, 5, 5) for _ in range(3)]))
    assert [str(w.message).startswith("output='auto'") for w in said].count(True) == 1
