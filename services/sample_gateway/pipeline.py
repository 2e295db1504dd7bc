"""One retrieved object to one de-identified file: the work a pull does per instance.

:func:`process` is a plain function of bytes in, file and manifest row out, so it runs the
same in a worker thread or in a worker process (:class:`Workers`). A pull hands an object to
a free worker as it arrives; objects that arrive while every worker is busy wait in one
batch (:func:`process_batch`, bounded in count and bytes) that goes to the next free
worker. Receiving, de-identifying and writing overlap; with processes they also use more
than one core.

Before :func:`.deidentify.deidentify` runs, the top-level private elements whose VR is
known and is neither PN nor UN are dropped (:func:`drop_private`): de-identification removes
them anyway and never reads them (a private PN feeds the descriptor cleaning, a UN may turn
out to be a PN through the private dictionary, so those stay, with the private creators),
and skipping their conversion saves a third of the time on vendor files.
``tests/test_gateway_pipeline.py`` checks on the offline corpus that the output is
byte-for-byte the same with and without this step.

An object that is not from the study the archive was asked for is refused, never
delivered: an archive that sends the wrong object must not leak it into a project. So is an
object that cannot be read, de-identified or encoded (an Integer String holding a name, a
broken sequence): one bad object costs that object, not the pull. The refusal names the
attribute when it can, never its value; nothing here logs values (worker processes run
:func:`.logsafety.configure_logging`, whose filter keeps pydicom's warnings value-free).
Writing problems (a full disk, a link planted in the pull's folder) still fail the pull.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.tag import Tag

from .deidentify import DeidError, DeidPolicy, deidentify_with_rules
from .delivery import (
    DuplicateObject,
    ManifestRow,
    PartialFolder,
    UnreadableAttribute,
    encode_instance,
    store_instance,
)
from .instances import dataset_from_part
from .logsafety import configure_logging
from .multipart import Part
from .pseudonyms import ProjectKeys
from .series_memo import OTHER_STUDY, Fast, SeriesMemo, memo_for_this_thread

log = logging.getLogger("sample_gateway")


@dataclass(frozen=True)
class Delivered:
    row: ManifestRow
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refused:
    message: str  # safe to show: no patient data
    reason: str
    log_detail: str = ""  # for the gateway log: exception type and attribute, no value


def process(body: bytes, content_type: str, study_uid: str, keys: ProjectKeys,
            policy: DeidPolicy, target: PartialFolder, pull: str = "") -> Delivered | Refused:
    """Parse, check, de-identify and write one object (in a worker thread or process);
    `pull`: what the worker learns from this object serves only that pull's next objects."""
    outcome = deidentified(body, content_type, study_uid, keys, policy, scope=pull)
    if isinstance(outcome, Refused):
        return outcome
    try:
        store_instance(target, outcome.row.file, outcome.data)
    except DuplicateObject:
        return Refused("The archive sent the same image twice; it was delivered once.",
                       "duplicate_object")
    return Delivered(outcome.row, outcome.warnings)


def process_batch(items: Sequence[tuple[bytes, str, str]], keys: ProjectKeys, policy: DeidPolicy,
                  target: PartialFolder, pull: str = "") -> list[Delivered | Refused]:
    """:func:`process` for each ``(body, content type, study UID)``, in order: objects that
    arrived while the workers were busy go in one hand-over, not one each (each hand-over
    costs the event loop's thread and the worker a wake-up)."""
    return [process(body, content_type, study_uid, keys, policy, target, pull)
            for body, content_type, study_uid in items]


_OTHER_STUDY = Refused("The archive sent an object from another study; it was not delivered.",
                       "unexpected_object")


def deidentified(body: bytes, content_type: str, study_uid: str, keys: ProjectKeys,
                 policy: DeidPolicy, memo: SeriesMemo | None = None, scope: str = "") -> Fast | Refused:
    """One object de-identified and encoded: through the worker's :class:`.SeriesMemo` when
    an object of the same series taught it how, else parsed, checked, de-identified and
    encoded in full (and the memo learns from it)."""
    memo = memo if memo is not None else memo_for_this_thread()
    fast = memo.deidentify(body, study_uid, keys, policy, scope)
    if fast == OTHER_STUDY:
        return _OTHER_STUDY
    if isinstance(fast, Fast):
        return fast
    ds: Dataset | None = None
    stage = "read"
    try:
        ds = dataset_from_part(Part({"content-type": content_type}, body))
        read_study = str(ds.get("StudyInstanceUID", "")).strip()
        if read_study != study_uid:
            return _OTHER_STUDY
        drop_private(ds)
        stage = "de-identified"
        try:
            result, rules = deidentify_with_rules(ds, keys, policy)
        except DeidError as refusal:
            return Refused(refusal.message, refusal.reason)
        stage, ds = "written", result.dataset
        data, row = encode_instance(result.dataset)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever breaks on this object refuses it alone
        return unreadable(stage, ds, error)
    try:
        memo.learn(body, read_study, keys, policy, result, rules, data, scope)
    except Exception:  # noqa: BLE001 - learning is an optimisation; never fail an object for it
        log.debug("the series memo could not learn from an object", exc_info=False)
    return Fast(data, row, tuple(result.report.warnings))


