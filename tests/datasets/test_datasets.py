import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import assert_force_spares, assert_sample_basics, components, interrupt_writes
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
from interpret_segmentation.datasets.files import boxes_apart, read_gray, read_image


@pytest.mark.parametrize("index", range(40))
def test_generator_follows_the_seed_rules(index):
    sample = generate_sample(seed=3, index=index)
    assert_sample_basics(sample, seed=3, index=index, size=240)
    meta = sample.meta
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
    assert components(sample.image > 0) == 3
    assert components(sample.segment) == 1 and components(sample.context) == 1


def _shape_masks(sample):
    from interpret_segmentation.datasets.testnet import _draw_mask

    size = sample.meta["size"]
    return {name: _draw_mask(name, box["x"], box["y"], box["side"], size)
            for name, box in sample.meta["shapes"].items()}


def assert_shapes_apart_in_their_halves(sample, gap=3):
    """At least ``gap`` background pixels between any two shapes (Euclidean distance above
    ``gap``), the left shapes in the left half and the right shape in the right half."""
    masks = _shape_masks(sample)
    half = sample.meta["size"] // 2
    where = f"sample {sample.meta['index']} of seed {sample.meta['seed']}"
    for name, mask in masks.items():
        columns = np.flatnonzero(mask.any(0))
        if name in ("cross", "triangle"):
            assert columns.max() < half, f"{where}: the {name} reaches into the right half"
        else:
            assert columns.min() >= half, f"{where}: the {name} reaches into the left half"
    names = list(masks)
    for i, first in enumerate(names):
        distance = ndimage.distance_transform_edt(~masks[first])
        for second in names[i + 1:]:
            nearest = distance[masks[second]].min()
            assert nearest > gap, f"{where}: {first} and {second} only {nearest:.1f} px apart"


def test_every_sample_of_the_default_set_keeps_the_shapes_apart():
    # the set `make demo` generates: 1000 samples of seed 0 at 240 px (sample 632 once had its
    # triangle touching the square across the middle column)
    for index in range(1000):
        assert_shapes_apart_in_their_halves(generate_sample(0, index))


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), index=st.integers(0, 10**6), size=st.integers(32, 300))
def test_any_seed_and_size_keeps_the_shapes_apart(seed, index, size):
    assert_shapes_apart_in_their_halves(generate_sample(seed, index, size))


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
    assert_force_spares(
        lambda mine: generate_dataset(mine, n=2, size=48, force=True, progress=False),
        tmp_path / "mine",
        match="does not look like a testnet data set",
    )
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
    with pytest.raises(ValueError, match="^n: expected a positive int, got 0$"):
        generate_dataset(tmp_path / "x", n=0)
    with pytest.raises(FileNotFoundError, match="testnet generate"):
        TestnetDataset(tmp_path / "missing")
    root = generate_dataset(tmp_path / "data", n=2, size=48, progress=False)
    with pytest.raises(ValueError, match="indices"):
        TestnetDataset(root, indices=[0, 5])
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(10, val_fraction=1.5)


def test_boxes_apart_takes_squares_and_rectangles():
    # squares (x, y, side): 0..9 and 14..18 leave 4 free pixels, 13..17 only 3
    assert boxes_apart((0, 0, 10), (14, 0, 5), 4)
    assert not boxes_apart((0, 0, 10), (13, 0, 5), 4)
    # rectangles (top, left, height, width): apart along the second axis only
    assert boxes_apart((0, 0, 10, 3), (5, 7, 2, 2), 4)
    assert not boxes_apart((0, 0, 10, 3), (5, 6, 2, 2), 4)
    assert not boxes_apart((2, 2, 5), (0, 0, 3, 3), 0)  # overlapping, square vs rectangle


