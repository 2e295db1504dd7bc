"""Crafted objects against the series memo (services/sample_gateway/series_memo.py).

The claim under attack: for any bytes, what ``deidentified(..., memo=<a memo that has seen
earlier objects>)`` returns is what a fresh memo (the ordinary way) returns: the same file,
manifest row, warnings or refusal. Each test teaches a memo one or two objects, sends a
crafted one, and compares with the ordinary way.

The first review found six ways to make them differ, five of which leaked a name or a
secret the ordinary way removes; each test below that names a finding (F1-F6) failed
before its fix: a private creator deciding that a private UN is a name (F1, creators are
context now); group lengths and overlay elements with a PN, DA or SQ VR feeding the record
(F2, independent only with their dictionary VR); undefined length fragments holding an
undefined length item, where pydicom falls back to scanning for the delimiter (F3, not
read here); an implicit VR file that pydicom reads as explicit because its first length
spells a VR (F4, pydicom's test applied); a defined length sequence item whose last element
overruns it (F5, sequence items are read element by element and must end where they say);
a refusal answered as "another study" when the ordinary way says "unreadable" (F6). The
other tests are attacks the memo survived.
"""

from __future__ import annotations

import io
import struct

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset, write_file_meta_info
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    generate_uid,
)

from demo.archive import DemoArchive
from services.sample_gateway.deidentify import DeidPolicy
from services.sample_gateway.pipeline import Refused, deidentified
from services.sample_gateway.pseudonyms import ProjectKeys
from services.sample_gateway.series_memo import Fast, SeriesMemo, split_part10

pytestmark = pytest.mark.filterwarnings("ignore")

KEYS = ProjectKeys(b"m" * 32, "memo")
POLICY = DeidPolicy(allow_burned_in_annotation=True)
STRICT = DeidPolicy()
FAKE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # Sequence Delimitation Item
ITEM_END = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"  # Item Delimitation Item
NAME = b"BIRGITTE"


# ---------------------------------------------------------------------------
# helpers


def same(a: Fast | Refused, b: Fast | Refused) -> bool:
    if isinstance(a, Refused) or isinstance(b, Refused):
        return a == b
    return a.data == b.data and a.row == b.row and a.warnings == b.warnings


def read(body: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(body), force=True)


def encoded(ds: pydicom.Dataset, implicit: bool = False) -> bytes:
    out = io.BytesIO()
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(out, implicit_vr=True, little_endian=True, enforce_file_format=True)
    else:
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def changed(body: bytes, change=None, implicit: bool = False) -> bytes:
    ds = read(body)
    if change is not None:
        change(ds)
    return encoded(ds, implicit)


def study_of(body: bytes) -> str:
    return str(read(body).StudyInstanceUID)


def attack(taught: list[bytes], body: bytes, *, policy: DeidPolicy = POLICY, asked: str | None = None,
           keys: ProjectKeys = KEYS, scope: str = "") -> tuple[Fast | Refused, Fast | Refused, int]:
    """(the memo's answer after `taught`, the ordinary way's answer, fast-way hits for `body`)."""
    study = study_of(taught[0])
    memo = SeriesMemo()
    for body_ in taught:
        assert isinstance(deidentified(body_, "application/dicom", study, KEYS, policy, memo), Fast)
    hits = memo.hits
    asked = asked or study
    mine = deidentified(body, "application/dicom", asked, keys, policy, memo, scope=scope)
    theirs = deidentified(body, "application/dicom", asked, keys, policy, SeriesMemo(), scope=scope)
    return mine, theirs, memo.hits - hits


def leaks(mine: Fast | Refused, theirs: Fast | Refused, secret: bytes) -> bool:
    """The memo delivers `secret` where the ordinary way does not (or refuses)."""
    return (isinstance(mine, Fast) and secret in mine.data
            and (isinstance(theirs, Refused) or secret not in theirs.data))


_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}


def raw(tag: int, vr: str, value: bytes, *, length: int | None = None) -> bytes:
    """One explicit VR little endian element, exactly as given (no checks)."""
    if length is None and len(value) % 2:
        value += b"\0" if vr in ("UI", "OB", "UN") else b" "
    length = len(value) if length is None else length
    if vr in _LONG:
        return struct.pack("<HH2s2xL", tag >> 16, tag & 0xFFFF, vr.encode(), length) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), length) + value


def insert(body: bytes, element: bytes) -> bytes:
    """`element` put into the dataset of `body` in tag order (replacing one with its tag)."""
    group, number = struct.unpack_from("<HH", element)
    tag = group << 16 | number
    split = split_part10(body)
    assert split is not None
    for e in split.elements:
        if e.tag == tag:
            return body[:e.start] + element + body[e.end:]
        if e.tag > tag:
            return body[:e.start] + element + body[e.start:]
    return body + element


def pixel_data_replaced(body: bytes, value: bytes) -> bytes:
    """`body` with its Pixel Data an undefined length `value` (items and delimiter included)."""
    split = split_part10(body)
    assert split is not None
    pixels = next(e for e in split.elements if e.tag == 0x7FE00010)
    header = struct.pack("<HH2s2xL", 0x7FE0, 0x0010, pixels.vr.encode(), 0xFFFFFFFF)
    return body[:pixels.start] + header + value + body[pixels.end:]


def file_start(syntax: str, sop_class: str = CTImageStorage, instance: str = "1.2.3.4.5.1") -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = instance
    meta.TransferSyntaxUID = syntax
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    return fp.getvalue()


def element(tag: int, vr: str, value) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_data_element(fp, DataElement(tag, vr, value))
    return fp.getvalue()


