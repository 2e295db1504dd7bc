"""Open a pulled DICOM series as an ``xarray.DataArray``.

``open_series(path)`` takes a folder of single-frame instances of one series, one
multi-frame file (classic, or enhanced with per-frame functional groups), or a list of files.

Volumes. When every frame has a position, an orientation and a pixel spacing (the plain
attributes, the enhanced functional groups ``PlanePositionSequence`` /
``PlaneOrientationSequence`` / ``PixelMeasuresSequence``, or ``GridFrameOffsetVector`` for
RT dose grids), the result has dims ``("z", "y", "x")``: slices sorted along the slice
normal, coordinates in millimetres along the normal, column and row directions (for the
usual axial orientation: the patient's z, y, x; see :mod:`extensions.geometry`). Pixel
spacing falls back to ``ImagerPixelSpacing``.

Frames. Without per-frame positions (an ultrasound cine loop, a radiograph, an enhanced
object without plane groups) there is no slice axis to sort along: the dims are
``("frame", "y", "x")`` in acquisition order (``InstanceNumber`` for a folder, the stored
order for a multi-frame file), with a ``time`` coordinate in milliseconds when
``FrameTime``/``FrameTimeVector`` says when frames were taken. ``y``/``x`` are millimetres
from the first pixel when a pixel spacing is known, else pixel indices (``attrs["xy_units"]``
says which). A single 2-D image has one frame.

Values. Monochrome data come back as float32 with ``RescaleSlope``/``RescaleIntercept``
applied per frame (CT: Hounsfield units; RT dose: ``DoseGridScaling``). MONOCHROME1 is not
inverted (``attrs["photometric_interpretation"]`` says so). Colour data (RGB, YBR converted
to RGB, palette colour expanded) keep their integer type with a trailing ``"channel"`` dim.

With ``chunks=`` the pixels are not read: every frame becomes a ``dask.delayed`` read
(``dask.array.from_delayed``), then the array is rechunked as asked; headers are read at once
to sort the frames. Errors are :class:`SeriesLoadError` subclasses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import xarray as xr
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, pixel_array

from .geometry import GeometryError, VolumeGeometry, slice_normal, volume_geometry

__all__ = [
    "MissingPixelDataError",
    "MixedSeriesError",
    "NoDicomFilesError",
    "SeriesLoadError",
    "open_series",
]

_PALETTE_TAGS = (
    0x00280002, 0x00280004, 0x00280100, 0x00280101, 0x00280103,
    0x00281101, 0x00281102, 0x00281103, 0x00281201, 0x00281202, 0x00281203,
    0x00281221, 0x00281222, 0x00281223,
)


class SeriesLoadError(ValueError):
    """The input cannot be opened as one series."""


class NoDicomFilesError(SeriesLoadError):
    """No DICOM file was found at the given path(s)."""


class MixedSeriesError(SeriesLoadError):
    """The files are not one consistent series (several series, sizes, orientations...)."""


class MissingPixelDataError(SeriesLoadError):
    """A file has no pixel data (a structured report, a presentation state...)."""


@dataclass(frozen=True)
class _Frame:
    """Where one frame is and how to turn its stored values into the result."""

    path: str
    index: int | None  # frame index in a multi-frame file, None for a single-frame file
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    spacing: tuple[float, float] | None
    slope: float
    intercept: float
    instance_number: int
    sop_instance_uid: str


def open_series(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    chunks: int | Mapping[str, int] | None = None,
) -> xr.DataArray:
    """Open one DICOM series (a folder, one multi-frame file, or a list of files).

    Returns a DataArray with dims ``("z", "y", "x")`` for a volume or ``("frame", "y", "x")``
    for frames without positions, plus ``"channel"`` for colour (see the module docstring).
    ``chunks`` (an int: frames per chunk, or a mapping of dim name to chunk size) returns a
    dask-backed array that reads each frame only when computed.

    Raises :class:`NoDicomFilesError`, :class:`MixedSeriesError` or
    :class:`MissingPixelDataError`.
    """
    files = _collect(source)
    headers = [(path, _read_header(path)) for path in files]
    _check_one_series(headers)
    first = headers[0][1]
    frames = _frames(headers)
    try:
        spatial = all(f.position and f.orientation and f.spacing for f in frames)
        geometry = (
            volume_geometry([f.position for f in frames], [f.orientation for f in frames],
                            frames[0].spacing, int(first.Rows), int(first.Columns),
                            slice_spacing=_slice_spacing(first))
            if spatial else None
        )
    except GeometryError as exc:
        raise MixedSeriesError(f"{_where(source)}: {exc}") from None
    if geometry is not None and len({f.spacing for f in frames}) > 1:
        raise MixedSeriesError(f"{_where(source)}: the frames have different pixel spacings")
    order = list(geometry.order) if geometry else _acquisition_order(frames)
    frames = [frames[i] for i in order]
    reader = _FrameReader.from_dataset(first)
    dims = ["z" if geometry is not None else "frame", "y", "x"] + (["channel"] if reader.color else [])
    if chunks is None:
        data = _eager(frames, reader)
    else:
        data = _lazy(frames, reader, (int(first.Rows), int(first.Columns)), dims, chunks)
    return _to_dataarray(data, dims, frames, first, geometry, reader)


# --------------------------------------------------------------------------- headers


def _collect(source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and _is_dicom(p))
        elif path.is_file():
            files = [path]
        else:
            raise NoDicomFilesError(f"{path} does not exist")
    else:
        files = [Path(p) for p in source]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise NoDicomFilesError(f"not a file: {', '.join(missing[:5])}")
    if not files:
        raise NoDicomFilesError(f"no DICOM files in {_where(source)}")
    return files


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _read_header(path: Path) -> Dataset:
    try:
        # Large values (the pixel data) are skipped but their presence is known.
        ds = pydicom.dcmread(path, defer_size=1024)
    except (pydicom.errors.InvalidDicomError, OSError) as exc:
        raise NoDicomFilesError(f"{path} is not a readable DICOM file: {exc}") from exc
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise MissingPixelDataError(
            f"{path} has no pixel data (SOP class {ds.get('SOPClassUID', '?')}, "
            f"modality {ds.get('Modality', '?')})"
        )
    return ds


def _check_one_series(headers: list[tuple[Path, Dataset]]) -> None:
    def distinct(keyword: str) -> set[Any]:
        return {str(ds.get(keyword, "")) for _, ds in headers}

    series = distinct("SeriesInstanceUID")
    if len(series) > 1:
        raise MixedSeriesError(
            f"{len(series)} series in the input: {', '.join(sorted(series))}. Open one series "
            "at a time: its folder (<pull>/<study>/<series UID>), or the files of one "
            "series_uid in the pull's manifest.csv"
        )
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
                    "BitsAllocated"):
        values = distinct(keyword)
        if len(values) > 1:
            raise MixedSeriesError(f"the files differ in {keyword}: {sorted(values)}")
    multi = [p for p, ds in headers if int(ds.get("NumberOfFrames", 1) or 1) > 1]
    if multi and len(headers) > 1:
        raise MixedSeriesError(
            f"{len(headers)} files including the multi-frame {multi[0]}: "
            "open one multi-frame object at a time")
    sops = [str(ds.get("SOPInstanceUID", "")) for _, ds in headers]
    if len(set(sops)) != len(sops):
        raise MixedSeriesError("the same SOPInstanceUID appears in two files")


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in (value if n > 1 else [value]))
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _group(ds: Dataset, per_frame: Dataset | None, sequence: str) -> Dataset | None:
    """The first item of a functional group, per-frame first, then shared."""
    for holder in (per_frame, _first(ds.get("SharedFunctionalGroupsSequence"))):
        if holder is not None and sequence in holder:
            return _first(holder.get(sequence))
    return None


def _first(sequence: Any) -> Dataset | None:
    return sequence[0] if sequence else None


def _spacing(ds: Dataset | None) -> tuple[float, float] | None:
    if ds is None:
        return None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        found = _floats(ds.get(keyword), 2)
        if found:
            return found  # type: ignore[return-value]
    return None


def _rescale(ds: Dataset | None) -> tuple[float, float]:
    if ds is None:
        return 1.0, 0.0
    slope = _floats(ds.get("RescaleSlope"), 1)
    intercept = _floats(ds.get("RescaleIntercept"), 1)
    if slope is None and ds.get("DoseGridScaling") is not None:
        slope = _floats(ds.get("DoseGridScaling"), 1)
    return (slope[0] if slope else 1.0), (intercept[0] if intercept else 0.0)


def _slice_spacing(ds: Dataset) -> float | None:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        found = _floats(ds.get(keyword), 1)
        if found and found[0] > 0:
            return found[0]
    return None


def _frames(headers: list[tuple[Path, Dataset]]) -> list[_Frame]:
    if len(headers) > 1 or int(headers[0][1].get("NumberOfFrames", 1) or 1) == 1:
        return [
            _Frame(
                path=str(path), index=None,
                position=_floats(ds.get("ImagePositionPatient"), 3),
                orientation=_floats(ds.get("ImageOrientationPatient"), 6),
                spacing=_spacing(ds), **_value_map(ds),
                instance_number=int(ds.get("InstanceNumber", 0) or 0),
                sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
            )
            for path, ds in headers
        ]
    path, ds = headers[0]
    count = int(ds.NumberOfFrames)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None or "SharedFunctionalGroupsSequence" in ds:
        out = []
        for i in range(count):
            item = per_frame[i] if per_frame is not None and i < len(per_frame) else None
            plane_pos = _group(ds, item, "PlanePositionSequence")
            plane_ori = _group(ds, item, "PlaneOrientationSequence")
            slope, intercept = _rescale(_group(ds, item, "PixelValueTransformationSequence") or ds)
            out.append(_Frame(
                path=str(path), index=i,
                position=_floats(plane_pos.get("ImagePositionPatient"), 3) if plane_pos else None,
                orientation=_floats(plane_ori.get("ImageOrientationPatient"), 6) if plane_ori else None,
                spacing=_spacing(_group(ds, item, "PixelMeasuresSequence")) or _spacing(ds),
                slope=slope, intercept=intercept, instance_number=i + 1,
                sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
            ))
        return out
    # Classic multi-frame: positions only from a grid offset vector (RT dose).
    ipp = _floats(ds.get("ImagePositionPatient"), 3)
    iop = _floats(ds.get("ImageOrientationPatient"), 6)
    offsets = _floats(ds.get("GridFrameOffsetVector"), count)
    positions: list[tuple[float, ...] | None] = [None] * count
    if ipp and iop and offsets:
        normal = slice_normal(iop)
        positions = [tuple(np.asarray(ipp) + o * normal) for o in offsets]
    return [
        _Frame(path=str(path), index=i, position=positions[i], orientation=iop,
               spacing=_spacing(ds), **_value_map(ds), instance_number=i + 1,
               sop_instance_uid=str(ds.get("SOPInstanceUID", "")))
        for i in range(count)
    ]


def _value_map(ds: Dataset) -> dict[str, float]:
    slope, intercept = _rescale(ds)
    return {"slope": slope, "intercept": intercept}


def _acquisition_order(frames: list[_Frame]) -> list[int]:
    return sorted(range(len(frames)), key=lambda i: (frames[i].instance_number, i))


def _where(source: Any) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else "the given files"


# --------------------------------------------------------------------------- pixels


@dataclass(frozen=True)
class _FrameReader:
    """Reads one frame and maps it to the output values; small and picklable for dask."""

    color: bool
    palette: Dataset | None
    dtype: np.dtype

    @classmethod
    def from_dataset(cls, ds: Dataset) -> _FrameReader:
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        if photometric == "PALETTE COLOR":
            palette = Dataset()
            for tag in _PALETTE_TAGS:
                if tag in ds:
                    palette[tag] = ds[tag]
            bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
            return cls(True, palette, np.dtype(np.uint8 if bits <= 8 else np.uint16))
        if int(ds.get("SamplesPerPixel", 1)) > 1:
            bits = int(ds.get("BitsAllocated", 8))
            return cls(True, None, np.dtype(np.uint8 if bits <= 8 else np.uint16))
        return cls(False, None, np.dtype(np.float32))

    def read(self, frame: _Frame) -> np.ndarray:
        arr = pixel_array(frame.path, index=frame.index)
        return self.convert(arr, frame)

    def convert(self, arr: np.ndarray, frame: _Frame) -> np.ndarray:
        if self.palette is not None:
            return apply_color_lut(arr, self.palette).astype(self.dtype, copy=False)
        if self.color:
            return arr.astype(self.dtype, copy=False)
        out = arr.astype(np.float32)
        if frame.slope != 1.0:
            out *= np.float32(frame.slope)
        if frame.intercept != 0.0:
            out += np.float32(frame.intercept)
        return out


def _eager(frames: list[_Frame], reader: _FrameReader) -> np.ndarray:
    if frames[0].index is None:
        return np.stack([reader.read(f) for f in frames])
    everything = pixel_array(frames[0].path)
    if everything.ndim == (3 if reader.color and reader.palette is None else 2):
        everything = everything[np.newaxis]  # one frame only
    return np.stack([reader.convert(everything[f.index], f) for f in frames])


def _lazy(frames: list[_Frame], reader: _FrameReader, size: tuple[int, int], dims: list[str],
          chunks: int | Mapping[str, int]) -> Any:
    import dask
    import dask.array as da

    if isinstance(chunks, int):
        wanted = {0: chunks}
    else:
        unknown = set(chunks) - set(dims)
        if unknown:
            raise ValueError(f"chunks names unknown dims {sorted(unknown)}; dims are {dims}")
        wanted = {dims.index(name): n for name, n in chunks.items()}
    shape = (*size, 3) if reader.color else size
    read = dask.delayed(reader.read, pure=True)
    stacked = da.stack([da.from_delayed(read(f), shape=shape, dtype=reader.dtype) for f in frames])
    return stacked.rechunk(wanted)


def _to_dataarray(data: Any, dims: list[str], frames: list[_Frame], first: Dataset,
                  geometry: VolumeGeometry | None, reader: _FrameReader) -> xr.DataArray:
    lead = dims[0]
    coords: dict[str, Any] = {
        "sop_instance_uid": (lead, [f.sop_instance_uid for f in frames]),
        "instance_number": (lead, [f.instance_number for f in frames]),
    }
    attrs: dict[str, Any] = {
        "modality": str(first.get("Modality", "")),
        "units": _units(first),
        "series_description": str(first.get("SeriesDescription", "")),
        "series_instance_uid": str(first.get("SeriesInstanceUID", "")),
        "study_instance_uid": str(first.get("StudyInstanceUID", "")),
        "photometric_interpretation": str(first.get("PhotometricInterpretation", "")),
        "number_of_files": len({f.path for f in frames}),
    }
    if geometry is not None:
        coords.update(z=geometry.z, y=geometry.y, x=geometry.x)
        attrs.update(
            geometry="volume",
            xy_units="mm",
            spacing=tuple(float(s) for s in geometry.spacing),
            origin=geometry.origin,
            orientation=geometry.orientation,
            affine=geometry.affine.tolist(),
            uniform_spacing=geometry.uniform,
            max_in_plane_offset_mm=geometry.max_in_plane_offset_mm,
        )
    else:
        rows, columns = int(first.Rows), int(first.Columns)
        spacing = frames[0].spacing
        coords["frame"] = np.arange(len(frames))
        if spacing:
            coords.update(y=spacing[0] * np.arange(rows), x=spacing[1] * np.arange(columns))
        else:
            coords.update(y=np.arange(rows), x=np.arange(columns))
        times = _frame_times(first, len(frames))
        if times is not None:
            coords["time"] = ("frame", times)
        attrs.update(geometry="frames", xy_units="mm" if spacing else "pixel",
                     spacing=(float("nan"), *(spacing or (float("nan"), float("nan")))))
    if reader.color:
        coords["channel"] = ["R", "G", "B"]
    return xr.DataArray(data, dims=dims, coords=coords, attrs=attrs,
                        name=attrs["series_description"] or attrs["modality"] or "series")


def _units(ds: Dataset) -> str:
    rescale_type = str(ds.get("RescaleType", "") or "")
    for item in (ds.get("SharedFunctionalGroupsSequence") or [])[:1]:
        group = _first(item.get("PixelValueTransformationSequence"))
        if group is not None and group.get("RescaleType"):
            rescale_type = str(group.RescaleType)
    if rescale_type and rescale_type != "US":
        return rescale_type
    modality = str(ds.get("Modality", ""))
    if modality == "CT":
        return "HU"
    if modality == "RTDOSE":
        return str(ds.get("DoseUnits", "") or "")
    return ""


def _frame_times(ds: Dataset, count: int) -> np.ndarray | None:
    vector = _floats(ds.get("FrameTimeVector"), count)
    if vector:
        return np.cumsum(vector) - vector[0]
    frame_time = _floats(ds.get("FrameTime"), 1)
    if frame_time and count > 1:
        return frame_time[0] * np.arange(count)
    return None
