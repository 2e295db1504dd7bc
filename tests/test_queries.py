"""Search criteria validation and the QIDO-RS queries built from them (pure, golden values)."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from services.sample_gateway.pseudonyms import OFFSET_MAX_DAYS, OFFSET_MIN_DAYS
from services.sample_gateway.queries import (
    STUDY_FIELDS,
    StudyCriteria,
    archive_safe_pattern,
    matches_dates,
    matches_description,
    qido_study_params,
    query_string,
)

INCLUDE_FIELDS = [
    ("includefield", "StudyInstanceUID"), ("includefield", "StudyDate"),
    ("includefield", "StudyTime"), ("includefield", "StudyDescription"),
    ("includefield", "ModalitiesInStudy"), ("includefield", "NumberOfStudyRelatedSeries"),
    ("includefield", "NumberOfStudyRelatedInstances"), ("includefield", "PatientID"),
    ("includefield", "IssuerOfPatientID"), ("includefield", "PatientBirthDate"),
    ("includefield", "PatientSex"), ("includefield", "PatientAge"),
    ("includefield", "PatientName"), ("includefield", "OtherPatientIDs"),
    ("includefield", "ReferringPhysicianName"),
]


def errors(**criteria: object) -> list[tuple[tuple, str, str]]:
    with pytest.raises(ValidationError) as info:
        StudyCriteria(**criteria)  # type: ignore[arg-type]
    return [(e["loc"], e["type"], e["msg"]) for e in info.value.errors()]


# -- StudyCriteria -------------------------------------------------------------------------

def test_defaults_and_normalisation() -> None:
    c = StudyCriteria(modality=" mr ", description="  head  ", date_from="2021-01-02")  # type: ignore[arg-type]
    assert (c.modality, c.description, c.date_from, c.date_to, c.limit, c.offset) == (
        "MR", "head", dt.date(2021, 1, 2), None, 50, 0
    )
    assert StudyCriteria(modality="", description="   ").audit_view() == {"limit": 50, "offset": 0}
    assert c.audit_view() == {"modality": "MR", "description": "head", "date_from": "2021-01-02",
                              "limit": 50, "offset": 0}


@pytest.mark.parametrize("modality", ["C T", "CT;DROP", "*", "C\\T", "CT*", "X" * 17, "ÄR"])
def test_bad_modality_is_refused_with_a_readable_message(modality: str) -> None:
    assert errors(modality=modality) == [
        (("modality",), "value_error", "Value error, a modality is a code such as CT, MR, US or CR")
    ]


@pytest.mark.parametrize("modality", ["CT", "mr", "PT", "OT", "A1B2C3D4E5F6G7H8"])
def test_good_modalities(modality: str) -> None:
    assert StudyCriteria(modality=modality).modality == modality.upper()


def test_date_order() -> None:
    assert errors(date_from="2021-02-01", date_to="2021-01-31") == [
        ((), "value_error", "Value error, date_from is after date_to")
    ]
    same = StudyCriteria(date_from="2021-02-01", date_to="2021-02-01")  # type: ignore[arg-type]
    assert same.date_from == same.date_to == dt.date(2021, 2, 1)


def test_extra_fields_are_refused() -> None:
    assert errors(PatientName="Doe^J") == [(("PatientName",), "extra_forbidden", "Extra inputs are not permitted")]


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [("limit", 0, "greater_than_equal"), ("limit", 201, "less_than_equal"),
     ("offset", -1, "greater_than_equal"), ("description", "x" * 65, "string_too_long"),
     ("date_from", "2021-13-01", "date_from_datetime_parsing")],
)
def test_field_bounds(field: str, value: object, kind: str) -> None:
    [(loc, error_type, _)] = errors(**{field: value})
    assert (loc, error_type) == ((field,), kind)


# -- archive_safe_pattern ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("Head CT (contrast)", "*contrast*"),
        ("head", "*head*"),
        ("CT THORAX FOLLOW-UP", "*THORAX*"),  # first of the longest words
        ("follow-up THÓRAX", "*follow*"),
        ("Schädel", "*Sch*del*"),  # a non-ASCII letter becomes '*': matches in any encoding
        ("T1 weighted 3D", "*weighted*"),
        ("%2A?&=", "*2A*"),  # never percent-decoded
        ("?&= (%) --", "*"),
        ("", "*"),
        ("ÆØÅ", "*"),  # no ASCII at all: no filter at the archive, the gateway filters
        ("Røntgen thorax", "*thorax*"),  # the word with the longest ASCII run
    ],
)
def test_archive_safe_pattern(text: str, pattern: str) -> None:
    assert archive_safe_pattern(text) == pattern


# -- qido_study_params ---------------------------------------------------------------------

def test_qido_params_without_criteria() -> None:
    assert qido_study_params(StudyCriteria(), limit=51, offset=0) == [
        *INCLUDE_FIELDS, ("limit", "51"), ("offset", "0")
    ]
    assert [name for kind, name in INCLUDE_FIELDS] == list(STUDY_FIELDS)


def test_qido_params_with_every_criterion() -> None:
    criteria = StudyCriteria(modality="ct", date_from="2020-01-01", date_to="2020-12-31",  # type: ignore[arg-type]
                             description="Head CT (contrast)", limit=10, offset=20)
    assert qido_study_params(criteria, limit=11, offset=40) == [
        ("ModalitiesInStudy", "CT"),
        ("StudyDate", "20210101-20301229"),  # every original date a shift moves into 2020
        ("StudyDescription", "*contrast*"),
        *INCLUDE_FIELDS,
        ("limit", "11"),
        ("offset", "40"),
    ]


@pytest.mark.parametrize(
    ("dates", "value"),
    [({"date_from": "2020-03-04"}, "20210305-"), ({"date_to": "2020-03-04"}, "-20300302"),
     ({"date_to": "9999-12-01"}, "-99991231"), ({"date_from": "0001-01-01"}, "00020102-")],
)
def test_qido_open_date_ranges(dates: dict[str, str], value: str) -> None:
    assert qido_study_params(StudyCriteria(**dates), limit=1, offset=0)[0] == ("StudyDate", value)  # type: ignore[arg-type]


@pytest.mark.parametrize("offset", [OFFSET_MIN_DAYS, OFFSET_MAX_DAYS, -1000])
def test_the_archive_is_asked_for_every_original_date_a_shift_moves_into_the_range(offset: int) -> None:
    criteria = StudyCriteria(date_from="2020-01-01", date_to="2020-12-31")  # type: ignore[arg-type]
    start, end = qido_study_params(criteria, limit=1, offset=0)[0][1].split("-")
    for shown in (dt.date(2020, 1, 1), dt.date(2020, 12, 31)):
        original = (shown - dt.timedelta(days=offset)).strftime("%Y%m%d")
        assert start <= original <= end


def test_dates_match_on_the_shifted_date_only() -> None:
    criteria = StudyCriteria(date_from="2020-01-01", date_to="2020-12-31")  # type: ignore[arg-type]
    assert matches_dates(criteria, "2020-01-01") and matches_dates(criteria, "2020-12-31")
    assert not matches_dates(criteria, "2019-12-31") and not matches_dates(criteria, "2021-01-01")
    assert not matches_dates(criteria, "")  # no date: not in any range
    assert matches_dates(StudyCriteria(date_from="2020-06-01"), "2024-01-01")  # type: ignore[arg-type]
    assert matches_dates(StudyCriteria(), "")


def test_description_without_words_sends_no_description_filter() -> None:
    params = qido_study_params(StudyCriteria(description="?!%"), limit=5, offset=0)
    assert [p for p in params if p[0] == "StudyDescription"] == []


def test_built_queries_pass_query_string() -> None:
    criteria = StudyCriteria(modality="MR", date_from="2020-01-01", date_to="2020-12-31",  # type: ignore[arg-type]
                             description="knee, left (MRI) – ÄØ")
    text = query_string(qido_study_params(criteria, limit=3, offset=6))
    assert text.startswith("ModalitiesInStudy=MR&StudyDate=20210101-20301229&StudyDescription=*knee*&"
                           "includefield=StudyInstanceUID&")
    assert text.endswith("&includefield=ReferringPhysicianName&limit=3&offset=6")


# -- query_string --------------------------------------------------------------------------

def test_query_string_joins_without_encoding() -> None:
    assert query_string([("a", "*x*"), ("b", "1.2-3"), ("c", "")]) == "a=*x*&b=1.2-3&c="
    assert query_string([]) == ""


@pytest.mark.parametrize("value", ["a b", "%2A", "x&y=1", "a=b", "?", "é", "a,b", "x/y", "a+b", "\\", "a\nb", "^"])
def test_query_string_refuses_unsafe_values(value: str) -> None:
    with pytest.raises(ValueError) as info:
        query_string([("limit", "1"), ("StudyDescription", value)])
    assert str(info.value) == f"unsafe QIDO value for StudyDescription: {value!r}"


# -- matches_description -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("search", "description", "matches"),
    [
        ("thorax", "CT THORAX FOLLOW-UP", True),  # case
        ("THÓRAX", "ct thorax", True),  # accents in the search
        ("schadel", "CT Schädel nativ", True),  # accents in the description
        ("follow-up thorax", "CT THORAX FOLLOW-UP", True),  # any order
        ("thorax abdomen", "CT THORAX", False),  # all words
        ("thorax abdomen", "CT Thorax/Abdomen", True),
        ("head", "CT THORAX", False),
        ("head", None, False),
        ("head", "", False),
        ("  ", "anything", True),  # no description criterion
    ],
)
def test_matches_description(search: str, description: str | None, matches: bool) -> None:
    assert matches_description(StudyCriteria(description=search), description) is matches


def test_no_description_criterion_matches_everything() -> None:
    assert matches_description(StudyCriteria(), None) is True
