"""Paging a search plan over an archive, with what real archives do to paging handled here.

:func:`run_search` reads the queries of a :class:`.queries.SearchPlan` in order, page by
page, hands every study record to the gateway's own filter (``accept``) and stops when
``limit`` studies are accepted. Where it stopped is a :class:`Cursor`, given back to the
researcher as an opaque ``next_page`` string. What it copes with, each tested in
``tests/test_gateway_archive_quirks.py``:

- **Result limits.** An archive may answer fewer records than asked for although more
  match (its own cap). A short page is the last one only when the archive says so
  (QIDO-RS ``Warning: 299`` means "more"; C-FIND knows its match count) or the configured
  ``max_results`` shows the page was not cut; otherwise the next offset is asked for too.
- **Ignored offset.** An archive that answers every page from the start shows its first
  record again: that query ends, with a notice that only the first answer could be read.
- **Case-sensitive matching.** Spellings of a later query that an earlier one already
  matched are skipped, so a study is shown once. An archive that answers ``*THORAX*`` with
  ``Thorax`` ignores case: the other spellings are skipped from then on.
- **Nothing found.** When no spelling found anything, the plan's scan reads the studies of
  the date and modality range (``scan_budget`` records per request) and the gateway filters
  them; a notice says so.
- **Stalls.** An archive that stops answering after the first pages gives the studies found
  so far, ``complete: false`` and a notice; ``next_page`` retries from there.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from .errors import BadRequest, GatewayError
from .integration import Archive
from .queries import MAX_OFFSET, SearchPlan, StudyQuery, wildcard_match

log = logging.getLogger("sample_gateway")

T = TypeVar("T")

MAX_PAGES = 20  # archive requests per search request
SCAN_BUDGET = 1000  # records the fallback scan reads per search request
_CURSOR = re.compile(r"^(\d{1,3})\.(\d{1,9})\.([01])\.([0-9a-f]{0,16})$")


@dataclass(frozen=True)
class Cursor:
    """Where a search goes on: query index, offset in it, whether anything was shown yet,
    and a fingerprint of the query's first record (to spot an archive that ignores offset)."""

    query: int = 0
    offset: int = 0
    found: bool = False
    first: str = ""

    def encode(self) -> str:
        return f"{self.query}.{self.offset}.{int(self.found)}.{self.first}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        match = _CURSOR.match(text)
        if not match:
            raise BadRequest("The page token is not one this gateway gave out; search again.",
                             reason="bad_page")
        query, offset, found, first = match.groups()
        if int(offset) > MAX_OFFSET:
            raise BadRequest("The page token goes further than this gateway pages; search again "
                             "with narrower criteria.", reason="bad_page")
        return cls(int(query), int(offset), found == "1", first)


class PageTokens:
    """Opaque ``next_page`` tokens: random, each standing for a :class:`Cursor` kept here
    for the researcher, project and criteria it was given for.

    A cursor names an offset among the archive's records, hidden ones included, and a
    fingerprint of a record: handed out as they are, two answers showing the same studies
    could still be told apart by their tokens, and give away a record the gateway hid. A
    fresh random token per answer tells nothing. The newest :attr:`MAX` are kept (in memory:
    a token from before a gateway restart asks for a new search)."""

    MAX = 20_000

    def __init__(self) -> None:
        self._cursors: OrderedDict[str, tuple[tuple[str, ...], str]] = OrderedDict()

    def give(self, owner: tuple[str, ...], cursor: str) -> str:
        token = secrets.token_urlsafe(18)
        self._cursors[token] = (owner, cursor)
        while len(self._cursors) > self.MAX:
            self._cursors.popitem(last=False)
        return token

    def take(self, owner: tuple[str, ...], token: str) -> Cursor:
        entry = self._cursors.get(token)
        if entry is None or not secrets.compare_digest(repr(entry[0]), repr(owner)):
            raise BadRequest("The page token is not one this gateway gave for this search (or it "
                             "has expired); search again.", reason="bad_page")
        return Cursor.decode(entry[1])


@dataclass
class SearchResult(Generic[T]):
    accepted: list[T]
    next_page: str | None
    complete: bool = True
    notices: list[str] = field(default_factory=list)
    requests: int = 0
    scanned: int = 0
    scan_ran: bool = False


