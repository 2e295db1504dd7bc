"""The quota ledger: allocations, budget overrides and notices in SQL, through SQLAlchemy.

One row per allocation (a user server, a batch run, a Dask worker) moves
``reserved -> running -> ended``, or ``reserved -> released`` when it never started. Usage is
computed from the rows (:mod:`.budgets`), so nothing is ever counted twice: a hub or service
restart finds the same rows and continues them.

Reservations are atomic. On SQLite the check and the insert run in one ``BEGIN IMMEDIATE``
transaction (one writer at a time, across processes). On PostgreSQL they run under a
transaction-scoped advisory lock keyed by the account, so two projects never wait for each
other and no serialization failure has to be retried (SERIALIZABLE would refuse and retry under
load; the lock queues). Every other write is a single short transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    case,
    create_engine,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from .budgets import (
    HOUR,
    SERVER,
    AnyBudget,
    Refusal,
    Request,
    Span,
    Usage,
    UserUsage,
    Window,
    budget_window,
    check_request,
    effective_budget,
    period_window,
)
from .errors import LedgerUnavailable, QuotaExceeded

SCHEMA_VERSION = 1
DEFAULT_TIMEZONE = "Europe/Copenhagen"  # the window shown for accounts without a budget

RESERVED, RUNNING, ENDED, RELEASED = "reserved", "running", "ended", "released"
ACTIVE = (RESERVED, RUNNING)


class Base(DeclarativeBase):
    pass


class Allocation(Base):
    __tablename__ = "quota_allocations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account: Mapped[str] = mapped_column(String(80))
    user: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(20), default="server")
    server_name: Mapped[str] = mapped_column(String(255), default="")
    profile: Mapped[str | None] = mapped_column(String(80), nullable=True)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    cpu: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(12), default=RESERVED)
    reserved_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_seen_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    url: Mapped[str | None] = mapped_column(Text, nullable=True)
    stop_requested_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    stop_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ix_quota_alloc_account_status", "account", "status"),
        Index("ix_quota_alloc_status", "status"),
        Index("ix_quota_alloc_ended", "account", "ended_at"),
    )


class BudgetOverride(Base):
    """An admin's change to a budget (CLI ``set`` or the API), laid over the YAML's."""

    __tablename__ = "quota_budget_overrides"

    account: Mapped[str] = mapped_column(String(80), primary_key=True)
    fields: Mapped[str] = mapped_column(Text)  # JSON object of Budget fields
    set_by: Mapped[str] = mapped_column(String(255))
    set_at: Mapped[float] = mapped_column(Float)
    note: Mapped[str] = mapped_column(Text, default="")


class Notice(Base):
    """A warning or stop announced to users; unique per limit, level and period."""

    __tablename__ = "quota_notices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(80))
    user: Mapped[str] = mapped_column(String(255), default="")  # "" concerns every member
    limit: Mapped[str] = mapped_column(String(40))
    level: Mapped[int] = mapped_column(Integer)  # 80, 95, 100 (used up), 101 (servers stopped)
    allowed: Mapped[float] = mapped_column(Float)  # a raised budget warns afresh
    window_start: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("account", "user", "limit", "level", "allowed", "window_start", name="uq_quota_notice"),
        Index("ix_quota_notice_account", "account", "created_at"),
    )


class Meta(Base):
    __tablename__ = "quota_meta"

    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


# Snapshots handed out (never live ORM objects) -------------------------------------------------
@dataclass(frozen=True)
class AllocationRecord:
    id: str
    account: str
    user: str
    kind: str
    server_name: str
    profile: str | None
    gpus: int
    cpu: float
    status: str
    reserved_at: float
    expires_at: float | None
    started_at: float | None
    last_seen_at: float | None
    ended_at: float | None
    end_reason: str | None
    url: str | None
    stop_requested_at: float | None
    stop_reason: str | None

    def span(self, now: float) -> Span:
        active = self.status == RUNNING or (
            self.status == RESERVED and (self.expires_at is None or self.expires_at > now)
        )
        return Span(self.id, self.user, self.gpus, self.cpu, self.kind, self.started_at,
                    self.ended_at, active)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _record(row: Allocation) -> AllocationRecord:
    return AllocationRecord(**{name: getattr(row, name) for name in AllocationRecord.__dataclass_fields__})


@dataclass(frozen=True)
class NoticeRecord:
    id: int
    account: str
    user: str
    limit: str
    level: int
    allowed: float
    window_start: float
    created_at: float
    message: str


@dataclass(frozen=True)
class Claim:
    """What a start wants to hold, and for whom."""

    account: str
    user: str
    gpus: int = 0
    cpu: float = 0.0
    kind: str = "server"
    server_name: str = ""
    profile: str | None = None

    def request(self) -> Request:
        return Request(self.user, self.gpus, self.cpu, self.kind)


@dataclass(frozen=True)
class AccountView:
    """An account's budget (with overrides), window, usage and allocations at one moment."""

    account: str
    budget: AnyBudget | None
    window: Window
    allocations: tuple[AllocationRecord, ...]
    now: float

    @property
    def spans(self) -> list[Span]:
        return [a.span(self.now) for a in self.allocations]


