"""The gateway's work: search, pull, de-identify, deliver, audit. Orchestration only.

The rules live elsewhere: who may do what in :mod:`.access`, the archive queries in
:mod:`.queries` and their paging in :mod:`.search`, the archive itself behind
:class:`.integration.Archive` (DICOMweb or DIMSE, per configuration), one object's
de-identification and writing in :mod:`.pipeline`, writing a pull in :mod:`.delivery`,
previews in :mod:`.previews`, the trail in :mod:`.audit`. This module calls them in order
and keeps the pull records' status consistent, also across a gateway restart.

A pull is all or nothing, and audited before it is visible: the files go to a hidden
folder while the archive sends, the audit record is written, and only then is the folder
renamed into place. If the audit record cannot be written, nothing is delivered. Progress
of a running pull is kept in memory (the record in the database is written when it starts
and when it ends; a pull still "running" after a restart was interrupted). Once a pull's
record exists, every failure (the workspace folder included) ends it as "failed", audited.

Daily limits are reservations in the state database (:meth:`.state.GatewayState.reserve_pull`):
the check and the insert of a pull are one transaction, and the bytes are checked against
the day's total again as they arrive, so pulls started together cannot pass a limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import logging
import os
import secrets
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.errors import InvalidDicomError

from hub_config.loader import cached_config
from hub_config.model import ArchiveConnection, Project, SampleLimits, WorkbenchConfig
from hub_config.storage import StorageLayout, default_data_dir

from . import access
from .audit import AuditLog
from .deidentify import DeidPolicy
from .delivery import PullWriter, open_workspace_folder, remove_partials
from .errors import (
    ArchiveTimeout,
    ArchiveUnavailable,
    BadRequest,
    Conflict,
    GatewayError,
    NotAllowed,
    NotFound,
    WorkspaceUnusable,
    shown,
)
from .integration import Archive, build_archive
from .logsafety import describe_error
from .pipeline import Delivered, Workers, process_batch
from .previews import Previews
from .pseudonyms import ProjectKeys, load_or_create_key
from .queries import StudyCriteria, matches_dates, matches_description, search_plan
from .search import Cursor, PageTokens, run_search
from .state import GatewayState, Pull, StudyKey, Usage, now
from .summaries import summarize_study

log = logging.getLogger("sample_gateway")

WORKERS_ENV = "WORKBENCH_GATEWAY_WORKERS"
BYTE_STEP = 8 * 1024 * 1024  # reserved ahead against a daily byte limit (or 1/64 of it)
BATCH_OBJECTS = 16  # objects received while the workers are busy, handed over together
BATCH_BYTES = 64 * 1024 * 1024  # ... and at most this much of them held waiting


@dataclass
class _Progress:
    received: int = 0
    done: int = 0
    refused: int = 0
    bytes: int = 0
    reserved: int = 0  # bytes recorded in the state database (the daily byte limit)


@dataclass
class Gateway:
    config: Callable[[], WorkbenchConfig]
    storage: StorageLayout
    archive: Archive
    state: GatewayState
    audit: AuditLog
    keys_dir: Path
    today: Callable[[], dt.date] = dt.date.today
    workers: Workers = field(default_factory=Workers)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _deleting: set[str] = field(default_factory=set)  # pulls whose folder is being removed
    _progress: dict[str, _Progress] = field(default_factory=dict)
    _previews: Previews | None = None
    _pages: PageTokens = field(default_factory=PageTokens)

    # -- projects ---------------------------------------------------------------------------
    def keys_for(self, project_id: str) -> ProjectKeys:
        self.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return ProjectKeys(load_or_create_key(self.keys_dir / f"{project_id}.key"), project_id)

    def policy_for(self, project: Project) -> DeidPolicy:
        modalities = project.archive.modalities
        return DeidPolicy(allow_burned_in_annotation=project.archive.allow_burned_in_annotation,
                          modalities=frozenset(modalities) if modalities is not None else None)

    def projects_for(self, username: str) -> list[dict[str, Any]]:
        config, today = self.config(), self.today()
        out = []
        for project in config.projects_of(username):
            limits = project.archive.limits
            usable, why_not = True, None
            try:
                access.project_for_pull(config, username, project.id, today)
            except NotAllowed as refusal:
                usable, why_not = False, refusal.message
            usage = self.state.usage_since(project.id, _midnight_utc())
            out.append(
                {
                    "id": project.id,
                    "title": project.title,
                    "can_pull": usable,
                    "why_not": why_not,
                    "modalities": project.archive.modalities,
                    "limits": limits.model_dump(),
                    "studies_pulled_today": usage.studies,
                    "instances_pulled_today": usage.instances,
                    "bytes_pulled_today": usage.bytes,
                    "integration": self.archive.integration,
                }
            )
        return out

    # -- search -----------------------------------------------------------------------------
    async def search(self, username: str, project_id: str, criteria: StudyCriteria) -> dict[str, Any]:
        project = access.project_for_pull(self.config(), username, project_id, self.today())
        access.check_modality(project, criteria.modality)
        keys = self.keys_for(project.id)
        self.audit.check()
        connection = self._connection()
        plan = search_plan(criteria, case_insensitive=connection.text_matching == "case-insensitive")
        owner = (username, project.id, criteria.model_dump_json(exclude={"page", "offset", "limit"}))
        cursor = self._pages.take(owner, criteria.page) if criteria.page else Cursor(offset=criteria.offset)

        def accept(item: dict[str, Any]) -> tuple[dict[str, Any], StudyKey] | None:
            return self._summary_if_allowed(project, keys, criteria, item)

        try:
            outcome = await run_search(
                self.archive, plan, accept, limit=criteria.limit, page_size=connection.page_size,
                max_results=connection.max_results, cursor=cursor, fingerprint_key=keys.key,
            )
        except GatewayError as error:
            self._audit(username, project.id, "search", criteria=criteria.audit_view(),
                        outcome="failed", reason=error.reason)
            raise
        studies = [study for study, _ in outcome.accepted]
        self.state.remember_studies(project.id, [row for _, row in outcome.accepted])
        self._audit(username, project.id, "search", criteria=criteria.audit_view(),
                    results=len(studies), complete=outcome.complete,
                    archive_requests=outcome.requests, outcome="ok")
        return {
            "project": project.id,
            "studies": studies,
            "next_page": self._pages.give(owner, outcome.next_page) if outcome.next_page else None,
            "complete": outcome.complete,
            "notices": outcome.notices,
        }

    def _connection(self) -> ArchiveConnection:
        return self.config().archive or ArchiveConnection(dicomweb_url="http://unused.invalid")

    def _summary_if_allowed(
        self, project: Project, keys: ProjectKeys, criteria: StudyCriteria, item: dict[str, Any]
    ) -> tuple[dict[str, Any], StudyKey] | None:
        summary = summarize_study(item, keys)
        if summary is None:
            return None
        study, identity = summary
        allowed = access.allowed_modalities(project, study["modalities"])
        if study["modalities"] and not allowed:
            return None
        if criteria.modality and study["modalities"] and criteria.modality not in study["modalities"]:
            return None  # an archive that ignored the modality key
        # On what the researcher sees: never what de-identification removed (queries.py).
        if not (matches_description(criteria, study["description"])
                and matches_dates(criteria, study["study_date"])):
            return None
        row = StudyKey(
            project=project.id, study_key=study["study_key"], study_uid=identity.study_uid,
            patient_id=identity.patient_id, issuer=identity.issuer, seen_at=now(),
        )
        return study, row

    # -- previews ---------------------------------------------------------------------------
    async def thumbnails(self, username: str, project_id: str, study_keys: list[str]) -> dict[str, Any]:
        project = access.project_for_pull(self.config(), username, project_id, self.today())
        if not study_keys or len(study_keys) > Previews.MAX_PER_REQUEST:
            raise BadRequest(f"Ask for 1 to {Previews.MAX_PER_REQUEST} thumbnails at a time.")
        self.audit.check()
        if self._previews is None:
            self._previews = Previews(self.archive)
        rows = {key: self.state.lookup_study(project.id, key) for key in dict.fromkeys(study_keys)}
        unknown = [key for key, row in rows.items() if row is None]
        if unknown:
            raise NotFound(
                f"{len(unknown)} study key(s) are not from a search of project {project.id}; "
                "search again.", reason="unknown_study_key",
            )
        results = await self._previews.render(
            project, self.keys_for(project.id), self.policy_for(project),
            {key: row.study_uid for key, row in rows.items() if row is not None},
        )
        shown = sum(1 for r in results.values() if r.get("png"))
        self._audit(username, project.id, "thumbnails", study_keys=list(rows), shown=shown,
                    refused=len(results) - shown, outcome="ok")
        return {"project": project.id, "thumbnails": results}

    # -- pulls ------------------------------------------------------------------------------
    async def start_pull(self, username: str, project_id: str, study_keys: list[str]) -> dict[str, Any]:
        project = access.project_for_pull(self.config(), username, project_id, self.today())
        if len(set(study_keys)) != len(study_keys):
            raise BadRequest("The same study is selected twice.")
        limits = project.archive.limits
        since = _midnight_utc()
        # A first look, to refuse before the archive is asked; the reservation below decides.
        usage = self.state.usage_since(project.id, since)
        access.check_pull_size(
            limits, studies=len(study_keys), instances=0, studies_today=usage.studies,
            instances_today=usage.instances, bytes_today=usage.bytes,
        )
        self.audit.check()
        studies = []
        for key in study_keys:
            row = self.state.lookup_study(project.id, key)
            if row is None:
                raise NotFound(
                    f"Study key {shown(key)} is not from a search of project {project.id}; "
                    "search again and select from the results.",
                    reason="unknown_study_key",
                )
            studies.append((key, row))
        plan = []
        for key, row in studies:
            for series in await self.archive.find_series(row.study_uid):
                if not access.series_allowed(project, _first(series, "00080060")):
                    continue  # not approved, or no modality to judge (each object is checked too)
                count = _int(_first(series, "00201209"))
                plan.append((key, row.study_uid, _first(series, "0020000E"), count))
        total = sum(count for *_, count in plan)
        pull = Pull(
            id=_pull_id(username), project=project.id, username=username, status="running",
            created=now(), studies=len(studies), instances_total=total,
        )

        def within_limits(today: Usage) -> None:
            access.check_pull_size(
                limits, studies=len(studies), instances=total, studies_today=today.studies,
                instances_today=today.instances, bytes_today=today.bytes,
            )

        self.state.reserve_pull(pull, since, within_limits)  # refused: nothing is kept
        self._progress[pull.id] = _Progress()
        task = asyncio.create_task(self._run_pull(pull, project, plan, [k for k, _ in studies], since))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return pull.to_json()

    async def _run_pull(
        self, pull: Pull, project: Project, plan: list[tuple[str, str, str, int]],
        study_keys: list[str], since: dt.datetime,
    ) -> None:
        limits = project.archive.limits
        progress = self._progress.setdefault(pull.id, _Progress())
        writer: PullWriter | None = None
        refusals: Counter[str] = Counter()
        warnings: Counter[str] = Counter()
        pending: set[asyncio.Future[Any]] = set()
        batch: list[tuple[bytes, str, str]] = []
        batch_bytes = 0

        def collect(future: asyncio.Future[Any]) -> None:
            for outcome in future.result():
                if isinstance(outcome, Delivered):
                    assert writer is not None  # objects are handed out only once it exists
                    writer.add(outcome.row)
                    progress.done += 1
                    warnings.update(outcome.warnings)
                else:
                    progress.refused += 1
                    refusals[outcome.message] += 1
                    if outcome.log_detail:
                        log.warning("pull %s: an object was refused (%s: %s)", pull.id, outcome.reason,
                                    outcome.log_detail)

        def collect_finished() -> None:
            for future in [f for f in pending if f.done()]:
                pending.discard(future)
                collect(future)

        def hand_over() -> None:
            nonlocal batch, batch_bytes
            assert writer is not None
            pending.add(asyncio.ensure_future(self.workers.run(
                process_batch, batch, keys, policy, writer.target, pull.id,
            )))
            batch, batch_bytes = [], 0

        try:
            keys = self.keys_for(project.id)
            policy = self.policy_for(project)
            writer = PullWriter(self.storage.project_dir(project.id), pull.id)
            # Smaller series first: the first object of a series costs a full
            # de-identification (the next ones reuse it, see series_memo), and a
            # one-object series left for last would be that cost with nothing beside it.
            # Objects that arrive while every worker is busy wait in one batch (up to
            # BATCH_OBJECTS or BATCH_BYTES), handed over as one when a worker is free.
            for _study_key, study_uid, series_uid, _count in sorted(plan, key=lambda step: step[3]):
                async with contextlib.aclosing(self.archive.retrieve_series(study_uid, series_uid)) as parts:
                    async for part in parts:
                        progress.received += 1
                        progress.bytes += len(part.body)
                        self._check_running_pull(pull, limits, progress, since)
                        batch.append((part.body, part.content_type, study_uid))
                        batch_bytes += len(part.body)
                        collect_finished()
                        if len(pending) >= self.workers.parallel and (
                                len(batch) >= BATCH_OBJECTS or batch_bytes >= BATCH_BYTES):
                            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                            for future in finished:
                                collect(future)
                        if len(pending) < self.workers.parallel:
                            hand_over()
            if batch:
                hand_over()
            while pending:
                finished, pending = await asyncio.wait(pending)
                for future in finished:
                    collect(future)
            if progress.done == 0:
                raise GatewayError(
                    "Nothing could be delivered: " + ("; ".join(refusals) or "the studies hold no images."),
                    reason="nothing_delivered", status=422,
                )
            header = {
                "pull": pull.id,
                "project": project.id,
                "user": pull.username,
                "created": pull.created.isoformat(timespec="seconds"),
                "archive": self.config().archive.name if self.config().archive else "",
                "integration": self.archive.integration,
                "deidentification": policy.method_description(),
                "study_keys": study_keys,
                "refused": dict(refusals),
                "warnings": dict(warnings),
            }
            # Audited before it is visible: no record, no delivery.
            self._audit(pull.username, project.id, "pull", pull=pull.id, study_keys=study_keys,
                        instances=progress.done, refused=progress.refused, bytes=progress.bytes,
                        warnings=sum(warnings.values()), outcome="ok")
            try:
                path = await asyncio.to_thread(writer.commit, header)
            except Exception:
                self._audit(pull.username, project.id, "pull", pull=pull.id, instances=0,
                            outcome="failed", reason="commit_failed")
                raise
        except BaseException as error:  # every failure must clean up and be recorded
            await _settle(pending)
            if writer is not None:
                writer.abort()
            if isinstance(error, asyncio.CancelledError):
                self._progress.pop(pull.id, None)
                raise
            message, reason = _public(error)
            if isinstance(error, (ArchiveTimeout, ArchiveUnavailable)) and progress.received:
                message += (f" {progress.received} of {pull.instances_total} images had arrived "
                            "before that; nothing was delivered.")
            if not isinstance(error, GatewayError):
                log.error("pull %s failed: %s", pull.id, describe_error(error))
            else:
                log.warning("pull %s failed: %s", pull.id, error.log_message)
            self.state.update_pull(pull.id, status="failed", finished=now(), error=message,
                                   error_reason=reason, instances_done=0, bytes_received=progress.bytes,
                                   instances_refused=progress.refused)
            self._progress.pop(pull.id, None)
            if reason != "audit_unavailable":
                with contextlib.suppress(GatewayError):
                    self._audit(pull.username, project.id, "pull", pull=pull.id, study_keys=study_keys,
                                instances=0, refused=progress.refused, outcome="failed", reason=reason)
            return
        relative = path.relative_to(self.storage.project_dir(project.id))
        self.state.update_pull(pull.id, status="done", finished=now(), instances_done=progress.done,
                               bytes_received=progress.bytes, instances_refused=progress.refused,
                               path=str(relative), folder_identity=writer.identity)
        self._progress.pop(pull.id, None)
        if refusals:
            log.info("pull %s delivered %d images and refused %d (the reasons are in its manifest)",
                     pull.id, progress.done, progress.refused)

    def _check_running_pull(self, pull: Pull, limits: SampleLimits, progress: _Progress,
                            since: dt.datetime) -> None:
        """Per object received: the per-pull limits, and the daily ones against the other
        pulls of the day. The bytes are reserved in steps (:data:`BYTE_STEP`); each step, and
        images beyond those the archive announced, is one transaction that sees the other
        pulls' reservations, so pulls running side by side cannot pass a daily limit."""
        planned = max(pull.instances_total, progress.received)
        grows = planned > pull.instances_total
        if grows:  # the archive sends more than it announced
            access.check_pull_size(limits, studies=pull.studies, instances=planned, studies_today=0)
        access.check_pull_bytes(limits, progress.bytes)
        daily_bytes = limits.max_bytes_per_day
        needs_bytes = daily_bytes is not None and progress.bytes > progress.reserved
        if not needs_bytes and not (grows and limits.max_instances_per_day is not None):
            pull.instances_total = planned
            return

        def decide(others: Usage) -> dict[str, int]:
            access.check_pull_bytes(limits, progress.bytes, others.bytes)
            if grows:
                access.check_pull_size(limits, studies=pull.studies, instances=planned,
                                       studies_today=others.studies, instances_today=others.instances)
            values = {"instances_total": planned}
            if daily_bytes is not None:
                step = min(daily_bytes // 64, BYTE_STEP)
                values["bytes_received"] = max(progress.bytes,
                                               min(progress.bytes + step, daily_bytes - others.bytes))
            return values

        values = self.state.record_progress(pull.id, pull.project, since, decide)
        progress.reserved = values.get("bytes_received", progress.reserved)
        pull.instances_total = planned

    def pull_status(self, username: str, pull_id: str) -> dict[str, Any]:
        pull = self.state.get_pull(pull_id)
        config = self.config()
        project = config.project(pull.project) if pull else None
        if pull is None or project is None or username not in project.members:
            raise NotFound(f"There is no pull {shown(pull_id)} in your projects.")
        return self._with_progress(pull.to_json())

    async def delete_pull(self, username: str, pull_id: str) -> dict[str, Any]:
        """Remove a delivered pull's files from the project workspace, audited.

        Any member of the project may (the samples are the project's, and deleting what is no
        longer needed is data minimisation). The pull keeps its row, marked 'deleted': it
        still counts toward the day's limits, and the audit shows what was pulled and when
        it went. The folder is removed through a descriptor of ``samples/`` that refuses
        links, so nothing outside the workspace can be reached.
        """
        pull = self.state.get_pull(pull_id)
        project = self.config().project(pull.project) if pull else None
        if pull is None or project is None or username not in project.members:
            raise NotFound(f"There is no pull {shown(pull_id)} in your projects.")
        if pull.status == "running":
            raise Conflict(f"Pull {pull.id} is still running; delete it when it has finished.")
        if pull.status != "done" or not pull.path:
            raise Conflict(f"Pull {pull.id} is {pull.status}: it has no files to delete.")
        if pull.id in self._deleting:
            raise Conflict(f"Pull {pull.id} is being deleted already.")
        self._audit(username, project.id, "delete", pull=pull.id, outcome="requested")
        self._deleting.add(pull.id)
        try:
            # A member can fill the folder with anything: remove it off the event loop.
            await asyncio.to_thread(_remove_pull_folder, self.storage.project_dir(project.id), pull.path,
                                    pull.folder_identity)
        except Exception as error:
            message, reason = _public(error)
            log.warning("deleting pull %s failed: %s", pull.id, describe_error(error))
            self._audit(username, project.id, "delete", pull=pull.id, outcome="failed", reason=reason)
            raise error if isinstance(error, GatewayError) else WorkspaceUnusable(
                f"Pull {pull.id} could not be deleted ({message}); ask the workbench admins.") from None
        finally:
            self._deleting.discard(pull.id)
        record = self.state.update_pull(pull.id, status="deleted")
        self._audit(username, project.id, "delete", pull=pull.id, outcome="deleted")
        return record.to_json()

    def list_pulls(self, username: str, project_id: str) -> list[dict[str, Any]]:
        project = self.config().project(project_id)
        if project is None or username not in project.members:
            raise NotAllowed(f"You are not a member of a project called {shown(project_id)}.")
        return [self._with_progress(p.to_json()) for p in self.state.pulls_of(project_id)]

    def _with_progress(self, record: dict[str, Any]) -> dict[str, Any]:
        progress = self._progress.get(str(record["id"]))
        if record["status"] == "running" and progress is not None:
            record.update(instances_done=progress.done, instances_refused=progress.refused,
                          instances_received=progress.received, bytes=progress.bytes)
        return record

    async def wait_idle(self) -> None:
        """Wait for running pulls (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- restart safety ---------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Pulls that were running when the gateway stopped: fail them, remove partial files."""
        failed = []
        for pull in self.state.interrupted_pulls():
            self.state.update_pull(
                pull.id, status="failed", finished=now(), instances_done=0,
                error="The pull was interrupted by a gateway restart; nothing was delivered. "
                      "Start it again.",
                error_reason="interrupted",
            )
            self._audit(pull.username, pull.project, "pull", pull=pull.id, instances=0,
                        outcome="failed", reason="interrupted")
            failed.append(pull.id)
        for project in self.config().projects:
            remove_partials(self.storage.project_dir(project.id))
        return failed

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await asyncio.to_thread(self.workers.shutdown, True)
        await self.archive.aclose()

    def _audit(self, actor: str, project: str, action: str, **details: Any) -> None:
        record = self.audit.append({"actor": actor, "project": project, "action": action, **details})
        # The anchor (sequence and full hash) lets `audit verify --anchor` detect a rewritten
        # or shortened chain from the log, which the region ships elsewhere.
        log.info("audit anchor %s:%s (%s by %s in %s: %s)", record["seq"], record["hash"], action,
                 actor, project, details.get("outcome"))


def _remove_pull_folder(project_dir: Path, relative: str, identity: str | None) -> None:
    """Remove ``project_dir/relative`` (``samples/<pull>``) through a descriptor of its parent
    that refuses links. The folder must be the one the gateway delivered (`identity`,
    ``<device>:<inode>``; pulls delivered before it was recorded: any folder): its content
    is removed through a descriptor of that very folder, so a folder a member moved to its
    name, another pull's say, is left alone."""
    folder, name = Path(relative).parent.as_posix(), Path(relative).name
    not_ours = WorkspaceUnusable(
        f"{relative} is not the folder the gateway delivered (it was moved or replaced); ask "
        "the workbench admins.", log_message=f"{relative}: not the delivered folder, left alone")
    parent_fd = open_workspace_folder(project_dir, folder, create=False)
    try:
        try:
            folder_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=parent_fd)
        except FileNotFoundError:
            return  # removed by hand already: still done
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise not_ours from None
            raise
        try:
            st = os.fstat(folder_fd)
            if identity is not None and f"{st.st_dev}:{st.st_ino}" != identity:
                raise not_ours
            for entry in os.scandir(folder_fd):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.name, dir_fd=folder_fd)
                else:
                    os.unlink(entry.name, dir_fd=folder_fd)
        finally:
            os.close(folder_fd)
        with contextlib.suppress(FileNotFoundError, OSError):
            os.rmdir(name, dir_fd=parent_fd)  # empty by now, unless swapped again meanwhile
    finally:
        os.close(parent_fd)


