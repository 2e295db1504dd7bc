"""Who may start what: the pure rules behind the spawn form and the REST API."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from hub_config.loader import parse_config
from spawners.form import options_from_formdata, render_options_form
from spawners.selection import SelectionRefused, choices_for, resolve_selection

CONFIG = parse_config(
    """\
profiles:
  - {slug: small, name: Small, cpu: 1, memory: 1G}
  - {slug: big, name: Big <b>, cpu: 8, memory: 32G, projects: [alpha]}
  - {slug: gpu, name: GPU, cpu: 8, memory: 32G, gpus: 1, projects: [alpha]}
projects:
  - id: alpha
    title: Alpha & co
    members: [ada, bob]
    approval: {reference: REF-A, expires: 2030-01-31}
    datasets: [scans]
  - id: beta
    title: Beta
    members: [bob]
    approval: {reference: REF-B, expires: 2020-06-30}
  - id: gamma
    title: Gamma
    members: [cy]
    approval: {reference: REF-G, expires: 2030-01-31}
datasets:
  - {id: scans, title: Scans, path: datasets/scans, owner: Radiology, kind: imaging,
     sensitivity: pseudonymised, legal_basis: GDPR 6(1)(e) and 9(2)(j),
     approval: {reference: DUA-1, expires: 2030-01-31}, projects: [alpha]}
"""
)
TODAY = dt.date(2026, 12, 3)


def refused(username: str, options: dict) -> SelectionRefused:
    with pytest.raises(SelectionRefused) as caught:
        resolve_selection(CONFIG, username, options, TODAY)
    return caught.value


def test_member_gets_project_profile_and_datasets() -> None:
    selection = resolve_selection(CONFIG, "ada", {"project": "alpha", "profile": "big"}, TODAY)
    assert (selection.project.id, selection.profile.slug) == ("alpha", "big")
    assert [d.id for d in selection.datasets] == ["scans"]


def test_single_project_and_default_profile_are_implied() -> None:
    selection = resolve_selection(CONFIG, "ada", {}, TODAY)
    assert (selection.project.id, selection.profile.slug) == ("alpha", "small")


def test_approval_valid_through_its_last_day() -> None:
    last_day = dt.date(2030, 1, 31)
    assert resolve_selection(CONFIG, "ada", {"project": "alpha"}, last_day).project.id == "alpha"
    with pytest.raises(SelectionRefused, match="expired on 2030-01-31"):
        resolve_selection(CONFIG, "ada", {"project": "alpha"}, last_day + dt.timedelta(days=1))


@pytest.mark.parametrize(
    ("user", "options", "reason", "message"),
    [
        ("bob", {"project": "beta"}, "approval_expired", "approval for project beta (REF-B) expired on 2020-06-30"),
        ("ada", {"project": "gamma"}, "not_member", "not a member of a project called 'gamma'. Your projects: alpha."),
        ("ada", {"project": "nosuch"}, "not_member", "not a member of a project called 'nosuch'"),
        ("cy", {"project": "gamma", "profile": "big"}, "profile_not_allowed", "Project gamma may not use the profile 'big'"),
        ("ada", {"project": "alpha", "profile": "huge"}, "bad_profile", "no compute profile called 'huge'"),
        ("ada", {"project": "alpha", "image": "evil"}, "bad_options", "Unknown server option(s): image"),
        ("bob", {}, "bad_options", "Choose a project: you are a member of alpha, beta."),
        ("eve", {}, "no_project", "eve is not a member of any project"),
    ],
)
def test_refusals_say_why(user: str, options: dict, reason: str, message: str) -> None:
    refusal = refused(user, options)
    assert refusal.reason == reason
    assert message in refusal.message


def test_options_must_be_an_object() -> None:
    assert refused("ada", ["alpha"]).reason == "bad_options"  # type: ignore[arg-type]


def test_choices_mark_expired_projects() -> None:
    choices = choices_for(CONFIG, "bob", TODAY)
    assert [(c.project.id, c.unavailable is None) for c in choices] == [("alpha", True), ("beta", False)]
    assert [p.slug for p in choices[0].profiles] == ["small", "big", "gpu"]
    assert [p.slug for p in choices[1].profiles] == ["small"]


def test_form_offers_only_own_projects_escaped_with_reasons() -> None:
    html = render_options_form(
        choices_for(CONFIG, "bob", TODAY),
        project_notes={"alpha": ["GPU-hours left: 12 of 200"]},
        unavailable_profiles={"gpu": "no GPUs <here>"},
    )
    assert re.findall(r'<option value="(\w+)"', html) == ["alpha", "beta"]
    assert 'value="beta" data-profiles="small" disabled' in html
    assert "gamma" not in html
    assert 'data-profiles="small big gpu" selected' in html
    assert "Alpha &amp; co" in html and "Big &lt;b&gt;" in html
    assert "no GPUs &lt;here&gt;" in html and "wb-profile radio wb-unavailable" in html
    assert "GPU-hours left: 12 of 200" in html
    assert "approval for project beta (REF-B) expired" in html
    assert "Datasets mounted read-only: scans." in html


def test_form_for_someone_without_projects() -> None:
    assert "not a member of any project" in render_options_form([])


def test_stewards_and_admins_without_projects_are_shown_their_pages() -> None:
    from spawners.workbench import _pages_for

    config = CONFIG.model_copy(update={"admins": ["root-admin"], "data_stewards": ["steffen"]})
    assert _pages_for(config, "steffen", "/hub/") == [("Export requests to review (the airlock)", "/services/airlock/")]
    assert [url for _, url in _pages_for(config, "root-admin", "/wb/hub/")] == ["/wb/hub/admin", "/wb/services/quota/"]
    assert _pages_for(config, "nobody", "/hub/") == []
    html = render_options_form([], elsewhere=_pages_for(config, "steffen", "/hub/"))
    assert '<a href="/services/airlock/">Export requests to review (the airlock)</a>' in html
    assert "button.disabled = true" in html and "Ask the workbench admins" not in html


def test_form_data_to_options() -> None:
    assert options_from_formdata({"project": ["alpha"], "profile": ["big"], "x": ["y"]}) == {
        "project": "alpha",
        "profile": "big",
    }
    assert options_from_formdata({"project": [""]}) == {}


def test_form_when_no_project_can_start() -> None:
    html = render_options_form([c for c in choices_for(CONFIG, "bob", TODAY) if c.project.id == "beta"])
    assert "approval for project beta (REF-B) expired" in html
    assert "None of your projects can start a server now." in html
    assert "<select" not in html and "button.disabled = true" in html
    assert "button.disabled = true" in render_options_form([])
