"""A de-identified dataset as Part 10 bytes: what ``dcmwrite(..., enforce_file_format=True)``
writes, byte for byte, in less time.

:func:`.deidentify.deidentify` leaves the elements it keeps exactly as read (binary
numbers, and printable ASCII values the rules kept unchanged) as pydicom's undecoded
``RawDataElement``; they are most of a typical image's header. pydicom writes each
through a general routine (a buffer per element, checks for every VR); here such an
element in the encoding being written, with a defined length that fits its length field,
becomes its tag, VR, length and the bytes as read, with nothing decoded. Every other
element (a value the rules changed, a sequence, pixel data of undefined length) goes
through pydicom's own ``write_data_element``, and the file meta through pydicom's
``write_file_meta_info`` after the same checks ``dcmwrite`` makes.

Anything unusual takes pydicom's ``dcmwrite`` whole: a transfer syntax that is not a
public, little endian, non-deflated one, a dataset whose original encoding or character
set differs from what is written (pydicom then converts every element), group 0000 or
0002 elements in the dataset. ``tests/test_gateway_pipeline.py`` checks on the offline
corpus that the bytes are the same as ``dcmwrite``'s.
"""

from __future__ import annotations

import io
import struct
from typing import Any

from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileMetaDataset, validate_file_meta
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_data_element, write_file_meta_info
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

__all__ = ["completed_meta", "element_bytes", "file_start", "part10_bytes", "plain_encoding"]

#: Explicit VRs whose length field is 32 bits (after two reserved bytes), PS3.5 7.1.2.
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})
_SHORT = struct.Struct("<HH2sH")  # tag, VR, 16-bit length
_LONG = struct.Struct("<HH2s2xL")  # tag, VR, reserved, 32-bit length
_IMPLICIT = struct.Struct("<HHL")  # tag, 32-bit length


def part10_bytes(ds: Dataset) -> bytes:
    """``ds`` with its file meta as a DICOM file (preamble, ``DICM``, meta, dataset)."""
    meta: FileMetaDataset = getattr(ds, "file_meta", None) or FileMetaDataset()
    syntax = meta.get("TransferSyntaxUID")
    encoding = plain_encoding(syntax)
    if (encoding is None or ds.original_encoding != encoding
            or ds.original_character_set != ds._character_set
            or any(tag.group in (0, 2) for tag in ds.keys())):  # noqa: SIM118 - no conversion
        return _dcmwrite(ds)
    meta = completed_meta(meta, ds.get("SOPClassUID", None), ds.get("SOPInstanceUID", None))
    if "PixelData" in ds:
        ds["PixelData"].is_undefined_length = syntax.is_compressed
    preamble = getattr(ds, "preamble", None)
    if preamble and len(preamble) != 128:
        return _dcmwrite(ds)  # let pydicom refuse it
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = encoding
    fp.write(file_start(meta, preamble))
    _write_dataset(fp, ds, encoding[0])
    return fp.getvalue()


def completed_meta(meta: FileMetaDataset, ds_class: Any, ds_instance: Any) -> FileMetaDataset:
    """A copy of `meta` as ``dcmwrite(enforce_file_format=True)`` completes it before writing
    (the dataset's SOP class and instance, the implementation's UID and version)."""
    meta = FileMetaDataset(meta)  # its elements are replaced below, never changed
    if meta.get("MediaStorageSOPClassUID", None) is None or (ds_class and ds_class != meta.MediaStorageSOPClassUID):
        meta.MediaStorageSOPClassUID = ds_class
    if meta.get("MediaStorageSOPInstanceUID", None) is None or (
            ds_instance and ds_instance != meta.MediaStorageSOPInstanceUID):
        meta.MediaStorageSOPInstanceUID = ds_instance
    validate_file_meta(meta, enforce_standard=True)
    return meta


def plain_encoding(syntax: UID | None) -> tuple[bool, bool] | None:
    """(implicit VR, little endian) of a public little endian transfer syntax that is not
    deflated; None for any other (pydicom's dcmwrite handles those)."""
    if not syntax or syntax.is_private or not syntax.is_transfer_syntax:
        return None
    if syntax == DeflatedExplicitVRLittleEndian or syntax.is_deflated or not syntax.is_little_endian:
        return None
    return syntax.is_implicit_VR, True


def _write_dataset(fp: DicomBytesIO, ds: Dataset, implicit: bool) -> None:
    """pydicom's ``write_dataset`` for a dataset written in its original encoding and
    character set, with raw elements in that encoding written directly."""
    charset = ds.get("SpecificCharacterSet", "iso8859")
    write = fp.write
    for tag in sorted(ds.keys()):
        if tag.element == 0 and tag.group > 6:
            continue  # retired group lengths are not written (PS3.5 7.2)
        write(element_bytes(ds.get_item(tag), implicit, charset))


def element_bytes(elem: DataElement | RawDataElement, implicit: bool, charset: Any) -> bytes:
    """One element of a dataset written by :func:`part10_bytes` (little endian, `implicit`
    VR or not, text in `charset`, the dataset's SpecificCharacterSet value): a raw element
    in that encoding as its header and the bytes as read, any other through pydicom."""
    if (isinstance(elem, RawDataElement) and isinstance(elem.value, bytes)
            and elem.is_implicit_VR == implicit and elem.is_little_endian
            and elem.length == len(elem.value) and not elem.length % 2):
        header = _raw_header(elem, implicit)
        if header is not None:
            return header + elem.value
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit, True
    write_data_element(fp, elem, charset)
    return fp.getvalue()


def file_start(meta: FileMetaDataset, preamble: bytes | None = None) -> bytes:
    """Preamble, ``DICM`` and the file meta group of a Part 10 file, as :func:`part10_bytes`
    writes them for a `meta` it has completed and checked already."""
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = False, True
    fp.write(preamble or b"\x00" * 128)
    fp.write(b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    return fp.getvalue()


def _raw_header(elem: RawDataElement, implicit: bool) -> bytes | None:
    """Tag, VR and length of a raw element, as pydicom writes them; None when pydicom
    would write something else (no VR known in explicit VR, a value too long for a
    16-bit length field)."""
    tag, length = elem.tag, elem.length
    if implicit:
        return _IMPLICIT.pack(tag >> 16, tag & 0xFFFF, length)
    vr = elem.VR
    if vr is None or len(vr) != 2:
        return None
    if vr in _LONG_VRS:
        return _LONG.pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)
    if length > 0xFFFF:
        return None
    return _SHORT.pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)


def _dcmwrite(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
