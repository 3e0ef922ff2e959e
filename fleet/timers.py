"""Timers: the only module that imports APScheduler (cron calendars and wake-ups at set times).

The timers live in APScheduler's SQLAlchemy job store, in a table (``fleet_timers``) of
fleet's own database, so that a timer armed before the controller stopped is still there
when it starts again: one that came due meanwhile fires at once if it is still within its
misfire grace, and is dropped otherwise. The callers' rows stay the truth (they decide
what a late occurrence does); a timer only wakes the controller.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

log = logging.getLogger(__name__)

#: The table of fleet's database that holds the armed timers.
TABLE = "fleet_timers"
#: What a firing timer calls: set by the running Timers (one per controller process).
_on_fire: Callable[[str], None] | None = None


async def _fire(key: str) -> None:
    """Run by APScheduler when a timer comes due (by this textual reference, so that the
    job store can keep it); a coroutine, so it runs on the event loop, not in a thread."""
    if _on_fire is not None:
        _on_fire(key)


def zone(name: str) -> ZoneInfo:
    """Return the IANA time zone ``name``; Raises ValueError when it does not exist."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def cron_trigger(expr: str, tz: str) -> CronTrigger:
    """Return the trigger of a five-field cron expression; Raises ValueError if it does not
    parse (a field count other than five included)."""
    if not isinstance(expr, str) or len(expr.split()) != 5:
        raise ValueError(f"{expr!r} is not a five-field cron expression (min hour dom mon dow)")
    return CronTrigger.from_crontab(expr, timezone=zone(tz))


def cron_next(expr: str, tz: str, after: float) -> float | None:
    """Return the first time strictly after ``after`` (epoch seconds) that ``expr`` names in
    time zone ``tz``, or None when there is none."""
    trigger = cron_trigger(expr, tz)
    start = dt.datetime.fromtimestamp(after, dt.UTC) + dt.timedelta(seconds=1)
    start = start.replace(microsecond=0)
    fire = trigger.get_next_fire_time(None, start.astimezone(zone(tz)))
    return None if fire is None else fire.timestamp()


class Timers:
    """Wake-ups at set times, one per key, on an AsyncIOScheduler whose job store is a
    table of the database behind ``engine`` (an SQLAlchemy engine)."""

    def __init__(self, engine: Any, callback: Callable[[str], None]) -> None:
        self._scheduler = AsyncIOScheduler(
            timezone=dt.UTC,
            jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=TABLE)},
        )
        self._callback = callback
        self._armed: dict[str, float] = {}

    def start(self) -> None:
        """Start firing (call from within the running event loop). Timers left in the table
        by an earlier controller fire now when they are late by less than their grace."""
        global _on_fire
        _on_fire = self._callback
        self._scheduler.start()

    def stop(self) -> None:
        """Stop firing; nothing fires after this, and the armed timers stay in the table."""
        global _on_fire
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        _on_fire = None
        self._armed.clear()

    def arm(self, key: str, when: float, grace: float) -> None:
        """Fire ``key`` at ``when`` (epoch seconds), replacing its earlier timer. A timer
        that comes late (the controller was busy or down) still fires within ``grace``
        seconds (the misfire grace; APScheduler's own default is one second)."""
        if self._armed.get(key) == when:
            return
        self._armed[key] = when
        self._scheduler.add_job(
            f"{__name__}:_fire",
            DateTrigger(dt.datetime.fromtimestamp(when, dt.UTC)),
            args=[key],
            id=key,
            replace_existing=True,
            misfire_grace_time=max(1, int(grace)),
            coalesce=True,
        )

    def disarm(self, key: str) -> None:
        """Forget ``key``'s timer, if any."""
        if self._armed.pop(key, None) is not None:
            with contextlib.suppress(JobLookupError):  # it fired, and went, already
                self._scheduler.remove_job(key)

    def keep_only(self, keys: set[str]) -> None:
        """Remove every timer whose key is not in ``keys`` (left by an earlier controller
        for something that has gone since)."""
        for job in self._scheduler.get_jobs():
            if job.id not in keys:
                self._armed.pop(job.id, None)
                job.remove()
