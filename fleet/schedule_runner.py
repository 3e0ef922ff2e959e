"""The controller's job schedules: create each occurrence's job, wait, or record it skipped.

The ``job_schedules`` rows are the truth. A schedule's ``next_run`` (the scheduled time of
its next occurrence not yet handled) moves on in the same transaction that creates that
occurrence's job or records it skipped, so a controller killed at any point neither fires
an occurrence twice nor loses one. APScheduler (fleet/timers.py) wakes the controller at
each ``next_run``, with the schedule's startWindow as its misfire grace; its timers are kept
in the same database and armed again from the rows by the first pass after a start.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from sqlmodel import Session, col, or_, select

from fleet import schedules
from fleet.domain import JobState
from fleet.errors import FleetError
from fleet.service import auto_pools
from fleet.service.jobs import insert_job
from fleet.sql import Sql, Statement
from fleet.tables import Job, JobSchedule
from fleet.timers import Timers

if TYPE_CHECKING:
    from fleet.context import Context

log = logging.getLogger(__name__)

#: How often every schedule is looked at (its timer armed), not only those due.
FULL_PASS_SECONDS = 2.0

_IDLE = ("completed",)
_ENDING = ("terminating", "deleting")
#: Whether any live schedule has something due (the once-a-second look reads this).
_ANY_DUE = Statement(
    "SELECT id FROM job_schedules WHERE NOT (state IN :idle) AND (next_run IS NULL"
    " OR next_run <= :now OR state IN :ending) LIMIT 1"
)
_LIVE_JOB = {
    JobState.ACTIVE,
    JobState.DISABLING,
    JobState.DISABLED,
    JobState.ENABLING,
    JobState.TERMINATING,
}


class ScheduleRunner:
    """Handles every job schedule that is not completed, each turn of the controller."""

    def __init__(self, ctx: Context) -> None:
        self.c = ctx
        self.timers = Timers(ctx.store.engine, lambda _key: ctx.wake())
        self.since = time.time()  # occurrences whose window closed before this were missed
        self._full_pass_at = 0.0
        self._swept = False  # whether timers left for gone schedules were removed

    def start(self) -> None:
        """Start the timers; the first tick arms them from the rows."""
        self.since = time.time()
        self._swept = False
        self.timers.start()

    def stop(self) -> None:
        """Stop the timers."""
        self.timers.stop()

    def read(self, db: Sql) -> bool:
        """Read whether :meth:`tick` has anything to do: a schedule with something due,
        or a full pass."""
        now = time.time()
        if now - self._full_pass_at >= FULL_PASS_SECONDS:
            return True
        params = {"idle": list(_IDLE), "now": now, "ending": list(_ENDING)}
        return bool(db.rows(_ANY_DUE, params))

    def tick(self, due: bool) -> None:
        """Advance the schedules with something due (an occurrence, termination, deletion
        or completion), all in one transaction, so a burst of occurrences costs one commit.
        Every FULL_PASS_SECONDS a tick also arms the timer of every other live schedule
        (so new and changed ones fire on time) from one query; otherwise a turn costs
        nothing per idle schedule, and takes no write lock: ``due`` is what :meth:`read`
        found."""
        if not due:
            return
        now = time.time()
        full = now - self._full_pass_at >= FULL_PASS_SECONDS
        live = col(JobSchedule.state).not_in(_IDLE)
        pending = or_(
            col(JobSchedule.next_run).is_(None),
            col(JobSchedule.next_run) <= now,
            col(JobSchedule.state).in_(_ENDING),
        )
        timers: dict[str, tuple[float, float] | None] = {}  # armed after the commit
        with self.c.store.session() as s:
            for row in s.exec(select(JobSchedule).where(live, pending)).all():
                try:
                    with s.begin_nested():  # one schedule's failure leaves the others be
                        timers[row.id] = self._advance(s, row, now)
                except FleetError as exc:
                    log.error("job schedule %s: %s (%s)", row.id, exc, exc.code)
            waiting = list(s.exec(select(JobSchedule).where(live, ~pending))) if full else []
        for sid, timer in timers.items():
            if timer is None:
                self.timers.disarm(sid)
            else:
                self.timers.arm(sid, *timer)
        if not full:
            return
        self._full_pass_at = now
        for row in waiting:
            assert row.next_run is not None
            self.timers.arm(row.id, row.next_run, schedules.start_window(row.spec["schedule"]))
        if not self._swept:
            self.timers.keep_only({*timers, *(row.id for row in waiting)})
            self._swept = True

    def _advance(self, s: Session, row: JobSchedule, now: float) -> tuple[float, float] | None:
        """Advance one schedule in session ``s``; return its timer to arm (when, grace),
        or None when it needs none."""
        recent = s.get(Job, row.recent_job_id) if row.recent_job_id else None
        active = recent is not None and recent.state in _LIVE_JOB
        if row.state == "deleting":
            self._delete(s, row)  # its timer goes after the commit (the store is locked now)
            return None
        if row.state == "terminating":
            if recent is not None and active and recent.state != JobState.TERMINATING:
                _end_job(recent, now, JobState.TERMINATING, "TerminateJobSchedule")
                s.add(recent)
            elif not active:
                _set_state(row, "completed", now)
        else:
            active = self._occurrences(s, row, now, active)
            if row.next_run is None and not active and row.state == "active":
                _set_state(row, "completed", now)
        s.add(row)
        if row.next_run is not None and row.state in ("active", "disabled"):
            return row.next_run, schedules.start_window(row.spec["schedule"])
        return None

    def _occurrences(self, s: Session, row: JobSchedule, now: float, active: bool) -> bool:
        """Handle every occurrence due by ``now``, oldest first; return whether the
        schedule's job is active afterwards."""
        timing = row.spec["schedule"]
        window = schedules.start_window(timing)
        while row.next_run is not None and row.next_run <= now:
            occurrence = row.next_run
            if row.state == "disabled":
                decision = schedules.REASON_DISABLED
            else:
                decision = schedules.decide(occurrence, now, window, active, self.since)
            if decision == "wait":
                break
            if decision == "create":
                try:
                    with s.begin_nested():  # a job that cannot be made leaves nothing behind
                        self._create_job(s, row, now)
                    active = True
                except FleetError as exc:  # e.g. its pool is gone, or its hosts are busy
                    decision = f"no job could be created: {exc}"
            if decision != "create":
                log.info("job schedule %s: occurrence skipped (%s)", row.id, decision)
                row.skipped_runs = schedules.add_skipped(
                    row.skipped_runs or [], occurrence, decision
                )
            row.next_run = schedules.next_occurrence(timing, occurrence)
        return active

    def _create_job(self, s: Session, row: JobSchedule, now: float) -> None:
        n = row.job_count + 1
        jid = schedules.job_id(row.id, n)
        spec = row.spec["jobSpecification"] | {"id": jid}
        if "autoPoolSpecification" in spec["poolInfo"]:
            auto_pools.retire_ended(s)  # the last job's pool gives its hosts back first
        insert_job(s, spec, time.time(), self.c.settings, schedule_id=row.id)
        row.job_count = n
        row.recent_job_id = jid
        log.info("job schedule %s: created job %s", row.id, jid)
        self.c.wake()

    def _delete(self, s: Session, row: JobSchedule) -> None:
        jobs = list(s.exec(select(Job).where(Job.job_schedule_id == row.id)))
        for job in jobs:
            if job.state != JobState.DELETING:
                _end_job(job, time.time(), JobState.DELETING, None)
                s.add(job)
        if not jobs:
            s.delete(row)
            log.info("job schedule %s deleted", row.id)


def _set_state(row: JobSchedule, state: str, now: float) -> None:
    row.state = state
    row.state_changed_at = now
    if state == "completed":
        row.end_time = now
        row.next_run = None


def _end_job(job: Job, now: float, state: JobState, reason: str | None) -> None:
    job.state = state
    job.state_changed_at = now
    if reason and not job.termination_reason:
        job.termination_reason = reason
