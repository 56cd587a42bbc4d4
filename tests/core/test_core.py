import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import Fixed, NonFiniteModel, PatchModel, patch_image
from torch import nn

from interpret_segmentation import HDM, RISE, SegmentationRISE
from interpret_segmentation.core import (
    ClassIndexError,
    Explanation,
    ModelAdapter,
    Perturbations,
    Target,
    as_image_batch,
    changed_items,
    evaluation_mode,
    predicted_mask,
    resolve_target,
)
from interpret_segmentation.core.validate import (
    check_class_index,
    check_device,
    check_int,
    check_number,
    check_positive,
)
from interpret_segmentation.methods.gradcam import SegGradCAM
from interpret_segmentation.methods.misure import MiSuRe


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


@pytest.mark.parametrize("make", [lambda x: x.sum(), lambda x: {"aux": x}, lambda x: (),
                                  lambda x: "text", lambda x: x[:1].repeat(1, 1, 1, 1, 1)])
def test_unreadable_output_names_supported_shapes(make):
    with pytest.raises(ValueError, match="supported outputs"):
        ModelAdapter(Fixed(make))(torch.zeros(2, 1, 4, 4))


def test_adapter_rejects_bad_arguments():
    with pytest.raises(TypeError, match="model"):
        ModelAdapter("not a model")
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
    with pytest.raises(ValueError, match="target: expected a class index in 0..2 .*got 3"):
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

    def make(start, stop):
        return slice(start, stop), base * torch.arange(start, stop,
                                                       dtype=torch.float32)[:, None, None, None]

    run = Perturbations(adapter, count, make, batch_size=batch_size, progress=False)
    for items, probabilities in run:
        seen[items] = probabilities
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

    def make(start, stop):
        return stop - start, torch.rand(stop - start, 1, 3, 3)

    run = Perturbations(ModelAdapter(Picky()), 40, make, batch_size="auto", progress=False)
    sizes = [size for size, _ in run]
    assert run.passes == 40 and sum(sizes) == 40 and max(sizes) <= 4
    with pytest.raises(RuntimeError, match="out of memory"):
        list(Perturbations(ModelAdapter(Picky()), 40, make, batch_size=8, progress=False))


def test_changed_items_finds_the_perturbations_that_alter_the_input():
    reference = torch.zeros(1, 1, 4, 4)

    def make(start, stop):
        inputs = reference.repeat(stop - start, 1, 1, 1)
        for row, item in enumerate(range(start, stop)):
            if item % 3 == 0:
                inputs[row, 0, item % 4, 0] = 1.0
        return None, inputs

    assert changed_items(20, make, reference, chunk=7).tolist() == list(range(0, 20, 3))
    assert changed_items(0, make, reference).tolist() == []
    with pytest.raises(ValueError, match=r"perturbed inputs: expected \(payload, a tensor \(3, C, "):
        changed_items(3, lambda a, b: (None, reference), reference)
    with pytest.raises(ValueError, match="perturbed inputs"):
        list(Perturbations(ModelAdapter(nn.Identity()), 3, lambda a, b: reference,
                           batch_size=3, progress=False))


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


# -- bad input: one clear error from the library, never a hang or a silent wrong map -----------

NOT_NUMBERS = [True, False, np.bool_(True), None, "0.5", [0.5], torch.tensor(0.5)]
NON_FINITE = [float("nan"), float("inf"), -float("inf"), np.float32("nan"), np.float64("inf")]


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6)),
       st.sampled_from([float, np.float32, np.float64, int, np.int64]))
@settings(max_examples=300, deadline=None)
def test_check_number_accepts_every_finite_number_in_range_and_nothing_else(value, kind):
    if kind in (int, np.int64):
        value = int(value) if math.isfinite(value) and abs(value) < 2**62 else value
    try:
        with np.errstate(over="ignore"):
            value = kind(value)
    except (OverflowError, ValueError):
        return
    inside = math.isfinite(value) and 0 < value <= 1
    if inside:
        assert check_number(value, "tau", 0, 1, open_low=True) == float(value)
    else:
        with pytest.raises(ValueError, match=r"tau: expected a number in \(0, 1\], got"):
            check_number(value, "tau", 0, 1, open_low=True)


