"""The data-set runner with the local engine: sources, several classes, errors recorded per
item, and a run stopped in the middle continued by the next."""

import csv

import numpy as np
import pytest
import torch
from oracles import PatchModel, ThreeClassModel, patch_image

from interpret_segmentation import Explanation
from interpret_segmentation.datasets.sources import FolderSource, TorchSource
from interpret_segmentation.studies import engines
from interpret_segmentation.studies.runner import explain_dataset

HDM = {"hdm": {"circle_size": 9, "offset": 8}}


class Images(torch.utils.data.Dataset):
    """Patch images (1, 48, 48) with their segment; item ``bad`` cannot be read."""

    def __init__(self, count=4, bad=None):
        self.count, self.bad = count, bad

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        if index == self.bad:
            raise OSError(f"image {index} is damaged")
        image = patch_image() * (0.6 + 0.1 * index)
        mask = torch.zeros(48, 48, dtype=torch.uint8)
        mask[5:15, 5:15] = 1
        return image, mask


def rows_of(out, name="rows.csv"):
    return list(csv.DictReader(open(out / name)))


def test_a_torch_dataset_with_an_unreadable_item_and_a_rerun_that_retries_it(tmp_path):
    out = tmp_path / "run"
    explain_dataset(PatchModel(), TorchSource(Images(bad=2), name="patches"), HDM, out,
                    progress=False, log=lambda *_: None)
    rows = rows_of(out)
    assert [row["item"] for row in rows] == ["0", "1", "2", "3"]
    assert rows[2]["error"].startswith("OSError: image 2 is damaged")
    assert all(not row["error"] for row in rows if row["item"] != "2")
    assert not (out / "items" / "2").exists()  # nothing is written for an unreadable item
    # the ground truth is the segment PatchModel draws when the patch is bright
    assert [row["prediction_dice"] for row in rows if row["item"] != "2"] == ["1.0"] * 3
    assert "| 3 |" in (out / "table.md").read_text()  # the table counts the good rows only
    said = []
    explain_dataset(PatchModel(), TorchSource(Images(), name="patches"), HDM, out,
                    progress=False, log=said.append)
    assert said[0] == "resuming: 3 of 4 items already done"
    assert [line.split(":")[0] for line in said if line.startswith("item ")] == ["item 2"]
    good = [row for row in rows_of(out) if not row["error"]]
    assert sorted(row["item"] for row in good) == ["0", "1", "2", "3"]


def test_several_classes_each_get_their_rows_and_files(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for index in range(2):
        image = patch_image().numpy()
        image[0, :, :10] = 0.9 - 0.2 * index  # the bright left edge is class 1
        np.save(images / f"slice{index}.npy", image)
    out = tmp_path / "run"
    explain_dataset(ThreeClassModel(), FolderSource(images), HDM, out, classes=(1, 2),
                    progress=False, log=lambda *_: None)
    rows = rows_of(out)
    assert {(row["item"], row["class_index"]) for row in rows} == {
        ("slice0", "1"), ("slice0", "2"), ("slice1", "1"), ("slice1", "2")}
    one = Explanation.load(out / "items" / "slice0" / "hdm_class1.npz")
    two = Explanation.load(out / "items" / "slice0" / "hdm_class2.npz")
    assert (one.target_class, two.target_class) == (1, 2)
    assert one.arrays["target_pixels"][20:, :10].all()  # the edge, below the class-2 box
    assert two.arrays["target_pixels"][5:15, 5:15].all()


def test_a_run_stopped_after_two_items_is_continued_by_the_next(tmp_path, monkeypatch):
    out = tmp_path / "run"
    source = TorchSource(Images(count=5), name="patches")
    run = engines.LocalEngine.run

    def stopped(self, work, source, missing):
        for count, result in enumerate(run(self, work, source, missing)):
            if count == 2:
                raise KeyboardInterrupt  # as a user's Ctrl-C between two items
            yield result

    monkeypatch.setattr(engines.LocalEngine, "run", stopped)
    with pytest.raises(KeyboardInterrupt):
        explain_dataset(PatchModel(), source, HDM, out, progress=False, log=lambda *_: None)
    assert [row["item"] for row in rows_of(out)] == ["0", "1"]
    monkeypatch.setattr(engines.LocalEngine, "run", run)
    said = []
    explain_dataset(PatchModel(), source, HDM, out, progress=False, log=said.append)
    assert said[0] == "resuming: 2 of 5 items already done"
    assert [row["item"] for row in rows_of(out)] == ["0", "1", "2", "3", "4"]
    with pytest.raises(ValueError, match="methods.hdm.offset: 8 there, 4 now"):
        explain_dataset(PatchModel(), source, {"hdm": {"circle_size": 9, "offset": 4}}, out,
                        progress=False)


def test_bad_arguments_name_themselves(tmp_path):
    with pytest.raises(ValueError, match="^methods: expected some of hdm, rise"):
        explain_dataset(PatchModel(), TorchSource(Images()), ["lrp"], tmp_path / "a")
    with pytest.raises(ValueError, match="^engine: expected one of local, ray, got 'spark'"):
        explain_dataset(PatchModel(), TorchSource(Images()), HDM, tmp_path / "a", engine="spark")
    with pytest.raises(ValueError, match="^images: expected a directory of images"):
        FolderSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image file"):
        FolderSource(tmp_path / "empty")
    with pytest.raises(ValueError, match="^dataset: expected a torch Dataset"):
        TorchSource(42)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("name", ["defects", "marking", "lesions"])
def test_the_librarys_own_data_sets_are_explained_as_they_are(tmp_path, name):
    from interpret_segmentation.datasets import (
        DefectDataset,
        LesionDataset,
        MarkingDataset,
        generate_defect_dataset,
    )

    if name == "defects":  # on disk; items are (image, defect pixels) with labels=False
        data = DefectDataset(generate_defect_dataset(tmp_path / "tiles", n=4, size=64,
                                                     progress=False), labels=False)
    elif name == "marking":
        data = MarkingDataset(3, p=0.5, size=48)
    else:
        data = LesionDataset(3, size=48)
    dark = torch.nn.Conv2d(1, 2, 1)  # class 1 where a pixel is darker than 0.4
    with torch.no_grad():
        dark.weight.copy_(torch.tensor([0.0, -10.0]).reshape(2, 1, 1, 1))
        dark.bias.copy_(torch.tensor([0.0, 4.0]))
    out = tmp_path / "run"
    rows = explain_dataset(dark, data, HDM, out, progress=False, log=lambda *_: None)
    assert len(rows) == len(data) and not any(row["error"] for row in rows)
    for position, row in enumerate(rows):  # the set's own masks are the ground truth
        mask = np.load(out / "items" / row["item"] / "mask.npy")
        np.testing.assert_array_equal(mask != 0, data[position][1][0].numpy() != 0)
        assert row["prediction_dice"] != ""
