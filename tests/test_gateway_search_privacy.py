"""Search criteria decide on what a researcher sees, never on what de-identification hid:
otherwise searching again and again reveals a name or number cleaned out of a description,
or a study's original date, one guess at a time (found by an adversarial trial)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.sample_gateway.gateway import Gateway
from services.sample_gateway.queries import StudyCriteria
from tests.fixtures.fake_dicomweb import FakeArchive
from tests.test_gateway_attack import CT, gateway_for

NAME, CPR = "SOEGAARD^KIRSTEN", "0101601234"


def archive() -> FakeArchive:
    fake = FakeArchive()
    fake.add_study(f"CT THORAX Soegaard {CPR}", [(CT, "axial", 1)], date="20230214", patient=(CPR, NAME))
    fake.add_study("CT THORAX", [(CT, "axial", 1)], date="20230301", patient=("0202702345", "HANSEN^BO"))
    return fake


async def keys_found(gateway: Gateway, **criteria: object) -> list[str]:
    answer = await gateway.search("anna", "magi", StudyCriteria(**criteria))
    return sorted(s["study_key"] for s in answer["studies"])


async def test_what_cleaning_removed_from_a_description_finds_nothing(tmp_path: Path) -> None:
    async with gateway_for(archive(), tmp_path) as gateway:
        studies = (await gateway.search("anna", "magi", StudyCriteria()))["studies"]
        assert len(studies) == 2 and all(s["description"] == "CT THORAX" for s in studies), studies
        assert await keys_found(gateway, description="thorax") == sorted(s["study_key"] for s in studies)
        for guess in ("soegaard", "Soegaard thorax", CPR, CPR[:6], CPR[:8]):
            assert await keys_found(gateway, description=guess) == [], guess


async def test_dates_are_searched_as_shown(tmp_path: Path) -> None:
    async with gateway_for(archive(), tmp_path) as gateway:
        studies = (await gateway.search("anna", "magi", StudyCriteria()))["studies"]
        target = studies[0]
        shown = target["study_date"]
        assert target["study_key"] in await keys_found(gateway, date_from=shown, date_to=shown)
        # The original dates, searched day by day, find only studies shown on that day.
        for original in ("2023-02-14", "2023-03-01"):
            found = (await gateway.search("anna", "magi", StudyCriteria(
                date_from=original, date_to=original)))["studies"]  # type: ignore[arg-type]
            assert all(s["study_date"] == original for s in found), found
        # An open range works on the shown dates as well.
        assert target["study_key"] in await keys_found(gateway, date_to=shown)
        assert target["study_key"] not in await keys_found(gateway, date_to="1900-01-01")


async def test_nothing_shown_depends_on_original_dates(tmp_path: Path) -> None:
    """A second trial bisected the original date through the scan notice's count of studies
    read (the archive is asked a widened range of original dates): the answer must be the
    same whether or not that range holds the study's original date."""
    async with gateway_for(archive(), tmp_path) as gateway:
        answers = []
        for date_from in ("2021-01-01", "2022-02-15", "2022-02-16", "2022-03-02", "2030-01-01"):
            answer = await gateway.search("anna", "magi", StudyCriteria(
                description="zzqqxx", date_from=date_from))  # type: ignore[arg-type]
            assert answer["studies"] == []
            answers.append((answer["notices"], answer["complete"], answer["next_page"]))
        assert all(a == answers[0] for a in answers), answers
        assert any("read the studies" in n for n in answers[0][0])


async def test_page_tokens_carry_no_plain_hash_of_an_original_uid(tmp_path: Path) -> None:
    import hashlib

    fake = archive()
    async with gateway_for(fake, tmp_path) as gateway:
        magi = (await gateway.search("anna", "magi", StudyCriteria(limit=1)))["next_page"]
        kina = (await gateway.search("bo", "kina", StudyCriteria(limit=1)))["next_page"]
    assert magi and kina and magi != kina  # keyed per project: not linkable
    for study in fake.studies:
        plain = hashlib.sha256(study.uid.encode()).hexdigest()[:16]
        assert plain not in magi and plain not in kina


async def test_whether_there_is_a_next_page_depends_on_shown_studies_only(tmp_path: Path) -> None:
    """A third trial told hidden records apart by the next_page token: a study of the same
    original date as a shown one, hidden because its shift moves it out of the range."""
    for order in ("shown first", "hidden first"):
        fake = FakeArchive()
        studies = [("CT THORAX", ("0101601234", NAME)), ("CT HEAD", ("0202702345", "HANSEN^BO"))]
        for description, patient in (studies if order == "shown first" else studies[::-1]):
            fake.add_study(description, [(CT, "axial", 1)], date="20230214", patient=patient)
        async with gateway_for(fake, tmp_path / order) as gateway:
            everything = (await gateway.search("anna", "magi", StudyCriteria()))["studies"]
            shown = next(s for s in everything if s["description"] == "CT THORAX")["study_date"]
            hidden = next(s for s in everything if s["description"] == "CT HEAD")["study_date"]
            assert shown != hidden  # one original date, two shifts
            answer = await gateway.search("anna", "magi", StudyCriteria(
                date_from=shown, date_to=shown, limit=1))  # type: ignore[arg-type]
            assert [s["description"] for s in answer["studies"]] == ["CT THORAX"]
            assert answer["next_page"] is None, order


async def test_page_tokens_are_fresh_each_time_and_only_for_their_search(tmp_path: Path) -> None:
    from services.sample_gateway.errors import BadRequest

    async with gateway_for(archive(), tmp_path) as gateway:
        first = await gateway.search("anna", "magi", StudyCriteria(limit=1))
        again = await gateway.search("anna", "magi", StudyCriteria(limit=1))
        assert first["studies"] == again["studies"] and first["next_page"] != again["next_page"]
        for token in (first["next_page"], again["next_page"]):
            rest = await gateway.search("anna", "magi", StudyCriteria(limit=5, page=token))
            assert len(rest["studies"]) == 1 and rest["studies"] != first["studies"]
            assert rest["next_page"] is None
        with pytest.raises(BadRequest, match="search again"):  # another search's token
            await gateway.search("anna", "magi", StudyCriteria(description="thorax", page=first["next_page"]))
        with pytest.raises(BadRequest, match="search again"):  # another researcher's
            await gateway.search("bo", "kina", StudyCriteria(page=first["next_page"]))
