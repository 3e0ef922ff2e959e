"""Task requests: add, list, show, update, terminate, reactivate and delete tasks; their files."""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import class_mapper
from sqlmodel import Session, col, select

from fleet import specs
from fleet.domain import JobState, TaskResult, TaskState
from fleet.environment import COLLECTED_FILES  # noqa: F401 (fleet.collection imports it here)
from fleet.errors import BadInput, Conflict, NotFound
from fleet.service import applications, dependency_state
from fleet.service.jobs import check_required_slots, get_job
from fleet.settings import Settings
from fleet.store import Store
from fleet.tables import Job, Node, Pool, Subtask, Task

_TASKS = Task.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models


def add_tasks(
    store: Store, job_id: str, data: Any, *, limit: int | None = specs.MAX_TASKS_PER_ADD
) -> list[Task]:
    """Add one task or a collection of up to ``limit`` (None: any number), atomically.

    Every task is checked before anything is written, then all are inserted with one
    executemany in one transaction. Raises BadInput (bad spec, duplicate id in the
    collection, bad dependencies, more slots than a node has: the first bad task, its
    position in ``details["index"]``), NotFound (no job) or Conflict (job not active,
    ``TaskExists`` naming the first id the job has already). Nothing is stored on error.
    Tasks with ``dependsOn`` wait until their parents allow them to run. Returns the
    tasks as stored (rows outside any session, without their ``pk``).
    """
    items = specs.parse_task_collection(data, job_id, limit)
    now = time.time()
    with store.session() as s:
        job = get_job(s, job_id)
        if job.state != JobState.ACTIVE:
            raise Conflict(
                f"tasks can only be added to an active job; this one is {job.state}",
                code="JobNotActive",
                target=f"job {job_id}",
            )
        _check_ids_free(s, job_id, items)
        try:
            _check_users(s, job, items)
            _check_package_references(s, job_id, items)
            _check_satisfiable(s, job, items)
            new_deps = {t["id"]: t["dependsOn"] for t in items}
            uses = bool(job.spec.get("usesTaskDependencies"))
            verdicts = (
                dependency_state.verdicts_for_new_tasks(
                    s, job_id, new_deps, uses_task_dependencies=uses
                )
                if uses or any(new_deps.values())
                else {}
            )
        except BadInput as exc:
            _name_position(exc, job_id, items)
            raise
        rows = [_row(job_id, t, verdicts.get(t["id"]), now) for t in items]
        s.execute(insert(_TASKS), rows)
    return _as_tasks(rows)


def _row(
    job_id: str, spec: dict[str, Any], verdict: tuple[str | None, str | None] | None, now: float
) -> dict[str, Any]:
    """Return the columns of a new task's row: the same keys for every row (executemany)."""
    deps_state, deps_parent = verdict or (None, None)
    return {
        "job_id": job_id,
        "id": spec["id"],
        "command_line": spec["commandLine"],
        "spec": spec,
        "required_slots": spec["requiredSlots"],
        "created_at": now,
        "state_changed_at": now,
        "deps_state": deps_state,
        "deps_parent": deps_parent,
        "instances": (spec["multiInstanceSettings"] or {}).get("numberOfInstances", 1),
    }


def _as_tasks(rows: list[dict[str, Any]]) -> list[Task]:
    """Return Task objects for rows just inserted, built the way the ORM builds rows it
    loads (no per-attribute events or validation, which cost ~0.3 ms a task): outside
    any session, with every column but ``pk``."""
    manager = class_mapper(Task).class_manager
    defaults = {  # shared by the tasks: each is immutable (spec, the one dict, is in rows)
        name: field.get_default(call_default_factory=True)
        for name, field in Task.model_fields.items()
        if name not in rows[0]
    }
    tasks = []
    for row in rows:
        task = manager.new_instance()
        task.__dict__.update(defaults)
        task.__dict__.update(row)
        tasks.append(task)
    return tasks


#: How many ids one ``IN`` query checks (SQLite allows 32,766 parameters; PostgreSQL more).
_IDS_PER_QUERY = 1000


