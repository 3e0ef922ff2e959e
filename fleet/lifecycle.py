"""Job and task lifecycle carried out by the controller each turn of its loop.

Requests written by the CLI (terminate, disable, enable, delete a job; terminate or
delete a running task) and the job rules that fire by themselves
(``maxWallClockTime``, ``onAllTasksComplete``) become state changes here. Running
attempts that must end are flagged in memory and killed through their node's
agent; their exits, when they come, are settled by the controller with the flag's
meaning. Flags are derived again from the store every turn, so a restarted
controller carries on where the last one stopped.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete
from sqlmodel import col, select

from fleet import rules
from fleet.domain import JobState, TaskState
from fleet.errors import FleetError
from fleet.sql import Sql, Statement
from fleet.tables import Job, JobNode, Task

if TYPE_CHECKING:
    from fleet.attempts import Attempt
    from fleet.context import Context
    from fleet.node_link import NodeLink

log = logging.getLogger(__name__)

USER_TERMINATED = "the task was terminated by a user"

#: What a turn reads of the jobs that are not completed.
_OPEN_JOBS = Statement(
    "SELECT id, state, spec, created_at, termination_reason, disable_tasks FROM jobs"
    " WHERE state != :completed",
    json_columns=["spec"],
)
#: The tasks a user asked to terminate or delete (IN, not IS NOT NULL: SQLite's planner
#: scans the whole table for the latter).
_END_REQUESTS = Statement(
    "SELECT pk, job_id, id, node_id, attempt, attempt_state, end_request FROM tasks"
    " WHERE end_request IN :requests"
)


class Lifecycle:
    """The controller's handling of job states and task end requests."""

    def __init__(
        self,
        ctx: Context,
        releases_done: Callable[[str, dict[str, Any]], bool],
        exited: Callable[[NodeLink, Attempt, dict[str, Any]], None],
    ) -> None:
        self.c = ctx
        self._releases_done = releases_done  # the job's release tasks have all ended
        self._exited = exited  # an attempt found exited: collect and settle it

    def tick(self) -> None:
        """Advance every job that is not completed and every task end request."""
        now = time.time()
        with self.c.store.read() as s:
            db = Sql.of(s)
            jobs = db.rows(_OPEN_JOBS, {"completed": JobState.COMPLETED})
            requests = db.rows(_END_REQUESTS, {"requests": ["terminate", "delete"]})
        for job in jobs:
            self._job(job, now)
        for task in requests:
            self._task_request(task, now)

    # -- jobs -------------------------------------------------------------------------

    def _job(self, job: Any, now: float) -> None:
        running = self._attempts_of(job.id)
        step = rules.job_step(
            rules.JobFacts(job.state, job.spec, job.created_at, job.termination_reason),
            now,
            running=len(running),
            releases_done=not running
            and job.state in (JobState.TERMINATING, JobState.DELETING)
            and self._releases_done(job.id, job.spec),
            tasks_left=self._tasks_left(job),
            disable_tasks=job.disable_tasks,
        )
        for att in running if step.end else ():
            self.end(
                att,
                reason=step.end_reason,
                requeue=step.end == "requeue",
                delete=step.end == "delete",
            )
        if step.state is not None:
            self.set_job_state(job.id, step.state, reason=step.reason)
        if step.delete_job:
            self._delete_job(job.id)

    def _attempts_of(self, job_id: str) -> list[Attempt]:
        return [
            a
            for per_node in self.c.inflight.values()
            for a in per_node.values()
            if a.job_id == job_id
        ]

    def _tasks_left(self, job: Any) -> bool:
        if job.spec.get("onAllTasksComplete") != "terminatejob" or job.state != JobState.ACTIVE:
            return True  # not asked: no query
        with self.c.store.read() as s:
            left = s.exec(
                select(Task.pk).where(Task.job_id == job.id, col(Task.state) != TaskState.COMPLETED)
            ).first()
        return left is not None

    def set_job_state(self, job_id: str, state: JobState, reason: str | None = None) -> None:
        """Move a job to ``state``; ``reason`` becomes its terminationReason if none is set."""
        now = time.time()
        with self.c.store.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.state == state:
                return
            log.info(
                "job %s: %s -> %s%s", job_id, job.state, state, f" ({reason})" if reason else ""
            )
            job.state = state
            job.state_changed_at = now
            if reason and not job.termination_reason:
                job.termination_reason = reason
            if state == JobState.COMPLETED:
                job.end_time = now
            if state in (JobState.ACTIVE, JobState.DISABLED):
                job.disable_tasks = None
            s.add(job)
        self.c.wake()

    def _delete_job(self, job_id: str) -> None:
        with self.c.store.session() as s:
            s.exec(delete(Task).where(col(Task.job_id) == job_id))
            s.exec(delete(JobNode).where(col(JobNode.job_id) == job_id))
            job = s.get(Job, job_id)
            if job is not None:
                s.delete(job)
        shutil.rmtree(self.c.settings.task_files / job_id, ignore_errors=True)
        log.info("job %s deleted", job_id)

    # -- task requests -------------------------------------------------------------------

    def _task_request(self, task: Any, now: float) -> None:
        att = self.c.inflight.get(task.node_id or "", {}).get(f"{task.job_id}/{task.id}")
        if att is not None and att.attempt == task.attempt:
            if task.end_request == "delete":
                self.end(att, delete=True)
            else:
                self.end(att, reason=USER_TERMINATED)
            return
        if task.attempt_state is not None:
            return  # its attempt is not known yet (node reconnecting); try next turn
        with self.c.store.session() as s:
            row = s.get(Task, task.pk)
            if row is None or row.attempt_state is not None:
                return
            if row.end_request == "delete":
                s.delete(row)
                shutil.rmtree(self.c.settings.task_files / row.job_id / row.id, ignore_errors=True)
                return
            values = rules.user_terminated(now, USER_TERMINATED)
            for name, value in values.items() if row.state != TaskState.COMPLETED else ():
                setattr(row, name, value)
            row.end_request = None
            s.add(row)

    # -- ending attempts -------------------------------------------------------------------

    def end(
        self,
        att: Attempt,
        *,
        reason: str | None = None,
        requeue: bool = False,
        delete: bool = False,
    ) -> None:
        """Flag an attempt with what its exit will mean, and kill it (once)."""
        if delete:
            att.on_exit = "delete"
        elif requeue and att.on_exit is None:
            att.on_exit = "requeue"
        elif reason and att.on_exit is None:
            att.on_exit = "terminate"
            att.end_reason = reason
        if not att.kill_sent:
            link = self.c.links.get(att.node_id)
            if link is not None and link.ready and link.agent is not None:
                att.kill_sent = True
                self.c.spawn(self._kill(att))

    async def _kill(self, att: Attempt) -> None:
        link = self.c.links.get(att.node_id)
        if link is None or link.agent is None:
            att.kill_sent = False
            return
        try:
            result = await link.agent.request(
                "kill", key=att.key, taskDir=att.task_dir, attempt=att.attempt
            )
        except Exception as exc:  # tried again next turn
            log.warning(
                "task %s: kill failed: %s", att.key, exc, exc_info=not isinstance(exc, FleetError)
            )
            att.kill_sent = False
            return
        if not result.get("killed"):
            # Already gone: its exit record is on disk; fetch it.
            with contextlib.suppress(FleetError):
                status = await link.agent.request(
                    "status",
                    tasks=[{"key": att.key, "taskDir": att.task_dir, "attempt": att.attempt}],
                )
                for item in status.get("tasks", []):
                    if item.get("state") == "exited":
                        self._exited(link, att, item.get("exit") or {})
