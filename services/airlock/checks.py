"""What the airlock checks in each exported file before a steward sees the request.

Two severities, as in trusted research environments' output checking:

* ``refuse``: the request cannot go to review (the researcher fixes the files first):
  DICOM whose PatientIdentityRemoved is not YES, DICOM that still carries identifying
  values (names, IDs, birth date, addresses: the attributes PS3.15 Annex E removes or
  empties, and the names and IDs :func:`identifying_terms` finds, except the workbench's own
  pseudonyms), DICOM that cannot be read, archives (their content cannot be checked),
  Python pickles (they can hold anything, a whole DICOM dataset included).
* ``flag``: the steward must look and acknowledge before approving: images whose pixels may
  show text (:func:`burned_in_risk`), private DICOM attributes, pictures (PNG, JPEG, ...),
  text or table cells shaped like a Danish CPR number (with a real date), and binary
  formats the airlock cannot read (never passed silently).

What a file is comes from its bytes (:mod:`.probes`), not its name: DICOM is found with a
byte in front, without its preamble ('DICM') or as the DICOM JSON model; zip-based formats
(.npz, .xlsx, .docx, PyTorch files, ...) are opened and each member checked the same way,
to a bounded depth; archives and pickles are known by their magic bytes whatever they are
called. Parquet is read with pyarrow when it is installed (string cells, and integer
columns holding only CPR-shaped numbers); without it the raw bytes are scanned and the file
is flagged.

Findings name the file (``bundle.npz:scan.dcm`` for a member) and the attribute or
column, never the value: they go into the audit trail.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.errors import InvalidDicomError

from services.sample_gateway import annex_e
from services.sample_gateway.deidentify import DeidPolicy, burned_in_risk, identifying_terms

from . import probes

REFUSE = "refuse"
FLAG = "flag"

#: Status table: finding code -> (severity, what it means).
CODES: dict[str, tuple[str, str]] = {
    "identity_not_removed": (REFUSE, "DICOM without PatientIdentityRemoved = YES"),
    "identifying_value": (REFUSE, "DICOM attribute with an identifying value"),
    "unreadable_dicom": (REFUSE, "a DICOM file that cannot be read"),
    "archive": (REFUSE, "an archive, whose content cannot be checked"),
    "pickle": (REFUSE, "a Python pickle: pickles can hold anything; export as CSV/Parquet/NIfTI"),
    "burned_in_risk": (FLAG, "pixels that may show identifying text"),
    "private_attributes": (FLAG, "private DICOM attributes (unknown content)"),
    "picture": (FLAG, "a picture, which may show identifying text or faces"),
    "cpr_like": (FLAG, "text shaped like a Danish CPR number"),
    "unknown_format": (FLAG, "a binary format the airlock cannot check; look at it"),
}

# Pseudonyms the sample gateway writes (services.sample_gateway.pseudonyms).
_PSEUDONYM = re.compile(r"^[pa][a-z2-7]{10}$")
_ARCHIVES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar", ".zst")
_PICTURES = (".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".bmp", ".webp", ".svg", ".pdf")
_TEXT = (".csv", ".tsv", ".txt", ".json", ".md", ".ipynb", ".py", ".r", ".log", ".yaml", ".yml",
         ".html", ".xml")
_PICKLES = (".pkl", ".pickle", ".joblib", ".dill")
# Zip-based formats whose members are checked (a plain .zip is an archive: see _ARCHIVES).
_ZIP_FORMATS = (".npz", ".xlsx", ".xlsm", ".docx", ".pptx", ".odt", ".ods", ".odp", ".pt", ".pth")
_DICOM_NAMES = (".dcm", ".dicom")
_CPR = re.compile(rb"(?<!\d)(0[1-9]|[12]\d|3[01])(0[1-9]|1[0-2])\d{2}-?\d{4}(?!\d)")
_TEXT_SCAN_BYTES = 64 * 1024 * 1024
_DICOM_WINDOW = 1024 * 1024  # read from a probed offset: a header, not its pixels
_MAX_DEPTH = 3  # containers in containers
_MAX_MEMBERS = 2000
_MAX_UNPACKED_BYTES = 2 * 1024**3  # all members of one exported file, all levels
_PARQUET_SCAN_CELLS = 5_000_000
_OPTIONS = DeidPolicy().options  # the gateway's: modified dates, descriptors, characteristics


@dataclass(frozen=True)
class Finding:
    path: str
    code: str
    detail: str = ""

    @property
    def severity(self) -> str:
        return CODES[self.code][0]

    @property
    def message(self) -> str:
        text = f"{self.path}: {CODES[self.code][1]}"
        return f"{text} ({self.detail})" if self.detail else text

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "code": self.code, "severity": self.severity,
                "message": self.message}


def is_dicom(path: Path) -> bool:
    """A DICOM file by its name or 'DICM' after the preamble (disguised ones: check_file)."""
    with open(path, "rb") as handle:
        head = handle.read(132)
    return head[128:132] == b"DICM" or path.suffix.lower() in _DICOM_NAMES


@dataclass
class _Unpacked:
    """Bytes that members of a file's containers may still unpack to (one per top file, so
    a zip bomb, flat or nested, is refused instead of being read)."""

    left: int = field(default_factory=lambda: _MAX_UNPACKED_BYTES)


@dataclass(frozen=True)
class _Item:
    """A file or a container's member: how findings name it, how to read it, how deep."""

    name: str
    open: Callable[[], BinaryIO]
    depth: int = 0
    unpacked: _Unpacked = field(default_factory=_Unpacked)


