"""Who may pull, for which modality, within which limits: every refusal's reason and words."""

from __future__ import annotations

import datetime as dt

import pytest

from hub_config.model import SampleLimits, WorkbenchConfig
from services.sample_gateway.access import (
    allowed_modalities,
    check_modality,
    check_pull_bytes,
    check_pull_size,
    project_for_pull,
)
from services.sample_gateway.errors import GatewayError, LimitExceeded, NotAllowed

CONFIG = WorkbenchConfig.model_validate(
    {
        "archive": {"dicomweb_url": "http://archive.invalid/dicom-web"},
        "profiles": [{"slug": "cpu-small", "name": "Small", "cpu": 1, "memory": "1G"}],
        "projects": [
            {"id": "magi", "title": "MAGI", "members": ["anna", "erik"],
             "approval": {"reference": "ETH-2024-17", "expires": "2025-06-30"},
             "archive": {"enabled": True, "modalities": ["CT", "MR"]}},
            {"id": "anyimg", "title": "Any modality", "members": ["anna"],
             "approval": {"reference": "ETH-9", "expires": "2099-12-31"},
             "archive": {"enabled": True}},
            {"id": "noarchive", "title": "No archive", "members": ["anna"],
             "approval": {"reference": "ETH-4", "expires": "2099-12-31"}},
            {"id": "lapsed", "title": "Lapsed and no archive", "members": ["anna"],
             "approval": {"reference": "ETH-3", "expires": "2020-01-31"}},
        ],
    }
)
LIMITS = SampleLimits(max_studies_per_pull=3, max_instances_per_pull=120,
                      max_bytes_per_pull=1536, max_studies_per_day=10)


def refusal(call, *args, **kwargs) -> GatewayError:  # type: ignore[no-untyped-def]
    with pytest.raises(GatewayError) as info:
        call(*args, **kwargs)
    return info.value


# -- project_for_pull ----------------------------------------------------------------------

def test_member_of_an_approved_project_gets_it() -> None:
    project = project_for_pull(CONFIG, "anna", "magi", dt.date(2025, 1, 1))
    assert project.id == "magi"
    assert project is CONFIG.project("magi")


@pytest.mark.parametrize(("user", "project_id"), [("mallory", "magi"), ("anna", "nosuch"), ("erik", "anyimg")])
def test_non_member_or_unknown_project(user: str, project_id: str) -> None:
    error = refusal(project_for_pull, CONFIG, user, project_id, dt.date(2025, 1, 1))
    assert type(error) is NotAllowed
    assert (error.reason, error.status) == ("not_member", 403)
    assert error.message == (
        f"You are not a member of a project called {project_id!r}; only members of an "
        "approved project can search or pull from the archive. Ask your project lead to have "
        "the workbench's admins add you."
    )
    assert error.to_json() == {"error": {"message": error.message, "reason": "not_member"}}


def test_approval_is_valid_through_its_last_day() -> None:
    assert project_for_pull(CONFIG, "anna", "magi", dt.date(2025, 6, 30)).id == "magi"
    error = refusal(project_for_pull, CONFIG, "anna", "magi", dt.date(2025, 7, 1))
    assert type(error) is NotAllowed
    assert (error.reason, error.status) == ("approval_expired", 403)
    assert error.message == (
        "The approval for project magi (ETH-2024-17) expired on 2025-06-30: no searches or "
        "pulls until it is renewed. The project lead renews it with the approving body; the "
        "workbench's admins then enter the new approval."
    )


def test_expiry_is_checked_before_archive_access() -> None:
    error = refusal(project_for_pull, CONFIG, "anna", "lapsed", dt.date(2025, 1, 1))
    assert error.reason == "approval_expired"


def test_archive_not_approved() -> None:
    error = refusal(project_for_pull, CONFIG, "anna", "noarchive", dt.date(2025, 1, 1))
    assert type(error) is NotAllowed
    assert (error.reason, error.status) == ("archive_not_approved", 403)
    assert error.message == (
        "Project noarchive is not approved to pull samples from the archive. The project "
        "owner can apply for archive access."
    )


# -- modalities ----------------------------------------------------------------------------

def test_modality_not_approved() -> None:
    magi = CONFIG.project("magi")
    assert magi is not None
    error = refusal(check_modality, magi, "US")
    assert type(error) is NotAllowed
    assert (error.reason, error.status) == ("modality_not_approved", 403)
    assert error.message == "Project magi is approved for CT, MR only, not US."


