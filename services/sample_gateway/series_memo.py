"""De-identifying the objects of a series by reusing what the first one taught.

The objects of one series share almost every element: the patient, the study, the
equipment, the technique. Only a few differ from slice to slice (the instance UID and
number, the position, the times, the pixels). :func:`.deidentify.deidentify` costs a few
milliseconds per object in Python, most of it deciding again what the previous object
already decided; this module makes a pull of a 50-slice series cost about one full
de-identification and 49 small ones.

How, and why the output is the same, byte for byte, as :func:`.deidentify.deidentify`
followed by :func:`.encoding.part10_bytes` (``tests/test_gateway_series_memo.py`` checks it
on the demo archive, the offline corpus and objects changed one element at a time):

1. :func:`split_part10` finds the top-level elements of a Part 10 file in its bytes,
   without decoding any value. Anything it does not fully understand (big endian, deflate,
   a VR it does not know, an element running past the end, tags out of order) gives None,
   and the object takes the ordinary way.
2. Each element is **independent** (:func:`independent`) when what the rules make of it
   depends on nothing but the element and the record: a public attribute of the
   dictionary with a plain VR, read as the dictionary says, that is none of the
   attributes the record is made of (names, IDs, dates, the character set, the burned-in
   annotation signs, codes ...: :data:`CONTEXT_TAGS`, every PN, DA, DT, SQ and UN), or a
   private element whose explicit VR is neither PN nor UN (removed unread). Every other
   element is a **context** element.
3. The bytes of all context elements, with the transfer syntax, are the object's
   **signature**. Two objects with the same signature have the same record, so
   :class:`.deidentify.ElementRules` learnt on one applies to the other's independent
   elements. An object whose signature has not been seen goes the ordinary way; what
   that produced is cut into one piece per element and learnt: the context elements'
   output (with what de-identification adds: PatientIdentityRemoved, the method ...) for
   the signature, each independent element's output for its bytes. The pieces must add
   up to the file exactly, or nothing is learnt.
4. A later object with that signature is its independent elements, each looked up by its
   bytes or put through the rules once, merged with the context output in tag order, after
   a new file meta group (its SOP Instance UID is the only meta value that differs).

What is kept: per worker (thread or process), the rules and first objects of the last
:data:`MAX_SIGNATURES` signatures (objects of at most :data:`MAX_LEARNT_BYTES`) and up to
:data:`MAX_ELEMENTS` short elements each, keyed on the pull, the project's key and policy:
what one pull taught never serves another. What a first object teaches is worked out when
a second one of its signature arrives. Nothing is logged.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import correct_ambiguous_vr_element
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import AMBIGUOUS_VR, EXPLICIT_VR_LENGTH_16, EXPLICIT_VR_LENGTH_32

from .deidentify import (
    _CODE_KEYWORDS,
    _DEID_SUPPLEMENT,
    _TERM_TAGS_WHOLE,
    _TERM_TAGS_WORDS,
    DeidResult,
    ElementRules,
)
from .delivery import ROW_KEYWORDS, ManifestRow, instance_file_name, manifest_row
from .encoding import completed_meta, element_bytes, file_start, plain_encoding
from .pseudonyms import ProjectKeys

__all__ = [
    "CONTEXT_TAGS",
    "MAX_ELEMENTS",
    "MAX_LEARNT_BYTES",
    "MAX_SIGNATURES",
    "OTHER_STUDY",
    "Fast",
    "SeriesMemo",
    "Split",
    "independent",
    "memo_for_this_thread",
    "split_part10",
]

UNDEFINED = 0xFFFFFFFF
#: What :meth:`SeriesMemo.deidentify` answers for an object of another study than asked for.
OTHER_STUDY = "other study"
_PIXEL_DATA = 0x7FE00010
_SOP_INSTANCE_UID = 0x00080018
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD

#: Explicit VRs with a 32-bit length after two reserved bytes, and with a 16-bit one (PS3.5
#: Table 7.1-1, as pydicom reads them).
_LONG_VRS = frozenset(str(vr).encode() for vr in EXPLICIT_VR_LENGTH_32)
_SHORT_VRS = frozenset(str(vr).encode() for vr in EXPLICIT_VR_LENGTH_16)
#: VRs whose elements can be independent: no SQ (items hold anything), no PN, DA or DT
#: (the record's names and dates), no UN (could be anything).
_PLAIN_VRS = frozenset(v.decode() for v in _LONG_VRS | _SHORT_VRS) - {"SQ", "PN", "DA", "DT", "UN"}

_EXPLICIT_SHORT = struct.Struct("<HH2sH")
_EXPLICIT_LONG = struct.Struct("<HH2s2xL")
_IMPLICIT = struct.Struct("<HHL")


def _tags(*keywords: str) -> frozenset[int]:
    from pydicom.datadict import tag_for_keyword

    return frozenset(int(tag_for_keyword(k)) for k in keywords)


#: Attributes the record is made of, or that decide something for the whole object: always
#: context, whatever their VR. (PN, DA, DT, SQ and UN elements are context by their VR.)
CONTEXT_TAGS = frozenset(
    _tags(
        "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID",
        "PatientBirthDate", "PatientAge", "AccessionNumber", "StudyInstanceUID",
        "SeriesInstanceUID", "SOPClassUID", "Modality", "ImageType", "BurnedInAnnotation",
        "RecognizableVisualFeatures", "StudyDescription", "SeriesDescription", "SeriesNumber",
        "CodingSchemeDesignator", *_CODE_KEYWORDS,
    )
    | _DEID_SUPPLEMENT | _TERM_TAGS_WHOLE | _TERM_TAGS_WORDS
)

#: Independent elements up to this size are remembered by their bytes (per signature).
MAX_REMEMBERED_BYTES = 1024
#: At most this many remembered elements per signature, and this many signatures, each
#: learnt from an object of at most MAX_LEARNT_BYTES (kept for comparison): a worker's memo
#: holds at most MAX_SIGNATURES * MAX_LEARNT_BYTES of objects.
MAX_ELEMENTS = 8192
MAX_SIGNATURES = 8
MAX_LEARNT_BYTES = 8 * 1024 * 1024


# ---------------------------------------------------------------------------
# Splitting a Part 10 file into its top-level elements


@dataclass(frozen=True, slots=True)
class Element:
    """One top-level element where it lies in the file: ``data[start:end]`` is all of it,
    ``data[value_start:value_end]`` its value (without the delimiter of an undefined length)."""

    tag: int
    vr: str | None  # as read; None in implicit VR
    length: int  # as read (UNDEFINED for an undefined length)
    start: int
    value_start: int
    value_end: int
    end: int


@dataclass(frozen=True)
class Split:
    data: bytes
    syntax: str
    implicit: bool
    compressed: bool
    elements: tuple[Element, ...]
    meta: bytes  # the file meta group as compared (see _read_meta)


def split_part10(data: bytes) -> Split | None:
    """The top-level elements of a Part 10 file (preamble, ``DICM``, explicit VR little endian
    file meta), or None for anything this reader does not fully understand."""
    meta = _read_meta(data)
    if meta is None:
        return None
    pos, syntax, meta_bytes = meta
    end = len(data)
    uid = UID(syntax)
    encoding = plain_encoding(uid)
    if encoding is None:
        return None
    implicit = encoding[0]
    if not _dataset_starts_as(data, pos, implicit):
        return None
    elements = []
    previous = -1
    while pos < end:
        element = _read(data, pos, end, implicit, 0)
        if element is None or element.tag <= previous or element.tag >> 16 == 0xFFFE:
            return None
        elements.append(element)
        previous, pos = element.tag, element.end
    return Split(data, syntax, implicit, uid.is_compressed, tuple(elements), meta_bytes)


_TRANSFER_SYNTAX = re.compile(rb"[0-9][0-9.]*\x00?")


def _read_meta(data: bytes) -> tuple[int, str, bytes] | None:
    """(where the dataset starts, the transfer syntax, the meta group as compared) of a Part 10
    file: its elements as read, but the group length's value and MediaStorageSOPInstanceUID's
    value and length (which differ from object to object; the output's meta is made anew).
    None unless the group length is a UL of 4 bytes, the instance UID a UI and the transfer
    syntax a UI of digits and dots (anything else the ordinary way decides)."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    pos, end, syntax = 132, len(data), None
    compared = []
    while pos + 8 <= end and data[pos] == 0x02 and data[pos + 1] == 0x00:
        element = _explicit(data, pos, end)
        if element is None or element.length == UNDEFINED:
            return None
        if element.tag == 0x00020000:
            if element.vr != "UL" or element.length != 4:
                return None
            compared.append(data[element.start:element.value_start])
        elif element.tag == _META_INSTANCE:
            if element.vr != "UI":
                return None
            compared.append(data[element.start:element.start + 6])
        else:
            if element.tag == 0x00020010:
                value = data[element.value_start:element.value_end]
                if element.vr != "UI" or syntax is not None or not _TRANSFER_SYNTAX.fullmatch(value):
                    return None
                syntax = value.rstrip(b"\x00").decode("ascii")
            compared.append(data[element.start:element.end])
        pos = element.end
    if syntax is None:
        return None
    return pos, syntax, b"".join(compared)


def _dataset_starts_as(data: bytes, pos: int, implicit: bool) -> bool:
    """Whether pydicom reads the dataset from `pos` with the VR encoding `implicit` (its test of
    the first element), and it holds no command elements (group 0000, read before that test)."""
    if pos + 6 > len(data):
        return pos == len(data)
    if data[pos] == 0 and data[pos + 1] == 0:
        return False
    return _looks_implicit(data, pos) == implicit


def _looks_implicit(data: bytes, pos: int) -> bool:
    """pydicom's test of a dataset's first element: implicit VR unless its bytes 4-5 are
    two capital letters."""
    return not (0x40 < data[pos + 4] < 0x5B and 0x40 < data[pos + 5] < 0x5B)


_MAX_DEPTH = 16


def _read(data: bytes, pos: int, end: int, implicit: bool, depth: int) -> Element | None:
    """One element of a dataset or an item; None for an item or delimiter tag (FFFE,xxxx),
    which pydicom reads as the end of an item whatever its length says."""
    if pos + 4 <= end and data[pos] == 0xFE and data[pos + 1] == 0xFF:
        return None
    return _implicit(data, pos, end, depth) if implicit else _explicit(data, pos, end, depth)


def _explicit(data: bytes, pos: int, end: int, depth: int = 0) -> Element | None:
    if pos + 8 > end:
        return None
    group, number, vr, length = _EXPLICIT_SHORT.unpack_from(data, pos)
    tag = group << 16 | number
    if vr in _SHORT_VRS:
        value_start = pos + 8
    elif vr in _LONG_VRS:
        if pos + 12 > end:
            return None
        length = _EXPLICIT_LONG.unpack_from(data, pos)[3]
        value_start = pos + 12
    else:
        return None
    return _element(data, tag, vr.decode(), length, pos, value_start, end, False, depth)


def _implicit(data: bytes, pos: int, end: int, depth: int = 0) -> Element | None:
    if pos + 8 > end:
        return None
    group, number, length = _IMPLICIT.unpack_from(data, pos)
    return _element(data, group << 16 | number, None, length, pos, pos + 8, end, True, depth)


def _element(data: bytes, tag: int, vr: str | None, length: int, start: int, value_start: int,
             end: int, implicit: bool, depth: int) -> Element | None:
    if length != UNDEFINED:
        value_end = value_start + length
        if value_end > end:
            return None
        return Element(tag, vr, length, start, value_start, value_end, value_end)
    if depth >= _MAX_DEPTH:
        return None
    sequence = _is_sequence(data, tag, vr, value_start, end)
    after = _after_items(data, value_start, end, implicit, depth + 1, sequence=sequence)
    if after is None:
        return None
    return Element(tag, vr, length, start, value_start, after - 8, after)


def _is_sequence(data: bytes, tag: int, vr: str | None, value_start: int, end: int) -> bool:
    """Whether pydicom reads an undefined length value as a sequence (else as encapsulated
    fragments): an SQ, a UN (PS3.5 6.2.2), or in implicit VR an SQ of the dictionary, or an
    attribute it does not know whose value starts with an item."""
    if vr is not None:
        return vr in ("SQ", "UN")
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return value_start + 4 <= end and data[value_start:value_start + 4] == b"\xfe\xff\x00\xe0"


def _after_items(data: bytes, pos: int, end: int, implicit: bool, depth: int, *,
                 sequence: bool) -> int | None:
    """Where the items of an undefined length value end: just after their Sequence
    Delimitation Item. A sequence's items are read element by element (each must end exactly
    where its item does); encapsulated fragments only by their lengths, which must be defined
    (else pydicom falls back to scanning for the delimiter, and so does nothing here)."""
    while pos + 8 <= end:
        group, number, length = _IMPLICIT.unpack_from(data, pos)
        tag = group << 16 | number
        pos += 8
        if tag == _SEQUENCE_END:
            return pos if length == 0 else None
        if tag != _ITEM:
            return None
        if length == UNDEFINED:
            if not sequence:
                return None
            found = _after_item_elements(data, pos, end, implicit, depth)
            if found is None:
                return None
            pos = found
        else:
            item_end = pos + length
            if item_end > end:
                return None
            if sequence and _elements_end(data, pos, item_end, implicit, depth) != item_end:
                return None
            pos = item_end
    return None


def _elements_end(data: bytes, pos: int, end: int, implicit: bool, depth: int) -> int | None:
    """The end of the last of the elements from `pos`, read up to `end`."""
    while pos < end:
        element = _read(data, pos, end, implicit, depth)
        if element is None:
            return None
        pos = element.end
    return pos


def _after_item_elements(data: bytes, pos: int, end: int, implicit: bool, depth: int) -> int | None:
    """Where an item of undefined length ends: just after its Item Delimitation Item."""
    while pos + 8 <= end:
        group, number, length = _IMPLICIT.unpack_from(data, pos)
        if group << 16 | number == _ITEM_END:
            return pos + 8 if length == 0 else None
        element = _read(data, pos, end, implicit, depth)
        if element is None:
            return None
        pos = element.end
    return None


# ---------------------------------------------------------------------------
# Which elements depend on nothing but themselves and the record


@lru_cache(maxsize=8192)
def independent(tag: int, vr: str | None) -> bool:
    """Whether the rules' outcome for this element (`vr` as read, None in implicit VR)
    depends on nothing but its own bytes and the record (see the module docstring)."""
    if tag in CONTEXT_TAGS:
        return False
    group, number = tag >> 16, tag & 0xFFFF
    if group in (0x0000, 0x0002) or group >= 0xFFFC:
        return False
    if group & 1:  # private: removed unread, unless it may be a name (or says nothing)
        if 0x0010 <= number <= 0x00FF:
            return False  # a private creator: it decides the VR of a UN element of its block
        return vr is not None and vr not in ("PN", "UN")
    if number == 0:
        return vr in (None, "UL")  # a group length (removed), read as one
    try:
        expected = dictionary_VR(tag)
    except KeyError:
        return False
    if " or " in expected:  # an ambiguous VR ("US or SS", "OB or OW")
        if tag == _PIXEL_DATA:
            return vr in (None, "OB", "OW")  # pixels whatever their VR: kept
        # decided by another element (PixelRepresentation ...) unless read explicitly
        return vr is not None and vr in expected.split(" or ") and vr in _PLAIN_VRS
    return expected in _PLAIN_VRS and vr in (None, expected)


# ---------------------------------------------------------------------------
# The memo


@dataclass
class _Layout:
    """Where a later object of a signature may differ from the first: the runs of elements
    that were byte for byte the same (compared whole) and the elements that were not."""

    steps: tuple[tuple[int, int] | Element, ...]  # (start, end) in the first's bytes, or a varying element
    between: tuple[bytes, ...]  # the first's output between the varying elements' outputs


@dataclass
class _Learnt:
    """What one signature taught: the rules, the output of its first object, piece by piece."""

    rules: ElementRules
    study_uid: str
    split: Split  # the first object
    pieces: dict[int, bytes]  # its output, element by element
    values: dict[str, Any]  # its manifest row values
    independents: frozenset[int]
    warnings: tuple[str, ...]
    charset: Any
    meta: FileMetaDataset
    meta_parts: tuple[bytes, bytes, bytes, int] | None  # see _meta_parts
    remembered: dict[bytes, tuple[bytes | None, Any]] = field(default_factory=dict)
    layout: _Layout | None = None
    layout_tries: int = 0


@dataclass(frozen=True)
class Fast:
    """An object de-identified through the memo: the file, its manifest row, the warnings."""

    data: bytes
    row: ManifestRow
    warnings: tuple[str, ...]


_ROW_TAGS = {next(iter(_tags(keyword))): keyword for keyword in ROW_KEYWORDS}
_META_INSTANCE = 0x00020003
_GROUP_LENGTH = struct.Struct("<HH2sHL")


class SeriesMemo:
    """Rules and outputs learnt per signature (see the module docstring); one per worker."""

    def __init__(self, max_signatures: int = MAX_SIGNATURES) -> None:
        self._learnt: OrderedDict[tuple[Any, ...], _Learnt | _Pending | None] = OrderedDict()
        self._max = max_signatures
        self._missed: tuple[bytes, Split, tuple[Any, ...]] | None = None  # for learn()
        self.hits = self.misses = 0

    # -- the fast way ------------------------------------------------------

    def deidentify(self, body: bytes, study_uid: str, keys: ProjectKeys, policy: Any,
                   scope: str = "") -> Fast | str | None:
        """`body` de-identified and encoded, if its signature was learnt in `scope` (a pull:
        what one pull taught is not used by another); :data:`OTHER_STUDY` when it is not from
        `study_uid`; None when it must go the ordinary way (then call :meth:`learn` with what
        that way made)."""
        owner = _owner(keys, policy, scope)
        try:
            self._missed = None
            for key, learnt in reversed(self._learnt.items()):  # the latest first
                if isinstance(learnt, _Learnt) and learnt.layout is not None and key[:2] == owner:
                    fast = self._by_layout(body, learnt)
                    if fast is not None:
                        self._learnt.move_to_end(key)
                        return self._answer(fast, learnt, study_uid)
            split = split_part10(body)
            if split is None:
                return None
            key = (*owner, *self._signature(split))
            learnt = self._learnt.get(key)
            if isinstance(learnt, _Pending):  # a second object of this signature: learn now
                learnt = self._learnt[key] = learnt.learnt()
            if learnt is None:
                self._missed = (body, split, key)
                self.misses += 1
                return None
            self._learnt.move_to_end(key)
            return self._answer(self._assemble(split, learnt), learnt, study_uid)
        except Exception:  # noqa: BLE001 - whatever this way cannot do, the ordinary way decides
            self.misses += 1
            return None

    def _answer(self, fast: Fast | None, learnt: _Learnt, study_uid: str) -> Fast | str | None:
        if fast is None:  # the ordinary way decides, refusals included
            self.misses += 1
            return None
        if learnt.study_uid != study_uid:
            return OTHER_STUDY
        self.hits += 1
        return fast

    @staticmethod
    def _signature(split: Split) -> tuple[str, bytes]:
        data = split.data
        return split.syntax, split.meta + b"".join(data[e.start:e.end] for e in split.elements
                                                   if not independent(e.tag, e.vr))

    def _assemble(self, split: Split, learnt: _Learnt) -> Fast | None:
        """An object with a learnt signature, element by element; learns where objects of this
        signature differ (:class:`_Layout`) the first times."""
        pieces = dict(learnt.pieces)
        values = dict(learnt.values)
        for tag in learnt.independents:  # the first object's own: replaced below
            pieces.pop(tag, None)
            values.pop(_ROW_TAGS.get(tag, ""), None)
        for element in split.elements:
            if element.tag not in learnt.independents and independent(element.tag, element.vr):
                return None  # cannot happen with equal signatures; never guess
            if not independent(element.tag, element.vr):
                continue
            piece, value = self._piece(split.data, element, split, learnt)
            if piece is not None:
                pieces[element.tag] = piece
                if element.tag in _ROW_TAGS:
                    values[_ROW_TAGS[element.tag]] = value
        if learnt.layout is None and learnt.layout_tries < 3:
            learnt.layout_tries += 1
            learnt.layout = _layout(learnt, split)
        return self._finish(pieces, values, split.syntax, learnt)

    def _by_layout(self, body: bytes, learnt: _Learnt) -> Fast | None:
        """An object that is the first object of a signature with only the varying elements
        changed (same tags, VRs and order; every other byte the same), else None."""
        first = learnt.split
        meta = _read_meta(body)
        if meta is None or meta[1] != first.syntax or meta[2] != first.meta:
            return None
        pos = meta[0]
        if not _dataset_starts_as(body, pos, first.implicit):
            return None
        layout = learnt.layout
        assert layout is not None
        template = first.data
        read = _implicit if first.implicit else _explicit
        end = len(body)
        varying: list[bytes] = []
        values = dict(learnt.values)
        for step in layout.steps:
            if isinstance(step, tuple):
                start, stop = step
                following = pos + stop - start
                if body[pos:following] != template[start:stop]:
                    return None
                pos = following
                continue
            element = read(body, pos, end)
            if element is None or element.tag != step.tag or element.vr != step.vr:
                return None
            piece, value = self._piece(body, element, first, learnt)
            varying.append(piece or b"")
            if element.tag in _ROW_TAGS:
                if piece is None:
                    values.pop(_ROW_TAGS[element.tag], None)
                else:
                    values[_ROW_TAGS[element.tag]] = value
            pos = element.end
        if pos != end:
            return None
        parts = [layout.between[0]]
        for piece, between in zip(varying, layout.between[1:], strict=True):
            parts.append(piece)
            parts.append(between)
        return self._finish_joined(b"".join(parts), values, first.syntax, learnt)

    def _piece(self, data: bytes, element: Element, split: Split, learnt: _Learnt) -> tuple[bytes | None, Any]:
        """What the rules make of an independent element: remembered by its bytes if short."""
        remembered = learnt.remembered
        whole = data[element.start:element.end] if element.end - element.start <= MAX_REMEMBERED_BYTES else None
        found = remembered.get(whole) if whole is not None else None
        if found is None:
            found = _apply(data, element, split, learnt)
            if whole is not None and len(remembered) < MAX_ELEMENTS:
                remembered[whole] = found
        return found

    def _finish(self, pieces: dict[int, bytes], values: dict[str, Any], syntax: str,
                learnt: _Learnt) -> Fast | None:
        return self._finish_joined(b"".join(pieces[tag] for tag in sorted(pieces)), values, syntax, learnt)

    @staticmethod
    def _finish_joined(dataset: bytes, values: dict[str, Any], syntax: str, learnt: _Learnt) -> Fast | None:
        if "SOPInstanceUID" not in values:
            return None  # the ordinary way refuses such an object
        file = instance_file_name(values)
        out = _meta_bytes(learnt, values) + dataset
        return Fast(out, manifest_row(file, out, values, syntax), learnt.warnings)

    # -- learning from the ordinary way --------------------------------------

    def learn(self, body: bytes, study_uid: str, keys: ProjectKeys, policy: Any,
              result: DeidResult, rules: ElementRules, data: bytes, scope: str = "") -> None:
        """Learn from an object the ordinary way de-identified (`result`) and encoded (`data`),
        if its pieces add up to `data` exactly; `study_uid`: its StudyInstanceUID as read.

        What it teaches is worked out when a second object of its signature arrives (a series
        of one object, a cine loop say, costs nothing more)."""
        missed, self._missed = self._missed, None
        if len(body) > MAX_LEARNT_BYTES:
            return  # a big object is seldom one of many alike; it would stay in memory
        if missed is not None and missed[0] is body:
            split, key = missed[1], missed[2]  # split by deidentify() a moment ago
        else:
            split = split_part10(body)
            if split is None:
                return
            key = (*_owner(keys, policy, scope), *self._signature(split))
        if key in self._learnt:
            return
        self._learnt[key] = _Pending(split, study_uid, result, rules, data)
        while len(self._learnt) > self._max:
            self._learnt.popitem(last=False)


@dataclass(frozen=True)
class _Pending:
    """An object the ordinary way made, kept until a second object of its signature comes."""

    split: Split
    study_uid: str
    result: DeidResult
    rules: ElementRules
    data: bytes

    def learnt(self) -> _Learnt | None:
        return _learnt_from(self.split, self.study_uid, self.result, self.rules, self.data)


def _owner(keys: ProjectKeys, policy: Any, scope: str) -> tuple[Any, ...]:
    """Whose rules these are: a project's key and policy, in one pull."""
    return (scope, (keys.project_id, hashlib.sha256(keys.key).digest(), policy))


def _apply(data: bytes, element: Element, split: Split, learnt: _Learnt) -> tuple[bytes | None, Any]:
    value = data[element.value_start:element.value_end]
    raw = RawDataElement(BaseTag(element.tag), element.vr, element.length, value,
                         element.value_start, split.implicit, True)
    result = learnt.rules.apply(raw)
    if result is None:
        return None, None
    row_value = None
    if element.tag in _ROW_TAGS:  # the value as the manifest reads it; written as it is
        row_value = _converted(result, split.implicit, learnt.rules).value
    if element.tag == _PIXEL_DATA:
        result = _converted(result, split.implicit, learnt.rules)
        result.is_undefined_length = split.compressed  # as part10_bytes writes it
    return element_bytes(result, split.implicit, learnt.charset), row_value


def _layout(learnt: _Learnt, other: Split) -> _Layout | None:
    """Where `other` differs from the first object of its signature, if only in independent
    elements with the same tags and VRs in the same order."""
    first = learnt.split
    if [(e.tag, e.vr) for e in first.elements] != [(e.tag, e.vr) for e in other.elements]:
        return None
    steps: list[tuple[int, int] | Element] = []
    varying: list[int] = []
    run_start: int | None = None
    for mine, theirs in zip(first.elements, other.elements, strict=True):
        same = first.data[mine.start:mine.end] == other.data[theirs.start:theirs.end]
        if same:
            run_start = mine.start if run_start is None else run_start
            continue
        if mine.tag not in learnt.independents:
            return None  # a context element differs: then the signatures differ too
        if run_start is not None:
            steps.append((run_start, mine.start))
            run_start = None
        steps.append(mine)
        varying.append(mine.tag)
    if run_start is not None:
        steps.append((run_start, first.elements[-1].end))
    if not varying:
        return None
    ordered = sorted(t for t in learnt.pieces if t not in varying)
    between: list[bytes] = []
    bounds = [-1, *varying, 1 << 33]
    for low, high in itertools.pairwise(bounds):
        between.append(b"".join(learnt.pieces[t] for t in ordered if low < t < high))
    return _Layout(tuple(steps), tuple(between))


def _meta_parts(meta_bytes: bytes) -> tuple[bytes, bytes, bytes, int] | None:
    """A file start written by pydicom cut around its MediaStorageSOPInstanceUID: (before the
    group length's value, between it and the instance UID, after the UID, the group length
    without the UID element)."""
    group = _explicit(meta_bytes, 132, len(meta_bytes))
    if group is None or group.tag != 0x00020000 or group.length != 4:
        return None
    pos, instance = group.end, None
    while pos < len(meta_bytes):
        element = _explicit(meta_bytes, pos, len(meta_bytes))
        if element is None:
            return None
        if element.tag == _META_INSTANCE:
            instance = element
        pos = element.end
    if instance is None:
        return None
    length = int.from_bytes(meta_bytes[group.value_start:group.end], "little")
    return (meta_bytes[:132], meta_bytes[group.end:instance.start], meta_bytes[instance.end:],
            length - (instance.end - instance.start))


def _meta_bytes(learnt: _Learnt, values: dict[str, Any]) -> bytes:
    instance = values["SOPInstanceUID"]
    if learnt.meta_parts is None:
        return file_start(completed_meta(learnt.meta, values.get("SOPClassUID"), instance))
    before, middle, after, length = learnt.meta_parts
    uid = str(instance).encode("ascii")
    if len(uid) % 2:
        uid += b"\x00"
    element = _EXPLICIT_SHORT.pack(0x0002, 0x0003, b"UI", len(uid)) + uid
    return (before + _GROUP_LENGTH.pack(0x0002, 0x0000, b"UL", 4, length + len(element))
            + middle + element + after)


def _learnt_from(split: Split, study_uid: str, result: DeidResult, rules: ElementRules,
                 data: bytes) -> _Learnt | None:
    if rules.keyed_on not in ("PatientID", "PatientName", "StudyInstanceUID"):
        return None  # keyed on the SOP Instance UID, which differs from object to object
    out = result.dataset
    encoding = plain_encoding(out.file_meta.get("TransferSyntaxUID"))
    if encoding is None or encoding[0] != split.implicit or out.original_encoding != encoding:
        return None
    charset = out.get("SpecificCharacterSet", "iso8859")
    independents = {e.tag: e for e in split.elements if independent(e.tag, e.vr)}
    pieces: dict[int, bytes] = {}
    for tag in sorted(out.keys()):
        if tag.element == 0 and tag.group > 6:
            continue
        pieces[int(tag)] = element_bytes(out.get_item(tag), split.implicit, charset)
    meta = completed_meta(out.file_meta, out.get("SOPClassUID", None), out.get("SOPInstanceUID", None))
    start = file_start(meta)
    if start + b"".join(pieces[t] for t in sorted(pieces)) != data:
        return None  # not what part10_bytes wrote (it fell back to dcmwrite): never guess
    template = FileMetaDataset()
    template.MediaStorageSOPClassUID = meta.MediaStorageSOPClassUID
    template.TransferSyntaxUID = meta.TransferSyntaxUID
    values = {keyword: out.get(keyword) for keyword in ROW_KEYWORDS if keyword in out}
    learnt = _Learnt(
        rules=rules, study_uid=study_uid, split=split, pieces=pieces, values=values,
        independents=frozenset(independents), warnings=tuple(result.report.warnings),
        charset=charset, meta=template, meta_parts=_meta_parts(start),
    )
    if learnt.meta_parts is not None and _meta_bytes(learnt, values) != start:
        learnt.meta_parts = None  # pydicom wrote it otherwise: let it write every one
    for tag, element in independents.items():  # what the ordinary way made of each
        if element.end - element.start <= MAX_REMEMBERED_BYTES:
            value = values.get(_ROW_TAGS[tag]) if tag in _ROW_TAGS else None
            learnt.remembered[split.data[element.start:element.end]] = (pieces.get(tag), value)
    return learnt


def _converted(elem: RawDataElement | DataElement, implicit: bool, rules: ElementRules) -> DataElement:
    if isinstance(elem, DataElement):
        return elem
    # What Dataset.__getitem__ does when part10_bytes reads an element kept as read.
    alone = Dataset({elem.tag: elem})
    alone.set_original_encoding(implicit, True, rules._encodings)
    converted = convert_raw_data_element(elem, encoding=rules._encodings, ds=alone)
    if converted.VR in AMBIGUOUS_VR:
        converted = correct_ambiguous_vr_element(converted, alone, True)
    return converted


_local = threading.local()


def memo_for_this_thread() -> SeriesMemo:
    """The calling thread's memo (a worker process has one thread doing this work)."""
    memo = getattr(_local, "memo", None)
    if memo is None:
        memo = _local.memo = SeriesMemo()
    return memo