def with_meta(body: bytes, replace: dict[int, bytes] | None = None, extra: bytes = b"") -> bytes:
    """`body` with meta elements replaced (tag: whole element) and `extra` appended to its
    meta group, the group length made right."""
    split = split_part10(body)
    assert split is not None
    start = split.elements[0].start
    meta, pos, parts = body[132:start], 0, []
    while pos < len(meta):
        group, number, vr = struct.unpack_from("<HH2s", meta, pos)
        if vr.decode() in _LONG:
            size = 12 + struct.unpack_from("<L", meta, pos + 8)[0]
        else:
            size = 8 + struct.unpack_from("<H", meta, pos + 6)[0]
        tag = group << 16 | number
        if tag != 0x00020000:
            parts.append((replace or {}).get(tag, meta[pos:pos + size]))
        pos += size
    rest = b"".join(parts) + extra
    return body[:132] + raw(0x00020000, "UL", struct.pack("<L", len(rest))) + rest + body[start:]


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def ct(demo_archive: DemoArchive) -> list[bytes]:
    """Three slices of the demo CT series (explicit VR little endian)."""
    return [(demo_archive.root / e.path).read_bytes() for e in demo_archive.benchmark_series()[:3]]


@pytest.fixture(scope="module")
def rle(demo_archive: DemoArchive) -> list[bytes]:
    """Three slices of the demo's RLE compressed CT series (encapsulated pixel data)."""
    entries = next(e for e in demo_archive.series().values() if len(e) == 20)
    return [(demo_archive.root / e.path).read_bytes() for e in entries[:3]]


# ---------------------------------------------------------------------------
# Findings


# F1 (see the module docstring)
def test_private_creator_turns_a_private_un_into_a_name(ct: list[bytes]) -> None:
    def with_creator(body: bytes, creator: str) -> bytes:
        def change(ds: pydicom.Dataset) -> None:
            ds.add_new(0x00210010, "LO", creator)
            ds.add_new(0x00211002, "UN", NAME)
            ds.ConvolutionKernel = NAME.decode()
        return changed(body, change)

    taught = [with_creator(b, "OTHER VENDOR X") for b in ct[:2]]
    mine, theirs, _ = attack(taught, with_creator(ct[2], "BRIT Systems, Inc."))
    assert not leaks(mine, theirs, NAME)
    assert same(mine, theirs)


def _name_element(kind: str, name: bytes) -> bytes:
    if kind == "group length PN":
        return raw(0x00180000, "PN", name)
    if kind == "overlay PN":
        return raw(0x60000010, "PN", name)
    item = raw(0x00100010, "PN", name)  # "group length SQ": a name in an item
    return raw(0x00180000, "SQ", struct.pack("<HHL", 0xFFFE, 0xE000, len(item)) + item)


# F2 (see the module docstring)
@pytest.mark.parametrize("kind", ["group length PN", "overlay PN", "group length SQ"])
def test_a_removed_by_tag_element_with_a_name_vr_feeds_the_record(ct: list[bytes], kind: str) -> None:
    def body(slice_: bytes, name: bytes) -> bytes:
        return insert(changed(slice_, lambda ds: setattr(ds, "ConvolutionKernel", NAME.decode())),
                      _name_element(kind, name))

    taught = [body(b, b"OTHERNAME") for b in ct[:2]]
    mine, theirs, _ = attack(taught, body(ct[2], NAME))
    assert not leaks(mine, theirs, NAME)
    assert same(mine, theirs)


# F2 (see the module docstring)
def test_a_group_length_with_a_date_vr_feeds_the_record(ct: list[bytes]) -> None:
    taught = [insert(b, raw(0x00200000, "DA", b"20000101")) for b in ct[:2]]
    body = insert(changed(ct[2], lambda ds: setattr(ds, "InstanceNumber", "19800304")),
                  raw(0x00200000, "DA", b"19800304"))
    mine, theirs, _ = attack(taught, body)
    assert not leaks(mine, theirs, b"19800304")
    assert same(mine, theirs)


def _hidden_in_undefined_item(tail: int, secret: bytes) -> bytes:
    """An item of undefined length holding one private OB element whose value holds a
    Sequence Delimitation Item, then a PatientName element with `secret`, then the header of
    an element that swallows what follows (`tail` bytes after the pixel data)."""
    swallow = struct.pack("<HH2s2xL", 0x7FE1, 0x1010, b"OB", len(ITEM_END) + len(FAKE_END) + tail)
    inner = bytes(16) + FAKE_END + raw(0x00100010, "PN", secret) + swallow
    hidden = struct.pack("<HH2s2xL", 0x0009, 0x1000, b"OB", len(inner)) + inner
    return b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + hidden + ITEM_END


# F3 (see the module docstring)
@pytest.mark.parametrize("taught", [1, 2], ids=["signature", "layout"])
def test_pixel_data_with_an_undefined_length_item_hides_a_name(ct: list[bytes], taught: int) -> None:
    split = split_part10(ct[2])
    assert split is not None
    pixels = next(e for e in split.elements if e.tag == 0x7FE00010)
    body = pixel_data_replaced(ct[2], _hidden_in_undefined_item(len(ct[2]) - pixels.end, b"Doe^John")
                               + FAKE_END)
    assert split_part10(body) is None  # fragments of undefined length: not read here
    assert str(read(body).PatientName) == "Doe^John"  # what pydicom makes of it
    mine, theirs, _ = attack(ct[:taught], body)
    assert not leaks(mine, theirs, b"Doe^John")
    assert same(mine, theirs)


# F3 (see the module docstring)
def test_encapsulated_pixel_data_with_an_undefined_length_item_hides_a_name(rle: list[bytes]) -> None:
    split = split_part10(rle[2])
    assert split is not None
    pixels = next(e for e in split.elements if e.tag == 0x7FE00010)
    fragments = rle[2][pixels.value_start:pixels.value_end]
    body = pixel_data_replaced(
        rle[2], fragments + _hidden_in_undefined_item(len(rle[2]) - pixels.end, b"Doe^John") + FAKE_END)
    mine, theirs, _ = attack(rle[:2], body)
    assert not leaks(mine, theirs, b"Doe^John")
    assert same(mine, theirs)


