"""The queue: the tasks that may start now, read in the order they should start.

Jobs by priority (highest first), then age; each job's tasks in the order they were
added. Read job by job through the index (job_id, state, pk), so that a read costs what it
returns, not the length of the queue: with 100,000 tasks waiting, placing 64 of them
reads 64 rows. A job whose job manager has not started yet offers its job manager only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, select, update

from fleet.domain import AttemptState, JobState, TaskState
from fleet.scheduler import PendingTask
from fleet.tables import Job, Task

_TASKS = Task.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
_JOBS = Job.__table__  # type: ignore[attr-defined]

#: What a dispatch reads of each task placed.
_DISPATCH_COLUMNS = [
    _TASKS.c[name]
    for name in (
        "pk",
        "job_id",
        "id",
        "attempt",
        "attempt_state",
        "state",
        "spec",
        "command_line",
        "required_slots",
        "job_manager",
        "token_hash",
        "created_at",
        "last_retry_time",
        "last_requeue_time",
    )
]
#: An attempt written ahead as ``dispatching``, conditional on the task being unchanged.
_DISPATCHED = (
    update(_TASKS)
    .where(
        _TASKS.c.pk == bindparam("b_pk"),
        _TASKS.c.attempt == bindparam("b_attempt"),
        _TASKS.c.attempt_state.is_(None),
    )
    .values(
        attempt=bindparam("attempt"),
        attempt_state=AttemptState.DISPATCHING,
        node_id=bindparam("node_id"),
        pool_id=bindparam("pool_id"),
        task_root=bindparam("task_root"),
        token_hash=bindparam("token_hash"),
        state=bindparam("state"),
    )
)
_TO_DISPATCH = select(*_DISPATCH_COLUMNS).where(_TASKS.c.pk.in_(bindparam("pks", expanding=True)))
_WAITING = (
    _TASKS.c.state == TaskState.ACTIVE,
    _TASKS.c.attempt_state.is_(None),
    _TASKS.c.end_request.is_(None),
    _TASKS.c.deps_state.is_(None),
)


def any_active_job(s: Any) -> bool:
    """Return whether any job is active (without one, nothing can start)."""
    query = select(_JOBS.c.id).where(_JOBS.c.state == JobState.ACTIVE).limit(1)
    return s.connection().execute(query).first() is not None


def pending(s: Any, pool_ids: Iterable[str], limit: int) -> list[PendingTask]:
    """Return up to ``limit`` tasks that may start on the pools ``pool_ids``, in order."""
    jobs = (
        s.connection()
        .execute(
            select(_JOBS.c.id, _JOBS.c.pool_id, _JOBS.c.priority, _JOBS.c.created_at, _JOBS.c.spec)
            .where(_JOBS.c.state == JobState.ACTIVE, _JOBS.c.pool_id.in_(list(pool_ids)))
            .order_by(_JOBS.c.priority.desc(), _JOBS.c.created_at, _JOBS.c.id)
        )
        .all()
    )
    out: list[PendingTask] = []
    for job_id, pool_id, priority, created, spec in jobs:
        if len(out) >= limit:
            break
        query = (
            select(_TASKS.c.pk, _TASKS.c.id, _TASKS.c.required_slots, _TASKS.c.instances)
            .where(_TASKS.c.job_id == job_id, *_WAITING)
            .order_by(_TASKS.c.pk)
            .limit(limit - len(out))
        )
        manager = (spec.get("jobManagerTask") or {}).get("id")
        if manager is not None and _manager_waits(s, job_id, manager):
            query = query.where(_TASKS.c.id == manager)
        out += [
            PendingTask(job_id, task_id, pool_id, priority, created, pk, slots, instances)
            for pk, task_id, slots, instances in s.connection().execute(query)
        ]
    return out


def _manager_waits(s: Any, job_id: str, manager_id: str) -> bool:
    """Return whether the job manager ``manager_id`` of ``job_id`` has yet to start (the
    job's other tasks wait for it)."""
    state = (
        s.connection()
        .execute(select(_TASKS.c.state).where(_TASKS.c.job_id == job_id, _TASKS.c.id == manager_id))
        .scalar()
    )
    return state == TaskState.ACTIVE


_JOB_SPECS = select(_JOBS.c.id, _JOBS.c.spec).where(
    _JOBS.c.id.in_(bindparam("ids", expanding=True))
)


def job_specs(s: Any, job_ids: Iterable[str]) -> dict[str, Any]:
    """Return the jobs ``job_ids`` by id, as rows of ``id`` and ``spec``."""
    return {row.id: row for row in s.connection().execute(_JOB_SPECS, {"ids": list(job_ids)})}


def to_dispatch(s: Any, pks: list[int]) -> dict[int, Any]:
    """Return what a dispatch reads of the tasks ``pks`` (rows by pk)."""
    return {row.pk: row for row in s.connection().execute(_TO_DISPATCH, {"pks": pks})}


def mark_dispatched(s: Any, writes: list[dict[str, Any]]) -> None:
    """Write attempts ahead as ``dispatching`` (``writes``: the parameters of
    ``_DISPATCHED`` per task), each only if its task is unchanged since it was read."""
    if writes:
        s.connection().execute(_DISPATCHED, writes)
