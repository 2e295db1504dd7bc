"""Search results as researchers see them: pseudonyms, ages and shifted dates only.

A QIDO-RS study record passes through the same de-identification as delivered files, so a
result list and the files pulled from it agree (the study key is the de-identified
StudyInstanceUID, the patient pseudonym is the de-identified PatientID). What the gateway
needs to pull the study later stays on the gateway side, in :class:`StudyIdentity`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom import Dataset

from .deidentify import DeidPolicy, deidentify
from .pseudonyms import ProjectKeys

_SUMMARY_POLICY = DeidPolicy(allow_burned_in_annotation=True)  # a record has no pixels


@dataclass(frozen=True)
class StudyIdentity:
    """Gateway-private: never sent to a researcher."""

    study_uid: str
    patient_id: str
    issuer: str


def summarize_study(item: dict[str, Any], keys: ProjectKeys) -> tuple[dict[str, Any], StudyIdentity] | None:
    original = Dataset.from_json(item)
    study_uid = str(original.get("StudyInstanceUID", "") or "")
    if not study_uid:
        return None
    identity = StudyIdentity(
        study_uid=study_uid,
        patient_id=str(original.get("PatientID", "") or ""),
        issuer=str(original.get("IssuerOfPatientID", "") or ""),
    )
    clean = deidentify(original, keys, _SUMMARY_POLICY).dataset
    modalities = original.get("ModalitiesInStudy", [])
    if isinstance(modalities, str):
        modalities = [modalities]
    study = {
        "study_key": str(clean.StudyInstanceUID),
        "patient": str(clean.get("PatientID", "")),
        "age": _age(str(clean.get("PatientAge", "") or "")),
        "study_date": _iso_date(str(clean.get("StudyDate", "") or "")),
        "description": str(clean.get("StudyDescription", "") or ""),
        "modalities": sorted(str(m) for m in modalities if m),
        "series": _int(original.get("NumberOfStudyRelatedSeries")),
        "instances": _int(original.get("NumberOfStudyRelatedInstances")),
    }
    return study, identity


def _age(value: str) -> str:
    """'045Y' -> '45 years', '006M' -> '6 months'."""
    units = {"Y": "years", "M": "months", "W": "weeks", "D": "days"}
    if len(value) == 4 and value[:3].isdigit() and value[3] in units:
        return f"{int(value[:3])} {units[value[3]]}"
    return ""


def _iso_date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else ""


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