def _small_ct(instance: str, study: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = instance
    ds.Modality = "CT"
    ds.PatientName = "Anon^A"
    ds.PatientID = "PID12345"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = "1.2.3.4.5"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    ds.PixelData = bytes(128)
    return ds


# F4 (see the module docstring)
def test_implicit_file_whose_first_length_spells_a_vr(ct: list[bytes]) -> None:
    study = generate_uid()
    length = 0x4F4C  # b"LO"

    def body(secret: bytes | None) -> bytes:
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_dataset(fp, _small_ct("1.2.3.4.5.1", study))
        explicit = fp.getvalue()
        kernel = b"DOE^JOHN" if secret else b"KERNEL A"
        pixels = (secret or b"").ljust(2000, b"\0")
        tail = (struct.pack("<HHL", 0x0018, 0x1210, len(kernel)) + kernel
                + struct.pack("<HHL", 0x7FE0, 0x0010, len(pixels)) + pixels)
        swallow = struct.pack("<HH2s2xL", 0x7FE1, 0x1010, b"OB", length - len(explicit) - 12 + len(tail))
        region = (explicit + swallow).ljust(length, b"\0")
        return (file_start(ImplicitVRLittleEndian) + struct.pack("<HHL", 0x0008, 0x0000, length)
                + region + tail)

    taught, crafted = body(None), body(b"Doe^John 0101801234")
    assert split_part10(crafted) is None  # pydicom would switch to explicit VR: not read here
    assert str(read(crafted).PatientName) == "Anon^A"  # pydicom read it as explicit VR
    mine, theirs, _ = attack([taught], crafted)
    assert not leaks(mine, theirs, b"Doe^John")
    assert not leaks(mine, theirs, b"DOE^JOHN")
    assert same(mine, theirs)


# F5 (see the module docstring)
def test_a_defined_length_item_that_overruns_hides_top_level_elements() -> None:
    study = generate_uid()

    def body(secret: bytes) -> bytes:
        size = 64
        value = secret.ljust(size - 8, b"\0") + FAKE_END  # ends pydicom's sequence
        kept = 4  # bytes of the private element's value inside the item, as the memo sees it
        private = struct.pack("<HH2s2xL", 0x0009, 0x1001, b"OB", kept + 8 + 12 + size - 8) + bytes(kept)
        sequence = (struct.pack("<HH2s2xL", 0x0088, 0x0200, b"SQ", 0xFFFFFFFF)
                    + struct.pack("<HHL", 0xFFFE, 0xE000, len(private)) + private + FAKE_END)
        return (file_start(ExplicitVRLittleEndian)
                + element(0x00080016, "UI", CTImageStorage) + element(0x00080018, "UI", "1.2.3.4.5.1")
                + element(0x00080060, "CS", "CT") + element(0x00100010, "PN", "Hansen^Birgitte")
                + element(0x00100020, "LO", "PID12345") + element(0x0020000D, "UI", study)
                + element(0x0020000E, "UI", "1.2.3.4.5") + element(0x00280301, "CS", "NO")
                + sequence + struct.pack("<HH2s2xL", 0x7FE0, 0x0010, b"OB", size) + value)

    crafted = body(b"Doe^John 0101801234")
    assert "PixelData" not in read(crafted)  # for pydicom it is inside the item
    mine, theirs, _ = attack([body(b"")], crafted)
    assert not leaks(mine, theirs, b"Doe^John")
    assert same(mine, theirs)


# F6 (see the module docstring)
def test_refusal_of_an_object_without_instance_uid_from_another_study(ct: list[bytes]) -> None:
    body = changed(ct[2], lambda ds: delattr(ds, "SOPInstanceUID"))
    mine, theirs, _ = attack(ct[:2], body, asked="1.2.3.4")
    assert isinstance(theirs, Refused) and theirs.reason == "unreadable_object"
    assert same(mine, theirs)


# ---------------------------------------------------------------------------
# Attacks the memo survived


def _survives(mine: Fast | Refused, theirs: Fast | Refused, *secrets: bytes) -> None:
    assert same(mine, theirs)
    for secret in secrets:
        assert not leaks(mine, theirs, secret)


def test_the_same_object_twice(ct: list[bytes]) -> None:
    mine, theirs, hits = attack(ct[:2], ct[1])
    _survives(mine, theirs)
    assert hits == 1


def test_a_name_in_a_kept_text_is_cleaned_the_fast_way_too(ct: list[bytes]) -> None:
    family = str(read(ct[2]).PatientName).split("^")[0]
    body = changed(ct[2], lambda ds: setattr(ds, "ConvolutionKernel", family))
    mine, theirs, hits = attack(ct[:2], body)
    _survives(mine, theirs, family.encode())
    assert hits == 1


@pytest.mark.parametrize("charset", ["ISO_IR 100", "ISO_IR 192", "ISO IR 100", "ISO 2022 IR 87"])
def test_only_the_character_set_differs(ct: list[bytes], charset: str) -> None:
    def change(ds: pydicom.Dataset) -> None:
        ds.SpecificCharacterSet = charset
        ds.ConvolutionKernel = "KØGE"

    taught = [changed(b, lambda ds: setattr(ds, "ConvolutionKernel", "KØGE")) for b in ct[:2]]
    mine, theirs, _ = attack(taught, changed(ct[2], change))
    _survives(mine, theirs)


def test_only_a_sequence_differs(ct: list[bytes]) -> None:
    def change(ds: pydicom.Dataset) -> None:
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = generate_uid()
        item.PatientName = NAME.decode()
        ds.ReferencedImageSequence = [item]
        ds.ConvolutionKernel = NAME.decode()

    taught = [changed(b, lambda ds: setattr(ds, "ConvolutionKernel", NAME.decode())) for b in ct[:2]]
    mine, theirs, _ = attack(taught, changed(ct[2], change))
    _survives(mine, theirs, NAME)


def test_a_private_pn_or_un_is_context(ct: list[bytes]) -> None:
    taught = [changed(b, lambda ds: setattr(ds, "ConvolutionKernel", NAME.decode())) for b in ct[:2]]
    for vr, value in (("PN", NAME.decode()), ("UN", NAME)):
        def change(ds: pydicom.Dataset, vr=vr, value=value) -> None:
            ds.private_block(0x0029, "BRIT Systems, Inc.", create=True).add_new(0x02, vr, value)
            ds.ConvolutionKernel = NAME.decode()
        mine, theirs, _ = attack(taught, changed(ct[2], change))
        _survives(mine, theirs, NAME)


def test_a_private_element_with_a_plain_vr_changes(ct: list[bytes]) -> None:
    body = changed(ct[2], lambda ds: ds.private_block(0x0029, "MEMO", create=True).add_new(0x01, "LO", NAME.decode()))
    mine, theirs, _ = attack(ct[:2], body)
    _survives(mine, theirs, NAME)


def test_a_vr_that_is_not_the_dictionarys(ct: list[bytes]) -> None:
    body = insert(ct[2], raw(0x00201041, "LO", NAME))  # SliceLocation as LO
    mine, theirs, _ = attack(ct[:2], body)
    _survives(mine, theirs, NAME)


def test_odd_lengths_and_bad_numbers(ct: list[bytes]) -> None:
    for value in (b"1.5", b"abc", b"0304801234", NAME):
        body = insert(ct[2], raw(0x00201041, "DS", value, length=len(value)) + (b" " if len(value) % 2 else b""))
        mine, theirs, _ = attack(ct[:2], body)
        _survives(mine, theirs, NAME)


def test_a_number_holding_the_birth_date(ct: list[bytes]) -> None:
    birth = str(read(ct[2]).get("PatientBirthDate") or "")
    assert birth
    body = changed(ct[2], lambda ds: setattr(ds, "InstanceNumber", birth))
    mine, theirs, _ = attack(ct[:2], body)
    _survives(mine, theirs, birth.encode())


def test_duplicated_tags_and_trailing_bytes(ct: list[bytes]) -> None:
    split = split_part10(ct[2])
    assert split is not None
    number = next(e for e in split.elements if e.tag == 0x00200013)
    twice = ct[2][:number.end] + ct[2][number.start:number.end] + ct[2][number.end:]
    for body in (twice, ct[2] + b"\0\0\0", ct[2] + raw(0xFFFCFFFC, "OB", NAME), ct[2] + b"\0" * 8):
        mine, theirs, _ = attack(ct[:2], body)
        _survives(mine, theirs, NAME)


def test_a_shifted_boundary_in_a_varying_element(ct: list[bytes]) -> None:
    """InstanceNumber (varying in the layout) whose value holds the header and value of a
    PatientName element: both readers see one IS value."""
    split = split_part10(ct[2])
    assert split is not None
    number = next(e for e in split.elements if e.tag == 0x00200013)
    fake = raw(0x00100010, "PN", NAME)
    body = ct[2][:number.start] + raw(0x00200013, "IS", b"7 " + fake) + ct[2][number.end:]
    mine, theirs, _ = attack(ct[:2], body)
    _survives(mine, theirs, NAME)


def test_a_sequence_delimiter_inside_a_defined_length_fragment(rle: list[bytes]) -> None:
    split = split_part10(rle[2])
    assert split is not None
    pixels = next(e for e in split.elements if e.tag == 0x7FE00010)
    fragment = bytes(8) + FAKE_END + raw(0x00100010, "PN", b"Doe^John")
    value = (rle[2][pixels.value_start:pixels.value_end]
             + struct.pack("<HHL", 0xFFFE, 0xE000, len(fragment)) + fragment + FAKE_END)
    mine, theirs, hits = attack(rle[:2], pixel_data_replaced(rle[2], value))
    _survives(mine, theirs)
    assert hits == 1


def test_implicit_vr_series(ct: list[bytes]) -> None:
    taught = [changed(b, implicit=True) for b in ct[:2]]

    def odd_pixels(ds: pydicom.Dataset) -> None:
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelData = ds.PixelData[:-1]

    def private_name(ds: pydicom.Dataset) -> None:
        ds.private_block(0x0029, "BRIT Systems, Inc.", create=True).add_new(0x02, "PN", NAME.decode())
        ds.ConvolutionKernel = NAME.decode()

    for change in (None, odd_pixels, private_name):
        mine, theirs, _ = attack(taught, changed(ct[2], change, implicit=True))
        _survives(mine, theirs, NAME)


def test_the_meta_transfer_syntax_lies(ct: list[bytes]) -> None:
    implicit_meta = with_meta(ct[2], {0x00020010: raw(0x00020010, "UI", ImplicitVRLittleEndian.encode())})
    mine, theirs, _ = attack(ct[:2], implicit_meta)
    _survives(mine, theirs)
    implicit_data = changed(ct[2], implicit=True)
    explicit_meta = with_meta(implicit_data, {0x00020010: raw(0x00020010, "UI", ExplicitVRLittleEndian.encode())})
    mine, theirs, _ = attack([changed(b, implicit=True) for b in ct[:2]], explicit_meta)
    _survives(mine, theirs)


def test_odd_meta_groups(ct: list[bytes]) -> None:
    syntax = ExplicitVRLittleEndian.encode()
    bodies = [
        with_meta(ct[2], extra=raw(0x00020102, "SQ", b"\x01\x02\x03\x04" * 4)),  # junk sequence
        with_meta(ct[2], {0x00020010: raw(0x00020010, "UI", b" " + syntax)}),
        with_meta(ct[2], {0x00020010: raw(0x00020010, "UI", b"\0" + syntax)}),
        with_meta(ct[2], {0x00020002: raw(0x00020002, "UI", MediaStorageDirectoryStorage.encode())}),
        with_meta(ct[2], {0x00020003: raw(0x00020003, "UI", b"1.2.3.4")}),
        # a second TransferSyntaxUID (implicit) after the first
        with_meta(ct[2], extra=raw(0x00020010, "UI", ImplicitVRLittleEndian.encode())),
    ]
    for body in bodies:
        mine, theirs, _ = attack(ct[:2], body)
        _survives(mine, theirs)


def test_a_file_meta_element_inside_the_dataset(ct: list[bytes]) -> None:
    for element_ in (raw(0x00000000, "UL", struct.pack("<L", 4)), raw(0x00080000, "UL", struct.pack("<L", 4))):
        mine, theirs, _ = attack(ct[:2], insert(ct[2], element_))
        _survives(mine, theirs)


def test_what_the_ordinary_way_refuses_is_refused(ct: list[bytes]) -> None:
    def dicomdir_records(ds: pydicom.Dataset) -> None:
        ds.DirectoryRecordSequence = [Dataset()]

    changes = [
        lambda ds: setattr(ds, "BurnedInAnnotation", "YES"),
        lambda ds: setattr(ds, "RecognizableVisualFeatures", "YES"),
        lambda ds: setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "LABEL"]),
        lambda ds: setattr(ds, "SOPClassUID", MediaStorageDirectoryStorage),
        dicomdir_records,
        lambda ds: delattr(ds, "SOPClassUID"),
    ]
    for change in changes:
        mine, theirs, _ = attack(ct[:2], changed(ct[2], change), policy=STRICT)
        assert isinstance(theirs, Refused)
        _survives(mine, theirs)


