"""Timers on APScheduler with their job store in fleet's database (SQLite and PostgreSQL):
a timer fires on time, survives a stopped controller, and a late one fires only within its
misfire grace."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from fleet.store import Store
from fleet.timers import TABLE, Timers
from tests.conftest import pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path / 'fleet.db'}"])
    else:
        urls = pg_database(request.getfixturevalue("pg_server"))
    for url in urls:
        s = Store(url)
        yield s
        s.close()


def _rows(store: Store) -> dict[str, float]:
    with store.engine.connect() as conn:
        return dict(conn.execute(text(f"SELECT id, next_run_time FROM {TABLE}")).all())


async def _run(store: Store, seconds: float, arm: dict[str, tuple[float, float]]) -> list[str]:
    """Start timers on ``store``, arm ``arm`` (key -> (delay, grace)), run ``seconds``, stop;
    return the keys that fired, in order."""
    fired: list[str] = []
    timers = Timers(store.engine, fired.append)
    timers.start()
    for key, (delay, grace) in arm.items():
        timers.arm(key, time.time() + delay, grace)
    await asyncio.sleep(seconds)
    timers.stop()
    return fired


def test_a_timer_fires_at_its_time_and_leaves_the_table(store: Store) -> None:
    async def main() -> tuple[list[str], dict[str, float]]:
        fired: list[str] = []
        timers = Timers(store.engine, fired.append)
        timers.start()
        when = time.time() + 0.5
        timers.arm("soon", when, 10)
        timers.arm("later", time.time() + 3600, 10)
        timers.arm("gone", time.time() + 3600, 10)
        timers.disarm("gone")
        stored = _rows(store)
        await asyncio.sleep(1.5)
        timers.stop()
        assert stored.keys() == {"soon", "later"}
        assert stored["soon"] == pytest.approx(when, abs=1e-3)
        return fired, _rows(store)

    fired, after = asyncio.run(main())
    assert fired == ["soon"]
    assert after.keys() == {"later"}  # fired timers go; armed ones stay for the next start


def test_a_timer_due_while_stopped_fires_on_start_within_its_grace_only(store: Store) -> None:
    fired = asyncio.run(_run(store, 0.2, {"within": (0.5, 30), "past": (0.5, 1)}))
    assert fired == []
    assert _rows(store).keys() == {"within", "past"}
    time.sleep(2.5)  # both are now late: "within" by less than its grace, "past" by more

    async def restart() -> list[str]:
        fired: list[str] = []
        timers = Timers(store.engine, fired.append)
        timers.start()
        await asyncio.sleep(1.0)
        timers.stop()
        return fired

    assert asyncio.run(restart()) == ["within"]
    assert _rows(store) == {}


def test_keep_only_drops_timers_left_for_what_has_gone(store: Store) -> None:
    asyncio.run(_run(store, 0.1, {"a": (3600, 10), "b": (3600, 10)}))

    async def restart() -> None:
        timers = Timers(store.engine, lambda _key: None)
        timers.start()
        timers.keep_only({"a"})
        timers.stop()

    asyncio.run(restart())
    assert _rows(store).keys() == {"a"}
