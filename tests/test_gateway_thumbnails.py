"""Thumbnails (pure): every stored transfer syntax decodes, windowing, colour, aspect, PNG bytes."""

from __future__ import annotations

import copy
import io
import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate

from services.sample_gateway.thumbnails import (
    ThumbnailError,
    pixel_spacing,
    png_bytes,
    render,
    render_png,
)


def load(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert path is not None, name
    return pydicom.dcmread(path)


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("MR_small_implicit.dcm", "L"),  # implicit VR little endian
        ("CT_small.dcm", "L"),  # explicit VR little endian
        ("image_dfl.dcm", "L"),  # deflated
        ("OBXXXX1A_expb.dcm", "RGB"),  # big endian, palette colour
        ("color3d_jpeg_baseline.dcm", "RGB"),  # JPEG baseline, YBR_FULL_422, multi-frame
        ("JPGExtended.dcm", "L"),  # JPEG extended
        ("JPEG-LL.dcm", "L"),  # JPEG lossless SV1
        ("emri_small_jpeg_ls_lossless.dcm", "L"),  # JPEG-LS lossless, multi-frame
        ("JPEGLSNearLossless_08.dcm", "L"),  # JPEG-LS near-lossless
        ("693_J2KR.dcm", "L"),  # JPEG 2000 lossless
        ("MR2_J2KI.dcm", "L"),  # JPEG 2000
        ("OBXXXX1A_rle.dcm", "RGB"),  # RLE, palette colour
        ("US1_J2KR.dcm", "RGB"),  # JPEG 2000, YBR_RCT
    ],
)
def test_every_stored_syntax_renders(name: str, mode: str) -> None:
    ds = load(name)
    png = render_png(ds)
    image = Image.open(io.BytesIO(png))
    assert image.mode == mode and max(image.size) <= 128
    pixels = np.asarray(image)
    assert pixels.std() > 5  # an image, not a flat field


def test_png_bytes_golden() -> None:
    grey = np.array([[0, 128, 255], [1, 2, 3]], dtype=np.uint8)
    data = png_bytes(grey)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), grey)
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    assert zlib.decompress(idat) == b"\x00\x00\x80\xff\x00\x01\x02\x03"
    rgb = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(rgb)))), rgb)
    with pytest.raises(ValueError):
        png_bytes(grey.astype(np.uint16))


def test_window_of_the_object_is_used_and_monochrome1_inverted() -> None:
    ds = load("CT_small.dcm")
    ds.WindowCenter, ds.WindowWidth = 40, 400
    windowed = render(ds)
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert np.array_equal(render(ds), 255 - windowed)
    del ds.WindowCenter, ds.WindowWidth
    ds.PhotometricInterpretation = "MONOCHROME2"
    assert not np.array_equal(render(ds), windowed)  # percentiles instead


def test_aspect_follows_pixel_spacing_from_any_source() -> None:
    ds = load("CT_small.dcm")  # 128 x 128, square pixels
    assert render(ds).shape == (128, 128)
    tall = copy.deepcopy(ds)
    del tall.PixelSpacing
    tall.ImagerPixelSpacing = [1.0, 0.5]  # rows twice as far apart
    assert pixel_spacing(tall) == (1.0, 0.5) and render(tall).shape == (128, 64)
    enhanced = load("eCT_Supplemental.dcm")
    assert "PixelSpacing" not in enhanced
    assert pixel_spacing(enhanced) == pytest.approx((0.388672, 0.388672))
    assert render(enhanced, max_side=32).shape == (32, 32)


def test_enhanced_ct_rescale_and_window_from_functional_groups() -> None:
    ds = load("eCT_Supplemental.dcm")
    image = render(ds)
    # Air outside the head is black, tissue in the middle is not: the window was applied
    # to Hounsfield units (intercept in the functional groups), not to stored values.
    assert image[:8, :8].mean() < 10 and image[56:72, 56:72].mean() > 30


def test_objects_without_decodable_pixels() -> None:
    ds = load("CT_small.dcm")
    del ds.PixelData
    with pytest.raises(ThumbnailError, match="no pixel data"):
        render(ds)
    broken = load("JPEG-LL.dcm")
    broken.PixelData = encapsulate([b"not a JPEG stream" * 4])
    with pytest.raises(ThumbnailError, match="cannot be decoded"):
        render(broken)
