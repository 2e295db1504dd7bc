"""A pull asks for the next series while the current one streams (retrieval.py), and still
delivers in plan order, raises a series' failure in its place, reads ahead only a few
objects and closes every answer when it stops early."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from services.sample_gateway.errors import ArchiveTimeout
from services.sample_gateway import retrieval
from services.sample_gateway.retrieval import READ_AHEAD_OBJECTS, series_in_turn
from tests.test_gateway_attack import CT, FakeArchive, gateway_for, pull, study_keys


class Series:
    """A scripted series: records when it was asked for and whether its answer was closed."""

    def __init__(self, name: str, count: int, *, fail_after: int | None = None,
                 wait_for: asyncio.Event | None = None) -> None:
        self.name, self.count, self.fail_after, self.wait_for = name, count, fail_after, wait_for
        self.asked = asyncio.Event()
        self.read = 0
        self.closed = False

    async def items(self) -> AsyncIterator[str]:
        self.asked.set()
        try:
            for number in range(self.count):
                if self.fail_after is not None and number == self.fail_after:
                    raise ArchiveTimeout(f"{self.name} did not answer within 1 s.")
                if self.wait_for is not None and number == 1:
                    await self.wait_for.wait()
                self.read += 1
                yield f"{self.name}{number}"
                await asyncio.sleep(0)
        finally:
            self.closed = True


async def collect(sources: list[Callable[[], AsyncIterator[str]]], in_flight: int) -> list[tuple[int, str]]:
    return [item async for item in series_in_turn(sources, in_flight)]


async def test_every_object_comes_in_plan_order() -> None:
    series = [Series("a", 3), Series("b", 5), Series("c", 1), Series("d", 4)]
    got = await collect([s.items for s in series], 2)
    assert got == [(i, f"{s.name}{n}") for i, s in enumerate(series) for n in range(s.count)]
    assert all(s.closed for s in series)


async def test_the_next_series_is_asked_for_while_the_current_one_streams() -> None:
    # The first series cannot go on until the second has been asked for: one after the
    # other this never finishes; with the next one asked for early it does.
    second = Series("b", 2)
    first = Series("a", 3, wait_for=second.asked)
    got = await asyncio.wait_for(collect([first.items, second.items], 2), timeout=5)
    assert [item for _, item in got] == ["a0", "a1", "a2", "b0", "b1"]

    second = Series("b", 2)
    first = Series("a", 3, wait_for=second.asked)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(collect([first.items, second.items], 1), timeout=0.3)


async def test_no_more_than_in_flight_series_are_asked_for_at_once() -> None:
    series = [Series(name, 2) for name in "abcd"]
    async with contextlib.aclosing(series_in_turn([s.items for s in series], 2)) as items:
        index, _ = await anext(items)
        await asyncio.sleep(0.05)
        assert index == 0
        assert [s.asked.is_set() for s in series] == [True, True, False, False]


async def test_a_failed_series_is_raised_in_its_place_after_the_objects_before_it() -> None:
    series = [Series("a", 3), Series("b", 4, fail_after=2), Series("c", 2)]
    got: list[str] = []
    with pytest.raises(ArchiveTimeout, match="b did not answer"):
        async for _, item in series_in_turn([s.items for s in series], 2):
            got.append(item)
    assert got == ["a0", "a1", "a2", "b0", "b1"]
    assert all(s.closed or not s.asked.is_set() for s in series)


async def test_read_ahead_is_bounded_in_objects() -> None:
    long, next_ = Series("a", 100), Series("b", 100)
    async with contextlib.aclosing(series_in_turn([long.items, next_.items], 2)) as items:
        await anext(items)
        await asyncio.sleep(0.05)  # a caller busy with the first object
        assert long.read <= READ_AHEAD_OBJECTS + 2
        assert next_.read <= READ_AHEAD_OBJECTS + 1


async def test_read_ahead_is_bounded_in_bytes_and_one_big_object_still_passes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrieval, "READ_AHEAD_BYTES", 10)
    first, big = Series("a", 2), Series("b", 6)

    def size(item: str) -> int:
        return 8 if item.startswith("b") else 1

    async with contextlib.aclosing(series_in_turn([first.items, big.items], 2, size)) as items:
        await anext(items)
        await asyncio.sleep(0.05)
        assert big.read <= 2  # one 8-byte object waits (a second would pass 10), one is read
        got = [item async for _, item in items]
    assert got == ["a1", *[f"b{n}" for n in range(6)]]  # every object, each bigger than half


async def test_stopping_early_closes_every_answer_asked_for() -> None:
    series = [Series(name, 10) for name in "abc"]
    async with contextlib.aclosing(series_in_turn([s.items for s in series], 2)) as items:
        async for index, _ in items:
            if index == 0:
                break  # a limit reached on the first object
    assert series[0].closed and series[1].closed
    assert not series[2].asked.is_set()


async def test_a_pull_asks_for_the_next_series_before_the_current_one_has_arrived(tmp_path: Path) -> None:
    """Through the gateway and the DICOMweb client: the second series' request goes out while
    the first series still streams; every image is delivered."""
    fake = FakeArchive()
    fake.add_study("CT THORAX", [(CT, "axial", 6), (CT, "coronal", 4)])
    async with gateway_for(fake, tmp_path) as gateway:
        events: list[tuple[str, str, float]] = []
        original = gateway.archive.retrieve_series

        async def retrieve_series(study_uid: str, series_uid: str) -> AsyncIterator[Any]:
            events.append(("asked", series_uid, time.monotonic()))
            async for part in original(study_uid, series_uid):
                await asyncio.sleep(0.01)
                yield part
            events.append(("done", series_uid, time.monotonic()))

        gateway.archive.retrieve_series = retrieve_series  # type: ignore[method-assign]
        result = await pull(gateway, await study_keys(gateway))
    assert result["status"] == "done" and result["instances_done"] == 10, result
    kinds = [kind for kind, _, _ in events]
    assert kinds[:2] == ["asked", "asked"], events  # both asked for before either ended


def _wrap_series(gateway: Any, *, fail_second: bool = False, pause: float = 0.0) -> list[dict[str, Any]]:
    """Wrap the archive's retrieve: record each series asked for and whether its answer was
    closed; the second series asked for fails at once (`fail_second`); `pause` per object."""
    from services.sample_gateway.errors import ArchiveUnavailable

    original = gateway.archive.retrieve_series
    asked: list[dict[str, Any]] = []

    async def retrieve_series(study_uid: str, series_uid: str) -> AsyncIterator[Any]:
        record = {"series": series_uid, "closed": False, "parts": 0}
        asked.append(record)
        try:
            if fail_second and len(asked) == 2:
                raise ArchiveUnavailable("Fake RIPA failed to answer (HTTP 500); try again later.")
            async for part in original(study_uid, series_uid):
                await asyncio.sleep(pause)
                record["parts"] += 1
                yield part
        finally:
            record["closed"] = True

    gateway.archive.retrieve_series = retrieve_series
    return asked


async def test_a_failure_of_the_next_series_fails_the_pull_and_leaves_nothing(tmp_path: Path) -> None:
    fake = FakeArchive()
    fake.add_study("CT THORAX", [(CT, "axial", 4), (CT, "coronal", 6)])
    async with gateway_for(fake, tmp_path) as gateway:
        asked = _wrap_series(gateway, fail_second=True, pause=0.01)
        result = await pull(gateway, await study_keys(gateway))
        assert result["status"] == "failed", result
        assert result["error"]["reason"] == "archive_unavailable"
        assert "HTTP 500" in result["error"]["message"]
        assert list(gateway.storage.samples_dir("magi").iterdir()) == []  # nothing half-written
        assert gateway.audit.records()[-1]["outcome"] == "failed"
        assert len(asked) == 2 and all(record["closed"] for record in asked)
        assert asked[0]["parts"] == 4  # the first series was read to its end before the failure was raised


async def test_closing_the_gateway_mid_pull_closes_every_series_asked_for(tmp_path: Path) -> None:
    fake = FakeArchive()
    fake.add_study("CT THORAX", [(CT, "axial", 8), (CT, "coronal", 8), (CT, "sagittal", 8)])
    async with gateway_for(fake, tmp_path) as gateway:
        asked = _wrap_series(gateway, pause=0.05)
        await gateway.start_pull("anna", "magi", await study_keys(gateway))
        await asyncio.sleep(0.2)
        await gateway.aclose()
        assert len(asked) == 2, asked  # the third was not asked for yet
        assert all(record["closed"] for record in asked)
        assert list(gateway.storage.samples_dir("magi").iterdir()) == []
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and "_read" in repr(t)]
        assert leftover == []
