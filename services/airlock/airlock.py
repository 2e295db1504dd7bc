"""The airlock's steps: request, check, review, deliver; each one audited.

1. **Request** (a project member): files and folders of the project workspace. They are
   copied at once into the airlock's staging area (hashing as they go), so what is checked,
   reviewed and delivered is exactly what was asked for, whatever happens in the workspace
   afterwards. Links, paths outside the workspace and more than the limits are refused.
2. **Check** (:mod:`.checks`): identifying DICOM refuses the request outright; possible
   burned-in text, pictures and CPR-shaped text flag it for the steward.
3. **Review** (a data steward of the project, never the requester): approve with a reason
   (and an explicit acknowledgement when flagged) or reject with a reason.
4. **Deliver**: approved files are copied to ``<egress>/<project>/<request id>/`` with a
   ``manifest.json`` (files, hashes, requester, steward, reason), checked against the hashes
   taken at request time; the staging copy is removed.

Every step appends to a hash-chained audit trail (the sample gateway's :class:`AuditLog`);
a step whose audit record cannot be written does not happen.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub_config.model import WorkbenchConfig
from hub_config.storage import StorageLayout
from services.sample_gateway.audit import AuditLog
from services.sample_gateway.errors import GatewayError

from . import checks, workspace
from .errors import AuditDown, Conflict, Forbidden, Invalid, NotFound
from .records import Delivery, ExportFile, ExportRequest, RequestStore, Review

log = logging.getLogger("airlock")

ACTOR = "airlock"


@dataclass(frozen=True)
class Limits:
    max_files: int = 500
    max_bytes: int = 2 * 1024**3


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class Airlock:
    config: Callable[[], WorkbenchConfig]
    storage: StorageLayout
    root: Path  # private: staging, records, audit (never mounted into a server)
    egress: Path  # where approved exports go (read by the people who send results on)
    limits: Limits = field(default_factory=Limits)
    clock: Callable[[], dt.datetime] = _now

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.egress.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.store = RequestStore(self.root)
        self.audit = AuditLog(self.root / "audit.jsonl")

    # Who may do what --------------------------------------------------------------------------
    def may_review(self, user: str, record: ExportRequest) -> bool:
        return user != record.requester and user in self.config().stewards_of(record.project)

    def is_steward(self, user: str) -> bool:
        config = self.config()
        return user in config.data_stewards or any(user in p.stewards for p in config.projects)

    def visible(self, user: str, record: ExportRequest) -> bool:
        project = self.config().project(record.project)
        member = project is not None and user in project.members
        return member or user in self.config().stewards_of(record.project)

    # 1 + 2: request and check ------------------------------------------------------------------
    def submit(self, user: str, project_id: str, paths: list[str], note: str = "") -> ExportRequest:
        config = self.config()
        project = config.project(project_id)
        if project is None or user not in project.members:
            raise Forbidden(f"You are not a member of a project called {project_id!r}.",
                            reason="not_member")
        if not paths:
            raise Invalid("Name at least one file or folder of the project workspace to export.")
        request_id = f"{self.clock():%Y%m%d}-{secrets.token_hex(4)}"
        staging = self.root / "staging" / request_id
        # Listing and copying both go through descriptors under this one (see .workspace):
        # nothing in the workspace can be swapped for a link between the check and the copy.
        root_fd = workspace.open_root(self.storage.project_dir(project.id).resolve())
        try:
            files = self._expand(root_fd, paths)
            staged = self._stage(root_fd, files, staging)
            findings = [f for item in staged for f in checks.check_file(staging / item.path, item.path)]
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            os.close(root_fd)
        refused = checks.refusals(findings)
        record = ExportRequest(
            id=request_id, project=project.id, requester=user, note=note[:2000],
            created=self.clock().isoformat(timespec="seconds"),
            status="refused" if refused else "pending_review",
            files=staged, findings=[f.to_json() for f in findings],
        )
        if refused:
            shutil.rmtree(staging, ignore_errors=True)
        self._audit(user, "export_requested", record, outcome=record.status,
                    files=[f.model_dump() for f in staged],
                    findings=[{"path": f.path, "code": f.code} for f in findings],
                    note_sha256=hashlib.sha256(note.encode()).hexdigest() if note else None,
                    on_failure=lambda: shutil.rmtree(staging, ignore_errors=True))
        with self.store.locked():
            self.store.save(record)
        log.info("export request %s by %s for %s: %s (%d files, %d findings)", record.id, user,
                 project.id, record.status, len(staged), len(findings))
        return record

    def _expand(self, root_fd: int, paths: list[str]) -> list[workspace.Entry]:
        """Every regular file named (folders expanded), sorted; links, hard links, paths
        outside the workspace and more than the limits are refused."""
        found: dict[str, workspace.Entry] = {}
        for raw in paths:
            for entry in workspace.list_files(root_fd, workspace.parts_of(raw), self.limits.max_files):
                found[entry.relative] = entry
            if len(found) > self.limits.max_files:
                raise Invalid(f"An export holds at most {self.limits.max_files} files.",
                              reason="too_many_files")
        self._check_size(sum(e.size for e in found.values()))
        return [found[name] for name in sorted(found)]

    def _check_size(self, total: int) -> None:
        if total > self.limits.max_bytes:
            raise Invalid(f"An export holds at most {self.limits.max_bytes / 1024**3:.1f} GiB; "
                          f"these files are {total / 1024**3:.2f} GiB.", reason="too_large")

    def _stage(self, root_fd: int, files: list[workspace.Entry], staging: Path) -> list[ExportFile]:
        """Copy each file into staging, hashing the bytes copied from the one descriptor
        that was opened (no link followed) and checked (regular, one hard link)."""
        staged = []
        total = 0
        for entry in files:
            target = staging / entry.relative
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            digest = hashlib.sha256()
            size = 0
            fd, _ = workspace.open_file(root_fd, workspace.parts_of(entry.relative))
            with os.fdopen(fd, "rb") as reader, open(target, "xb") as writer:
                while chunk := reader.read(1024 * 1024):
                    digest.update(chunk)
                    writer.write(chunk)
                    size += len(chunk)
                    self._check_size(total + size)  # grown since it was listed
            total += size
            staged.append(ExportFile(path=entry.relative, size=size, sha256=digest.hexdigest()))
        return staged

    # 3: review ------------------------------------------------------------------------------
    def review(self, user: str, request_id: str, decision: str, reason: str,
               acknowledge_flags: bool = False) -> ExportRequest:
        reason = (reason or "").strip()
        if decision not in ("approve", "reject"):
            raise Invalid("'decision' must be 'approve' or 'reject'.")
        if not reason:
            raise Invalid("Give a reason: it goes into the audit trail and to the requester.",
                          reason="reason_required")
        with self.store.locked():
            record = self._get(request_id, user)
            if user == record.requester:
                raise Forbidden("Nobody reviews their own export request; another steward must.",
                                reason="own_request")
            if user not in self.config().stewards_of(record.project):
                raise Forbidden(f"{user} is not a data steward of project {record.project}.",
                                reason="not_steward")
            if record.status != "pending_review":
                raise Conflict(f"Request {record.id} is {record.status.replace('_', ' ')}, not "
                               "waiting for review.", reason="not_pending")
            if decision == "approve" and record.flagged and not acknowledge_flags:
                raise Invalid("This request has flagged files: look at them, then approve with "
                              "acknowledge_flags (the page's tick box).", reason="flags_not_acknowledged")
            record.review = Review(by=user, decision=decision, reason=reason[:2000],
                                   at=self.clock().isoformat(timespec="seconds"),
                                   acknowledged_flags=bool(acknowledge_flags and record.flagged))
            record.status = "approved" if decision == "approve" else "rejected"
            self._audit(user, "export_reviewed", record, outcome=record.status, decision=decision,
                        reason=record.review.reason,
                        acknowledged_flags=record.review.acknowledged_flags)
            self.store.save(record)
        if record.status == "rejected":
            shutil.rmtree(self.root / "staging" / record.id, ignore_errors=True)
            return record
        return self.deliver(record.id)

    # 4: deliver -----------------------------------------------------------------------------
    def deliver(self, request_id: str) -> ExportRequest:
        """Copy an approved request to the egress folder (idempotent; resumes after a crash)."""
        with self.store.locked():
            record = self.store.get(request_id)
            if record is None:
                raise NotFound(f"There is no export request {request_id}.")
            if record.status == "exported":
                return record
            if record.status != "approved":
                raise Conflict(f"Request {record.id} is not approved.", reason="not_approved")
            staging = self.root / "staging" / record.id
            final = self.egress / record.project / record.id
            partial = final.with_name(f".{record.id}.partial")
            try:
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir(parents=True, mode=0o750)
                for item in record.files:
                    target = partial / item.path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(staging / item.path, target)
                    if _sha256(target) != item.sha256:
                        raise OSError(f"{item.path} changed in staging (hash mismatch)")
                manifest = self._manifest(record)
                (partial / "manifest.json").write_text(manifest)
                if final.exists():
                    shutil.rmtree(final)
                os.replace(partial, final)
            except OSError as exc:
                record.error = f"delivery failed: {exc}"
                self.store.save(record)
                self._audit(ACTOR, "export_delivery_failed", record, outcome="failed",
                            error=str(exc))
                raise
            record.delivery = Delivery(
                path=str(final.relative_to(self.egress)),
                at=self.clock().isoformat(timespec="seconds"),
                manifest_sha256=hashlib.sha256(manifest.encode()).hexdigest(),
            )
            record.status, record.error = "exported", None
            self._audit(ACTOR, "export_delivered", record, outcome="exported",
                        destination=record.delivery.path,
                        manifest_sha256=record.delivery.manifest_sha256)
            self.store.save(record)
        shutil.rmtree(staging, ignore_errors=True)
        log.info("export %s delivered to %s", record.id, final)
        return record

    def _manifest(self, record: ExportRequest) -> str:
        assert record.review is not None
        return json.dumps({
            "request": record.id,
            "project": record.project,
            "requested_by": record.requester,
            "requested_at": record.created,
            "approved_by": record.review.by,
            "approved_at": record.review.at,
            "reason": record.review.reason,
            "acknowledged_flags": record.review.acknowledged_flags,
            "findings": record.findings,
            "files": [f.model_dump() for f in record.files],
        }, indent=1, sort_keys=True)

    def recover(self) -> list[str]:
        """At start: deliver what a crash left approved; drop staging of finished requests."""
        done = []
        for record in self.store.all():
            if record.status == "approved":
                try:
                    self.deliver(record.id)
                    done.append(record.id)
                except (OSError, Conflict) as exc:
                    log.error("export %s still not delivered: %s", record.id, exc)
            elif record.status in ("refused", "rejected", "exported"):
                shutil.rmtree(self.root / "staging" / record.id, ignore_errors=True)
        return done

    # Reading ----------------------------------------------------------------------------------
    def _get(self, request_id: str, user: str) -> ExportRequest:
        record = self.store.get(request_id) if _safe_id(request_id) else None
        if record is None or not self.visible(user, record):
            raise NotFound(f"There is no export request {request_id} that you may see.")
        return record

    def get(self, user: str, request_id: str) -> ExportRequest:
        return self._get(request_id, user)

    def requests_for(self, user: str) -> list[ExportRequest]:
        return [r for r in self.store.all() if self.visible(user, r)]

    def workspace_files(self, user: str, project_id: str, limit: int = 2000) -> list[dict[str, Any]]:
        """Files of the project workspace (for the page's picker); no links followed."""
        project = self.config().project(project_id)
        if project is None or user not in project.members:
            raise Forbidden(f"You are not a member of a project called {project_id!r}.",
                            reason="not_member")
        root = self.storage.project_dir(project.id)
        if not root.is_dir():
            return []
        listed: list[dict[str, Any]] = []
        root_fd = workspace.open_root(root.resolve())
        try:
            for kind, name, info in workspace.walk(root_fd, hidden=False):
                if kind == "file":
                    listed.append({"path": name, "size": info.st_size})
                    if len(listed) >= limit:
                        break
        except Invalid:  # a folder swapped for a link while listed: list what was seen
            pass
        finally:
            os.close(root_fd)
        return listed

    # Audit --------------------------------------------------------------------------------
    def _audit(self, actor: str, action: str, record: ExportRequest, *, outcome: str,
               on_failure: Callable[[], None] | None = None, **details: Any) -> None:
        event = {"actor": actor, "action": action, "project": record.project,
                 "request": record.id, "outcome": outcome,
                 **{k: v for k, v in details.items() if v is not None}}
        try:
            self.audit.append(event)
        except (GatewayError, OSError) as exc:
            if on_failure:
                on_failure()
            log.error("audit append failed for %s %s: %s", action, record.id, exc)
            raise AuditDown("The airlock cannot write its audit trail; nothing was done. The "
                            "admins are told by the service log.") from None


def _safe_id(request_id: str) -> bool:
    return bool(request_id) and all(c.isalnum() or c == "-" for c in request_id)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
