"""open_series: DICOM series as xarray, coordinates in mm, values rescaled, lazy with dask."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import dask.array as dsa
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from demo.archive import DemoArchive
from extensions import loading
from extensions.geometry import GeometryError, slice_normal, volume_geometry
from extensions.loading import (
    MissingPixelDataError,
    MixedSeriesError,
    NoDicomFilesError,
    SeriesLoadError,
    open_series,
)


def _series_dir(archive: DemoArchive, description: str) -> Path:
    entry = next(e for e in archive.entries if e.series_description == description)
    return archive.series_dir(entry.series_instance_uid)


def _file(archive: DemoArchive, source: str) -> Path:
    return archive.root / next(e for e in archive.entries if e.source == source).path


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    ("orientation", "normal"),
    [
        ((1, 0, 0, 0, 1, 0), (0, 0, 1)),  # axial
        ((0, 1, 0, 0, 0, -1), (-1, 0, 0)),  # sagittal
        ((1, 0, 0, 0, 0, -1), (0, 1, 0)),  # coronal
        ((-1, 0, 0, 0, 1, 0), (0, 0, -1)),  # axial, rows flipped (the enhanced CT)
    ],
)
def test_slice_normal_table(orientation: tuple, normal: tuple) -> None:
    np.testing.assert_allclose(slice_normal(orientation), normal, atol=1e-12)


def test_volume_geometry_sorts_along_the_normal_and_builds_the_affine() -> None:
    iop = (0, 1, 0, 0, 0, -1)  # sagittal: normal -x
    positions = [(-10.0, 5, 7), (-30.0, 5, 7), (-20.0, 5, 7)]
    g = volume_geometry(positions, [iop] * 3, (0.5, 2.0), rows=4, columns=3)
    assert g.order == (0, 2, 1)  # distances along -x: 10, 30, 20
    np.testing.assert_allclose(g.z, [10, 20, 30])
    np.testing.assert_allclose(g.y, -7 + 0.5 * np.arange(4))  # along the column cosine (0,0,-1)
    np.testing.assert_allclose(g.x, 5 + 2.0 * np.arange(3))  # along the row cosine (0,1,0)
    assert g.spacing == (10.0, 0.5, 2.0) and g.uniform and g.max_in_plane_offset_mm == 0
    for k, index in enumerate(g.order):  # index (k, 0, 0) lands on slice k's position
        np.testing.assert_allclose(g.affine @ [k, 0, 0, 1], [*positions[index], 1])
    np.testing.assert_allclose(g.affine @ [0, 3, 2, 1], [-10, 5 + 4.0, 7 - 1.5, 1])


def test_volume_geometry_rejects_inconsistent_planes() -> None:
    axial, sagittal = (1, 0, 0, 0, 1, 0), (0, 1, 0, 0, 0, -1)
    with pytest.raises(GeometryError, match="orientation"):
        volume_geometry([(0, 0, 0), (0, 0, 1)], [axial, sagittal], (1, 1), 2, 2)
    with pytest.raises(GeometryError, match="same position"):
        volume_geometry([(0, 0, 0), (5, 5, 0)], [axial, axial], (1, 1), 2, 2)
    with pytest.raises(GeometryError, match="parallel"):
        slice_normal((1, 0, 0, 1, 0, 0))


# --------------------------------------------------------------------------- volumes


def test_benchmark_ct_coordinates_and_hounsfield_units(demo_archive: DemoArchive) -> None:
    da = open_series(_series_dir(demo_archive, "CT Thorax 5 mm (benchmark)"))
    assert da.dims == ("z", "y", "x") and da.shape == (50, 128, 128) and da.dtype == np.float32
    assert da.attrs["modality"] == "CT" and da.attrs["units"] == "HU"
    assert da.attrs["series_description"] == "CT Thorax 5 mm (benchmark)"
    assert da.attrs["spacing"] == (5.0, 0.661468, 0.661468)
    # Instance 1 is the top slice: sorted along +z it comes last.
    assert list(da.instance_number.values) == list(range(50, 0, -1))
    lowest = pydicom.dcmread(_series_dir(demo_archive, "CT Thorax 5 mm (benchmark)") / "IM0050.dcm")
    x0, y0, z0 = (float(v) for v in lowest.ImagePositionPatient)
    assert (x0, y0, z0) == pytest.approx((-158.135803, -179.035797, -75.699997 - 49 * 5))
    assert da.attrs["origin"] == pytest.approx((x0, y0, z0))
    np.testing.assert_allclose(da.z.values, z0 + 5.0 * np.arange(50), atol=1e-4)
    np.testing.assert_allclose(da.y.values, y0 + 0.661468 * np.arange(128), atol=1e-6)
    np.testing.assert_allclose(da.x.values, x0 + 0.661468 * np.arange(128), atol=1e-6)
    assert da.attrs["orientation"] == (1, 0, 0, 0, 1, 0)
    np.testing.assert_allclose(np.array(da.attrs["affine"]) @ [49, 0, 0, 1],
                               [x0, y0, z0 + 245, 1], atol=1e-4)
    # HU by hand: stored value * slope + intercept, read straight from the file.
    raw = lowest.pixel_array.astype(np.float64)
    expected = raw * float(lowest.RescaleSlope) + float(lowest.RescaleIntercept)
    assert float(lowest.RescaleIntercept) == -1024.0
    np.testing.assert_array_equal(da.isel(z=0).values, expected.astype(np.float32))
    assert float(da.isel(z=0, y=64, x=64)) == raw[64, 64] - 1024


def _shuffled_copy(src: Path, dst: Path, count: int) -> list[int]:
    """Copy ``count`` slices under random names, each marked in pixel (0, 0)."""
    dst.mkdir()
    numbers = list(range(1, count + 1))
    names = [f"slice-{n}" for n in numbers]
    random.Random(3).shuffle(names)  # file names no longer follow the slice order
    for n, name in zip(numbers, names):
        ds = pydicom.dcmread(src / f"IM{n:04d}.dcm")
        arr = ds.pixel_array.copy()
        arr[0, 0] = 1000 + n
        ds.PixelData = arr.tobytes()
        ds.save_as(dst / f"{name}.dcm")
    return numbers


def test_slices_sort_by_position_not_by_file_name(demo_archive: DemoArchive, tmp_path: Path) -> None:
    src = _series_dir(demo_archive, "CT Thorax 5 mm (benchmark)")
    _shuffled_copy(src, tmp_path / "s", 6)
    da = open_series(tmp_path / "s")
    # z ascends; instance 6 is the lowest slice, instance 1 the highest.
    assert list(da.instance_number.values) == [6, 5, 4, 3, 2, 1]
    marks = da.isel(y=0, x=0).values + 1024  # undo the rescale
    assert [int(m) for m in marks] == [1006, 1005, 1004, 1003, 1002, 1001]
    assert np.all(np.diff(da.z.values) == pytest.approx(5.0))


def test_oblique_series_coordinates_follow_the_image_axes(demo_archive: DemoArchive, tmp_path: Path) -> None:
    """A sagittal stack: z runs along -x of the patient, y along -z, x along +y."""
    src = _series_dir(demo_archive, "CT Thorax 5 mm (benchmark)")
    out = tmp_path / "sag"
    out.mkdir()
    iop = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    for k in range(4):
        ds = pydicom.dcmread(src / f"IM{k + 1:04d}.dcm")
        ds.ImageOrientationPatient = iop
        ds.ImagePositionPatient = [10.0 - 2.5 * k, -50.0, 80.0]
        ds.save_as(out / f"{k}.dcm")
    da = open_series(out)
    assert list(da.instance_number.values) == [1, 2, 3, 4]  # -x increases with k
    np.testing.assert_allclose(da.z.values, [-10.0, -7.5, -5.0, -2.5])
    np.testing.assert_allclose(da.y.values[:2], [-80.0, -80.0 + 0.661468])
    np.testing.assert_allclose(da.x.values[:2], [-50.0, -50.0 + 0.661468])
    affine = np.array(da.attrs["affine"])
    np.testing.assert_allclose(affine @ [3, 0, 0, 1], [10.0 - 7.5, -50.0, 80.0, 1])
    np.testing.assert_allclose(affine @ [0, 1, 1, 1], [10.0, -50.0 + 0.661468, 80.0 - 0.661468, 1])


def test_enhanced_ct_uses_functional_groups(demo_archive: DemoArchive) -> None:
    path = _file(demo_archive, "eCT_Supplemental.dcm")
    da = open_series(path)
    ds = pydicom.dcmread(path)
    assert da.dims == ("z", "y", "x") and da.shape == (2, 512, 512)
    assert da.attrs["spacing"] == (10.0, 0.388672, 0.388672) and da.attrs["units"] == "HU"
    # Orientation (-1,0,0,0,1,0): the normal is -z, so frame 2 (z=-149) sorts before frame 1.
    np.testing.assert_allclose(da.z.values, [149.0, 159.0])
    assert list(da.instance_number.values) == [2, 1]
    np.testing.assert_allclose(da.x.values[:2], [-99.5, -99.5 + 0.388672])
    frames = ds.pixel_array.astype(np.float32) - 1024.0  # PixelValueTransformationSequence
    np.testing.assert_array_equal(da.values[0], frames[1])
    np.testing.assert_array_equal(da.values[1], frames[0])


def test_rle_series_and_rt_dose_grid(demo_archive: DemoArchive) -> None:
    rle = open_series(_series_dir(demo_archive, "CT Thorax 5 mm RLE"))
    bench = open_series(_series_dir(demo_archive, "CT Thorax 5 mm (benchmark)"))
    assert rle.shape == (20, 128, 128)
    # The same 20 slices (one source image, values shifted by the slice number), other codec.
    np.testing.assert_array_equal(rle.values, bench.values[-20:])
    assert not np.array_equal(rle.values[0], rle.values[1])
    dose = open_series(get_testdata_file("rtdose.dcm", download=False))
    assert dose.dims == ("z", "y", "x") and dose.shape == (15, 10, 10)
    assert dose.attrs["spacing"] == (5.0, 10.0, 10.0) and dose.attrs["units"] == "RELATIVE"
    raw = pydicom.dcmread(get_testdata_file("rtdose.dcm", download=False)).pixel_array
    np.testing.assert_allclose(dose.values, (raw * 1e-6).astype(np.float32), rtol=1e-6)


# --------------------------------------------------------------------------- frames


def test_us_cine_is_a_frame_axis_with_time(demo_archive: DemoArchive) -> None:
    da = open_series(_file(demo_archive, "examples_ybr_color.dcm"))
    assert da.dims == ("frame", "y", "x", "channel") and da.shape == (30, 240, 320, 3)
    assert da.dtype == np.uint8 and list(da.channel.values) == ["R", "G", "B"]
    np.testing.assert_allclose(da.time.values, 33.333 * np.arange(30), rtol=1e-9)
    assert da.attrs["geometry"] == "frames" and da.attrs["xy_units"] == "pixel"
    expected = pydicom.dcmread(_file(demo_archive, "examples_ybr_color.dcm")).pixel_array
    np.testing.assert_array_equal(da.values, expected)  # YBR_FULL_422 converted to RGB


def test_enhanced_mr_without_plane_groups_and_palette_colour(demo_archive: DemoArchive) -> None:
    mr = open_series(_file(demo_archive, "emri_small_jpeg_2k_lossless.dcm"))
    assert mr.dims == ("frame", "y", "x") and mr.shape == (10, 64, 64)
    assert mr.attrs["units"] == "" and np.isnan(mr.attrs["spacing"]).all()
    palette = open_series(_file(demo_archive, "OBXXXX1A_rle.dcm"))
    assert palette.dims == ("frame", "y", "x", "channel") and palette.shape == (1, 600, 800, 3)
    ds = pydicom.dcmread(_file(demo_archive, "OBXXXX1A_rle.dcm"))
    np.testing.assert_array_equal(palette.values[0], pydicom.pixels.apply_color_lut(ds.pixel_array, ds))


def test_projection_image_falls_back_to_imager_pixel_spacing(demo_archive: DemoArchive, tmp_path: Path) -> None:
    ds = pydicom.dcmread(_file(demo_archive, "JPEG-LL.dcm"))
    del ds.PixelSpacing
    ds.ImagerPixelSpacing = [0.15, 0.2]
    ds.save_as(tmp_path / "dx.dcm")
    da = open_series(tmp_path / "dx.dcm")
    assert da.dims == ("frame", "y", "x") and da.shape == (1, 1024, 256)
    assert da.attrs["xy_units"] == "mm"
    np.testing.assert_allclose(da.y.values[:3], [0, 0.15, 0.3])
    np.testing.assert_allclose(da.x.values[:3], [0, 0.2, 0.4])


# --------------------------------------------------------------------------- lazy


def test_chunks_give_a_lazy_dask_array_that_matches(demo_archive: DemoArchive,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    real = loading.pixel_array

    def counting(*args, **kwargs):
        calls.append(kwargs.get("index"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "pixel_array", counting)
    folder = _series_dir(demo_archive, "CT Thorax 5 mm (benchmark)")
    lazy = open_series(folder, chunks=10)
    assert isinstance(lazy.data, dsa.Array) and calls == []  # nothing read yet
    assert lazy.data.chunks[0] == (10,) * 5
    one = lazy.isel(z=3).values
    assert 1 <= len(calls) <= 10  # only the chunk holding slice 3
    eager = open_series(folder)
    np.testing.assert_array_equal(one, eager.isel(z=3).values)
    np.testing.assert_array_equal(lazy.values, eager.values)
    assert lazy.attrs == eager.attrs

    calls.clear()
    cine = open_series(_file(demo_archive, "examples_ybr_color.dcm"), chunks={"frame": 5})
    assert cine.data.chunks[0] == (5,) * 6 and calls == []
    np.testing.assert_array_equal(cine.isel(frame=7).values,
                                  open_series(_file(demo_archive, "examples_ybr_color.dcm"))[7].values)
    # Only the chunk holding frame 7, one frame at a time (None: the eager read above).
    assert sorted(c for c in calls if c is not None) == [5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="unknown dims"):
        open_series(folder, chunks={"t": 2})


# --------------------------------------------------------------------------- errors


def test_errors_are_typed_and_clear(demo_archive: DemoArchive, tmp_path: Path) -> None:
    assert issubclass(MixedSeriesError, SeriesLoadError) and issubclass(SeriesLoadError, ValueError)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not dicom")
    with pytest.raises(NoDicomFilesError, match="no DICOM files"):
        open_series(empty)
    with pytest.raises(NoDicomFilesError, match="does not exist"):
        open_series(tmp_path / "nowhere")
    with pytest.raises(NoDicomFilesError, match="not a file"):
        open_series([tmp_path / "nowhere.dcm"])

    bench = _series_dir(demo_archive, "CT Thorax 5 mm (benchmark)")
    rle = _series_dir(demo_archive, "CT Thorax 5 mm RLE")
    with pytest.raises(MixedSeriesError, match="2 series .* Open one series at a time"):
        open_series([bench / "IM0001.dcm", rle / "IM0002.dcm"])

    sizes = tmp_path / "sizes"
    shutil.copytree(bench, sizes)
    with pytest.raises(MixedSeriesError, match="differ in Rows"):
        mr = pydicom.dcmread(_file(demo_archive, "MR_small_RLE.dcm"))
        mr.SeriesInstanceUID = pydicom.dcmread(bench / "IM0001.dcm").SeriesInstanceUID
        mr.save_as(sizes / "odd.dcm")
        open_series(sizes)

    twice = tmp_path / "twice"
    twice.mkdir()
    for k in (1, 2):
        ds = pydicom.dcmread(bench / f"IM{k:04d}.dcm")
        ds.ImagePositionPatient = [0, 0, 0]
        ds.save_as(twice / f"{k}.dcm")
    with pytest.raises(MixedSeriesError, match="same position"):
        open_series(twice)

    multi = tmp_path / "multi"
    multi.mkdir()
    for k in (1, 2):
        ds = pydicom.dcmread(_file(demo_archive, "eCT_Supplemental.dcm"))
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID[:60]}.{k}"
        ds.save_as(multi / f"{k}.dcm")
    with pytest.raises(MixedSeriesError, match="one multi-frame object at a time"):
        open_series(multi)

    report = get_testdata_file("reportsi.dcm", download=False)
    with pytest.raises(MissingPixelDataError, match="no pixel data"):
        open_series(report)
