"""Starts, exits and requeues of attempts, applied to the store in one transaction per turn.

The controller gathers what its nodes report during a turn of its loop; :meth:`TaskEvents.apply`
writes all of it at once (each commit is an fsync with SQLite ``synchronous=FULL``,
so commits grow with turns, not with tasks). Completion is a conditional update on
(task, attempt): a late or repeated exit never completes a task twice.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Container, Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, update
from sqlmodel import col, select

from fleet import rules
from fleet.context import Context, Outbox
from fleet.domain import AttemptState, NodeState, TaskState
from fleet.service import dependency_state
from fleet.tables import Job, Node, StaleAttempt, Task

if TYPE_CHECKING:
    from fleet.attempts import Attempt

DEPENDENCY_SWEEP_SECONDS = 2.0

_TASKS = Task.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
#: An attempt's start, conditional on (task, attempt) still dispatching.
_STARTED = (
    update(_TASKS)
    .where(
        _TASKS.c.pk == bindparam("b_pk"),
        _TASKS.c.attempt == bindparam("b_attempt"),
        _TASKS.c.attempt_state == AttemptState.DISPATCHING,
    )
    .values(
        state=TaskState.RUNNING,
        attempt_state=AttemptState.RUNNING,
        start_time=bindparam("b_start"),
        state_changed_at=bindparam("b_now"),
    )
)


class TaskEvents:
    """What happened to attempts during one turn, and how it is written to the store."""

    def __init__(self, ctx: Context, run_finished: Callable[[Attempt], None]) -> None:
        self.c = ctx
        self._run_finished = run_finished  # a multi-instance run hears of its attempts' ends
        self._dirty_jobs: set[str] = set()
        self._deps_swept_at = 0.0

    def apply(self) -> bool:
        """Apply every event in the outbox in one transaction; return whether there was any."""
        ev, self.c.outbox = self.c.outbox, Outbox()
        if not ev:
            return False
        try:
            self._write(ev, time.time())
        except BaseException:
            # Nothing was committed: keep every event for the next turn.
            self.c.outbox.started[:0] = ev.started
            self.c.outbox.finished[:0] = ev.finished
            self.c.outbox.back_to_queue[:0] = ev.back_to_queue
            raise
        for att, _ in [*ev.finished, *ev.back_to_queue]:
            self.c.inflight.get(att.node_id, {}).pop(att.key, None)
        self._dirty_jobs.update(att.job_id for att, _ in ev.finished)
        for att, _ in [*ev.finished, *ev.back_to_queue]:
            self._run_finished(att)
        return True

    def _write(self, ev: Outbox, now: float) -> None:
        touched_nodes: set[str] = set()
        with self.c.store.session() as s:
            if ev.started:  # one statement, executed for every start at once
                s.execute(
                    _STARTED,
                    [
                        {
                            "b_pk": att.pk,
                            "b_attempt": att.attempt,
                            "b_start": started_at,
                            "b_now": now,
                        }
                        for att, started_at in ev.started
                    ],
                )
            rows = (
                {
                    t.pk: t
                    for t in s.exec(
                        select(Task).where(col(Task.pk).in_([att.pk for att, _ in ev.finished]))
                    )
                }
                if ev.finished
                else {}
            )
            for att, record in ev.finished:
                self._complete(s, rows.get(att.pk), att, record, now)
                touched_nodes.add(att.node_id)
            for att, requeue in ev.back_to_queue:
                values: dict[str, Any] = dict(
                    state=TaskState.ACTIVE,
                    attempt_state=None,
                    node_id=None,
                    pool_id=None,
                    task_root=None,
                    state_changed_at=now,
                )
                if requeue:
                    values.update(requeue_count=col(Task.requeue_count) + 1, last_requeue_time=now)
                    link = self.c.links.get(att.node_id)
                    if link is None or not link.ready:  # it may still run there: kill on return
                        s.merge(
                            StaleAttempt(
                                node_id=att.node_id,
                                key=att.key,
                                attempt=att.attempt,
                                task_dir=att.task_dir,
                            )
                        )
                s.exec(
                    update(Task)
                    .where(col(Task.pk) == att.pk, col(Task.attempt) == att.attempt)
                    .values(**values)
                )
                touched_nodes.add(att.node_id)
            done = {(a.node_id, a.key) for a, _ in [*ev.finished, *ev.back_to_queue]}
            self.update_node_busy(
                s, touched_nodes | {a.node_id for a, _ in ev.started}, now, leaving=done
            )

    def release_dependents(self) -> None:
        """Re-evaluate the held tasks of jobs whose tasks completed, and of every job every
        few seconds, so a task added just as its parent completed is never left waiting."""
        now = time.monotonic()
        sweep = now - self._deps_swept_at > DEPENDENCY_SWEEP_SECONDS
        if not (self._dirty_jobs or sweep):
            return
        dirty, self._dirty_jobs = self._dirty_jobs, set()
        if sweep:
            self._deps_swept_at = now
        with self.c.store.read() as s:  # only jobs with held tasks are worth reading whole
            job_ids = set(dependency_state.jobs_with_held_tasks(s, None if sweep else dirty))
        if not job_ids:
            return
        with self.c.store.session() as s:
            released = sum(dependency_state.refresh(s, job_id) for job_id in sorted(job_ids))
        if released:
            self.c.wake()

    def _complete(
        self, s: Any, task: Task | None, att: Attempt, record: dict[str, Any], now: float
    ) -> None:
        if task is None or task.attempt != att.attempt or task.state == TaskState.COMPLETED:
            return
        job = s.get(Job, task.job_id)
        change = rules.on_exit(
            rules.TaskFacts(task.spec, task.retry_count, task.requeue_count, task.start_time),
            None
            if job is None
            else rules.JobFacts(job.state, job.spec, job.created_at, job.termination_reason),
            record,
            now,
            meaning=att.on_exit,
            end_reason=att.end_reason,
        )
        if change.delete_task:
            s.delete(task)
            shutil.rmtree(self.c.settings.task_files / task.job_id / task.id, ignore_errors=True)
            return
        _set(task, change.task)
        s.add(task)
        if change.job and job is not None:
            _set(job, change.job)
            s.add(job)

    def update_node_busy(
        self,
        s: Any,
        node_ids: Iterable[str],
        now: float,
        leaving: Container[tuple[str, str]] = (),
    ) -> None:
        """Set each ready node ``running`` or ``idle`` by whether it has attempts in flight,
        not counting the (node, key) pairs in ``leaving``."""
        for node_id in node_ids:
            node = s.get(Node, node_id)
            link = self.c.links.get(node_id)
            if node is None or link is None or not link.ready:
                continue
            busy = any((node_id, key) not in leaving for key in self.c.inflight.get(node_id, {}))
            want = NodeState.RUNNING if busy else NodeState.IDLE
            if node.state in (NodeState.IDLE, NodeState.RUNNING) and node.state != want:
                node.state = want
                node.state_changed_at = now
                s.add(node)


def _set(row: Any, values: dict[str, Any]) -> None:
    for name, value in values.items():
        setattr(row, name, value)
