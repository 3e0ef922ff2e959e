"""fleet/reads.py against the ORM: the same rows and the same errors, on SQLite and
PostgreSQL, for a store populated through the service layer."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, Boolean
from sqlmodel import select

from fleet import reads, tables, views
from fleet.cli.common import OutputFormat, emit, emit_stream
from fleet.errors import FleetError, NotFound
from fleet.execute import select_targets
from fleet.inventory import HostSpec
from fleet.reads import Reader
from fleet.service import hosts, job_schedules, jobs, pools, tasks
from fleet.settings import Settings
from fleet.store import Store
from fleet.tables import Node, Task
from tests.conftest import pg_database

READ_TABLES = {t.__tablename__: t for t in tables.ALL_TABLES if t.__tablename__ in reads.COLUMNS}


def test_the_columns_are_those_of_the_tables() -> None:
    assert set(READ_TABLES) == set(reads.COLUMNS)
    for name, table in READ_TABLES.items():
        columns = table.__table__.columns  # type: ignore[attr-defined]
        assert reads.COLUMNS[name] == tuple(c.name for c in columns), name
        kinds = {c.name: type(c.type) for c in columns}
        assert {c for c, k in kinds.items() if k is JSON} <= reads.JSON_COLUMNS, name
        assert {c for c, k in kinds.items() if k is Boolean} <= reads.BOOL_COLUMNS, name
        assert not {c for c, k in kinds.items() if k is not JSON} & reads.JSON_COLUMNS, name


def _populate(store: Store, settings: Settings) -> None:
    """Every kind of row the reads return, with JSON, boolean and NULL values."""
    hosts.import_hosts(
        store,
        [
            HostSpec(id="h1", address="10.0.0.1", user="u", labels={"rack": "a", "gpu": ""}),
            HostSpec(id="h2", address="10.0.0.2", port=2222, rdp_port=3390, source="inv:2"),
            HostSpec(id="h3", address="10.0.0.3", key_file="/k"),
            HostSpec(id="h4", address="10.0.0.4"),
        ],
        "accept-new",
    )
    hosts.record_host_key(store, "h1", "ssh-ed25519 AAAA", "SHA256:abc")
    pools.create_pool(
        store,
        {
            "id": "p",
            "displayName": "P",
            "hosts": ["h1", "h2"],
            "taskSlotsPerNode": 2,
            "startTask": {"commandLine": "true", "waitForSuccess": True},
        },
        settings,
    )
    pools.create_pool(store, {"id": "empty", "hosts": ["h4"]}, settings)
    with store.session() as s:
        s.delete(s.get(Node, "h4"))  # a pool whose nodes are gone
    with store.session() as s:
        node = s.get(Node, "h1")
        assert node is not None
        node.state, node.root = "idle", "/r"
        node.errors = [{"code": "X", "message": "m"}]
        node.start_task_info = {"state": "completed", "exitCode": 0}
        s.add(node)
    jobs.create_job(store, {"id": "j", "poolInfo": {"poolId": "p"}, "priority": 5}, settings)
    jobs.create_job(store, {"id": "j0", "poolInfo": {"poolId": "p"}}, settings)
    jobs.create_job(
        store,
        {
            "id": "ja",
            "poolInfo": {
                "autoPoolSpecification": {
                    "autoPoolIdPrefix": "ap",
                    "poolLifetimeOption": "job",
                    "keepAlive": True,
                    "pool": {"hosts": ["h3"]},
                }
            },
        },
        settings,
    )
    items = [{"id": f"t{i}", "commandLine": f"echo {i}"} for i in range(7)]
    items[1]["environmentSettings"] = [{"name": "A", "value": "1"}]
    tasks.add_tasks(store, "j", items)
    with store.session() as s:
        for row in s.exec(select(Task).where(Task.job_id == "j")):
            if row.id in ("t0", "t1"):
                row.state, row.result, row.exit_code = "completed", "success", 0
                row.node_id, row.pool_id, row.task_root = "h1", "p", "/r/t"
                row.start_time, row.end_time = 1000.5, 1001.25
            if row.id == "t1":
                row.result, row.exit_code = "failure", 3
                row.failure_info = {"category": "UserError", "code": "X"}
                row.retry_count = 1
            if row.id in ("t0", "t1"):  # resource totals; t1 peaked past 32 bits
                row.user_cpu_seconds, row.kernel_cpu_seconds = 1.25, 0.5
                row.wall_clock_seconds, row.stats_time = 2.0, 1001.5
                row.read_blocks, row.write_blocks = 8, 3 << 31
                row.max_rss_bytes = 5 << 31 if row.id == "t1" else 1 << 20
            if row.id == "t2":
                row.state, row.retry_count, row.job_manager = "running", 2, True
            s.add(row)
    job_schedules.create_schedule(
        store,
        {
            "id": "s",
            "schedule": {"recurrenceInterval": "PT1H"},
            "jobSpecification": {"poolInfo": {"poolId": "p"}},
            "metadata": [{"name": "k", "value": "v"}],
        },
    )
    job_schedules.disable_schedule(store, "s")
    with store.session() as s:
        row = job_schedules.get_schedule(s, "s")
        row.skipped_runs = [{"scheduledTime": "2030-01-01T00:00:00Z", "reason": "disabled"}]
        s.add(row)


def _error(call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(FleetError) as info:
        call()
    return {"type": type(info.value).__name__, **info.value.to_dict()}


def _same_rows(orm: Any, row: reads.Row) -> None:
    table = orm.__tablename__
    assert vars(row) == {c: getattr(orm, c) for c in reads.COLUMNS[table]}, table


def _check_reads(store: Store) -> None:
    db = Reader(store.url)
    # pools and nodes
    orm_pools, plain_pools = pools.list_pools(store), reads.list_pools(db)
    assert len(plain_pools) == 3
    assert [views.pool(p, n) for p, n in orm_pools] == [views.pool(p, n) for p, n in plain_pools]
    for (op, on), (rp, rn) in zip(orm_pools, plain_pools, strict=True):
        _same_rows(op, rp)
        assert len(on) == len(rn)
        for a, b in zip(on, rn, strict=True):
            _same_rows(a, b)
    assert views.pool(*pools.show_pool(store, "p")) == views.pool(*reads.show_pool(db, "p"))
    orm_nodes = [
        views.node(n, pools.show_node(store, "p", n.id)[1].address)
        for n in pools.list_nodes(store, "p")
    ]
    assert orm_nodes == [views.node(n, a) for n, a in reads.list_nodes(db, "p")]
    n, h = pools.show_node(store, "p", "h1")
    rn, rh = reads.show_node(db, "p", "h1")
    assert views.node(n, h.address) == views.node(rn, rh.address)
    _same_rows(h, rh)
    # jobs
    for schedule in (None, "s"):
        assert [views.job(j) for j in jobs.list_jobs(store, schedule)] == [
            views.job(j) for j in reads.list_jobs(db, schedule)
        ]
    for job_id in ("j", "j0", "ja"):
        _same_rows(jobs.show_job(store, job_id), reads.show_job(db, job_id))
        assert jobs.task_counts(store, job_id) == reads.task_counts(db, job_id)
        orm_view = views.job(jobs.show_job(store, job_id), jobs.task_counts(store, job_id))
        assert orm_view == views.job(*reads.show_job_with_counts(db, job_id))
        orm_view = views.job(
            jobs.show_job(store, job_id),
            jobs.task_counts(store, job_id),
            jobs.task_totals(store, job_id),
        )
        assert orm_view == views.job(*reads.show_job_with_stats(db, job_id))
    job_stats = views.job(*reads.show_job_with_stats(db, "j"))["stats"]
    assert job_stats["userCPUTime"] == "PT2.5S" and job_stats["writeIOps"] == 3 << 32
    assert job_stats["maxRSSBytes"] == 5 << 31 and job_stats["numTaskRetries"] == 3
    assert "maxRSSBytes" not in views.job(*reads.show_job_with_stats(db, "j0"))["stats"]
    assert reads.task_counts(db, "j") == {
        "active": 4,
        "running": 1,
        "completed": 2,
        "succeeded": 1,
        "failed": 1,
    }
    # tasks, in pages of 1, 3 and more than there are
    orm_tasks = tasks.list_tasks(store, "j")
    for page in (1, 3, 1000):
        plain = list(reads.iter_tasks(db, "j", page))
        assert [views.task(t) for t in orm_tasks] == [views.task(t) for t in plain]
        for a, b in zip(orm_tasks, plain, strict=True):
            _same_rows(a, b)
    assert list(reads.iter_tasks(db, "j0")) == []
    for task_id in ("t0", "t1", "t2", "t3"):
        _same_rows(tasks.show_task(store, "j", task_id), reads.show_task(db, "j", task_id))
    # schedules
    assert [views.job_schedule(r) for r in job_schedules.list_schedules(store)] == [
        views.job_schedule(r) for r in reads.list_schedules(db)
    ]
    _same_rows(job_schedules.show_schedule(store, "s"), reads.show_schedule(db, "s"))
    # hosts
    orm_hosts = [views.host(*hosts.show_host(store, h.id)) for h in hosts.list_hosts(store)]
    assert orm_hosts == [views.host(*info) for info in reads.list_hosts(db)]
    for host_id in ("h1", "h2", "h4"):
        orm_info, plain_info = hosts.show_host(store, host_id), reads.show_host(db, host_id)
        assert views.host(*orm_info) == views.host(*plain_info)
        for a, b in zip(orm_info, plain_info, strict=True):
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                _same_rows(a, b)
    # fleet exec's targets
    assert [t.host_id for t in select_targets(db, pool="p")] == ["h1", "h2"]
    (t1,) = select_targets(db, pattern="h1")
    assert (t1.user, t1.known_key, t1.port) == ("u", "ssh-ed25519 AAAA", 22)
    assert [t.host_id for t in select_targets(db, pattern="h*")] == ["h1", "h2", "h3", "h4"]
    # the same errors: code, message, target and exit status
    for orm_call, plain_call in [
        (lambda: pools.show_pool(store, "x"), lambda: reads.show_pool(db, "x")),
        (lambda: pools.list_nodes(store, "x"), lambda: reads.list_nodes(db, "x")),
        (lambda: pools.show_node(store, "x", "h1"), lambda: reads.show_node(db, "x", "h1")),
        (lambda: pools.show_node(store, "p", "h3"), lambda: reads.show_node(db, "p", "h3")),
        (lambda: jobs.show_job(store, "x"), lambda: reads.show_job(db, "x")),
        (lambda: jobs.task_counts(store, "x"), lambda: reads.task_counts(db, "x")),
        (lambda: jobs.show_job(store, "x"), lambda: reads.show_job_with_counts(db, "x")),
        (lambda: jobs.task_totals(store, "x"), lambda: reads.show_job_with_stats(db, "x")),
        (lambda: tasks.list_tasks(store, "x"), lambda: list(reads.iter_tasks(db, "x"))),
        (lambda: tasks.show_task(store, "x", "t"), lambda: reads.show_task(db, "x", "t")),
        (lambda: tasks.show_task(store, "j", "x"), lambda: reads.show_task(db, "j", "x")),
        (
            lambda: job_schedules.show_schedule(store, "x"),
            lambda: reads.show_schedule(db, "x"),
        ),
        (
            lambda: job_schedules.show_schedule(store, "x"),
            lambda: reads.list_jobs(db, "x"),
        ),
        (lambda: hosts.show_host(store, "x"), lambda: reads.show_host(db, "x")),
        (lambda: pools.show_pool(store, "x"), lambda: select_targets(db, pool="x")),
    ]:
        assert _error(orm_call) == _error(plain_call)
    assert _error(lambda: select_targets(db, pool="empty"))["code"] == "NodeNotFound"
    assert _error(lambda: select_targets(db, pattern="zz"))["code"] == "HostNotFound"


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    settings = Settings.resolve(tmp_path / "home")
    store = Store(settings.db_url)
    _populate(store, settings)
    yield store
    store.close()


def test_reads_match_the_orm_on_sqlite(sqlite_store: Store) -> None:
    _check_reads(sqlite_store)


def test_reads_match_the_orm_on_postgresql(pg_server: str, tmp_path: Path) -> None:
    for url in pg_database(pg_server):
        settings = Settings.resolve(tmp_path / "home", url)
        store = Store(url)
        try:
            _populate(store, settings)
            _check_reads(store)
            _check_older_schema(store)
        finally:
            store.close()


def _check_older_schema(store: Store) -> None:
    """A database without a newer column is upgraded on the first read, then read."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE pools DROP COLUMN auto_keep_alive")
    store.close()
    found = reads.list_pools(Reader(store.url))
    assert len(found) == 3
    assert {p.auto_keep_alive for p, _ in found} == {None}