def test_another_study_key_policy_or_scope(ct: list[bytes]) -> None:
    mine, theirs, hits = attack(ct[:2], ct[2], asked="1.2.3.4")
    _survives(mine, theirs)
    assert isinstance(mine, Refused) and mine.reason == "unexpected_object"
    mine, theirs, hits = attack(ct[:2], ct[2], keys=ProjectKeys(b"o" * 32, "memo"))
    _survives(mine, theirs)
    assert hits == 0
    mine, theirs, hits = attack(ct[:2], ct[2], keys=ProjectKeys(b"m" * 32, "other project"))
    _survives(mine, theirs)
    assert hits == 0
    mine, theirs, hits = attack(ct[:2], ct[2], scope="another pull")
    _survives(mine, theirs)
    assert hits == 0
    for policy in (DeidPolicy(allow_burned_in_annotation=True, retain_patient_characteristics=False),
                   DeidPolicy(allow_burned_in_annotation=True, keep_descriptors=frozenset())):
        memo = SeriesMemo()
        study = study_of(ct[0])
        for body in ct[:2]:
            deidentified(body, "application/dicom", study, KEYS, POLICY, memo)
        mine = deidentified(ct[2], "application/dicom", study, KEYS, policy, memo)
        theirs = deidentified(ct[2], "application/dicom", study, KEYS, policy, SeriesMemo())
        assert memo.hits == 1  # the second object only
        _survives(mine, theirs)


