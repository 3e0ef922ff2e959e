"""Reads without the ORM: the database opened with its DB-API driver, read-only.

The CLI's read commands and ``fleet exec`` use this instead of fleet/store.py, so they
start without SQLAlchemy: stdlib ``sqlite3`` (``mode=ro``: no write lock, nothing
created) or ``psycopg`` (a READ ONLY transaction). The SQL names the columns of
fleet/tables.py (tests/test_reads.py checks them); rows come back as ``Row`` objects with
the ORM's attribute names, JSON decoded, so fleet/views.py renders either.

A database that is missing, or that an older fleet made (a table or column missing),
is opened once through ``Store`` (which creates and upgrades it) and read again.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from fleet import task_stats
from fleet.errors import FleetError, NotFound
from fleet.settings import private_dir, private_file


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


#: table -> its columns, as in fleet/tables.py (only the tables read here)
COLUMNS: dict[str, tuple[str, ...]] = {
    "hosts": _names(
        "id address port user key_file labels node_root rdp_port host_key_policy source created_at "
        "reboot_command reimage_command power_on_command power_off_command"
    ),
    "host_keys": _names("host_id public_key fingerprint recorded_at"),
    "pools": _names(
        "id display_name state allocation_state task_slots_per_node node_fill_type spec "
        "created_at state_changed_at auto_owner auto_keep_alive target_dedicated_nodes "
        "resize_option resize_errors allocation_state_changed_at auto_scale_run auto_scale_at"
    ),
    "nodes": _names(
        "id pool_id state scheduling_state boot_id root errors start_task_info "
        "start_task_attempt created_at state_changed_at last_boot_time operation "
        "operation_option operation_at operation_issued_at"
    ),
    "jobs": _names(
        "id pool_id priority state spec termination_reason disable_tasks created_at "
        "state_changed_at end_time job_schedule_id"
    ),
    "tasks": _names(
        "pk job_id id command_line spec required_slots state attempt attempt_state node_id "
        "pool_id retry_count requeue_count exit_code result failure_info start_time end_time "
        "last_retry_time last_requeue_time task_root end_request dependency_action deps_state "
        "deps_parent files_deleted token_hash job_manager instances created_at "
        "state_changed_at user_cpu_seconds kernel_cpu_seconds wall_clock_seconds read_blocks "
        "write_blocks max_rss_bytes stats_time"
    ),
    "task_outputs": _names("task_pk name data modified"),
    "job_schedules": _names(
        "id state spec next_run job_count recent_job_id skipped_runs created_at "
        "state_changed_at end_time"
    ),
}
#: JSON columns (decoded) and boolean ones (SQLite keeps 0/1)
JSON_COLUMNS = {
    "labels",
    "auto_scale_run",
    "reboot_command",
    "reimage_command",
    "power_on_command",
    "power_off_command",
    "spec",
    "errors",
    "start_task_info",
    "failure_info",
    "skipped_runs",
    "resize_errors",
}
BOOL_COLUMNS = {"auto_keep_alive", "files_deleted", "job_manager"}
#: Rows per query when streaming (``task list``).
PAGE = 1000
#: What the drivers say about a database without fleet's schema, or without a new column.
_MISSING = ("no such table", "no such column", "unable to open database file")


class Row(SimpleNamespace):
    """One row: its columns as attributes, named as in fleet/tables.py."""


T = TypeVar("T")


class Reader:
    """Read-only transactions on the database of ``url`` (a fleet database URL)."""

    def __init__(self, url: str, upgrade: Callable[[], object] | None = None) -> None:
        self.url = url
        scheme, _, rest = url.partition("://")
        self.backend = scheme.split("+", 1)[0]
        if self.backend == "sqlite":
            path = unquote(rest[1:].split("?", 1)[0]) if rest.startswith("/") else ""
            self.target = path or ":memory:"
        elif self.backend in ("postgresql", "postgres"):
            self.target = f"postgresql://{rest}"
        else:
            raise FleetError(f"unsupported database URL {_hidden(url)}", code="DatabaseError")
        #: Brings a missing or older database up to date (default: open a Store on it).
        self.upgrade = upgrade or self._open_store
        self._upgraded = False

    def keep_private(self) -> None:
        """Take group and other permissions off an SQLite database, its directory and its
        -wal and -shm files, as opening a Store does (nothing is created here)."""
        db = Path(self.target)
        if self.backend != "sqlite" or self.target == ":memory:" or not db.exists():
            return
        private_dir(db.parent)
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            if path.exists():
                private_file(path)

    def run(self, read: Callable[[Transaction], T]) -> T:
        """Return ``read`` of one read-only transaction. A database that lacks a table or
        column is brought up to date by opening a Store, then read once more."""
        try:
            return self._run(read)
        except _Missing:
            if self._upgraded:
                raise
        self.upgrade()
        self._upgraded = True
        return self._run(read)

    def _open_store(self) -> None:
        from fleet.store import Store  # the ORM, only for a new or older database

        Store(self.url).close()

    def _run(self, read: Callable[[Transaction], T]) -> T:
        if self.backend == "sqlite":
            return self._sqlite(read)
        return self._postgres(read)

    def _sqlite(self, read: Callable[[Transaction], T]) -> T:
        uri = f"file:{quote(self.target)}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        except sqlite3.OperationalError as exc:
            raise _error(exc) from exc
        try:
            conn.execute("BEGIN")  # deferred: a read snapshot, never the write lock
            return read(Transaction(conn.cursor(), "?", "[%s]"))
        except sqlite3.Error as exc:
            raise _error(exc) from exc
        finally:
            conn.close()

    def _postgres(self, read: Callable[[Transaction], T]) -> T:
        import psycopg  # only for PostgreSQL URLs

        try:
            conn = psycopg.connect(self.target)
        except psycopg.OperationalError as exc:
            raise FleetError(
                f"cannot open the database {_hidden(self.url)}: {exc}", code="DatabaseUnavailable"
            ) from exc
        try:
            conn.read_only = True
            with conn.transaction():
                return read(Transaction(conn.cursor(), "%s", '"%s"'))
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
            raise _Missing(str(exc)) from exc
        except psycopg.Error as exc:
            raise FleetError(f"database error: {exc}", code="DatabaseError") from exc
        finally:
            conn.close()


class Transaction:
    """Queries inside one read-only transaction."""

    def __init__(self, cursor: Any, mark: str, quote: str) -> None:
        self.cursor = cursor
        self.mark = mark
        #: how a column name is quoted ("user" is reserved in PostgreSQL); never SQLite's
        #: "name", which turns into a string when there is no such column
        self.quote = quote

    def rows(
        self, table: str, where: str = "", params: Sequence[Any] = (), tail: str = ""
    ) -> list[Row]:
        """Return the rows of ``table`` matching ``where`` (``?`` for parameters), with
        ``tail`` (ORDER BY, LIMIT) appended."""
        names = COLUMNS[table]
        quoted = ", ".join(self.quote % c for c in names)
        sql = f"SELECT {quoted} FROM {table}"  # noqa: S608 (names are constants; values bound)
        if where:
            sql += f" WHERE {where}"
        self.cursor.execute(f"{sql} {tail}".replace("?", self.mark), tuple(params))
        return [_row(names, values) for values in self.cursor.fetchall()]

    def one(self, table: str, key: str, value: Any) -> Row | None:
        """Return the row of ``table`` whose column ``key`` is ``value``, or None."""
        found = self.rows(table, f"{key} = ?", (value,))
        return found[0] if found else None

    def values(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Return the tuples ``sql`` selects (``?`` for parameters)."""
        self.cursor.execute(sql.replace("?", self.mark), tuple(params))
        return [tuple(r) for r in self.cursor.fetchall()]


