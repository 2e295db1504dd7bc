"""The series of a pull, one after another, with the next one asked for early.

An archive takes a while between being asked for a series and sending its first object
(Orthanc: 4-8 ms for a small series; a hospital PACS: often hundreds of milliseconds). A
pull that asks for each series only when the previous one has arrived pays that wait once
per series. :func:`series_in_turn` asks for the next series while the current one streams,
so the wait overlaps the transfer, and still yields every object in plan order.

Memory stays bounded: each series in flight is read by its own task into a buffer of at most
:data:`READ_AHEAD_OBJECTS` objects and :data:`READ_AHEAD_BYTES` (one object of any size
always fits, as without the early asking); a task whose buffer is full stops reading, and
the archive's answer waits in the socket (flow control). At most ``in_flight`` series are
asked for at once. Each series is read from start to end in one task, so its connection's context
(``httpx`` streams, DIMSE associations) opens and closes there.

A failure of a series (timeout, archive down, malformed answer) is raised where that series'
objects would have been yielded: the objects of the series before it come first, exactly as
without the early asking. When the caller stops early (a limit reached, a cancelled pull) the
tasks are cancelled and their answers closed before :func:`series_in_turn` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

READ_AHEAD_OBJECTS = 4  # objects of a series read ahead of the caller, at most ...
READ_AHEAD_BYTES = 16 * 1024 * 1024  # ... and at most this much of them (or one object)

_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Buffer:
    """A queue bounded in items and in bytes; one item of any size always fits."""

    def __init__(self) -> None:
        self._items: deque[tuple[object, int]] = deque()
        self._bytes = 0
        self._changed = asyncio.Condition()

    async def put(self, item: object, size: int = 0) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._items or (
                len(self._items) < READ_AHEAD_OBJECTS and self._bytes + size <= READ_AHEAD_BYTES))
            self._items.append((item, size))
            self._bytes += size
            self._changed.notify_all()

    async def get(self) -> object:
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._items))
            item, size = self._items.popleft()
            self._bytes -= size
            self._changed.notify_all()
            return item


async def series_in_turn(
    sources: Sequence[Callable[[], AsyncIterator[T]]], in_flight: int = 2,
    size: Callable[[T], int] = lambda item: 0,
) -> AsyncIterator[tuple[int, T]]:
    """``(index of the source, item)`` for every item of each source in turn; up to
    `in_flight` sources are being read at once (1: one after another, nothing read ahead);
    `size`: an item's bytes, for the read-ahead bound."""
    if in_flight <= 1:
        for index, source in enumerate(sources):
            async with contextlib.aclosing(source()) as items:
                async for item in items:
                    yield index, item
        return
    buffers: list[_Buffer] = []
    tasks: list[asyncio.Task[None]] = []

    def start_next() -> None:
        if len(tasks) < len(sources):
            buffers.append(_Buffer())
            tasks.append(asyncio.create_task(_read(sources[len(tasks)], buffers[-1], size)))

    try:
        for _ in range(in_flight):
            start_next()
        for index in range(len(sources)):
            buffer = buffers[index]
            while True:
                item = await buffer.get()
                if item is _END:
                    break
                if isinstance(item, _Failed):
                    raise item.error
                yield index, item  # type: ignore[misc]
            start_next()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _read(source: Callable[[], AsyncIterator[T]], buffer: _Buffer,
                size: Callable[[T], int]) -> None:
    try:
        async with contextlib.aclosing(source()) as items:
            async for item in items:
                await buffer.put(item, size(item))
    except asyncio.CancelledError:
        raise
    except BaseException as error:  # noqa: BLE001 - handed to the caller, raised in order
        await buffer.put(_Failed(error))
        return
    await buffer.put(_END)


__all__ = ["READ_AHEAD_BYTES", "READ_AHEAD_OBJECTS", "series_in_turn"]