def test_interrupted_forced_replace_keeps_the_old_set(tmp_path, monkeypatch):
    root = generate_dataset(tmp_path / "data", n=2, seed=1, size=48, progress=False)
    interrupt_writes(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(root, n=3, seed=2, size=48, force=True, progress=False)
    assert list_indices(root) == [0, 1]
    assert json.loads((root / "testnet.json").read_text())["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


@given(st.sampled_from([8, 16]), st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_read_image_scales_by_the_bit_depth(tmp_path_factory, bits, height, width, seed):
    top = 2**bits - 1
    values = np.random.default_rng(seed).integers(0, top + 1, (height, width))
    values.flat[0] = top  # the full range is kept, not clipped to {0, 1}
    path = tmp_path_factory.mktemp("png") / "image.png"
    Image.fromarray(values.astype(np.uint8 if bits == 8 else np.uint16)).save(path)
    for channels in (None, 1, 3):
        array = read_image(path, channels)
        assert array.dtype == np.float32 and array.max() == 1.0
        gray = array if channels != 3 else array[0]
        assert array.shape == ((3,) if channels == 3 else ()) + (height, width)
        assert np.allclose(gray, values / top, atol=1e-7)
    if bits == 8:
        assert np.array_equal(read_gray(path), values)


def test_read_image_keeps_colour_when_asked_and_drops_alpha(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4)).astype(np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    for channels in (None, 3):
        assert np.allclose(read_image(tmp_path / "rgba.png", channels),
                           rgba[..., :3].transpose(2, 0, 1) / 255, atol=1e-7)
    luminance = np.asarray(Image.fromarray(rgba).convert("RGB").convert("L")) / 255
    assert np.allclose(read_image(tmp_path / "rgba.png", 1), luminance, atol=1e-7)
    Image.fromarray(rgba[..., 0] > 127).save(tmp_path / "bilevel.png")
    assert np.array_equal(read_image(tmp_path / "bilevel.png"), rgba[..., 0] > 127)
    with pytest.raises(ValueError, match="the model takes 4 channels"):
        read_image(tmp_path / "rgba.png", 4)


def test_read_image_refuses_what_is_no_image(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (30, 30)).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / "good.png")
    whole = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    Image.fromarray(np.full((3, 3), 70000, np.int32)).save(tmp_path / "deep.tiff")
    for name in ("truncated.png", "empty.png", "text.png", "deep.tiff"):
        with pytest.raises(ValueError, match=rf"^photo: .*{name} is not an image file"):
            read_image(tmp_path / name, name="photo")
    with pytest.raises(FileNotFoundError, match="photo: .*missing.png not found"):
        read_image(tmp_path / "missing.png", name="photo")


def _global_random_states():
    import random

    numpy_state = np.random.get_state()
    return (torch.get_rng_state(), numpy_state[0], numpy_state[1].copy(), numpy_state[2:],
            random.getstate())


def _same_states(a, b) -> bool:
    return (torch.equal(a[0], b[0]) and a[1] == b[1] and np.array_equal(a[2], b[2])
            and a[3] == b[3] and a[4] == b[4])


def test_generators_leave_the_global_random_generators_alone(tmp_path):
    """Every data set draws from its own numpy Generator: the global torch, numpy and Python
    generators are neither reseeded nor advanced."""
    import random

    from interpret_segmentation.datasets import (
        LesionDataset,
        MarkingDataset,
        defect_split,
        generate_defect_dataset,
        generate_defect_sample,
        generate_lesion_sample,
        generate_marking_sample,
        generate_triangle_dataset,
        generate_triangle_sample,
        healthy_organ,
        triangle_split,
    )

    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    before = _global_random_states()
    generate_sample(0, 1, size=48)
    TestnetDataset(generate_dataset(tmp_path / "testnet", n=2, size=48, progress=False))[1]
    split_indices(10, seed=3)
    generate_triangle_sample(0, 1, size=96)
    generate_triangle_dataset(tmp_path / "triangle", n=1, size=96, progress=False)
    triangle_split(10)
    generate_defect_sample(0, 1, size=64)
    generate_defect_dataset(tmp_path / "defects", n=1, size=64, progress=False)
    defect_split(10)
    generate_marking_sample(0, 1, 0.5, size=32)
    generate_lesion_sample(0, 1, size=32)
    healthy_organ(0, size=32)
    MarkingDataset(2, 0.5, size=32)[1]
    LesionDataset(2, size=32)[1]
    after = _global_random_states()
    assert _same_states(before, after)
    # and the check itself sees a draw from any of them
    for draw in (lambda: torch.rand(1), lambda: np.random.rand(), lambda: random.random()):
        draw()
        assert not _same_states(after, _global_random_states())
        after = _global_random_states()


@pytest.mark.parametrize("generate", ["testnet", "triangle", "defects", "marking", "lesion"])
def test_generators_take_numpy_ints_and_refuse_bools(generate):
    from interpret_segmentation.datasets import (
        generate_defect_sample,
        generate_lesion_sample,
        generate_marking_sample,
        generate_triangle_sample,
    )

    make = {"testnet": lambda seed, index, size: generate_sample(seed, index, size),
            "triangle": lambda seed, index, size: generate_triangle_sample(seed, index, size + 48),
            "defects": lambda seed, index, size: generate_defect_sample(seed, index, size + 16),
            "marking": lambda seed, index, size: generate_marking_sample(seed, index, 0.5, size),
            "lesion": lambda seed, index, size: generate_lesion_sample(seed, index, size)}[generate]
    plain = make(3, 1, 48)
    numpy = make(np.int64(3), np.uint8(1), np.int32(48))
    assert np.array_equal(plain.image, numpy.image) and plain.meta == numpy.meta
    for arguments, name in (((True, 1, 48), "seed"), ((3, False, 48), "index"),
                            ((3, 1, 48.0), "size")):
        with pytest.raises(TypeError, match=f"^{name}: expected (a non-negative int|an int >= \\d+), got"):
            make(*arguments)
