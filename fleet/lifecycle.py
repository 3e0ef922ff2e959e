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
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete
from sqlmodel import col, select

from fleet import specs
from fleet.domain import JobState, TaskResult, TaskState
from fleet.errors import FleetError
from fleet.tables import Job, JobNode, Task

if TYPE_CHECKING:
    from fleet.controller import Controller
    from fleet.task_events import Attempt

log = logging.getLogger(__name__)

USER_TERMINATED = "the task was terminated by a user"


class Lifecycle:
    """The controller's handling of job states and task end requests."""

    def __init__(self, controller: Controller) -> None:
        self.c = controller

    def tick(self) -> None:
        """Advance every job that is not completed and every task end request."""
        now = time.time()
        with self.c.store.session() as s:
            jobs = list(s.exec(select(Job).where(col(Job.state) != JobState.COMPLETED)))
            requests = list(s.exec(select(Task).where(col(Task.end_request).is_not(None))))
        for job in jobs:
            self._job(job, now)
        for task in requests:
            self._task_request(task, now)

    # -- jobs -------------------------------------------------------------------------

    def _job(self, job: Job, now: float) -> None:
        running = self._attempts_of(job.id)
        if job.state in (JobState.ACTIVE, JobState.DISABLED):
            limit = specs.constraint_seconds(job.spec, "maxWallClockTime")
            if limit is not None and now - job.created_at >= limit:
                self.set_job_state(job.id, JobState.TERMINATING, reason="MaxWallClockTimeExpiry")
            elif job.state == JobState.ACTIVE and self._all_tasks_complete(job):
                self.set_job_state(job.id, JobState.TERMINATING, reason="AllTasksComplete")
        elif job.state == JobState.ENABLING:
            self.set_job_state(job.id, JobState.ACTIVE)
        elif job.state == JobState.TERMINATING:
            reason = f"the job was terminated ({job.termination_reason})"
            for att in running:
                self._end(att, reason=reason)
            if not running and self.c.job_tasks.releases_done(job):
                self.set_job_state(job.id, JobState.COMPLETED)
        elif job.state == JobState.DISABLING:
            for att in running:
                if job.disable_tasks == "requeue":
                    self._end(att, requeue=True)
                elif job.disable_tasks == "terminate":
                    self._end(att, reason="the job was disabled with --disable-tasks terminate")
            if not running:
                self.set_job_state(job.id, JobState.DISABLED)
        elif job.state == JobState.DELETING:
            for att in running:
                self._end(att, delete=True)
            if not running and self.c.job_tasks.releases_done(job):
                self._delete_job(job.id)

    def _attempts_of(self, job_id: str) -> list[Attempt]:
        return [
            a
            for per_node in self.c.inflight.values()
            for a in per_node.values()
            if a.job_id == job_id
        ]

    def _all_tasks_complete(self, job: Job) -> bool:
        if job.spec.get("onAllTasksComplete") != "terminatejob":
            return False
        with self.c.store.session() as s:
            left = s.exec(
                select(Task.pk).where(Task.job_id == job.id, col(Task.state) != TaskState.COMPLETED)
            ).first()
        return left is None

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

    def _task_request(self, task: Task, now: float) -> None:
        att = self.c.inflight.get(task.node_id or "", {}).get(f"{task.job_id}/{task.id}")
        if att is not None and att.attempt == task.attempt:
            if task.end_request == "delete":
                self._end(att, delete=True)
            else:
                self._end(att, reason=USER_TERMINATED)
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
            if row.state != TaskState.COMPLETED:
                row.state = TaskState.COMPLETED
                row.result = TaskResult.FAILURE
                row.failure_info = {
                    "category": "usererror",
                    "code": "TaskEnded",
                    "message": USER_TERMINATED,
                }
                row.end_time = row.state_changed_at = now
            row.end_request = None
            s.add(row)

    # -- ending attempts -------------------------------------------------------------------

    def _end(
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
                self.c.spawn_background(self._kill(att))

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
                        self.c.exited(link, att, item.get("exit") or {})


def job_action_state(action: str) -> tuple[JobState, Any] | None:
    """Return the job state (and reason) a task's exit condition ``jobAction`` asks for."""
    if action == "terminate":
        return JobState.TERMINATING, "TaskFailed"
    if action == "disable":
        return JobState.DISABLING, None
    return None