def _row(names: Sequence[str], values: Sequence[Any]) -> Row:
    row = Row()
    for name, value in zip(names, values, strict=True):
        if name in JSON_COLUMNS and isinstance(value, str):
            value = json.loads(value)
        elif name in BOOL_COLUMNS and value is not None:
            value = bool(value)
        setattr(row, name, value)
    return row


class _Missing(FleetError):
    """The database lacks a table or column (or, for SQLite, the file itself)."""

    def __init__(self, message: str) -> None:
        super().__init__(
            f"database error: {message}; this database may have been made by another "
            "version of fleet: use a new --home or --db-url",
            code="DatabaseError",
        )


def _error(exc: sqlite3.Error) -> FleetError:
    text = str(exc)
    if any(s in text.lower() for s in _MISSING):
        return _Missing(text)
    return FleetError(f"database error: {text}", code="DatabaseError")


def _hidden(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


# The reads of the CLI. Errors name the object as fleet/service/* does.


def _pool_or_raise(tx: Transaction, pool_id: str) -> Row:
    pool = tx.one("pools", "id", pool_id)
    if pool is None:
        raise NotFound(
            f"no pool with id {pool_id!r}", code="PoolNotFound", target=f"pool {pool_id}"
        )
    return pool


def _job_or_raise(tx: Transaction, job_id: str) -> Row:
    job = tx.one("jobs", "id", job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}", code="JobNotFound", target=f"job {job_id}")
    return job


def _nodes_of(tx: Transaction, pool_id: str) -> list[Row]:
    return tx.rows("nodes", "pool_id = ?", (pool_id,), "ORDER BY id")


def list_pools(db: Reader) -> list[tuple[Row, list[Row]]]:
    """Return every pool with its nodes, as service.pools.list_pools does."""

    def read(tx: Transaction) -> list[tuple[Row, list[Row]]]:
        pools = tx.rows("pools", tail="ORDER BY id")
        by_pool: dict[str, list[Row]] = {}
        for node in tx.rows("nodes", tail="ORDER BY id"):
            by_pool.setdefault(node.pool_id, []).append(node)
        return [(p, by_pool.get(p.id, [])) for p in pools]

    return db.run(read)


def show_pool(db: Reader, pool_id: str) -> tuple[Row, list[Row]]:
    """Return the pool and its nodes; Raises NotFound."""
    return db.run(lambda tx: (_pool_or_raise(tx, pool_id), _nodes_of(tx, pool_id)))


def list_nodes(db: Reader, pool_id: str) -> list[tuple[Row, str]]:
    """Return the pool's nodes with their hosts' addresses; Raises NotFound."""

    def read(tx: Transaction) -> list[tuple[Row, str]]:
        _pool_or_raise(tx, pool_id)
        nodes = _nodes_of(tx, pool_id)
        sql = "SELECT nodes.id, hosts.address FROM nodes JOIN hosts ON hosts.id = nodes.id "
        addresses = dict(tx.values(sql + "WHERE nodes.pool_id = ?", (pool_id,)))
        return [(n, addresses[n.id]) for n in nodes]

    return db.run(read)


def show_node(db: Reader, pool_id: str, node_id: str) -> tuple[Row, Row]:
    """Return one node and its host; Raises NotFound."""

    return db.run(lambda tx: _node_and_host(tx, pool_id, node_id))


def _node_and_host(tx: Transaction, pool_id: str, node_id: str) -> tuple[Row, Row]:
    """Return a node of ``pool_id`` and its host; Raises NotFound."""
    _pool_or_raise(tx, pool_id)
    node = tx.one("nodes", "id", node_id)
    if node is None or node.pool_id != pool_id:
        raise NotFound(
            f"pool {pool_id} has no node {node_id!r}",
            code="NodeNotFound",
            target=f"node {node_id}",
        )
    host = tx.one("hosts", "id", node_id)
    assert host is not None
    return node, host


def list_jobs(db: Reader, schedule_id: str | None = None) -> list[Row]:
    """Return every job, or those schedule ``schedule_id`` made, oldest first; Raises
    NotFound for an unknown schedule."""

    def read(tx: Transaction) -> list[Row]:
        if schedule_id is None:
            return tx.rows("jobs", tail="ORDER BY created_at, id")
        _schedule_or_raise(tx, schedule_id)
        return tx.rows("jobs", "job_schedule_id = ?", (schedule_id,), "ORDER BY created_at, id")

    return db.run(read)


def show_job(db: Reader, job_id: str) -> Row:
    """Return one job; Raises NotFound."""
    return db.run(lambda tx: _job_or_raise(tx, job_id))


def _counts(tx: Transaction, job_id: str) -> dict[str, int]:
    rows = tx.values(
        "SELECT state, result, count(*) FROM tasks WHERE job_id = ? GROUP BY state, result",
        (job_id,),
    )
    counts = dict.fromkeys(("active", "running", "completed", "succeeded", "failed"), 0)
    for state, result, n in rows:
        if state == "completed":
            counts["completed"] += n
            counts["succeeded" if result == "success" else "failed"] += n
        elif state == "running":
            counts["running"] += n
        else:
            counts["active"] += n
    return counts


def task_counts(db: Reader, job_id: str) -> dict[str, int]:
    """Return the job's ``active``, ``running``, ``completed``, ``succeeded`` and ``failed``
    task counts; Raises NotFound."""
    return db.run(lambda tx: (_job_or_raise(tx, job_id), _counts(tx, job_id))[1])


def show_job_with_counts(db: Reader, job_id: str) -> tuple[Row, dict[str, int]]:
    """Return one job and its task counts from one snapshot; Raises NotFound."""
    return db.run(lambda tx: (_job_or_raise(tx, job_id), _counts(tx, job_id)))


#: The aggregates over a job's tasks that task_stats.JobTotals.of reads, in its order.
_TOTALS = (
    *(f"max({c})" if c == "max_rss_bytes" else f"sum({c})" for c in task_stats.COLUMNS),
    "max(stats_time)",
    "sum(retry_count)",
    "sum(start_time - created_at)",
)


def show_job_with_stats(
    db: Reader, job_id: str
) -> tuple[Row, dict[str, int], task_stats.JobTotals]:
    """Return one job, its task counts and what its tasks add up to, from one snapshot;
    Raises NotFound."""

    def read(tx: Transaction) -> tuple[Row, dict[str, int], task_stats.JobTotals]:
        job = _job_or_raise(tx, job_id)
        sql = f"SELECT {', '.join(_TOTALS)} FROM tasks WHERE job_id = ?"  # noqa: S608 (constants)
        (values,) = tx.values(sql, (job_id,))
        return job, _counts(tx, job_id), task_stats.JobTotals.of(values)

    return db.run(read)


def iter_tasks(db: Reader, job_id: str, page: int = PAGE, after: int = -1) -> Iterator[Row]:
    """Yield the job's tasks in submission order (those after the one whose primary key
    is ``after``), ``page`` rows per query (keyset on the primary key, one short
    transaction each); Raises NotFound for an unknown job before the first row."""
    first = True
    while True:

        def read(tx: Transaction, after: int = after, check: bool = first) -> list[Row]:
            if check:
                _job_or_raise(tx, job_id)
            return tx.rows(
                "tasks", "job_id = ? AND pk > ?", (job_id, after), f"ORDER BY pk LIMIT {page}"
            )

        rows = db.run(read)
        first = False
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].pk


