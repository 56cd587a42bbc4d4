"""``interpret-segmentation explain-dataset``: a user's folder of images (and volumes) with a
user's model, every method, resumable, refused bad input on one line."""

import csv
import json

import numpy as np
import pytest
import torch
from oracles import cli_error

from interpret_segmentation import Explanation
from interpret_segmentation.cli import main

USER_MODULE = '''
import torch
from torch import nn


class Bright(nn.Module):
    """Class 1 where the 3-pixel mean is above 0.5 ({dims}-D)."""

    def __init__(self):
        super().__init__()
        conv = nn.Conv{dims}d
        self.mean = conv(1, 2, 3, padding=1)

    def forward(self, x):
        return self.mean(x)


def build():
    model = Bright()
    with torch.no_grad():
        model.mean.weight.zero_()
        model.mean.weight[1] = 20.0 / 3 ** {dims}
        model.mean.bias.copy_(torch.tensor([0.0, -10.0]))
    return model
'''


@pytest.fixture
def user_model(tmp_path, monkeypatch):
    """``--model`` and ``--checkpoint`` of a 2-D (``"2"``) or 3-D (``"3"``) user model."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(dims: int):
        name = f"usermodel{dims}d"
        (tmp_path / f"{name}.py").write_text(USER_MODULE.replace("{dims}", str(dims)))
        import importlib

        module = importlib.import_module(name)
        torch.save(module.build().state_dict(), tmp_path / f"{name}.pth")
        return ["--model", f"{name}:build", "--checkpoint", str(tmp_path / f"{name}.pth")]
    return make


def _folder(tmp_path, count=3, shape=(32, 32)):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        image = (rng.random(shape) * 0.3).astype(np.float32)
        box = tuple(slice(4 + 2 * index, 14 + 2 * index) for _ in shape)
        image[box] = 0.9
        np.save(images / f"scan_{index}.npy", image)
        mask = np.zeros(shape, np.uint8)
        mask[box] = 1
        np.save(masks / f"scan_{index}.npy", mask)
    return images, masks


FAST = ["--methods", "hdm,rise", "--set", "hdm.circle_size=5", "--set", "hdm.offset=4",
        "--set", "rise.n_masks=16", "--set", "rise.s=4", "--no-progress"]


def test_a_folder_with_masks_and_a_user_model(tmp_path, user_model, capsys):
    images, masks = _folder(tmp_path)
    out = tmp_path / "out"
    argv = ["explain-dataset", "--data", str(images), "--masks", str(masks), *user_model(2),
            "--out", str(out), *FAST]
    assert main(argv) == 0, capsys.readouterr().err
    rows = list(csv.DictReader(open(out / "rows.csv")))
    assert sorted({row["item"] for row in rows}) == ["scan_0", "scan_1", "scan_2"]
    assert {(row["method"], row["threshold"]) for row in rows} == {
        ("hdm", ""), ("rise", "0.2"), ("rise", "0.4")}
    # the model segments exactly the bright box, which is the ground truth
    assert all(float(row["prediction_dice"]) > 0.9 for row in rows)
    assert not any(row["error"] for row in rows)
    explanation = Explanation.load(out / "items" / "scan_1" / "hdm.npz")
    assert explanation.parameters["circle_size"] == 5 and explanation.saliency.shape == (32, 32)
    assert np.load(out / "items" / "scan_1" / "mask.npy").sum() == 100
    assert (out / "report.html").stat().st_size > 0 and "| rise | 0.2 |" in (
        out / "table.md").read_text()
    manifest = json.loads((out / ".interpret-segmentation.json").read_text())
    assert manifest["commands"]["explain-dataset"]["settings"]["methods"]["rise"]["n_masks"] == 16
    capsys.readouterr()
    assert main(argv) == 0  # a rerun: nothing computed again
    said = capsys.readouterr().out
    assert "resuming: 3 of 3 items already done" in said and "item scan_" not in said
    assert main([*argv, "--set", "rise.n_masks=32"]) == 2  # the last --set of an option wins
    assert "rise.n_masks: 16 there, 32 now" in capsys.readouterr().err


def test_nifti_volumes_are_explained_in_3_d(tmp_path, user_model, capsys):
    nibabel = pytest.importorskip("nibabel")
    folder = tmp_path / "ct"
    folder.mkdir()
    volume = (np.random.default_rng(1).random((12, 10, 8)) * 0.3).astype(np.float32)
    volume[3:8, 2:7, 2:6] = 0.9
    image = nibabel.Nifti1Image(volume, np.diag([0.8, 0.8, 2.5, 1.0]))
    nibabel.save(image, folder / "case.nii.gz")
    out = tmp_path / "out"
    argv = ["explain-dataset", "--data", str(folder), *user_model(3), "--out", str(out),
            "--methods", "rise", "--set", "rise.n_masks=8", "--set", "rise.s=2",
            "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    explanation = Explanation.load(out / "items" / "case" / "rise.npz")
    assert explanation.saliency.shape == (12, 10, 8)  # (x, y, z) as stored
    assert explanation.arrays["target_pixels"].sum() > 0


@pytest.mark.parametrize("extra,said", [
    (["--set", "rise"], "--set: expected METHOD.OPTION=VALUE"),
    (["--set", "gradcam.n_masks=3"], "--set: 'gradcam' is not one of --methods"),
    (["--set", "rise.masks=3"], "--set: rise has no option 'masks'"),
    (["--set", "rise.n_masks=many"], "--set: 'rise.n_masks=many': expected a int"),
    (["--methods", "lime"], "--methods: expected some of"),
    (["--n", "3"], "--n: only for a data set in the library's layout"),
    (["--workers", "2"], "--engine: the local engine runs one worker"),
    (["--engine", "spark"], "argument --engine"),
    (["--gpus-per-worker", "-1"], "argument --gpus-per-worker"),
    (["--device", "xla"], "--device: 'xla' asked for, but xla is not available here"),
    (["--device", "meta"], "--device: 'meta' tensors hold no values"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, user_model, capsys, extra, said):
    images, _ = _folder(tmp_path, count=1)
    out = tmp_path / "out"
    argv = ["explain-dataset", "--data", str(images), *user_model(2), "--out", str(out),
            "--methods", "rise", "--no-progress", *extra]
    cli_error(capsys, argv, said)
    assert not out.exists()


def test_data_that_is_not_a_directory(tmp_path, user_model, capsys):
    assert main(["explain-dataset", "--data", str(tmp_path / "none"), *user_model(2),
                 "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "--data: expected a directory of images" in capsys.readouterr().err


def test_a_killed_run_is_continued_by_the_next(tmp_path, user_model, capsys):
    """The driver killed with SIGKILL in the middle of a run: the rerun explains only the rest,
    and the rows are those of a run that was never stopped, each image once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    images, _ = _folder(tmp_path, count=8)
    model = user_model(2)
    slow = (tmp_path / "usermodel2d.py").read_text().replace(
        "        return self.mean(x)", "        import time\n        time.sleep(0.3)\n"
        "        return self.mean(x)")
    (tmp_path / "slowmodel.py").write_text(slow)
    model[1] = "slowmodel:build"
    out = tmp_path / "killed"
    argv = ["explain-dataset", "--data", str(images), *model, "--methods", "rise", "--set",
            "rise.n_masks=4", "--set", "rise.s=4", "--batch-size", "4", "--no-progress"]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    child = subprocess.Popen([sys.executable, "-m", "interpret_segmentation.cli", *argv,
                              "--out", str(out)], env=environment, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    def images_done():
        if not (out / "rows.csv").exists():
            return 0
        with open(out / "rows.csv", newline="") as file:
            return len({row["item"] for row in csv.DictReader(file)})

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None and images_done() < 2:
        time.sleep(0.05)
    assert child.poll() is None, child.stderr.read().decode()
    child.send_signal(signal.SIGKILL)
    child.wait()
    done = images_done()
    assert 2 <= done < 8
    assert main([*argv, "--out", str(out)]) == 0
    assert f"resuming: {done} of 8 items already done" in capsys.readouterr().out
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0

    def table(path):
        with open(path / "rows.csv", newline="") as file:
            return sorted(tuple((k, v) for k, v in row.items() if k != "seconds")
                          for row in csv.DictReader(file))
    assert table(out) == table(tmp_path / "whole")
    assert sorted(row[0][1] for row in table(out)) == sorted(
        [f"scan_{index}" for index in range(8)] * 2)  # rise at 0.2 and 0.4, each image once
    assert not any(dict(row)["error"] for row in table(out))