def test_a_series_from_two_studies_interleaved(ct: list[bytes]) -> None:
    """The layout of one study's series tried on an object of another study in the same pull."""
    other_study = generate_uid()
    others = [changed(b, lambda ds: setattr(ds, "StudyInstanceUID", other_study)) for b in ct[:3]]
    study = study_of(ct[0])
    memo = SeriesMemo()
    for body in (ct[0], ct[1], others[0], others[1]):
        deidentified(body, "application/dicom", study_of(body), KEYS, POLICY, memo)
    for body, asked in ((ct[2], other_study), (others[2], study), (others[2], other_study), (ct[2], study)):
        mine = deidentified(body, "application/dicom", asked, KEYS, POLICY, memo)
        theirs = deidentified(body, "application/dicom", asked, KEYS, POLICY, SeriesMemo())
        _survives(mine, theirs)


# ---------------------------------------------------------------------------
# Second review: findings (G1-G7), each failed before its fix (in series_memo.py: SV and UV
# with 32-bit lengths; FFFE tags never read as elements; command elements and pydicom's VR test
# on the layout path too; the meta group compared whole but for the instance UID; the
# transfer syntax a UI of digits and dots; kept row elements written as read)
#
# G1: SV and UV have a 32-bit length after two reserved bytes (PS3.5 Table 7.1-1, pydicom's
#     EXPLICIT_VR_LENGTH_32); split_part10 reads a 16-bit length (_SHORT_VRS).
# G2: an Item Delimitation Item inside a defined length item ends the item for pydicom
#     (data_element_generator returns on it, whatever its length); split_part10 reads it as
#     an element of the item with a value (_elements_end).
# G3: pydicom reads group 0000 elements first and applies its implicit/explicit VR test to
#     the element after them; split_part10 tests the first element only.
# G4: _by_layout never applies that test: a varying first element may spell a VR.
# G5: the transfer syntax is taken from the value's bytes, whatever the VR, stripped of
#     NULs on both ends; pydicom and the ordinary way read it otherwise.
# G6: the file meta group is not part of the signature nor compared in the layout; pydicom
#     converts its first element (and the group length) and fails on a bad one.
# G7: a kept manifest row element (InstanceNumber, NumberOfFrames ...) is written converted,
#     not as read: " 7" becomes "7 ".


def _long_for_pydicom(tag: int, vr: str, hidden: bytes) -> bytes:
    """An element with a 64-bit VR (SV, UV): the memo reads bytes 6-7 as a 16-bit length that
    covers `hidden`; pydicom reads them as reserved, then a 32-bit length of 0, then
    `hidden` as elements of their own."""
    value = struct.pack("<L", 0) + hidden
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value


