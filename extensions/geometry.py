"""Pure geometry of DICOM image planes (no I/O): normals, slice order, axes, affines.

DICOM places a frame in the patient coordinate system (LPS, millimetres) with
``ImagePositionPatient`` (the centre of the first transmitted pixel), the row and column
direction cosines of ``ImageOrientationPatient`` and ``PixelSpacing`` = (spacing between
rows, spacing between columns). So pixel (row i, column j) of a frame at position P is at::

    P + j * PixelSpacing[1] * row_cosine + i * PixelSpacing[0] * column_cosine

The axes of a volume are measured along the image's own directions: ``x`` along the row
cosine, ``y`` along the column cosine, ``z`` along the slice normal (row x column). For the
usual axial orientation (1,0,0,0,1,0) these are the patient's x, y and z.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ORIENTATION_TOLERANCE",
    "POSITION_TOLERANCE_MM",
    "GeometryError",
    "VolumeGeometry",
    "slice_normal",
    "volume_geometry",
]

ORIENTATION_TOLERANCE = 1e-4
POSITION_TOLERANCE_MM = 1e-3


class GeometryError(ValueError):
    """The planes do not form one volume (orientations differ, two share a position...)."""


def _vec(values: Sequence[float], n: int, what: str) -> np.ndarray:
    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise GeometryError(f"{what} must be {n} finite numbers, got {list(values)!r}")
    return arr


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal (row cosine x column cosine) of an ``ImageOrientationPatient``."""
    iop = _vec(orientation, 6, "ImageOrientationPatient")
    normal = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        raise GeometryError(f"ImageOrientationPatient {list(orientation)!r} has parallel cosines")
    return normal / norm


@dataclass(frozen=True)
class VolumeGeometry:
    """Where the sorted slices of a volume are.

    ``order`` lists the input planes sorted by their distance along the normal (ascending);
    ``z``, ``y``, ``x`` are the axis coordinates in millimetres; ``spacing`` is
    (slice spacing, row spacing, column spacing) with the slice spacing the median step
    (``nan`` for a single plane unless given); ``affine`` maps (z, y, x) indices to patient
    LPS millimetres; ``uniform`` says whether the slice steps are equal (within 1 %);
    ``max_in_plane_offset_mm`` is the largest in-plane shift of a slice's origin from the
    first one (non-zero for a tilted-gantry acquisition).
    """

    order: tuple[int, ...]
    z: np.ndarray
    y: np.ndarray
    x: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    orientation: tuple[float, ...]
    affine: np.ndarray
    uniform: bool
    max_in_plane_offset_mm: float


def volume_geometry(
    positions: Sequence[Sequence[float]],
    orientations: Sequence[Sequence[float]],
    pixel_spacing: Sequence[float],
    rows: int,
    columns: int,
    *,
    slice_spacing: float | None = None,
) -> VolumeGeometry:
    """Sort planes along their common normal and compute the volume's axes.

    ``positions`` and ``orientations`` hold one ``ImagePositionPatient`` and one
    ``ImageOrientationPatient`` per plane, in input order. ``slice_spacing`` is used for a
    single plane (e.g. ``SpacingBetweenSlices`` or ``SliceThickness``). Raises
    :class:`GeometryError` when orientations differ or two planes share a position.
    """
    if not positions or len(positions) != len(orientations):
        raise GeometryError("need one position and one orientation per plane")
    iops = np.stack([_vec(o, 6, "ImageOrientationPatient") for o in orientations])
    if np.abs(iops - iops[0]).max() > ORIENTATION_TOLERANCE:
        raise GeometryError("the planes do not share one orientation")
    iop = iops[0]
    row_cos, col_cos = iop[:3], iop[3:]
    normal = slice_normal(iop)
    ipps = np.stack([_vec(p, 3, "ImagePositionPatient") for p in positions])
    distance = ipps @ normal
    order = np.argsort(distance, kind="stable")
    z = distance[order]
    steps = np.diff(z)
    if steps.size and steps.min() < POSITION_TOLERANCE_MM:
        k = int(np.argmin(steps))
        raise GeometryError(
            f"planes {int(order[k])} and {int(order[k + 1])} are at the same position "
            f"({z[k]:.3f} mm along the normal): several echoes, phases or time points?"
        )
    row_spacing, col_spacing = (float(v) for v in _vec(pixel_spacing, 2, "PixelSpacing"))
    if row_spacing <= 0 or col_spacing <= 0:
        raise GeometryError(f"PixelSpacing must be positive, got {list(pixel_spacing)!r}")
    if steps.size:
        dz = float(np.median(steps))
        uniform = bool(np.all(np.abs(steps - dz) <= 0.01 * dz))
    else:
        dz = float(slice_spacing) if slice_spacing else float("nan")
        uniform = True
    first = ipps[order[0]]
    in_plane = (ipps[order] - first) @ np.stack([row_cos, col_cos]).T
    y = float(first @ col_cos) + row_spacing * np.arange(rows)
    x = float(first @ row_cos) + col_spacing * np.arange(columns)
    affine = np.eye(4)
    affine[:3, 0] = normal * (dz if np.isfinite(dz) else 0.0)
    affine[:3, 1] = col_cos * row_spacing
    affine[:3, 2] = row_cos * col_spacing
    affine[:3, 3] = first
    return VolumeGeometry(
        order=tuple(int(i) for i in order),
        z=z,
        y=y,
        x=x,
        spacing=(dz, row_spacing, col_spacing),
        origin=tuple(float(v) for v in first),
        orientation=tuple(float(v) for v in iop),
        affine=affine,
        uniform=uniform,
        max_in_plane_offset_mm=float(np.abs(in_plane).max()) if in_plane.size else 0.0,
    )
