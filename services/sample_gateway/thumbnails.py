"""Small PNG previews of a study, rendered from de-identified pixels only (pure).

The gateway renders a thumbnail only from an object that has passed
:func:`.deidentify.deidentify` under the project's policy: an image that may carry text in
its pixels is refused for a project whose approval does not cover that, exactly as in a
pull. The archive's own rendering (WADO-RS ``/rendered``) is never used: it would bypass
that check, and burn in whatever overlay the archive chooses to draw.

Rendering: one frame (the middle one of a multi-frame object), decoded locally (pydicom
with pylibjpeg, openjpeg, gdcm: every compressed syntax the archive stores); colour kept
(YBR converted to RGB, palette colour applied); grey images windowed with the object's
window if it has one, else between the 1st and 99th percentile, MONOCHROME1 inverted; shrunk
by averaging to at most :data:`MAX_SIDE` pixels, keeping the physical aspect ratio from
PixelSpacing, ImagerPixelSpacing or the functional groups' PixelMeasuresSequence. The PNG
encoder is a few lines of zlib, so the gateway needs no imaging library.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
from pydicom import Dataset
from pydicom.pixels import apply_color_lut, get_decoder

MAX_SIDE = 128


class ThumbnailError(Exception):
    """The pixels cannot be shown (no pixel data, an undecodable syntax)."""


def render_png(ds: Dataset, max_side: int = MAX_SIDE) -> bytes:
    return png_bytes(render(ds, max_side))


def render(ds: Dataset, max_side: int = MAX_SIDE) -> np.ndarray:
    """An 8-bit (rows, columns) grey or (rows, columns, 3) RGB thumbnail of ``ds``."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ThumbnailError("the object has no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
        frame, _ = decoder.as_array(ds, index=frames // 2 if frames > 1 else None, as_rgb=True)
    except Exception as exc:  # noqa: BLE001 - every decoder failure means "no preview"
        raise ThumbnailError(f"the pixels cannot be decoded ({type(exc).__name__})") from None
    if frame.ndim == 3 and frame.shape[-1] not in (3, 4):  # one frame came back as a volume
        frame = frame[frame.shape[0] // 2]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric == "PALETTE COLOR":
        image = _to_uint8(apply_color_lut(frame, ds).astype(np.float64), rgb=True)
    elif frame.ndim == 3:
        image = _to_uint8(frame[..., :3].astype(np.float64), rgb=True)
    else:
        image = _window(ds, frame)
        if photometric == "MONOCHROME1":
            image = 255 - image
    return _shrink(image, _aspect(ds), max_side)


def _window(ds: Dataset, frame: np.ndarray) -> np.ndarray:
    slope, intercept = _rescale_of(ds)
    values = frame.astype(np.float64) * slope + intercept
    low = high = None
    center, width = _window_of(ds)
    if center is not None and width is not None and width > 1:
        low, high = center - width / 2, center + width / 2
    if low is None or high is None or not math.isfinite(low) or not math.isfinite(high):
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return np.zeros(values.shape, np.uint8)
        low, high = (float(v) for v in np.percentile(finite, [1, 99]))
    if high <= low:
        high = low + 1
    scaled = np.clip((values - low) / (high - low), 0, 1) * 255
    return np.nan_to_num(scaled).round().astype(np.uint8)


def _rescale_of(ds: Dataset) -> tuple[float, float]:
    """Slope and intercept: top level, else PixelValueTransformationSequence."""
    holders: list[Dataset] = [ds]
    for sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(sequence) or []
        if items:
            holders += list(items[len(items) // 2].get("PixelValueTransformationSequence") or [])[:1]
    for holder in holders:
        slope = _first_number(holder.get("RescaleSlope"))
        intercept = _first_number(holder.get("RescaleIntercept"))
        if slope is not None or intercept is not None:
            return (slope if slope else 1.0), (intercept or 0.0)
    return 1.0, 0.0


def _window_of(ds: Dataset) -> tuple[float | None, float | None]:
    """The object's window: top level, else the functional groups' FrameVOILUTSequence."""
    holders: list[Dataset] = [ds]
    for sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(sequence) or []
        if items:
            holders += list(items[len(items) // 2].get("FrameVOILUTSequence") or [])[:1]
    for holder in holders:
        center = _first_number(holder.get("WindowCenter"))
        width = _first_number(holder.get("WindowWidth"))
        if center is not None and width is not None:
            return center, width
    return None, None


def _to_uint8(values: np.ndarray, *, rgb: bool) -> np.ndarray:
    top = float(values.max()) if values.size else 0.0
    if top > 255:  # 16-bit palette or colour: scale down
        values = values * (255.0 / top)
    return np.clip(values, 0, 255).round().astype(np.uint8)


def _first_number(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or hasattr(value, "__getitem__") and not isinstance(value, str):
        try:
            value = value[0]  # type: ignore[index]
        except (IndexError, TypeError):
            return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _aspect(ds: Dataset) -> float:
    """Row spacing over column spacing (1.0 when unknown)."""
    spacing = pixel_spacing(ds)
    if spacing is None:
        return 1.0
    row, column = spacing
    return row / column if row > 0 and column > 0 else 1.0


def pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm: PixelSpacing, the functional groups, ImagerPixelSpacing."""
    holders: list[Dataset] = [ds]
    for sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(sequence) or []
        if items:
            holders += list(items[0].get("PixelMeasuresSequence") or [])[:1]
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        for holder in holders:
            value = holder.get(keyword)
            if value is not None:
                try:
                    row, column = (float(v) for v in list(value)[:2])
                except (TypeError, ValueError):
                    continue
                return row, column
    return None


def _shrink(image: np.ndarray, aspect: float, max_side: int) -> np.ndarray:
    rows, columns = image.shape[:2]
    height, width = rows * aspect, float(columns)  # physical proportions, in column units
    scale = min(1.0, max_side / max(height, width))
    target = (max(1, round(height * scale)), max(1, round(width * scale)))
    factor = max(1, min(rows // target[0], columns // target[1]))
    if factor > 1:  # average blocks of factor x factor pixels first
        cut = image[: rows - rows % factor, : columns - columns % factor].astype(np.float64)
        shape = (cut.shape[0] // factor, factor, cut.shape[1] // factor, factor, *cut.shape[2:])
        image = cut.reshape(shape).mean(axis=(1, 3)).round().astype(np.uint8)
    row_index = np.minimum((np.arange(target[0]) + 0.5) * image.shape[0] / target[0], image.shape[0] - 1)
    column_index = np.minimum((np.arange(target[1]) + 0.5) * image.shape[1] / target[1], image.shape[1] - 1)
    return image[row_index.astype(int)][:, column_index.astype(int)]


def png_bytes(image: np.ndarray) -> bytes:
    """An 8-bit grey (2-D) or RGB (H, W, 3) array as a PNG file."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError("png_bytes takes uint8 (rows, columns) or (rows, columns, 3)")
    rows, columns = image.shape[:2]
    colour_type = 2 if image.ndim == 3 else 0
    raw = np.ascontiguousarray(image).reshape(rows, -1)
    scanlines = b"".join(b"\x00" + raw[r].tobytes() for r in range(rows))
    header = struct.pack(">IIBBBBB", columns, rows, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(scanlines, 6)) + _chunk(b"IEND", b""))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


__all__ = ["MAX_SIDE", "ThumbnailError", "pixel_spacing", "png_bytes", "render", "render_png"]
