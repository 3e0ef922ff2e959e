"""Starts, exits and requeues of attempts, applied to the store in one transaction per turn.

The controller gathers what its nodes report during a turn of its loop;
:meth:`TaskEvents.write` writes all of it in the turn's transaction, with the placements
that follow (each commit is an fsync with SQLite ``synchronous=FULL``, so commits grow
with turns, not with tasks). Completion is a conditional update on (task, attempt): a
late or repeated exit never completes a task twice.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fleet import metrics, rules, sql, task_stats
from fleet.context import Context, Outbox
from fleet.domain import AttemptState, NodeState, TaskState
from fleet.service import dependency_state
from fleet.sql import Sql, Statement
from fleet.tables import StaleAttempt

if TYPE_CHECKING:
    from sqlmodel import Session

    from fleet.attempts import Attempt

DEPENDENCY_SWEEP_SECONDS = 2.0

#: What :func:`rules.on_exit` reads of a task.
_FACTS = Statement(
    "SELECT pk, job_id, id, attempt, state, spec, retry_count, requeue_count, start_time,"
    " stats_time, user_cpu_seconds, kernel_cpu_seconds, wall_clock_seconds, read_blocks,"
    " write_blocks, max_rss_bytes FROM tasks WHERE pk IN :pks",  # task_stats.COLUMNS
    json_columns=["spec"],
)
_JOB_FACTS = Statement(
    "SELECT id, state, spec, created_at, termination_reason FROM jobs WHERE id IN :ids",
    json_columns=["spec"],
)
_NODE_STATES = Statement("SELECT id, state FROM nodes WHERE id IN :ids")
_DROP_OUTPUTS = Statement("DELETE FROM task_outputs WHERE task_pk = :b_pk")
_ADD_OUTPUTS = Statement(
    "INSERT INTO task_outputs (task_pk, name, data, modified)"
    " VALUES (:task_pk, :name, :data, :modified)"
)
_DELETE_ATTEMPT = Statement("DELETE FROM tasks WHERE pk = :b_pk AND attempt = :b_attempt")
#: The jobs that have tasks held back by their dependencies (among some, or all).
_HELD_JOBS = Statement("SELECT DISTINCT job_id FROM tasks WHERE deps_state IS NOT NULL")
_HELD_AMONG = Statement(
    "SELECT DISTINCT job_id FROM tasks WHERE job_id IN :ids AND deps_state IS NOT NULL"
)
#: A ready node's move between ``idle`` and ``running``, conditional on its state.
_NODE_BUSY = Statement(
    "UPDATE nodes SET state = :b_state, state_changed_at = :b_now"
    " WHERE id = :b_id AND state = :b_old"
)
#: An attempt back to the queue, as a requeue (counted) or not (a spawn to try again).
_BACK_TO_QUEUE_SET = (
    "UPDATE tasks SET state = :active, attempt_state = NULL, node_id = NULL, pool_id = NULL,"
    " task_root = NULL, state_changed_at = :now"
)
_BACK_TO_QUEUE_WHERE = " WHERE pk = :b_pk AND attempt = :b_attempt"
_BACK_TO_QUEUE = Statement(_BACK_TO_QUEUE_SET + _BACK_TO_QUEUE_WHERE)
_REQUEUED = Statement(
    _BACK_TO_QUEUE_SET
    + ", requeue_count = requeue_count + 1, last_requeue_time = :now"
    + _BACK_TO_QUEUE_WHERE
)
#: An attempt's start, conditional on (task, attempt) still dispatching.
_STARTED = Statement(
    "UPDATE tasks SET state = :running, attempt_state = :running, start_time = :b_start,"
    " state_changed_at = :b_now"
    " WHERE pk = :b_pk AND attempt = :b_attempt AND attempt_state = :dispatching"
)


class TaskEvents:
    """What happened to attempts during one turn, and how it is written to the store."""

    def __init__(self, ctx: Context, run_finished: Callable[[Attempt], None]) -> None:
        self.c = ctx
        self._run_finished = run_finished  # a multi-instance run hears of its attempts' ends
        self._dirty_jobs: set[str] = set()
        self._deps_swept_at = 0.0

    def take(self) -> Outbox:
        """Take the events gathered so far (new ones gather in a fresh outbox)."""
        ev, self.c.outbox = self.c.outbox, Outbox()
        return ev

    def write(self, s: Session, ev: Outbox, now: float) -> set[str]:
        """Write the events ``ev`` in the transaction of ``s`` and take the attempts that
        ended out of flight; return the nodes they touched (whose busy state may change).
        If the transaction then fails, :meth:`restore` them; once it commits, call
        :meth:`committed`."""
        touched = {att.node_id for att, _ in [*ev.started, *ev.finished, *ev.back_to_queue]}
        if not ev:
            return touched
        db = Sql.of(s)
        # An attempt that started and finished in the same turn (a short task) is
        # written once, by its completion, which takes the start time along.
        ending = {(att.pk, att.attempt) for att, _ in ev.finished}
        starts = {(att.pk, att.attempt): at for att, at in ev.started}
        states = {"running": TaskState.RUNNING, "dispatching": AttemptState.DISPATCHING}
        db.executemany(  # one statement, executed for every start at once
            _STARTED,
            [
                {"b_pk": att.pk, "b_attempt": att.attempt, "b_start": at, "b_now": now} | states
                for att, at in ev.started
                if (att.pk, att.attempt) not in ending
            ],
        )
        if ev.finished:
            self._complete(db, ev.finished, ev.outputs, starts, now)
        for att, requeue in ev.back_to_queue:
            db.execute(
                _REQUEUED if requeue else _BACK_TO_QUEUE,
                {"b_pk": att.pk, "b_attempt": att.attempt, "active": TaskState.ACTIVE, "now": now},
            )
            link = self.c.links.get(att.node_id)
            if requeue and (link is None or not link.ready):  # it may still run there
                s.merge(
                    StaleAttempt(
                        node_id=att.node_id, key=att.key, attempt=att.attempt, task_dir=att.task_dir
                    )
                )  # killed when the node returns
        for att, _ in [*ev.finished, *ev.back_to_queue]:
            self.c.inflight.get(att.node_id, {}).pop(att.key, None)
            self._run_finished(att)  # before the turn places the task again
        self._dirty_jobs.update(att.job_id for att, _ in ev.finished)
        return touched

    def restore(self, ev: Outbox) -> None:
        """Undo :meth:`write` after its transaction failed: nothing was committed, so every
        event is kept for the next turn and its attempts are in flight again (the
        instances of a multi-instance run that ended stay ended)."""
        for att, _ in [*ev.finished, *ev.back_to_queue]:
            self.c.inflight.setdefault(att.node_id, {})[att.key] = att
        self.c.outbox.started[:0] = ev.started
        self.c.outbox.finished[:0] = ev.finished
        self.c.outbox.back_to_queue[:0] = ev.back_to_queue
        self.c.outbox.outputs = ev.outputs | self.c.outbox.outputs

    def committed(self, ev: Outbox) -> None:
        """Count the completions of a committed :meth:`write` (how long each took)."""
        committed = time.time()
        for att, _ in ev.finished:
            if att.exit_seen_at:
                metrics.TASK_COMPLETION.add(committed - att.exit_seen_at)

    def _complete(
        self,
        db: Sql,
        finished: list[tuple[Attempt, dict[str, Any]]],
        outputs: dict[tuple[int, int], dict[str, bytes]],
        starts: dict[tuple[int, int], float],
        now: float,
    ) -> None:
        """Write the exits of ``finished`` attempts: each task's fields decided by
        :func:`rules.on_exit`, as one executemany per shape of change, and the small
        ``outputs`` that came with them (replacing an earlier attempt's). ``starts``: the
        start times of attempts whose start was not written."""
        tasks = {row.pk: row for row in db.rows(_FACTS, {"pks": [a.pk for a, _ in finished]})}
        jobs = {
            row.id: rules.JobFacts(row.state, row.spec, row.created_at, row.termination_reason)
            for row in db.rows(_JOB_FACTS, {"ids": list({t.job_id for t in tasks.values()})})
        }
        updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        deleted: list[dict[str, Any]] = []
        replaced: list[dict[str, Any]] = []  # outputs of an earlier attempt to drop
        files: list[dict[str, Any]] = []
        for att, record in finished:
            task = tasks.get(att.pk)
            if task is None or task.attempt != att.attempt or task.state == TaskState.COMPLETED:
                continue
            job = jobs.get(task.job_id)
            change = rules.on_exit(
                rules.TaskFacts(
                    task.spec,
                    task.retry_count,
                    task.requeue_count,
                    starts.get((att.pk, att.attempt), task.start_time),
                    task_stats.of_row(task),
                ),
                job,
                record,
                now,
                meaning=att.on_exit,
                end_reason=att.end_reason,
            )
            key = {"b_pk": att.pk, "b_attempt": att.attempt}
            if change.delete_task:
                deleted.append(key)
                shutil.rmtree(
                    self.c.settings.task_files / task.job_id / task.id, ignore_errors=True
                )
                continue
            updates.setdefault(tuple(sorted(change.task)), []).append(key | change.task)
            if att.attempt > 1:
                replaced.append({"b_pk": att.pk})
            for name, data in outputs.get((att.pk, att.attempt), {}).items():
                files.append({"task_pk": att.pk, "name": name, "data": data, "modified": now})
            if change.job and job is not None:  # rare: a job manager's end, an exit's jobAction
                job_update = sql.update("jobs", tuple(sorted(change.job)), "id = :b_id")
                db.execute(job_update, change.job | {"b_id": task.job_id})
                jobs[task.job_id] = replace(
                    job,
                    state=change.job.get("state", job.state),
                    termination_reason=change.job.get("termination_reason", job.termination_reason),
                )
        for names, params in updates.items():
            db.executemany(
                sql.update("tasks", names, "pk = :b_pk AND attempt = :b_attempt"), params
            )
        db.executemany(_DROP_OUTPUTS, replaced)
        db.executemany(_ADD_OUTPUTS, files)
        db.executemany(_DELETE_ATTEMPT, deleted)

    def dependents_due(self) -> bool:
        """Whether :meth:`release_dependents` has anything to look at this turn."""
        return bool(self._dirty_jobs) or (
            time.monotonic() - self._deps_swept_at > DEPENDENCY_SWEEP_SECONDS
        )

    def release_dependents(self, s: Session) -> None:
        """Re-evaluate, in the transaction of ``s``, the held tasks of jobs whose tasks
        completed, and of every job every few seconds, so a task added just as its parent
        completed is never left waiting."""
        if not self.dependents_due():
            return
        dirty, self._dirty_jobs = self._dirty_jobs, set()
        now = time.monotonic()
        sweep = now - self._deps_swept_at > DEPENDENCY_SWEEP_SECONDS
        if sweep:
            self._deps_swept_at = now
        db = Sql.of(s)  # only jobs with held tasks are worth reading whole
        rows = db.rows(_HELD_JOBS) if sweep else db.rows(_HELD_AMONG, {"ids": list(dirty)})
        released = sum(
            dependency_state.refresh(s, job_id) for job_id in sorted({r.job_id for r in rows})
        )
        if released:
            self.c.wake()

    def update_node_busy(
        self,
        db: Sql,
        node_ids: Iterable[str],
        now: float,
    ) -> None:
        """Set each ready node ``running`` or ``idle`` by whether it has attempts in flight."""
        ready = [n for n in node_ids if (link := self.c.links.get(n)) is not None and link.ready]
        if not ready:
            return
        changed = []
        for node_id, state in db.rows(_NODE_STATES, {"ids": ready}):
            busy = bool(self.c.inflight.get(node_id))
            want = NodeState.RUNNING if busy else NodeState.IDLE
            if state in (NodeState.IDLE, NodeState.RUNNING) and state != want:
                changed.append({"b_id": node_id, "b_old": state, "b_state": want})
        db.executemany(_NODE_BUSY, [c | {"b_now": now} for c in changed])