def test_a_database_an_older_fleet_made_is_upgraded_then_read(sqlite_store: Store) -> None:
    _check_older_schema(sqlite_store)


def test_a_missing_database_is_created_by_the_store_then_read(tmp_path: Path) -> None:
    url = Settings.resolve(tmp_path / "new").db_url
    assert reads.list_pools(Reader(url)) == []
    assert (tmp_path / "new" / "fleet.db").exists()


def test_reads_neither_wait_for_nor_take_the_write_lock(sqlite_store: Store) -> None:
    path = sqlite_store.url.removeprefix("sqlite:///")
    writer = sqlite3.connect(path, isolation_level=None, timeout=0)
    writer.execute("BEGIN IMMEDIATE")  # as the controller's and the CLI's writes do
    try:
        writer.execute("UPDATE jobs SET priority = 9 WHERE id = 'j'")
        db = Reader(sqlite_store.url)
        assert reads.show_job(db, "j").priority == 5  # the last committed state
        assert len(list(reads.iter_tasks(db, "j", 2))) == 7
    finally:
        writer.execute("ROLLBACK")
    # and a write can start while a read transaction is open
    seen: list[int] = []

    def read(tx: reads.Transaction) -> None:
        seen.append(tx.rows("jobs", "id = ?", ("j",))[0].priority)
        other = sqlite3.connect(path, isolation_level=None, timeout=0)
        other.execute("BEGIN IMMEDIATE")  # raises 'database is locked' if the read held it
        other.execute("ROLLBACK")
        other.close()

    Reader(sqlite_store.url).run(read)
    assert seen == [5]