# G1 (see above)
@pytest.mark.parametrize("vr", ["SV", "UV"])
@pytest.mark.parametrize("taught", [1, 2], ids=["signature", "layout"])
def test_a_64_bit_vr_read_with_a_short_length_hides_a_name(ct: list[bytes], vr: str, taught: int) -> None:
    def body(slice_: bytes, hidden: bytes) -> bytes:
        kernel = changed(slice_, lambda ds: setattr(ds, "ConvolutionKernel", "DOE JOHN"))
        return insert(kernel, _long_for_pydicom(0x00091001, vr, hidden))

    crafted = body(ct[2], raw(0x00101001, "PN", b"Doe^John"))  # OtherPatientNames for pydicom
    assert str(read(crafted).OtherPatientNames) == "Doe^John"
    mine, theirs, hits = attack([body(b, raw(0x00091002, "OB", bytes(8))) for b in ct[:taught]], crafted)
    assert hits == 0  # the memo declines: the ordinary way decides
    assert not leaks(mine, theirs, b"DOE JOHN")  # the ordinary way cleans it: a name of the record
    assert same(mine, theirs)


# G1 (see above)
@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.2"], ids=["RLE", "big endian"])
def test_a_64_bit_vr_in_the_file_meta_hides_the_transfer_syntax(ct: list[bytes], syntax: str) -> None:
    body = with_meta(ct[2], extra=_long_for_pydicom(0x00020012, "SV", raw(0x00020010, "UI", syntax.encode())))
    assert read(body).file_meta.TransferSyntaxUID == syntax
    assert split_part10(body) is None  # now read as pydicom reads it: not understood here
    mine, theirs, _ = attack(ct[:2], body)
    assert same(mine, theirs)


def _private_sequence(hidden: bytes) -> bytes:
    """A private SQ (independent) of undefined length with one defined length item holding an
    Item Delimitation Item of explicit VR OB whose value is a Sequence Delimitation Item,
    `hidden`, and the header of a private element swallowing the memo's own delimiter."""
    value = FAKE_END + hidden + struct.pack("<HH2s2xL", 0x0009, 0x10FF, b"OB", len(FAKE_END))
    item = struct.pack("<HH2s2xL", 0xFFFE, 0xE00D, b"OB", len(value)) + value
    return (struct.pack("<HH2s2xL", 0x0009, 0x1010, b"SQ", 0xFFFFFFFF)
            + struct.pack("<HHL", 0xFFFE, 0xE000, len(item)) + item + FAKE_END)


# G2 (see above)
@pytest.mark.parametrize("taught", [1, 2], ids=["signature", "layout"])
def test_an_item_delimiter_inside_a_defined_length_item_hides_a_name(ct: list[bytes], taught: int) -> None:
    def body(slice_: bytes, hidden: bytes) -> bytes:
        return insert(changed(slice_, lambda ds: setattr(ds, "ConvolutionKernel", "DOE JOHN")),
                      _private_sequence(hidden))

    crafted = body(ct[2], raw(0x00101001, "PN", b"Doe^John"))
    assert split_part10(crafted) is None  # an item delimiter as an element: not read here
    assert str(read(crafted).OtherPatientNames) == "Doe^John"  # a top-level element for pydicom
    mine, theirs, hits = attack([body(b, raw(0x00091002, "OB", bytes(8))) for b in ct[:taught]], crafted)
    assert hits == 0  # the memo declines: the ordinary way decides
    assert not leaks(mine, theirs, b"DOE JOHN")
    assert same(mine, theirs)


def _implicit_spelling_lo(secret: bytes | None, study: str, command_set: bytes = b"") -> bytes:
    """F4's object (an implicit VR file whose first length spells LO), after `command_set`."""
    length = 0x4F4C  # b"LO"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, _small_ct("1.2.3.4.5.1", study))
    explicit = fp.getvalue()
    kernel = b"DOE^JOHN" if secret else b"KERNEL A"
    pixels = (secret or b"").ljust(2000, b"\0")
    tail = (struct.pack("<HHL", 0x0018, 0x1210, len(kernel)) + kernel
            + struct.pack("<HHL", 0x7FE0, 0x0010, len(pixels)) + pixels)
    swallow = struct.pack("<HH2s2xL", 0x7FE1, 0x1010, b"OB", length - len(explicit) - 12 + len(tail))
    region = (explicit + swallow).ljust(length, b"\0")
    return (file_start(ImplicitVRLittleEndian) + command_set + struct.pack("<HHL", 0x0008, 0x0000, length)
            + region + tail)


# G3 (see above)
def test_a_command_set_element_before_an_implicit_file_whose_first_length_spells_a_vr() -> None:
    study = generate_uid()
    command = struct.pack("<HHLL", 0x0000, 0x0000, 4, 0)  # (0000,0000), implicit VR
    taught = _implicit_spelling_lo(None, study, command)
    crafted = _implicit_spelling_lo(b"Doe^John 0101801234", study, command)
    assert split_part10(crafted) is None  # command elements: not read here
    assert str(read(crafted).PatientName) == "Anon^A"  # pydicom as explicit VR
    mine, theirs, _ = attack([taught], crafted)
    assert not leaks(mine, theirs, b"Doe^John")
    assert not leaks(mine, theirs, b"DOE^JOHN")
    assert same(mine, theirs)


# G4 (see above)
def test_a_varying_first_element_whose_length_spells_a_vr() -> None:
    study = generate_uid()

    def implicit_rest(kernel: str, pixels: bytes) -> bytes:
        ds = _small_ct("1.2.3.4.5.1", study)
        ds.ConvolutionKernel = kernel
        ds.PixelData = pixels
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, True
        write_dataset(fp, ds)
        return fp.getvalue()

    def taught(n: int) -> bytes:  # (0008,0000), the kernel and the pixels vary
        return (file_start(ImplicitVRLittleEndian) + struct.pack("<HHLL", 0x0008, 0x0000, 4, n)
                + implicit_rest(f"KERNEL {n}", bytes([n]) * 128))

    secret = b"Doe^John 0101801234"
    rest = implicit_rest("DOE^JOHN", secret.ljust(128, b"\0"))  # what the memo reads after the region
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, _small_ct("1.2.3.4.5.1", study))
    explicit = fp.getvalue()
    length = 0x4F4C  # b"LO": pydicom reads explicit VR, and swallows the rest
    swallow = struct.pack("<HH2s2xL", 0x7FE1, 0x1010, b"OB", length - len(explicit) - 12 + len(rest))
    crafted = (file_start(ImplicitVRLittleEndian) + struct.pack("<HHL", 0x0008, 0x0000, length)
               + (explicit + swallow).ljust(length, b"\0") + rest)
    assert split_part10(crafted) is None  # split_part10 applies the test; _by_layout does not
    assert "ConvolutionKernel" not in read(crafted)
    mine, theirs, hits = attack([taught(0), taught(1)], crafted)
    assert hits == 0  # the memo declines: the ordinary way decides
    assert not leaks(mine, theirs, b"DOE^JOHN")
    assert not leaks(mine, theirs, b"Doe^John")
    assert same(mine, theirs)


