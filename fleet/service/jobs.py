"""Job requests: create, list, show, update, terminate, disable, enable and delete jobs."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as select_columns
from sqlmodel import Session, col, select

from fleet import specs, task_stats
from fleet.domain import JobState, TaskResult, TaskState
from fleet.errors import BadInput, Conflict, NotFound
from fleet.service import auto_pools
from fleet.service.pools import get_pool
from fleet.settings import Settings
from fleet.store import Store
from fleet.tables import Job, JobNode, Pool, Task


def create_job(store: Store, data: dict[str, Any], settings: Settings | None = None) -> Job:
    """Validate an Azure-style job spec and store the job (and its auto pool, if it asks
    for one, with passwords in the secret store of ``settings``).

    Raises BadInput, NotFound (unknown pool) or Conflict (id taken, auto pool host busy)."""
    spec = specs.parse_job(data)
    if spec["poolInfo"].get("autoPoolSpecification", {}).get("poolLifetimeOption") == (
        "jobschedule"
    ):
        raise BadInput(
            "poolLifetimeOption 'jobschedule' is for a job schedule's jobSpecification; "
            "a job's own auto pool has poolLifetimeOption 'job'",
            target=f"job {spec['id']}",
            field="poolInfo.autoPoolSpecification.poolLifetimeOption",
        )
    with store.session() as s:
        return insert_job(s, spec, time.time(), settings or Settings.resolve(db_url=store.url))


def insert_job(
    s: Session,
    spec: dict[str, Any],
    now: float,
    settings: Settings,
    schedule_id: str | None = None,
) -> Job:
    """Add the job of a parsed ``spec`` (its auto pool, its job manager task) to ``s``.

    Raises NotFound (unknown pool), Conflict (id taken) or BadInput; adds nothing then."""
    if s.get(Job, spec["id"]) is not None:
        raise Conflict(
            "a job with this id exists already", code="JobExists", target=f"job {spec['id']}"
        )
    auto = spec["poolInfo"].get("autoPoolSpecification")
    if auto is None:
        pool_id = spec["poolInfo"]["poolId"]
    else:
        pool_id = auto_pools.pool_for(s, auto, spec["id"], schedule_id, now, settings)
    pool = get_pool(s, pool_id)
    job = Job(
        id=spec["id"],
        pool_id=pool_id,
        priority=spec["priority"],
        spec=spec,
        created_at=now,
        state_changed_at=now,
        job_schedule_id=schedule_id,
    )
    s.add(job)
    manager = spec.get("jobManagerTask")
    if manager:
        s.add(_manager_task(pool, job, manager, now))
    return job


def _manager_task(pool: Pool, job: Job, manager: dict[str, Any], now: float) -> Task:
    """Return the job manager as the job's first task; run exclusive, it takes a whole node.

    Raises BadInput when it needs more slots than a node of the pool has."""
    spec = {k: v for k, v in manager.items() if k in specs.TASK_FIELDS}
    check_required_slots(
        pool, f"job {job.id}", spec["requiredSlots"], "jobManagerTask.requiredSlots"
    )
    exclusive = manager["runExclusive"]
    return Task(
        job_id=job.id,
        id=spec["id"],
        command_line=spec["commandLine"],
        spec=spec
        | {
            "jobManager": {
                "killJobOnCompletion": manager["killJobOnCompletion"],
                "runExclusive": exclusive,
            }
        },
        required_slots=pool.task_slots_per_node if exclusive else spec["requiredSlots"],
        job_manager=True,
        created_at=now,
        state_changed_at=now,
    )


def check_required_slots(pool: Pool, target: str, required: int, field: str) -> None:
    """Refuse a task that needs more slots than a node of ``pool`` has: it could never run."""
    if required > pool.task_slots_per_node:
        raise BadInput(
            f"the task needs {required} slots but a node of pool {pool.id} has "
            f"{pool.task_slots_per_node} (taskSlotsPerNode)",
            code="TaskNotSatisfiable",
            target=target,
            field=field,
        )


def get_job(session: Session, job_id: str) -> Job:
    """Return the job; Raises NotFound (JobNotFound)."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}", code="JobNotFound", target=f"job {job_id}")
    return job


def list_jobs(store: Store, schedule_id: str | None = None) -> list[Job]:
    """Return every job, or those job schedule ``schedule_id`` created, oldest first."""
    query = select(Job).order_by(col(Job.created_at), col(Job.id))
    if schedule_id is not None:
        query = query.where(Job.job_schedule_id == schedule_id)
    with store.read() as s:
        return list(s.exec(query))


def show_job(store: Store, job_id: str) -> Job:
    """Return one job; Raises NotFound."""
    with store.read() as s:
        return get_job(s, job_id)


def task_counts(store: Store, job_id: str) -> dict[str, int]:
    """Return ``active``, ``running``, ``completed``, ``succeeded`` and ``failed`` counts."""
    with store.read() as s:
        get_job(s, job_id)
        rows = s.exec(
            select(Task.state, Task.result, func.count())
            .where(Task.job_id == job_id)
            .group_by(col(Task.state), col(Task.result))
        ).all()
    counts = dict.fromkeys(("active", "running", "completed", "succeeded", "failed"), 0)
    for state, result, n in rows:
        if state == TaskState.COMPLETED:
            counts["completed"] += n
            counts["succeeded" if result == TaskResult.SUCCESS else "failed"] += n
        elif state == TaskState.RUNNING:
            counts["running"] += n
        else:
            counts["active"] += n
    return counts


