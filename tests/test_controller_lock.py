"""One controller per database: the lease rules, the lease on SQLite and PostgreSQL, and real
controller processes that refuse to run twice, stand by, take over and step down."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from fleet.controller_lock import Holder, Identity, Lease, decide, machine_id, running_error
from fleet.errors import Conflict
from fleet.store import Store
from fleet.tables import Host
from tests.conftest import ControllerProcess, Fleet, make_pool, pg_database, wait_for

# -- the rules: may I take the lease, given the row, the time and who I am ----------------

ME = Identity("me", "host-a", 100, "boot-1/pid:[1]")


def _row(**changes: object) -> Holder:
    fields: dict[str, object] = {
        "holder": "other",
        "hostname": "host-a",
        "pid": 200,
        "machine": "boot-1/pid:[1]",
        "ttl": 10.0,
        "since": 0.0,
        "renewed_at": 95.0,
    }
    fields.update(changes)
    return Holder(**fields)  # type: ignore[arg-type]


# (case, row, now, pids alive on my machine, take, reason)
DECISIONS = [
    ("no row: the lease is free", None, 100.0, set(), True, "free"),
    ("my own row", _row(holder="me"), 100.0, {200}, True, "mine"),
    ("renewed 5 s ago by a live process", _row(), 100.0, {200}, False, "held"),
    ("not renewed for longer than its ttl", _row(renewed_at=89.0), 100.0, {200}, True, "expired"),
    ("renewed exactly its ttl ago: still held", _row(renewed_at=90.0), 100.0, {200}, False, "held"),
    (
        "the holder's ttl decides, not mine",
        _row(ttl=3.0, renewed_at=96.0),
        100.0,
        {200},
        True,
        "expired",
    ),
    (
        "a row renewed in my future (clock skew)",
        _row(renewed_at=105.0),
        100.0,
        {200},
        False,
        "held",
    ),
    ("same machine, holder process gone", _row(), 100.0, set(), True, "holder gone"),
    (
        "another host: its pid means nothing here",
        _row(hostname="host-b"),
        100.0,
        set(),
        False,
        "held",
    ),
    (
        "same hostname, another pid namespace",
        _row(machine="boot-1/pid:[2]"),
        100.0,
        set(),
        False,
        "held",
    ),
    ("same hostname, another boot", _row(machine="boot-0/pid:[1]"), 100.0, set(), False, "held"),
    (
        "another host, expired",
        _row(hostname="host-b", renewed_at=80.0),
        100.0,
        set(),
        True,
        "expired",
    ),
]


@pytest.mark.parametrize(
    ("row", "now", "alive", "take", "reason"),
    [case[1:] for case in DECISIONS],
    ids=[case[0] for case in DECISIONS],
)
def test_the_lease_decision_follows_the_rules(row, now, alive, take, reason):
    asked: list[int] = []

    def pid_alive(pid: int) -> bool:
        asked.append(pid)
        return pid in alive

    verdict = decide(row, ME, now, pid_alive)
    assert (verdict.take, verdict.reason) == (take, reason)
    if row is not None and (row.hostname, row.machine) != (ME.hostname, ME.machine):
        assert asked == []  # pids of other machines are never looked up here


def test_the_error_names_the_holders_host_pid_and_since():
    error = running_error(_row(hostname="ctl-1", pid=4242, since=0.0))
    assert isinstance(error, Conflict) and error.exit_status == 4
    assert error.code == "ControllerRunning"
    assert "ctl-1 pid 4242, since 1970-01-01T00:00:00.000Z" in error.message
    assert error.details["pid"] == 4242 and error.details["hostname"] == "ctl-1"


# -- the lease on every backend ------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'fleet.db'}")
        yield s
        s.close()
        return
    for url in pg_database(request.getfixturevalue("pg_server")):
        s = Store(url)
        yield s
        s.close()


def _me(name: str, pid: int | None = None) -> Identity:
    return Identity(name, socket.gethostname(), os.getpid() if pid is None else pid, machine_id())


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_held_lease_is_refused_to_a_second_controller_naming_the_first(store):
    first, second = Lease(store, me=_me("first")), Lease(store, me=_me("second"))
    assert first.try_acquire() is None
    holder = second.try_acquire()
    assert holder is not None
    assert (holder.holder, holder.hostname, holder.pid) == (
        "first",
        socket.gethostname(),
        os.getpid(),
    )
    assert first.try_acquire() is None  # taking it again is a renewal, not a conflict


def test_a_released_lease_is_taken_at_once(store):
    first, second = Lease(store, me=_me("first")), Lease(store, me=_me("second"))
    assert first.try_acquire() is None
    first.release()
    assert second.try_acquire() is None
    with pytest.raises(Conflict) as lost:
        first.check()  # released: it may not act any more
    assert lost.value.code == "ControllerLeaseLost"


def test_a_lease_whose_holder_process_is_gone_is_taken_at_once(store):
    dead = Lease(store, ttl=60, me=_me("dead", pid=_dead_pid()))
    assert dead.try_acquire() is None
    assert Lease(store, me=_me("next")).try_acquire() is None


def test_an_expired_lease_is_taken_and_its_old_holder_finds_it_lost(store):
    paused = Lease(store, ttl=1.0, me=_me("paused"))
    assert paused.try_acquire() is None
    told: list[str] = []
    paused.on_lost(lambda: told.append("lost"))
    standby = Lease(store, me=_me("standby"))
    assert standby.try_acquire() is not None  # live and renewed: held
    time.sleep(1.3)
    assert standby.try_acquire() is None
    with pytest.raises(Conflict) as lost:
        paused.renew()
    assert lost.value.code == "ControllerLeaseLost"
    assert f"pid {os.getpid()}" in lost.value.message
    assert told == ["lost"]
    with pytest.raises(Conflict):
        paused.check()  # and it stays lost
    standby.renew()  # the new holder is unaffected


def test_the_store_refuses_every_transaction_of_a_controller_that_lost_its_lease(store):
    paused = Lease(store, ttl=1.0, me=_me("paused"))
    assert paused.try_acquire() is None
    store.guard = paused.check
    with store.session() as s:  # confirmed just now: no database round trip
        s.add(Host(id="before", address="127.0.0.1"))
    time.sleep(1.3)  # a pause longer than its ttl ...
    assert Lease(store, me=_me("standby")).try_acquire() is None  # ... and a standby took over
    with pytest.raises(Conflict) as lost, store.session() as s:
        s.add(Host(id="after", address="127.0.0.1"))
    assert lost.value.code == "ControllerLeaseLost"
    store.guard = None
    with store.session() as s:
        assert s.get(Host, "before") is not None and s.get(Host, "after") is None


def test_a_holder_confirms_its_lease_before_acting_after_half_its_ttl(store):
    holder = Lease(store, ttl=1.0, me=_me("holder"))
    assert holder.try_acquire() is None
    store.guard = holder.check
    with store.engine.connect() as conn:
        before = conn.execute(text("SELECT renewed_at FROM controller_lease")).scalar_one()
    time.sleep(0.6)
    with store.session():
        pass
    with store.engine.connect() as conn:
        after = conn.execute(text("SELECT renewed_at FROM controller_lease")).scalar_one()
    assert after > before  # the guard renewed it first


def test_controllers_racing_for_a_free_lease_get_exactly_one_holder(store):
    leases = [Lease(store, me=_me(f"c{i}")) for i in range(6)]
    start = threading.Barrier(len(leases))
    results: dict[str, object] = {}

    def race(lease: Lease) -> None:
        start.wait()
        results[lease.me.holder] = lease.try_acquire()

    threads = [threading.Thread(target=race, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [name for name, holder in results.items() if holder is None]
    assert len(winners) == 1
    assert all(h.holder == winners[0] for h in results.values() if isinstance(h, Holder))


# -- real controller processes -------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet(request, tmp_path: Path) -> Iterator[Fleet]:
    """The CLI on a fresh database of each backend."""
    if request.param == "sqlite":
        yield Fleet(tmp_path / "home")
        return
    for url in pg_database(request.getfixturevalue("pg_server")):
        yield Fleet(tmp_path / "home", {"FLEET_DB_URL": url})


@pytest.fixture
def controllers(fleet: Fleet, tmp_path: Path) -> Iterator[dict[str, ControllerProcess]]:
    """Controllers by name, each with its own log; all stopped at the end."""
    started: dict[str, ControllerProcess] = {}
    yield started
    for proc in started.values():
        if proc.proc is not None and proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGCONT)
            proc.stop()


def _start(
    started: dict[str, ControllerProcess], fleet: Fleet, tmp_path: Path, name: str, *args: str
) -> ControllerProcess:
    started[name] = ControllerProcess(fleet, tmp_path / f"{name}.log", args).start()
    return started[name]


def _running(proc: ControllerProcess) -> bool:
    return "controller started" in proc.log_text()


def _logged_at(line: str) -> datetime:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def _lease_rows(fleet: Fleet) -> list[tuple[str, int]]:
    url = fleet.env.get("FLEET_DB_URL") or f"sqlite:///{fleet.home / 'fleet.db'}"
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            return [
                (r[0], r[1])
                for r in conn.execute(text("SELECT hostname, pid FROM controller_lease"))
            ]
    finally:
        store.close()


def test_a_second_controller_exits_at_once_naming_the_first(fleet, controllers, tmp_path):
    first = _start(controllers, fleet, tmp_path, "first")
    wait_for(lambda: _running(first), 30, message="first controller running")
    began = time.monotonic()
    second = fleet("controller", "run", "-o", "json", check=False, timeout=30)
    took = time.monotonic() - began
    assert second.code == 4, second.stderr
    error = json.loads(second.stderr.strip().splitlines()[-1])["error"]
    assert error["code"] == "ControllerRunning"
    assert error["details"]["pid"] == first.proc.pid
    assert error["details"]["hostname"] == socket.gethostname()
    assert (
        f"{socket.gethostname()} pid {first.proc.pid}, since {error['details']['since']}"
        in (error["message"])
    )
    assert took < 10, f"took {took:.1f} s"
    assert first.proc.poll() is None  # the first one is untouched
    assert first.stop() == 0
    assert _lease_rows(fleet) == []  # released on a clean stop


@pytest.mark.lab
def test_a_standby_takes_over_when_the_controller_is_killed_and_runs_a_job_submitted_meanwhile(
    fleet, controllers, tmp_path, lab_inventory
):
    make_pool(fleet, lab_inventory, "p", 2)
    first = _start(controllers, fleet, tmp_path, "first")
    wait_for(lambda: _running(first), 30, message="first controller running")
    standby = _start(controllers, fleet, tmp_path, "standby", "--standby")
    wait_for(lambda: "standby: the controller on" in standby.log_text(), 30, message="standby")
    assert not _running(standby)
    first.kill()
    killed = datetime.now()
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet("task", "create", "--job", "j", "--id", "t", "--command-line", "echo after the takeover")
    wait_for(lambda: _running(standby), 30, message="standby running")
    [took_over] = [
        line for line in standby.log_text().splitlines() if "took the controller" in line
    ]
    assert (_logged_at(took_over) - killed).total_seconds() < 3, took_over
    assert fleet("job", "wait", "j", "--timeout", "90", check=False).code == 0, standby.log_text()[
        -3000:
    ]
    out = fleet("task", "file", "download", "stdout.txt", "--job", "j", "--id", "t").stdout
    assert out == "after the takeover\n"
    assert _lease_rows(fleet) == [(socket.gethostname(), standby.proc.pid)]


def test_a_paused_controller_whose_lease_was_taken_exits_instead_of_acting(
    fleet, controllers, tmp_path
):
    paused = _start(controllers, fleet, tmp_path, "paused", "--lease-timeout", "2")
    wait_for(lambda: _running(paused), 30, message="controller running")
    standby = _start(controllers, fleet, tmp_path, "standby", "--standby")
    wait_for(lambda: "standby: the controller on" in standby.log_text(), 30, message="standby")
    paused.proc.send_signal(signal.SIGSTOP)  # alive, but renewing nothing
    try:
        wait_for(lambda: _running(standby), 30, message="standby took over")
    finally:
        paused.proc.send_signal(signal.SIGCONT)
    assert paused.proc.wait(10) == 4
    assert "error [ControllerLeaseLost]" in paused.log_text()
    assert "lost its lease" in paused.log_text()
    assert standby.proc.poll() is None
    assert _lease_rows(fleet) == [(socket.gethostname(), standby.proc.pid)]


def test_a_standby_stopped_before_taking_over_exits_cleanly(fleet, controllers, tmp_path):
    first = _start(controllers, fleet, tmp_path, "first")
    wait_for(lambda: _running(first), 30, message="first controller running")
    standby = _start(controllers, fleet, tmp_path, "standby", "--standby")
    wait_for(lambda: "standby: the controller on" in standby.log_text(), 30, message="standby")
    assert standby.stop() == 0
    assert _lease_rows(fleet) == [(socket.gethostname(), first.proc.pid)]
