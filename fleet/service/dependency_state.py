"""Which waiting tasks of a job may run: ``dependsOn`` evaluated against the store.

A task with parents is stored with ``deps_state`` ``waiting``; it becomes
schedulable (``deps_state`` None) once every parent completed with
``dependencyAction`` satisfy, and ``blocked`` when a parent completed with block.
``deps_parent`` names the parent it waits for or is blocked by.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from fleet import dependencies
from fleet.domain import TaskState
from fleet.tables import Task


def refresh(session: Session, job_id: str) -> int:
    """Re-evaluate the job's waiting and blocked tasks inside ``session``; return how
    many became runnable."""
    rows = session.exec(
        select(Task.id, Task.state, Task.dependency_action).where(Task.job_id == job_id)
    ).all()
    states = {
        tid: dependencies.ParentState(
            completed=state == TaskState.COMPLETED,
            dependency_action=action
            or (dependencies.SATISFY if state == TaskState.COMPLETED else None),
        )
        for tid, state, action in rows
    }
    index = dependencies.TaskIdIndex([tid for tid, _, _ in rows])
    held = session.exec(
        select(Task).where(Task.job_id == job_id, col(Task.deps_state).is_not(None))
    ).all()
    released = 0
    for task in held:
        verdict, parent = dependencies.status(task.id, task.spec.get("dependsOn"), states, index)
        new_state = None if verdict == "runnable" else verdict
        if (task.deps_state, task.deps_parent) != (new_state, parent):
            task.deps_state, task.deps_parent = new_state, parent
            session.add(task)
            released += new_state is None
    return released


def jobs_with_held_tasks(session: Session) -> list[str]:
    """Return the ids of jobs that have tasks held back by their dependencies."""
    return list(
        session.exec(select(Task.job_id).where(col(Task.deps_state).is_not(None)).distinct()).all()
    )