def task_totals(store: Store, job_id: str) -> task_stats.JobTotals:
    """Return what the job's tasks add up to: resources used, retries, wait times."""
    usage = [
        func.max(col(Task.max_rss_bytes))
        if name == "max_rss_bytes"
        else func.sum(col(getattr(Task, name)))
        for name in task_stats.COLUMNS
    ]
    with store.read() as s:
        get_job(s, job_id)
        values = s.execute(
            select_columns(
                *usage,
                func.max(col(Task.stats_time)),
                func.sum(col(Task.retry_count)),
                func.sum(col(Task.start_time) - col(Task.created_at)),
            ).where(col(Task.job_id) == job_id)
        ).one()
    return task_stats.JobTotals.of(tuple(values))


#: Job states from which each request may start.
_TERMINABLE = {JobState.ACTIVE, JobState.DISABLING, JobState.DISABLED, JobState.ENABLING}
DISABLE_OPTIONS = ("requeue", "terminate", "wait")


def _transition(store: Store, job_id: str, allowed: set[JobState], verb: str, **values: Any) -> Job:
    now = time.time()
    with store.session() as s:
        job = get_job(s, job_id)
        if job.state not in allowed:
            raise Conflict(
                f"cannot {verb} a job that is {job.state}",
                code="JobStateConflict",
                target=f"job {job_id}",
            )
        for name, value in values.items():
            setattr(job, name, value)
        job.state_changed_at = now
        s.add(job)
        return job


def terminate_job(store: Store, job_id: str, reason: str | None = None) -> Job:
    """Ask the controller to end the job: running tasks are killed, then the job completes
    with ``terminationReason`` ``reason`` (default ``UserTerminate``). Raises NotFound or
    Conflict (already completed, terminating or deleting)."""
    return _transition(
        store,
        job_id,
        _TERMINABLE,
        "terminate",
        state=JobState.TERMINATING,
        termination_reason=reason or "UserTerminate",
    )


def disable_job(store: Store, job_id: str, disable_tasks: str) -> Job:
    """Stop scheduling the job's tasks. Running tasks are requeued, terminated, or left to
    finish (``wait``). Raises BadInput, NotFound or Conflict (job not active)."""
    if disable_tasks not in DISABLE_OPTIONS:
        raise BadInput(
            f"--disable-tasks must be one of {', '.join(DISABLE_OPTIONS)}",
            code="InvalidPropertyValue",
            target=f"job {job_id}",
            field="disableTasks",
        )
    return _transition(
        store,
        job_id,
        {JobState.ACTIVE},
        "disable",
        state=JobState.DISABLING,
        disable_tasks=disable_tasks,
    )


def enable_job(store: Store, job_id: str) -> Job:
    """Let a disabled job's tasks be scheduled again. Raises NotFound or Conflict."""
    return _transition(
        store,
        job_id,
        {JobState.DISABLED, JobState.DISABLING},
        "enable",
        state=JobState.ENABLING,
        disable_tasks=None,
    )


def delete_job(store: Store, job_id: str) -> Job:
    """Ask the controller to kill the job's running tasks and delete the job, its tasks and
    their collected files. Raises NotFound or Conflict (already deleting)."""
    return _transition(
        store, job_id, set(JobState) - {JobState.DELETING}, "delete", state=JobState.DELETING
    )


def set_job(store: Store, job_id: str, changes: dict[str, Any]) -> Job:
    """Update a job's ``priority``, ``constraints``, ``maxParallelTasks`` or
    ``onAllTasksComplete`` (Azure's job patch). Raises BadInput, NotFound or Conflict."""
    allowed = {"priority", "constraints", "maxParallelTasks", "onAllTasksComplete"}
    unknown = set(changes) - allowed
    if unknown:
        raise BadInput(
            f"cannot change {', '.join(sorted(unknown))} of a job; changeable: "
            f"{', '.join(sorted(allowed))}",
            code="UnsupportedProperty",
            target=f"job {job_id}",
            field=sorted(unknown)[0],
        )
    with store.session() as s:
        job = get_job(s, job_id)
        if job.state in (JobState.COMPLETED, JobState.DELETING, JobState.TERMINATING):
            raise Conflict(
                f"cannot change a job that is {job.state}",
                code="JobStateConflict",
                target=f"job {job_id}",
            )
        # the stored spec is request-shaped: the merge is validated like a new job
        merged = specs.parse_job({**job.spec, **changes})
        job.spec = merged
        job.priority = merged["priority"]
        s.add(job)
        return job


def prep_release_status(store: Store, job_id: str) -> list[dict[str, Any]]:
    """Return, per node that ran it, the job's prep and release task execution info."""
    with store.read() as s:
        get_job(s, job_id)
        return [
            {
                k: v
                for k, v in {
                    "nodeId": row.node_id,
                    "jobPreparationTaskExecutionInfo": row.prep_info,
                    "jobReleaseTaskExecutionInfo": row.release_info,
                }.items()
                if v is not None
            }
            for row in s.exec(
                select(JobNode).where(JobNode.job_id == job_id).order_by(col(JobNode.node_id))
            )
        ]