def check_file(path: Path, relative: str) -> list[Finding]:
    """Findings for one (staged, regular) file; ``relative`` is how it is named to people."""
    return _check(_Item(relative, lambda: open(path, "rb")))


def _check(item: _Item) -> list[Finding]:
    name = item.name.lower()
    with item.open() as handle:
        head = handle.read(probes.HEAD_BYTES)
        archive = probes.archive_kind(head)
        if name.endswith(_ARCHIVES) or archive:
            return [Finding(item.name, "archive", f"{archive or 'archive'}: export the files themselves")]
        if probes.is_npy(head):
            return [Finding(item.name, "pickle", "an array of Python objects")] if (
                _npy_objects(handle)) else []
        if name.endswith(_PICKLES) or probes.is_pickle(head, handle):
            return [Finding(item.name, "pickle")]
        if probes.is_zip(head):
            if not name.endswith(_ZIP_FORMATS):
                return [Finding(item.name, "archive", "a zip archive: export the files themselves")]
            return _check_zip(item, handle)
        dicom = _dicom_in(item, head, handle)
        if dicom is not None:
            return dicom
        if name.endswith(".json") and probes.looks_like_dicom_json(head):
            return _check_dicom_json(item, handle)
        picture = probes.picture_kind(head)
        if name.endswith(_PICTURES) or picture:
            return [Finding(item.name, "picture", picture or "")]
        if name.endswith(".parquet") or probes.is_parquet(head):
            return _check_parquet(item, handle)
        if probes.is_nifti(head):
            return _cpr_finding(item.name, _cpr_lines(head), "in the header")
        if name.endswith(_TEXT) or probes.looks_like_text(head):
            handle.seek(0)
            return _cpr_finding(item.name, _cpr_lines(handle.read(_TEXT_SCAN_BYTES)))
        return [Finding(item.name, "unknown_format", "binary content of no format the airlock reads")]


def _npy_objects(handle: BinaryIO) -> bool:
    try:
        return probes.npy_holds_objects(handle)
    except (ValueError, OSError, EOFError):
        return True  # an .npy header numpy cannot read: do not guess that it is harmless


