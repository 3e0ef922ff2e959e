"""Starts, exits and requeues of attempts, applied to the store in one transaction per turn.

The controller gathers what its nodes report during a turn of its loop; :meth:`TaskEvents.apply`
writes all of it at once (each commit is an fsync with SQLite ``synchronous=FULL``,
so commits grow with turns, not with tasks). Completion is a conditional update on
(task, attempt): a late or repeated exit never completes a task twice.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlmodel import col, select

from fleet import environment, exit_conditions, outcomes
from fleet.domain import AttemptState, JobState, NodeState, TaskState
from fleet.lifecycle import job_action_state
from fleet.service import dependency_state
from fleet.tables import Job, Node, StaleAttempt, Task

if TYPE_CHECKING:
    from fleet.controller import Controller

DEPENDENCY_SWEEP_SECONDS = 2.0


@dataclass
class Attempt:
    """One dispatch of one task to one node, as the controller tracks it in memory."""

    pk: int
    job_id: str
    task_id: str
    attempt: int
    node_id: str
    slots: int
    collecting: bool = False
    output_files: list[dict[str, Any]] = field(default_factory=list)
    kill_sent: bool = False
    on_exit: str | None = None  # None, or what its exit means: terminate | requeue | delete
    end_reason: str | None = None

    @property
    def key(self) -> str:
        return f"{self.job_id}/{self.task_id}"

    @property
    def task_dir(self) -> str:
        return environment.task_dir(self.job_id, self.task_id)


@dataclass
class _Batch:
    started: list[tuple[Attempt, float]] = field(default_factory=list)
    finished: list[tuple[Attempt, dict[str, Any]]] = field(default_factory=list)
    back_to_queue: list[tuple[Attempt, bool]] = field(default_factory=list)  # (attempt, requeue?)


class TaskEvents:
    """What happened to attempts during one turn, and how it is written to the store."""

    def __init__(self, controller: Controller) -> None:
        self.c = controller
        self.started: list[tuple[Attempt, float]] = []
        self.finished: list[tuple[Attempt, dict[str, Any]]] = []
        self.back_to_queue: list[tuple[Attempt, bool]] = []
        self._dirty_jobs: set[str] = set()
        self._deps_swept_at = 0.0

    def apply(self) -> bool:
        """Apply every event gathered since the last turn in one transaction; return
        whether there was any."""
        ev = _Batch(self.started, self.finished, self.back_to_queue)
        self.started, self.finished, self.back_to_queue = [], [], []
        if not (ev.started or ev.finished or ev.back_to_queue):
            return False
        try:
            self._write(ev, time.time())
        except BaseException:
            # Nothing was committed: keep every event for the next turn.
            self.started[:0], self.finished[:0] = ev.started, ev.finished
            self.back_to_queue[:0] = ev.back_to_queue
            raise
        for att, _ in [*ev.finished, *ev.back_to_queue]:
            self.c.inflight.get(att.node_id, {}).pop(att.key, None)
        self._dirty_jobs.update(att.job_id for att, _ in ev.finished)
        for att, _ in [*ev.finished, *ev.back_to_queue]:
            self.c.multi.finish(att)
        return True

    def _write(self, ev: _Batch, now: float) -> None:
        touched_nodes: set[str] = set()
        with self.c.store.session() as s:
            for att, started_at in ev.started:
                s.exec(
                    update(Task)
                    .where(
                        col(Task.pk) == att.pk,
                        col(Task.attempt) == att.attempt,
                        col(Task.attempt_state) == AttemptState.DISPATCHING,
                    )
                    .values(
                        state=TaskState.RUNNING,
                        attempt_state=AttemptState.RUNNING,
                        start_time=started_at,
                        state_changed_at=now,
                    )
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
        job_ids, self._dirty_jobs = self._dirty_jobs, set()
        with self.c.store.session() as s:
            if sweep:
                self._deps_swept_at = now
                job_ids |= set(dependency_state.jobs_with_held_tasks(s))
            released = sum(dependency_state.refresh(s, job_id) for job_id in sorted(job_ids))
        if released:
            self.c.wake()

    def _complete(
        self, s: Any, task: Task | None, att: Attempt, record: dict[str, Any], now: float
    ) -> None:
        if task is None or task.attempt != att.attempt or task.state == TaskState.COMPLETED:
            return
        if att.on_exit == "delete":
            s.delete(task)
            shutil.rmtree(self.c.settings.task_files / task.job_id / task.id, ignore_errors=True)
            return
        task.attempt_state = None
        task.state_changed_at = now
        task.end_request = None
        if att.on_exit == "requeue":
            task.state = TaskState.ACTIVE
            task.node_id = None
            task.requeue_count += 1
            task.last_requeue_time = now
            s.add(task)
            return
        job = s.get(Job, task.job_id)
        job_spec = job.spec if job else {}
        outcome = outcomes.decide(
            record,
            retry_count=task.retry_count,
            task_spec=task.spec,
            job_spec=job_spec,
            terminated_reason=att.end_reason,
        )
        task.exit_code = outcome.exit_code
        task.failure_info = outcome.failure_info
        task.start_time = epoch(record.get("startTime")) or task.start_time
        if outcome.retry:
            task.state = TaskState.ACTIVE
            task.retry_count += 1
            task.last_retry_time = now
            task.node_id = None
            s.add(task)
            return
        task.state = TaskState.COMPLETED
        task.result = outcome.result
        task.end_time = epoch(record.get("endTime")) or now
        actions = exit_conditions.resolve(
            task.spec.get("exitConditions"),
            exit_code=outcome.exit_code,
            failure_code=(outcome.failure_info or {}).get("code"),
        )
        task.dependency_action = actions["dependencyAction"]
        task.token_hash = None  # a finished job manager can no longer call
        s.add(task)
        manager = task.spec.get("jobManager") or {}
        if manager.get("killJobOnCompletion") and job is not None and job.state == JobState.ACTIVE:
            job.state = JobState.TERMINATING
            job.state_changed_at = now
            job.termination_reason = job.termination_reason or "JMComplete"
            s.add(job)
        if (
            outcome.failure_info
            and job is not None
            and att.on_exit is None
            and job_spec.get("onTaskFailure") == "performexitoptionsjobaction"
        ):
            change = job_action_state(actions["jobAction"])
            if change is not None and job.state == JobState.ACTIVE:
                job.state, reason = change
                job.state_changed_at = now
                job.termination_reason = job.termination_reason or reason
                job.disable_tasks = "requeue" if job.state == JobState.DISABLING else None
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

    # -- scheduling and dispatch -------------------------------------------------------


def epoch(iso_time: Any) -> float | None:
    """Return an ISO 8601 time from an exit record as epoch seconds, or None."""
    if not isinstance(iso_time, str):
        return None
    try:
        return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
