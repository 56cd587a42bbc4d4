import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from interpret_segmentation.datasets import (
    TestnetDataset,
    generate_dataset,
    generate_sample,
    list_indices,
    load_sample,
    split_indices,
)


def _components(mask):
    return ndimage.label(mask)[1]


@pytest.mark.parametrize("index", range(40))
def test_generator_follows_the_seed_rules(index):
    sample = generate_sample(seed=3, index=index)
    meta = sample.meta
    assert sample.image.shape == sample.segment.shape == sample.context.shape == (240, 240)
    assert sample.image.dtype == np.uint8
    assert meta["right_shape"] in ("circle", "square")
    assert meta["segmented"] == {"square": "cross", "circle": "triangle"}[meta["right_shape"]]
    shapes = meta["shapes"]
    assert set(shapes) == {"cross", "triangle", meta["right_shape"]}
    for name, box in shapes.items():
        left, right = box["x"], box["x"] + box["side"] - 1
        if name in ("cross", "triangle"):
            assert right < 120, f"{name} must lie in the left half"
        else:
            assert left >= 120, f"{name} must lie in the right half"
        assert 100 <= box["intensity"] <= 255
    # the segment is the segmented shape's pixels, drawn at its grey level; the context the right
    segmented = shapes[meta["segmented"]]
    assert np.all(sample.image[sample.segment] == segmented["intensity"])
    assert np.all(sample.image[sample.context] == shapes[meta["right_shape"]]["intensity"])
    assert not np.any(sample.segment & sample.context)
    assert not sample.segment[:, 120:].any() and not sample.context[:, :120].any()
    # three separate shapes on a black background
    assert _components(sample.image > 0) == 3
    assert _components(sample.segment) == 1 and _components(sample.context) == 1


def test_generator_shapes_are_the_named_shapes():
    for index in range(30):
        sample = generate_sample(0, index)
        box = sample.meta["shapes"][sample.meta["right_shape"]]
        fill = sample.context.sum() / box["side"] ** 2
        # a filled square covers its box, a disc about pi/4 of it
        expected = 1.0 if sample.meta["right_shape"] == "square" else np.pi / 4
        assert fill == pytest.approx(expected, abs=0.06)
        segmented = sample.meta["shapes"][sample.meta["segmented"]]
        fill = sample.segment.sum() / segmented["side"] ** 2
        # triangle: half its box; cross with arms a third of the side thick: 5/9 of it
        expected = 0.5 if sample.meta["segmented"] == "triangle" else 5 / 9
        assert fill == pytest.approx(expected, abs=0.08)


def test_generator_is_deterministic_and_balanced():
    a, b = generate_sample(7, 12), generate_sample(7, 12)
    assert np.array_equal(a.image, b.image) and a.meta == b.meta
    assert not np.array_equal(generate_sample(8, 12).image, a.image)
    circles = sum(generate_sample(1, i).meta["right_shape"] == "circle" for i in range(400))
    assert 160 <= circles <= 240  # 50/50 within 4 standard deviations


def test_dataset_on_disk_round_trip(tmp_path):
    root = generate_dataset(tmp_path / "data", n=5, seed=2, size=64, progress=False)
    assert list_indices(root) == [0, 1, 2, 3, 4]
    for index in range(5):
        directory = root / str(index)
        assert {p.name for p in directory.iterdir()} == {"image.png", "segment.png",
                                                       "context.png", "meta.json"}
        segment = np.asarray(Image.open(directory / "segment.png"))
        assert set(np.unique(segment)) <= {0, 255}
        meta = json.loads((directory / "meta.json").read_text())
        assert {"right_shape", "segmented"} <= set(meta)
        stored, drawn = load_sample(root, index), generate_sample(2, index, size=64)
        assert np.array_equal(stored.image, drawn.image)
        assert np.array_equal(stored.segment, drawn.segment)
        assert np.array_equal(stored.context, drawn.context)
    data = TestnetDataset(root, indices=[1, 3])
    image, segment = data[1]
    assert image.shape == segment.shape == (1, 64, 64) and image.dtype == torch.float32
    assert torch.equal(segment[0].bool(), torch.from_numpy(generate_sample(2, 3, 64).segment))


def test_dataset_refuses_to_overwrite_and_force_only_replaces_datasets(tmp_path):
    root = generate_dataset(tmp_path / "data", n=2, size=48, progress=False)
    with pytest.raises(FileExistsError, match="force"):
        generate_dataset(root, n=3, size=48, progress=False)
    assert list_indices(root) == [0, 1]
    generate_dataset(root, n=3, size=48, force=True, progress=False)
    assert list_indices(root) == [0, 1, 2]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="does not look like a testnet data set"):
        generate_dataset(mine, n=2, size=48, force=True, progress=False)
    assert (mine / "notes.txt").read_text() == "keep"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_split_is_80_20_disjoint_and_complete():
    train, val = split_indices(1000)
    assert len(train) == 800 and len(val) == 200
    assert sorted(train + val) == list(range(1000))
    assert split_indices(1000) == (train, val)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="size"):
        generate_sample(0, 0, size=10)
    with pytest.raises(ValueError, match="index"):
        generate_sample(0, -1)
    with pytest.raises(ValueError, match="n: expected at least 1"):
        generate_dataset(tmp_path / "x", n=0)
    with pytest.raises(FileNotFoundError, match="testnet generate"):
        TestnetDataset(tmp_path / "missing")
    root = generate_dataset(tmp_path / "data", n=2, size=48, progress=False)
    with pytest.raises(ValueError, match="indices"):
        TestnetDataset(root, indices=[0, 5])
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(10, val_fraction=1.5)