def _check_zip(item: _Item, handle: BinaryIO) -> list[Finding]:
    """Every member of a zip-based file, checked as a file of its own (bounded)."""
    if item.depth >= _MAX_DEPTH:
        return [Finding(item.name, "archive", f"containers nested more than {_MAX_DEPTH} deep")]
    try:
        handle.seek(0)
        archive = zipfile.ZipFile(handle)
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        return [Finding(item.name, "archive", "a zip file that cannot be opened")]
    if len(members) > _MAX_MEMBERS:
        return [Finding(item.name, "archive", f"more than {_MAX_MEMBERS} members")]
    if any(m.flag_bits & 0x1 for m in members):
        return [Finding(item.name, "archive", "encrypted members")]
    # zipfile never unpacks a member beyond the size its directory gives: that is the bound.
    item.unpacked.left -= sum(m.file_size for m in members)
    if item.unpacked.left < 0:
        return [Finding(item.name, "archive",
                        f"unpacks to more than {_MAX_UNPACKED_BYTES / 1024**3:g} GiB")]
    findings: list[Finding] = []
    for member in members:
        inner = _Item(f"{item.name}:{member.filename}", lambda m=member: archive.open(m),
                      item.depth + 1, item.unpacked)
        try:
            findings += _check(inner)
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, OSError, EOFError) as exc:
            findings.append(Finding(inner.name, "archive", f"a member that cannot be read ({type(exc).__name__})"))
    return findings


# DICOM -------------------------------------------------------------------------------------
def _dicom_in(item: _Item, head: bytes, handle: BinaryIO) -> list[Finding] | None:
    """Findings for DICOM content (None when it is not DICOM).

    A file named .dcm or with 'DICM' after a 128-byte preamble is DICOM and must be read;
    otherwise each offset where a dataset may start (a shifted 'DICM', a bare dataset with no
    preamble, elements of groups 0008/0010) is tried with a forced read, and a dataset that
    reads with identification or patient attributes is checked like any DICOM file.
    """
    declared = head[128:132] == b"DICM" or item.name.lower().endswith(_DICOM_NAMES)
    if declared:
        try:
            handle.seek(0)
            ds = pydicom.dcmread(handle, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
            return [Finding(item.name, "unreadable_dicom", type(exc).__name__)]
        return _checked(ds, item.name)
    if probes.looks_like_text(head):  # a dataset's first elements hold NUL bytes
        return None
    for offset in probes.dicom_offsets(head):
        ds = _forced_read(handle, offset)
        if ds is not None:
            return _checked(ds, item.name)
    return None


def _forced_read(handle: BinaryIO, offset: int) -> pydicom.Dataset | None:
    if offset < 0:  # 'DICM' with a short preamble: give it its 128 bytes
        handle.seek(offset + 128)
        window = b"\x00" * 128 + handle.read(_DICOM_WINDOW)
    else:
        handle.seek(offset)
        window = handle.read(_DICOM_WINDOW)
    try:
        with warnings.catch_warnings():  # a forced read of arbitrary bytes warns at each step
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(window), force=True, stop_before_pixels=True)
            return ds if _plausible(ds) else None
    except Exception:  # noqa: BLE001 - any failure of a forced read of arbitrary bytes means "not DICOM"
        return None


_DICOM_KEYWORDS = ("SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
                   "PatientName", "PatientID", "PatientBirthDate")


def _plausible(ds: pydicom.Dataset) -> bool:
    """A forced read of arbitrary bytes yields a dataset; a real one has several elements
    and readable identification or patient attributes."""
    if len(ds) < 3:
        return False
    found = 0
    for keyword in _DICOM_KEYWORDS:
        elem = ds.get(keyword)
        if elem is not None and str(elem).strip():
            found += 1
    return found >= 2


def _checked(ds: pydicom.Dataset, relative: str) -> list[Finding]:
    try:
        return check_dataset(ds, relative)
    except Exception as exc:  # noqa: BLE001 - a dataset that cannot be checked is refused
        return [Finding(relative, "unreadable_dicom", type(exc).__name__)]


def _check_dicom_json(item: _Item, handle: BinaryIO) -> list[Finding]:
    handle.seek(0)
    try:
        body = json.loads(handle.read(_TEXT_SCAN_BYTES))
        datasets = [pydicom.Dataset.from_json(d) for d in (body if isinstance(body, list) else [body])]
    except Exception as exc:  # noqa: BLE001 - DICOM JSON that does not read is refused
        return [Finding(item.name, "unreadable_dicom", f"DICOM JSON: {type(exc).__name__}")]
    findings: list[Finding] = []
    for ds in datasets:
        findings += [f for f in _checked(ds, item.name) if f not in findings]
    return findings


