"""Turning what the archive sends into pydicom datasets, whatever shape it comes in.

Real archives send Part 10 files with file meta information, but also bare datasets
without a preamble or meta group (the transfer syntax then only appears in the part's
Content-Type). Both become a dataset with correct file meta.
"""

from __future__ import annotations

import io

from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .multipart import Part, media_params


def dataset_from_part(part: Part) -> Dataset:
    stated = media_params(part.content_type).get("transfer-syntax")
    try:
        ds = dcmread(io.BytesIO(part.body))
    except InvalidDicomError:
        ds = _bare_dataset(part.body, stated)
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = UID(stated) if stated and stated != "*" else _guess_syntax(ds)
    if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
        raise InvalidDicomError("the object has no SOP Instance UID or SOP Class UID")
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    return ds


def _bare_dataset(body: bytes, stated: str | None) -> Dataset:
    """A dataset without preamble and meta: read with the syntax the part header states."""
    ds = dcmread(io.BytesIO(body), force=True)
    if len(ds) == 0:
        raise InvalidDicomError("the archive sent an empty or unreadable object")
    if stated and stated != "*":
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = UID(stated)
    return ds


def _guess_syntax(ds: Dataset) -> UID:
    return ImplicitVRLittleEndian if getattr(ds, "is_implicit_VR", False) else ExplicitVRLittleEndian
