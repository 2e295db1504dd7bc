"""Search criteria decide on what a researcher sees, never on what de-identification hid:
otherwise searching again and again reveals a name or number cleaned out of a description,
or a study's original date, one guess at a time (found by an adversarial trial)."""

from __future__ import annotations

from pathlib import Path

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
