"""Researchers' search criteria and the archive queries built from them (pure).

Archives differ in how they read query values:

- Orthanc's DICOMweb plugin does not percent-decode them, so a value sent as
  ``%2Ahead%20ct%2A`` matches nothing. The archive therefore only gets the longest word of
  the description between ``*`` wildcards, in characters no archive reads differently
  (ASCII letters and digits; a non-ASCII letter inside the word becomes ``*``, so
  ``Schädel`` is sent as ``*Sch*del*`` and matches however the archive encodes the umlaut),
  and the gateway then applies the whole criterion itself (:func:`matches_description`:
  every word, any order, any case or accent).
- Matching of text values is case-sensitive in DICOM (PS3.4 C.2.2.2), and real archives do
  it both ways: Orthanc's QIDO-RS ignores case, its C-FIND does not. Unless the archive is
  known to ignore case, a search plan asks for three spellings of the word (``THORAX``,
  ``Thorax``, ``thorax``); :func:`wildcard_match` lets the gateway drop a study that an
  earlier spelling already returned, so paging over the spellings never repeats a study.
- A word in an unusual spelling (``tHoRaX``, an accent the search lacks) is still missed
  by every spelling: when all of them find nothing, the plan's last query reads the studies
  of the date and modality range without a description (a bounded scan) and filters them
  at the gateway. A search never silently returns nothing because of how the archive matches.

Criteria decide on what the researcher sees, never on what de-identification removed: the
description on the cleaned description, the dates on the shifted dates (the archive is
asked for every original date a shift could have moved into the range). Otherwise searching
again and again would reveal a name or number cleaned out of a description, or a study's
original date, one guess at a time.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .pseudonyms import OFFSET_MAX_DAYS, OFFSET_MIN_DAYS

#: What a study search asks for. The names are never shown: de-identifying a record cleans
#: its description of them, and a C-FIND answer holds only the keys it was asked for.
STUDY_FIELDS = (
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyDescription", "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "PatientID",
    "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientName",
    "OtherPatientIDs", "ReferringPhysicianName",
)


MAX_OFFSET = 1_000_000  # far past any archive's answers; keeps offsets in 32 bits


class StudyCriteria(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modality: str | None = Field(None, description="DICOM modality code, e.g. CT or MR.")
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    description: str | None = Field(None, max_length=64)
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=MAX_OFFSET,
                        description="Start in the archive's first answer (prefer page).")
    page: str | None = Field(
        None, max_length=64, description="The next_page token of an earlier answer: go on there."
    )

    @field_validator("modality")
    @classmethod
    def _modality(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        value = value.strip().upper()
        if not re.fullmatch(r"[A-Z0-9]{1,16}", value):
            raise ValueError("a modality is a code such as CT, MR, US or CR")
        return value

    @field_validator("description")
    @classmethod
    def _description(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        return value or None

    @model_validator(mode="after")
    def _date_order(self) -> StudyCriteria:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("date_from is after date_to")
        return self

    def audit_view(self) -> dict[str, object]:
        return self.model_dump(mode="json", exclude_none=True, exclude={"page"})


def archive_safe_pattern(text: str) -> str:
    """``'Head CT (contrast)'`` -> ``'*contrast*'``: the most selective word, in wildcards.

    Words are runs of letters and digits. ASCII letters and digits are sent as they are; a
    letter that is not ASCII becomes ``*`` (``Schädel`` -> ``Sch*del``), so the pattern
    matches the word whatever character set or accent the archive holds. The word with the
    longest ASCII run wins (the first of equals). ``'*'`` means: no filter at the archive.
    """
    best, best_score = "", 0
    for word in re.findall(r"[^\W_]+", text):
        runs = re.findall(r"[A-Za-z0-9]+", word)
        score = max((len(r) for r in runs), default=0)
        if score > best_score:
            best, best_score = "*".join(_ascii_runs(word)), score
    return f"*{best}*" if best else "*"


def _ascii_runs(word: str) -> list[str]:
    """``'Schädel'`` -> ``['Sch', 'del']``; ``'Ærø'`` -> ``['r']``."""
    return [r for r in re.split(r"[^A-Za-z0-9]+", word) if r]


def spellings(pattern: str) -> list[str]:
    """The spellings a case-sensitive archive is asked for: upper, capitalised, lower."""
    inner = pattern.strip("*")
    variants = [inner.upper(), inner[:1].upper() + inner[1:].lower(), inner.lower()]
    out: list[str] = []
    for variant in variants:
        if f"*{variant}*" not in out:
            out.append(f"*{variant}*")
    return out


@dataclass(frozen=True)
class StudyQuery:
    """One study-level query as an archive gets it, whatever the integration."""

    modality: str | None = None
    date_range: str | None = None  # 'YYYYMMDD-YYYYMMDD', either side may be empty
    description: str | None = None  # a wildcard pattern such as '*THORAX*'
    scan: bool = False  # the fallback: no description at the archive, filtered here


@dataclass(frozen=True)
class SearchPlan:
    """The queries of one search, in order; :attr:`queries` ends with the scan, if any."""

    queries: tuple[StudyQuery, ...]

    @property
    def spelled(self) -> tuple[StudyQuery, ...]:
        return tuple(q for q in self.queries if not q.scan)


def search_plan(criteria: StudyCriteria, *, case_insensitive: bool) -> SearchPlan:
    base = StudyQuery(modality=criteria.modality, date_range=_date_range(criteria))
    pattern = archive_safe_pattern(criteria.description) if criteria.description else "*"
    if pattern == "*":
        return SearchPlan((base,))
    patterns = [pattern] if case_insensitive else spellings(pattern)
    queries = [StudyQuery(base.modality, base.date_range, p) for p in patterns]
    queries.append(StudyQuery(base.modality, base.date_range, None, scan=True))
    return SearchPlan(tuple(queries))


def _date_range(criteria: StudyCriteria) -> str | None:
    """What the archive is asked for: every original date that a shift could have moved
    into the searched range (researchers search the shifted dates they see; the exact
    range is applied here, by :func:`matches_dates`, to the shifted dates only)."""
    if not (criteria.date_from or criteria.date_to):
        return None
    start = _plus_days(criteria.date_from, -OFFSET_MAX_DAYS) if criteria.date_from else ""
    end = _plus_days(criteria.date_to, -OFFSET_MIN_DAYS) if criteria.date_to else ""
    return f"{start}-{end}"


def _plus_days(day: dt.date, days: int) -> str:
    try:
        moved = day + dt.timedelta(days=days)
    except OverflowError:
        moved = dt.date.max
    return f"{moved.year:04d}{moved.month:02d}{moved.day:02d}"  # strftime drops zeros before 1000


def matches_dates(criteria: StudyCriteria, shifted_date: str) -> bool:
    """The exact date criterion, on the study's shifted date (ISO, as a researcher sees it).

    Never on the original date: a range the archive matched against original dates would
    let a researcher narrow a shown study's original date down to the day by searching
    again and again. A study without a date does not match a date range.
    """
    if not (criteria.date_from or criteria.date_to):
        return True
    try:
        day = dt.date.fromisoformat(shifted_date)
    except ValueError:
        return False
    return (criteria.date_from is None or day >= criteria.date_from) and (
        criteria.date_to is None or day <= criteria.date_to)


def qido_params(query: StudyQuery, *, limit: int, offset: int) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    if query.modality:
        params.append(("ModalitiesInStudy", query.modality))
    if query.date_range:
        params.append(("StudyDate", query.date_range))
    if query.description:
        params.append(("StudyDescription", query.description))
    params.extend(("includefield", name) for name in STUDY_FIELDS)
    params.append(("limit", str(limit)))
    params.append(("offset", str(offset)))
    return params


def qido_study_params(criteria: StudyCriteria, *, limit: int, offset: int) -> list[tuple[str, str]]:
    """The first query of a case-insensitive plan, as QIDO-RS parameters."""
    return qido_params(search_plan(criteria, case_insensitive=True).queries[0], limit=limit, offset=offset)


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """DICOM wildcard matching (``*`` any run, ``?`` one character) of a whole value."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.fullmatch(regex, value, flags) is not None


def query_string(params: list[tuple[str, str]]) -> str:
    """Join parameters without percent-encoding; values are restricted to safe characters."""
    for name, value in params:
        if not re.fullmatch(r"[A-Za-z0-9*\-.]*", value):
            raise ValueError(f"unsafe QIDO value for {name}: {value!r}")
    return "&".join(f"{name}={value}" for name, value in params)


def matches_description(criteria: StudyCriteria, description: str | None) -> bool:
    """The exact criterion: every word of the search appears, case- and accent-insensitive,
    in the de-identified description (the one the researcher sees).

    Words are runs of letters and digits: punctuation and wildcards a researcher types
    (``head^ct``, ``*thorax?``) separate words and match nothing by themselves.
    """
    if not criteria.description:
        return True
    haystack = _fold(description or "")
    return all(word in haystack for word in re.findall(r"[^\W_]+", _fold(criteria.description)))


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
