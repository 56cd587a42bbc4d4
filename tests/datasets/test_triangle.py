import itertools
import json
import math

import numpy as np
import pytest
from oracles import assert_force_spares, assert_sample_basics, components, interrupt_writes
from PIL import Image

from interpret_segmentation.datasets.triangle import (
    generate_triangle_dataset,
    generate_triangle_sample,
    triangle_split,
)


def _sides(points):
    return [math.dist(p, q) for p, q in itertools.combinations(points, 2)]


def _near_equilateral(points, tolerance=0.15):
    sides = _sides(points)
    mean = sum(sides) / 3
    return all(abs(s - mean) <= tolerance * mean for s in sides)


def _object_pixels(image, boxes, threshold):
    """Union of the object pixels (above ``threshold`` of each object's maximum) in ``boxes``."""
    mask = np.zeros(image.shape, dtype=bool)
    for top, left, height, width in boxes:
        window = image[top:top + height, left:left + width]
        mask[top:top + height, left:left + width] |= window > threshold * window.max()
    return mask


def _square_triple(points, side=100.0, tolerance=20.0):
    """True when, seen from one of the points, one other is within ``tolerance`` (largest
    coordinate difference) of a point ``side`` away along the rows and the last one of a point
    ``side`` away along the columns."""
    for corner in points:
        others = [p for p in points if p is not corner]
        row_steps = [(corner[0] + d, corner[1]) for d in (-side, side)]
        col_steps = [(corner[0], corner[1] + d) for d in (-side, side)]
        for a, b in (others, others[::-1]):
            if (min(max(abs(a[0] - r[0]), abs(a[1] - r[1])) for r in row_steps) <= tolerance
                    and min(max(abs(b[0] - c[0]), abs(b[1] - c[1])) for c in col_steps)
                    <= tolerance):
                return True
    return False


def _check_square(meta):
    """The segmented centres sit on three corners of the 100 px axis-aligned square, each
    within the 4 px jitter (plus rounding of the box to whole pixels) per axis."""
    assert meta["side"] == 100.0 and meta["free_corner"] in range(4)
    corners = [(row * 100.0, col * 100.0) for row in (0, 1) for col in (0, 1)]
    del corners[meta["free_corner"]]
    centres = np.array(meta["triangle_centres"])
    shift = centres - np.array(corners)  # the square's top-left corner, seen from each object
    assert np.ptp(shift, axis=0).max() <= 2 * 4 + 1.0
    return _square_triple


def _check_equilateral(meta):
    sides = _sides(meta["triangle_centres"])
    assert max(sides) - min(sides) <= max(2.0, 0.03 * min(sides))
    assert abs(np.mean(sides) - meta["side"]) <= 2.0
    assert 0 <= meta["rotation"] < 360
    return _near_equilateral


@pytest.mark.parametrize("layout", ["square", "equilateral"])
@pytest.mark.parametrize("index", range(12))
def test_sample_follows_the_rules(index, layout):
    sample = generate_triangle_sample(seed=5, index=index, layout=layout)
    assert_sample_basics(sample, seed=5, index=index, size=224)
    meta = sample.meta
    assert meta["layout"] == layout

    # the three segmented objects form the layout's figure ...
    centres = meta["triangle_centres"]
    assert len(centres) == 3
    figure = {"square": _check_square, "equilateral": _check_equilateral}[layout](meta)
    assert figure(centres)

    # ... 2-4 distractors, and no other triple of centres does
    n_distractors = meta["n_distractors"]
    assert 2 <= n_distractors <= 4
    assert len(meta["distractor_centres"]) == len(meta["distractor_boxes"]) == n_distractors
    everything = centres + meta["distractor_centres"]
    for triple in itertools.combinations(range(len(everything)), 3):
        if triple != (0, 1, 2):
            assert not figure([everything[k] for k in triple]), triple

    # every object lies inside the image, centred on its box
    for box, centre in zip(meta["triangle_boxes"] + meta["distractor_boxes"], everything):
        top, left, height, width = box
        assert top >= 0 and left >= 0 and top + height <= 224 and left + width <= 224
        assert centre == pytest.approx([top + (height - 1) / 2, left + (width - 1) / 2], abs=1e-3)

    # segment = the triangle objects' pixels, context = the distractors', disjoint
    threshold = meta["threshold"]
    assert 0 < threshold < 1
    np.testing.assert_array_equal(
        sample.segment, _object_pixels(sample.image, meta["triangle_boxes"], threshold)
    )
    np.testing.assert_array_equal(
        sample.context, _object_pixels(sample.image, meta["distractor_boxes"], threshold)
    )
    assert not np.any(sample.segment & sample.context)
    assert np.all(sample.image[sample.segment | sample.context] > 0)

    # separate objects on a black background
    assert components(sample.segment) == 3
    assert components(sample.context) == n_distractors
    assert components(sample.image > 0) == 3 + n_distractors


@pytest.mark.parametrize("size", [96, 128])
def test_small_images_follow_the_rules(size):
    for index in range(5):
        sample = generate_triangle_sample(seed=1, index=index, size=size)
        assert sample.image.shape == (size, size)
        side = sample.meta["side"]
        assert side == pytest.approx(100 * size / 224, abs=1e-3)
        steps = np.abs(np.diff(np.array(sample.meta["triangle_centres"]), axis=0))
        assert np.all(np.abs(steps.max(axis=1) - side) <= 2 * 4 * size / 224 + 1)
        assert components(sample.segment) == 3
        assert components(sample.image > 0) == 3 + sample.meta["n_distractors"]


