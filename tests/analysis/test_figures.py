"""Figures of volumes: montages of slices through the target and orthogonal sections."""

import io

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from interpret_segmentation.analysis.figures import (
    PANEL_INCHES,
    explanation_figure,
    figure_png,
    montage_slices,
    orthogonal_views,
    target_point,
    volume_montage,
)

SHAPE = (20, 30, 40)


def sphere(centre=(8, 12, 25), radius=6, shape=SHAPE):
    zz, yy, xx = np.indices(shape)
    return (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2


def volume(seed=0):
    return np.random.default_rng(seed).random(SHAPE).astype(np.float32)


def png_size(figure) -> tuple[int, int]:
    image = Image.open(io.BytesIO(figure_png(figure)))
    assert image.format == "PNG"
    return image.size


def titles(figure) -> list[str]:
    return [axis.get_title() for axis in figure.axes if axis.get_title()]


def assert_size_near(size, inches):
    """A tight PNG at 100 dpi: at most the figure's size (plus a margin for titles), and at
    least most of it (only white borders are cut)."""
    expected = np.asarray(inches) * 100
    assert np.all(np.asarray(size) <= expected + 30) and np.all(np.asarray(size) >= 0.6 * expected)


# -- choosing what to show ----------------------------------------------------------------


def test_montage_slices_pass_through_the_mask_first_and_last_included():
    mask = sphere()
    chosen = montage_slices(SHAPE[0], mask, n_slices=5)
    holding = np.flatnonzero(mask.any(axis=(1, 2)))
    assert len(chosen) == 5 and list(chosen) == sorted(chosen)
    assert all(mask[z].any() for z in chosen)
    assert chosen[0] == holding[0] and chosen[-1] == holding[-1]


def test_montage_slices_skip_slices_between_two_parts_of_the_target():
    mask = np.zeros(SHAPE, bool)
    mask[2:4, 5:9, 5:9] = True
    mask[15:18, 20:25, 5:9] = True
    chosen = montage_slices(SHAPE[0], mask, n_slices=9)
    assert set(chosen) <= {2, 3, 15, 16, 17} and len(chosen) == 5  # all of them, no gap slice
    everywhere = montage_slices(SHAPE[0], None, n_slices=5)
    np.testing.assert_array_equal(everywhere, [0, 5, 10, 14, 19])
    np.testing.assert_array_equal(montage_slices(SHAPE[0], np.zeros(SHAPE), 3), [0, 10, 19])


def test_target_point_is_inside_the_target_even_for_a_shell():
    ball = sphere()
    assert target_point(ball) == (8, 12, 25)
    shell = sphere(radius=6) & ~sphere(radius=4)  # its centroid is the empty centre
    point = target_point(shell)
    assert shell[point]
    with pytest.raises(ValueError, match="mask.*empty"):
        target_point(np.zeros(SHAPE))


# -- figures ------------------------------------------------------------------------------


def test_volume_montage_renders_the_chosen_slices():
    mask = sphere()
    figure = volume_montage(volume(), mask, n_slices=9, overlay=sphere(radius=9).astype(float))
    assert isinstance(figure, Figure)
    shown = [int(title.split("=")[1]) for title in titles(figure)]
    assert shown == list(montage_slices(SHAPE[0], mask, 9))
    assert all(mask[z].any() for z in shown)
    assert_size_near(png_size(figure), (3 * PANEL_INCHES, 3 * PANEL_INCHES))
    wide = volume_montage(volume()[None], mask, n_slices=4, columns=4)  # (C, D, H, W)
    width, height = png_size(wide)
    assert len(titles(wide)) == 4 and width > 2.5 * height


def test_orthogonal_views_cut_the_target_at_its_centre_by_default():
    mask = sphere()
    figure = orthogonal_views(volume(), mask=mask, overlay=-np.indices(SHAPE)[2].astype(float))
    views = titles(figure)
    assert [title.split("\n")[1] for title in views] == ["axial z=8", "coronal y=12",
                                                        "sagittal x=25"]
    assert_size_near(png_size(figure), (3 * PANEL_INCHES, PANEL_INCHES + 0.4))
    shell = sphere(radius=6) & ~sphere(radius=4)
    z, y, x = target_point(shell)
    chosen = orthogonal_views(volume(), mask=shell)
    assert [title.split("\n")[1] for title in titles(chosen)] == [f"axial z={z}", f"coronal y={y}",
                                                                 f"sagittal x={x}"]
    assert shell[z].any() and shell[:, y].any() and shell[:, :, x].any()
    given = orthogonal_views(volume()[None, None], point=(1, 2, 3), spacing=(3.0, 1.0, 0.5))
    assert [title.split("\n")[1] for title in titles(given)] == ["axial z=1", "coronal y=2",
                                                                "sagittal x=3"]
    centre = orthogonal_views(volume())
    assert titles(centre)[0].endswith("z=10")


def test_sections_keep_the_voxels_aspect_ratio():
    figure = orthogonal_views(volume(), point=(10, 15, 20), spacing=(4.0, 1.0, 1.0))
    axial, coronal, sagittal = figure.axes[:3]
    assert axial.get_aspect() == 1.0 and coronal.get_aspect() == 4.0 and sagittal.get_aspect() == 4.0


def test_explanation_figure_of_a_volume_is_a_row_of_sections_per_map():
    mask = sphere()
    saliency = {"hdm": sphere(radius=8).astype(np.float32), "rise": np.ones(SHAPE)}
    figure = explanation_figure(volume()[None], saliency, prediction=mask, title="two maps")
    names = [title.split("\n") for title in titles(figure)]
    assert [name for name, _ in names] == ["input + prediction"] * 3 + ["hdm"] * 3 + ["rise"] * 3
    assert {view for _, view in names} == {"axial z=8", "coronal y=12", "sagittal x=25"}
    assert_size_near(png_size(figure), (3 * PANEL_INCHES, 3 * PANEL_INCHES))
    # without a prediction: through the first map's largest value
    peak = np.zeros(SHAPE, np.float32)
    peak[3, 4, 5] = 1.0
    assert titles(explanation_figure(volume(), {"map": peak}))[0].endswith("axial z=3")
    # 2-D explanations keep their single row
    flat = explanation_figure(volume()[0], {"map": volume()[1]}, prediction=mask[8])
    assert [axis.get_title() for axis in flat.axes[:2]] == ["input + prediction", "map"]


def test_volume_figures_refuse_wrong_shapes_naming_the_argument():
    with pytest.raises(ValueError, match="mask.*shape"):
        volume_montage(volume(), np.ones((20, 30, 41)))
    with pytest.raises(ValueError, match="overlay"):
        orthogonal_views(volume(), overlay=np.ones((5, 5, 5)))
    with pytest.raises(ValueError, match="volume.*D, H, W"):
        orthogonal_views(np.ones((30, 40)))
    with pytest.raises(ValueError, match="point.*inside"):
        orthogonal_views(volume(), point=(20, 0, 0))
    with pytest.raises(ValueError, match="point.*three ints"):
        orthogonal_views(volume(), point=(1.5, 0, 0))
    with pytest.raises(ValueError, match="spacing"):
        orthogonal_views(volume(), spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"spacing.*positive"):
        volume_montage(volume(), spacing=(0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="n_slices"):
        volume_montage(volume(), n_slices=0)
    with pytest.raises(ValueError, match=r"panels\['b'\].*shape"):
        explanation_figure(volume(), {"a": np.ones(SHAPE), "b": np.ones((20, 30, 30))})


def test_volume_figures_leave_pyplot_alone():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    mask = sphere()
    for figure in (volume_montage(volume(), mask), orthogonal_views(volume(), mask=mask),
                   explanation_figure(volume(), {"map": volume(1)}, prediction=mask)):
        assert type(figure) is Figure and figure.canvas.manager is None  # not pyplot's
        figure_png(figure)
    assert plt.get_fignums() == before
