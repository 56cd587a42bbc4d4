import json

import numpy as np
import pytest
import torch
from oracles import assert_force_spares, assert_sample_basics, interrupt_writes
from PIL import Image
from scipy import ndimage
from skimage.measure import regionprops
from skimage.morphology import disk, skeletonize

from interpret_segmentation.datasets.defects import (
    ANNOTATION_MARGIN,
    DEFECT_AREA,
    TILE_DEFECT_AREA,
    DefectDataset,
    _draw_sample,
    coarse_annotation,
    defect_kind,
    defect_split,
    generate_defect_dataset,
    generate_defect_sample,
    load_defect_sample,
)

EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity


def _best_threshold_iou(image, segment):
    """The best IoU with ``segment`` that any global threshold ``image < t`` reaches."""
    inside = np.bincount(image[segment], minlength=257)
    outside = np.bincount(image[~segment], minlength=257)
    true_pos = np.concatenate([[0], np.cumsum(inside)])  # pixels below t, for t = 0 .. 256
    false_pos = np.concatenate([[0], np.cumsum(outside)])
    return float(np.max(true_pos / (segment.sum() + false_pos)))


@pytest.fixture(scope="module")
def samples_224():
    return [generate_defect_sample(seed=3, index=i, style="classic") for i in range(12)]


@pytest.fixture(scope="module")
def tiles_224():
    return [generate_defect_sample(seed=3, index=i) for i in range(16)]


def test_kinds_follow_the_index():
    assert [defect_kind(i) for i in range(8)] == ["none", "crack", "none", "blowhole"] * 2
    for i in range(8):
        sample = generate_defect_sample(1, i, size=64)
        assert sample.meta["kind"] == defect_kind(i)
        assert sample.label == sample.meta["label"] == int(i % 2 == 1)


def test_labels_are_balanced():
    labels = [generate_defect_sample(7, i, size=64).label for i in range(40)]
    assert labels.count(0) == labels.count(1) == 20
    kinds = [generate_defect_sample(7, i, size=64).meta["kind"] for i in range(1, 40, 2)]
    assert kinds.count("crack") == kinds.count("blowhole") == 10


@pytest.mark.parametrize("style", ["tile", "classic"])
def test_samples_are_deterministic(style):
    for index in (0, 1, 3):
        a = generate_defect_sample(2, index, size=96, style=style)
        b = generate_defect_sample(2, index, size=96, style=style)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.segment, b.segment)
        np.testing.assert_array_equal(a.annotation, b.annotation)
        assert a.label == b.label and a.meta == b.meta and a.meta["style"] == style
        assert not np.array_equal(a.image, generate_defect_sample(2, index + 4, 96, style).image)
        assert not np.array_equal(a.image, generate_defect_sample(3, index, 96, style).image)
    # the same (seed, index) in the other style is another image
    other = "classic" if style == "tile" else "tile"
    assert not np.array_equal(a.image, generate_defect_sample(2, 3, 96, other).image)


@pytest.mark.parametrize("style", ["tile", "classic"])
@pytest.mark.parametrize("size", [64, 96, 224])
def test_samples_follow_the_rules(size, style):
    low, high = TILE_DEFECT_AREA if style == "tile" else DEFECT_AREA
    for index in range(8):
        sample = generate_defect_sample(seed=4, index=index, size=size, style=style)
        assert_sample_basics(sample, seed=4, index=index, size=size)
        assert not sample.context.any()
        fraction = sample.segment.mean()
        assert sample.meta["defect_fraction"] == pytest.approx(fraction, abs=1e-6)
        assert sample.annotation.shape == (size, size) and sample.annotation.dtype == bool
        if sample.label == 0:
            assert not sample.segment.any() and sample.meta["defect"] == {}
            assert not sample.annotation.any() and sample.meta["annotation"] == {}
        else:
            assert low <= fraction <= high
            assert sample.meta["attempts"] >= 1


@pytest.mark.parametrize("style", ["tile", "classic"])
def test_segment_is_exactly_the_darkened_pixels(style):
    for index in range(8):
        surface, sample = _draw_sample(5, index, 96, style)
        np.testing.assert_array_equal(sample.image[~sample.segment], surface[~sample.segment])
        assert np.all(sample.image[sample.segment] < surface[sample.segment])
        # the untouched surface is mid grey and textured
        assert 60 < surface.mean() < 180 and surface.std() > 4


