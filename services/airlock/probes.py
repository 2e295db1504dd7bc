"""What a file is, from its bytes: the airlock does not believe names.

Pure functions over the first bytes of a file (``head``) or a readable handle; the
decisions (refuse, flag) are :mod:`.checks`'s. Each probe is cheap and bounded: a file is
never read further than a probe says.
"""

from __future__ import annotations

import io
import pickletools
import re
import warnings
from typing import BinaryIO

HEAD_BYTES = 8192  # how much of each file (or member) every probe may look at

_ARCHIVE_MAGIC = {  # archives that are not zip (zip-based formats are opened, see checks)
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"7z\xbc\xaf\x27\x1c": "7z",
    b"Rar!\x1a\x07": "rar",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\x04\x22\x4d\x18": "lz4",
}
_PICTURE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"%PDF-": "PDF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip


def archive_kind(head: bytes) -> str | None:
    """'gzip', 'tar', ... for an archive or compressed stream (not zip); else None."""
    for magic, kind in _ARCHIVE_MAGIC.items():
        if head.startswith(magic):
            return kind
    if head[257:262] == b"ustar":
        return "tar"
    return None


def is_zip(head: bytes) -> bool:
    return head.startswith(_ZIP_MAGIC)


def picture_kind(head: bytes) -> str | None:
    for magic, kind in _PICTURE_MAGIC.items():
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def is_parquet(head: bytes) -> bool:
    return head.startswith(b"PAR1")


def is_nifti(head: bytes) -> bool:
    return head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00")


def is_npy(head: bytes) -> bool:
    return head.startswith(b"\x93NUMPY")


def npy_holds_objects(handle: BinaryIO) -> bool:
    """Whether a .npy array has an object dtype: its data is then a pickle."""
    from numpy.lib import format as npy_format

    handle.seek(0)
    major, _ = npy_format.read_magic(handle)
    reader = npy_format.read_array_header_1_0 if major == 1 else npy_format.read_array_header_2_0
    _, _, dtype = reader(handle)
    return bool(dtype.hasobject)


def is_pickle(head: bytes, handle: BinaryIO, *, limit: int = 1024 * 1024) -> bool:
    """A Python pickle of any protocol, recognised without unpickling (``pickletools``).

    Protocol 2 and later start with PROTO; earlier ones are recognised when the file parses
    as pickle opcodes ending in STOP exactly at its end (read as far as it parses, at most
    ``limit`` bytes: ordinary text stops parsing within a few bytes).
    """
    if not head or head[0] not in _PICKLE_OPCODES:
        return False
    protocol = head[1] if len(head) > 1 and head[0] == 0x80 else None
    if head[0] == 0x80 and not (protocol is not None and 2 <= protocol <= 5):
        return False
    handle.seek(0)
    bounded = _Bounded(handle, limit)
    try:
        ops = 0
        with warnings.catch_warnings():  # genops decoding arbitrary bytes may warn
            warnings.simplefilter("ignore", DeprecationWarning)
            for opcode, _, _ in pickletools.genops(bounded):
                ops += 1
                if protocol is not None and ops >= 3:
                    return True  # PROTO and two valid opcodes after it
                if opcode.name == "STOP":
                    return ops >= 3 and handle.read(1) == b""
    except (ValueError, EOFError, UnicodeDecodeError, OverflowError):
        return False
    return False


class _Bounded:
    """A reader that gives at most ``limit`` bytes of ``handle`` (an opcode's length
    argument in ordinary bytes can be huge: it must not make genops read the whole file)."""

    def __init__(self, handle: BinaryIO, limit: int) -> None:
        self.handle, self.left = handle, limit

    def read(self, size: int = -1) -> bytes:
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.handle.read(size)
        self.left -= len(data)
        return data

    def readline(self) -> bytes:
        data = self.handle.readline(self.left)
        self.left -= len(data)
        return data


_PICKLE_OPCODES = frozenset(op.code.encode("latin-1")[0] for op in pickletools.opcodes)

# Where a DICOM dataset may start: 'DICM' (preamble 128 bytes before it), or an element of
# group 0008 or 0010 (identification, patient) in explicit or implicit VR little endian.
_VRS = (b"AE|AS|AT|CS|DA|DS|DT|FL|FD|IS|LO|LT|OB|OD|OF|OL|OV|OW|PN|SH|SL|SQ|SS|ST|SV|TM|UC|"
        b"UI|UL|UN|UR|US|UT|UV")
_EXPLICIT = re.compile(rb"(?:\x08\x00|\x10\x00)[\x00-\xff][\x00-\x01](?:" + _VRS + rb")", re.DOTALL)
_IMPLICIT = re.compile(rb"(?:\x08\x00|\x10\x00)[\x00-\xff][\x00-\x01][\x00-\xff][\x00-\x04]\x00\x00",
                       re.DOTALL)


def dicom_offsets(head: bytes, limit: int = 8) -> list[int]:
    """Offsets in ``head`` where a DICOM file or bare dataset may start (to try reading),
    shifted 'DICM' first (negative: a preamble shorter than 128 bytes), at most ``limit``."""
    offsets = [m.start() - 128 for m in re.finditer(rb"DICM", head)]
    for pattern in (_EXPLICIT, _IMPLICIT):
        offsets += [m.start() for m in pattern.finditer(head)]
    unique: list[int] = []
    for offset in offsets:
        if offset not in unique:
            unique.append(offset)
    return unique[:limit]


def looks_like_text(head: bytes) -> bool:
    """No NUL bytes, and UTF-8 (a character cut at the end of ``head`` allowed) or mostly
    printable bytes (Latin-1 exports)."""
    if not head:
        return True
    if b"\x00" in head:
        return False
    for cut in range(4):
        try:
            head[: len(head) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    controls = sum(1 for b in head if b < 0x20 and b not in b"\t\n\r\f\x1b")
    return controls <= len(head) // 100


_DICOM_JSON = re.compile(rb'"[0-9A-Fa-f]{8}"\s*:\s*\{\s*"vr"\s*:')


def looks_like_dicom_json(head: bytes) -> bool:
    """The DICOM JSON model (PS3.18 F): ``{"00100010": {"vr": "PN", ...}}``."""
    return bool(_DICOM_JSON.search(head))
