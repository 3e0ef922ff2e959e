"""``fleet job``: create, list, show and wait for jobs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleet import reads, views
from fleet.cli.common import (
    CURRENT,
    OutputOpt,
    emit,
    lazy_module,
    load_json_file,
    progress_enabled,
    stderr,
)
from fleet.domain import JobState
from fleet.errors import EXIT_FAILED, BadInput, TimedOut

if TYPE_CHECKING:
    from fleet.reads import Reader
    from fleet.remote import Remote
    from fleet.service import jobs as service
else:
    service = lazy_module("fleet.service.jobs")

app = typer.Typer(help="Manage jobs.", no_args_is_help=True)

COLUMNS = [
    ("ID", "id"),
    ("STATE", "state"),
    ("POOL", "executionInfo.poolId"),
    ("PRIORITY", "priority"),
    ("CREATED", "creationTime"),
]


@app.command("create")
def create(
    job_id: Annotated[str | None, typer.Option("--id", help="Job id.")] = None,
    pool: Annotated[str | None, typer.Option("--pool", help="Pool to run on.")] = None,
    priority: Annotated[
        int | None, typer.Option("--priority", help="-1000..1000; higher runs first.")
    ] = None,
    json_file: Annotated[
        str | None, typer.Option("--json-file", help="Azure Batch job JSON ('-' for stdin).")
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Create a job on a pool."""
    if json_file:
        if job_id or pool or priority is not None:
            raise BadInput(
                "--json-file cannot be combined with --id/--pool/--priority",
                code="ConflictingOptions",
            )
        data: dict[str, Any] = load_json_file(json_file)
    else:
        if not job_id or not pool:
            raise BadInput("give --id and --pool, or --json-file", code="MissingRequiredProperty")
        data = {"id": job_id, "poolInfo": {"poolId": pool}}
        if priority is not None:
            data["priority"] = priority
    if (remote := CURRENT.remote) is not None:
        remote.call("POST", "/jobs", body=data)
        emit(_remote_job(remote, str(data.get("id"))), output)
        return
    job = service.create_job(CURRENT.store, data, CURRENT.settings)
    emit(views.job(job), output)


def _remote_job(remote: Remote, job_id: str) -> dict[str, Any]:
    """Return a remote job as the local write commands print it (no counts or stats)."""
    job = remote.get(f"/jobs/{job_id}")
    return {k: v for k, v in job.items() if k not in ("taskCounts", "stats")}


@app.command("terminate")
def terminate(
    job_id: str,
    reason: Annotated[
        str | None,
        typer.Option("--reason", help="terminationReason to record (default UserTerminate)."),
    ] = None,
    output: OutputOpt = None,
) -> None:
    """End a job: running tasks are killed, then it completes."""
    if (remote := CURRENT.remote) is not None:
        body = {"terminateReason": reason} if reason else None
        remote.call("POST", f"/jobs/{job_id}/terminate", body=body)
        emit(_remote_job(remote, job_id), output)
        return
    emit(views.job(service.terminate_job(CURRENT.store, job_id, reason)), output)


@app.command("disable")
def disable(
    job_id: str,
    disable_tasks: Annotated[
        str,
        typer.Option(
            "--disable-tasks", help="What happens to running tasks: requeue, terminate or wait."
        ),
    ],
    output: OutputOpt = None,
) -> None:
    """Stop scheduling a job's tasks."""
    if (remote := CURRENT.remote) is not None:
        remote.call("POST", f"/jobs/{job_id}/disable", body={"disableTasks": disable_tasks})
        emit(_remote_job(remote, job_id), output)
        return
    emit(views.job(service.disable_job(CURRENT.store, job_id, disable_tasks)), output)


@app.command("enable")
def enable(job_id: str, output: OutputOpt = None) -> None:
    """Schedule a disabled job's tasks again."""
    if (remote := CURRENT.remote) is not None:
        remote.call("POST", f"/jobs/{job_id}/enable")
        emit(_remote_job(remote, job_id), output)
        return
    emit(views.job(service.enable_job(CURRENT.store, job_id)), output)


@app.command("delete")
def delete(job_id: str, output: OutputOpt = None) -> None:
    """Delete a job, its tasks and their collected files (running tasks are killed)."""
    if (remote := CURRENT.remote) is not None:
        job = _remote_job(remote, job_id)
        remote.call("DELETE", f"/jobs/{job_id}")
        emit(job | {"state": JobState.DELETING}, output)
        return
    emit(views.job(service.delete_job(CURRENT.store, job_id)), output)


