"""``explain`` on volumes and with the options every explainer takes: --spatial-dims,
--spacing, --baseline, --output, --activation, --read; NIfTI and .npy inputs."""

import sys

import numpy as np
import pytest
import torch
from oracles import cli_error
from PIL import Image

from interpret_segmentation import Explanation
from interpret_segmentation.cli import main
from interpret_segmentation.training import default_unet, save_checkpoint

USER_MODELS = '''
import torch
from torch import nn


def volume():
    """A 3-D segmenter: one channel in, two classes out."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))


def image():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1))


class Threshold(nn.Module):
    """No convolution: class 1 where the first channel is above 0.5, as two-class logits."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(8.0))

    def forward(self, x):
        score = self.gain * (x[:, :1] - 0.5)
        return torch.cat([-score, score], dim=1)


def threshold():
    return Threshold()
'''


@pytest.fixture
def models(tmp_path, monkeypatch):
    """Checkpoints of the user models above, by name, and their module importable."""
    (tmp_path / "usermodels.py").write_text(USER_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "usermodels", raising=False)
    import usermodels

    torch.manual_seed(0)
    paths = {name: save_checkpoint(getattr(usermodels, name)(), tmp_path / f"{name}.pth")
             for name in ("volume", "image", "threshold")}
    paths["unet"] = save_checkpoint(default_unet(), tmp_path / "unet.pth")
    return paths


def _model(models, name):
    if name == "unet":
        return ["--checkpoint", str(models[name])]
    return ["--model", f"usermodels:{name}", "--checkpoint", str(models[name])]


def _nifti(path, data, zooms):
    nibabel = pytest.importorskip("nibabel", reason="NIfTI files need nibabel (the [nifti] extra)")
    nibabel.save(nibabel.Nifti1Image(data, np.diag([*zooms, 1.0])), path)
    return path


class Built(Exception):
    pass


@pytest.fixture
def captured(monkeypatch):
    """``Method.build`` replaced: it raises Built(model, options) instead of building."""
    from interpret_segmentation.methods import registry

    def build(self, model, **options):
        raise Built(model, options)

    monkeypatch.setattr(registry.Method, "build", build)


def _options(tmp_path, *argv):
    with pytest.raises(Built) as built:
        main(["explain", "rise", *argv, "--out", str(tmp_path / "out"), "--no-progress"])
    return built.value.args[1]


def test_explainer_options_reach_the_explainer(tmp_path, models, captured, capsys):
    Image.fromarray(np.zeros((16, 12), np.uint8)).save(tmp_path / "x.png")
    png = ["--image", str(tmp_path / "x.png"), *_model(models, "unet")]
    options = _options(tmp_path, *png)
    assert options["spatial_dims"] == 2  # the U-Net's first convolution is 2-D
    assert options["output"] == "auto" and options["activation"] == "auto"
    assert not {"spacing", "baseline", "read"} & set(options)  # the explainer's defaults
    options = _options(tmp_path, *png, "--baseline", "mean", "--output", "logits",
                       "--activation", "sigmoid", "--spacing", "0.5", "0.25", "--read", "logits")
    assert {key: options[key] for key in ("baseline", "output", "activation", "spacing", "read")} \
        == {"baseline": "mean", "output": "logits", "activation": "sigmoid",
            "spacing": (0.5, 0.25), "read": "logits"}
    for text, value in (("-1.5", -1.5), ("0", 0.0), ("min", "min"), ("blur", "blur")):
        assert _options(tmp_path, *png, "--baseline", text)["baseline"] == value
    fill = np.random.default_rng(0).random((16, 12)).astype(np.float32)
    np.save(tmp_path / "fill.npy", fill)
    baseline = _options(tmp_path, *png, "--baseline", str(tmp_path / "fill.npy"))["baseline"]
    assert isinstance(baseline, torch.Tensor) and np.array_equal(baseline.numpy(), fill)
    assert "read --baseline" in capsys.readouterr().out


def test_a_nifti_volume_is_explained_in_3_d_with_the_header_spacing(tmp_path, models, captured,
                                                                     capsys):
    data = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)  # (x, y, z)
    path = _nifti(tmp_path / "ct.nii.gz", data, (0.5, 0.8, 2.5))
    for model in ("volume", "threshold"):  # a Conv3d, and no convolution at all: the file says
        options = _options(tmp_path, "--image", str(path), *_model(models, model))
        assert options["spatial_dims"] == 3 and options["spacing"] == pytest.approx((0.5, 0.8, 2.5))
    said = capsys.readouterr().out
    assert f"read --image {path}: shape (6, 5, 4), float32" in said and "spacing 0.5 x 0.8 x 2.5" in said
    options = _options(tmp_path, "--image", str(path), *_model(models, "volume"),
                       "--nifti-axes", "zyx")
    assert options["spacing"] == pytest.approx((2.5, 0.8, 0.5))
    assert "shape (4, 5, 6)" in capsys.readouterr().out
    options = _options(tmp_path, "--image", str(path), *_model(models, "volume"),
                       "--spacing", "3", "1", "1")
    assert options["spacing"] == (3.0, 1.0, 1.0)
    # a 2-D model reads the (x, y, z) array as (C, H, W): the in-plane spacing (dy, dz) stays
    options = _options(tmp_path, "--image", str(path), *_model(models, "image"))
    assert options["spatial_dims"] == 2 and options["spacing"] == pytest.approx((0.8, 2.5))


