import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from interpret_segmentation.datasets.dreams import (
    LesionDataset,
    MarkingDataset,
    generate_lesion_sample,
    generate_marking_sample,
    healthy_organ,
    line_kernel,
    marking_response,
)

EIGHT = np.ones((3, 3), dtype=bool)


def _best_threshold_iou(image, mask):
    """The best IoU with ``mask`` reached by any global threshold, above or below."""
    levels = np.round(image * 255).astype(int)
    inside = np.bincount(levels[mask], minlength=256)
    outside = np.bincount(levels[~mask], minlength=256)
    best = 0.0
    for a, b in ((inside, outside), (inside[::-1], outside[::-1])):
        true_pos, false_pos = np.cumsum(a), np.cumsum(b)
        best = max(best, float(np.max(true_pos / (mask.sum() + false_pos))))
    return best


def _axis_ratio(region):
    """Minor / major axis of a bool region from its second moments."""
    rows, cols = np.nonzero(region)
    eigen = np.linalg.eigvalsh(np.cov(np.stack([rows, cols]).astype(float)) + np.eye(2) / 12)
    return math.sqrt(eigen[0] / eigen[1])


def _ring(mask, lesion, organ, inner=1, outer=4):
    """Organ pixels 1-4 px around ``lesion``, away from every lesion and the organ edge."""
    ring = ndimage.binary_dilation(lesion, iterations=outer) & ~ndimage.binary_dilation(
        lesion, iterations=inner)
    return ring & ndimage.binary_erosion(organ, iterations=2) & ~ndimage.binary_dilation(mask)


@pytest.fixture(scope="module")
def marking_pairs():
    """(unmarked, marked) versions of the same samples."""
    return [(generate_marking_sample(5, i, 0.5, marking=False),
             generate_marking_sample(5, i, 0.5, marking=True)) for i in range(12)]


@pytest.fixture(scope="module")
def lesion_sets():
    """Samples 0-39 of seed 2 for every shape / intensity."""
    return {(shape, intensity): [generate_lesion_sample(2, i, shape=shape, intensity=intensity)
                                 for i in range(40)]
            for shape in ("round", "elongated") for intensity in ("real", "synthetic")}


# ---------------------------------------------------------------------------------------------
# objects with a marking


def test_marking_sample_types_and_determinism():
    a = generate_marking_sample(3, 7, 0.5)
    b = generate_marking_sample(3, 7, 0.5)
    assert a.image.dtype == np.float32 and a.image.shape == (64, 64)
    assert a.mask.dtype == bool and a.mask.shape == (64, 64)
    assert 0.0 <= a.image.min() and a.image.max() <= 1.0
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.meta == b.meta and a.marked == b.marked
    assert len(json.dumps(a.meta)) < 5000  # parameters only, no arrays
    assert not np.array_equal(a.image, generate_marking_sample(3, 8, 0.5).image)
    assert not np.array_equal(a.image, generate_marking_sample(4, 7, 0.5).image)
    assert generate_marking_sample(3, 7, 0.5, size=48).image.shape == (48, 48)


def test_objects_cover_a_plausible_area_and_need_more_than_a_threshold(marking_pairs):
    fractions = [u.mask.mean() for u, _ in marking_pairs]
    assert 0.02 <= min(fractions) and max(fractions) <= 0.3
    ious = [_best_threshold_iou(u.image, u.mask) for u, _ in marking_pairs]
    assert np.mean(ious) < 0.6


def test_layout_does_not_depend_on_p_and_marking_stays_inside_the_mask(marking_pairs):
    for index in (0, 1):
        low = generate_marking_sample(5, index, 0.1, marking=False)
        high = generate_marking_sample(5, index, 0.9, marking=False)
        assert np.array_equal(low.image, high.image) and np.array_equal(low.mask, high.mask)
    for unmarked, marked in marking_pairs:
        assert not unmarked.marked and marked.marked
        assert np.array_equal(unmarked.mask, marked.mask)
        changed = unmarked.image != marked.image
        assert changed[marked.mask].any()
        # outside the objects only the decoys on the distractors change anything
        assert changed[~marked.mask].any() == bool(marked.meta["decoys"])
        assert unmarked.meta["segments"] == [] and len(marked.meta["segments"]) >= 3
        assert unmarked.meta["decoys"] == []
        assert bool(marked.meta["decoys"]) == bool(marked.meta["distractors"])


def test_marking_frequency_follows_p():
    half = [generate_marking_sample(1, i, 0.5, size=32) for i in range(200)]
    count = sum(s.marked for s in half)
    assert abs(count - 100) <= 4 * math.sqrt(200 * 0.25)  # 4 binomial standard deviations
    assert all(s.marked == (s.meta["draw"] < 0.5) for s in half)
    assert not any(generate_marking_sample(1, i, 0.0, size=32).marked for i in range(40))
    assert all(generate_marking_sample(1, i, 1.0, size=32).marked for i in range(40))
    # a sample marked at some p is marked at every larger p
    for s in half[:40]:
        assert generate_marking_sample(1, s.meta["index"], 0.7, size=32).marked >= s.marked