def show_task(db: Reader, job_id: str, task_id: str) -> Row:
    """Return one task; Raises NotFound (JobNotFound or TaskNotFound)."""

    def read(tx: Transaction) -> Row:
        _job_or_raise(tx, job_id)
        found = tx.rows("tasks", "job_id = ? AND id = ?", (job_id, task_id))
        if not found:
            raise NotFound(
                f"job {job_id} has no task {task_id!r}",
                code="TaskNotFound",
                target=f"task {job_id}/{task_id}",
            )
        return found[0]

    return db.run(read)


def task_outputs(db: Reader, task_pk: int) -> dict[str, tuple[bytes, float]]:
    """Return the small output files of a task's last attempt that the database keeps
    (name -> (bytes, modified)); larger ones are files under ``task_files/``."""
    rows = db.run(lambda tx: tx.rows("task_outputs", "task_pk = ?", (task_pk,)))
    return {row.name: (bytes(row.data), row.modified) for row in rows}


def _schedule_or_raise(tx: Transaction, schedule_id: str) -> Row:
    row = tx.one("job_schedules", "id", schedule_id)
    if row is None:
        raise NotFound(
            f"no job schedule with id {schedule_id!r}",
            code="JobScheduleNotFound",
            target=f"job schedule {schedule_id}",
        )
    return row


