"""What the archive sends becomes a dataset with correct file meta, whatever its shape."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from services.sample_gateway.instances import dataset_from_part
from services.sample_gateway.multipart import Part

CT_SOP_INSTANCE = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def ct_path() -> str:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    return str(path)


def bare(path: str, *, implicit: bool) -> bytes:
    """The dataset alone: no preamble, no 'DICM', no group 0002."""
    ds = copy.deepcopy(dcmread(path))
    del ds.file_meta
    ds.preamble = None
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, implicit_vr=implicit, little_endian=True, enforce_file_format=False)
    data = buffer.getvalue()
    assert data[128:132] != b"DICM" and data[:2] == b"\x08\x00"  # starts with group 0008
    return data


def part(body: bytes, content_type: str = "application/dicom") -> Part:
    return Part({"content-type": content_type}, body)


def test_part10_file(ct_path: str) -> None:
    raw = Path(ct_path).read_bytes()
    assert raw[128:132] == b"DICM"
    ds = dataset_from_part(part(raw, f"application/dicom; transfer-syntax={ImplicitVRLittleEndian}"))
    # The file's own meta wins over what the header says.
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPClassUID == CT_IMAGE_STORAGE
    assert ds.file_meta.MediaStorageSOPInstanceUID == CT_SOP_INSTANCE
    assert (str(ds.PatientName), ds.Rows, ds.Columns) == ("CompressedSamples^CT1", 128, 128)
    assert ds.pixel_array.shape == (128, 128)


@pytest.mark.parametrize(
    ("implicit", "syntax"), [(True, ImplicitVRLittleEndian), (False, ExplicitVRLittleEndian)]
)
def test_bare_dataset_with_syntax_only_in_content_type(ct_path: str, implicit: bool, syntax: str) -> None:
    original = dcmread(ct_path)
    ds = dataset_from_part(part(bare(ct_path, implicit=implicit),
                                f'application/dicom; transfer-syntax="{syntax}"'))
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.file_meta.MediaStorageSOPClassUID == CT_IMAGE_STORAGE
    assert ds.file_meta.MediaStorageSOPInstanceUID == CT_SOP_INSTANCE
    assert ds.SOPInstanceUID == CT_SOP_INSTANCE
    assert str(ds.PatientName) == "CompressedSamples^CT1"
    assert (ds.pixel_array == original.pixel_array).all()
    # ...and it can be written as a proper Part 10 file and read back.
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    again = dcmread(io.BytesIO(buffer.getvalue()))
    assert again.file_meta.TransferSyntaxUID == syntax
    assert again.SOPInstanceUID == CT_SOP_INSTANCE


@pytest.mark.parametrize(
    ("implicit", "content_type", "syntax"),
    [
        (True, "application/dicom", ImplicitVRLittleEndian),
        (False, "application/dicom", ExplicitVRLittleEndian),
        (True, "application/dicom; transfer-syntax=*", ImplicitVRLittleEndian),
        (False, "application/dicom; transfer-syntax=*", ExplicitVRLittleEndian),
    ],
)
def test_bare_dataset_without_a_stated_syntax_is_guessed(
    ct_path: str, implicit: bool, content_type: str, syntax: str
) -> None:
    ds = dataset_from_part(part(bare(ct_path, implicit=implicit), content_type))
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.Rows == 128


def test_other_test_file_mr() -> None:
    path = get_testdata_file("MR_small.dcm")
    assert path is not None
    original = dcmread(path)
    ds = dataset_from_part(part(bare(str(path), implicit=False),
                                f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"))
    assert ds.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPClassUID == original.SOPClassUID


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>502 Bad Gateway</body></html>\r\n" * 4,
        b"hello, this is not DICOM at all",
        bytes(range(256)) * 4,
    ],
    ids=["empty", "html", "text", "bytes"],
)
def test_a_body_that_is_not_dicom_raises_invalid_dicom(body: bytes) -> None:
    with pytest.raises(InvalidDicomError) as info:
        dataset_from_part(part(body, "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"))
    assert str(info.value) in {
        "the archive sent an empty or unreadable object",
        "the object has no SOP Instance UID or SOP Class UID",
    }


def test_dataset_without_sop_uids_is_refused() -> None:
    ds = Dataset()
    ds.PatientName = "Test^Nobody"
    ds.Modality = "CT"
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, implicit_vr=True, little_endian=True)
    with pytest.raises(InvalidDicomError, match="no SOP Instance UID or SOP Class UID"):
        dataset_from_part(part(buffer.getvalue()))
