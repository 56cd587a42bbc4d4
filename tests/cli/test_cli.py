import argparse
import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from interpret_segmentation import Explanation
from interpret_segmentation.cli import build_parser, main
from interpret_segmentation.datasets import generate_dataset
from interpret_segmentation.models import UNet
from interpret_segmentation.training import default_unet, save_checkpoint


def _subparsers(parser, prefix=()):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _subparsers(child, prefix + (name,))


def test_every_option_of_every_command_is_documented(capsys):
    commands = list(_subparsers(build_parser()))
    names = {" ".join(prefix) for prefix, _ in commands}
    assert {"testnet generate", "testnet train", "explain hdm", "explain rise", "explain gradcam",
            "explain misure", "evaluate", "sweep", "reliability", "demo"} <= names
    for prefix, parser in commands:
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{' '.join(prefix)} {action.option_strings} has no help"
        with pytest.raises(SystemExit) as stop:
            main([*prefix, "--help"])
        assert stop.value.code == 0
        shown = capsys.readouterr().out
        for action in parser._actions:
            for option in action.option_strings:
                assert option in shown


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(default_unet(), tmp_path / "model.pth")


@pytest.mark.parametrize("method,options", [("hdm", ["--circle-size", "9", "--offset", "8"]),
                                            ("rise", ["--n-masks", "20", "--s", "4"]),
                                            ("gradcam", []),
                                            ("misure", ["--iterations", "3", "--mask-size", "16"])])
