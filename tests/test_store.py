"""The store and the service layer, run against every backend: SQLite and PostgreSQL."""

from __future__ import annotations

import select
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlmodel import col
from sqlmodel import select as select_rows

from fleet import sql
from fleet.errors import Conflict, FleetError, NotFound
from fleet.inventory import HostSpec
from fleet.service import hosts, jobs, pools, tasks
from fleet.store import Store
from fleet.tables import Host, Task
from tests.conftest import pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.db'}"
    else:
        yield from pg_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


def _seed(store: Store, n_hosts: int = 3) -> None:
    hosts.import_hosts(
        store,
        [
            HostSpec(id=f"h{i}", address="127.0.0.1", port=2200 + i, labels={"rack": "a"})
            for i in range(n_hosts)
        ],
    )
    pools.create_pool(store, {"id": "p", "hosts": ["h0", "h1"], "taskSlotsPerNode": 2})
    jobs.create_job(store, {"id": "j", "poolInfo": {"poolId": "p"}, "priority": 5})


def test_hosts_pools_jobs_and_tasks_round_trip(store):
    _seed(store)
    assert [h.id for h in hosts.list_hosts(store)] == ["h0", "h1", "h2"]
    assert hosts.list_hosts(store)[0].labels == {"rack": "a"}
    pool, nodes = pools.show_pool(store, "p")
    assert pool.task_slots_per_node == 2 and [n.id for n in nodes] == ["h0", "h1"]
    assert all(n.state == "creating" for n in nodes)
    tasks.add_tasks(
        store,
        "j",
        [
            {
                "id": f"t{i}",
                "commandLine": f"echo {i}",
                "environmentSettings": [{"name": "A", "value": str(i)}],
            }
            for i in range(5)
        ],
    )
    listed = tasks.list_tasks(store, "j")
    assert [t.id for t in listed] == [f"t{i}" for i in range(5)]
    assert listed[3].spec["environmentSettings"] == [{"name": "A", "value": "3"}]
    assert jobs.task_counts(store, "j") == {
        "active": 5,
        "running": 0,
        "completed": 0,
        "succeeded": 0,
        "failed": 0,
    }


def test_a_conflicting_task_collection_stores_nothing(store):
    _seed(store)
    tasks.add_tasks(store, "j", {"id": "t1", "commandLine": "true"})
    with pytest.raises(Conflict) as info:
        tasks.add_tasks(
            store, "j", [{"id": "t2", "commandLine": "true"}, {"id": "t1", "commandLine": "true"}]
        )
    assert info.value.code == "TaskExists"
    assert [t.id for t in tasks.list_tasks(store, "j")] == ["t1"]


def test_a_host_is_in_one_pool_at_most(store):
    _seed(store)
    with pytest.raises(Conflict) as info:
        pools.create_pool(store, {"id": "q", "hosts": ["h2", "h1"]})
    assert info.value.code == "HostInUse"
    with pytest.raises(NotFound):
        pools.show_pool(store, "q")
    pools.create_pool(store, {"id": "q", "hosts": ["h2"]})


def test_deleting_a_pool_frees_its_hosts_only_when_no_job_is_open(store):
    _seed(store)
    with pytest.raises(Conflict):
        pools.delete_pool(store, "p")
    with store.session() as s:
        s.execute(text("UPDATE jobs SET state = 'completed'"))
    pools.delete_pool(store, "p")
    pools.create_pool(store, {"id": "again", "hosts": ["h0", "h1"]})


def test_host_keys_are_recorded_once_and_never_overwritten(store):
    _seed(store)
    hosts.record_host_key(store, "h0", "ssh-ed25519 AAAAfirst", "SHA256:first")
    hosts.record_host_key(store, "h0", "ssh-ed25519 AAAAsecond", "SHA256:second")
    _, key, _ = hosts.show_host(store, "h0")
    assert key is not None and key.fingerprint == "SHA256:first"
    assert hosts.forget_host_key(store, "h0") is True
    assert hosts.show_host(store, "h0")[1] is None