@pytest.mark.parametrize("value", NOT_NUMBERS + NON_FINITE)
def test_checks_refuse_bools_non_numbers_nan_and_inf(value):
    for check in (lambda v: check_number(v, "lam", 0), lambda v: check_positive(v, "lr", float),
                  lambda v: check_int(v, "steps"), lambda v: check_positive(v, "n")):
        with pytest.raises(ValueError, match=r"^(lam|lr|steps|n): expected"):
            check(value)
    assert check_positive(np.int64(3), "n") == 3 and check_int(np.int32(-2), "k") == -2
    assert check_positive(np.float32(0.5), "lr", float) == 0.5


@given(st.integers(-50, 50), st.integers(1, 6))
def test_class_index_is_refused_outside_the_classes_also_when_negative(index, classes):
    if 0 <= index < classes:
        assert check_class_index(index, classes) == index
        return
    with pytest.raises(ClassIndexError,
                       match=rf"^class_index: expected a class index in 0\.\.{classes - 1} .*got {index}"):
        check_class_index(index, classes)
    assert issubclass(ClassIndexError, IndexError) and issubclass(ClassIndexError, ValueError)


def test_class_index_must_be_an_int():
    for bad in (1.0, True, "1", None):
        with pytest.raises(TypeError, match="class_index: expected an int"):
            check_class_index(bad, 3)
    with pytest.raises(IndexError, match="negative indices are not counted from the end"):
        resolve_target(-1, torch.rand(1, 3, 4, 4))


def test_devices_this_machine_lacks_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(ValueError, match="device: 'cuda(:0)?' asked for, but CUDA is not "
                                             "available"):
            ModelAdapter(nn.Identity(), device=device)
        with pytest.raises(ValueError, match="device"):
            HDM(PatchModel(), device=device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="device: 'cuda:3' asked for, but this machine has 1"):
        check_device("cuda:3")
    for bad in ("gpu", "", "cpu:x", 3.5):
        with pytest.raises(ValueError, match="device: expected a torch device"):
            check_device(bad)
    assert check_device("cpu") == torch.device("cpu")
    # every other type torch names: refused unless this machine has it (none here is faked)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for other in ("mps", "xpu", "xla", "hpu", "vulkan", "mtia", "privateuseone", "ipu"):
        with pytest.raises(ValueError, match=f"device: '{other}' asked for, but .* is not "
                                             "available here; use 'cpu'"):
            check_device(other)
    with pytest.raises(ValueError, match="device: 'meta' tensors hold no values"):
        check_device("meta")


def test_image_without_pixels_or_channels_is_refused():
    for shape in [(0, 5), (5, 0), (0, 4, 4), (1, 0, 4, 4), (1, 1, 0, 0)]:
        with pytest.raises(ValueError, match="image: expected at least one channel and 1 x 1"):
            as_image_batch(np.zeros(shape))


def test_nan_or_inf_model_output_names_the_first_batch_where_it_happened():
    def spoil_item_5(x):
        out = x.mean(1, keepdim=True).clone()
        out[x[:, 0, 0, 0] == 5] = float("nan")
        return out

    inputs = torch.arange(10.0)[:, None, None, None].expand(10, 1, 3, 3)
    seen = []
    with pytest.raises(ValueError, match=r"^model output in batch 2 \(tests 4:6 of 10\): 9 of "
                                         r"18 values are NaN or inf$"):
        for start, _ in Perturbations(ModelAdapter(Fixed(spoil_item_5)), 10,
                                      lambda a, b: (a, inputs[a:b]), batch_size=2,
                                      progress=False, description="tests"):
            seen.append(start)
    assert seen == [0, 2]  # nothing after the spoilt batch was consumed
    adapter = ModelAdapter(Fixed(lambda x: torch.full_like(x, -float("inf"))))
    with pytest.raises(ValueError, match="model output on the unperturbed image: 9 of 9"):
        adapter.first_pass(torch.zeros(1, 1, 3, 3))


