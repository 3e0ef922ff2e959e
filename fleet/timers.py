"""Timers: the only module that imports APScheduler (cron calendars and wake-ups at set times)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

log = logging.getLogger(__name__)


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
    """Wake-ups at set times, one per key, on an in-memory AsyncIOScheduler. The callers'
    rows are the truth: after a restart they arm their timers again from those rows."""

    def __init__(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone=dt.UTC)
        self._armed: dict[str, float] = {}

    def start(self) -> None:
        """Start firing (call from within the running event loop)."""
        self._scheduler.start()

    def stop(self) -> None:
        """Stop firing; nothing that was armed fires after this."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._armed.clear()

    def arm(self, key: str, when: float, callback: Callable[[], None], grace: float) -> None:
        """Call ``callback`` at ``when`` (epoch seconds), replacing ``key``'s earlier timer.
        A timer that comes late still fires within ``grace`` seconds (the misfire grace)."""
        if self._armed.get(key) == when:
            return
        self._armed[key] = when

        async def fire() -> None:  # a coroutine runs on the loop, a function in a thread
            callback()

        self._scheduler.add_job(
            fire,
            DateTrigger(dt.datetime.fromtimestamp(when, dt.UTC)),
            id=key,
            replace_existing=True,
            misfire_grace_time=max(1, int(grace)),
            coalesce=True,
        )

    def disarm(self, key: str) -> None:
        """Forget ``key``'s timer, if any."""
        if self._armed.pop(key, None) is not None:
            job = self._scheduler.get_job(key)
            if job is not None:
                job.remove()