async def run_search(
    archive: Archive,
    plan: SearchPlan,
    accept: Callable[[dict[str, Any]], T | None],
    *,
    limit: int,
    page_size: int,
    cursor: Cursor,
    max_results: int | None = None,
    max_pages: int = MAX_PAGES,
    scan_budget: int = SCAN_BUDGET,
    fingerprint_key: bytes = b"",
) -> SearchResult[T]:
    """``fingerprint_key``: keys the page token's fingerprint of a query's first record (the
    project's key): a plain hash of an original StudyInstanceUID would let anyone who has a
    candidate UID confirm it, and link tokens across projects."""
    size = min(page_size, max_results) if max_results else page_size
    result: SearchResult[T] = SearchResult([], None)
    spelled = plan.spelled
    cur: Cursor | None = _enter(plan, cursor, archive)
    seen: set[str] = set()
    more_shown = False  # one more study would be shown: the next page starts there
    while cur is not None and not more_shown:
        query = plan.queries[cur.query]
        if result.requests >= max_pages or (query.scan and result.scanned >= scan_budget):
            break
        try:
            page = await archive.find_studies(query, limit=size, offset=cur.offset)
        except GatewayError as error:
            if not result.accepted:
                raise
            result.complete = False
            result.notices.append(
                f"{archive.name} stopped answering ({error.message.rstrip('.')}); the studies "
                "below are the ones found until then. 'More' tries again from there."
            )
            log.warning("search cut short after %d studies: %s", len(result.accepted), error.log_message)
            break
        result.requests += 1
        result.scan_ran = result.scan_ran or query.scan
        records = [r for r in page.records if _uid_of(r)]
        ignored_offset = False
        if cur.offset == 0:
            seen = set()
            cur = replace(cur, first=_fingerprint(records[0], fingerprint_key) if records else "")
        elif records and (_fingerprint(records[0], fingerprint_key) == cur.first
                          or all(_uid_of(r) in seen for r in records)):
            # The first answer again: what lies beyond the offset in it is still new; then stop.
            ignored_offset = True
            records = records[cur.offset:] if _fingerprint(records[0], fingerprint_key) == cur.first else []
            result.complete = False
            result.notices.append(
                f"{archive.name} ignores requests for further results, so only its first "
                "answer could be read. If a study is missing, narrow the search."
            )
            log.warning("archive ignored offset=%d of query %d", cur.offset, cur.query)
        if query.description and not archive.traits.case_insensitive:
            _learn_case(archive, query.description, records)

        stopped_at: int | None = None
        for index, record in enumerate(records):
            seen.add(_uid_of(record))
            if query.scan:
                result.scanned += 1
            if _earlier_spelling(spelled, query, record, archive):
                continue
            item = accept(record)
            if item is not None:
                if len(result.accepted) >= limit:
                    # Look ahead to the next study that would be shown, so that whether there
                    # is a next page depends on what researchers may see, not on records the
                    # gateway hides (a widened date range, a description cleaned of a word).
                    more_shown, stopped_at = True, index
                    break
                result.accepted.append(item)
                cur = replace(cur, found=True)

        count = len(records)
        last_page = ignored_offset or _is_last(page.more, count, size, max_results)
        if page.capped:
            result.complete = False
            result.notices.append(
                f"{archive.name} returns at most {cur.offset + count} results for this search; "
                "narrow it (dates, modality, description) to see the rest."
            )
        if stopped_at is not None and stopped_at < count:
            cur = replace(cur, offset=cur.offset + stopped_at)
        elif count == 0 or last_page or page.capped:
            cur = _advance(plan, cur, archive)
        else:
            cur = replace(cur, offset=cur.offset + count)

    if result.scan_ran:
        result.notices.append(_scan_notice(archive, more=cur is not None))
    result.next_page = cur.encode() if cur is not None else None
    return result


def _scan_notice(archive: Archive, *, more: bool) -> str:
    # No count: how many studies the archive holds in the range it was asked for depends on
    # their original dates (the range is widened for the shift), and would give them away.
    text = (f"{archive.name} matches text exactly, so the gateway also read the studies of your "
            "date and modality range and compared their descriptions itself.")
    if more:
        text += " 'More' checks further; narrower dates make it faster."
    return text


def _enter(plan: SearchPlan, cursor: Cursor, archive: Archive) -> Cursor | None:
    if cursor.query >= len(plan.queries):
        return None
    if _skipped(plan, cursor.query, archive):
        return _advance(plan, cursor, archive)
    return cursor


def _advance(plan: SearchPlan, cur: Cursor, archive: Archive) -> Cursor | None:
    """The start of the next query worth reading, or None at the end of the plan."""
    index = cur.query + 1
    while index < len(plan.queries):
        query = plan.queries[index]
        if query.scan and cur.found:
            return None  # something was shown: the scan is only for "nothing found"
        if not _skipped(plan, index, archive):
            return Cursor(index, 0, cur.found, "")
        index += 1
    return None


def _skipped(plan: SearchPlan, index: int, archive: Archive) -> bool:
    """Later spellings are pointless at an archive known to ignore case."""
    query = plan.queries[index]
    return not query.scan and index > 0 and archive.traits.case_insensitive


def _is_last(more: bool | None, count: int, size: int, max_results: int | None) -> bool:
    if more is not None:
        return not more
    if count >= size:
        return False
    # A short page: the last one, unless the archive's own cap may have cut it.
    return max_results is not None and count < max_results


def _learn_case(archive: Archive, pattern: str, records: list[dict[str, Any]]) -> None:
    for record in records:
        description = _description(record)
        if description and not wildcard_match(pattern, description) and wildcard_match(
            pattern, description, ignore_case=True
        ):
            archive.traits.case_insensitive = True
            archive.traits.learned.append(f"{pattern} matched a description in another case")
            log.info("%s matches text case-insensitively (learned from a search)", archive.name)
            return


def _earlier_spelling(spelled: tuple[StudyQuery, ...], query: StudyQuery,
                      record: dict[str, Any], archive: Archive) -> bool:
    """Whether an earlier query of the plan already returned this record."""
    description = _description(record)
    ignore_case = archive.traits.case_insensitive
    for earlier in spelled:
        if earlier is query:
            return False
        if earlier.description and wildcard_match(earlier.description, description,
                                                  ignore_case=ignore_case):
            return True
    return False  # the scan: every spelling is earlier


def _description(record: dict[str, Any]) -> str:
    values = (record.get("00081030") or {}).get("Value") or []
    return str(values[0]) if values else ""


def _uid_of(record: dict[str, Any]) -> str:
    values = (record.get("0020000D") or {}).get("Value") or []
    return str(values[0]) if values else ""


def _fingerprint(record: dict[str, Any], key: bytes) -> str:
    return hmac.new(key, b"page:" + _uid_of(record).encode(), hashlib.sha256).hexdigest()[:16]


__all__ = ["Cursor", "PageTokens", "SearchResult", "run_search"]
