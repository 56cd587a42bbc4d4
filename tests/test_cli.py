import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from interpret_segmentation import Explanation
from interpret_segmentation.cli import _parser, main
from interpret_segmentation.datasets import generate_dataset
from interpret_segmentation.training import default_unet, save_checkpoint


def _subparsers(parser, prefix=()):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _subparsers(child, prefix + (name,))


def test_every_option_of_every_command_is_documented(capsys):
    commands = list(_subparsers(_parser()))
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
    assert (tmp_path / "ck" / "testnet_1.pth").exists() and (tmp_path / "ck" / "testnet_2.pth").exists()
    final = tmp_path / "ck" / "testnet.pth"  # the last epoch, for the other commands

    def same_weights(a, b):
        a, b = (torch.load(p, weights_only=True) for p in (a, b))
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert same_weights(final, tmp_path / "ck" / "testnet_2.pth")
    assert main(argv) == 2  # the results file is never overwritten
    assert "never overwritten" in capsys.readouterr().err
    final.write_bytes(b"the user's own model")
    assert main([*argv[:7], "again", *argv[8:]]) == 0  # a new run keeps the existing model
    assert "kept the existing" in capsys.readouterr().out
    assert final.read_bytes() == b"the user's own model"
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

    examples = Path(__file__).resolve().parent.parent / "examples"
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
    assert len({row["index"] for row in rows}) == 2
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
    assert computed.count("image ") == 1
    again = [row for row in csv.DictReader(open(rows_path)) if row["seconds"]]
    keys = [(row["index"], row["method"], row["threshold"]) for row in again]
    assert len(keys) == len(set(keys)) == len(rows)
    assert main([*argv[:5], "--methods", "lime", *argv[7:]]) == 2
    assert "methods" in capsys.readouterr().err


def test_sweep_writes_the_parameter_tables(tmp_path, checkpoint):
    import csv

    from interpret_segmentation.evaluation import sweep_settings

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