def test_concurrent_writers_do_not_lose_tasks(store_url):
    first, second = Store(store_url), Store(store_url)
    try:
        _seed(first)
        errors: list[BaseException] = []

        def add(s: Store, prefix: str) -> None:
            try:
                for i in range(20):
                    tasks.add_tasks(s, "j", {"id": f"{prefix}{i}", "commandLine": "true"})
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [
            threading.Thread(target=add, args=(s, p)) for s, p in ((first, "a"), (second, "b"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(tasks.list_tasks(first, "j")) == 40
    finally:
        first.close()
        second.close()


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'f.db'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    store.close()


def test_a_database_made_before_a_column_existed_gets_it_and_keeps_its_rows(
    store_url: str,
) -> None:
    old = Store(store_url)
    _seed(old)
    with old.engine.begin() as conn:  # as an older fleet made them
        conn.execute(text("DROP INDEX ix_jobs_job_schedule_id"))
        conn.execute(text("ALTER TABLE jobs DROP COLUMN job_schedule_id"))
        conn.execute(text("ALTER TABLE pools DROP COLUMN auto_owner"))
    old.close()
    new = Store(store_url)
    try:
        assert pools.show_pool(new, "p")[0].auto_owner is None
        assert [j.id for j in jobs.list_jobs(new)] == ["j"]
        assert jobs.list_jobs(new, schedule_id="s") == []  # the new column is queried
        with new.engine.connect() as conn:
            indexes = {i["name"] for i in inspect(conn).get_indexes("jobs")}
        assert "ix_jobs_job_schedule_id" in indexes
    finally:
        new.close()


def test_a_write_from_another_store_wakes_the_controllers_listener(store_url: str) -> None:
    controller_side, cli_side = Store(store_url), Store(store_url)
    controller_side.wake_controller = False
    listener = controller_side.wake_listener()
    try:

        def woken(wait: float) -> bool:
            ready = select.select([listener], [], [], wait)[0]
            listener.drain()
            return bool(ready)

        assert not woken(0)
        hosts.list_hosts(cli_side)  # a read wakes nobody
        assert not woken(0.5)
        _seed(cli_side, 2)  # writes: hosts, a pool, a job
        assert woken(10)
        while woken(0.5):  # one wake per transaction of the seed, some a moment later
            pass
        with controller_side.session() as s:  # the controller's own writes do not wake it
            s.add(Host(id="own", address="127.0.0.1", port=22))
        assert not woken(0.5)
    finally:
        listener.close()
        controller_side.close()
        cli_side.close()


# -- plain DB-API statements (fleet/sql.py), the controller's hot path ------------------


def _task_pks(store: Store) -> list[int]:
    with store.read() as s:
        return [t.pk for t in s.exec(select_rows(Task).order_by(col(Task.pk)))]


def test_statements_read_in_lists_and_json_the_same_on_every_backend(store):
    _seed(store)
    tasks.add_tasks(store, "j", [{"id": f"t{i}", "commandLine": "true"} for i in range(3)])
    pks = _task_pks(store)
    by_pks = sql.Statement(
        "SELECT pk, id, spec FROM tasks WHERE pk IN :pks ORDER BY pk", json_columns=["spec"]
    )
    with store.read() as s:
        rows = sql.Sql(s).rows(by_pks, {"pks": pks[1:]})
        none = sql.Sql(s).rows(by_pks, {"pks": []})
    assert [(r.pk, r.id) for r in rows] == [(pks[1], "t1"), (pks[2], "t2")]
    assert rows[0].spec["commandLine"] == "true"
    assert none == []


def test_statement_writes_are_in_the_sessions_transaction(store):
    _seed(store)
    tasks.add_tasks(store, "j", [{"id": f"t{i}", "commandLine": "true"} for i in range(2)])
    pks = _task_pks(store)
    failed = sql.update("tasks", ("exit_code", "failure_info"), "pk = :b_pk")
    info = {"category": "usererror", "code": "FailureExitCode", "message": "it said 'no'"}
    with pytest.raises(RuntimeError), store.session() as s:
        sql.Sql(s).executemany(
            failed, [{"b_pk": pk, "exit_code": 3, "failure_info": info} for pk in pks]
        )
        raise RuntimeError("after the write: the transaction rolls back")
    with store.read() as s:
        assert [t.exit_code for t in s.exec(select_rows(Task))] == [None, None]
    with store.session() as s:
        changed = sql.Sql(s).executemany(
            failed, [{"b_pk": pk, "exit_code": 3, "failure_info": info} for pk in pks]
        )
    assert changed == 2
    with store.read() as s:  # what the ORM reads back is what was written
        rows = s.exec(select_rows(Task)).all()
    assert [(t.exit_code, t.failure_info) for t in rows] == [(3, info), (3, info)]


def test_statement_errors_are_the_stores_errors(store):
    broken = sql.Statement("SELECT nothing FROM no_such_table WHERE id = :id")
    with pytest.raises(FleetError) as caught, store.read() as s:
        sql.Sql(s).rows(broken, {"id": "x"})
    assert caught.value.code == "DatabaseError"


def test_an_update_names_only_columns_the_table_has():
    with pytest.raises(ValueError, match="tasks has no column 'state; DROP'"):
        sql.update("tasks", ("state; DROP",), "pk = :b_pk")


def test_statement_text_is_translated_per_dialect():
    stmt = sql.Statement("SELECT id FROM jobs WHERE id IN :ids AND state = :state")
    assert stmt.sqlite_text == (
        "SELECT id FROM jobs WHERE id IN (SELECT value FROM json_each(:ids)) AND state = :state"
    )
    assert stmt.postgres_text == "SELECT id FROM jobs WHERE id = ANY(%(ids)s) AND state = %(state)s"