def test_line_kernel_geometry():
    assert np.array_equal(line_kernel(7), (np.eye(7) / 7).astype(np.float32))
    assert np.array_equal(line_kernel(7, 315), line_kernel(7, 135))
    assert np.array_equal(line_kernel(5, 45), (np.fliplr(np.eye(5)) / 5).astype(np.float32))
    horizontal, vertical = line_kernel(5, 0), line_kernel(5, 90)
    assert np.array_equal(np.nonzero(horizontal)[0], [2] * 5)
    assert np.array_equal(np.nonzero(vertical)[1], [2] * 5)
    kernel = line_kernel(9, 20)
    assert kernel.dtype == np.float32 and kernel.shape == (9, 9)
    assert kernel.sum() == pytest.approx(1.0) and np.count_nonzero(kernel) == 9


def _band(segments, anti_diagonal: bool, size: int = 64) -> np.ndarray:
    """Pixels within the documented band of each segment: the "\\" diagonal (or the "/"
    anti-diagonal) through its centre, 2 px wide, over its length."""
    rows, cols = np.mgrid[:size, :size]
    band = np.zeros((size, size), dtype=bool)
    for segment in segments:
        (row, col), length = segment["centre"], segment["length"]
        dr, dc = rows - row, cols - col
        across = dr + dc if anti_diagonal else dc - dr
        ok = np.isin(across, (-1, 0, 1)) if anti_diagonal else np.isin(across, (0, 1))
        band |= ok & (np.abs(dr) <= length // 2)
    return band


def test_marking_segments_lie_along_the_documented_diagonal(marking_pairs):
    decoys_seen = 0
    for unmarked, marked in marking_pairs[:8]:
        changed = unmarked.image != marked.image
        inside, outside = changed & marked.mask, changed & ~marked.mask
        # marking segments run along (-1, -1) / (+1, +1) through their centres: "\"
        drawn = _band(marked.meta["segments"], anti_diagonal=False)
        assert inside.sum() >= 10 and not (inside & ~drawn).any()
        padded = np.pad(inside, 1)
        along = inside & (padded[:-2, :-2] | padded[2:, 2:])
        assert along.sum() >= 0.9 * inside.sum()
        # decoys run along "/" on the distractors
        if marked.meta["decoys"]:
            decoys_seen += 1
            assert outside.any() and not (outside & ~_band(marked.meta["decoys"], True)).any()
            padded = np.pad(outside, 1)
            along = outside & (padded[:-2, 2:] | padded[2:, :-2])
            assert along.sum() >= 0.9 * outside.sum()
    assert decoys_seen >= 2


def test_marking_response_orders_angles_and_marking():
    image = np.full((32, 32), 0.5)
    diagonal = np.arange(7)
    along = image.copy()
    along[10 + diagonal, 10 + diagonal] += 0.3  # 135 degrees: the "\" diagonal
    across = image.copy()
    across[10 + diagonal, 16 - diagonal] += 0.3  # 45 degrees: "/"
    assert marking_response(image) == pytest.approx(0.0, abs=1e-6)
    assert marking_response(np.full((32, 32), 0.95)) == pytest.approx(0.0, abs=1e-6)
    assert marking_response(along) == pytest.approx(0.3 * 6 / 7, rel=1e-6)
    assert marking_response(across) < 0.3 * marking_response(along)
    assert marking_response(across, angle=45) == pytest.approx(marking_response(along))
    dark = image.copy()
    dark[10 + diagonal, 10 + diagonal] -= 0.3
    assert marking_response(dark, polarity="bright") < 0.1 < marking_response(dark, polarity="dark")
    assert marking_response(torch.tensor(along)[None, None]) == pytest.approx(marking_response(along))


def test_marked_samples_score_higher(marking_pairs):
    for unmarked, marked in marking_pairs:
        # the default marking is faint (0.02-0.08): it raises the response by a little
        assert marking_response(marked.image) > marking_response(unmarked.image) + 0.005
        strong = generate_marking_sample(5, marked.meta["index"], 0.5, marking=True,
                                         contrast=(0.05, 0.25))
        assert marking_response(strong.image) > marking_response(unmarked.image) + 0.05
        # what the marking adds inside the objects answers the 135-degree line far more than
        # the 45-degree one
        added = np.where(marked.mask, marked.image - unmarked.image, 0.0)
        assert marking_response(added) > 2 * marking_response(added, angle=45)


def test_marking_contrast_scales_the_segments_and_nothing_else(marking_pairs):
    for unmarked, marked in marking_pairs[:6]:
        index = marked.meta["index"]
        strong = generate_marking_sample(5, index, 0.5, marking=True, contrast=(0.2, 0.2))
        assert strong.meta["contrast"] == [0.2, 0.2] and marked.meta["contrast"] == [0.02, 0.08]
        for kind in ("segments", "decoys"):
            faint, bold = marked.meta[kind], strong.meta[kind]
            assert [(s["centre"], s["length"]) for s in faint] == [(s["centre"], s["length"])
                                                                    for s in bold]
            assert all(0.02 <= abs(s["delta"]) <= 0.08 for s in faint)
            assert [abs(s["delta"]) for s in bold] == pytest.approx([0.2] * len(bold))
            assert [np.sign(s["delta"]) for s in faint] == [np.sign(s["delta"]) for s in bold]
        assert np.array_equal(strong.mask, marked.mask)
        # where no segment is drawn the images agree
        same = (strong.image == marked.image) | (marked.image != unmarked.image)
        assert same.all()
    unmarked = generate_marking_sample(5, 0, 0.5, marking=False, contrast=(0.3, 0.4))
    assert np.array_equal(unmarked.image, marking_pairs[0][0].image)
    for contrast in ((0.1,), (0.3, 0.1), (-0.1, 0.2), (0.1, 1.5), "0.1"):
        with pytest.raises(ValueError, match="contrast"):
            generate_marking_sample(5, 0, 0.5, contrast=contrast)
    with pytest.raises(ValueError, match="contrast"):
        MarkingDataset(3, 0.5, contrast=(0.5, 0.1))


def test_marking_dataset_items():
    dataset = MarkingDataset(5, 1.0, seed=2, size=32)
    assert len(dataset) == 5
    image, mask = dataset[3]
    assert image.dtype == torch.float32 and image.shape == (1, 32, 32)
    assert mask.dtype == torch.float32 and set(mask.unique().tolist()) <= {0.0, 1.0}
    reference = generate_marking_sample(2, 3, 1.0, size=32)
    assert np.array_equal(image[0].numpy(), reference.image)
    assert np.array_equal(mask[0].numpy().astype(bool), reference.mask)
    assert dataset.sample(3) is dataset.sample(-2) and dataset.sample(3).marked
    assert not MarkingDataset(3, 1.0, marking=False).sample(0).marked
    strong = MarkingDataset(5, 1.0, seed=2, size=32, contrast=(0.1, 0.2))
    assert np.array_equal(strong[3][0][0].numpy(), generate_marking_sample(
        2, 3, 1.0, size=32, contrast=(0.1, 0.2)).image)
    with pytest.raises(IndexError):
        dataset[5]


# ---------------------------------------------------------------------------------------------
# organ with lesions


def test_lesion_sample_types_and_determinism():
    a = generate_lesion_sample(4, 1)
    b = generate_lesion_sample(4, 1)
    assert a.image.dtype == np.float32 and a.image.shape == (64, 64)
    assert a.mask.dtype == bool and a.organ.dtype == bool
    assert 0.0 <= a.image.min() and a.image.max() <= 1.0
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.meta == b.meta
    assert len(json.dumps(a.meta)) < 5000
    assert not np.array_equal(a.image, generate_lesion_sample(4, 2).image)
    assert generate_lesion_sample(4, 1, size=40).image.shape == (40, 40)


def test_lesions_lie_inside_the_organ_and_are_counted(lesion_sets):
    for samples in lesion_sets.values():
        counts = []
        for s in samples:
            assert not (s.mask & ~ndimage.binary_erosion(s.organ, iterations=1)).any()
            n = ndimage.label(s.mask, structure=EIGHT)[1]
            assert n == s.meta["n_lesions"] == len(s.meta["lesions"])
            counts.append(n)
        healthy = counts.count(0)
        assert 1 <= healthy <= 17  # 20 % of 40 with a wide binomial margin
        assert max(counts) == 3


def test_geometry_does_not_depend_on_intensity(lesion_sets):
    for shape in ("round", "elongated"):
        for real, synthetic in zip(lesion_sets[shape, "real"], lesion_sets[shape, "synthetic"]):
            assert np.array_equal(real.mask, synthetic.mask)
            assert np.array_equal(real.organ, synthetic.organ)


def test_measured_axis_ratios_follow_the_shape(lesion_sets):
    ratios = {}
    for shape in ("round", "elongated"):
        found = []
        for s in lesion_sets[shape, "real"]:
            labels, n = ndimage.label(s.mask, structure=EIGHT)
            found += [_axis_ratio(labels == k) for k in range(1, n + 1)]
        ratios[shape] = np.array(found)
    assert len(ratios["round"]) >= 25 and len(ratios["elongated"]) >= 25
    assert ratios["round"].mean() > 0.75 and ratios["elongated"].mean() < 0.5
    assert ratios["elongated"].max() < ratios["round"].min() + 0.1


def test_lesions_are_hypo_intense_and_real_ones_darker(lesion_sets):
    for shape in ("round", "elongated"):
        contrast = {}
        for intensity in ("real", "synthetic"):
            values = []
            for s in lesion_sets[shape, intensity]:
                labels, n = ndimage.label(s.mask, structure=EIGHT)
                for k in range(1, n + 1):
                    lesion = labels == k
                    around = s.image[_ring(s.mask, lesion, s.organ)].mean()
                    inside = s.image[lesion]
                    assert inside.mean() < around
                    values.append((around - inside.mean()) / around)
            contrast[intensity] = np.mean(values)
        assert contrast["synthetic"] > 0.05
        assert contrast["real"] > 2 * contrast["synthetic"]


def test_healthy_organ_is_the_sample_without_lesions(lesion_sets):
    for (_, intensity), samples in lesion_sets.items():
        for s in samples[:20]:
            healthy = healthy_organ(2, index=s.meta["index"])
            assert healthy.dtype == np.float32 and healthy.shape == (64, 64)
            if s.meta["n_lesions"] == 0:
                assert np.array_equal(s.image, healthy)
            elif intensity == "synthetic":
                assert np.array_equal(s.image[~s.mask], healthy[~s.mask])
                assert (s.image[s.mask] < healthy[s.mask]).all()
            else:
                assert s.image[s.mask].mean() < healthy[s.mask].mean() - 0.1
    assert np.array_equal(healthy_organ(2), healthy_organ(2, 64, 0))
    assert not np.array_equal(healthy_organ(2), healthy_organ(3))
    assert healthy_organ(2, size=48).shape == (48, 48)


def test_lesion_dataset_items():
    dataset = LesionDataset(4, seed=2, shape="elongated", intensity="synthetic")
    image, mask = dataset[1]
    assert image.shape == mask.shape == (1, 64, 64)
    assert image.dtype == mask.dtype == torch.float32
    reference = generate_lesion_sample(2, 1, shape="elongated", intensity="synthetic")
    assert np.array_equal(image[0].numpy(), reference.image)
    assert np.array_equal(mask[0].numpy().astype(bool), reference.mask)
    assert dataset.sample(1).meta == reference.meta


# ---------------------------------------------------------------------------------------------
# bad arguments


@pytest.mark.parametrize("call, name, received", [
    (lambda: generate_marking_sample(0, 0, -0.1), "p", "-0.1"),
    (lambda: generate_marking_sample(0, 0, 1.5), "p", "1.5"),
    (lambda: generate_marking_sample(0, 0, float("nan")), "p", "nan"),
    (lambda: generate_marking_sample(0, 0, 0.5, size=16), "size", "16"),
    (lambda: generate_marking_sample(-1, 0, 0.5), "seed", "-1"),
    (lambda: MarkingDataset(0, 0.5), "n", "0"),
    (lambda: MarkingDataset(4, 2.0), "p", "2.0"),
    (lambda: generate_lesion_sample(0, 0, shape="square"), "shape", "'square'"),
    (lambda: generate_lesion_sample(0, 0, intensity="fake"), "intensity", "'fake'"),
    (lambda: generate_lesion_sample(0, 0, size=8), "size", "8"),
    (lambda: LesionDataset(0), "n", "0"),
    (lambda: LesionDataset(3, shape="oval"), "shape", "'oval'"),
    (lambda: healthy_organ(0, size=20), "size", "20"),
    (lambda: line_kernel(1), "length", "1"),
    (lambda: line_kernel(7, float("inf")), "angle_degrees", "inf"),
    (lambda: marking_response(np.zeros((2, 8, 8))), "image", "(2, 8, 8)"),
    (lambda: marking_response(np.zeros((8, 8)), polarity="up"), "polarity", "'up'"),
])
def test_bad_arguments_raise_value_errors_naming_them(call, name, received):
    with pytest.raises(ValueError) as error:
        call()
    message = str(error.value)
    assert message.startswith(f"{name}:") and "expected" in message and received in message


@pytest.mark.parametrize("call, name", [
    (lambda: generate_marking_sample(0, 0, "half"), "p"),
    (lambda: generate_marking_sample(0, 0, True), "p"),
    (lambda: generate_marking_sample(0, 0, 0.5, marking="yes"), "marking"),
    (lambda: generate_marking_sample(0, 0, 0.5, size=64.0), "size"),
    (lambda: MarkingDataset(2.5, 0.5), "n"),
])
def test_bad_argument_types_raise_type_errors_naming_them(call, name):
    with pytest.raises(TypeError, match=f"^{name}: expected"):
        call()