async def _settle(pending: set[asyncio.Future[Any]]) -> None:
    """Let objects already handed to a worker finish, so none writes after the clean-up."""
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


def _public(error: BaseException) -> tuple[str, str]:
    if isinstance(error, GatewayError):
        return error.message, error.reason
    if isinstance(error, (InvalidDicomError, ValueError, KeyError, AttributeError)):
        return (("The archive sent an object that is not valid DICOM; nothing was delivered. "
                 "The admins can see which in the gateway log."), "invalid_dicom")
    return (("The pull failed unexpectedly; nothing was delivered. The admins can see the "
             "details in the gateway log."), "internal")


def _first(item: dict[str, Any], tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or []
    return str(values[0]) if values else ""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def _midnight_utc() -> dt.datetime:
    today = dt.datetime.now(dt.UTC)
    return today.replace(hour=0, minute=0, second=0, microsecond=0)


def _pull_id(username: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{username}-{secrets.token_hex(3)}"


def build_gateway(config_path: str | None = None, data_dir: Path | None = None) -> Gateway:
    """The gateway as the hub runs it: configuration, storage and archive from the environment.

    ``$WORKBENCH_GATEWAY_WORKERS``: processes that de-identify in parallel (0: one thread
    in the gateway process; default: one per core, at most 4). On the 2-core build machine a
    51-image pull takes 0.061 s with 2 processes and 0.068 s with a thread (the series memo
    leaves little CPU per object to share; see docs/sample-gateway.md, "Figures").
    """
    config = cached_config(config_path)
    if config.archive is None:
        raise SystemExit("the workbench configuration has no archive section")
    storage = StorageLayout((data_dir or default_data_dir()).resolve())
    username = password = None
    if config.archive.credentials_file and config.archive.used_integration == "dicomweb":
        text = storage.resolve(config.archive.credentials_file).read_text().strip()
        username, _, password = text.partition(":")
    archive = build_archive(config.archive, username, password)
    private = storage.gateway_dir()
    private.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Gateway(
        config=lambda: cached_config(config_path, log=log),
        storage=storage,
        archive=archive,
        state=GatewayState.at(private),
        audit=AuditLog(private / "audit.jsonl"),
        keys_dir=private / "keys",
        workers=Workers(default_workers()),
    )


def default_workers() -> int:
    text = os.environ.get(WORKERS_ENV, "").strip()
    if text:
        try:
            return max(0, int(text))
        except ValueError:
            raise SystemExit(f"{WORKERS_ENV} must be a whole number, not {text!r}") from None
    return min(4, os.cpu_count() or 1)


__all__ = ["Gateway", "build_gateway"]
