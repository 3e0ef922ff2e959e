"""The controller's rules, pure: plain facts in, the changes to make out.

What an attempt's exit means for its task and job, what a job's state asks for each
turn, and what a requeue writes. No store, no I/O, no clock: the caller reads the facts,
passes the time, and applies the changes (fleet/task_events.py, fleet/lifecycle.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet import exit_conditions, outcomes, task_stats
from fleet.attempts import epoch
from fleet.domain import JobState, TaskResult, TaskState
from fleet.spec_fields import constraint_seconds


@dataclass(frozen=True)
class TaskFacts:
    """What the rules read of a task. ``usage``: its earlier attempts' resource totals
    (``task_stats.of_row`` of its row), None if none reported any."""

    spec: dict[str, Any]
    retry_count: int = 0
    requeue_count: int = 0
    start_time: float | None = None
    usage: task_stats.Usage | None = None


@dataclass(frozen=True)
class JobFacts:
    """What the rules read of a job."""

    state: str
    spec: dict[str, Any]
    created_at: float = 0.0
    termination_reason: str | None = None


@dataclass(frozen=True)
class Change:
    """The changes one decision makes: task fields to set (``delete_task`` to delete it
    instead), and job fields to set."""

    task: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)
    delete_task: bool = False


def requeued(task: TaskFacts, now: float) -> dict[str, Any]:
    """Return the task fields of an attempt put back in the queue through no fault of the
    task (node lost or rebooted, job disabled with requeue): ``requeueCount``, never
    ``retryCount``."""
    return {
        "state": TaskState.ACTIVE,
        "attempt_state": None,
        "node_id": None,
        "requeue_count": task.requeue_count + 1,
        "last_requeue_time": now,
        "state_changed_at": now,
        "end_request": None,
    }


def on_exit(
    task: TaskFacts,
    job: JobFacts | None,
    record: dict[str, Any],
    now: float,
    meaning: str | None = None,
    end_reason: str | None = None,
) -> Change:
    """Return what an attempt's exit ``record`` changes. ``meaning`` is what the controller
    flagged the attempt with before it exited: None (it ended by itself), ``terminate``
    (``end_reason`` says why), ``requeue`` or ``delete``. The resources the attempt used
    add to the task's totals, whatever its exit means (unless the task is deleted)."""
    if meaning == "delete":
        return Change(delete_task=True)
    usage = _usage_after(task, record, now)
    if meaning == "requeue":
        return Change(task=requeued(task, now) | usage)
    job_spec = job.spec if job is not None else {}
    outcome = outcomes.decide(
        record,
        retry_count=task.retry_count,
        task_spec=task.spec,
        job_spec=job_spec,
        terminated_reason=end_reason,
    )
    values: dict[str, Any] = {
        "attempt_state": None,
        "state_changed_at": now,
        "end_request": None,
        "exit_code": outcome.exit_code,
        "failure_info": outcome.failure_info,
        "start_time": epoch(record.get("startTime")) or task.start_time,
    } | usage
    if outcome.retry:
        values |= {
            "state": TaskState.ACTIVE,
            "retry_count": task.retry_count + 1,
            "last_retry_time": now,
            "node_id": None,
        }
        return Change(task=values)
    actions = exit_conditions.resolve(
        task.spec.get("exitConditions"),
        exit_code=outcome.exit_code,
        failure_code=(outcome.failure_info or {}).get("code"),
    )
    values |= {
        "state": TaskState.COMPLETED,
        "result": outcome.result,
        "end_time": epoch(record.get("endTime")) or now,
        "dependency_action": actions["dependencyAction"],
        "token_hash": None,  # a finished job manager can no longer call
    }
    return Change(task=values, job=_job_after_exit(task, job, outcome, actions, meaning, now))


def _usage_after(task: TaskFacts, record: dict[str, Any], now: float) -> dict[str, Any]:
    """Return the task's resource columns with the attempt's usage added (none if the
    record reports no usage)."""
    used = task_stats.from_record(record)
    if used is None:
        return {}
    total = used if task.usage is None else task.usage + used
    return total.columns() | {"stats_time": now}


def _job_after_exit(
    task: TaskFacts,
    job: JobFacts | None,
    outcome: outcomes.Outcome,
    actions: dict[str, str],
    meaning: str | None,
    now: float,
) -> dict[str, Any]:
    """Return the job fields a completed task changes: a job manager with
    ``killJobOnCompletion`` ends its job; a failure's exit condition may terminate or
    disable it (``onTaskFailure: performexitoptionsjobaction``)."""
    if job is None or job.state != JobState.ACTIVE:
        return {}
    if (task.spec.get("jobManager") or {}).get("killJobOnCompletion"):
        return _job_state(job, JobState.TERMINATING, "JMComplete", now)
    if (
        outcome.failure_info
        and meaning is None
        and job.spec.get("onTaskFailure") == "performexitoptionsjobaction"
    ):
        change = job_action_state(actions["jobAction"])
        if change is not None:
            state, reason = change
            values = _job_state(job, state, reason, now)
            values["disable_tasks"] = "requeue" if state == JobState.DISABLING else None
            return values
    return {}