def check_dicom(path: Path, relative: str) -> list[Finding]:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        return [Finding(relative, "unreadable_dicom", type(exc).__name__)]
    return check_dataset(ds, relative)


def check_dataset(ds: pydicom.Dataset, relative: str) -> list[Finding]:
    findings = []
    if str(ds.get("PatientIdentityRemoved", "")).strip().upper() != "YES":
        findings.append(Finding(relative, "identity_not_removed"))
    keywords = sorted(identifying_attributes(ds))
    if keywords:
        findings.append(Finding(relative, "identifying_value", ", ".join(keywords)))
    if any(elem.tag.is_private for elem in ds.iterall()):
        findings.append(Finding(relative, "private_attributes"))
    risk = burned_in_risk(ds)
    if risk:
        findings.append(Finding(relative, "burned_in_risk", risk))
    return findings


def identifying_attributes(ds: pydicom.Dataset) -> set[str]:
    """Keywords of attributes that still identify someone (never their values).

    Annex E's X (remove) and Z (empty) attributes must be absent or empty; a name or ID
    that :func:`identifying_terms` reports must be a workbench pseudonym.
    """
    found: set[str] = set()
    for elem in ds.iterall():
        if elem.tag.is_private or elem.VR == "SQ" or elem.value in (None, "", b""):
            continue
        row = annex_e.lookup(int(elem.tag))
        if row is None or row is annex_e.PRIVATE_ATTRIBUTES:
            continue
        action = annex_e.resolve_action(row, _OPTIONS)
        if action in ("X", "Z") and not _is_pseudonym(elem.value):
            found.add(elem.keyword or str(elem.tag))
    leftovers = {t for t in identifying_terms(ds) if not _PSEUDONYM.match(t)}
    if leftovers:
        for elem in ds.iterall():
            if elem.VR in ("PN", "LO", "SH") and str(elem.value).strip().casefold() in leftovers:
                found.add(elem.keyword or str(elem.tag))
            elif elem.VR == "PN" and any(
                part.strip().casefold() in leftovers
                for part in re.split(r"[\^=]", str(elem.value))
            ):
                found.add(elem.keyword or str(elem.tag))
        if not found:
            found.add("names or IDs")
    return found


def _is_pseudonym(value: object) -> bool:
    return bool(_PSEUDONYM.match(str(value).strip().casefold()))


# CPR numbers -------------------------------------------------------------------------------
def is_cpr(digits: bytes | str) -> bool:
    """DDMMYY-XXXX (dash optional) with a real day and month (29 February allowed: the
    century is in the serial digits)."""
    raw = digits.encode() if isinstance(digits, str) else digits
    match = _CPR.fullmatch(raw.strip())
    return bool(match) and _real_date(match)


def _real_date(match: re.Match[bytes]) -> bool:
    try:
        dt.date(2000, int(match.group(2)), int(match.group(1)))
    except ValueError:
        return False
    return True


