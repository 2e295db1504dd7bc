"""The gateway's work: search, pull, de-identify, deliver, audit. Orchestration only.

The rules live elsewhere: who may do what in :mod:`.access`, query building in
:mod:`.queries`, de-identification in :mod:`.deidentify`, writing in :mod:`.delivery`,
the trail in :mod:`.audit`. This module calls them in order and keeps the pull records'
status consistent, also across a gateway restart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from hub_config.loader import cached_config
from hub_config.model import Project, WorkbenchConfig
from hub_config.storage import StorageLayout, default_data_dir

from . import access
from .archive import ArchiveSettings, DicomWebArchive
from .audit import AuditLog
from .delivery import PullWriter, remove_partials
from .deidentify import BurnedInAnnotationRefused, DeidPolicy, deidentify
from .errors import BadRequest, GatewayError, NotAllowed, NotFound
from .instances import dataset_from_part
from .pseudonyms import ProjectKeys, load_or_create_key
from .queries import StudyCriteria, matches_description, qido_study_params
from .state import GatewayState, Pull, StudyKey, now
from .summaries import summarize_study

log = logging.getLogger("sample_gateway")

MAX_SEARCH_PAGES = 20


@dataclass
class Gateway:
    config: Callable[[], WorkbenchConfig]
    storage: StorageLayout
    archive: DicomWebArchive
    state: GatewayState
    audit: AuditLog
    keys_dir: Path
    today: Callable[[], dt.date] = dt.date.today
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    # -- projects ---------------------------------------------------------------------------
    def keys_for(self, project_id: str) -> ProjectKeys:
        self.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return ProjectKeys(load_or_create_key(self.keys_dir / f"{project_id}.key"), project_id)

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
            out.append(
                {
                    "id": project.id,
                    "title": project.title,
                    "can_pull": usable,
                    "why_not": why_not,
                    "modalities": project.archive.modalities,
                    "limits": limits.model_dump(),
                    "studies_pulled_today": self.state.studies_pulled_since(project.id, _midnight_utc()),
                }
            )
        return out

    # -- search -----------------------------------------------------------------------------
    async def search(self, username: str, project_id: str, criteria: StudyCriteria) -> dict[str, Any]:
        project = access.project_for_pull(self.config(), username, project_id, self.today())
        access.check_modality(project, criteria.modality)
        keys = self.keys_for(project.id)
        studies: list[dict[str, Any]] = []
        remembered: list[StudyKey] = []
        offset, seen = criteria.offset, set()
        next_offset: int | None = None
        try:
            for _ in range(MAX_SEARCH_PAGES):
                page = await self.archive.search_studies(
                    qido_study_params(criteria, limit=criteria.limit, offset=offset)
                )
                uids = [_study_uid(item) for item in page]
                if not page or all(uid in seen for uid in uids):
                    next_offset = None  # the end, or an archive that ignores offset
                    break
                seen.update(uids)
                for item in page:
                    summary = self._summary_if_allowed(project, keys, criteria, item)
                    if summary is None:
                        continue
                    study, row = summary
                    studies.append(study)
                    remembered.append(row)
                offset += len(page)
                next_offset = offset if len(page) >= criteria.limit else None
                if len(studies) >= criteria.limit or next_offset is None:
                    break
        except GatewayError as error:
            self._audit(username, project.id, "search", criteria=criteria.audit_view(),
                        outcome="failed", reason=error.reason)
            raise
        self.state.remember_studies(project.id, remembered)
        self._audit(username, project.id, "search", criteria=criteria.audit_view(),
                    results=len(studies), outcome="ok")
        return {"project": project.id, "studies": studies, "next_offset": next_offset}

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
        if not matches_description(criteria, identity.study_description):
            return None
        row = StudyKey(
            project=project.id, study_key=study["study_key"], study_uid=identity.study_uid,
            patient_id=identity.patient_id, issuer=identity.issuer, seen_at=now(),
        )
        return study, row

    # -- pulls ------------------------------------------------------------------------------
    async def start_pull(self, username: str, project_id: str, study_keys: list[str]) -> dict[str, Any]:
        project = access.project_for_pull(self.config(), username, project_id, self.today())
        if len(set(study_keys)) != len(study_keys):
            raise BadRequest("The same study is selected twice.")
        studies = []
        for key in study_keys:
            row = self.state.lookup_study(project.id, key)
            if row is None:
                raise NotFound(
                    f"Study key {key} is not from a search of project {project.id}; search again "
                    "and select from the results.",
                    reason="unknown_study_key",
                )
            studies.append((key, row))
        access.check_pull_size(
            project.archive.limits, studies=len(studies), instances=0,
            studies_today=self.state.studies_pulled_since(project.id, _midnight_utc()),
        )
        plan = []
        for key, row in studies:
            for series in await self.archive.search_series(row.study_uid):
                modality = _first(series, "00080060")
                if modality and not access.allowed_modalities(project, [modality]):
                    continue
                count = _int(_first(series, "00201209"))
                plan.append((key, row.study_uid, _first(series, "0020000E"), count))
        total = sum(count for *_, count in plan)
        access.check_pull_size(
            project.archive.limits, studies=len(studies), instances=total,
            studies_today=self.state.studies_pulled_since(project.id, _midnight_utc()),
        )
        pull = Pull(
            id=_pull_id(username), project=project.id, username=username, status="running",
            created=now(), studies=len(studies), instances_total=total,
        )
        self.state.add_pull(pull)
        task = asyncio.create_task(self._run_pull(pull, project, plan, [k for k, _ in studies]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return pull.to_json()

    async def _run_pull(
        self, pull: Pull, project: Project, plan: list[tuple[str, str, str, int]], study_keys: list[str]
    ) -> None:
        keys = self.keys_for(project.id)
        policy = DeidPolicy(allow_burned_in_annotation=project.archive.allow_burned_in_annotation)
        writer = PullWriter(self.storage.samples_dir(project.id), pull.id)
        received = done = refused = 0
        refusals: dict[str, int] = {}
        try:
            for _study_key, study_uid, series_uid, _count in plan:
                async for part in self.archive.retrieve_series(study_uid, series_uid):
                    received += len(part.body)
                    access.check_pull_bytes(project.archive.limits, received)
                    try:
                        outcome = await asyncio.to_thread(_deidentify_part, part, keys, policy)
                    except BurnedInAnnotationRefused as refusal:
                        refused += 1
                        refusals[refusal.message] = refusals.get(refusal.message, 0) + 1
                        continue
                    await asyncio.to_thread(writer.write, outcome)
                    done += 1
                    if done % 5 == 0:
                        self.state.update_pull(pull.id, instances_done=done, bytes_received=received,
                                               instances_refused=refused)
            if done == 0:
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
                "deidentification": policy.method_description(),
                "study_keys": study_keys,
                "refused": refusals,
            }
            path = await asyncio.to_thread(writer.commit, header)
        except Exception as error:  # noqa: BLE001 - every failure must clean up and be recorded
            writer.abort()
            message, reason = _public(error)
            if not isinstance(error, GatewayError):
                log.exception("pull %s failed", pull.id)
            self.state.update_pull(pull.id, status="failed", finished=now(), error=message,
                                   error_reason=reason, instances_done=0, bytes_received=received,
                                   instances_refused=refused)
            self._audit(pull.username, project.id, "pull", pull=pull.id, study_keys=study_keys,
                        instances=0, refused=refused, outcome="failed", reason=reason)
            return
        relative = path.relative_to(self.storage.project_dir(project.id))
        self.state.update_pull(pull.id, status="done", finished=now(), instances_done=done,
                               bytes_received=received, instances_refused=refused, path=str(relative))
        self._audit(pull.username, project.id, "pull", pull=pull.id, study_keys=study_keys,
                    instances=done, refused=refused, bytes=received, outcome="ok")

    def pull_status(self, username: str, pull_id: str) -> dict[str, Any]:
        pull = self.state.get_pull(pull_id)
        config = self.config()
        project = config.project(pull.project) if pull else None
        if pull is None or project is None or username not in project.members:
            raise NotFound(f"There is no pull {pull_id} in your projects.")
        return pull.to_json()

    def list_pulls(self, username: str, project_id: str) -> list[dict[str, Any]]:
        project = self.config().project(project_id)
        if project is None or username not in project.members:
            raise NotAllowed(f"You are not a member of a project called {project_id!r}.")
        return [p.to_json() for p in self.state.pulls_of(project_id)]

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
            remove_partials(self.storage.samples_dir(project.id))
        return failed

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.archive.aclose()

    def _audit(self, actor: str, project: str, action: str, **details: Any) -> None:
        record = self.audit.append({"actor": actor, "project": project, "action": action, **details})
        log.info("audit %s #%s %s by %s in %s: %s", record["hash"][:12], record["seq"], action,
                 actor, project, details.get("outcome"))


def _deidentify_part(part: Any, keys: ProjectKeys, policy: DeidPolicy) -> Dataset:
    dataset = dataset_from_part(part)
    return deidentify(dataset, keys, policy).dataset


def _public(error: BaseException) -> tuple[str, str]:
    if isinstance(error, GatewayError):
        return error.message, error.reason
    if isinstance(error, (InvalidDicomError, ValueError)):
        return ("The archive sent an object that is not valid DICOM; nothing was delivered. "
                "The admins can see which in the gateway log.", "invalid_dicom")
    return ("The pull failed unexpectedly; nothing was delivered. The admins can see the "
            "details in the gateway log.", "internal")


def _first(item: dict[str, Any], tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or []
    return str(values[0]) if values else ""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def _study_uid(item: dict[str, Any]) -> str:
    return _first(item, "0020000D")


def _midnight_utc() -> dt.datetime:
    today = dt.datetime.now(dt.timezone.utc)
    return today.replace(hour=0, minute=0, second=0, microsecond=0)


def _pull_id(username: str) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{username}-{secrets.token_hex(3)}"


def build_gateway(config_path: str | None = None, data_dir: Path | None = None) -> Gateway:
    """The gateway as the hub runs it: configuration, storage and archive from the environment."""
    config = cached_config(config_path)
    if config.archive is None or not config.archive.dicomweb_url:
        raise SystemExit("the workbench configuration has no archive with a dicomweb_url")
    storage = StorageLayout((data_dir or default_data_dir()).resolve())
    username = password = None
    if config.archive.credentials_file:
        text = storage.resolve(config.archive.credentials_file).read_text().strip()
        username, _, password = text.partition(":")
    archive = DicomWebArchive(
        ArchiveSettings(
            base_url=config.archive.dicomweb_url, username=username, password=password,
            timeout_seconds=config.archive.timeout_seconds, name=config.archive.name,
        )
    )
    private = storage.gateway_dir()
    private.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Gateway(
        config=lambda: cached_config(config_path, log=log),
        storage=storage,
        archive=archive,
        state=GatewayState.at(private),
        audit=AuditLog(private / "audit.jsonl"),
        keys_dir=private / "keys",
    )


__all__ = ["Gateway", "build_gateway"]