def job_action_state(action: str) -> tuple[JobState, str | None] | None:
    """Return the job state (and reason) a task's exit condition ``jobAction`` asks for."""
    if action == "terminate":
        return JobState.TERMINATING, "TaskFailed"
    if action == "disable":
        return JobState.DISABLING, None
    return None


def _job_state(job: JobFacts, state: JobState, reason: str | None, now: float) -> dict[str, Any]:
    return {
        "state": state,
        "state_changed_at": now,
        "termination_reason": job.termination_reason or reason,
    }


# -- nodes ------------------------------------------------------------------------------


def on_return(status: str, was_started: bool) -> str:
    """Return what happens to an attempt in flight on a node that came back (and did not
    reboot: then everything it ran is requeued), by the agent's ``status`` of it:
    ``collect`` its exit, ``keep`` it running, ``requeue`` it (it had started: counts a
    requeue) or ``resend`` it (it never started: back to the queue uncounted)."""
    if status == "exited":
        return "collect"
    if status == "missing":
        return "requeue" if was_started else "resend"
    return "keep"


def node_lost(lost_for: float | None, grace: float) -> bool:
    """Return whether a node out of touch for ``lost_for`` seconds (None: it is not) is
    lost, so that its attempts are requeued elsewhere."""
    return lost_for is not None and lost_for >= grace


@dataclass(frozen=True)
class PrepEnd:
    """What a job preparation task's end means on its node: ``retry`` it, or record it
    ``succeeded``/``failed`` and ``start`` or ``requeue`` the tasks held for it."""

    retry: bool
    state: str | None = None
    held: str | None = None


def on_prep_end(record: dict[str, Any], retries: int, spec: dict[str, Any]) -> PrepEnd:
    """Return what a prep task's exit ``record`` means after ``retries`` retries. A failed
    one with ``waitForSuccess`` (the default) sends its node's held tasks back to the
    queue (the node is then avoided for the job); otherwise they start."""
    failure = outcomes.failure_info(record)
    if failure and outcomes.decide(record, retry_count=retries, task_spec=spec, job_spec={}).retry:
        return PrepEnd(retry=True)
    wait = spec.get("waitForSuccess", True)
    return PrepEnd(
        retry=False,
        state="failed" if failure else "succeeded",
        held="requeue" if failure and wait else "start",
    )


# -- jobs, each turn ---------------------------------------------------------------------


@dataclass(frozen=True)
class JobStep:
    """What a job's state asks for this turn: a new state (and its reason), and what to
    do with its running attempts: end them (``end``: terminate | requeue | delete, with
    ``reason``), or nothing. ``delete_job``: remove the job now."""

    state: JobState | None = None
    reason: str | None = None
    end: str | None = None
    end_reason: str | None = None
    delete_job: bool = False


def job_step(
    job: JobFacts,
    now: float,
    running: int,
    releases_done: bool,
    tasks_left: bool,
    disable_tasks: str | None = None,
) -> JobStep:
    """Return what ``job`` does this turn, given how many of its attempts are ``running``,
    whether its release tasks are done, and whether it has tasks not completed."""
    state = job.state
    if state in (JobState.ACTIVE, JobState.DISABLED):
        limit = constraint_seconds(job.spec, "maxWallClockTime")
        if limit is not None and now - job.created_at >= limit:
            return JobStep(state=JobState.TERMINATING, reason="MaxWallClockTimeExpiry")
        if (
            state == JobState.ACTIVE
            and job.spec.get("onAllTasksComplete") == "terminatejob"
            and not tasks_left
        ):
            return JobStep(state=JobState.TERMINATING, reason="AllTasksComplete")
        return JobStep()
    if state == JobState.ENABLING:
        return JobStep(state=JobState.ACTIVE)
    if state == JobState.TERMINATING:
        if running:
            why = f"the job was terminated ({job.termination_reason})"
            return JobStep(end="terminate", end_reason=why)
        return JobStep(state=JobState.COMPLETED) if releases_done else JobStep()
    if state == JobState.DISABLING:
        if running and disable_tasks == "requeue":
            return JobStep(end="requeue")
        if running and disable_tasks == "terminate":
            why = "the job was disabled with --disable-tasks terminate"
            return JobStep(end="terminate", end_reason=why)
        return JobStep() if running else JobStep(state=JobState.DISABLED)
    if state == JobState.DELETING:
        if running:
            return JobStep(end="delete")
        return JobStep(delete_job=releases_done)
    return JobStep()


def user_terminated(now: float, message: str) -> dict[str, Any]:
    """Return the task fields of a task a user terminated while it was not running."""
    return {
        "state": TaskState.COMPLETED,
        "result": TaskResult.FAILURE,
        "failure_info": {"category": "usererror", "code": "TaskEnded", "message": message},
        "end_time": now,
        "state_changed_at": now,
        "end_request": None,
    }
