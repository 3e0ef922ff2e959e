"""``fleet job``: create, list, show and wait for jobs."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from fleet import views
from fleet.cli.common import CURRENT, OutputOpt, emit, load_json_file, progress_enabled, stderr
from fleet.errors import EXIT_FAILED, BadInput, TimedOut
from fleet.service import jobs as service

app = typer.Typer(help="Manage jobs.", no_args_is_help=True)

COLUMNS = [
    ("ID", "id"),
    ("STATE", "state"),
    ("POOL", "poolInfo.poolId"),
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
    job = service.create_job(CURRENT.store, data)
    emit(views.job(job), output)


@app.command("list")
def list_(output: OutputOpt = None) -> None:
    """List jobs."""
    emit([views.job(j) for j in service.list_jobs(CURRENT.store)], output, COLUMNS)


@app.command("show")
def show(job_id: str, output: OutputOpt = None) -> None:
    """Show one job with its task counts."""
    store = CURRENT.store
    emit(views.job(service.show_job(store, job_id), service.task_counts(store, job_id)), output)


@app.command("task-counts")
def task_counts(job_id: str, output: OutputOpt = None) -> None:
    """Count the job's tasks: active, running, completed, succeeded, failed."""
    emit(service.task_counts(CURRENT.store, job_id), output)


@app.command("wait")
def wait(
    job_id: str,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up after this many seconds (exit 5).")
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Wait until every task of the job has completed.

    Exit 0 when all succeeded, 1 when any failed, 5 on timeout."""
    store = CURRENT.store
    deadline = None if timeout is None else time.monotonic() + timeout
    show_progress = progress_enabled(output)
    status = stderr.status("", spinner="dots") if show_progress else None
    if status is not None:
        status.start()
    try:
        while True:
            counts = service.task_counts(store, job_id)
            total = sum(counts[k] for k in ("active", "running", "completed"))
            if status is not None:
                status.update(
                    f"job {job_id}: {counts['completed']}/{total} completed, "
                    f"{counts['running']} running, {counts['failed']} failed"
                )
            if counts["active"] == 0 and counts["running"] == 0:
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
    emit({"id": job_id, "taskCounts": counts}, output)
    if counts["failed"]:
        raise typer.Exit(EXIT_FAILED)
