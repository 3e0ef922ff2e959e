"""Which waiting tasks of a job may run: ``dependsOn`` evaluated against the store.

A task with parents is stored with ``deps_state`` ``waiting``; it becomes
schedulable (``deps_state`` None) once every parent completed with
``dependencyAction`` satisfy, and ``blocked`` when a parent completed with block.
``deps_parent`` names the parent it waits for or is blocked by.

Both entry points read the job in one query of plain columns (no ORM objects) and
write what changed in one executemany, so they cost little even for jobs of many
thousands of tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy import select as select_columns
from sqlmodel import Session

from fleet import dependencies
from fleet.domain import TaskState
from fleet.tables import Task

_TASKS = Task.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models

#: ``(deps_state, deps_parent)`` of one task: ``(None, None)`` when it may run.
Verdict = tuple[str | None, str | None]


@dataclass
class _Held:
    pk: int
    id: str
    depends_on: Mapping[str, Any] | None
    verdict: Verdict


@dataclass
class _Job:
    """A job's tasks as dependency decisions need them."""

    depends_on: dict[str, Mapping[str, Any] | None]  # every task id -> its dependsOn
    states: dict[str, dependencies.ParentState]
    held: list[_Held]  # tasks with a deps_state


def _load(session: Session, job_id: str) -> _Job:
    c = _TASKS.c
    rows = session.execute(
        select_columns(
            c.pk, c.id, c.state, c.dependency_action, c.deps_state, c.deps_parent,
            c.spec["dependsOn"],
        ).where(c.job_id == job_id)
    ).all()  # fmt: skip
    job = _Job({}, {}, [])
    for pk, tid, state, action, deps_state, deps_parent, depends_on in rows:
        completed = state == TaskState.COMPLETED
        job.depends_on[tid] = depends_on
        job.states[tid] = dependencies.ParentState(
            completed=completed,
            dependency_action=action or (dependencies.SATISFY if completed else None),
        )
        if deps_state is not None:
            job.held.append(_Held(pk, tid, depends_on, (deps_state, deps_parent)))
    return job


def _verdict(
    task_id: str,
    depends_on: Mapping[str, Any] | None,
    states: Mapping[str, dependencies.ParentState],
    index: dependencies.TaskIdIndex,
) -> Verdict:
    verdict, parent = dependencies.status(task_id, depends_on, states, index)
    return (None, None) if verdict == "runnable" else (verdict, parent)


def _reevaluate(
    session: Session,
    job: _Job,
    index: dependencies.TaskIdIndex,
) -> int:
    """Write the new verdicts of the job's held tasks that changed; return how many
    became runnable."""
    changed = []
    for task in job.held:
        verdict = _verdict(task.id, task.depends_on, job.states, index)
        if verdict != task.verdict:
            changed.append({"b_pk": task.pk, "b_state": verdict[0], "b_parent": verdict[1]})
    if changed:
        session.execute(
            update(_TASKS)
            .where(_TASKS.c.pk == bindparam("b_pk"))
            .values(deps_state=bindparam("b_state"), deps_parent=bindparam("b_parent")),
            changed,
        )
    return sum(1 for row in changed if row["b_state"] is None)


def refresh(session: Session, job_id: str) -> int:
    """Re-evaluate the job's waiting and blocked tasks inside ``session``; return how
    many became runnable."""
    job = _load(session, job_id)
    if not job.held:
        return 0
    return _reevaluate(session, job, dependencies.TaskIdIndex(job.depends_on))


def verdicts_for_new_tasks(
    session: Session,
    job_id: str,
    new: Mapping[str, Mapping[str, Any] | None],
    *,
    uses_task_dependencies: bool,
) -> dict[str, Verdict]:
    """Prepare adding ``new`` tasks (id -> parsed dependsOn, in file order; none of them
    in the job yet) to a job, and return the verdict of each that has dependencies.

    Checks the job's graph with them (``dependencies.validate_additions``: raises
    BadInput naming the task and field) and re-evaluates the job's held tasks, whose
    ranges may now cover new ids (written at once, inside ``session``).
    """
    job = _load(session, job_id)
    dependencies.validate_additions(
        job.depends_on, new, job_id=job_id, uses_task_dependencies=uses_task_dependencies
    )
    index = dependencies.TaskIdIndex([*job.depends_on, *new])
    _reevaluate(session, job, index)
    return {tid: _verdict(tid, dep, job.states, index) for tid, dep in new.items() if dep}