def test_samples_are_deterministic():
    a = generate_triangle_sample(seed=2, index=7)
    b = generate_triangle_sample(seed=2, index=7)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.segment, b.segment)
    np.testing.assert_array_equal(a.context, b.context)
    assert a.meta == b.meta
    assert not np.array_equal(a.image, generate_triangle_sample(seed=3, index=7).image)
    assert not np.array_equal(a.image, generate_triangle_sample(seed=2, index=8).image)


def test_meta_is_json_ready():
    meta = generate_triangle_sample(seed=0, index=0).meta
    assert json.loads(json.dumps(meta)) == meta
    for key in ("n_distractors", "triangle_centres", "distractor_centres", "side", "seed", "index",
                "size"):
        assert key in meta


def _read(path):
    return np.asarray(Image.open(path))


def test_dataset_round_trip(tmp_path, capsys):
    root = tmp_path / "triangle"
    assert generate_triangle_dataset(root, n=3, seed=4, size=96, progress=False) == root
    assert "triangle" not in capsys.readouterr().err  # no progress bar
    info = json.loads((root / "triangle.json").read_text())
    assert (info["n"], info["seed"], info["size"], info["layout"]) == (3, 4, 96, "square")
    assert sorted(p.name for p in root.iterdir()) == ["0", "1", "2", "triangle.json"]
    for index in range(3):
        sample = generate_triangle_sample(4, index, 96)
        directory = root / str(index)
        np.testing.assert_array_equal(_read(directory / "image.png"), sample.image)
        segment = _read(directory / "segment.png")
        context = _read(directory / "context.png")
        assert set(np.unique(segment)) <= {0, 255} and set(np.unique(context)) <= {0, 255}
        np.testing.assert_array_equal(segment == 255, sample.segment)
        np.testing.assert_array_equal(context == 255, sample.context)
        assert json.loads((directory / "meta.json").read_text()) == sample.meta
    assert [p.name for p in tmp_path.iterdir()] == ["triangle"]  # no temporary directory left

    # refuses to overwrite without force, replaces with it
    with pytest.raises(FileExistsError, match="force"):
        generate_triangle_dataset(root, n=2, size=96, progress=False)
    generate_triangle_dataset(root, n=2, seed=1, size=96, force=True, progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["0", "1", "triangle.json"]
    assert json.loads((root / "triangle.json").read_text())["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["triangle"]


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    generate_triangle_dataset(tmp_path / "t", n=1, size=96, progress=True)
    captured = capsys.readouterr()
    assert "triangle" in captured.err and captured.out == ""


def test_force_never_deletes_a_foreign_directory(tmp_path):
    assert_force_spares(
        lambda root: generate_triangle_dataset(root, n=1, size=96, force=True, progress=False),
        tmp_path / "mine",
        match="^root: .* does not look like a Triangle data set",
    )
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    interrupt_writes(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        generate_triangle_dataset(tmp_path / "t", n=3, size=96, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_split_sizes():
    train, test = triangle_split(2000)
    assert (len(train), len(test)) == (1400, 600)
    assert not set(train) & set(test)
    assert sorted(train + test) == list(range(2000))
    assert train == sorted(train) and test == sorted(test)
    assert triangle_split(2000) == (train, test)
    small_train, small_test = triangle_split(10)
    assert (len(small_train), len(small_test)) == (7, 3)
    assert sorted(small_train + small_test) == list(range(10))


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: generate_triangle_sample(-1, 0), "seed"),
        (lambda: generate_triangle_sample(0, -1), "index"),
        (lambda: generate_triangle_sample(0, 0, size=95), "size"),
        (lambda: triangle_split(0), "n"),
        (lambda: generate_triangle_sample(0, 0, layout="circle"), "layout"),
    ],
)
def test_bad_arguments(call, name):
    with pytest.raises(ValueError, match=rf"^{name}: expected .*got (-?\d+|'circle')"):
        call()


def test_the_equilateral_layout_is_kept_as_an_option(tmp_path):
    root = generate_triangle_dataset(tmp_path / "t", n=2, size=96, layout="equilateral",
                                     progress=False)
    assert json.loads((root / "triangle.json").read_text())["layout"] == "equilateral"
    meta = json.loads((root / "1" / "meta.json").read_text())
    assert meta == generate_triangle_sample(0, 1, 96, layout="equilateral").meta
    assert "rotation" in meta and "free_corner" not in meta


def test_the_square_rule_is_not_met_by_near_misses():
    corner = (50.0, 50.0)
    assert _square_triple([corner, (150.0, 50.0), (50.0, 150.0)])
    assert _square_triple([(150.0, 150.0), (50.0, 150.0), (150.0, 50.0)])  # any corner free
    assert not _square_triple([corner, (150.0, 50.0), (90.0, 90.0)])  # the third off a corner
    assert not _square_triple([corner, (180.0, 50.0), (50.0, 150.0)])  # a side of 130
    assert not _square_triple([corner, (150.0, 80.0), (80.0, 150.0)])  # turned 17 degrees


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"n": 0}, "n"), ({"seed": -2}, "seed"), ({"size": 64}, "size")],
)
def test_bad_dataset_arguments(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}: expected .*got -?\d+"):
        generate_triangle_dataset(tmp_path / "t", progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []
