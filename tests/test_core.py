import numpy as np
import pytest
import torch
from torch import nn

from interpret_segmentation.core import (
    Explanation,
    ModelAdapter,
    Target,
    as_image_batch,
    changed_items,
    evaluate_perturbations,
    evaluation_mode,
    predicted_mask,
    resolve_target,
)


class Fixed(nn.Module):
    """Returns whatever ``make(x)`` builds: to test how outputs are read."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def forward(self, x):
        return self.make(x)


def test_one_channel_logits_become_two_classes():
    logits = torch.tensor([[-2.0, 0.0], [3.0, 1.0]])
    adapter = ModelAdapter(Fixed(lambda x: logits.expand(x.shape[0], 1, 2, 2)))
    probabilities = adapter(torch.zeros(3, 1, 2, 2))
    assert probabilities.shape == (3, 2, 2, 2)
    assert torch.allclose(probabilities[:, 1], torch.sigmoid(logits))
    assert torch.allclose(probabilities.sum(1), torch.ones(3, 2, 2))


@pytest.mark.parametrize("form", ["bhw", "dict", "tuple", "list"])
def test_output_forms(form):
    values = torch.rand(2, 4, 4)
    make = {
        "bhw": lambda x: values,
        "dict": lambda x: {"out": values[:, None], "aux": None},
        "tuple": lambda x: (values[:, None], values),
        "list": lambda x: [values[:, None]],
    }[form]
    probabilities = ModelAdapter(Fixed(make))(torch.zeros(2, 1, 4, 4))
    # values in [0, 1]: read as probabilities
    assert torch.allclose(probabilities[:, 1], values)


def test_multiclass_logits_softmax_and_upsampling():
    logits = torch.randn(1, 3, 2, 2) * 3
    adapter = ModelAdapter(Fixed(lambda x: logits), output="logits")
    probabilities = adapter(torch.zeros(1, 1, 8, 8))
    assert probabilities.shape == (1, 3, 8, 8)
    assert torch.allclose(probabilities.sum(1), torch.ones(1, 8, 8), atol=1e-6)
    expected = torch.softmax(torch.nn.functional.interpolate(logits, size=(8, 8), mode="bilinear"), 1)
    assert torch.allclose(probabilities, expected, atol=1e-6)


@pytest.mark.parametrize("make", [lambda x: x.sum(), lambda x: {"logits": x}, lambda x: (),
                                  lambda x: "text", lambda x: x[:1].repeat(1, 1, 1, 1, 1)])
def test_unreadable_output_names_supported_shapes(make):
    with pytest.raises(ValueError, match="supported outputs"):
        ModelAdapter(Fixed(make))(torch.zeros(2, 1, 4, 4))


def test_adapter_rejects_bad_arguments():
    with pytest.raises(TypeError, match="model"):
        ModelAdapter(lambda x: x)
    with pytest.raises(ValueError, match="output"):
        ModelAdapter(nn.Identity(), output="softmax")


def test_evaluation_mode_restores_each_module_also_after_error():
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1), nn.Dropout())
    model.train()
    model[2].eval()
    with evaluation_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == [True, True, True, False]
    with pytest.raises(KeyError), evaluation_mode(model):
        raise KeyError
    assert [m.training for m in model.modules()] == [True, True, True, False]


def test_image_validation():
    assert as_image_batch(np.zeros((5, 6))).shape == (1, 1, 5, 6)
    assert as_image_batch(torch.zeros(3, 5, 6)).shape == (1, 3, 5, 6)
    with pytest.raises(ValueError, match=r"image: expected shape .* got \(2, 1, 5, 6\)"):
        as_image_batch(torch.zeros(2, 1, 5, 6))
    with pytest.raises(ValueError, match="image: expected shape"):
        as_image_batch(np.zeros(5))
    bad = np.zeros((5, 6))
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        as_image_batch(bad)
    with pytest.raises(TypeError, match="image"):
        as_image_batch([[0.0]])


def test_targets():
    probabilities = torch.zeros(1, 3, 4, 4)
    probabilities[0, 0] = 1
    probabilities[0, :, 0, 0] = torch.tensor([0.1, 0.7, 0.2])
    resolved = resolve_target(None, probabilities)
    assert resolved.class_index == 1 and resolved.pixels.sum() == 1 and resolved.pixels[0, 0]
    assert resolve_target(2, probabilities).pixels.sum() == 0
    region = np.zeros((4, 4))
    region[2:, 2:] = 1
    resolved = resolve_target(Target(0, region), probabilities)
    assert resolved.pixels.sum() == 4 and not resolved.from_prediction
    with pytest.raises(ValueError, match="target: class index 3"):
        resolve_target(3, probabilities)
    with pytest.raises(ValueError, match=r"target.region: expected a mask of the image's size \(4, 4\)"):
        resolve_target(Target(1, np.zeros((3, 4))), probabilities)
    with pytest.raises(TypeError, match="target"):
        resolve_target("cat", probabilities)


def _run(batch_size, count=23):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1))
    adapter = ModelAdapter(model, output="logits")
    base = torch.rand(1, 1, 6, 6)
    seen = torch.zeros(count, 2, 6, 6)

    def make_batch(start, stop):
        return base * torch.arange(start, stop, dtype=torch.float32)[:, None, None, None]

    def consume(start, stop, probabilities):
        seen[start:stop] = probabilities

    run = evaluate_perturbations(adapter, count, make_batch, consume, batch_size=batch_size,
                                 progress=False)
    return seen, run


@pytest.mark.parametrize("batch_size", [2, 7, "auto"])
def test_batches_same_results_for_any_batch_size(batch_size):
    reference, run = _run(1)
    assert run.passes == 23 and run.batch_size == 1
    seen, run = _run(batch_size)
    assert run.passes == 23
    assert torch.allclose(seen, reference, atol=1e-6)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, "big", True])
def test_batch_size_validation(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        _run(batch_size)


def test_auto_batch_size_backs_off_on_out_of_memory():
    class Picky(nn.Module):
        def forward(self, x):
            if x.shape[0] > 4:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
            return x

    sizes = []
    run = evaluate_perturbations(
        ModelAdapter(Picky()), 40, lambda a, b: torch.rand(b - a, 1, 3, 3),
        lambda a, b, p: sizes.append(b - a), batch_size="auto", progress=False)
    assert run.passes == 40 and max(sizes) <= 4
    with pytest.raises(RuntimeError, match="out of memory"):
        evaluate_perturbations(ModelAdapter(Picky()), 40, lambda a, b: torch.rand(b - a, 1, 3, 3),
                               lambda a, b, p: None, batch_size=8, progress=False)


def test_changed_items_finds_the_perturbations_that_alter_the_input():
    reference = torch.zeros(1, 1, 4, 4)

    def make(start, stop):
        inputs = reference.repeat(stop - start, 1, 1, 1)
        for row, item in enumerate(range(start, stop)):
            if item % 3 == 0:
                inputs[row, 0, item % 4, 0] = 1.0
        return inputs

    assert changed_items(20, make, reference, chunk=7).tolist() == list(range(0, 20, 3))
    assert changed_items(0, make, reference).tolist() == []
    with pytest.raises(ValueError, match=r"perturbed inputs: expected a tensor \(3, C, H, W\)"):
        changed_items(3, lambda a, b: reference, reference)
    with pytest.raises(ValueError, match="perturbed inputs"):
        evaluate_perturbations(ModelAdapter(nn.Identity()), 3, lambda a, b: reference,
                               lambda a, b, p: None, batch_size=3, progress=False)


def test_explanation_save_load_round_trip(tmp_path):
    explanation = Explanation(
        saliency=np.arange(12, dtype=np.float64).reshape(3, 4), method="demo", target_class=2,
        parameters={"offset": np.int64(5), "sizes": (1, 2)}, timings={"total": 1.5},
        arrays={"distances": np.ones((2, 2))}, info={"baseline": np.float32(0.5)})
    assert explanation.saliency.dtype == np.float32
    path = explanation.save(tmp_path / "e")
    assert path.name == "e.npz" and (tmp_path / "e.json").exists()
    loaded = Explanation.load(path)
    assert np.array_equal(loaded.saliency, explanation.saliency)
    assert np.array_equal(loaded.arrays["distances"], np.ones((2, 2)))
    assert loaded.parameters == {"offset": 5, "sizes": [1, 2]}
    assert loaded.info == {"baseline": 0.5} and loaded.target_class == 2
    with pytest.raises(FileExistsError, match="overwrite"):
        explanation.save(tmp_path / "e.npz")
    explanation.save(tmp_path / "e.npz", overwrite=True)
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(FileNotFoundError):
        Explanation.load(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="saliency"):
        Explanation(saliency=np.zeros(3), method="x", target_class=1)
    assert np.allclose(loaded.normalized().max(), 1) and loaded.normalized().min() == 0


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_predicted_mask_is_argmax_with_ties_to_the_lower_class(classes):
    generator = torch.Generator().manual_seed(classes)
    probabilities = torch.randint(0, 3, (4, classes, 6, 7), generator=generator).float()  # ties
    for class_index in range(classes):
        expected = probabilities.argmax(1) == class_index
        assert torch.equal(predicted_mask(probabilities, class_index), expected)
