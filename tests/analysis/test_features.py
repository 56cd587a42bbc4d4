"""Tests of the image + mask features (seed 004) against hand values and naive loops."""

import json
import math

import numpy as np
import pytest
import torch
from skimage import measure
from torch.utils.data import Dataset

from interpret_segmentation.analysis import features as F
from interpret_segmentation.analysis.features import (
    FEATURES,
    SHAPE_FEATURES,
    FeatureReference,
    compute_features,
    reference_statistics,
    resolve_features,
)

NAMES = [
    "mean_intensity",
    "rms_intensity",
    "max_diameter",
    "elongation",
    "roundness",
    "glcm_contrast",
    "intensity_entropy",
    "large_dependence_emphasis",
    "area",
]


def disk(size, centre, radius):
    yy, xx = np.mgrid[:size, :size]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def irregular_case(seed, size=12):
    """Random image and an irregular mask (holes, several components, diagonal contacts)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(size, size)) * 3.0
    mask = rng.random((size, size)) < 0.6
    mask[0, :] = False  # keep some edges empty and some full
    mask[:, -1] = True
    return image, mask


# ---------------------------------------------------------------------------------------
# naive references
# ---------------------------------------------------------------------------------------


def naive_quantise(image, mask, levels):
    values = [image[r, c] for r in range(image.shape[0]) for c in range(image.shape[1])
              if mask[r, c]]
    low, high = min(values), max(values)
    grey = np.full(image.shape, -1, dtype=int)
    for r in range(image.shape[0]):
        for c in range(image.shape[1]):
            if mask[r, c]:
                if high == low:
                    grey[r, c] = 0
                else:
                    grey[r, c] = min(int(math.floor((image[r, c] - low) / (high - low) * levels)),
                                     levels - 1)
    return grey


def naive_glcm_contrast(image, mask, levels=32):
    grey = naive_quantise(image, mask, levels)
    h, w = image.shape
    contrasts = []
    for dr, dc in [(0, 1), (-1, 1), (-1, 0), (-1, -1)]:  # 0, 45, 90, 135 degrees
        matrix = np.zeros((levels, levels))
        for r in range(h):
            for c in range(w):
                r2, c2 = r + dr, c + dc
                if 0 <= r2 < h and 0 <= c2 < w and mask[r, c] and mask[r2, c2]:
                    matrix[grey[r, c], grey[r2, c2]] += 1
        matrix = matrix + matrix.T
        if matrix.sum() == 0:
            continue
        matrix /= matrix.sum()
        i, j = np.indices(matrix.shape)
        contrasts.append((matrix * (i - j) ** 2).sum())
    return float(np.mean(contrasts)) if contrasts else math.nan


def naive_lde(image, mask, levels=32, alpha=0):
    grey = naive_quantise(image, mask, levels)
    h, w = image.shape
    matrix = np.zeros((levels, 10))  # P(i, j), dependence j = 1 .. 9
    for r in range(h):
        for c in range(w):
            if not mask[r, c]:
                continue
            dependence = 1
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    r2, c2 = r + dr, c + dc
                    if (dr or dc) and 0 <= r2 < h and 0 <= c2 < w and mask[r2, c2] \
                            and abs(grey[r2, c2] - grey[r, c]) <= alpha:
                        dependence += 1
            matrix[grey[r, c], dependence] += 1
    j = np.arange(10)
    return float((matrix * j[None, :] ** 2).sum() / matrix.sum())


def contour_oracle(mask):
    """Perimeter and enclosed area from skimage.measure.find_contours (signed shoelace)."""
    perimeter = enclosed = 0.0
    for contour in measure.find_contours(np.pad(mask, 1).astype(float), 0.5):
        perimeter += np.sqrt((np.diff(contour, axis=0) ** 2).sum(axis=1)).sum()
        y, x = contour[:, 0], contour[:, 1]
        enclosed += 0.5 * (np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))
    return perimeter, abs(enclosed)


# ---------------------------------------------------------------------------------------
# shape features
# ---------------------------------------------------------------------------------------


def test_disk_shape_features():
    radius, centre = 20, (48, 48)
    mask = disk(96, centre, radius)
    image = np.zeros((96, 96))
    count = sum(1 for r in range(96) for c in range(96)
                if (r - 48) ** 2 + (c - 48) ** 2 <= 400)
    assert F.area(image, mask) == count
    assert F.elongation(image, mask) > 0.98
    assert 0.9 < F.roundness(image, mask) <= 1.1
    assert abs(F.max_diameter(image, mask) - 2 * radius) <= 1.5


@pytest.mark.parametrize("angle", [0.0, 30.0])
def test_ellipse_elongation(angle):
    a, b = 30.0, 10.0
    yy, xx = np.mgrid[:96, :96] - 48.0
    t = math.radians(angle)
    u = xx * math.cos(t) + yy * math.sin(t)
    v = -xx * math.sin(t) + yy * math.cos(t)
    mask = (u / a) ** 2 + (v / b) ** 2 <= 1
    image = np.zeros(mask.shape)
    assert abs(F.elongation(image, mask) - b / a) < 0.03
    assert F.roundness(image, mask) < 0.8


def test_rectangle_max_diameter_uses_pixel_corners():
    mask = np.zeros((60, 60), bool)
    mask[5:15, 7:47] = True  # 10 rows x 40 columns
    assert F.max_diameter(np.zeros(mask.shape), mask) == pytest.approx(math.hypot(10, 40))
    single = np.zeros((5, 5), bool)
    single[2, 3] = True
    assert F.max_diameter(np.zeros((5, 5)), single) == pytest.approx(math.sqrt(2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_max_diameter_matches_all_corner_pairs(seed):
    _, mask = irregular_case(seed, size=14)
    rows, cols = np.nonzero(mask)
    corners = np.array([(r + dr, c + dc) for r, c in zip(rows, cols)
                        for dr in (-0.5, 0.5) for dc in (-0.5, 0.5)])
    distances = np.sqrt(((corners[:, None] - corners[None]) ** 2).sum(-1))
    assert F.max_diameter(np.zeros(mask.shape), mask) == pytest.approx(distances.max())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_elongation_matches_covariance_eigenvalues(seed):
    _, mask = irregular_case(seed)
    eigenvalues = np.linalg.eigvalsh(np.cov(np.nonzero(mask)))
    expected = math.sqrt(eigenvalues[0] / eigenvalues[1])
    assert F.elongation(np.zeros(mask.shape), mask) == pytest.approx(expected)


def test_elongation_line_and_single_pixel():
    mask = np.zeros((8, 8), bool)
    mask[3, 1:7] = True
    assert F.elongation(np.zeros((8, 8)), mask) == pytest.approx(0.0, abs=1e-12)
    single = np.zeros((8, 8), bool)
    single[4, 4] = True
    assert math.isnan(F.elongation(np.zeros((8, 8)), single))


def test_roundness_matches_find_contours_with_holes_and_components():
    mask = np.zeros((30, 30), bool)
    mask[2:20, 3:22] = True
    mask[6:10, 8:14] = False  # a hole
    mask[23:27, 22:28] = True  # a second component
    mask[20, 22] = True  # touches the first one only diagonally
    perimeter, enclosed = contour_oracle(mask)
    expected = 2 * math.sqrt(math.pi * enclosed) / perimeter
    assert F.roundness(np.zeros(mask.shape), mask) == pytest.approx(expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roundness_random_masks_match_oracle_and_stay_below_one(seed):
    _, mask = irregular_case(seed)
    perimeter, enclosed = contour_oracle(mask)
    value = F.roundness(np.zeros(mask.shape), mask)
    assert value == pytest.approx(2 * math.sqrt(math.pi * enclosed) / perimeter)
    assert 0 < value <= 1


def test_single_pixel_mask():
    image = np.arange(25.0).reshape(5, 5)
    mask = np.zeros((5, 5), bool)
    mask[1, 2] = True
    values = compute_features(image, mask)
    assert values["area"] == 1.0
    assert values["mean_intensity"] == 7.0
    assert values["rms_intensity"] == 7.0
    assert values["max_diameter"] == pytest.approx(math.sqrt(2))
    assert math.isnan(values["elongation"])
    assert values["roundness"] == pytest.approx(math.sqrt(math.pi) / 2)
    assert math.isnan(values["glcm_contrast"])  # no pair of pixels
    assert values["intensity_entropy"] == 0.0
    assert values["large_dependence_emphasis"] == 1.0


# ---------------------------------------------------------------------------------------
# intensity and texture features
# ---------------------------------------------------------------------------------------


def test_mean_and_rms_on_hand_made_image():
    image = np.array([[1.0, 2.0, 10.0], [3.0, 4.0, -7.0]])
    mask = np.array([[1, 0, 0], [1, 1, 0]])
    assert F.mean_intensity(image, mask) == pytest.approx(8 / 3)
    assert F.rms_intensity(image, mask) == pytest.approx(math.sqrt(26 / 3))


def test_entropy_two_and_four_equal_levels():
    image = np.zeros((6, 6))
    image[:, 3:] = 5.0
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True  # 8 pixels of 0 and 8 of 5
    assert F.intensity_entropy(image, mask) == pytest.approx(1.0)
    image[::2] += 1.0  # four values, each on 4 mask pixels
    assert F.intensity_entropy(image, mask) == pytest.approx(2.0)


def test_constant_image_texture():
    image = np.full((7, 7), 3.5)
    mask = np.zeros((7, 7), bool)
    mask[2:5, 2:5] = True
    assert F.intensity_entropy(image, mask) == 0.0
    assert F.glcm_contrast(image, mask) == 0.0
    # 3 x 3 constant block: dependence 9 at the centre, 6 on the edges, 4 at the corners
    assert F.large_dependence_emphasis(image, mask) == pytest.approx((81 + 4 * 36 + 4 * 16) / 9)


def test_checkerboard_has_more_contrast_than_a_ramp():
    mask = np.zeros((20, 20), bool)
    mask[2:18, 2:18] = True
    checkerboard = (np.indices((20, 20)).sum(0) % 2).astype(float)
    ramp = np.tile(np.linspace(0.0, 1.0, 20), (20, 1))
    assert F.glcm_contrast(checkerboard, mask) > 10 * F.glcm_contrast(ramp, mask)
    # checkerboard: levels 0 and 31; neighbours at 0 and 90 degrees differ, diagonals do not
    assert F.glcm_contrast(checkerboard, mask) == pytest.approx(31**2 / 2)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("levels", [32, 5])
def test_glcm_contrast_matches_naive_loop(seed, levels):
    image, mask = irregular_case(seed)
    expected = naive_glcm_contrast(image, mask, levels)
    assert F.glcm_contrast(image, mask, levels=levels) == pytest.approx(expected)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("levels, alpha", [(32, 0), (4, 0), (8, 1)])
def test_large_dependence_emphasis_matches_naive_loop(seed, levels, alpha):
    image, mask = irregular_case(seed)
    expected = naive_lde(image, mask, levels, alpha)
    assert F.large_dependence_emphasis(image, mask, levels=levels, alpha=alpha) == \
        pytest.approx(expected)


def test_texture_ignores_positive_affine_intensity_changes():
    image, mask = irregular_case(5)
    for name in ("glcm_contrast", "intensity_entropy", "large_dependence_emphasis"):
        assert FEATURES[name](2.5 * image + 7.0, mask) == pytest.approx(FEATURES[name](image, mask))


def test_pixels_outside_the_mask_do_not_matter():
    image, mask = irregular_case(7, size=20)
    before = compute_features(image, mask)
    changed = image.copy()
    changed[~mask] = np.random.default_rng(1).normal(size=(~mask).sum()) * 1e3
    after = compute_features(changed, mask)
    assert after == pytest.approx(before, nan_ok=True)
    # the check can fail: the same change inside the mask moves the intensity features
    changed_inside = image.copy()
    changed_inside[mask] += 1e3
    assert compute_features(changed_inside, mask)["mean_intensity"] != before["mean_intensity"]


# ---------------------------------------------------------------------------------------
# edge cases and errors
# ---------------------------------------------------------------------------------------


def test_empty_mask_gives_nan_and_zero_area():
    image = np.random.default_rng(0).random((10, 10))
    values = compute_features(image, np.zeros((10, 10), bool))
    assert values["area"] == 0.0
    assert all(math.isnan(value) for name, value in values.items() if name != "area")
    for name, function in FEATURES.items():  # also when called one by one
        value = function(image, np.zeros((10, 10)))
        assert value == 0.0 if name == "area" else math.isnan(value)


def test_torch_and_single_channel_inputs_match_numpy():
    image, mask = irregular_case(3)
    expected = compute_features(image, mask)
    got = compute_features(torch.from_numpy(image)[None], torch.from_numpy(mask.astype(np.float32))[None])
    assert got == pytest.approx(expected, nan_ok=True)
    assert F.area(torch.from_numpy(image).float(), torch.from_numpy(mask)) == mask.sum()


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match=r"mask.*\(4, 4\).*\(4, 5\)"):
        compute_features(np.zeros((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="mask"):
        F.area(np.zeros((4, 4)), np.ones((3, 4)))


def test_multichannel_image_is_rejected():
    with pytest.raises(ValueError, match=r"image.*\(1, H, W\).*\(3, 8, 8\)"):
        compute_features(np.zeros((3, 8, 8)), np.ones((8, 8)))
    with pytest.raises(ValueError, match="image"):
        F.mean_intensity(np.zeros(8), np.ones(8))


def test_non_finite_and_non_numeric_inputs_are_rejected():
    image = np.zeros((4, 4))
    image[1, 1] = np.nan
    with pytest.raises(ValueError, match="image.*finite"):
        compute_features(image, np.ones((4, 4)))
    with pytest.raises(TypeError, match="image"):
        compute_features(np.zeros((4, 4), dtype=complex), np.ones((4, 4)))
    with pytest.raises(ValueError, match="levels"):
        F.glcm_contrast(np.zeros((4, 4)), np.ones((4, 4)), levels=1)


def test_resolve_features():
    assert list(FEATURES) == NAMES
    assert SHAPE_FEATURES == {"max_diameter", "elongation", "roundness"}
    assert resolve_features() == FEATURES and resolve_features() is not FEATURES

    def brightest(image, mask):
        return float(image[mask].max())

    resolved = resolve_features(["area", brightest])
    assert list(resolved) == ["area", "brightest"] and resolved["brightest"] is brightest
    assert list(resolve_features({"double_area": lambda i, m: 2 * m.sum()})) == ["double_area"]
    assert list(resolve_features("roundness")) == ["roundness"]


def test_resolve_features_errors():
    with pytest.raises(ValueError, match="unknown feature 'volume'.*mean_intensity.*area"):
        resolve_features(["area", "volume"])
    with pytest.raises(TypeError, match=r"features\['x'\]"):
        resolve_features({"x": 3})
    with pytest.raises(TypeError, match=r"features\[1\]"):
        resolve_features(["area", 3])
    with pytest.raises(ValueError, match="twice"):
        resolve_features(["area", "area"])
    with pytest.raises(ValueError, match="at least one"):
        resolve_features([])
    with pytest.raises(ValueError, match="unknown feature"):
        compute_features(np.zeros((4, 4)), np.ones((4, 4)), ["volume"])


def test_user_feature_errors_propagate():
    def broken(image, mask):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        compute_features(np.zeros((4, 4)), np.ones((4, 4)), [broken])
    with pytest.raises(TypeError, match="'listy'"):
        compute_features(np.zeros((4, 4)), np.ones((4, 4)), {"listy": lambda i, m: [1, 2]})


# ---------------------------------------------------------------------------------------
# reference statistics and normalisation
# ---------------------------------------------------------------------------------------


def hand_pairs():
    rng = np.random.default_rng(11)
    pairs = []
    rectangle = np.zeros((24, 24), bool)
    rectangle[3:8, 2:20] = True
    band = disk(24, (12, 11), 8) & (np.abs(np.arange(24) - 12) <= 4)[:, None]
    for mask in (disk(24, (12, 11), 5), rectangle, band):
        pairs.append((rng.random((24, 24)), mask))
    single = np.zeros((24, 24), bool)
    single[4, 4] = True  # elongation and GLCM contrast undefined here
    pairs.append((rng.random((24, 24)), single))
    pairs.append((rng.random((24, 24)), np.zeros((24, 24), bool)))  # empty: skipped
    return pairs


def test_reference_statistics_match_numpy():
    pairs = hand_pairs()
    reference = reference_statistics(pairs)
    for name, function in FEATURES.items():
        values = np.array([function(image, mask) for image, mask in pairs[:4]])
        values = values[~np.isnan(values)]
        assert reference.count[name] == values.size
        assert reference.mean[name] == pytest.approx(values.mean())
        assert reference.std[name] == pytest.approx(values.std())
    assert reference.count["elongation"] == 3 and reference.count["area"] == 4


def test_reference_from_a_torch_dataset(capsys):
    pairs = hand_pairs()

    class Tiny(Dataset):
        def __len__(self):
            return len(pairs)

        def __getitem__(self, index):
            image, mask = pairs[index]
            return (torch.from_numpy(image.astype(np.float32))[None],
                    torch.from_numpy(mask.astype(np.float32))[None])

    names = ["area", "mean_intensity", "roundness"]
    from_dataset = reference_statistics(Tiny(), features=names, progress=True)
    from_list = reference_statistics(
        [(image.astype(np.float32), mask) for image, mask in pairs], features=names
    )
    assert from_dataset.mean == pytest.approx(from_list.mean)
    assert from_dataset.std == pytest.approx(from_list.std)
    assert from_dataset.count == from_list.count == {"area": 4, "mean_intensity": 4, "roundness": 4}
    assert "reference features" in capsys.readouterr().err


def test_reference_needs_a_non_empty_mask_and_valid_pairs():
    with pytest.raises(ValueError, match="non-empty mask"):
        reference_statistics([(np.zeros((4, 4)), np.zeros((4, 4)))])
    with pytest.raises(ValueError, match="non-empty mask"):
        reference_statistics([])
    with pytest.raises(ValueError, match=r"pairs\[1\].*mask"):
        reference_statistics([(np.zeros((4, 4)), np.ones((4, 4))), (np.zeros((4, 4)), np.ones((5, 4)))])
    with pytest.raises(TypeError, match=r"pairs\[0\]"):
        reference_statistics([(np.zeros((4, 4)),)])


def test_normalise():
    reference = FeatureReference(
        mean={"area": 100.0, "roundness": 0.8, "flat": 2.0},
        std={"area": 20.0, "roundness": 0.1, "flat": 0.0},
        count={"area": 5, "roundness": 5, "flat": 5},
    )
    out = reference.zscores({"area": 100.0, "roundness": 0.9})
    assert out == pytest.approx({"area": 0.0, "roundness": 1.0})
    assert isinstance(out["area"], float)
    curve = reference.zscores({"area": np.array([80.0, 100.0, 140.0])})["area"]
    np.testing.assert_allclose(curve, [-1.0, 0.0, 2.0])
    assert reference.zscores({"flat": 3.5}) == {"flat": 1.5}  # std 0: divided by 1
    with pytest.raises(KeyError, match="'elongation'.*'volume'"):
        reference.zscores({"area": 1.0, "elongation": 1.0, "volume": 3.0})


def test_normalise_maps_the_reference_mean_to_zero():
    reference = reference_statistics(hand_pairs())
    values = {name: reference.mean[name] + reference.std[name] for name in FEATURES}
    assert reference.zscores(reference.mean) == pytest.approx(dict.fromkeys(FEATURES, 0.0))
    assert reference.zscores(values) == pytest.approx(dict.fromkeys(FEATURES, 1.0))


def test_reference_round_trip_through_json():
    reference = reference_statistics(hand_pairs())
    nan_reference = FeatureReference(mean={"x": math.nan}, std={"x": math.nan}, count={"x": 0})
    for original in (reference, nan_reference):
        text = json.dumps(original.to_dict(), allow_nan=False)
        restored = FeatureReference.from_dict(json.loads(text))
        assert restored.mean == pytest.approx(original.mean, nan_ok=True)
        assert restored.std == pytest.approx(original.std, nan_ok=True)
        assert restored.count == original.count
    with pytest.raises(ValueError, match="count"):
        FeatureReference.from_dict({"mean": {}, "std": {}})
    with pytest.raises(ValueError, match="std"):
        FeatureReference(mean={"a": 1.0}, std={}, count={"a": 1})


# ---------------------------------------------------------------------------------------
# volumes (D, H, W) and spacing
# ---------------------------------------------------------------------------------------


def ball(size, radius, centre=None):
    centre = (size // 2,) * 3 if centre is None else centre
    zz, yy, xx = np.indices((size,) * 3)
    return (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2


def box_surface_volume(a, b, c):
    """Area and volume of the marching-cubes surface (level 1/2) of an a x b x c box of voxels.

    The surface is the box with its faces at the voxels' outer faces, chamfered: each face
    keeps an (a-1) x (b-1) rectangle, each edge of n voxels a strip (n-1) x sqrt(1/2), each
    corner an equilateral triangle of side sqrt(1/2) (area sqrt(3)/8). The edge strips cut
    off prisms of section 1/8 and the corners tetrahedra of volume 5/48 in all."""
    edges = (a - 1) + (b - 1) + (c - 1)
    surface = (2 * ((a - 1) * (b - 1) + (b - 1) * (c - 1) + (a - 1) * (c - 1))
               + 4 * math.sqrt(0.5) * edges + math.sqrt(3))
    return surface, a * b * c - 0.5 * edges - 5 / 6


def sphericity(surface, volume):
    return math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / surface


def naive_glcm_contrast_3d(image, mask, levels=32):
    grey = naive_quantise(image.reshape(-1, image.shape[-1]), mask.reshape(-1, mask.shape[-1]),
                          levels).reshape(image.shape)
    directions = [d for d in np.ndindex(3, 3, 3) if d != (1, 1, 1)]
    directions = [tuple(v - 1 for v in d) for d in directions]
    directions = [d for d in directions if tuple(-v for v in d) > d]  # 13, one of each pair
    assert len(directions) == 13
    contrasts = []
    for direction in directions:
        matrix = np.zeros((levels, levels))
        for point in np.ndindex(*image.shape):
            other = tuple(p + d for p, d in zip(point, direction))
            if all(0 <= o < s for o, s in zip(other, image.shape)) and mask[point] and mask[other]:
                matrix[grey[point], grey[other]] += 1
        matrix = matrix + matrix.T
        if matrix.sum():
            i, j = np.indices(matrix.shape)
            contrasts.append((matrix * (i - j) ** 2).sum() / matrix.sum())
    return float(np.mean(contrasts)) if contrasts else math.nan


def naive_lde_3d(image, mask, levels=32, alpha=0):
    grey = naive_quantise(image.reshape(-1, image.shape[-1]), mask.reshape(-1, mask.shape[-1]),
                          levels).reshape(image.shape)
    squares = []
    for point in np.ndindex(*image.shape):
        if not mask[point]:
            continue
        dependence = 1
        for step in np.ndindex(3, 3, 3):
            other = tuple(p + s - 1 for p, s in zip(point, step))
            if other != point and all(0 <= o < n for o, n in zip(other, image.shape)) \
                    and mask[other] and abs(grey[other] - grey[point]) <= alpha:
                dependence += 1
        squares.append(dependence**2)
    return float(np.mean(squares))


def test_ball_is_round_and_not_elongated():
    mask = ball(33, 12)
    image = np.zeros(mask.shape)
    values = compute_features(image, mask)
    assert values["area"] == mask.sum()  # the volume, in voxels
    assert values["elongation"] == pytest.approx(1.0, abs=1e-12)  # symmetric: isotropic
    assert 0.9 < values["roundness"] <= 1.0  # the faceted surface is a little larger
    assert abs(values["max_diameter"] - 25) <= 1.5


@pytest.mark.parametrize("sides", [(3, 4, 5), (1, 1, 1), (2, 7, 1), (10, 6, 2)])
def test_box_shape_features_are_exact(sides):
    mask = np.zeros((14, 12, 13), bool)
    mask[2:2 + sides[0], 1:1 + sides[1], 3:3 + sides[2]] = True
    image = np.zeros(mask.shape)
    assert F.area(image, mask) == math.prod(sides)
    assert F.max_diameter(image, mask) == pytest.approx(math.hypot(*sides))
    assert F.roundness(image, mask) == pytest.approx(sphericity(*box_surface_volume(*sides)))
    # covariance of n voxel centres along an axis: (n^2 - 1) / 12
    variances = sorted((n * n - 1) / 12 for n in sides)
    expected = math.nan if variances[-1] == 0 else math.sqrt(variances[-2] / variances[-1])
    assert F.elongation(image, mask) == pytest.approx(expected, nan_ok=True)


def test_sphericity_counts_the_surface_and_volume_of_a_cavity():
    mask = np.zeros((14, 14, 14), bool)
    mask[1:13, 2:12, 1:10] = True
    mask[4:8, 5:9, 3:6] = False  # a 4 x 4 x 3 hole, closed all around
    outer, inner = box_surface_volume(12, 10, 9), box_surface_volume(4, 4, 3)
    expected = sphericity(outer[0] + inner[0], outer[1] - inner[1])
    assert F.roundness(np.zeros(mask.shape), mask) == pytest.approx(expected)


@pytest.mark.parametrize("axes", [(18, 12, 8), (8, 18, 12), (12, 8, 18)])
def test_ellipsoid_elongation_is_the_ratio_of_the_two_longest_axes(axes):
    zz, yy, xx = np.indices((41, 41, 41)) - 20.0
    mask = (zz / axes[0]) ** 2 + (yy / axes[1]) ** 2 + (xx / axes[2]) ** 2 <= 1
    image = np.zeros(mask.shape)
    assert F.elongation(image, mask) == pytest.approx(12 / 18, abs=0.01)
    assert F.roundness(image, mask) < F.roundness(image, ball(41, 12)) - 0.05
    assert abs(F.max_diameter(image, mask) - 2 * 18) <= 2.0


def test_anisotropic_spacing_measures_in_physical_units():
    # 16 x 8 x 8 voxel semi-axes with voxels 0.5 deep: a ball of radius 8 in millimetres
    zz, yy, xx = np.indices((35, 19, 19)) - np.array([17, 9, 9])[:, None, None, None]
    mask = (zz / 16.0) ** 2 + (yy / 8.0) ** 2 + (xx / 8.0) ** 2 <= 1
    image = np.zeros(mask.shape)
    spacing = (0.5, 1.0, 1.0)
    values = compute_features(image, mask, spacing=spacing)
    assert values["area"] == 0.5 * mask.sum()
    assert values["elongation"] == pytest.approx(1.0, abs=0.02)
    assert F.elongation(image, mask) == pytest.approx(0.5, abs=0.02)  # in voxel units
    assert abs(values["max_diameter"] - 17) <= 1.5
    assert values["roundness"] > 0.87 and values["roundness"] > F.roundness(image, mask) + 0.03
    # a box: exact in millimetres
    box = np.zeros((6, 6, 6), bool)
    box[1:3, 1:4, 1:5] = True
    assert F.max_diameter(image[:6, :6, :6], box, spacing=(2.0, 0.5, 3.0)) == \
        pytest.approx(math.sqrt(4.0**2 + 1.5**2 + 12.0**2))


def test_two_d_spacing_scales_the_contour_and_the_area():
    mask = np.zeros((12, 12), bool)
    mask[2:7, 3:11] = True  # 5 rows x 8 columns
    dy, dx = 2.0, 0.5
    # octagon: sides (8 - 1) dx and (5 - 1) dy, four corner cuts of half a pixel diagonal
    perimeter = 2 * 7 * dx + 2 * 4 * dy + 4 * 0.5 * math.hypot(dy, dx)
    enclosed = (40 - 0.5) * dy * dx
    image = np.zeros(mask.shape)
    assert F.roundness(image, mask, spacing=(dy, dx)) == \
        pytest.approx(2 * math.sqrt(math.pi * enclosed) / perimeter)
    assert F.area(image, mask, spacing=(dy, dx)) == 40.0
    assert F.area(image, mask, spacing=3.0) == 360.0
    assert F.max_diameter(image, mask, spacing=(dy, dx)) == pytest.approx(math.hypot(10, 4))
    assert F.elongation(image, mask, spacing=(dy, dx)) == \
        pytest.approx(math.sqrt((64 - 1) / 4 / ((25 - 1) * 4)))  # (8 dx)^2 vs (5 dy)^2


def test_single_voxel():
    image = np.arange(27.0).reshape(3, 3, 3)
    mask = np.zeros((3, 3, 3), bool)
    mask[1, 2, 0] = True
    values = compute_features(image, mask)
    assert values["area"] == 1.0 and values["mean_intensity"] == 15.0
    assert values["max_diameter"] == pytest.approx(math.sqrt(3))
    assert math.isnan(values["elongation"]) and math.isnan(values["glcm_contrast"])
    assert values["roundness"] == pytest.approx(math.pi ** (1 / 3) / math.sqrt(3))  # octahedron
    assert values["intensity_entropy"] == 0.0 and values["large_dependence_emphasis"] == 1.0


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("levels, alpha", [(32, 0), (4, 0), (6, 1)])
def test_volume_texture_matches_naive_loops_over_26_neighbours(seed, levels, alpha):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(5, 6, 7))
    mask = rng.random(image.shape) < 0.6
    assert F.large_dependence_emphasis(image, mask, levels=levels, alpha=alpha) == \
        pytest.approx(naive_lde_3d(image, mask, levels, alpha))
    if alpha == 0:
        assert F.glcm_contrast(image, mask, levels=levels) == \
            pytest.approx(naive_glcm_contrast_3d(image, mask, levels))


def test_constant_block_texture_in_3d():
    image = np.full((5, 5, 5), 2.0)
    mask = np.zeros((5, 5, 5), bool)
    mask[1:4, 1:4, 1:4] = True
    # 3 x 3 x 3: dependence 27 at the centre, 18 at face centres, 12 on edges, 8 at corners
    expected = (27**2 + 6 * 18**2 + 12 * 12**2 + 8 * 8**2) / 27
    assert F.large_dependence_emphasis(image, mask) == pytest.approx(expected)
    assert F.glcm_contrast(image, mask) == 0.0 and F.intensity_entropy(image, mask) == 0.0


def test_intensity_features_do_not_depend_on_the_dimension():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(4, 9, 10))
    mask = rng.random(image.shape) < 0.5
    names = ["mean_intensity", "rms_intensity", "intensity_entropy"]
    flat = compute_features(image.reshape(36, 10), mask.reshape(36, 10), names)
    assert compute_features(image, mask, names) == pytest.approx(flat)


def test_volume_inputs_in_every_form_agree():
    rng = np.random.default_rng(4)
    image = rng.normal(size=(6, 8, 7))
    mask = ball(8, 3, (3, 4, 3))[:6, :, :7]
    expected = compute_features(image, mask)
    for got in (compute_features(image[None], mask[None]),
                compute_features(torch.from_numpy(image).float()[None], torch.from_numpy(mask)),
                compute_features(image, mask.astype(np.uint8)[None], spacing=(1, 1, 1))):
        assert got == pytest.approx(expected, nan_ok=True, rel=1e-6)


def test_spacing_decides_the_dimension_of_a_single_slice():
    mask = np.zeros((1, 9, 9), bool)
    mask[0, 2:7, 2:7] = True
    image = np.zeros(mask.shape)
    flat = F.roundness(image, mask)  # (1, H, W): one channel of a 2-D image
    slab = F.roundness(image, mask, spacing=(1.0, 1.0, 1.0))  # a volume of depth 1
    assert flat == pytest.approx(2 * math.sqrt(math.pi * 24.5) / (4 * 4 + 4 * math.sqrt(0.5)))
    assert slab == pytest.approx(sphericity(*box_surface_volume(1, 5, 5)))
    assert F.max_diameter(image, mask, spacing=(1.0, 1.0, 1.0)) == pytest.approx(math.sqrt(51))


def test_volume_and_spacing_errors_name_the_argument():
    volume, mask = np.zeros((4, 5, 6)), np.ones((4, 5, 6))
    with pytest.raises(ValueError, match=r"mask.*\(4, 5, 6\).*\(4, 5, 5\)"):
        compute_features(volume, np.ones((4, 5, 5)))
    with pytest.raises(ValueError, match=r"spacing: expected 2 or 3 .*got 4"):
        compute_features(volume, mask, spacing=(1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"spacing.*positive.*0"):
        F.area(volume, mask, spacing=(1, 0, 1))
    with pytest.raises(ValueError, match="spacing"):
        F.area(volume, mask, spacing=-2.0)
    with pytest.raises(TypeError, match="spacing"):
        F.area(volume, mask, spacing="thin")
    with pytest.raises(ValueError, match=r"image.*spacing.*\(4, 5, 6\)"):
        F.area(volume, mask, spacing=(1, 1))  # two spacings: a 2-D image
    with pytest.raises(ValueError, match="image"):
        F.area(np.zeros((2, 3, 4, 5)), np.ones((2, 3, 4, 5)))  # two channels of a volume


def test_reference_statistics_of_volumes():
    pairs = [(np.random.default_rng(k).random((9, 10, 11)), ball(11, 2 + k, (4, 5, 5))[:9, :10])
             for k in range(3)]
    reference = reference_statistics(pairs, features=["area", "roundness"], spacing=(2, 1, 1))
    volumes = [2.0 * mask.sum() for _, mask in pairs]
    assert reference.mean["area"] == pytest.approx(np.mean(volumes))
    rounds = [F.roundness(image, mask, spacing=(2, 1, 1)) for image, mask in pairs]
    assert reference.mean["roundness"] == pytest.approx(np.mean(rounds))
