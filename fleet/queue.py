"""The queue: the tasks that may start now, read in the order they should start.

Jobs by priority (highest first), then age; each job's tasks in the order they were
added. Read job by job through the index (job_id, state, pk), so that a read costs what it
returns, not the length of the queue: with 100,000 tasks waiting, placing 64 of them
reads 64 rows. A job whose job manager has not started yet offers its job manager only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fleet.domain import AttemptState, JobState, TaskState
from fleet.scheduler import PendingTask
from fleet.sql import Sql, Statement

_ANY_ACTIVE_JOB = Statement("SELECT id FROM jobs WHERE state = :active LIMIT 1")
_ACTIVE_JOBS = Statement(
    "SELECT id, pool_id, priority, created_at, spec FROM jobs"
    " WHERE state = :active AND pool_id IN :pools ORDER BY priority DESC, created_at, id",
    json_columns=["spec"],
)
#: A job's tasks that may start, in order (read through the index on job_id, state, pk).
_WAITING = (
    "SELECT pk, id, required_slots, instances FROM tasks"
    " WHERE job_id = :job AND state = :active AND attempt_state IS NULL"
    " AND end_request IS NULL AND deps_state IS NULL"
)
_WAITING_TASKS = Statement(_WAITING + " ORDER BY pk LIMIT :limit")
_WAITING_MANAGER = Statement(_WAITING + " AND id = :manager ORDER BY pk LIMIT :limit")
_TASK_STATE = Statement("SELECT state FROM tasks WHERE job_id = :job AND id = :id")
#: What a dispatch reads of each task placed.
_TO_DISPATCH = Statement(
    "SELECT pk, job_id, id, attempt, attempt_state, state, spec, command_line,"
    " required_slots, job_manager, token_hash, created_at, last_retry_time,"
    " last_requeue_time FROM tasks WHERE pk IN :pks",
    json_columns=["spec"],
)
#: An attempt written ahead as ``dispatching``, conditional on the task being unchanged.
_DISPATCHED = Statement(
    "UPDATE tasks SET attempt = :attempt, attempt_state = :dispatching, node_id = :node_id,"
    " pool_id = :pool_id, task_root = :task_root, token_hash = :token_hash, state = :state"
    " WHERE pk = :b_pk AND attempt = :b_attempt AND attempt_state IS NULL"
)


def any_active_job(db: Sql) -> bool:
    """Return whether any job is active (without one, nothing can start)."""
    return bool(db.rows(_ANY_ACTIVE_JOB, {"active": JobState.ACTIVE}))


def active_jobs(db: Sql, pool_ids: Iterable[str]) -> list[Any]:
    """Return the active jobs of the pools ``pool_ids`` in the order their tasks start
    (rows of ``id``, ``pool_id``, ``priority``, ``created_at`` and ``spec``)."""
    return db.rows(_ACTIVE_JOBS, {"active": JobState.ACTIVE, "pools": list(pool_ids)})


def pending(db: Sql, jobs: list[Any], limit: int) -> list[PendingTask]:
    """Return up to ``limit`` tasks of ``jobs`` (from :func:`active_jobs`) that may start
    now, in order."""
    out: list[PendingTask] = []
    for job in jobs:
        if len(out) >= limit:
            break
        params: dict[str, Any] = {
            "job": job.id,
            "active": TaskState.ACTIVE,
            "limit": limit - len(out),
        }
        query = _WAITING_TASKS
        manager = (job.spec.get("jobManagerTask") or {}).get("id")
        if manager is not None and _manager_waits(db, job.id, manager):
            query, params["manager"] = _WAITING_MANAGER, manager
        out += [
            PendingTask(
                job.id,
                t.id,
                job.pool_id,
                job.priority,
                job.created_at,
                t.pk,
                t.required_slots,
                t.instances,
            )
            for t in db.rows(query, params)
        ]
    return out


def _manager_waits(db: Sql, job_id: str, manager_id: str) -> bool:
    """Return whether the job manager ``manager_id`` of ``job_id`` has yet to start (the
    job's other tasks wait for it)."""
    rows = db.rows(_TASK_STATE, {"job": job_id, "id": manager_id})
    return bool(rows) and rows[0].state == TaskState.ACTIVE


def to_dispatch(db: Sql, pks: list[int]) -> dict[int, Any]:
    """Return what a dispatch reads of the tasks ``pks`` (rows by pk)."""
    return {row.pk: row for row in db.rows(_TO_DISPATCH, {"pks": pks})}


def mark_dispatched(db: Sql, writes: list[dict[str, Any]]) -> None:
    """Write attempts ahead as ``dispatching`` (``writes``: the parameters of
    ``_DISPATCHED`` per task but ``dispatching``), each only if its task is unchanged
    since it was read."""
    db.executemany(_DISPATCHED, [w | {"dispatching": AttemptState.DISPATCHING} for w in writes])