def normalise_url(url: str) -> str:
    """'postgresql://' means psycopg 3 here (psycopg2 is not a dependency)."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _lock_key(account: str) -> int:
    return int.from_bytes(hashlib.sha256(f"quota:{account}".encode()).digest()[:8], "big", signed=True)


_SCHEMA_LOCK = _lock_key("schema")


class Ledger:
    """All reads and writes of the quota tables. Thread-safe; one per process and URL."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        try:
            self._open(url, pool_size)
        except (OSError, SQLAlchemyError) as exc:
            raise LedgerUnavailable(
                "The quota ledger cannot be reached, so no server can be accounted for; try again "
                "in a minute or tell the workbench admins.",
                log_message=f"cannot open the quota ledger: {exc}",
            ) from exc

    def _open(self, url: str, pool_size: int) -> None:
        self._usage_query: Any = None
        self.url = normalise_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:":
                _private_sqlite_file(Path(database))
            self.engine = create_engine(
                self.url, connect_args={"check_same_thread": False, "timeout": 60}
            )
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        elif self.dialect == "postgresql":
            self.engine = create_engine(
                self.url, pool_size=pool_size, max_overflow=2 * pool_size, pool_pre_ping=True
            )
        else:
            raise ValueError(f"the quota ledger supports SQLite and PostgreSQL, not {self.dialect!r}")
        self._create_schema()

    # Connection handling ----------------------------------------------------------------------
    def _create_schema(self) -> None:
        with self._write(None) as session:
            Base.metadata.create_all(session.connection())
            if session.get(Meta, "schema_version") is None:
                session.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))

    @contextmanager
    def _write(self, account: str | None) -> Iterator[Session]:
        """One write transaction: IMMEDIATE on SQLite, an advisory lock per account on PostgreSQL."""
        try:
            with self.engine.connect() as connection:
                if self.dialect == "sqlite":
                    connection = connection.execution_options(sqlite_begin="IMMEDIATE")
                with Session(bind=connection, expire_on_commit=False) as session, session.begin():
                    if self.dialect == "postgresql":
                        key = _SCHEMA_LOCK if account is None else _lock_key(account)
                        session.execute(select(func.pg_advisory_xact_lock(key)))
                    yield session
        except OperationalError as exc:
            raise LedgerUnavailable(
                "The quota ledger cannot be reached, so no server can be accounted for; try again "
                "in a minute or tell the workbench admins.",
                log_message=f"quota ledger {self.engine.url.render_as_string(hide_password=True)}: {exc}",
            ) from exc

    @contextmanager
    def _read(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except OperationalError as exc:
            raise LedgerUnavailable(
                "The quota ledger cannot be reached.",
                log_message=f"quota ledger: {exc}",
            ) from exc

    def dispose(self) -> None:
        self.engine.dispose()

    # Reservations and the life of an allocation ----------------------------------------------
    def reserve(
        self,
        claim: Claim,
        budget: AnyBudget | None,
        *,
        now: float,
        ttl: float,
        account_label: str | None = None,
    ) -> str:
        """Check ``claim`` against the account's budget and record it, atomically.

        Raises :class:`QuotaExceeded` (nothing recorded) when a limit would be broken. The
        reservation holds its GPUs and server slot until it starts, is released, or ``ttl``
        seconds pass without a start (a hub that died mid-spawn must not hold a GPU forever).
        """
        label = account_label or f"Project {claim.account}"
        with self._write(claim.account) as session:
            effective = _effective(session, claim.account, budget)
            if effective is not None:
                window = budget_window(effective, now)
                usage = self._usage_sql(session, claim.account, window, now, claim.user)
                refusal: Refusal | None = check_request(effective, window, usage, claim.request(), now, label)
                if refusal is not None:
                    raise QuotaExceeded(refusal, claim.account)
            allocation_id = uuid.uuid4().hex
            session.add(
                Allocation(
                    id=allocation_id, account=claim.account, user=claim.user, kind=claim.kind,
                    server_name=claim.server_name, profile=claim.profile, gpus=claim.gpus,
                    cpu=claim.cpu, status=RESERVED, reserved_at=now, expires_at=now + ttl,
                )
            )
        return allocation_id

    def usage(self, account: str, window: Window, *, now: float, user: str | None = None) -> Usage:
        """What the reservation check sees: the account's totals (and ``user``'s), summed in SQL."""
        with self._read() as session:
            return self._usage_sql(session, account, window, now, user)

    def _usage_sql(self, session: Session, account: str, window: Window, now: float, user: str | None) -> Usage:
        """:func:`budgets.usage_of` as one aggregate query, so a reservation's time under the lock
        does not grow with the number of allocations in the period (the tests check both agree)."""
        row = session.execute(
            self._usage_statement(),
            {"account": account, "start": window.start, "end": window.end, "now": now, "user": user or ""},
        ).one()
        gpu_s, cpu_s, gpus, servers, my_gpu_s, my_cpu_s, my_gpus, my_servers = (float(v) for v in row)
        by_user = {}
        if user:
            by_user[user] = UserUsage(my_gpu_s / HOUR, my_cpu_s / HOUR, int(my_gpus), int(my_servers))
        return Usage(gpu_s / HOUR, cpu_s / HOUR, int(gpus), int(servers), by_user)

    def _usage_statement(self) -> Any:
        """Built once per ledger (building SQLAlchemy expressions costs more than running them)."""
        if self._usage_query is not None:
            return self._usage_query
        account, start, end = bindparam("account"), bindparam("start", type_=Float), bindparam("end", type_=Float)
        now, user = bindparam("now", type_=Float), bindparam("user")
        greatest, least = (func.max, func.min) if self.dialect == "sqlite" else (func.greatest, func.least)
        begun = greatest(Allocation.started_at, start)
        stopped = least(func.coalesce(Allocation.ended_at, now), end, now)
        seconds = case((and_(Allocation.started_at.is_not(None), stopped > begun), stopped - begun), else_=0.0)
        active = or_(
            Allocation.status == RUNNING,
            and_(Allocation.status == RESERVED, or_(Allocation.expires_at.is_(None), Allocation.expires_at > now)),
        )
        held_gpus = case((active, Allocation.gpus), else_=0)
        held_server = case((and_(active, Allocation.kind == SERVER), 1), else_=0)
        mine = Allocation.user == user
        columns = [seconds * Allocation.gpus, seconds * Allocation.cpu, held_gpus, held_server]
        self._usage_query = select(
            *(func.coalesce(func.sum(c), 0) for c in columns),
            *(func.coalesce(func.sum(case((mine, c), else_=0)), 0) for c in columns),
        ).where(
            Allocation.account == account,
            or_(Allocation.ended_at.is_(None), Allocation.ended_at > start),
        )
        return self._usage_query

    def mark_started(self, allocation_id: str, *, now: float, url: str | None = None) -> bool:
        """The reservation's server runs from ``now``: usage starts counting.

        False when the reservation is gone or expired: its GPUs may already be someone else's,
        so the caller must not run (the spawner then fails the start and the hub stops it).
        """
        with self._write(None) as session:
            result = session.execute(
                update(Allocation)
                .where(
                    Allocation.id == allocation_id,
                    Allocation.status == RESERVED,
                    or_(Allocation.expires_at.is_(None), Allocation.expires_at > now),
                )
                .values(status=RUNNING, started_at=now, last_seen_at=now, url=url, expires_at=None)
            )
            return result.rowcount == 1

    def finish(self, allocation_id: str, *, at: float, now: float, reason: str) -> AllocationRecord | None:
        """Close a running allocation at ``at`` (clamped to its run) or release a reservation.

        Idempotent: an allocation already ended or released stays as it was (returns None).
        """
        with self._write(None) as session:
            row = session.get(Allocation, allocation_id)
            if row is None or row.status not in ACTIVE:
                return None
            if row.status == RESERVED:
                row.status, row.ended_at = RELEASED, now
            else:
                row.status = ENDED
                row.ended_at = max(row.started_at or at, min(at, now))
            row.end_reason = reason
            return _record(row)

    def last_seen(self, allocation_id: str) -> float | None:
        with self._read() as session:
            row = session.get(Allocation, allocation_id)
            return None if row is None else row.last_seen_at

    def heartbeat(self, allocation_ids: Iterable[str], *, now: float) -> int:
        """Mark running allocations as seen alive at ``now`` (one statement for all)."""
        ids = list(allocation_ids)
        if not ids:
            return 0
        with self._write(None) as session:
            result = session.execute(
                update(Allocation)
                .where(Allocation.id.in_(ids), Allocation.status == RUNNING)
                .values(last_seen_at=now)
            )
            return result.rowcount

    def expire_reservations(self, *, now: float) -> list[AllocationRecord]:
        """Release reservations whose start never came (a hub that died mid-spawn)."""
        with self._write(None) as session:
            rows = session.scalars(
                select(Allocation).where(Allocation.status == RESERVED, Allocation.expires_at <= now)
            ).all()
            for row in rows:
                row.status, row.ended_at = RELEASED, now
                row.end_reason = "reservation expired: the server never started"
            return [_record(r) for r in rows]

    def request_stop(self, allocation_ids: Iterable[str], *, reason: str, now: float) -> int:
        """Record that these allocations must stop (the enforcer then asks the hub)."""
        ids = list(allocation_ids)
        if not ids:
            return 0
        with self._write(None) as session:
            result = session.execute(
                update(Allocation)
                .where(
                    Allocation.id.in_(ids),
                    Allocation.status.in_(ACTIVE),
                    Allocation.stop_requested_at.is_(None),
                )
                .values(stop_requested_at=now, stop_reason=reason)
            )
            return result.rowcount

    # Reads -----------------------------------------------------------------------------------
    def get(self, allocation_id: str) -> AllocationRecord | None:
        with self._read() as session:
            row = session.get(Allocation, allocation_id)
            return None if row is None else _record(row)

    def allocations(
        self,
        *,
        account: str | None = None,
        user: str | None = None,
        statuses: Iterable[str] | None = None,
        since: float | None = None,
    ) -> list[AllocationRecord]:
        """Allocations, oldest first; ``since`` keeps those still active or ended after it."""
        query = select(Allocation)
        if account is not None:
            query = query.where(Allocation.account == account)
        if user is not None:
            query = query.where(Allocation.user == user)
        if statuses is not None:
            query = query.where(Allocation.status.in_(list(statuses)))
        if since is not None:
            query = query.where(or_(Allocation.ended_at.is_(None), Allocation.ended_at > since))
        with self._read() as session:
            return [_record(r) for r in session.scalars(query.order_by(Allocation.reserved_at, Allocation.id))]

    def view(self, account: str, budget: AnyBudget | None, *, now: float, at: float | None = None) -> AccountView:
        """Budget (with override), the window containing ``at`` (default now) and the account's
        allocations that count in it, read in one transaction. Without a budget the window is
        the calendar month in Copenhagen, so usage still shows."""
        with self._read() as session:
            effective = _effective(session, account, budget)
            moment = now if at is None else at
            if effective is not None:
                window = budget_window(effective, moment)
            else:
                window = period_window("month", DEFAULT_TIMEZONE, moment)
            rows = _account_rows(session, account, window.start)
            return AccountView(account, effective, window, tuple(_record(r) for r in rows), now)

    def accounts(self) -> list[str]:
        with self._read() as session:
            found = set(session.scalars(select(Allocation.account).distinct()))
            found.update(session.scalars(select(BudgetOverride.account)))
            return sorted(found)

    # Budget overrides -------------------------------------------------------------------------
    def overrides(self) -> dict[str, dict[str, Any]]:
        with self._read() as session:
            return {
                row.account: {"fields": json.loads(row.fields), "set_by": row.set_by,
                              "set_at": row.set_at, "note": row.note}
                for row in session.scalars(select(BudgetOverride))
            }

    def set_override(
        self, account: str, fields: Mapping[str, Any], *, by: str, now: float, note: str = ""
    ) -> dict[str, Any]:
        """Merge ``fields`` into the account's override (a None value removes that limit)."""
        with self._write(account) as session:
            row = session.get(BudgetOverride, account)
            merged = json.loads(row.fields) if row else {}
            merged.update(fields)
            if row is None:
                session.add(BudgetOverride(account=account, fields=json.dumps(merged, sort_keys=True),
                                           set_by=by, set_at=now, note=note))
            else:
                row.fields, row.set_by, row.set_at, row.note = json.dumps(merged, sort_keys=True), by, now, note
            return merged

    def clear_override(self, account: str) -> bool:
        with self._write(account) as session:
            row = session.get(BudgetOverride, account)
            if row is None:
                return False
            session.delete(row)
            return True

    # Notices ---------------------------------------------------------------------------------
    def add_notice(
        self, *, account: str, user: str, limit: str, level: int, allowed: float,
        window_start: float, now: float, message: str,
    ) -> NoticeRecord:
        """Record a notice once per (account, user, limit, level, allowance, period).

        Returns the notice as recorded: the existing one (with its first time) if it was there.
        """
        with self._write(account) as session:
            row = session.scalars(
                select(Notice).where(
                    Notice.account == account, Notice.user == user, Notice.limit == limit,
                    Notice.level == level, Notice.allowed == allowed,
                    Notice.window_start == window_start,
                )
            ).first()
            if row is None:
                row = Notice(account=account, user=user, limit=limit, level=level, allowed=allowed,
                             window_start=window_start, created_at=now, message=message)
                session.add(row)
                session.flush()
            return _notice(row)

    def notices(
        self, *, accounts: Iterable[str] | None = None, since: float | None = None, limit: int = 200
    ) -> list[NoticeRecord]:
        """Newest first."""
        query = select(Notice)
        if accounts is not None:
            query = query.where(Notice.account.in_(list(accounts)))
        if since is not None:
            query = query.where(Notice.created_at >= since)
        with self._read() as session:
            rows = session.scalars(query.order_by(Notice.created_at.desc(), Notice.id.desc()).limit(limit))
            return [_notice(r) for r in rows]


def _notice(row: Notice) -> NoticeRecord:
    return NoticeRecord(row.id, row.account, row.user, row.limit, row.level, row.allowed,
                        row.window_start, row.created_at, row.message)


def _effective(session: Session, account: str, budget: AnyBudget | None) -> AnyBudget | None:
    row = session.get(BudgetOverride, account)
    return effective_budget(budget, json.loads(row.fields) if row else None)


def _account_rows(session: Session, account: str, since: float) -> list[Allocation]:
    """The account's allocations that hold resources now or used some after ``since``."""
    return list(
        session.scalars(
            select(Allocation).where(
                Allocation.account == account,
                or_(Allocation.ended_at.is_(None), Allocation.ended_at > since),
            )
        )
    )


_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _private_sqlite_file(path: Path) -> None:
    """The SQLite ledger readable by the hub's user only: its folder 0700, the file 0600.

    The file is created here with mode 0600 before SQLite opens it (an explicit mode is
    the thread-safe form of a restrictive umask: the hub is multi-threaded and the umask
    is per process); SQLite gives its -wal and -shm files the database file's mode. Files
    and a folder left wider by earlier versions are narrowed; a folder that holds anything
    besides the ledger is the operator's and only narrowed by them.
    """
    folder = path.parent
    if not folder.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    elif folder.stat().st_mode & 0o077 and _only_ledger_files(folder, path.name):
        _narrow(folder, 0o700)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass
    for name in (path.name, *(path.name + side for side in _SQLITE_SIDE_FILES)):
        if (folder / name).exists():
            _narrow(folder / name, 0o600)


def _only_ledger_files(folder: Path, name: str) -> bool:
    allowed = {name, *(name + side for side in _SQLITE_SIDE_FILES)}
    return all(entry.name in allowed for entry in folder.iterdir())


def _narrow(path: Path, mode: int) -> None:
    info = path.stat()
    if info.st_mode & 0o777 & ~mode and info.st_uid == os.getuid():
        path.chmod(mode)


def _sqlite_connect(dbapi_connection: Any, _connection_record: Any) -> None:
    # Let SQLAlchemy's 'begin' event issue BEGIN itself (pysqlite would defer it).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


_ledgers: dict[str, Ledger] = {}
_ledgers_lock = threading.Lock()


def ledger_for(url: str) -> Ledger:
    """The process's ledger for ``url`` (one engine and pool per database)."""
    key = normalise_url(url)
    with _ledgers_lock:
        ledger = _ledgers.get(key)
        if ledger is None:
            ledger = _ledgers[key] = Ledger(key)
        return ledger