def unreadable(stage: str, ds: Dataset | None, error: BaseException) -> Refused:
    """The refusal of an object that could not be read, de-identified or written: names the
    attribute (if it can be found) and the exception type, never a value."""
    attribute = error.attribute if isinstance(error, UnreadableAttribute) else culprit(ds, error)
    what = f"its {attribute} attribute" if attribute else "its content"
    return Refused(
        f"An image could not be {stage} because {what} cannot be read; it was not delivered.",
        "unreadable_object",
        log_detail=f"{type(error).__name__} while it was {stage}"
        + (f", at {attribute}" if attribute else ""),
    )


_TAG_IN_TEXT = re.compile(r"\(([0-9A-Fa-f]{4}),\s?([0-9A-Fa-f]{4})\)")


def culprit(ds: Dataset | None, error: BaseException) -> str | None:
    """The attribute that made reading or writing fail: the tag pydicom names in its message
    (only the tag is taken from it), else the first top-level element that cannot be converted."""
    match = _TAG_IN_TEXT.search(str(error))
    if match:
        return _name(Tag(int(match[1], 16), int(match[2], 16)))
    if ds is None:
        return None
    for tag in list(ds.keys()):
        try:
            ds[tag]
        except Exception:  # noqa: BLE001 - any failure to convert points at the culprit
            return _name(Tag(tag))
    return None


def _name(tag: Any) -> str:
    return keyword_for_tag(tag) or f"({tag.group:04X},{tag.element:04X})"


def drop_private(ds: Dataset) -> int:
    """Delete top-level private elements that de-identification would drop unread."""
    doomed = []
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset converts every element
        if tag.is_private and not tag.is_private_creator:  # creators name the VRs of the rest
            raw = ds.get_item(tag)
            vr = getattr(raw, "VR", None)
            if vr is not None and vr not in ("PN", "UN"):
                doomed.append(tag)
    for tag in doomed:
        del ds[tag]
    return len(doomed)


class Workers:
    """Where :func:`process` runs: one thread (``processes=0``) or a pool of processes.

    A process pool starts its workers from a clean forkserver (not a fork of the gateway
    with its threads and sockets) when first used; a worker that dies (out of memory) makes
    that pull fail and the next pull starts a fresh pool.
    """

    def __init__(self, processes: int = 0) -> None:
        self.processes = max(0, processes)
        self._executor: Executor | None = None

    @property
    def parallel(self) -> int:
        return self.processes or 1

    def _get(self) -> Executor:
        if self._executor is None:
            if self.processes:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload([__name__])
                self._executor = ProcessPoolExecutor(
                    self.processes, mp_context=context, initializer=configure_logging,
                    initargs=(logging.WARNING,),
                )
            else:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="deidentify")
        return self._executor

    def warm_up(self) -> None:
        """Start the workers now rather than on the first pull."""
        if self.processes:
            executor = self._get()
            futures = [executor.submit(_ready) for _ in range(self.processes)]
            concurrent.futures.wait(futures, timeout=60)

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._get(), function, *args)
        except BrokenProcessPool:
            # A worker died while the pool was idle (killed, out of memory): nothing of this
            # pull was handed to it, so a fresh pool takes the work.
            log.warning("a de-identification worker process had died; starting a new pool")
            self.shutdown()
            future = loop.run_in_executor(self._get(), function, *args)
        try:
            return await future
        except BrokenProcessPool:
            log.error("a de-identification worker process died; starting a new pool")
            self.shutdown()
            raise

    def shutdown(self, wait: bool = False) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)
            self._executor = None


def _ready() -> int:
    return os.getpid()


__all__ = ["Delivered", "Refused", "Workers", "culprit", "deidentified", "drop_private", "process",
           "process_batch", "unreadable"]