def list_schedules(db: Reader) -> list[Row]:
    """Return every job schedule, oldest first."""
    return db.run(lambda tx: tx.rows("job_schedules", tail="ORDER BY created_at, id"))


def show_schedule(db: Reader, schedule_id: str) -> Row:
    """Return one job schedule; Raises NotFound."""
    return db.run(lambda tx: _schedule_or_raise(tx, schedule_id))


HostInfo = tuple[Row, Row | None, Row | None]


def _host_infos(tx: Transaction, host_id: str | None = None) -> list[HostInfo]:
    """Return every host (or host ``host_id``) with its recorded key and its node."""
    one = host_id is not None
    params = (host_id,) if one else ()
    hosts = tx.rows("hosts", "id = ?" if one else "", params, "ORDER BY id")
    keys = {k.host_id: k for k in tx.rows("host_keys", "host_id = ?" if one else "", params)}
    nodes = {n.id: n for n in tx.rows("nodes", "id = ?" if one else "", params)}
    return [(h, keys.get(h.id), nodes.get(h.id)) for h in hosts]


def list_hosts(db: Reader) -> list[HostInfo]:
    """Return every host, ordered by id, with its recorded key and its node (or None)."""
    return db.run(lambda tx: _host_infos(tx))


def show_host(db: Reader, host_id: str) -> HostInfo:
    """Return the host with its recorded key and its node; Raises NotFound (HostNotFound)."""

    def read(tx: Transaction) -> HostInfo:
        found = _host_infos(tx, host_id)
        if not found:
            raise NotFound(
                f"no host with id {host_id!r}", code="HostNotFound", target=f"host {host_id}"
            )
        return found[0]

    return db.run(read)


