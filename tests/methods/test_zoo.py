"""Every segmentation method on every model of ``tests/zoo.py``, without a wrapper: a finite map
of the input's spatial shape, and the model left exactly as it was, also after an error."""

import warnings

import numpy as np
import pytest
from oracles import assert_unchanged, model_state
from zoo import SETUPS, Setup, box

from interpret_segmentation import methods
from interpret_segmentation.methods.deepdream import analyze


def fast_options(name: str, spatial: tuple[int, ...]) -> dict:
    """Settings that run each method in about a second on the zoo's small inputs."""
    side = min(spatial)
    return {"hdm": {"circle_size": side // 2 - 1, "offset": side // 2},
            "rise": {"n_masks": 8, "s": 4},
            "gradcam": {},
            "misure": {"iterations": 3, "mask_size": 8, "kernel_size": 2 * (side // 4) + 1},
            }[name]


SEGMENTATION_METHODS = methods.available("segmentation")


def built(setup: Setup):
    if setup.needs:
        pytest.importorskip(setup.needs)
    return setup.build(1)


def explain(name: str, setup: Setup, model, image, target, **own):
    spatial = tuple(image.shape[2:])
    options = {"progress": False, **setup.options}
    if name == "deepdream":
        options.pop("baseline", None)
        path = analyze(model, image, target, steps=3, features=[], record_images=False, **options)
        return path.masks[-1]
    explainer = methods.get(name).build(model, **options, **(own or fast_options(name, spatial)))
    return explainer.explain(image, target).saliency


@pytest.mark.parametrize("name", [*SEGMENTATION_METHODS, "deepdream"])
@pytest.mark.parametrize("setup", SETUPS, ids=[setup.name for setup in SETUPS])
def test_every_method_on_every_model(setup, name):
    model, image, target = built(setup)
    before = model_state(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no guess, no empty target, no baseline left unchanged
        result = explain(name, setup, model, image, target)
    assert result.shape == tuple(image.shape[2:])
    assert np.isfinite(result.astype(np.float64)).all()
    assert_unchanged(before, model)


@pytest.mark.parametrize("setup", SETUPS, ids=[setup.name for setup in SETUPS])
def test_model_left_as_it_was_after_an_error(setup):
    model, image, target = built(setup)
    before = model_state(model)
    for name in SEGMENTATION_METHODS:
        explainer = methods.get(name).build(model, progress=False, **setup.options,
                                            **fast_options(name, tuple(image.shape[2:])))
        with pytest.raises(ValueError, match="class_index|target"):
            explainer.explain(image, 40)  # no model here has 40 classes: found after a pass
        assert_unchanged(before, model)


BRIGHT_BOX_MODELS = [setup for setup in SETUPS if setup.needs is None]


# not Grad-CAM: its layer here is a random convolution that adds a tenth to the logits
@pytest.mark.parametrize("name", ["hdm", "rise", "misure"])
@pytest.mark.parametrize("setup", BRIGHT_BOX_MODELS, ids=[s.name for s in BRIGHT_BOX_MODELS])
def test_maps_find_the_bright_box(setup, name):
    """The hand-made models segment the bright box from its own pixels: every map weighs the
    box (grown by the models' 5-pixel reach) more than the rest of the image: by more than twice
    for HDM and MiSuRe, whose maps are 0 where nothing matters; RISE's Dice-weighted mean has
    an offset everywhere."""
    model, image, target = built(setup)
    finer = {"hdm": {"circle_size": 5, "offset": 2}, "rise": {"n_masks": 200, "s": 8}}
    saliency = explain(name, setup, model, image, target, **finer.get(name, {}))
    saliency = np.abs(saliency.astype(np.float64))
    near = np.zeros(saliency.shape, bool)
    near[tuple(slice(s.start - 2, s.stop + 2) for s in box(saliency.shape))] = True
    assert saliency[near].mean() > (1 if name == "rise" else 2) * saliency[~near].mean()