# Digits inside hashes and UUIDs (a results manifest is full of SHA-256 sums) look like CPR
# numbers by chance: about 1 in 370 SHA-256 hex strings holds a real-date DDMMYYXXXX run.
_HEX_TOKEN = re.compile(rb"[0-9A-Fa-f]{16,}")
_UUID = re.compile(rb"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_WORD = re.compile(rb"[0-9A-Za-z]+")


def _inside_hash_or_uuid(data: bytes, match: re.Match[bytes]) -> bool:
    """Whether the candidate lies in a long hex token (a digest) or in a UUID."""
    start, end = match.span()
    lo, hi = max(0, start - 40), min(len(data), end + 40)
    for pattern in (_UUID, _WORD):
        for token in pattern.finditer(data, lo, hi):
            if token.start() <= start and end <= token.end() and (
                pattern is _UUID or (_HEX_TOKEN.fullmatch(token.group()) and len(token.group()) > end - start)
            ):
                return True
    return False


def _cpr_lines(data: bytes) -> list[int]:
    return sorted({data.count(b"\n", 0, m.start()) + 1 for m in _CPR.finditer(data)
                   if _real_date(m) and not _inside_hash_or_uuid(data, m)})


def _cpr_finding(relative: str, lines: list[int], where: str = "line") -> list[Finding]:
    if not lines:
        return []
    if where != "line":
        return [Finding(relative, "cpr_like", where)]
    shown = ", ".join(str(n) for n in lines[:5]) + (" ..." if len(lines) > 5 else "")
    return [Finding(relative, "cpr_like", f"line {shown}")]


def check_text(path: Path, relative: str) -> list[Finding]:
    with open(path, "rb") as handle:
        return _cpr_finding(relative, _cpr_lines(handle.read(_TEXT_SCAN_BYTES)))


# Parquet ------------------------------------------------------------------------------------
def _pyarrow_parquet() -> Any:
    """pyarrow.parquet, or None where pyarrow is not installed."""
    try:
        import pyarrow.parquet
    except ImportError:
        return None
    return pyarrow.parquet


def _check_parquet(item: _Item, handle: BinaryIO) -> list[Finding]:
    """CPR-shaped cells per column with pyarrow; without it (or for a file it cannot read)
    the raw bytes are scanned and the file goes to the steward."""
    parquet = _pyarrow_parquet()
    if parquet is not None:
        try:
            handle.seek(0)
            return _check_parquet_columns(item.name, parquet.ParquetFile(handle))
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for bad files
            why = f"Parquet that pyarrow cannot read ({type(exc).__name__})"
    else:
        why = "Parquet, and pyarrow is not installed here to read it: only its raw bytes were scanned"
    handle.seek(0)
    raw = _cpr_lines(handle.read(_TEXT_SCAN_BYTES))
    return [*_cpr_finding(item.name, raw, "in the raw bytes"), Finding(item.name, "unknown_format", why)]


def _check_parquet_columns(relative: str, table: Any) -> list[Finding]:
    import pyarrow as pa

    hits: set[str] = set()
    unchecked: set[str] = set()
    all_cpr: dict[str, bool] = {}
    names = [str(n) for n in table.schema_arrow.names]
    named = any(_cpr_lines(n.encode()) for n in names)  # never named: the name is the value
    cells = rows = 0
    for batch in _batches(table):
        rows += batch.num_rows
        for name, column in zip(batch.schema.names, batch.columns):
            kind = column.type
            if pa.types.is_dictionary(kind):
                column, kind = column.dictionary_decode(), kind.value_type
            if pa.types.is_string(kind) or pa.types.is_large_string(kind):
                if any(_cpr_lines(v.encode()) for v in column.to_pylist() if v):
                    hits.add(name)
            elif pa.types.is_integer(kind):
                values = [v for v in column.to_pylist() if v is not None]
                shaped = bool(values) and all(0 < v < 10**10 and is_cpr(f"{v:010d}") for v in values)
                all_cpr[name] = all_cpr.get(name, True) and shaped
            elif not (pa.types.is_floating(kind) or pa.types.is_boolean(kind)
                      or pa.types.is_temporal(kind) or pa.types.is_decimal(kind)
                      or pa.types.is_null(kind)):
                unchecked.add(f"{name} ({kind})")
            cells += len(column)
        if cells > _PARQUET_SCAN_CELLS:
            unchecked.add(f"rows after the first {rows:,}")
            break
    hits.update(n for n, every in all_cpr.items() if every)
    findings = []
    where = ["column " + ", ".join(sorted(hits))] if hits else []
    if named:
        where.append("a column's name")
    if where:
        findings.append(Finding(relative, "cpr_like", "; ".join(where)))
    if unchecked:
        findings.append(Finding(relative, "unknown_format",
                                "not checked: " + ", ".join(sorted(unchecked)[:5])))
    return findings


def _batches(table: Any) -> Iterator[Any]:
    yield from table.iter_batches(batch_size=65536)


def refusals(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == REFUSE]


def flags(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == FLAG]
