"""The slug guarantees of spawners.nomad.slugs, as a table and as properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spawners.nomad import slugs


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("anna", "anna"),
        ("9lives", "9lives"),
        ("a-b", "a-b"),
        ("Anna", "anna---c883df98d1"),
        ("ANNA", "anna---ba210ebdc2"),
        ("anna.b", "anna-b---3d2d71eebc"),
        ("anna_b", "anna-b---cd28f35c94"),
        ("a--b", "a-b---0c9595e764"),
        ("-a", "a---701aa471ed"),
        ("", "x---055539df4a"),
        ("æøå", "x---bac8d409fb"),
        ("a" * 63, "a" * 63),
        ("a" * 64, "a" * 50 + "---5adb8c3d42"),
    ],
)
def test_safe_slug_table(name: str, expected: str) -> None:
    assert slugs.safe_slug(name) == expected


@pytest.mark.parametrize(
    ("user", "server", "expected"),
    [
        ("anna", "", "jupyter--anna"),
        ("anna", "gpu", "jupyter--anna--gpu"),
        ("a", "b", "jupyter--a--b"),
        ("anna", "GPU run", "jupyter--anna--gpu-run---83cc90b216"),
        ("a--b", "", "jupyter--a-b---61de108377"),
        ("anna.b", "x" * 60, "jupyter--anna-b--" + "x" * 33 + "---031108675d"),
        ("x" * 40, "", "jupyter--" + "x" * 40),
    ],
)
def test_job_id_table(user: str, server: str, expected: str) -> None:
    assert slugs.job_id("jupyter", user, server) == expected


def test_job_id_refuses_unsafe_prefix() -> None:
    with pytest.raises(ValueError, match="job prefix"):
        slugs.job_id("Jupyter", "anna")
    with pytest.raises(ValueError, match="job prefix"):
        slugs.job_id("a" * 48, "anna")


def test_same_user_named_and_default_servers_do_not_collide() -> None:
    assert slugs.job_id("jupyter", "a--b") != slugs.job_id("jupyter", "a", "b")
    assert slugs.job_id("jupyter", "a-b") != slugs.job_id("jupyter", "a", "b")


names = st.text(min_size=0, max_size=80)


@settings(max_examples=400, deadline=None)
@given(names, names, names, names)
def test_properties_valid_bounded_prefixed_injective(u1: str, s1: str, u2: str, s2: str) -> None:
    a = slugs.job_id("jupyter", u1, s1)
    b = slugs.job_id("jupyter", u2, s2)
    for slug in (a, b):
        assert slugs.VALID.match(slug), slug
        assert len(slug) <= 63
        assert slug.startswith(slugs.job_prefix("jupyter"))
    if (u1, s1) != (u2, s2):
        assert a != b


@settings(max_examples=300, deadline=None)
@given(names)
def test_properties_single_slug(name: str) -> None:
    slug = slugs.safe_slug(name)
    assert slugs.VALID.match(slug)
    assert len(slug) <= 63
    assert slugs.safe_slug(name) == slug  # stable
    if slugs.SAFE_PART.match(name) and len(name) <= 63:
        assert slug == name  # readable when already safe
    else:
        assert "---" in slug  # changed names carry the hash mark, safe ones never do
