"""The gateway's private state: which pseudonymous study key stands for which study, and pulls.

This database maps study keys back to archive UIDs, so it lives only in the gateway's own
directory (mode 0700), is never mounted into a server and is never shown to researchers.
Pulls carry a status; a pull still 'running' when the gateway starts was interrupted and is
marked failed, with its partial files removed (see :mod:`.gateway`).

Daily limits are kept with reservations: a pull's record is inserted in the same write
transaction that reads the project's usage and checks the limits (``BEGIN IMMEDIATE`` on
SQLite: one writer at a time, also across processes), so two requests at the same moment
cannot both see the same spare capacity. A running pull counts with the studies and images
it plans to deliver and with the bytes received so far, rounded up to a small step (at most
1/64 of the daily limit, 8 MiB), which is reserved ahead so that not every object costs a
transaction. The step is taken, and the day's total checked again, in the same kind of
transaction while the archive sends; a pull never receives more than it reserved.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    String,
    Text,
    case,
    create_engine,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


class Base(DeclarativeBase):
    pass


class StudyKey(Base):
    __tablename__ = "study_keys"

    project: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(128))
    issuer: Mapped[str] = mapped_column(String(128), default="")
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Pull(Base):
    __tablename__ = "pulls"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    username: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # running, done, failed
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    studies: Mapped[int] = mapped_column(Integer, default=0)
    instances_total: Mapped[int] = mapped_column(Integer, default=0)
    instances_done: Mapped[int] = mapped_column(Integer, default=0)
    instances_refused: Mapped[int] = mapped_column(Integer, default=0)
    bytes_received: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    # "<device>:<inode>" of the delivered folder: a deletion removes only that folder, not
    # whatever a member may have moved to its name since.
    folder_identity: Mapped[str | None] = mapped_column(String(64), nullable=True)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "project": self.project,
            "user": self.username,
            "status": self.status,
            "created": _iso(self.created),
            "finished": _iso(self.finished),
            "studies": self.studies,
            "instances_total": self.instances_total,
            "instances_done": self.instances_done,
            "instances_refused": self.instances_refused,
            "bytes": self.bytes_received,
            "error": {"message": self.error, "reason": self.error_reason} if self.error else None,
            "path": self.path if self.status != "deleted" else None,  # no folder there now
        }


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite gives naive datetimes back
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat(timespec="seconds")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Usage:
    studies: int = 0
    instances: int = 0
    bytes: int = 0


class GatewayState:
    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url, future=True)
        self.sqlite = self.engine.dialect.name == "sqlite"
        if self.sqlite:
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        Base.metadata.create_all(self.engine)
        _add_missing_columns(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def at(cls, directory: Path) -> GatewayState:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(f"sqlite:///{directory / 'gateway.sqlite'}")

    def session(self) -> Session:
        return self.sessions()

    def remember_studies(self, project: str, rows: list[StudyKey]) -> None:
        with self.session() as session, session.begin():
            for row in rows:
                session.merge(row)

    def lookup_study(self, project: str, study_key: str) -> StudyKey | None:
        with self.session() as session:
            return session.get(StudyKey, (project, study_key))

    def studies_pulled_since(self, project: str, since: dt.datetime) -> int:
        with self.session() as session:
            total = session.scalar(
                select(func.coalesce(func.sum(Pull.studies), 0)).where(
                    Pull.project == project, Pull.created >= since, Pull.status != "failed"
                )
            )
            return int(total or 0)

    def usage_since(self, project: str, since: dt.datetime) -> Usage:
        """Studies, images and bytes of the project's pulls since ``since`` that did not fail
        (a running pull counts with the images it plans to deliver, and the bytes received
        so far)."""
        with self.session() as session:
            return _usage(session, project, since)

    def add_pull(self, pull: Pull) -> None:
        with self.session() as session, session.begin():
            session.add(pull)

    def reserve_pull(self, pull: Pull, since: dt.datetime, check: Callable[[Usage], None]) -> None:
        """Insert ``pull`` if ``check`` accepts its project's usage since ``since``: one write
        transaction, so concurrent reservations see each other. ``check`` raises to refuse;
        a refused pull leaves nothing."""
        with self._write() as session:
            check(_usage(session, pull.project, since))
            session.add(pull)

    def record_progress(self, pull_id: str, project: str, since: dt.datetime,
                        decide: Callable[[Usage], dict[str, int]]) -> dict[str, int]:
        """Update a running pull with what ``decide`` returns for the usage of the project's
        other pulls since ``since`` (``bytes_received``, ``instances_total``); ``decide``
        raises to refuse. One write transaction, in SQL expressions rather than ORM objects
        (it runs while objects arrive)."""
        with self.engine.connect() as connection:
            if self.sqlite:
                connection = connection.execution_options(sqlite_begin="IMMEDIATE")
            with connection.begin():
                values = decide(_usage(connection, project, since, excluding=pull_id))
                connection.execute(update(Pull).where(Pull.id == pull_id).values(**values))
        return values

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One write transaction; ``BEGIN IMMEDIATE`` on SQLite (the write lock first)."""
        with self.engine.connect() as connection:
            if self.sqlite:
                connection = connection.execution_options(sqlite_begin="IMMEDIATE")
            with Session(bind=connection, expire_on_commit=False) as session, session.begin():
                yield session

    def update_pull(self, pull_id: str, **changes: object) -> Pull:
        with self.session() as session, session.begin():
            pull = session.get(Pull, pull_id)
            assert pull is not None
            for key, value in changes.items():
                setattr(pull, key, value)
            return pull

    def get_pull(self, pull_id: str) -> Pull | None:
        with self.session() as session:
            return session.get(Pull, pull_id)

    def pulls_of(self, project: str, limit: int = 50) -> list[Pull]:
        with self.session() as session:
            return list(
                session.scalars(
                    select(Pull).where(Pull.project == project).order_by(Pull.created.desc()).limit(limit)
                )
            )

    def interrupted_pulls(self) -> list[Pull]:
        with self.session() as session:
            return list(session.scalars(select(Pull).where(Pull.status == "running")))


def _usage(session: Session | Connection, project: str, since: dt.datetime,
           excluding: str | None = None) -> Usage:
    instances = case((Pull.status == "running", Pull.instances_total), else_=Pull.instances_done)
    query = select(
        func.coalesce(func.sum(Pull.studies), 0),
        func.coalesce(func.sum(instances), 0),
        func.coalesce(func.sum(Pull.bytes_received), 0),
    ).where(Pull.project == project, Pull.created >= since, Pull.status != "failed")
    if excluding is not None:
        query = query.where(Pull.id != excluding)
    row = session.execute(query).one()
    return Usage(int(row[0]), int(row[1]), int(row[2]))


def _add_missing_columns(engine: Engine) -> None:
    """Columns added since a database was made (nullable ones only): a gateway upgraded in
    place keeps its pulls and study keys."""
    existing = {column["name"] for column in inspect(engine).get_columns("pulls")}
    with engine.begin() as connection:
        for column in Pull.__table__.columns:
            if column.name not in existing and column.nullable:
                kind = column.type.compile(dialect=engine.dialect)
                connection.exec_driver_sql(f'ALTER TABLE pulls ADD COLUMN "{column.name}" {kind}')


def _sqlite_connect(dbapi_connection: Any, _connection_record: Any) -> None:
    # SQLAlchemy's 'begin' event issues BEGIN itself (pysqlite would defer it). WAL with
    # synchronous=NORMAL: a pull's byte count is written per object without a sync each.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")