def test_meta_is_json_ready():
    for index in range(4):
        meta = generate_defect_sample(0, index, size=64).meta
        assert json.loads(json.dumps(meta)) == meta
        for key in ("seed", "index", "size", "label", "kind", "defect_fraction", "surface", "defect"):
            assert key in meta


def test_cracks_are_thin_branching_lines(samples_224):
    cracks = [s for s in samples_224 if s.meta["kind"] == "crack"]
    assert len(cracks) == 3
    for sample in cracks + [generate_defect_sample(9, i, style="classic") for i in (1, 5, 9, 13)]:
        segment = sample.segment
        assert ndimage.label(segment, EIGHT)[1] == 1  # one connected crack, branches included
        assert 1 <= len(sample.meta["defect"]["branches"]) <= 2
        depth = ndimage.distance_transform_edt(segment)
        # 1-3 px wide: nearly every pixel lies within 2 px of the background; only where a
        # branch leaves the trunk a few pixels can lie deeper
        assert depth.max() <= 3.0
        assert (depth > 2.0).sum() <= 0.03 * segment.sum()
        assert segment.sum() / skeletonize(segment).sum() <= 3.0
        # darker than the surface around it, with some variation along the crack
        ring = ndimage.binary_dilation(segment, EIGHT, iterations=3) & ~segment
        assert sample.image[segment].mean() < sample.image[ring].mean() - 15
        assert sample.image[segment].std() > 3


def test_blowholes_are_small_compact_blobs(samples_224):
    holes = [s for s in samples_224 if s.meta["kind"] == "blowhole"]
    assert len(holes) == 3
    for sample in holes + [generate_defect_sample(9, i, style="classic") for i in (3, 7, 11, 15)]:
        labelled, count = ndimage.label(sample.segment, EIGHT)
        assert 2 <= count == sample.meta["defect"]["n_holes"] <= 8
        for region in regionprops(labelled, intensity_image=sample.image):
            assert region.area <= np.pi * (8 * 1.3 + 1) ** 2  # radius at most 8 px (+30 %)
            assert region.solidity >= 0.85 and region.eccentricity < 0.9
            # darker centre: the deepest pixel is well inside the blob
            blob = labelled == region.label
            inner = ndimage.binary_erosion(blob)
            assert sample.image[inner].min() == sample.image[blob].min()


@pytest.mark.parametrize(("samples", "largest"), [("samples_224", 0.9), ("tiles_224", 1.0)])
def test_defects_are_not_found_by_a_global_threshold(samples, largest, request):
    samples = request.getfixturevalue(samples)
    scores = [_best_threshold_iou(s.image, s.segment) for s in samples if s.label == 1]
    # uneven light and texture: a threshold finds a dark blowhole on an evenly lit tile at
    # best, most defects only in part
    assert max(scores) < largest and np.mean(scores) < 0.75 and np.median(scores) < 0.8


# -- the "tile" style: magnetic-tile-like blowholes and cracks --------------------------------------


@pytest.mark.parametrize("size", [96, 224])
def test_tile_cracks_are_2_to_5_px_wide(size):
    cracks = [generate_defect_sample(8, i, size) for i in range(1, 64 if size < 200 else 32, 4)]
    for sample in cracks:
        segment, defect = sample.segment, sample.meta["defect"]
        assert 2.0 <= defect["widths"][0] <= defect["widths"][1] <= 5.0
        assert ndimage.label(segment, EIGHT)[1] == 1  # one crack, its branch attached
        # at least 2 px wide: nearly every pixel lies in a 2 x 2 square of crack pixels (the
        # 1 px tips of the "classic" cracks keep only half of them)
        kept = ndimage.binary_opening(segment, np.ones((2, 2), bool)).sum() / segment.sum()
        assert kept >= 0.85
        # at most 5 px wide: a disc of 7 px fits only where the branch leaves the trunk, one
        # of 9 px hardly anywhere
        assert ndimage.binary_erosion(segment, disk(3)).sum() <= 0.03 * segment.sum()
        assert ndimage.binary_erosion(segment, disk(4)).sum() <= 5
        # mean width: area over the length of the centre line
        length = defect["trunk_length"] + sum(b["length"] for b in defect["branches"])
        assert 2.0 <= segment.sum() / length <= 5.5
        ring = ndimage.binary_dilation(segment, EIGHT, iterations=3) & ~segment
        assert sample.image[segment].mean() < sample.image[ring].mean() - 8  # faint ones too