def test_an_unknown_database_scheme_is_refused() -> None:
    with pytest.raises(FleetError) as info:
        Reader("mysql://u:secret@h/db")
    assert info.value.code == "DatabaseError" and "secret" not in str(info.value)


ROWS = [
    {"id": f"t{i}", "state": "active", "executionInfo": {"retryCount": i, "exitCode": None}}
    for i in range(5)
]
ROWS[3]["id"] = "a-much-longer-task-id"
COLUMNS = [("ID", "id"), ("STATE", "state"), ("RETRIES", "executionInfo.retryCount")]


@pytest.mark.parametrize("count", [0, 1, 5])
@pytest.mark.parametrize("output", [OutputFormat.JSON, OutputFormat.TABLE])
def test_a_streamed_list_prints_as_the_whole_list_did(
    capsys: pytest.CaptureFixture[str], count: int, output: OutputFormat
) -> None:
    emit(ROWS[:count], output, COLUMNS)
    whole = capsys.readouterr().out
    emit_stream(iter(ROWS[:count]), output, COLUMNS)
    assert capsys.readouterr().out == whole
    if output == OutputFormat.JSON:
        assert json.loads(whole) == ROWS[:count]


def test_a_table_streamed_in_pages_has_one_header_and_every_row(
    capsys: pytest.CaptureFixture[str],
) -> None:
    emit_stream(iter(ROWS), OutputFormat.TABLE, COLUMNS, page=2)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["ID", *(r["id"] for r in ROWS)]
    # later pages are as wide as the first, wider only where their text is wider
    assert lines[5].index("active") == lines[1].index("active")
    assert lines[3].index("active") > lines[1].index("active")


def test_nothing_is_printed_when_the_list_fails_before_its_first_row(
    capsys: pytest.CaptureFixture[str], sqlite_store: Store
) -> None:
    for output in OutputFormat:
        with pytest.raises(NotFound):
            emit_stream(reads.iter_tasks(Reader(sqlite_store.url), "nope"), output, COLUMNS)
        assert capsys.readouterr().out == ""
