"""training.recipes.train_default_model: the demo model's recipe end to end, on a tiny set."""

import tempfile

import pytest
import torch

from interpret_segmentation.datasets import generate_dataset
from interpret_segmentation.training import (
    RULE_DICE,
    default_unet,
    load_checkpoint,
    train_default_model,
)

TINY = dict(n_train=8, n_val=4, epochs=2, batch_size=4, progress=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("testnet") / "data", n=20, size=48,
                            progress=False)


def _weights(model) -> torch.Tensor:
    return torch.cat([value.flatten().float() for value in model.state_dict().values()])


def test_train_default_model_writes_the_trained_weights_and_reports_the_run(
        dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    lines, state = [], torch.get_rng_state()
    result = train_default_model(dataset, tmp_path / "m.pth", tmp_path / "results.txt",
                                 log=lines.append, **TINY)
    assert torch.equal(torch.get_rng_state(), state)  # seeded without the global generator
    assert set(result) == {"val_dice", "val_hausdorff", "rule_learned", "train_seconds",
                           "epochs", "n_train", "n_val", "checkpoint", "history"}
    assert (result["n_train"], result["n_val"], result["epochs"]) == (8, 4, 2)
    assert len(result["history"]) == 2 and result["train_seconds"] > 0
    last = result["history"][-1]
    assert (result["val_dice"], result["val_hausdorff"]) == (last["val_dice"],
                                                             last["val_hausdorff"])
    assert result["rule_learned"] == (last["val_dice"] >= RULE_DICE)
    assert result["checkpoint"] == str(tmp_path / "m.pth")
    assert len((tmp_path / "results.txt").read_text().splitlines()) >= 2
    assert len(lines) == 3  # one line per epoch, then: the target was not reached
    assert "below the target 0.97" in lines[-1]
    trained = load_checkpoint(default_unet(), tmp_path / "m.pth")
    assert not torch.equal(_weights(trained), _weights(default_unet(0)))  # it trained
    scratch = [p.name for p in (tmp_path / "scratch").iterdir()]
    assert not [name for name in scratch if name.startswith("testnet-checkpoints-")]  # removed
    # the same seed gives the same weights; epoch checkpoints kept where asked
    train_default_model(dataset, tmp_path / "again.pth", tmp_path / "again.txt",
                        checkpoint_dir=tmp_path / "epochs", log=lines.append, **TINY)
    assert torch.equal(_weights(load_checkpoint(default_unet(), tmp_path / "again.pth")),
                       _weights(trained))
    assert sorted(p.name for p in (tmp_path / "epochs").iterdir()) == ["testnet_1.pth",
                                                                      "testnet_2.pth"]


def test_train_default_model_overwrites_nothing_and_checks_sizes_before_training(dataset,
                                                                                 tmp_path):
    (tmp_path / "m.pth").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="checkpoint .*m.pth already exists"):
        train_default_model(dataset, tmp_path / "m.pth", tmp_path / "r.txt", **TINY)
    (tmp_path / "r.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="results file .*r.txt already exists"):
        train_default_model(dataset, tmp_path / "new.pth", tmp_path / "r.txt", **TINY)
    with pytest.raises(ValueError, match=r"n_train: expected at most 16 .* got 17"):
        train_default_model(dataset, tmp_path / "new.pth", tmp_path / "new.txt",
                            **{**TINY, "n_train": 17})
    assert (tmp_path / "m.pth").read_bytes() == b"mine"
    assert (tmp_path / "r.txt").read_text() == "mine"
    assert not (tmp_path / "new.pth").exists() and not (tmp_path / "new.txt").exists()