@pytest.mark.parametrize("size", [96, 224])
def test_tile_blowholes_are_dark_ellipses_of_a_few_percent(size):
    for index in range(3, 96 if size < 200 else 40, 4):
        sample = generate_defect_sample(8, index, size)
        defect = sample.meta["defect"]
        assert 0.01 <= sample.segment.mean() <= 0.045  # "a few percent" of the image
        labelled, count = ndimage.label(sample.segment, EIGHT)
        assert 1 <= count == defect["n_holes"] <= 3
        for (long, short), angle, centre in zip(defect["semi_axes"], defect["angles"],
                                                defect["centres"]):
            assert 1.0 <= long / short <= 2.2 + 1e-9
            region = labelled == labelled[tuple(np.round(centre).astype(int))]
            # the pixels whose centres lie in the ellipse: area pi a b, up to the raster
            assert abs(region.sum() - np.pi * long * short) <= 0.5 * np.pi * (long + short) + 1
            props = regionprops(region.astype(int))[0]
            if region.sum() >= 80:
                assert props.solidity >= 0.9
                assert abs(props.major_axis_length / props.minor_axis_length - long / short) < 0.35
                if long / short > 1.5:  # the long axis points where it was drawn
                    # (skimage measures from the row axis, the generator from the column axis)
                    turn = (np.pi / 2 - np.radians(angle) - props.orientation) % np.pi
                    assert min(turn, np.pi - turn) < 0.3
            ring = ndimage.binary_dilation(region, EIGHT, iterations=3) & ~sample.segment
            assert sample.image[region].mean() < sample.image[ring].mean() - 8


def test_tile_surfaces_are_unevenly_lit_and_textured(tiles_224):
    ranges, grain = [], []
    for sample in tiles_224:
        if sample.label:
            continue
        image = sample.image.astype(float)
        light = ndimage.gaussian_filter(image, 20.0)
        inner = light[30:-30, 30:-30]  # away from the reflected border of the filter
        ranges.append(inner.max() - inner.min())
        grain.append((image - ndimage.gaussian_filter(image, 2.0)).std())
    assert min(ranges) > 5 and np.mean(ranges) > 15  # illumination differs across a tile
    assert min(grain) > 2  # and the surface is textured everywhere


# -- coarse annotation ----------------------------------------------------------------------------


def _outline_distances(annotation, segment):
    """Distance (px) of each outline pixel of ``annotation`` to the defect."""
    outline = annotation & ~ndimage.binary_erosion(annotation)
    return ndimage.distance_transform_edt(~segment)[outline]


@pytest.mark.parametrize("size", [96, 224])
def test_coarse_annotation_contains_the_defect_slightly_grown_and_smooth(size):
    for index in range(1, 48 if size < 200 else 20, 2):
        sample = generate_defect_sample(6, index, size)
        annotation, segment = sample.annotation, sample.segment
        assert np.all(annotation[segment])  # contains the whole defect
        distances = _outline_distances(annotation, segment)
        assert 0.7 <= distances.mean() <= 3.0 and distances.max() <= 5.0  # slightly grown
        assert ANNOTATION_MARGIN[0] <= sample.meta["annotation"]["margin"] <= ANNOTATION_MARGIN[1]
        assert np.array_equal(ndimage.binary_fill_holes(annotation), annotation)  # no holes
        # smooth: a Gaussian of std 1 px thresholded at 0.5 changes hardly a pixel
        blurred = ndimage.gaussian_filter(annotation.astype(float), 1.0) > 0.5
        assert (blurred ^ annotation).sum() <= 0.02 * annotation.sum()
        assert ndimage.label(annotation, EIGHT)[1] <= ndimage.label(segment, EIGHT)[1]


def test_coarse_annotation_smooths_a_ragged_outline():
    comb = np.zeros((64, 64), dtype=bool)
    comb[20:41:2, 12:52] = True  # eleven 1 px lines, 1 px apart: ragged and full of gaps
    comb[20:41, 12] = True
    annotation = coarse_annotation(comb, seed=0, index=1)
    assert np.all(annotation[comb])
    assert annotation[20:41, 12:52].all()  # the gaps are filled
    blurred = ndimage.gaussian_filter(comb.astype(float), 1.0) > 0.5
    assert (blurred ^ comb).sum() > 0.2 * comb.sum()  # the comb itself is not smooth
    blurred = ndimage.gaussian_filter(annotation.astype(float), 1.0) > 0.5
    assert (blurred ^ annotation).sum() <= 0.02 * annotation.sum()
    assert ndimage.distance_transform_edt(~comb)[annotation].max() <= 5.0


