"""Keyed, deterministic pseudonyms for one project.

Everything here is a pure function of a project's secret key and the input value
(HMAC-SHA256), so:

* the same patient, study or instance gets the same pseudonym on every pull of the
  same project, and follow-up studies link;
* two projects never share pseudonyms (different keys, and the project id is mixed
  into every message as well);
* nobody without the key can go back from a pseudonym to the identifier, nor check
  a guessed identifier against a pseudonym.

Each use has its own domain label inside the HMAC message, so a patient pseudonym
never equals, say, a UID remap of the same string.

The only function with a side effect is :func:`load_or_create_key`, which reads or
creates the project key file.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass

KEY_BYTES = 32

#: Range of the per-patient date offset in days (both ends included).  Negative
#: (dates move into the past), at least a year, at most about ten years; never 0.
OFFSET_MIN_DAYS = -3650
OFFSET_MAX_DAYS = -366

_UID_ROOT = "2.25."


class KeyFileError(Exception):
    """The project key file exists but is not usable (wrong size, readable by others)."""


@dataclass(frozen=True)
class ProjectKeys:
    """A project's pseudonymisation key.  Keep it on the hub; never hand it out."""

    key: bytes
    project_id: str

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) < 16:
            raise ValueError("a project key must be at least 16 bytes")
        if not self.project_id:
            raise ValueError("a project id is required")

    def __repr__(self) -> str:  # never print the key
        return f"ProjectKeys(project_id={self.project_id!r}, key=<{len(self.key)} bytes>)"

    def digest(self, domain: str, value: str) -> bytes:
        """HMAC-SHA256 over (domain, project id, value), unambiguously framed."""
        message = "\x1f".join((domain, self.project_id, value)).encode("utf-8")
        return hmac.new(self.key, message, hashlib.sha256).digest()

    # -- pseudonyms ---------------------------------------------------------

    def patient_pseudonym(self, patient_id: str, issuer: str = "") -> str:
        """``"P"`` and 10 base32 characters (50 bits) for a patient, e.g. ``"PK3ZQ7M2XAB"``.

        Valid as PatientID (LO) and as PatientName (PN): upper-case letters and digits.
        """
        value = f"{issuer.strip()}\x00{patient_id.strip()}"
        return "P" + _base32(self.digest("patient", value), 10)

    def accession_pseudonym(self, accession_number: str, issuer: str = "") -> str:
        """``"A"`` and 10 base32 characters: fits AccessionNumber (SH, 16 characters)."""
        value = f"{issuer.strip()}\x00{accession_number.strip()}"
        return "A" + _base32(self.digest("accession", value), 10)

    def remap_uid(self, uid: str) -> str:
        """A valid DICOM UID for `uid`: ``"2.25."`` and a 128-bit decimal integer.

        At most 44 characters (64 allowed), no leading zeros, the same for the same
        input within a project and different between projects (the UUID-derived UID
        form of PS3.5 B.2).
        """
        digest = self.digest("uid", uid.strip().rstrip("\x00").strip())
        return _UID_ROOT + str(int.from_bytes(digest[:16], "big") or 1)

    def study_key(self, study_instance_uid: str) -> str:
        """The pseudonymous study key researchers see: the remapped StudyInstanceUID."""
        return self.remap_uid(study_instance_uid)

    def date_offset_days(self, patient_key: str) -> int:
        """The per-patient date shift in days, in [OFFSET_MIN_DAYS, OFFSET_MAX_DAYS].

        Every date of one patient moves by the same number of days, so intervals
        between studies stay exact; the offset is never 0.
        """
        span = OFFSET_MAX_DAYS - OFFSET_MIN_DAYS + 1
        number = int.from_bytes(self.digest("date-offset", patient_key.strip())[:8], "big")
        return OFFSET_MIN_DAYS + number % span


def _base32(digest: bytes, length: int) -> str:
    return base64.b32encode(digest).decode("ascii")[:length]




# ---------------------------------------------------------------------------
# Date shifting (DA and DT values)

_DT_RE = re.compile(
    r"""^(?P<date>\d{4}(?:\d{2}(?:\d{2})?)?)
        (?P<time>\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?
        (?P<zone>[+-]\d{4})?$""",
    re.VERBOSE,
)
_LEGACY_DA_RE = re.compile(r"^(\d{4})[.-](\d{2})[.-](\d{2})$")


def _valid_zone(zone: str | None) -> bool:
    if zone is None:
        return True
    hours, minutes = int(zone[1:3]), int(zone[3:5])
    value = (hours * 60 + minutes) * (1 if zone[0] == "+" else -1)
    return minutes < 60 and -12 * 60 <= value <= 14 * 60


def _shift_one(value: str, offset: int) -> str:
    legacy = _LEGACY_DA_RE.match(value)
    if legacy:  # ACR-NEMA style "YYYY.MM.DD": written back in the DICOM form
        value = "".join(legacy.groups())
    match = _DT_RE.match(value)
    if match is None or not _valid_zone(match["zone"]):
        raise ValueError(f"not a DA/DT value: {value!r}")
    date = match["date"]
    if match["time"] and len(date) != 8:
        raise ValueError(f"time without a full date: {value!r}")
    # Partial dates (YYYY, YYYYMM) are shifted from their first day and written
    # back with the same precision.
    full = date + "01" * ((8 - len(date)) // 2)
    try:
        day = _dt.date(int(full[:4]), int(full[4:6]), int(full[6:8]))
    except ValueError as exc:
        raise ValueError(f"not a valid date: {value!r}") from exc
    try:
        shifted = day + _dt.timedelta(days=offset)
    except OverflowError as exc:
        raise ValueError(f"date out of range after shifting: {value!r}") from exc
    digits = f"{shifted.year:04d}{shifted.month:02d}{shifted.day:02d}"
    return digits[: len(date)] + (match["time"] or "") + (match["zone"] or "")


def shift_date(value: str, offset: int) -> str:
    """Shift a DA or DT value by `offset` days.

    Keeps a DT's time and UTC offset, the precision of partial dates (``YYYY``,
    ``YYYYMM``) and both ends of a range (``A-B``, ``-B``, ``A-``).  Raises
    ValueError for anything it cannot parse, so the caller drops it.
    """
    text = value.strip().rstrip("\x00").strip()
    if not text:
        return text
    try:
        return _shift_one(text, offset)
    except ValueError:
        if "-" not in text:
            raise
    # A range.  A DT with a negative UTC offset also holds "-", so split at each
    # "-" and keep the first split that parses.
    for index in [i for i, ch in enumerate(text) if ch == "-"]:
        start, end = text[:index], text[index + 1 :]
        try:
            left = _shift_one(start, offset) if start else ""
            right = _shift_one(end, offset) if end else ""
        except ValueError:
            continue
        if left or right:
            return f"{left}-{right}"
    raise ValueError(f"not a DA/DT value or range: {value!r}")


# ---------------------------------------------------------------------------
# Key file


def load_or_create_key(path: str | os.PathLike[str]) -> bytes:
    """Return the project key stored at `path`, creating it (32 random bytes) if absent.

    Creation is atomic and race-free: the key is written to a private temporary
    file (mode 0600) and linked into place, which fails if another process got
    there first, in which case that process's key is read and returned.  An
    existing file must hold exactly 32 bytes and must not be readable by group or
    others.
    """
    path = os.fspath(path)
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # someone else created it first: use theirs
    finally:
        os.unlink(tmp)
    return _read_key(path)


def _read_key(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"project key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); it must be 0600"
            )
        key = handle.read(KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"project key file {path} must hold exactly {KEY_BYTES} bytes")
    return key
