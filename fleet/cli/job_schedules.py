"""``fleet job-schedule`` (alias ``fleet schedule``): recurring jobs."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleet import reads, views
from fleet.cli.common import CURRENT, OutputOpt, emit, lazy_module, load_json_file
from fleet.errors import EXIT_NOT_FOUND, BadInput, NotFound

if TYPE_CHECKING:
    from fleet.service import job_schedules as service
    from fleet.store import Store
    from fleet.tables import JobSchedule
else:
    service = lazy_module("fleet.service.job_schedules")

app = typer.Typer(help="Manage job schedules (recurring jobs).", no_args_is_help=True)

COLUMNS = [
    ("ID", "id"),
    ("STATE", "state"),
    ("POOL", "jobSpecification.poolInfo.poolId"),
    ("NEXT RUN", "executionInfo.nextRunTime"),
    ("RECENT JOB", "executionInfo.recentJob.id"),
]


@app.command("create")
def create(
    schedule_id: Annotated[str | None, typer.Option("--id", help="Schedule id.")] = None,
    pool: Annotated[str | None, typer.Option("--pool", help="Pool its jobs run on.")] = None,
    every: Annotated[
        str | None, typer.Option("--every", help="Recurrence, ISO 8601 duration, e.g. PT1H.")
    ] = None,
    cron: Annotated[
        str | None, typer.Option("--cron", help="Five-field cron expression, e.g. '0 2 * * *'.")
    ] = None,
    time_zone: Annotated[
        str | None, typer.Option("--time-zone", help="IANA time zone of --cron (default UTC).")
    ] = None,
    command_line: Annotated[
        str | None,
        typer.Option("--job-manager-command-line", help="The job manager task of each job."),
    ] = None,
    json_file: Annotated[
        str | None,
        typer.Option("--json-file", help="Azure Batch job schedule JSON ('-' for stdin)."),
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Create a job schedule: a job from its jobSpecification at every occurrence."""
    flags = (schedule_id, pool, every, cron, time_zone, command_line)
    if json_file:
        if any(f is not None for f in flags):
            raise BadInput(
                "--json-file cannot be combined with the flag form", code="ConflictingOptions"
            )
        data: dict[str, Any] = load_json_file(json_file)
    else:
        if not schedule_id or not pool or not command_line:
            raise BadInput(
                "give --id, --pool and --job-manager-command-line (with --every or --cron), "
                "or --json-file",
                code="MissingRequiredProperty",
            )
        timing: dict[str, Any] = {}
        if every is not None:
            timing["recurrenceInterval"] = every
        if cron is not None:
            timing["cron"] = cron
        if time_zone is not None:
            timing["timeZone"] = time_zone
        data = {
            "id": schedule_id,
            "schedule": timing,
            "jobSpecification": {
                "poolInfo": {"poolId": pool},
                "jobManagerTask": {"commandLine": command_line},
            },
        }
    if (remote := CURRENT.remote) is not None:
        remote.call("POST", "/jobschedules", body=data)
        emit(remote.get(f"/jobschedules/{data.get('id')}"), output)
        return
    emit(views.job_schedule(service.create_schedule(CURRENT.store, data)), output)


def _act(
    schedule_id: str,
    local: Callable[[Store, str], JobSchedule],
    suffix: str,
    method: str = "POST",
) -> dict[str, Any]:
    """Do one schedule operation locally or through the API; return the schedule after."""
    if (remote := CURRENT.remote) is None:
        return views.job_schedule(local(CURRENT.store, schedule_id))
    path = f"/jobschedules/{schedule_id}"
    if method == "DELETE":  # it may be gone by the time it could be read again
        schedule = remote.get(path)
        remote.call(method, path)
        return schedule | {"state": "deleting"}
    remote.call(method, path + suffix)
    return remote.get(path)