def _check_ids_free(s: Session, job_id: str, items: list[dict[str, Any]]) -> None:
    """Raise Conflict ``TaskExists`` naming the first task of ``items`` (in order) whose id
    the job has already; one query per 1,000 ids."""
    ids = [t["id"] for t in items]
    taken: set[str] = set()
    for i in range(0, len(ids), _IDS_PER_QUERY):
        chunk = ids[i : i + _IDS_PER_QUERY]
        taken.update(s.exec(select(Task.id).where(Task.job_id == job_id, col(Task.id).in_(chunk))))
    if not taken:
        return
    index, first = next((i, tid) for i, tid in enumerate(ids) if tid in taken)
    more = f" (and {len(taken) - 1} more of the ids added)" if len(taken) > 1 else ""
    raise Conflict(
        f"task {first} exists already in job {job_id}{more}",
        code="TaskExists",
        target=f"task {job_id}/{first}",
        field="id",
        details={"index": index, "count": len(taken)},
    )


def _name_position(exc: BadInput, job_id: str, items: list[dict[str, Any]]) -> None:
    """Say where in the collection the task that ``exc`` names is (``details["index"]``)."""
    prefix = f"task {job_id}/"
    if exc.target and exc.target.startswith(prefix):
        tid = exc.target.removeprefix(prefix)
        index = next((i for i, t in enumerate(items) if t["id"] == tid), None)
        if index is not None:
            specs.at_index(exc, index, len(items), job_id)


def _check_package_references(s: Session, job_id: str, items: list[dict[str, Any]]) -> None:
    """Check each distinct list of applicationPackageReferences once (for its first task)."""
    seen: set[str] = set()
    for t in items:
        refs = t.get("applicationPackageReferences")
        if not refs or (key := json.dumps(refs, sort_keys=True)) in seen:
            continue
        seen.add(key)
        applications.check_references(s, refs, f"task {job_id}/{t['id']}")


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


def terminate_task(store: Store, job_id: str, task_id: str) -> Task:
    """End a task: an active one completes at once, a running one is killed by the
    controller; either way it fails with ``TaskEnded`` and is not retried.
    Raises NotFound, or Conflict when it has completed already."""
    now = time.time()
    with store.session() as s:
        task = get_task(s, job_id, task_id)
        if task.state == TaskState.COMPLETED:
            raise Conflict(
                "the task has completed already",
                code="TaskCompleted",
                target=f"task {job_id}/{task_id}",
            )
        if task.attempt_state is None:
            task.state = TaskState.COMPLETED
            task.result = TaskResult.FAILURE
            task.failure_info = {
                "category": "usererror",
                "code": "TaskEnded",
                "message": "the task was terminated before it started",
            }
            task.end_time = now
            task.state_changed_at = now
        else:
            task.end_request = "terminate"
        s.add(task)
        return task


def reactivate_task(store: Store, job_id: str, task_id: str) -> Task:
    """Make a failed task active again with its counters and execution record reset.
    Raises NotFound, or Conflict unless it completed with a failure in an active job."""
    now = time.time()
    with store.session() as s:
        task = get_task(s, job_id, task_id)
        job = get_job(s, job_id)
        if task.state != TaskState.COMPLETED or task.result != TaskResult.FAILURE:
            raise Conflict(
                "only a task that completed with a failure can be reactivated",
                code="TaskNotFailed",
                target=f"task {job_id}/{task_id}",
            )
        if job.state not in (JobState.ACTIVE, JobState.DISABLED, JobState.DISABLING):
            raise Conflict(
                f"the job is {job.state}",
                code="JobStateConflict",
                target=f"task {job_id}/{task_id}",
            )
        for name in (
            "exit_code",
            "result",
            "failure_info",
            "start_time",
            "end_time",
            "node_id",
            "pool_id",
            "task_root",
            "last_retry_time",
            "last_requeue_time",
            "dependency_action",
        ):
            setattr(task, name, None)
        task.retry_count = task.requeue_count = 0
        task.state = TaskState.ACTIVE
        task.state_changed_at = now
        s.add(task)
        s.flush()
        dependency_state.refresh(s, job_id)  # its dependents wait for it again
        return task