def test_coarse_annotation_has_its_own_random_stream():
    sample = generate_defect_sample(4, 5, 96)
    assert np.array_equal(coarse_annotation(sample.segment, 4, 5), sample.annotation)
    assert not np.array_equal(coarse_annotation(sample.segment, 4, 9), sample.annotation)
    assert not coarse_annotation(np.zeros((8, 8), bool), 4, 5).any()
    for bad in (np.zeros((8, 9), bool), np.zeros((8, 8)), np.zeros(8, bool)):
        with pytest.raises(ValueError, match="^segment: expected a square 2-D boolean array"):
            coarse_annotation(bad)


def _read(path):
    return np.asarray(Image.open(path))


def test_dataset_round_trip(tmp_path, capsys):
    root = tmp_path / "defects"
    assert generate_defect_dataset(root, n=5, seed=6, size=64, progress=False) == root
    assert "defects" not in capsys.readouterr().err  # no progress bar
    info = json.loads((root / "defects.json").read_text())
    assert (info["n"], info["seed"], info["size"], info["style"]) == (5, 6, 64, "tile")
    assert info["label_counts"] == {"0": 3, "1": 2}
    assert info["kind_counts"] == {"none": 3, "crack": 1, "blowhole": 1}
    assert sorted(p.name for p in root.iterdir()) == ["0", "1", "2", "3", "4", "defects.json"]
    for index in range(5):
        sample = generate_defect_sample(6, index, 64)
        directory = root / str(index)
        np.testing.assert_array_equal(_read(directory / "image.png"), sample.image)
        segment = _read(directory / "segment.png")
        assert set(np.unique(segment)) <= {0, 255}
        np.testing.assert_array_equal(segment == 255, sample.segment)
        assert not _read(directory / "context.png").any()
        meta = json.loads((directory / "meta.json").read_text())
        assert meta == sample.meta and meta["label"] == sample.label
        loaded = load_defect_sample(root, index)
        np.testing.assert_array_equal(loaded.image, sample.image)
        np.testing.assert_array_equal(loaded.segment, sample.segment)
        np.testing.assert_array_equal(loaded.annotation, sample.annotation)  # computed again
        assert loaded.label == sample.label and loaded.meta == sample.meta
    assert [p.name for p in tmp_path.iterdir()] == ["defects"]  # no temporary directory left

    # refuses to overwrite without force, replaces with it
    with pytest.raises(FileExistsError, match="force"):
        generate_defect_dataset(root, n=2, size=64, progress=False)
    assert json.loads((root / "defects.json").read_text())["seed"] == 6
    generate_defect_dataset(root, n=2, seed=1, size=64, force=True, progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["0", "1", "defects.json"]
    assert json.loads((root / "defects.json").read_text())["seed"] == 1


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    generate_defect_dataset(tmp_path / "d", n=1, size=64, progress=True)
    captured = capsys.readouterr()
    assert "defects" in captured.err and captured.out == ""


def test_force_never_deletes_a_foreign_directory(tmp_path):
    assert_force_spares(
        lambda root: generate_defect_dataset(root, n=1, size=64, force=True, progress=False),
        tmp_path / "mine",
        match="^root: .* does not look like a defects data set",
    )


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    interrupt_writes(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        generate_defect_dataset(tmp_path / "d", n=3, size=64, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("n", [1, 2, 7, 10, 40, 101, 1000])
def test_split_is_stratified_60_20_20(n):
    train, val, test = defect_split(n)
    assert (len(val), len(test)) == (round(0.2 * n), round(0.2 * n))
    assert len(train) == n - 2 * round(0.2 * n)
    assert sorted(train + val + test) == list(range(n))
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    assert all(part == sorted(part) for part in (train, val, test))
    assert defect_split(n) == (train, val, test)
    share = sum(i % 2 for i in range(n)) / n  # fraction of defective samples overall
    for part in (train, val, test):
        defective = sum(defect_kind(i) != "none" for i in part)
        assert abs(defective - share * len(part)) < 1
        for kind in ("crack", "blowhole"):
            in_part = sum(defect_kind(i) == kind for i in part)
            overall = sum(defect_kind(i) == kind for i in range(n))
            assert abs(in_part - overall * len(part) / n) <= 1


def test_split_of_100_is_exactly_balanced():
    for part, size in zip(defect_split(100), (60, 20, 20)):
        assert len(part) == size
        assert sum(i % 2 for i in part) == size // 2


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets") / "defects"
    return generate_defect_dataset(root, n=4, seed=2, size=64, progress=False)


def test_torch_dataset_for_classifiers(small_set):
    data = DefectDataset(small_set)
    assert len(data) == 4
    for item in range(4):
        image, label = data[item]
        assert image.shape == (1, 64, 64) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert label.shape == () and label.dtype == torch.int64
        assert int(label) == item % 2
        expected = generate_defect_sample(2, item, 64).image.astype(np.float32) / 255.0
        np.testing.assert_array_equal(image[0].numpy(), expected)
    assert data.sample(1).label == 1 and data.sample(1).meta["kind"] == "crack"


def test_torch_dataset_for_segmentation(small_set):
    data = DefectDataset(small_set, indices=[3, 0], labels=False, cache=False)
    assert len(data) == 2
    image, segment = data[0]
    assert image.shape == segment.shape == (1, 64, 64)
    assert image.dtype == segment.dtype == torch.float32
    assert set(torch.unique(segment).tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(segment[0].numpy() > 0.5, generate_defect_sample(2, 3, 64).segment)
    assert not data[1][1].any()  # index 0: defect-free
    batch = torch.utils.data.default_collate([data[0], data[1]])
    assert batch[0].shape == batch[1].shape == (2, 1, 64, 64)
    # what a U-Net learns from in seed 003's setting: the coarse annotation
    coarse = DefectDataset(small_set, indices=[3, 0], labels=False, annotation=True)
    image, annotation = coarse[0]
    np.testing.assert_array_equal(image.numpy(), data[0][0].numpy())
    np.testing.assert_array_equal(annotation[0].numpy() > 0.5,
                                  generate_defect_sample(2, 3, 64).annotation)
    assert annotation.sum() > segment.sum() and not coarse[1][1].any()
    with pytest.raises(ValueError, match="^annotation: expected False with labels=True"):
        DefectDataset(small_set, annotation=True)


def test_torch_dataset_errors(tmp_path, small_set):
    with pytest.raises(FileNotFoundError, match="generate_defect_dataset"):
        DefectDataset(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="generate_defect_dataset"):
        load_defect_sample(tmp_path / "nowhere", 0)
    with pytest.raises(ValueError, match="^indices: 1 requested samples are not in"):
        DefectDataset(small_set, indices=[0, 9])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="^root: .* holds no defect samples"):
        DefectDataset(tmp_path / "empty")


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda: generate_defect_sample(-1, 0), ValueError, "seed"),
        (lambda: generate_defect_sample(1.5, 0), TypeError, "seed"),
        (lambda: generate_defect_sample("0", 0), TypeError, "seed"),
        (lambda: generate_defect_sample(0, -1), ValueError, "index"),
        (lambda: generate_defect_sample(0, 0, size=63), ValueError, "size"),
        (lambda: generate_defect_sample(0, 0, size=64.0), TypeError, "size"),
        (lambda: defect_split(0), ValueError, "n"),
        (lambda: defect_split(2.0), TypeError, "n"),
        (lambda: defect_kind(-3), ValueError, "index"),
        (lambda: generate_defect_sample(0, 0, style="smooth"), ValueError, "style"),
        (lambda: coarse_annotation(np.zeros((4, 4), bool), seed=-1), ValueError, "seed"),
    ],
)
def test_bad_arguments(call, error, name):
    with pytest.raises(error, match=rf"^{name}: expected "):
        call()


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"n": 0}, ValueError, "n"),
        ({"n": "5"}, TypeError, "n"),
        ({"seed": -2}, ValueError, "seed"),
        ({"seed": 0.5}, TypeError, "seed"),
        ({"size": 32}, ValueError, "size"),
        ({"style": "tiles"}, ValueError, "style"),
    ],
)
def test_bad_dataset_arguments(tmp_path, kwargs, error, name):
    with pytest.raises(error, match=rf"^{name}: expected "):
        generate_defect_dataset(tmp_path / "d", progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []
