"""Reading arrays and volumes: .npy as stored, NIfTI in the library's (C, D, H, W) order with
its voxel spacing, and a clear message when nibabel is missing."""

import struct
import sys
import warnings

import numpy as np
import pytest

from interpret_segmentation.datasets.files import file_stem, is_nifti, read_image, read_image_file


@pytest.fixture
def nibabel():
    return pytest.importorskip("nibabel", reason="NIfTI reading needs nibabel (the [nifti] extra)")


def _save_nifti(path, data, zooms, rotate=False):
    """``data`` (x, y, z[, ...]) as NIfTI with voxel sizes ``zooms`` on the affine's diagonal
    (or in a rotated affine: the sizes are the columns' lengths)."""
    affine = np.diag([*zooms[:3], *[1.0] * (3 - len(zooms[:3])), 1.0])
    if rotate:  # a quarter turn about z: the columns keep their lengths
        turn = np.eye(4)
        turn[:2, :2] = [[0, -1], [1, 0]]
        affine = turn @ affine
    import nibabel

    image = nibabel.Nifti1Image(data, affine)
    if len(zooms) > 3 or data.ndim < 3:
        image.header.set_zooms(tuple(zooms[: data.ndim]))
    nibabel.save(image, path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".NII.GZ"])
def test_a_nifti_volume_comes_back_as_stored_or_reversed_with_its_spacing(nibabel, tmp_path,
                                                                         suffix):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 6, 7)).astype(np.float32)  # (x, y, z)
    path = tmp_path / f"ct{suffix}"
    _save_nifti(path, data, (0.5, 0.8, 2.5), rotate=True)
    array, spacing = read_image_file(path, name="--image")
    assert array.dtype == np.float32 and np.array_equal(array, data)  # as nibabel and MONAI
    assert spacing == pytest.approx((0.5, 0.8, 2.5))
    assert np.array_equal(read_image(path), array)
    array, spacing = read_image_file(path, name="--image", nifti_axes="zyx")
    assert array.shape == (7, 6, 5)  # (D, H, W) = (z, y, x)
    for x, y, z in [(0, 0, 0), (4, 1, 6), (2, 5, 3)]:
        assert array[z, y, x] == data[x, y, z]
    assert spacing == pytest.approx((2.5, 0.8, 0.5))  # (dz, dy, dx)
    assert array.flags.c_contiguous
    with pytest.raises(ValueError, match=r"^nifti_axes: expected one of xyz, zyx, got 'yxz'"):
        read_image_file(path, nifti_axes="yxz")


def test_nifti_scaling_two_and_four_dimensional_files(nibabel, tmp_path):
    stored = np.arange(3 * 4, dtype=np.int16).reshape(3, 4)  # (x, y)
    image = nibabel.Nifti1Image(stored, np.diag([0.7, 0.3, 1, 1]))
    image.header.set_slope_inter(0.5, -1.0)  # values = 0.5 * stored - 1
    nibabel.save(image, tmp_path / "slice.nii")
    array, spacing = read_image_file(tmp_path / "slice.nii")
    assert np.array_equal(array, 0.5 * stored - 1) and spacing == pytest.approx((0.7, 0.3))
    array, spacing = read_image_file(tmp_path / "slice.nii", nifti_axes="zyx")
    assert array.shape == (4, 3) and np.array_equal(array, 0.5 * stored.T - 1)
    assert spacing == pytest.approx((0.3, 0.7))

    sequences = np.random.default_rng(1).random((4, 5, 6, 2)).astype(np.float32)  # (x, y, z, c)
    _save_nifti(tmp_path / "mri.nii.gz", sequences, (1.0, 1.0, 3.0, 1.0))
    array, spacing = read_image_file(tmp_path / "mri.nii.gz")
    assert array.shape == (2, 4, 5, 6) and np.array_equal(array[1], sequences[..., 1])
    assert spacing == pytest.approx((1.0, 1.0, 3.0))
    array, spacing = read_image_file(tmp_path / "mri.nii.gz", nifti_axes="zyx")
    assert array.shape == (2, 6, 5, 4)  # (C, D, H, W) = (c, z, y, x)
    assert np.array_equal(array[1], sequences[..., 1].transpose(2, 1, 0))
    assert spacing == pytest.approx((3.0, 1.0, 1.0))

    vectors = sequences[:, :, :, None, :]  # (x, y, z, t=1, c)
    _save_nifti(tmp_path / "vectors.nii", vectors, (1.0, 2.0, 3.0, 1.0, 1.0))
    array, spacing = read_image_file(tmp_path / "vectors.nii")
    assert array.shape == (2, 4, 5, 6) and spacing == pytest.approx((1.0, 2.0, 3.0))
    _save_nifti(tmp_path / "series.nii", np.zeros((2, 2, 2, 3, 2), np.float32), (1,) * 5)
    with pytest.raises(ValueError, match=r"^vol: .*series.nii holds a NIfTI array of shape "
                                         r"\(2, 2, 2, 3, 2\); expected"):
        read_image_file(tmp_path / "series.nii", name="vol")


def test_a_header_without_voxel_sizes_warns_and_leaves_the_spacing_unknown(nibabel, tmp_path):
    nibabel.save(nibabel.Nifti1Image(np.ones((2, 3, 4), np.float32), np.eye(4)), tmp_path / "flat.nii")
    header = bytearray((tmp_path / "flat.nii").read_bytes())
    header[84:88] = struct.pack("<f", float("nan"))  # pixdim[2] (nibabel itself mends 0 and < 0)
    (tmp_path / "flat.nii").write_bytes(header)
    with pytest.warns(UserWarning, match=r"vol: the header of .*flat.nii gives voxel sizes"):
        array, spacing = read_image_file(tmp_path / "flat.nii", name="vol")
    assert array.shape == (2, 3, 4) and spacing is None


def test_what_is_no_nifti_is_refused_naming_the_file(nibabel, tmp_path):
    _save_nifti(tmp_path / "good.nii.gz", np.ones((4, 4, 4), np.float32), (1, 1, 1))
    whole = (tmp_path / "good.nii.gz").read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(whole[: len(whole) // 2])
    _save_nifti(tmp_path / "good.nii", np.ones((4, 4, 4), np.float32), (1, 1, 1))
    whole = (tmp_path / "good.nii").read_bytes()
    (tmp_path / "short.nii").write_bytes(whole[:-20])
    (tmp_path / "text.nii").write_text("hello")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    for name in ("truncated.nii.gz", "short.nii", "text.nii", "empty.nii.gz"):
        with pytest.raises(ValueError, match=rf"^--image: .*{name} is not a NIfTI file nibabel "
                                             "can read, or it is truncated"):
            read_image_file(tmp_path / name, name="--image")
    with pytest.raises(FileNotFoundError, match="--image: .*missing.nii not found"):
        read_image_file(tmp_path / "missing.nii", name="--image")


def test_without_nibabel_a_nifti_file_says_how_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "ct.nii.gz").write_bytes(b"\x1f\x8b not read")
    monkeypatch.setitem(sys.modules, "nibabel", None)  # as if it were not installed
    with pytest.raises(ModuleNotFoundError, match=r"--image: reading the NIfTI file .*ct.nii.gz "
                                                  r"needs nibabel.*interpret-segmentation\[nifti\]"):
        read_image_file(tmp_path / "ct.nii.gz", name="--image")
    np.save(tmp_path / "a.npy", np.ones((2, 3), np.float32))
    array, spacing = read_image_file(tmp_path / "a.npy")  # other files need no nibabel
    assert np.array_equal(array, np.ones((2, 3))) and spacing is None


@pytest.mark.parametrize("shape", [(5, 6), (2, 5, 6), (3, 4, 5, 6)])
def test_npy_arrays_of_any_rank_are_read_as_stored_without_spacing(tmp_path, shape):
    values = np.random.default_rng(2).integers(-100, 100, shape).astype(np.int16)
    with open(tmp_path / "volume.NPY", "wb") as file:  # np.save would add ".npy"
        np.save(file, values)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        array, spacing = read_image_file(tmp_path / "volume.NPY", channels=3)
    assert array.dtype == np.float32 and np.array_equal(array, values) and spacing is None


def test_names_of_nifti_files():
    assert is_nifti("a/ct.nii") and is_nifti("CT.NII.GZ") and not is_nifti("ct.nii.zip")
    assert not is_nifti("nii") and not is_nifti("a.gz")
    assert [file_stem(p) for p in ("d/ct.nii.gz", "ct.nii", "x.png", "a.b.npy", "A.NII.GZ")] == [
        "ct", "ct", "x", "a.b", "A"]