def _explainers(model):
    """One of each method, small and fast, on ``model``."""
    return {
        "hdm": lambda: HDM(model, circle_size=9, offset=8, batch_size=4, progress=False),
        "rise": lambda: RISE(model, n_masks=12, s=4, batch_size=4, progress=False),
        "SegmentationRISE": lambda: _segmentation_rise(model),
        "gradcam": lambda: SegGradCAM(model, "conv", progress=False),
        "misure": lambda: MiSuRe(model, mask_size=16, iterations=3, batch_size=2,
                                 progress=False),
    }


def _segmentation_rise(model):
    explainer = SegmentationRISE(model, (48, 48), "cpu", batch_size=4, progress=False)
    explainer.generate_masks(12, 4, 0.5)
    return explainer


def _explain_patch(explainer):
    if isinstance(explainer, SegmentationRISE):
        return explainer(patch_image()).max()
    return explainer.explain(patch_image())


WHERE_PERTURBED = {"hdm": r"in batch \d+ \(HDM masks \d+:\d+ of \d+\)",
                   "rise": r"in batch 0 \(RISE masks 0:4 of 12\)",
                   "SegmentationRISE": r"in batch 0 \(RISE masks 0:4 of 12\)",
                   "misure": r"in batch 0 \(MiSuRe stage 1 dilations 0:2 of 33\)"}