# G5 (see above)
@pytest.mark.parametrize("element", [
    raw(0x00020010, "UI", b"\0" + pydicom.uid.RLELossless.encode()),  # the ordinary way keeps the NUL
    raw(0x00020010, "OB", pydicom.uid.RLELossless.encode()),  # bytes for pydicom: no syntax
    raw(0x00020010, "FD", pydicom.uid.RLELossless.encode() + b"\0"),  # not a whole number of FD
], ids=["leading NUL", "OB", "FD"])
def test_a_transfer_syntax_read_otherwise(rle: list[bytes], element: bytes) -> None:
    body = with_meta(rle[2], {0x00020010: element})
    assert split_part10(body) is None  # not a UI of digits and dots: not read here
    mine, theirs, hits = attack(rle[:2], body)
    assert hits == 0  # the memo declines: the ordinary way decides
    assert same(mine, theirs)  # the ordinary way writes Explicit VR Little Endian, or refuses


# G6 (see above)
@pytest.mark.parametrize("taught", [1, 2], ids=["signature", "layout"])
def test_a_file_meta_group_length_pydicom_cannot_convert(ct: list[bytes], taught: int) -> None:
    split = split_part10(ct[2])
    assert split is not None
    group_length = raw(0x00020000, "UL", b"\0\0")  # two bytes: not a whole UL
    body = ct[2][:132] + group_length + ct[2][132 + 12:]
    mine, theirs, _hits = attack(ct[:taught], body)
    assert isinstance(theirs, Refused) and theirs.reason == "unreadable_object"
    assert same(mine, theirs)


# G7 (see above)
@pytest.mark.parametrize("tag, value", [(0x00200013, b" 7"), (0x00280008, b" 2")],
                         ids=["InstanceNumber", "NumberOfFrames"])
def test_a_kept_row_element_is_written_as_read(ct: list[bytes], tag: int, value: bytes) -> None:
    taught = [insert(b, raw(0x00280008, "IS", b"1 ")) for b in ct[:2]]
    body = insert(insert(ct[2], raw(0x00280008, "IS", b"1 ")), raw(tag, "IS", value))
    mine, theirs, hits = attack(taught, body)
    assert hits == 1
    assert isinstance(theirs, Fast) and raw(tag, "IS", value) in theirs.data
    assert same(mine, theirs)


# ---------------------------------------------------------------------------
# Second review: attacks the memo survived


def _both_ways(taught: list[bytes], body: bytes, *secrets: bytes) -> None:
    """`body` after one and after two taught objects (the signature way, the layout way)."""
    for n in (1, 2):
        mine, theirs, _ = attack(taught[:n], body)
        _survives(mine, theirs, *secrets)


def _undefined(tag: int, vr: str, items: bytes) -> bytes:
    return struct.pack("<HH2s2xL", tag >> 16, tag & 0xFFFF, vr.encode(), 0xFFFFFFFF) + items + FAKE_END


def _item(content: bytes, *, defined: bool = True) -> bytes:
    if defined:
        return struct.pack("<HHL", 0xFFFE, 0xE000, len(content)) + content
    return struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + content + ITEM_END


def test_sequences_split_part10_must_not_read(ct: list[bytes]) -> None:
    """Implicit VR items in an explicit dataset (pydicom switches), delimiters with a length,
    nested sequences of both kinds of length, nesting deeper than the memo reads."""
    kept = raw(0x00091011, "OB", bytes(8))
    taught = [insert(b, _undefined(0x00091010, "SQ", _item(kept))) for b in ct[:2]]
    implicit_item = _item(struct.pack("<HHL", 0x0010, 0x1001, len(NAME)) + NAME)
    inner = _undefined(0x00091020, "SQ", _item(kept))

    def deep(levels: int) -> bytes:
        value = kept
        for _ in range(levels):
            value = _undefined(0x00091010, "SQ", _item(value, defined=False))
        return value

    bodies = [
        _undefined(0x00091010, "UN", implicit_item),
        _undefined(0x00091010, "SQ", implicit_item),
        _undefined(0x00091010, "SQ", _item(kept))[:-8] + b"\xfe\xff\xdd\xe0\x04\x00\x00\x00" + bytes(4),
        _undefined(0x00091010, "SQ", _item(kept)[:8] + kept + b"\xfe\xff\x0d\xe0\x08\x00\x00\x00" + bytes(8)),
        _undefined(0x00091010, "SQ", _item(inner, defined=False) + _item(inner)),
        deep(15), deep(17), deep(300),
    ]
    for body in bodies:
        _both_ways(taught, insert(ct[2], body), NAME)


def test_fragments_split_part10_must_not_read(rle: list[bytes]) -> None:
    split = split_part10(rle[2])
    assert split is not None
    pixels = next(e for e in split.elements if e.tag == 0x7FE00010)
    fragments = rle[2][pixels.value_start:pixels.value_end]
    for tag in (b"\xfe\xff\x0d\xe0", b"\xfe\xff\x00\xe1", b"\xfe\xff\xdd\xe0"):
        other = tag + struct.pack("<L", 8) + bytes(8)
        _both_ways(rle[:2], pixel_data_replaced(rle[2], fragments + other + FAKE_END))
    _both_ways(rle[:2], pixel_data_replaced(rle[2], fragments + b"\xfe\xff\xdd\xe0\x02\x00\x00\x00" + bytes(2)))