@pytest.mark.parametrize(("project_id", "modality"), [("magi", "CT"), ("magi", "MR"), ("magi", None),
                                                      ("magi", ""), ("anyimg", "US")])
def test_allowed_modalities_pass(project_id: str, modality: str | None) -> None:
    project = CONFIG.project(project_id)
    assert project is not None
    assert check_modality(project, modality) is None


def test_allowed_modalities_filter_keeps_order() -> None:
    magi, anyimg = CONFIG.project("magi"), CONFIG.project("anyimg")
    assert magi is not None and anyimg is not None
    assert allowed_modalities(magi, ["SR", "MR", "US", "CT"]) == ["MR", "CT"]
    assert allowed_modalities(anyimg, ["SR", "MR"]) == ["SR", "MR"]
    assert allowed_modalities(magi, []) == []


# -- pull size -----------------------------------------------------------------------------

def test_within_every_limit_passes() -> None:
    assert check_pull_size(LIMITS, studies=3, instances=120, studies_today=7) is None
    assert check_pull_size(LIMITS, studies=0, instances=0, studies_today=10) is None


def test_too_many_studies_per_pull() -> None:
    error = refusal(check_pull_size, LIMITS, studies=4, instances=1, studies_today=0)
    assert type(error) is LimitExceeded
    assert (error.reason, error.status) == ("max_studies_per_pull", 422)
    assert error.message == ("You selected 4 studies; this project may pull at most 3 per pull. "
                             "Select fewer studies.")


def test_too_many_instances_per_pull() -> None:
    error = refusal(check_pull_size, LIMITS, studies=2, instances=121, studies_today=0)
    assert type(error) is LimitExceeded
    assert (error.reason, error.status) == ("max_instances_per_pull", 422)
    assert error.message == ("The selected studies hold 121 images; this project may pull at most "
                             "120 per pull. Select fewer or smaller studies.")


def test_daily_limit_names_usage_and_what_is_left() -> None:
    error = refusal(check_pull_size, LIMITS, studies=3, instances=10, studies_today=8)
    assert type(error) is LimitExceeded
    assert (error.reason, error.status) == ("max_studies_per_day", 422)
    assert error.message == ("This project has pulled 8 studies today; the daily limit is 10, so 2 "
                             "more can be pulled today (the count resets at midnight UTC).")


def test_daily_limit_already_passed_says_none_left() -> None:
    error = refusal(check_pull_size, LIMITS, studies=1, instances=1, studies_today=12)
    assert "pulled 12 studies today; the daily limit is 10, so 0 more" in error.message


def test_per_pull_limits_are_checked_before_the_daily_limit() -> None:
    assert refusal(check_pull_size, LIMITS, studies=4, instances=999, studies_today=99).reason == (
        "max_studies_per_pull"
    )
    assert refusal(check_pull_size, LIMITS, studies=1, instances=999, studies_today=99).reason == (
        "max_instances_per_pull"
    )


# -- pull bytes ----------------------------------------------------------------------------

def test_bytes_up_to_the_limit_pass() -> None:
    assert check_pull_bytes(LIMITS, 1536) is None
    assert check_pull_bytes(LIMITS, 0) is None


@pytest.mark.parametrize(
    ("limit", "received", "words"),
    [
        (1536, 1537, "limit of 1.5 KiB per pull after 1.5 KiB"),
        (1000, 1001, "limit of 1000 B per pull after 1001 B"),
        (1000, 5 * 1024 * 1024, "limit of 1000 B per pull after 5.0 MiB"),
        (2 * 1024**3, 2 * 1024**3 + 300 * 1024**2, "limit of 2.0 GiB per pull after 2.3 GiB"),
        (1024**4, 3 * 1024**4, "limit of 1024.0 GiB per pull after 3072.0 GiB"),
    ],
)
def test_too_many_bytes(limit: int, received: int, words: str) -> None:
    limits = SampleLimits(max_bytes_per_pull=limit)
    error = refusal(check_pull_bytes, limits, received)
    assert type(error) is LimitExceeded
    assert (error.reason, error.status) == ("max_bytes_per_pull", 422)
    assert error.message == (
        f"The pull passed this project's {words}; nothing was delivered. Select fewer studies."
    )
