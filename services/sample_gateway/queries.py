"""Researchers' search criteria and the QIDO-RS queries built from them (pure).

Archives differ in how they read query values: Orthanc's DICOMweb plugin, for one, does not
percent-decode them, so a value sent as ``%2Ahead%20ct%2A`` matches nothing. The query sent
therefore only carries the longest word of the description between ``*`` wildcards,
which every archive reads the same way, and the gateway then applies the whole criterion
itself (:func:`matches_description`: every word, any order, any case or accent). A search
can only match more at the archive, never silently less.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

STUDY_FIELDS = (
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyDescription", "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "PatientID",
    "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
)


class StudyCriteria(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modality: str | None = Field(None, description="DICOM modality code, e.g. CT or MR.")
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    description: str | None = Field(None, max_length=64)
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0)

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
        return self.model_dump(mode="json", exclude_none=True)


def archive_safe_pattern(text: str) -> str:
    """``'Head CT (contrast)'`` -> ``'*contrast*'``: the longest plain word, in wildcards."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[A-Za-z0-9]+", ascii_text)
    return f"*{max(words, key=len)}*" if words else "*"


def qido_study_params(criteria: StudyCriteria, *, limit: int, offset: int) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    if criteria.modality:
        params.append(("ModalitiesInStudy", criteria.modality))
    if criteria.date_from or criteria.date_to:
        start = criteria.date_from.strftime("%Y%m%d") if criteria.date_from else ""
        end = criteria.date_to.strftime("%Y%m%d") if criteria.date_to else ""
        params.append(("StudyDate", f"{start}-{end}"))
    if criteria.description:
        pattern = archive_safe_pattern(criteria.description)
        if pattern != "*":
            params.append(("StudyDescription", pattern))
    params.extend(("includefield", name) for name in STUDY_FIELDS)
    params.append(("limit", str(limit)))
    params.append(("offset", str(offset)))
    return params


def query_string(params: list[tuple[str, str]]) -> str:
    """Join parameters without percent-encoding; values are restricted to safe characters."""
    for name, value in params:
        if not re.fullmatch(r"[A-Za-z0-9*\-.]*", value):
            raise ValueError(f"unsafe QIDO value for {name}: {value!r}")
    return "&".join(f"{name}={value}" for name, value in params)


def matches_description(criteria: StudyCriteria, description: str | None) -> bool:
    """The exact criterion: every word of the search appears, case- and accent-insensitive."""
    if not criteria.description:
        return True
    haystack = _fold(description or "")
    return all(word in haystack for word in _fold(criteria.description).split())


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