def test_explain_writes_explanation_and_figures(tmp_path, checkpoint, method, options, capsys):
    image = (np.random.default_rng(0).random((40, 44)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "input.png")
    segment = np.zeros((40, 44), np.uint8)
    segment[10:20, 10:20] = 255
    Image.fromarray(segment).save(tmp_path / "segment.png")
    argv = ["explain", method, "--image", str(tmp_path / "input.png"), "--segment",
            str(tmp_path / "segment.png"), "--checkpoint", str(checkpoint), "--out",
            str(tmp_path / "out"), "--batch-size", "3", "--no-progress", *options]
    assert main(argv) == 0
    explanation = Explanation.load(tmp_path / "out" / f"input_{method}.npz")
    assert explanation.method == method and explanation.saliency.shape == (40, 44)
    assert explanation.arrays["target_pixels"].sum() == 100
    assert (tmp_path / "out" / f"input_{method}.png").exists()
    if method == "hdm":
        assert Image.open(tmp_path / "out" / "input_hdm_worse.png").size == (44, 40)
    capsys.readouterr()
    assert main(argv) == 2  # refuses to overwrite
    assert "--force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0


def test_explain_errors_are_clear(tmp_path, checkpoint, capsys):
    assert main(["explain", "hdm", "--image", str(tmp_path / "none.png"), "--checkpoint",
                 str(checkpoint), "--no-progress"]) == 2
    assert "--image" in capsys.readouterr().err
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "x.png")
    assert main(["explain", "hdm", "--image", str(tmp_path / "x.png"), "--checkpoint",
                 str(tmp_path / "missing.pth"), "--no-progress"]) == 2
    assert "testnet train" in capsys.readouterr().err
    assert main(["explain", "hdm", "--image", str(tmp_path / "x.png"), "--checkpoint",
                 str(checkpoint), "--offset", "0", "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    assert "offset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["explain", "rise", "--image", "x", "--batch-size", "zero"])


def test_generate_refuses_existing_dataset(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["testnet", "generate", "--out", str(out), "--n", "3", "--size", "48",
                 "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["0", "1", "2"]
    assert main(["testnet", "generate", "--out", str(out), "--n", "2", "--no-progress"]) == 2
    assert "force" in capsys.readouterr().err
    assert main(["testnet", "generate", "--out", str(out), "--n", "2", "--size", "48",
                 "--force", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["0", "1"]


def test_demo_with_cached_model(tmp_path, checkpoint, capsys):
    dataset = generate_dataset(tmp_path / "data", n=10, size=48, progress=False)
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--dataset", str(dataset), "--checkpoint", str(checkpoint),
            "--images", "1", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 1
    assert set(summary["methods"]) == {"hdm", "rise", "gradcam", "misure"}
    assert 0 <= summary["model"]["val_dice"] <= 1
    for method in summary["methods"].values():
        assert method["seconds_per_image"] > 0 and 0 <= method["context_hit_rate"] <= 1
    report = (out / "report.md").read_text()
    assert "| hdm |" in report and summary["per_image"][0]["figure"] in report
    assert (out / summary["per_image"][0]["figure"]).exists()
    assert str(out) in capsys.readouterr().out
    assert main(argv) == 0  # a previous demo's output is replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main([*argv[:1], "--out", str(tmp_path / "mine"), *argv[3:]]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_train_command_writes_results_and_checkpoints(tmp_path, capsys):
    dataset = generate_dataset(tmp_path / "data", n=10, size=32, progress=False)
    argv = ["testnet", "train", "--dataset", str(dataset), "--checkpoint-dir", str(tmp_path / "ck"),
            "--name", "tiny", "--epochs", "2", "--n-train", "4", "--n-val", "2", "--width", "2",
            "--depth", "2", "--batch-size", "2", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = (tmp_path / "ck" / "results" / "tiny.txt").read_text().splitlines()
    assert len(lines) == 2 and all(line in out for line in lines)
    assert (tmp_path / "ck" / "tiny_1.pth").exists() and (tmp_path / "ck" / "tiny_2.pth").exists()
    final = tmp_path / "ck" / "testnet.pth"  # the last epoch, for the other commands

    def same_weights(a, b):
        a, b = (torch.load(p, weights_only=True) for p in (a, b))
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert same_weights(final, tmp_path / "ck" / "tiny_2.pth")
    assert main(argv) == 2  # the results file is never overwritten
    assert "never overwritten" in capsys.readouterr().err
    final.write_bytes(b"the user's own model")
    assert main([*argv[:7], "again", *argv[8:]]) == 0  # a new run keeps the existing model
    assert "kept the existing" in capsys.readouterr().out
    assert final.read_bytes() == b"the user's own model"
    assert (tmp_path / "ck" / "again_2.pth").exists()  # its own epochs, none replaced
    assert main([*argv[:2], "--dataset", str(tmp_path / "none"), "--no-progress"]) == 2
    assert "testnet generate" in capsys.readouterr().err


def test_triangle_commands_generate_train_and_evaluate(tmp_path, capsys):
    dataset = tmp_path / "tri"
    assert main(["triangle", "generate", "--out", str(dataset), "--n", "10", "--size", "96",
                 "--no-progress"]) == 0
    assert (dataset / "triangle.json").is_file() and (dataset / "9" / "segment.png").is_file()
    assert main(["triangle", "train", "--dataset", str(dataset), "--checkpoint-dir",
                 str(tmp_path / "ck"), "--epochs", "1", "--batch-size", "4",
                 "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    lines = (tmp_path / "ck" / "results" / "triangle.txt").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("epoch   1/1")
    assert main(["evaluate", "--dataset", str(dataset), "--checkpoint",
                 str(tmp_path / "ck" / "triangle.pth"), "--methods", "gradcam", "--n", "2",
                 "--out", str(tmp_path / "eval"), "--no-progress"]) == 0
    rows = (tmp_path / "eval" / "per_image.csv").read_text().splitlines()
    assert len(rows) == 3  # header and the first two of the 3 validation images (70/30)


def test_examples_say_how_to_make_the_model(tmp_path):
    """Copies of the examples, away from any trained model, explain how to make one."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples"
    for name in ("_testnet_model.py", "hdm.py", "rise.py"):
        shutil.copy(examples / name, tmp_path / name)
    for script in ("hdm.py", "rise.py"):
        done = subprocess.run([sys.executable, str(tmp_path / script)], capture_output=True,
                              text=True, cwd=tmp_path)
        assert done.returncode != 0 and "make demo" in done.stderr
        assert "testnet.pth" in done.stderr and "Traceback" not in done.stderr


def test_evaluate_writes_table_and_resumes(tmp_path, checkpoint, capsys):
    import csv

    dataset = generate_dataset(tmp_path / "data", n=10, size=48, progress=False)
    argv = ["evaluate", "--dataset", str(dataset), "--checkpoint", str(checkpoint), "--methods",
            "gradcam,misure", "--n", "2", "--out", str(tmp_path / "eval"), "--no-progress"]
    assert main(argv) == 0
    rows_path = tmp_path / "eval" / "per_image.csv"
    rows = list(csv.DictReader(open(rows_path)))
    assert {row["method"] for row in rows} == {"gradcam", "misure"}
    assert len({row["item"] for row in rows}) == 2
    table = (tmp_path / "eval" / "table.md").read_text()
    assert "| dataset | model | method | threshold |" in table
    assert (tmp_path / "eval" / "table.csv").exists()
    # an interrupted run: the last row is cut in half; the rerun keeps what was complete,
    # computes only what is missing and adds no duplicates
    lines = rows_path.read_text().splitlines(keepends=True)
    rows_path.write_text("".join(lines[:-1]) + lines[-1][:5])
    capsys.readouterr()
    assert main(argv) == 0
    computed = capsys.readouterr().out
    assert computed.count("item ") == 1
    again = [row for row in csv.DictReader(open(rows_path)) if row["seconds"]]
    keys = [(row["item"], row["method"], row["threshold"]) for row in again]
    assert len(keys) == len(set(keys)) == len(rows)
    assert main([*argv[:5], "--methods", "lime", *argv[7:]]) == 2
    assert "methods" in capsys.readouterr().err


def test_sweep_writes_the_parameter_tables(tmp_path, checkpoint, capsys):
    import csv

    from interpret_segmentation.studies.sweep import sweep_settings

    dataset = generate_dataset(tmp_path / "data", n=10, size=48, progress=False)
    argv = ["sweep", "--dataset", str(dataset), "--checkpoint", str(checkpoint), "--n", "1",
            "--iterations", "2", "--out", str(tmp_path / "sweep"), "--no-progress"]
    assert main(argv) == 0
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "rows lambda, columns learning rate" in table and "| 112 |" in table
    settings = sweep_settings()
    assert len(settings) == 11  # 3 x 3 learning rates and lambdas, plus mask sizes 56 and 112
    assert {v["mask_size"] for v in settings.values()} == {56, 112, 224}
    rows = list(csv.DictReader(open(tmp_path / "sweep" / "per_image.csv")))
    assert {row["method"] for row in rows} == set(settings)
    assert main([*argv[:8], "3", *argv[9:]]) == 2  # other --iterations: refused, not mixed
    assert "iterations: 2 there, 3 now" in capsys.readouterr().err


USER_MODULE = '''
from torch import nn

NUMBER = 3


def needs(width):
    return nn.Conv2d(1, 1, 1)


def not_module():
    return "model"


def conv():
    return nn.Conv2d(1, 1, 1)
'''


def _bad_explain_inputs(tmp_path, checkpoint, monkeypatch):
    """(options for `explain gradcam`, what the one error line must say), per bad input."""
    png = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(0).random((20, 20)) * 255).astype(np.uint8)).save(png)
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "truncated.png").write_bytes(png.read_bytes()[:200])
    np.save(tmp_path / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    np.save(tmp_path / "no_pixels.npy", np.zeros((0, 5), np.float32))
    (tmp_path / "sample").mkdir()
    whole = checkpoint.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("weights")
    torch.save(default_unet(), tmp_path / "pickled.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    torch.save(nn.Conv2d(1, 1, 1).state_dict(), tmp_path / "conv.pth")
    (tmp_path / "userbuilds.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "afile").write_text("")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "readonly").mkdir()
    image = ["--image", str(png)]
    return {
        "non-image": (["--image", str(tmp_path / "notes.png")], "is not an image file"),
        "empty image": (["--image", str(tmp_path / "empty.png")], "is not an image file"),
        "truncated png": (["--image", str(tmp_path / "truncated.png")], "truncated"),
        "pickled npy": (["--image", str(tmp_path / "object.npy")], "not a readable .npy"),
        "text npy": (["--image", str(tmp_path / "text.npy")], "holds <U1 values"),
        "no pixels": (["--image", str(tmp_path / "no_pixels.npy")], "at least one channel"),
        "sample without image": (["--image", str(tmp_path / "sample")], "not found"),
        "device file": (["--image", "/dev/null"], "--image: expected an image file, got /dev/null"),
        "checkpoint is a directory": (image + ["--checkpoint", str(tmp_path / "real")],
                                      "expected a file of weights, got a directory"),
        "truncated checkpoint": (image + ["--checkpoint", str(tmp_path / "truncated.pth")],
                                 "unreadable or truncated"),
        "empty checkpoint": (image + ["--checkpoint", str(tmp_path / "empty.pth")],
                             "unreadable or truncated"),
        "text checkpoint": (image + ["--checkpoint", str(tmp_path / "text.pth")], "unreadable"),
        "pickled model": (image + ["--checkpoint", str(tmp_path / "pickled.pth")],
                          r"not a state dict saved with torch.save\(model.state_dict\(\)"),
        "list checkpoint": (image + ["--checkpoint", str(tmp_path / "list.pth")],
                            "expected a state dict .*, got a list"),
        "other model's weights": (image + ["--checkpoint", str(tmp_path / "conv.pth")],
                                  "expected a state dict of the library's UNet"),
        "weights that do not fit": (image + ["--model", "userbuilds:conv"],
                                    "does not fit the model"),
        "module not found": (image + ["--model", "nosuchmodule_xyz:build"], "cannot import"),
        "attribute missing": (image + ["--model", "userbuilds:missing"], "has no attribute"),
        "not callable": (image + ["--model", "userbuilds:NUMBER"], "expected a callable"),
        "no module returned": (image + ["--model", "userbuilds:not_module"],
                               r"returned a str, expected a torch.nn.Module"),
        "needs arguments": (image + ["--model", "userbuilds:needs"], "without arguments"),
        "no colon": (image + ["--model", "userbuilds"], "expected MODULE:CALLABLE"),
        "unknown device": (image + ["--device", "gpu"], "--device: expected a torch device"),
        "cuda without cuda": (image + ["--device", "cuda"], "CUDA is not available"),
        "device type this machine lacks": (image + ["--device", "vulkan"],
                                           "'vulkan' asked for, but vulkan is not available"),
        "out is a file": (image + ["--out", str(tmp_path / "afile")], "got the file"),
        "out is a link": (image + ["--out", str(tmp_path / "link")], "symbolic link"),
        "out is read-only": (image + ["--out", str(tmp_path / "readonly" / "sub")],
                             "readonly is not writable"),
    }


def test_every_explain_user_error_is_one_line_and_exit_status_2(tmp_path, checkpoint, capsys,
                                                                  monkeypatch):
    cases = _bad_explain_inputs(tmp_path, checkpoint, monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    readonly = str(tmp_path / "readonly")
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
        str(path) != readonly and access(path, mode, **kw)))  # root may write anywhere
    for label, (options, said) in cases.items():
        options = [*options] + ([] if "--checkpoint" in options else
                                ["--checkpoint", str(checkpoint)])
        options += [] if "--out" in options else ["--out", str(tmp_path / "out")]
        assert main(["explain", "gradcam", *options, "--no-progress"]) == 2, label
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and error.startswith("interpret-segmentation: error: "), \
            (label, error)
        assert re.search(said, error), (label, error)
    assert not (tmp_path / "real").exists() or not any((tmp_path / "real").iterdir())


def test_explain_reads_16_bit_and_colour_pngs_as_they_are(tmp_path, capsys):
    ramp = np.linspace(0, 65535, 24 * 20).round().astype(np.uint16).reshape(24, 20)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    torch.manual_seed(0)
    gray = save_checkpoint(default_unet(), tmp_path / "gray.pth")
    colour = save_checkpoint(UNet(in_channels=3, width=4, depth=1), tmp_path / "colour.pth")
    rgb = (np.random.default_rng(0).random((24, 20, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    for image, weights, shape in (("deep.png", gray, "(24, 20)"), ("rgb.png", colour, "(3, 24, 20)"),
                                  ("rgb.png", gray, "(24, 20)")):
        argv = ["explain", "gradcam", "--image", str(tmp_path / image), "--checkpoint",
                str(weights), "--out", str(tmp_path / f"out-{image}-{weights.stem}"),
                "--no-progress"]
        assert main(argv) == 0, capsys.readouterr().err
        said = capsys.readouterr().out
        assert f"read --image {tmp_path / image}: shape {shape}, float32, values " in said
        if image == "deep.png":
            assert "values 0..1\n" in said  # the full 16-bit range, not {0, 1}


# ---------------------------------------------------------------------------------------------
# nothing the user made is deleted or written through


@pytest.fixture
def quick_explainers(monkeypatch):
    """Seg-Grad-CAM and a RISE of 8 masks instead of the demo's four explainers."""
    from interpret_segmentation.methods.rise import RISE
    from interpret_segmentation.studies import demo

    monkeypatch.setattr(demo, "demo_methods", lambda: ["gradcam", "rise"])
    # RISE as the registry builds it: 8 masks of a 4 x 4 grid by default
    monkeypatch.setattr(RISE.__init__, "__defaults__", (8, 4, 0.5, "dice", 0, None))


def _one_error_line(capsys, *words):
    err = capsys.readouterr().err
    assert err.startswith("interpret-segmentation: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    return err


def test_demo_deletes_and_replaces_only_its_own_files(tmp_path, checkpoint, quick_explainers,
                                                       capsys, monkeypatch):
    dataset = generate_dataset(tmp_path / "data", n=10, size=48, progress=False)
    argv = ["demo", "--dataset", str(dataset), "--checkpoint", str(checkpoint), "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "new"), "--images", "0"]) == 2
    _one_error_line(capsys, "images")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    assert main([*argv[:3], "--checkpoint", str(tmp_path / "bad.pth"), "--no-progress", "--out",
                 str(tmp_path / "new")]) == 2
    _one_error_line(capsys, "bad.pth")
    assert not (tmp_path / "new").exists()  # arguments are checked before anything is written
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("keep")
    (work / "summary.json").write_text("the user's")
    monkeypatch.chdir(work)
    assert main([*argv, "--out", ".", "--images", "2"]) == 2
    _one_error_line(capsys, "--out", "--force")
    assert sorted(os.listdir(work)) == ["notes.txt", "summary.json"]
    assert main([*argv, "--out", ".", "--images", "2", "--force"]) == 0
    assert (work / "notes.txt").read_text() == "keep"
    assert json.loads((work / "summary.json").read_text())["images"] == 2
    assert len(list(work.glob("sample_*.png"))) == 2
    outside = tmp_path / "outside.md"
    outside.write_text("outside")
    (work / "report.md").unlink()
    (work / "report.md").symlink_to(outside)
    assert main([*argv, "--out", ".", "--images", "1"]) == 0  # its own directory now
    assert outside.read_text() == "outside" and not (work / "report.md").is_symlink()
    assert len(list(work.glob("sample_*.png"))) == 1  # the previous run's second figure is gone
    items = list((work / "items").iterdir())  # the previous run's second image is gone too
    assert len(items) == 1 and len(list(items[0].glob("*.npz"))) == 2  # 2 methods
    assert (work / "report.html").is_file() and (work / "rows.csv").is_file()
    assert (work / "notes.txt").read_text() == "keep"


def test_explain_checks_every_output_before_writing_and_writes_through_no_link(
        tmp_path, checkpoint, capsys):
    Image.fromarray((np.random.default_rng(0).random((24, 24)) * 255).astype(np.uint8)).save(
        tmp_path / "input.png")
    out = tmp_path / "out"
    argv = ["--image", str(tmp_path / "input.png"), "--checkpoint", str(checkpoint), "--out",
            str(out), "--no-progress"]
    assert main(["explain", "gradcam", *argv]) == 0
    (out / "input_hdm_worse.png").write_bytes(b"the user's")
    assert main(["explain", "hdm", *argv, "--circle-size", "9", "--offset", "8"]) == 2
    _one_error_line(capsys, "input_hdm_worse.png", "--force")
    assert not any(out.glob("input_hdm*.npz")) and not (out / "input_hdm.png").exists()
    assert (out / "input_hdm_worse.png").read_bytes() == b"the user's"
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"outside")
    (out / "input_gradcam.png").unlink()
    (out / "input_gradcam.png").symlink_to(outside)
    assert main(["explain", "gradcam", *argv, "--force"]) == 0
    assert outside.read_bytes() == b"outside" and not (out / "input_gradcam.png").is_symlink()
    assert (out / "input_gradcam.png").stat().st_mode & 0o777 == 0o666 & ~_umask()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    other = ["explain", "gradcam", *argv[:-2], str(mine), "--no-progress"]
    assert main(other) == 2
    _one_error_line(capsys, "not empty")
    assert main([*other, "--force"]) == 0
    assert (mine / "notes.txt").read_text() == "keep" and (mine / "input_gradcam.npz").exists()


def _umask():
    old = os.umask(0o022)
    os.umask(old)
    return old


@pytest.mark.parametrize("name", ["../..", "../escape", "sub/name", ".."])
def test_train_name_cannot_leave_the_checkpoint_dir(tmp_path, capsys, name):
    dataset = generate_dataset(tmp_path / "data", n=10, size=32, progress=False)
    inner = tmp_path / "a" / "b" / "ck"
    assert main(["testnet", "train", "--dataset", str(dataset), "--checkpoint-dir", str(inner),
                 "--name", name, "--epochs", "1", "--n-train", "2", "--n-val", "1", "--width",
                 "2", "--depth", "1", "--no-progress"]) == 2
    _one_error_line(capsys, "--name")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("link", ["results", "testnet.pth", "."])
def test_train_refuses_links_in_the_checkpoint_dir_before_training(tmp_path, capsys, link):
    dataset = generate_dataset(tmp_path / "data", n=10, size=32, progress=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    inner = tmp_path / "ck"
    if link == ".":
        inner.symlink_to(elsewhere, target_is_directory=True)
    else:
        inner.mkdir()
        (inner / link).symlink_to(elsewhere / link)  # dangling for testnet.pth
        if link == "results":
            (elsewhere / "results").mkdir()
    before = sorted(os.listdir(inner))
    assert main(["testnet", "train", "--dataset", str(dataset), "--checkpoint-dir", str(inner),
                 "--epochs", "1", "--n-train", "2", "--n-val", "1", "--width", "2", "--depth",
                 "1", "--no-progress"]) == 2
    _one_error_line(capsys, "--checkpoint-dir", "is a symbolic link")
    assert sorted(os.listdir(inner)) == before  # nothing trained, nothing written
    assert not any(path.is_file() for path in elsewhere.rglob("*"))


def test_studies_key_rows_by_their_settings_resume_and_lock(tmp_path, checkpoint,
                                                            quick_explainers, capsys):
    import csv
    import socket

    from interpret_segmentation.core.io import LOCK

    dataset = generate_dataset(tmp_path / "data", n=10, size=48, progress=False)
    out = tmp_path / "eval"
    argv = ["evaluate", "--dataset", str(dataset), "--checkpoint", str(checkpoint), "--methods",
            "gradcam,rise", "--n", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    rows_path = out / "per_image.csv"
    rows = list(csv.DictReader(open(rows_path)))
    second = sorted({row["item"] for row in rows})[1]
    # a run stopped between two methods of one image: its RISE rows are missing
    kept = [row for row in rows if (row["item"], row["method"]) != (second, "rise")]
    with open(rows_path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    capsys.readouterr()
    assert main(argv) == 0
    computed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("item ")]
    assert len(computed) == 1 and computed[0].startswith(f"item {second}: rise")
    again = list(csv.DictReader(open(rows_path)))
    assert sorted((r["item"], r["method"], r["threshold"]) for r in again) == sorted(
        (r["item"], r["method"], r["threshold"]) for r in rows)
    assert main([*argv[:-4], "1", *argv[-3:]]) == 0  # --n 1: the table counts the first image
    assert {row["images"] for row in csv.DictReader(open(out / "table.csv"))} == {"1"}
    torch.manual_seed(1)
    other = save_checkpoint(default_unet(), tmp_path / "other.pth")
    assert main([*argv[:4], str(other), *argv[5:]]) == 2
    _one_error_line(capsys, f"--out: {out}", "checkpoint_sha256")
    (out / LOCK).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                        "started": "2024-01-01 10:00:00", "command": "evaluate",
                                        "argv": ["interpret-segmentation", "evaluate"]}))
    assert main(argv) == 2
    _one_error_line(capsys, "in use by another run", f"pid {os.getpid()}", "2024-01-01 10:00:00")


def test_demo_says_when_the_model_did_not_learn_the_rule(tmp_path, checkpoint, quick_explainers,
                                                          capsys, monkeypatch):
    from interpret_segmentation.studies import demo

    dataset = generate_dataset(tmp_path / "data", n=10, size=48, progress=False)
    argv = ["demo", "--dataset", str(dataset), "--checkpoint", str(checkpoint), "--images", "1",
            "--no-progress"]
    # an untrained U-Net: validation Dice far below 0.97
    assert main([*argv, "--out", str(tmp_path / "lenient")]) == 0
    assert "WARNING: the demo U-Net did not learn testnet's rule" in capsys.readouterr().out
    summary = json.loads((tmp_path / "lenient" / "summary.json").read_text())
    assert summary["rule_learned"] is False and summary["model"]["rule_learned"] is False
    assert "**Warning: the demo U-Net did not learn" in (tmp_path / "lenient" / "report.md").read_text()
    assert main([*argv, "--out", str(tmp_path / "strict"), "--strict"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did not learn testnet's rule" in err
    assert json.loads((tmp_path / "strict" / "summary.json").read_text())["rule_learned"] is False
    monkeypatch.setattr(demo, "RULE_DICE", 0.0)  # any model passes
    assert main([*argv, "--out", str(tmp_path / "passes"), "--strict"]) == 0
    assert "WARNING" not in capsys.readouterr().out
    assert json.loads((tmp_path / "passes" / "summary.json").read_text())["rule_learned"] is True
    # a cached model the demo trained with older settings is used, with a warning
    checkpoint.with_suffix(".json").write_text(json.dumps({"train_seconds": 1.0, "epochs": 10}))
    assert main([*argv, "--out", str(tmp_path / "old")]) == 0
    assert "was not trained with today's default settings" in capsys.readouterr().out
    assert json.loads((tmp_path / "old" / "summary.json").read_text())["model"]["recipe_changed"]
    # the record of a model that was replaced (by `testnet train`, say) says nothing of this one
    checkpoint.with_suffix(".json").write_text(json.dumps(
        {"train_seconds": 1.0, "epochs": 10, "checkpoint_sha256": "0" * 64}))
    assert main([*argv, "--out", str(tmp_path / "replaced")]) == 0
    assert "WARNING" not in capsys.readouterr().out
    model = json.loads((tmp_path / "replaced" / "summary.json").read_text())["model"]
    assert not model["recipe_changed"] and model["epochs"] is None


def test_demo_keeps_a_foreign_file_beside_the_checkpoint_and_adopts_an_older_demos_output(
        tmp_path, checkpoint, quick_explainers, capsys):
    dataset = generate_dataset(tmp_path / "data", n=10, size=48, progress=False)
    missing = tmp_path / "models" / "demo.pth"
    missing.parent.mkdir()
    missing.with_suffix(".json").write_text("the user's notes")
    assert main(["demo", "--dataset", str(dataset), "--checkpoint", str(missing), "--out",
                 str(tmp_path / "out"), "--no-progress"]) == 2
    _one_error_line(capsys, "--checkpoint", "not written by the demo")
    assert missing.with_suffix(".json").read_text() == "the user's notes"
    assert not missing.exists() and not (tmp_path / "out").exists()
    # a directory an older demo made (its marker, no manifest) is the demo's to write into
    older = tmp_path / "older"
    older.mkdir()
    (older / ".interpret-segmentation-demo").write_text("written by `interpret-segmentation demo`")
    (older / "summary.json").write_text("{}")
    assert main(["demo", "--dataset", str(dataset), "--checkpoint", str(checkpoint), "--out",
                 str(older), "--images", "1", "--no-progress"]) == 0
    assert json.loads((older / "summary.json").read_text())["images"] == 1
    assert not (older / ".interpret-segmentation-demo").exists()


# ---------------------------------------------------------------------------------------------
# the explain commands are made from the method registry


def _help(capsys, *argv) -> str:
    """``argv --help`` with its lines joined (argparse wraps long help texts)."""
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def _signature_default(method, name):
    import inspect

    return inspect.signature(method.cls.__init__).parameters[name].default


def test_every_registered_method_has_an_explain_command_with_each_option_and_default(capsys):
    from interpret_segmentation.methods import registry

    segmentation = registry.available("segmentation")
    assert {"hdm", "rise", "gradcam", "misure"} <= set(segmentation)
    listed = _help(capsys, "explain")
    for name in registry.available():
        assert (name in listed) == (name in segmentation), name  # others take other models
    for name in segmentation:
        method = registry.get(name)
        shown = _help(capsys, "explain", name)
        assert " ".join(method.description.split()) in shown
        for option in method.options:
            default = _signature_default(method, option.name)
            assert option.cli_flag in shown, (name, option.cli_flag)
            if option.type is bool:
                expected = f"(sets {option.name}={not default}; default {default})"
            elif "(default" in option.help:  # the registry says it in words (gradcam's layer)
                expected = " ".join(option.help.split())
            else:
                expected = f"(default {default:g})" if isinstance(default, float) else \
                    f"(default {default})"
            assert expected in shown, (name, option.name, expected)
            for choice in option.choices or ():
                assert choice in shown
    top = _help(capsys)
    assert f"({', '.join(segmentation)})" in top and "HDM and RISE" not in top
    assert ", ".join(segmentation) in _help(capsys, "demo")


def test_explain_misure_sets_every_option_the_registry_lists(tmp_path, checkpoint, capsys):
    Image.fromarray((np.random.default_rng(0).random((24, 24)) * 255).astype(np.uint8)).save(
        tmp_path / "input.png")
    assert main(["explain", "misure", "--image", str(tmp_path / "input.png"), "--checkpoint",
                 str(checkpoint), "--out", str(tmp_path / "out"), "--no-progress",
                 "--iterations", "2", "--mask-size", "16", "--alpha-class", "3",
                 "--zero-below", "0.1", "--alpha-background", "0.5"]) == 0
    parameters = Explanation.load(tmp_path / "out" / "input_misure.npz").parameters
    assert parameters["alpha_class"] == 3.0 and parameters["zero_below"] == 0.1
    assert parameters["alpha_background"] == 0.5 and parameters["iterations"] == 2
    assert parameters["tau"] == 0.9 and parameters["kernel_size"] == 7  # the defaults


def test_explain_passes_each_flag_to_the_explainer(tmp_path, checkpoint, monkeypatch):
    """Every option of every method reaches ``Method.build`` under its own name."""
    from interpret_segmentation.methods import registry

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "x.png")
    values = {int: ("7", 7), float: ("0.25", 0.25), str: (None, None)}

    class Built(Exception):
        pass

    def build(self, model, **options):
        raise Built(options)

    monkeypatch.setattr(registry.Method, "build", build)
    for name in registry.available("segmentation"):
        method = registry.get(name)
        argv, expected = [], {}
        for option in method.options:
            default = _signature_default(method, option.name)
            if option.type is bool:
                argv.append(option.cli_flag)
                expected[option.name] = not default
            elif option.choices:
                argv += [option.cli_flag, option.choices[-1]]
                expected[option.name] = option.choices[-1]
            elif option.type is str:
                argv += [option.cli_flag, "some.layer"]
                expected[option.name] = "some.layer"
            else:
                text, value = values[option.type]
                argv += [option.cli_flag, text]
                expected[option.name] = value
        with pytest.raises(Built) as built:
            main(["explain", name, "--image", str(tmp_path / "x.png"), "--checkpoint",
                  str(checkpoint), "--out", str(tmp_path / name), "--batch-size", "3",
                  "--no-progress", *argv])
        options = built.value.args[0]
        assert {key: options[key] for key in expected} == expected, name
        assert options["batch_size"] == 3 and options["progress"] is False


TOY_METHOD = '''
import numpy as np

from interpret_segmentation.core.explainer import Explainer


class Toy(Explainer):
    """Saliency = strength x the image's first channel, mirrored left-right when flip."""

    method = "toy"

    def __init__(self, model, strength: float = 1.0, flip: bool = False, mode: str = "a",
                 **options):
        super().__init__(model, **options)
        if strength <= 0:
            raise ValueError(f"strength: expected a positive number, got {strength!r}")
        self.strength, self.flip, self.mode = strength, flip, mode

    def settings(self):
        return {"strength": self.strength, "flip": self.flip, "mode": self.mode}

    def _explain(self, item):
        saliency = self.strength * item.image[0, 0].cpu().numpy()
        return self.explanation(item, saliency[:, ::-1] if self.flip else saliency)
'''


@pytest.fixture
def toy_method(tmp_path, monkeypatch):
    """A method "toy" registered for the duration of a test (and its module importable)."""
    from interpret_segmentation.methods import registry

    (tmp_path / "toymethod.py").write_text(TOY_METHOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    return registry.register(registry.Method(
        name="toy", explainer="toymethod:Toy", title="Toy map", thresholds=(0.5,),
        description="Toy: the image itself, 100% of it",
        options=(registry.Option("strength", float, "scale of the map"),
                 registry.Option("flip", bool, "mirror the map"),
                 registry.Option("mode", str, "a mode", choices=("a", "b")))))


def test_a_registered_method_appears_in_the_cli_and_the_studies(tmp_path, checkpoint, toy_method,
                                                                 capsys):
    import csv

    assert "toy" in _help(capsys, "explain")
    shown = _help(capsys, "explain", "toy")
    assert "100% of it" in shown and "--strength FLOAT scale of the map (default 1)" in shown
    assert "--flip mirror the map (sets flip=True; default False)" in shown
    assert "--mode {a,b}" in shown
    assert "toy" in _help(capsys, "evaluate") and "toy" in _help(capsys)
    image = (np.random.default_rng(0).random((20, 22)) * 255).astype(np.uint8)
    np.save(tmp_path / "input.npy", image.astype(np.float32) / 255)
    argv = ["explain", "toy", "--image", str(tmp_path / "input.npy"), "--checkpoint",
            str(checkpoint), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main([*argv, "--strength", "2", "--flip", "--mode", "b"]) == 0
    explanation = Explanation.load(tmp_path / "out" / "input_toy.npz")
    assert explanation.parameters == {"strength": 2.0, "flip": True, "mode": "b"}
    np.testing.assert_allclose(explanation.saliency, 2 * (image / np.float32(255))[:, ::-1],
                               rtol=1e-6)
    assert (tmp_path / "out" / "input_toy.png").exists()
    assert main([*argv, "--strength", "-1", "--force"]) == 2
    _one_error_line(capsys, "--strength: expected a positive number")
    dataset = generate_dataset(tmp_path / "data", n=10, size=48, progress=False)
    torch.manual_seed(0)
    everywhere = default_unet()
    with torch.no_grad():
        everywhere.head.bias.fill_(5.0)  # predicts the whole image: there is a target
    assert main(["evaluate", "--dataset", str(dataset), "--checkpoint",
                 str(save_checkpoint(everywhere, tmp_path / "everywhere.pth")), "--methods",
                 "toy", "--n", "1", "--out", str(tmp_path / "eval"), "--no-progress"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "eval" / "per_image.csv")))
    assert [(row["method"], row["threshold"]) for row in rows] == [("toy", "0.5")]  # registry's
    assert rows[0]["context_hit"] == "True"  # the map is the image: bright on every shape
    assert float(rows[0]["perturbation_ratio"]) < 1  # half the brightest pixels of the image


def test_bad_option_values_exit_2_with_one_line_naming_the_flag(tmp_path, checkpoint, capsys):
    Image.fromarray((np.random.default_rng(0).random((20, 20)) * 255).astype(np.uint8)).save(
        tmp_path / "x.png")
    common = ["--image", str(tmp_path / "x.png"), "--checkpoint", str(checkpoint), "--out",
              str(tmp_path / "out"), "--no-progress"]
    refused_by_argparse = {  # not a value of the flag's type, or not one of its choices
        ("misure", "--alpha-class", "abc"): "invalid float value: 'abc'",
        ("hdm", "--circle-size", "1.5"): "invalid int value: '1.5'",
        ("rise", "--weighting", "area"): "invalid choice: 'area'",
        ("rise", "--batch-size", "zero"): "expected a positive int or 'auto'",
    }
    for (method, flag, value), said in refused_by_argparse.items():
        with pytest.raises(SystemExit) as stop:
            main(["explain", method, *common, flag, value])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and flag in err and said in err, err
        assert err.startswith(f"interpret-segmentation explain {method}: error: ")
    refused_by_the_explainer = {  # the explainer's own checks, named by the flag
        ("misure", "--zero-below", "2"): "--zero-below: expected a number in [0, 1)",
        ("misure", "--kernel-size", "4"): "--kernel-size: expected an odd int >= 3",
        ("hdm", "--offset", "0"): "--offset: expected a positive int",
        ("rise", "--p1", "1.5"): "--p1: ",
    }
    for (method, flag, value), said in refused_by_the_explainer.items():
        assert main(["explain", method, *common, flag, value]) == 2, flag
        _one_error_line(capsys, said)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert main(["evaluate", "--methods", "hdm,lime", "--n", "1", "--out",
                 str(tmp_path / "eval")]) == 2
    _one_error_line(capsys, "--methods: expected some of hdm, ", "'hdm,lime'")


def test_a_method_option_that_takes_an_explain_flag_is_refused_in_one_line(toy_method, capsys,
                                                                          monkeypatch):
    from interpret_segmentation.methods import registry

    monkeypatch.setitem(registry._METHODS, "toy", registry.Method(
        name="toy", explainer="toymethod:Toy", title="Toy", description="Toy",
        options=(registry.Option("strength", float, "scale", flag="--image"),)))
    assert main(["demo", "--help"]) == 2
    _one_error_line(capsys, "method 'toy': option 'strength' (--image) clashes")
