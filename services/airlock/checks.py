"""What the airlock checks in each exported file before a steward sees the request.

Two severities, as in trusted research environments' output checking:

* ``refuse``: the request cannot go to review (the researcher fixes the files first):
  DICOM whose PatientIdentityRemoved is not YES, DICOM that still carries identifying
  values (names, IDs, birth date, addresses: the attributes PS3.15 Annex E removes or
  empties, and the names and IDs :func:`identifying_terms` finds, except the workbench's own
  pseudonyms), DICOM that cannot be read, archives (their content cannot be checked), links.
* ``flag``: the steward must look and acknowledge before approving: images whose pixels may
  show text (:func:`burned_in_risk`), private DICOM attributes, pictures (PNG, JPEG, ...),
  text with something shaped like a Danish CPR number.

Findings name the file and the attribute, never the value: they go into the audit trail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from services.sample_gateway import annex_e
from services.sample_gateway.deidentify import DeidPolicy, burned_in_risk, identifying_terms

REFUSE = "refuse"
FLAG = "flag"

#: Status table: finding code -> (severity, what it means).
CODES: dict[str, tuple[str, str]] = {
    "identity_not_removed": (REFUSE, "DICOM without PatientIdentityRemoved = YES"),
    "identifying_value": (REFUSE, "DICOM attribute with an identifying value"),
    "unreadable_dicom": (REFUSE, "a DICOM file that cannot be read"),
    "archive": (REFUSE, "an archive, whose content cannot be checked"),
    "burned_in_risk": (FLAG, "pixels that may show identifying text"),
    "private_attributes": (FLAG, "private DICOM attributes (unknown content)"),
    "picture": (FLAG, "a picture, which may show identifying text or faces"),
    "cpr_like": (FLAG, "text shaped like a Danish CPR number"),
}

# Pseudonyms the sample gateway writes (services.sample_gateway.pseudonyms).
_PSEUDONYM = re.compile(r"^[pa][a-z2-7]{10}$")
_ARCHIVES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar", ".zst")
_PICTURES = (".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".bmp", ".webp", ".svg", ".pdf")
_TEXT = (".csv", ".tsv", ".txt", ".json", ".md", ".ipynb", ".py", ".r", ".log", ".yaml", ".yml",
         ".html", ".xml")
_CPR = re.compile(rb"(?<!\d)(0[1-9]|[12]\d|3[01])(0[1-9]|1[0-2])\d{2}-?\d{4}(?!\d)")
_TEXT_SCAN_BYTES = 64 * 1024 * 1024
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
    with open(path, "rb") as handle:
        head = handle.read(132)
    return head[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom")


def check_file(path: Path, relative: str) -> list[Finding]:
    """Findings for one (staged, regular) file; ``relative`` is how it is named to people."""
    name = relative.lower()
    if name.endswith(_ARCHIVES):
        return [Finding(relative, "archive", "export the files themselves")]
    if is_dicom(path):
        return check_dicom(path, relative)
    if name.endswith(_PICTURES):
        return [Finding(relative, "picture")]
    if name.endswith(_TEXT):
        return check_text(path, relative)
    return []


def check_dicom(path: Path, relative: str) -> list[Finding]:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        return [Finding(relative, "unreadable_dicom", type(exc).__name__)]
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


def check_text(path: Path, relative: str) -> list[Finding]:
    with open(path, "rb") as handle:
        data = handle.read(_TEXT_SCAN_BYTES)
    lines = sorted({data.count(b"\n", 0, match.start()) + 1 for match in _CPR.finditer(data)})
    if not lines:
        return []
    shown = ", ".join(str(n) for n in lines[:5]) + (" ..." if len(lines) > 5 else "")
    return [Finding(relative, "cpr_like", f"line {shown}")]


def refusals(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == REFUSE]


def flags(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == FLAG]
