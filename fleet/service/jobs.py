"""Job and task requests: create, list and show jobs; add, list and show tasks; task files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from fleet import specs
from fleet.domain import JobState, TaskResult, TaskState
from fleet.errors import Conflict, NotFound
from fleet.service.pools import get_pool
from fleet.settings import Settings
from fleet.store import Store
from fleet.tables import Job, Task

#: Files of a task that the controller collects from the node when the task ends.
COLLECTED_FILES = ("stdout.txt", "stderr.txt", "exit.json")


def create_job(store: Store, data: dict[str, Any]) -> Job:
    """Validate an Azure-style job spec and store the job.

    Raises BadInput, NotFound (unknown pool) or Conflict (id taken)."""
    spec = specs.parse_job(data)
    now = time.time()
    with store.session() as s:
        get_pool(s, spec["poolInfo"]["poolId"])
        if s.get(Job, spec["id"]) is not None:
            raise Conflict(
                "a job with this id exists already", code="JobExists", target=f"job {spec['id']}"
            )
        job = Job(
            id=spec["id"],
            pool_id=spec["poolInfo"]["poolId"],
            priority=spec["priority"],
            spec=spec,
            created_at=now,
            state_changed_at=now,
        )
        s.add(job)
    return job


def get_job(session: Session, job_id: str) -> Job:
    """Return the job; Raises NotFound (JobNotFound)."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}", code="JobNotFound", target=f"job {job_id}")
    return job


def list_jobs(store: Store) -> list[Job]:
    """Return every job, oldest first."""
    with store.session() as s:
        return list(s.exec(select(Job).order_by(col(Job.created_at), col(Job.id))))


def show_job(store: Store, job_id: str) -> Job:
    """Return one job; Raises NotFound."""
    with store.session() as s:
        return get_job(s, job_id)


def add_tasks(store: Store, job_id: str, data: Any) -> list[Task]:
    """Add one task or a collection of up to 100, atomically.

    Raises BadInput (bad spec, duplicate id in the collection), NotFound (no job) or
    Conflict (job not active, task id taken). Nothing is stored on error.
    """
    items = specs.parse_task_collection(data, job_id)
    now = time.time()
    with store.session() as s:
        job = get_job(s, job_id)
        if job.state != JobState.ACTIVE:
            raise Conflict(
                f"tasks can only be added to an active job; this one is {job.state}",
                code="JobNotActive",
                target=f"job {job_id}",
            )
        ids = [t["id"] for t in items]
        taken = list(s.exec(select(Task.id).where(Task.job_id == job_id, col(Task.id).in_(ids))))
        if taken:
            raise Conflict(
                f"task ids already exist in the job: {', '.join(sorted(taken))}",
                code="TaskExists",
                target=f"task {job_id}/{taken[0]}",
                field="id",
            )
        rows = [
            Task(
                job_id=job_id,
                id=t["id"],
                command_line=t["commandLine"],
                spec=t,
                required_slots=t["requiredSlots"],
                created_at=now,
                state_changed_at=now,
            )
            for t in items
        ]
        s.add_all(rows)
    return rows


def get_task(session: Session, job_id: str, task_id: str) -> Task:
    """Return the task; Raises NotFound (JobNotFound or TaskNotFound)."""
    get_job(session, job_id)
    task = session.exec(select(Task).where(Task.job_id == job_id, Task.id == task_id)).first()
    if task is None:
        raise NotFound(
            f"job {job_id} has no task {task_id!r}",
            code="TaskNotFound",
            target=f"task {job_id}/{task_id}",
        )
    return task


def list_tasks(store: Store, job_id: str) -> list[Task]:
    """Return the job's tasks in submission order; Raises NotFound."""
    with store.session() as s:
        get_job(s, job_id)
        return list(s.exec(select(Task).where(Task.job_id == job_id).order_by(col(Task.pk))))


def show_task(store: Store, job_id: str, task_id: str) -> Task:
    """Return one task; Raises NotFound."""
    with store.session() as s:
        return get_task(s, job_id, task_id)


def task_counts(store: Store, job_id: str) -> dict[str, int]:
    """Return ``active``, ``running``, ``completed``, ``succeeded`` and ``failed`` counts."""
    with store.session() as s:
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


def task_file(settings: Settings, store: Store, job_id: str, task_id: str, name: str) -> Path:
    """Return the local path of a collected task file such as ``stdout.txt``.

    Raises NotFound when the task or the file does not exist (yet)."""
    task = show_task(store, job_id, task_id)
    if name not in COLLECTED_FILES:
        raise NotFound(
            f"no file {name!r}; collected files are {', '.join(COLLECTED_FILES)}",
            code="FileNotFound",
            target=f"task {job_id}/{task_id}",
        )
    path = settings.task_files / job_id / task_id / name
    if not path.is_file():
        state = f"the task is {task.state}"
        raise NotFound(
            f"{name} has not been collected yet ({state})",
            code="FileNotFound",
            target=f"task {job_id}/{task_id}",
        )
    return path