@pytest.mark.parametrize("model,given,dims", [("volume", [], 3), ("image", [], 2),
                                              ("threshold", [], 2),
                                              ("threshold", ["--spatial-dims", "3"], 3),
                                              ("volume", ["--spatial-dims", "2"], 2)])
def test_spatial_dims_of_an_npy_array(tmp_path, models, captured, model, given, dims):
    np.save(tmp_path / "v.npy", np.zeros((3, 5, 6), np.float32))
    options = _options(tmp_path, "--image", str(tmp_path / "v.npy"), *_model(models, model), *given)
    assert options["spatial_dims"] == dims and "spacing" not in options
    np.save(tmp_path / "batch.npy", np.zeros((1, 1, 3, 5, 6), np.float32))
    if model == "threshold" and not given:  # nothing else says: a 5-D array is a volume
        assert _options(tmp_path, "--image", str(tmp_path / "batch.npy"),
                        *_model(models, model))["spatial_dims"] == 3


def test_bad_explainer_options_are_one_line_naming_the_flag(tmp_path, models, capsys,
                                                             monkeypatch):
    data = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    path = _nifti(tmp_path / "ct.nii", data, (0.5, 0.8, 2.5))
    base = ["explain", "rise", "--image", str(path), *_model(models, "volume"), "--out",
            str(tmp_path / "out"), "--no-progress"]
    cli_error(capsys, [*base, "--spacing", "1", "2"], "--spacing: expected 3 sizes", "D H W")
    for bad in ("0", "-1", "nan", "x"):
        cli_error(capsys, [*base, "--spacing", "1", "1", bad], "argument --spacing",
                  "expected a positive number")
    for bad in ("meen", "inf", str(tmp_path / "missing.npy")):
        cli_error(capsys, [*base, "--baseline", bad], "argument --baseline",
                  "expected a number, min, mean, blur or an image/array file")
    cli_error(capsys, [*base, "--spatial-dims", "4"], "argument --spatial-dims")
    cli_error(capsys, [*base, "--output", "scores"], "argument --output")
    cli_error(capsys, [*base, "--activation", "relu"], "argument --activation")
    cli_error(capsys, [*base, "--nifti-axes", "yxz"], "argument --nifti-axes")
    np.save(tmp_path / "wrong.npy", np.zeros((3, 3), np.float32))
    cli_error(capsys, [*base, "--baseline", str(tmp_path / "wrong.npy")], "error: --baseline: ")
    monkeypatch.setitem(sys.modules, "nibabel", None)  # as if it were not installed
    cli_error(capsys, base, "error: --image: reading the NIfTI file",
              "pip install interpret-segmentation[nifti]")
    assert not (tmp_path / "out").exists()


def test_explain_a_nifti_volume_end_to_end(tmp_path, models, capsys):
    """A 3-D model whose class 1 is the voxels above 0.5 (no convolution): RISE's map of a
    volume comes back in the file's (x, y, z) order, with a figure."""
    rng = np.random.default_rng(0)
    data = (rng.random((10, 8, 6)) * 0.4).astype(np.float32)  # (x, y, z): all background
    data[2:5, 3:6, 1:4] = 0.9  # the segment
    path = _nifti(tmp_path / "ct.nii.gz", data, (0.5, 0.8, 2.5))
    argv = ["explain", "rise", "--image", str(path), *_model(models, "threshold"), "--out",
            str(tmp_path / "out"), "--n-masks", "16", "--s", "2", "--batch-size", "5",
            "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    explanation = Explanation.load(tmp_path / "out" / "ct_rise.npz")
    assert explanation.saliency.shape == (10, 8, 6)  # (x, y, z)
    target = explanation.arrays["target_pixels"].astype(bool)
    assert np.array_equal(target, data > 0.5)
    # removing the segment (baseline 0) is what lowers the Dice: it outweighs the background
    assert explanation.saliency[target].mean() > explanation.saliency[~target].mean() + 0.05
    assert (tmp_path / "out" / "ct_rise.png").stat().st_size > 0
    with Image.open(tmp_path / "out" / "ct_rise.png") as figure:
        assert figure.size[0] > figure.size[1]  # rows of three orthogonal sections
    said = capsys.readouterr().out
    assert "wrote" in said and "ct.nii_rise" not in said


def test_hdm_writes_no_circle_pictures_for_a_volume(tmp_path, models, capsys):
    data = np.full((8, 8, 6), 0.2, np.float32)
    data[2:6, 2:6, 2:4] = 0.9
    np.save(tmp_path / "v.npy", data.transpose(2, 1, 0))
    argv = ["explain", "hdm", "--image", str(tmp_path / "v.npy"), *_model(models, "threshold"),
            "--spatial-dims", "3", "--circle-size", "3", "--offset", "3", "--out",
            str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix != ".json" or
                  p.name.startswith("v_")) == ["v_hdm.json", "v_hdm.npz", "v_hdm.png"]
    assert Explanation.load(tmp_path / "out" / "v_hdm.npz").saliency.shape == (6, 8, 8)