def delete_task(settings: Settings, store: Store, job_id: str, task_id: str) -> bool:
    """Delete a task and its collected files; a running one is killed first by the
    controller. Return True if it is gone now, False if the controller finishes it."""
    with store.session() as s:
        task = get_task(s, job_id, task_id)
        if task.attempt_state is not None:
            task.end_request = "delete"
            s.add(task)
            return False
        s.delete(task)
    shutil.rmtree(settings.task_files / job_id / task_id, ignore_errors=True)
    return True


def set_task(store: Store, job_id: str, task_id: str, constraints: dict[str, Any]) -> Task:
    """Replace a task's constraints (Azure's task update). Raises BadInput, NotFound, or
    Conflict when it has completed."""
    with store.session() as s:
        task = get_task(s, job_id, task_id)
        if task.state == TaskState.COMPLETED:
            raise Conflict(
                "the task has completed already",
                code="TaskCompleted",
                target=f"task {job_id}/{task_id}",
            )
        parsed = specs.parse_constraints(constraints, f"task {job_id}/{task_id}", task=True)
        task.spec = {**task.spec, "constraints": parsed}
        s.add(task)
        return task


def _check_users(s: Session, job: Job, items: list[dict[str, Any]]) -> None:
    """Refuse a task that names a user account its job's pool does not define."""
    named = [(t["id"], (t.get("userIdentity") or {}).get("username")) for t in items]
    named = [(tid, user) for tid, user in named if user]
    if not named:
        return
    pool = s.get(Pool, job.pool_id)
    accounts = {a["name"] for a in (pool.spec.get("userAccounts") or [])} if pool else set()
    for tid, user in named:
        if user not in accounts:
            raise BadInput(
                f"user {user!r} is not one of pool {job.pool_id}'s userAccounts",
                code="InvalidPropertyValue",
                target=f"task {job.id}/{tid}",
                field="userIdentity.username",
            )


def _check_satisfiable(s: Session, job: Job, items: list[dict[str, Any]]) -> None:
    """Refuse a task its pool can never run (too many slots, or a multi-instance task
    the pool cannot hold), instead of leaving it active forever."""
    pool = s.get(Pool, job.pool_id)
    if pool is not None:
        for t in items:
            check_required_slots(
                pool, f"task {job.id}/{t['id']}", t["requiredSlots"], "requiredSlots"
            )
    wanted = [
        (t["id"], t["multiInstanceSettings"]["numberOfInstances"])
        for t in items
        if t.get("multiInstanceSettings")
    ]
    if not wanted:
        return
    nodes = len(s.exec(select(Node.id).where(Node.pool_id == job.pool_id)).all())
    for tid, count in wanted:
        target = f"task {job.id}/{tid}"
        if pool is None or not pool.spec.get("enableInterNodeCommunication"):
            raise BadInput(
                f"pool {job.pool_id} does not set enableInterNodeCommunication, which "
                "a multi-instance task needs",
                code="MultiInstanceTaskNotSatisfiable",
                target=target,
                field="multiInstanceSettings",
            )
        if count > nodes:
            raise BadInput(
                f"the task needs {count} nodes at once but pool {job.pool_id} has {nodes}",
                code="MultiInstanceTaskNotSatisfiable",
                target=target,
                field="multiInstanceSettings.numberOfInstances",
            )


def list_subtasks(store: Store, job_id: str, task_id: str) -> list[Subtask]:
    """Return the instances of a multi-instance task's latest attempt. Raises NotFound."""
    with store.session() as s:
        task = get_task(s, job_id, task_id)
        return list(
            s.exec(
                select(Subtask)
                .where(
                    Subtask.job_id == job_id,
                    Subtask.task_id == task_id,
                    Subtask.attempt == task.attempt,
                )
                .order_by(col(Subtask.instance))
            )
        )