def test_sop_instance_uids_in_the_hand_built_file_meta(ct: list[bytes]) -> None:
    values = (b"1.2.3.4.5\0", b"1.2.3.4.5 \0", b"1.2.3.4.56", b" 1.2.3", b"\x001.2.3", b"1.2.3\0\x004",
              b"1." + b"1" * 70, b"1.2.840.10008.1.2", b"1.2.3\\1.2.4", b"abc")
    for value in values:
        _both_ways(ct[:2], insert(ct[2], raw(0x00080018, "UI", value)))


def test_ambiguous_vrs_read_explicitly(ct: list[bytes]) -> None:
    taught = [insert(b, raw(0x00280106, "US", b"\0\0")) for b in ct[:2]]  # SmallestImagePixelValue
    for vr, value in (("US", b"\x01\x80"), ("SS", b"\x01\x80"), ("OW", b"\x01\x80"), ("US", b"\1\0\2\0")):
        _both_ways(taught, insert(ct[2], raw(0x00280106, vr, value)))
    split = split_part10(ct[2])
    assert split is not None
    pixels = next(e for e in split.elements if e.tag == 0x7FE00010)
    header = struct.pack("<HH2s2xL", 0x7FE0, 0x0010, b"OB", pixels.value_end - pixels.value_start)
    _both_ways(ct[:2], ct[2][:pixels.start] + header + ct[2][pixels.value_start:])


def test_implicit_pixel_data_with_other_bits_allocated(ct: list[bytes]) -> None:
    taught = [changed(b, implicit=True) for b in ct[:2]]

    def bits8(ds: pydicom.Dataset, odd: bool = False) -> None:
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        if odd:
            ds.PixelData = b"A" * 4097

    def printable(ds: pydicom.Dataset) -> None:  # kept as read by the ordinary way
        ds.PixelData = b"A" * len(ds.PixelData)

    for change in (bits8, lambda ds: bits8(ds, odd=True), printable):
        _both_ways(taught, changed(ct[2], change, implicit=True))


def test_rows_columns_and_frames_change(ct: list[bytes]) -> None:
    def size(ds: pydicom.Dataset) -> None:
        ds.Rows, ds.Columns = 16, 1024
        ds.PixelData = bytes(16 * 1024 * 2)

    _both_ways(ct[:2], changed(ct[2], size))
    taught = [changed(b, lambda ds: setattr(ds, "NumberOfFrames", 1)) for b in ct[:2]]
    _both_ways(taught, changed(ct[2], lambda ds: setattr(ds, "NumberOfFrames", 2)))
    for value in (b"7 ", b"+7", b"07", b"7\\8", b"1e2", b"", b"1.0 ", b"\xb77"):
        _both_ways(ct[:2], insert(ct[2], raw(0x00200013, "IS", value)))
    for value in (b"\x08\x00\x08\x00", b"\x08", b"", b"\xff\xff"):
        _both_ways(ct[:2], insert(ct[2], raw(0x00280010, "US", value, length=len(value)) + b"\0" * (len(value) % 2)))


def test_only_the_transfer_syntax_differs(ct: list[bytes], rle: list[bytes]) -> None:
    for syntax in (pydicom.uid.JPEGBaseline8Bit, pydicom.uid.RLELossless, ImplicitVRLittleEndian):
        _both_ways(ct[:2], with_meta(ct[2], {0x00020010: raw(0x00020010, "UI", syntax.encode())}))
    _both_ways(rle[:2], with_meta(rle[2], {0x00020010: raw(0x00020010, "UI", ExplicitVRLittleEndian.encode())}))
    for value in (b" " + pydicom.uid.RLELossless.encode(), pydicom.uid.RLELossless.encode() + b"\t",
                  pydicom.uid.RLELossless.encode() + b"\0 "):
        _both_ways(rle[:2], with_meta(rle[2], {0x00020010: raw(0x00020010, "UI", value)}))
    for vr in ("LO", "UN"):
        _both_ways(rle[:2], with_meta(rle[2], {0x00020010: raw(0x00020010, vr, pydicom.uid.RLELossless.encode())}))


def test_an_invalid_character_set_in_every_object(ct: list[bytes]) -> None:
    for charset in ("ISO_IR 999", "", "ISO_IR 100\\ISO_IR 999", "ISO 2022 IR 6\\ISO 2022 IR 87", "GB18030"):
        def change(ds: pydicom.Dataset, kernel: str = "KØGE", charset: str = charset) -> None:
            ds.SpecificCharacterSet = charset
            ds.ConvolutionKernel = kernel

        taught = [changed(b, change) for b in ct[:2]]
        _both_ways(taught, changed(ct[2], lambda ds, change=change: change(ds, "Hansen^Birgitte")), b"Hansen")


def test_more_odd_meta_groups(ct: list[bytes]) -> None:
    start = 132 + 12  # after the group length
    bodies = [
        ct[2][:132] + raw(0x00020000, "UL", struct.pack("<L", 7)) + ct[2][start:],  # lying
        ct[2][:132] + ct[2][start:],  # no group length
        ct[2][:132] + raw(0x00020000, "OB", bytes(3)) + ct[2][start:],
        with_meta(ct[2], extra=raw(0x00020100, "UI", b"1.2.3.4")),  # after a gap
        with_meta(ct[2], extra=raw(0x00020FFF, "LO", NAME)),
        # the meta group in implicit VR: pydicom reads it so, split_part10 does not
        ct[2][:132] + struct.pack("<HHLL", 0x0002, 0x0000, 4, 0) + ct[2][start:],
    ]
    for body in bodies:
        _both_ways(ct[:2], body, NAME)