@app.command("list")
def list_(output: OutputOpt = None) -> None:
    """List job schedules."""
    if (remote := CURRENT.remote) is not None:
        emit(list(remote.list("/jobschedules")), output, COLUMNS)
        return
    rows = reads.list_schedules(CURRENT.reader)
    emit([views.job_schedule(r) for r in rows], output, COLUMNS)


@app.command("show")
def show(schedule_id: str, output: OutputOpt = None) -> None:
    """Show a job schedule (its JSON is valid ``create --json-file`` input)."""
    if (remote := CURRENT.remote) is not None:
        emit(remote.get(f"/jobschedules/{schedule_id}"), output)
        return
    emit(views.job_schedule(reads.show_schedule(CURRENT.reader, schedule_id)), output)


@app.command("exists")
def exists(schedule_id: str, output: OutputOpt = None) -> None:
    """Exit 0 if the job schedule exists, 3 if not."""
    try:
        if (remote := CURRENT.remote) is not None:
            remote.call("HEAD", f"/jobschedules/{schedule_id}")
        else:
            reads.show_schedule(CURRENT.reader, schedule_id)
        found = True
    except NotFound:
        found = False
    emit({"id": schedule_id, "exists": found}, output)
    if not found:
        raise typer.Exit(EXIT_NOT_FOUND)


@app.command("set")
def set_(
    schedule_id: str,
    json_file: Annotated[
        str | None,
        typer.Option(
            "--json-file", help="JSON with schedule, jobSpecification, metadata, displayName."
        ),
    ] = None,
    every: Annotated[str | None, typer.Option("--every", help="New recurrence.")] = None,
    cron: Annotated[str | None, typer.Option("--cron", help="New cron expression.")] = None,
    time_zone: Annotated[
        str | None, typer.Option("--time-zone", help="Time zone of --cron.")
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Change a schedule or its job specification, from the next occurrence on."""
    changes: dict[str, Any] = load_json_file(json_file) if json_file else {}
    if every is not None or cron is not None or time_zone is not None:
        timing = dict(_current_timing(schedule_id))
        for name in ("recurrenceInterval", "cron", "timeZone"):
            timing.pop(name, None)
        for name, value in (("recurrenceInterval", every), ("cron", cron), ("timeZone", time_zone)):
            if value is not None:
                timing[name] = value
        changes["schedule"] = timing
    if not changes:
        raise BadInput(
            "nothing to change: give --json-file, --every or --cron", code="MissingRequiredProperty"
        )
    if (remote := CURRENT.remote) is not None:
        remote.call("PATCH", f"/jobschedules/{schedule_id}", body=changes)
        emit(remote.get(f"/jobschedules/{schedule_id}"), output)
        return
    emit(views.job_schedule(service.set_schedule(CURRENT.store, schedule_id, changes)), output)


def _current_timing(schedule_id: str) -> dict[str, Any]:
    if (remote := CURRENT.remote) is not None:
        return dict(remote.get(f"/jobschedules/{schedule_id}")["schedule"])
    return dict(service.show_schedule(CURRENT.store, schedule_id).spec["schedule"])


@app.command("disable")
def disable(schedule_id: str, output: OutputOpt = None) -> None:
    """Stop creating jobs until enabled (occurrences meanwhile are recorded as skipped)."""
    emit(_act(schedule_id, service.disable_schedule, "/disable"), output)


@app.command("enable")
def enable(schedule_id: str, output: OutputOpt = None) -> None:
    """Create jobs again from the next occurrence."""
    emit(_act(schedule_id, service.enable_schedule, "/enable"), output)


@app.command("terminate")
def terminate(schedule_id: str, output: OutputOpt = None) -> None:
    """End the schedule and terminate its active job."""
    emit(_act(schedule_id, service.terminate_schedule, "/terminate"), output)


@app.command("delete")
def delete(schedule_id: str, output: OutputOpt = None) -> None:
    """Delete the schedule and every job it created."""
    emit(_act(schedule_id, service.delete_schedule, "", "DELETE"), output)
