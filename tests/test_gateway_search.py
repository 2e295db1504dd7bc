"""Paging a search plan (pure orchestration) over a scripted archive: cursors, caps, scans."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom import Dataset

from services.sample_gateway.errors import ArchiveTimeout, BadRequest
from services.sample_gateway.integration import ArchiveTraits, StudyPage
from services.sample_gateway.queries import StudyCriteria, StudyQuery, search_plan
from services.sample_gateway.search import Cursor, run_search


def record(n: int, description: str = "CT THORAX") -> dict[str, Any]:
    ds = Dataset()
    ds.StudyInstanceUID = f"1.2.3.{n}"
    ds.StudyDescription = description
    return ds.to_json_dict()


class Scripted:
    """An archive answering from a list, C-FIND style (it knows when there are more)."""

    name = "Scripted"
    integration = "test"

    def __init__(self, records: list[dict[str, Any]], *, cap: int | None = None,
                 fail_after: int | None = None, ignore_case: bool = False) -> None:
        self.records = records
        self.cap = cap
        self.fail_after = fail_after
        self.ignore_case = ignore_case
        self.calls: list[tuple[StudyQuery, int, int]] = []
        self.traits = ArchiveTraits()

    async def find_studies(self, query: StudyQuery, *, limit: int, offset: int) -> StudyPage:
        self.calls.append((query, limit, offset))
        if self.fail_after is not None and len(self.calls) > self.fail_after:
            raise ArchiveTimeout("Scripted did not answer within 1 s.")
        matches = [r for r in self.records if self._match(query, r)]
        if self.cap is not None and len(matches) > self.cap:
            end = offset + limit
            return StudyPage(matches[offset:min(end, self.cap)], more=end < self.cap, capped=end >= self.cap)
        return StudyPage(matches[offset:offset + limit], more=len(matches) > offset + limit)

    def _match(self, query: StudyQuery, item: dict[str, Any]) -> bool:
        if not query.description:
            return True
        word = query.description.strip("*")
        text = item["00081030"]["Value"][0]
        return word.lower() in text.lower() if self.ignore_case else word in text


def accept_all(item: dict[str, Any]) -> str:
    return item["0020000D"]["Value"][0]


def plan(description: str | None = None, case_insensitive: bool = False):  # type: ignore[no-untyped-def]
    return search_plan(StudyCriteria(description=description), case_insensitive=case_insensitive)


@pytest.mark.parametrize("cursor", [Cursor(), Cursor(2, 150, True, "0123456789abcdef"), Cursor(0, 7, False, "")])
def test_cursor_round_trip(cursor: Cursor) -> None:
    assert Cursor.decode(cursor.encode()) == cursor


@pytest.mark.parametrize("token", ["", "x", "1.2", "1.2.3.ZZ", "1.-2.0.", "1.2.2.", "9999.1.0.", "1.2.0.0123456789abcdef0"])
def test_foreign_page_tokens_are_refused(token: str) -> None:
    with pytest.raises(BadRequest, match="page token"):
        Cursor.decode(token)


async def test_a_capped_c_find_says_to_narrow_the_search() -> None:
    archive = Scripted([record(n) for n in range(30)], cap=10)
    result = await run_search(archive, plan(), accept_all, limit=50, page_size=4, cursor=Cursor())
    assert len(result.accepted) == 10 and result.next_page is None and result.complete is False
    assert any("at most 10 results" in n and "narrow" in n for n in result.notices)


async def test_the_scan_is_bounded_per_request_and_goes_on() -> None:
    archive = Scripted([record(n, "Chest") for n in range(12)] + [record(99, "x tHoRaX y")])

    def thorax(item: dict[str, Any]) -> str | None:  # what the gateway's exact filter does
        return accept_all(item) if "thorax" in item["00081030"]["Value"][0].lower() else None

    result = await run_search(archive, plan("thorax"), thorax, limit=50, page_size=5,
                              cursor=Cursor(), scan_budget=5)
    assert result.accepted == [] and result.next_page is not None and result.scanned == 5
    assert any("'More' checks further" in n for n in result.notices)
    assert [q.description for q, *_ in archive.calls[:3]] == ["*THORAX*", "*Thorax*", "*thorax*"]
    found: list[str] = []
    page = result.next_page
    while page:
        more = await run_search(archive, plan("thorax"), thorax, limit=50, page_size=5,
                                cursor=Cursor.decode(page), scan_budget=5)
        found += more.accepted
        page = more.next_page
    assert found == ["1.2.3.99"]


async def test_no_scan_once_a_spelling_found_something() -> None:
    archive = Scripted([record(1, "CT THORAX"), record(2, "tHoRaX")])
    result = await run_search(archive, plan("thorax"), accept_all, limit=50, page_size=10, cursor=Cursor())
    assert result.accepted == ["1.2.3.1"] and result.next_page is None and result.scanned == 0


async def test_a_timeout_before_anything_was_found_is_raised() -> None:
    archive = Scripted([record(n) for n in range(3)], fail_after=0)
    with pytest.raises(ArchiveTimeout):
        await run_search(archive, plan(), accept_all, limit=50, page_size=2, cursor=Cursor())


async def test_request_budget_ends_with_a_cursor() -> None:
    archive = Scripted([record(n) for n in range(10)])
    result = await run_search(archive, plan(), lambda r: None, limit=5, page_size=2, cursor=Cursor(), max_pages=3)
    assert result.accepted == [] and Cursor.decode(result.next_page or "") == Cursor(0, 6, False, result.next_page.split(".")[-1])  # type: ignore[union-attr]


async def test_stopping_mid_page_resumes_at_the_next_record() -> None:
    archive = Scripted([record(n) for n in range(7)])
    first = await run_search(archive, plan(), accept_all, limit=3, page_size=5, cursor=Cursor())
    assert first.accepted == ["1.2.3.0", "1.2.3.1", "1.2.3.2"]
    second = await run_search(archive, plan(), accept_all, limit=3, page_size=5,
                              cursor=Cursor.decode(first.next_page or ""))
    assert second.accepted == ["1.2.3.3", "1.2.3.4", "1.2.3.5"]
    third = await run_search(archive, plan(), accept_all, limit=3, page_size=5,
                             cursor=Cursor.decode(second.next_page or ""))
    assert third.accepted == ["1.2.3.6"] and third.next_page is None