@pytest.mark.parametrize("method", ["hdm", "rise", "SegmentationRISE", "gradcam", "misure"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_every_method_refuses_a_model_output_with_nan_or_inf(method, value):
    model = NonFiniteModel(value, "always")
    with pytest.raises(ValueError, match=r"^model output on the unperturbed image: \d+ of \d+ "
                                         "values are NaN or inf$"):
        _explain_patch(_explainers(model)[method]())
    if method in WHERE_PERTURBED:  # finite on the image, spoilt once the patch is perturbed
        with pytest.raises(ValueError, match=rf"^model output {WHERE_PERTURBED[method]}: "):
            _explain_patch(_explainers(NonFiniteModel(value, "perturbed"))[method]())


@pytest.mark.parametrize("method", ["hdm", "rise", "SegmentationRISE", "gradcam", "misure"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_every_method_explains_a_float64_or_bfloat16_model_with_a_float32_image(method, dtype):
    torch.manual_seed(0)
    reference = NonFiniteModel(when="never")
    model = NonFiniteModel(when="never")
    model.load_state_dict(reference.state_dict())
    model.to(dtype)
    expected = _explain_patch(_explainers(reference)[method]())
    got = _explain_patch(_explainers(model)[method]())
    expected = expected if isinstance(expected, np.ndarray) else expected.saliency
    got = got if isinstance(got, np.ndarray) else got.saliency
    assert got.dtype == np.float32 and np.isfinite(got).all()
    scale = max(1e-6, float(np.abs(expected).max()))
    assert np.abs(got - expected).max() <= (0.05 if dtype == torch.bfloat16 else 1e-4) * scale
    assert all(p.dtype == dtype for p in model.parameters())  # the model is left as it was


def test_an_image_whose_channels_do_not_fit_the_model_is_named():
    from interpret_segmentation.models import UNet

    for model in (nn.Sequential(nn.Conv2d(3, 1, 3, padding=1)), UNet(in_channels=3, width=4,
                                                                     depth=1)):
        with pytest.raises(ValueError, match=r"^image: image has 1 channel\(s\); the model's "
                                             r"first convolution \(.+\) expects 3"):
            RISE(model, n_masks=2, progress=False).explain(torch.rand(1, 12, 12))


def test_an_image_too_small_for_the_model_names_the_smallest_size():
    model = nn.Sequential(nn.Conv2d(1, 4, 5), nn.MaxPool2d(2), nn.Conv2d(4, 1, 3))
    # needs (side - 4) // 2 >= 3: side >= 10
    for side in (1, 3, 9):
        with pytest.raises(ValueError, match=rf"^image: {side} x {side} pixels is too small for "
                                             r"the model; the smallest square it runs on is 10 "
                                             "x 10 pixels"):
            RISE(model, n_masks=2, progress=False).explain(torch.rand(1, side, side))
    assert RISE(model, n_masks=2, progress=False).explain(torch.rand(1, 10, 10))

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("shape '[1, 7]' is invalid for input of size 16\nmore detail")

    with pytest.raises(ValueError, match=r"^image: the model failed on an image of shape "
                                         r"\(1, 1, 4, 4\): RuntimeError: shape '\[1, 7\]' is "
                                         "invalid for input of size 16$"):
        RISE(Broken(), n_masks=2, progress=False).explain(torch.rand(1, 4, 4))


def test_explanation_load_refuses_truncated_or_foreign_files(tmp_path):
    explanation = Explanation(saliency=np.ones((3, 4)), method="demo", target_class=1)
    path = explanation.save(tmp_path / "good")
    meta = (tmp_path / "good.json").read_text()
    npz = path.read_bytes()

    def pair(name, npz_bytes, json_text):
        (tmp_path / f"{name}.npz").write_bytes(npz_bytes)
        json_bytes = json_text if isinstance(json_text, bytes) else json_text.encode()
        (tmp_path / f"{name}.json").write_bytes(json_bytes)
        return tmp_path / f"{name}.npz"

    np.save(tmp_path / "single.npy", np.ones((3, 4)))
    buffer = tmp_path / "other.npz"
    np.savez(buffer, weights=np.ones(3))
    cases = {
        "truncated npz": (pair("a", npz[: len(npz) // 2], meta), r"a\.npz"),
        "empty npz": (pair("b", b"", meta), r"b\.npz"),
        "npy as npz": (pair("c", (tmp_path / "single.npy").read_bytes(), meta), r"c\.npz"),
        "npz of other arrays": (pair("d", buffer.read_bytes(), meta), r"d\.npz"),
        "truncated json": (pair("e", npz, meta[: len(meta) // 2]), r"e\.json"),
        "foreign json": (pair("f", npz, '{"name": "x"}'), r"f\.json"),
        "json list": (pair("g", npz, "[1, 2]"), r"g\.json"),
        "binary json": (pair("h", npz, b"\xff\xfe\x00"), r"h\.json"),
        "4-D saliency": (pair("i", _npz_bytes(tmp_path, np.ones((2, 2, 2, 2))), meta), r"i\.npz"),
    }
    for label, (bad, named) in cases.items():
        with pytest.raises(ValueError, match=rf"{named}: not an Explanation written by "
                                             "Explanation.save"):
            Explanation.load(bad)
        assert label


def _npz_bytes(tmp_path, saliency):
    np.savez(tmp_path / "tmp.npz", saliency=saliency)
    return (tmp_path / "tmp.npz").read_bytes()


@pytest.mark.parametrize("existing", [False, True])
def test_explanation_save_writes_both_files_or_neither(tmp_path, monkeypatch, existing):
    import os

    explanation = Explanation(saliency=np.ones((3, 4)), method="demo", target_class=1)
    if existing:
        Explanation(saliency=np.zeros((3, 4)), method="old", target_class=1).save(tmp_path / "e")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    link, rename = os.link, os.replace

    def fail_for_json(move):
        def moved(source, target, *args, **kwargs):
            if str(target).endswith("e.json"):
                raise OSError("no space left on device")
            return move(source, target, *args, **kwargs)
        return moved

    monkeypatch.setattr(os, "link", fail_for_json(link))
    monkeypatch.setattr(os, "replace", fail_for_json(rename))
    with pytest.raises(OSError, match="no space"):
        explanation.save(tmp_path / "e", overwrite=existing)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    monkeypatch.setattr("json.dump", lambda *a, **k: (_ for _ in ()).throw(TypeError("not JSON")))
    with pytest.raises(TypeError):
        explanation.save(tmp_path / "e", overwrite=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    explanation.save(tmp_path / "e", overwrite=True)
    assert Explanation.load(tmp_path / "e").method == "demo"