@app.command("set")
def set_(
    job_id: str,
    priority: Annotated[int | None, typer.Option("--priority", help="-1000..1000.")] = None,
    max_wall_clock_time: Annotated[
        str | None,
        typer.Option(
            "--max-wall-clock-time", help="ISO 8601 duration from job creation, e.g. PT2H."
        ),
    ] = None,
    max_task_retry_count: Annotated[
        int | None,
        typer.Option("--max-task-retry-count", help="Default retries of its tasks (-1 no limit)."),
    ] = None,
    max_parallel_tasks: Annotated[
        int | None,
        typer.Option(
            "--max-parallel-tasks", help="Tasks of the job running at once (-1 no limit)."
        ),
    ] = None,
    on_all_tasks_complete: Annotated[
        str | None, typer.Option("--on-all-tasks-complete", help="noaction or terminatejob.")
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Change a job's priority, constraints, parallelism or completion action."""
    changes: dict[str, Any] = {}
    if priority is not None:
        changes["priority"] = priority
    if max_parallel_tasks is not None:
        changes["maxParallelTasks"] = max_parallel_tasks
    if on_all_tasks_complete is not None:
        changes["onAllTasksComplete"] = on_all_tasks_complete
    if max_wall_clock_time is not None or max_task_retry_count is not None:
        current = service.show_job(CURRENT.store, job_id).spec.get("constraints") or {}
        constraints = dict(current)
        if max_wall_clock_time is not None:
            constraints["maxWallClockTime"] = max_wall_clock_time
        if max_task_retry_count is not None:
            constraints["maxTaskRetryCount"] = max_task_retry_count
        changes["constraints"] = constraints
    if not changes:
        raise BadInput(
            "nothing to change: give at least one option", code="MissingRequiredProperty"
        )
    emit(views.job(service.set_job(CURRENT.store, job_id, changes)), output)


@app.command("list")
def list_(
    job_schedule: Annotated[
        str | None, typer.Option("--job-schedule", help="Only the jobs this schedule created.")
    ] = None,
    output: OutputOpt = None,
) -> None:
    """List jobs."""
    if (remote := CURRENT.remote) is not None:
        path = f"/jobschedules/{job_schedule}/jobs" if job_schedule else "/jobs"
        emit(list(remote.list(path)), output, COLUMNS)
        return
    jobs = reads.list_jobs(CURRENT.reader, job_schedule)  # NotFound: unknown schedule
    emit([views.job(j) for j in jobs], output, COLUMNS)


@app.command("show")
def show(job_id: str, output: OutputOpt = None) -> None:
    """Show one job with its task counts and its tasks' resource statistics."""
    if (remote := CURRENT.remote) is not None:
        emit(remote.get(f"/jobs/{job_id}"), output)
        return
    emit(views.job(*reads.show_job_with_stats(CURRENT.reader, job_id)), output)


@app.command("task-counts")
def task_counts(job_id: str, output: OutputOpt = None) -> None:
    """Count the job's tasks: active, running, completed, succeeded, failed."""
    if (remote := CURRENT.remote) is not None:
        emit(remote.call("GET", f"/jobs/{job_id}/taskcounts")["taskCounts"], output)
        return
    emit(reads.task_counts(CURRENT.reader, job_id), output)


@app.command("wait")
def wait(
    job_id: str,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up after this many seconds (exit 5).")
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Wait until every task of the job has completed, or the job itself has.

    Exit 0 when every task succeeded, 1 when any failed or the job ended with tasks
    left undone, 5 on timeout."""
    remote = CURRENT.remote
    db = None if remote is not None else CURRENT.reader  # no ORM, no write lock
    deadline = None if timeout is None else time.monotonic() + timeout
    status = stderr.status("", spinner="dots") if progress_enabled(output) else None
    if status is not None:
        status.start()
    try:
        while True:
            job, counts = _job_and_counts(db, remote, job_id)
            total = counts["active"] + counts["running"] + counts["completed"]
            if status is not None:
                status.update(
                    f"job {job_id} ({job.state}): {counts['completed']}/{total} "
                    f"completed, {counts['running']} running, {counts['failed']} failed"
                )
            settled = (
                counts["active"] == counts["running"] == 0 and job.state != JobState.TERMINATING
            )
            if job.state == JobState.COMPLETED or settled:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimedOut(
                    f"{counts['completed']} of {total} tasks completed after {timeout} s",
                    target=f"job {job_id}",
                    details=counts,
                )
            time.sleep(0.1)
    finally:
        if status is not None:
            status.stop()
    emit(
        {
            "id": job_id,
            "state": job.state,
            "terminateReason": job.termination_reason,
            "taskCounts": counts,
        },
        output,
    )
    if counts["failed"] or counts["active"] or counts["running"]:
        raise typer.Exit(EXIT_FAILED)


@dataclass(frozen=True)
class _JobState:
    state: str
    termination_reason: str | None


def _job_and_counts(
    db: Reader | None, remote: Remote | None, job_id: str
) -> tuple[_JobState, dict[str, int]]:
    """Return a job's state and task counts, from the database or the remote API."""
    if remote is not None:
        job = remote.get(f"/jobs/{job_id}")
        reason = (job.get("executionInfo") or {}).get("terminateReason")
        return _JobState(job["state"], reason), job["taskCounts"]
    assert db is not None
    row, counts = reads.show_job_with_counts(db, job_id)
    return _JobState(row.state, row.termination_reason), counts


@app.command("prep-release-status")
def prep_release_status(job_id: str, output: OutputOpt = None) -> None:
    """Show the job's preparation and release task on each node that ran them."""
    emit(
        service.prep_release_status(CURRENT.store, job_id),
        output,
        [
            ("NODE", "nodeId"),
            ("PREP", "jobPreparationTaskExecutionInfo.state"),
            ("PREP EXIT", "jobPreparationTaskExecutionInfo.exitCode"),
            ("PREP RETRIES", "jobPreparationTaskExecutionInfo.retryCount"),
            ("RELEASE", "jobReleaseTaskExecutionInfo.state"),
            ("RELEASE EXIT", "jobReleaseTaskExecutionInfo.exitCode"),
        ],
    )
