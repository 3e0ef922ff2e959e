"""The store: database engine and transactions over SQLite (default) or PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL`` and a busy timeout, and every
transaction begins ``IMMEDIATE`` so that a read-then-write never fails half way
when the CLI and the controller write at the same time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import ORMExecuteState
from sqlalchemy.schema import CreateColumn
from sqlmodel import Session, SQLModel, create_engine

from fleet import tables, wakeups  # noqa: F401  (tables registers them on SQLModel.metadata)
from fleet.errors import ControllerStorageError, FleetError
from fleet.settings import private_dir, private_file

BUSY_TIMEOUT_MS = 30_000


class Store:
    """Opens the database named by a URL and hands out transactional sessions."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        self._wake_socket: Path | None = None
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                db = Path(parsed.database)
                self._wake_socket = wakeups.socket_path(db.absolute())
                private_dir(db.parent)
                for path in (db, *(db.with_name(db.name + s) for s in ("-wal", "-shm"))):
                    if path == db or path.exists():
                        private_file(path)  # SQLite gives -wal and -shm the db's mode
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
        elif parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in (
            "",
            "psycopg2",
        ):
            url = str(parsed.set(drivername="postgresql+psycopg"))
        #: Called before every transaction; raises to refuse it (the controller's lease check).
        self.guard: Callable[[], None] | None = None
        #: Whether a transaction that wrote wakes a running controller (fleet/wakeups.py).
        self.wake_controller = True
        self.engine: Engine = create_engine(url, **kwargs)
        self._reader = self.engine.execution_options(fleet_read_only=True)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        try:
            SQLModel.metadata.create_all(self.engine)
            _add_new_columns(self.engine)
        except OperationalError as exc:
            raise FleetError(
                f"cannot open the database {parsed.render_as_string(hide_password=True)}: {exc.orig}",
                code="DatabaseUnavailable",
            ) from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Yield a session inside one transaction; commit on success, roll back on error.

        Raises FleetError (code DatabaseError) for errors from the database itself, and
        whatever ``guard`` raises before anything is read or written."""
        if self.guard is not None:
            self.guard()
        with _Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                wrote = bool(
                    session.new or session.dirty or session.deleted or session.info.get("wrote")
                )
                if wrote and self.wake_controller and not self.is_sqlite:
                    session.execute(text(f"NOTIFY {wakeups.CHANNEL}"))  # sent on commit
                session.commit()
            except DBAPIError as exc:
                session.rollback()
                raise database_error(exc) from exc
            except BaseException:
                session.rollback()
                raise
        if wrote and self.wake_controller and self._wake_socket is not None:
            wakeups.send(self._wake_socket)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Yield a session for reading only: it never commits, and on SQLite it takes no
        write lock (WAL readers run beside the writer), so reads never queue behind a
        writer or hold one up. Raises as :meth:`session` does."""
        if self.guard is not None:
            self.guard()
        with Session(self._reader, expire_on_commit=False) as session:
            try:
                yield session
            except DBAPIError as exc:
                raise database_error(exc) from exc

    def wake_listener(self) -> WakeListener:
        """Return what a controller watches for other processes' writes (its own store
        should then have ``wake_controller`` off)."""
        if self.is_sqlite:
            if self._wake_socket is None:
                raise FleetError("an in-memory database has no other writers to listen to")
            return wakeups.SocketListener(self._wake_socket)
        return _PostgresListener(self.engine)

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()


class _Session(Session):
    """A session that notes whether it wrote (ORM changes are seen at commit; statements
    such as bulk inserts and updates are noted as they run)."""


@event.listens_for(_Session, "do_orm_execute")
def _note_write(state: ORMExecuteState) -> None:
    if not state.is_select:
        state.session.info["wrote"] = True


class WakeListener(Protocol):
    """What the controller watches: readable when another process wrote."""

    def fileno(self) -> int: ...
    def drain(self) -> None: ...
    def close(self) -> None: ...


class _PostgresListener:
    """``LISTEN fleet_wake`` on a connection of its own."""

    def __init__(self, engine: Engine) -> None:
        self._raw = engine.raw_connection()
        conn: Any = self._raw.driver_connection  # psycopg's, through SQLAlchemy
        conn.autocommit = True
        conn.execute(f"LISTEN {wakeups.CHANNEL}")
        self._conn = conn

    def fileno(self) -> int:
        return int(self._conn.fileno())

    def drain(self) -> None:
        for _ in self._conn.notifies(timeout=0):
            pass

    def close(self) -> None:
        self._raw.invalidate()  # not back to the pool: it is in autocommit and listening


#: What SQLite and PostgreSQL say when the disk or quota is full.
_FULL = ("database or disk is full", "disk i/o error", "no space left on device", "disk full")
#: What they say about a schema this version does not know.
_SCHEMA = ("no such table", "no such column", "does not exist", "has no column")


def database_error(exc: Exception) -> FleetError:
    """Return the fleet error for an error the database raised (SQLAlchemy's, or its
    driver's): the controller's disk is full (ControllerDiskFull), a schema from another
    version of fleet, or anything else."""
    text = str(exc.orig if isinstance(exc, DBAPIError) else exc)
    lowered = text.lower()
    if any(s in lowered for s in _FULL):
        return ControllerStorageError(
            f"the database cannot be written, the disk is full: {text}", code="ControllerDiskFull"
        )
    if any(s in lowered for s in _SCHEMA):
        return FleetError(
            f"database error: {text}; this database may have been made by another version "
            "of fleet: use a new --home or --db-url",
            code="DatabaseError",
        )
    return FleetError(f"database error: {text}", code="DatabaseError")


def _add_new_columns(engine: Engine) -> None:
    """Add the columns and indexes a newer fleet has to the tables of an older database;
    each new column is nullable, so old rows stay valid. Tables it lacks were made by
    create_all.
    A column that cannot be added so is left to the DatabaseError that names it."""
    with engine.begin() as conn:
        found = inspect(conn)
        for table in SQLModel.metadata.sorted_tables:
            have = {c["name"] for c in found.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have and column.nullable:
                    ddl = CreateColumn(column).compile(dialect=engine.dialect)
                    conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
            indexes = {i["name"] for i in found.get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in indexes:
                    index.create(conn)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get("fleet_read_only")
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