def host_ids(db: Reader) -> list[str]:
    """Return every host id, in order."""
    return db.run(lambda tx: [r[0] for r in tx.values("SELECT id FROM hosts ORDER BY id")])


def node_ids(db: Reader, pool_id: str) -> list[str]:
    """Return the ids of the pool's nodes, in order; Raises NotFound for an unknown pool."""

    def read(tx: Transaction) -> list[str]:
        _pool_or_raise(tx, pool_id)
        sql = "SELECT id FROM nodes WHERE pool_id = ? ORDER BY id"
        return [r[0] for r in tx.values(sql, (pool_id,))]

    return db.run(read)


def hosts_with_keys(db: Reader, ids: Sequence[str]) -> list[tuple[Row, Row | None]]:
    """Return the hosts ``ids`` names (in that order; unknown ids skipped) with their keys."""

    def read(tx: Transaction) -> list[tuple[Row, Row | None]]:
        wanted = list(dict.fromkeys(ids))
        hosts: dict[str, Row] = {}
        keys: dict[str, Row] = {}
        for start in range(0, len(wanted), 500):  # bounded IN lists
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            hosts |= {h.id: h for h in tx.rows("hosts", f"id IN ({marks})", chunk)}
            keys |= {k.host_id: k for k in tx.rows("host_keys", f"host_id IN ({marks})", chunk)}
        return [(hosts[i], keys.get(i)) for i in ids if i in hosts]

    return db.run(read)


def node_access(db: Reader, pool_id: str, node_id: str) -> tuple[Row, Row, Row | None]:
    """Return one node, its host and the host's recorded key (or None), from one
    snapshot; Raises NotFound (PoolNotFound or NodeNotFound)."""

    def read(tx: Transaction) -> tuple[Row, Row, Row | None]:
        node, host = _node_and_host(tx, pool_id, node_id)
        return node, host, tx.one("host_keys", "host_id", node_id)

    return db.run(read)


def pool_node_counts(db: Reader, pool_id: str | None = None) -> list[tuple[str, dict[str, int]]]:
    """Return (pool id, {node state: count}) for every pool by id, or for pool
    ``pool_id`` only, counted by the database (no node rows are read); states with no
    node are absent. Raises NotFound (PoolNotFound) for an unknown ``pool_id``."""

    def read(tx: Transaction) -> list[tuple[str, dict[str, int]]]:
        sql = (
            "SELECT pools.id, nodes.state, count(nodes.id) FROM pools "
            "LEFT JOIN nodes ON nodes.pool_id = pools.id"
        )
        params: tuple[str, ...] = ()
        if pool_id is not None:
            _pool_or_raise(tx, pool_id)
            sql += " WHERE pools.id = ?"
            params = (pool_id,)
        counts: dict[str, dict[str, int]] = {}
        for pool, state, n in tx.values(sql + " GROUP BY pools.id, nodes.state", params):
            states = counts.setdefault(pool, {})
            if state is not None:
                states[state] = n
        return sorted(counts.items())

    return db.run(read)


#: The tables whose rows :func:`state_counts` counts by state.
COUNTED = ("tasks", "nodes", "pools", "jobs")


def state_counts(db: Reader) -> dict[str, dict[str, int]]:
    """Return {table: {state: rows}} for the tasks, nodes, pools and jobs, counted by the
    database in one read-only transaction (one GROUP BY per table); states with no row
    are absent."""

    def read(tx: Transaction) -> dict[str, dict[str, int]]:
        sql = "SELECT state, count(*) FROM {} GROUP BY state"  # table names are constants
        return {table: dict(tx.values(sql.format(table))) for table in COUNTED}

    return db.run(read)
