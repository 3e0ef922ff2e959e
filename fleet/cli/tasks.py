"""``fleet task``: add, list and show tasks, and download their files."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from fleet import specs, views
from fleet.cli.common import CURRENT, OutputOpt, emit, load_json_file
from fleet.errors import BadInput
from fleet.service import jobs as service

app = typer.Typer(help="Manage the tasks of a job.", no_args_is_help=True)
file_app = typer.Typer(help="Files of a task.", no_args_is_help=True)
app.add_typer(file_app, name="file")

COLUMNS = [
    ("ID", "id"),
    ("STATE", "state"),
    ("EXIT", "executionInfo.exitCode"),
    ("RESULT", "executionInfo.result"),
    ("NODE", "nodeInfo.nodeId"),
    ("RETRIES", "executionInfo.retryCount"),
    ("REQUEUES", "executionInfo.requeueCount"),
    ("COMMAND LINE", "commandLine"),
]


@app.command("create")
def create(
    job: Annotated[str, typer.Option("--job", help="Job id.")],
    task_id: Annotated[str | None, typer.Option("--id", help="Task id.")] = None,
    command_line: Annotated[
        str | None,
        typer.Option(
            "--command-line", help="Command line; split like a shell would, run without one."
        ),
    ] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="NAME=VALUE, repeatable.")] = None,
    json_file: Annotated[
        str | None,
        typer.Option("--json-file", help="A task object or a list of up to 100 ('-' for stdin)."),
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Add a task, or up to 100 from a JSON file, atomically."""
    if json_file:
        if task_id or command_line or env:
            raise BadInput(
                "--json-file cannot be combined with --id/--command-line/--env",
                code="ConflictingOptions",
            )
        data: Any = load_json_file(json_file)
    else:
        if not task_id or command_line is None:
            raise BadInput(
                "give --id and --command-line, or --json-file", code="MissingRequiredProperty"
            )
        data = {
            "id": task_id,
            "commandLine": command_line,
            "environmentSettings": specs.env_pairs(env or [], f"task {job}/{task_id}"),
        }
    rows = service.add_tasks(CURRENT.store, job, data)
    out = [views.task(r) for r in rows]
    emit(out[0] if len(out) == 1 and not json_file else out, output, COLUMNS)


@app.command("list")
def list_(
    job: Annotated[str, typer.Option("--job", help="Job id.")], output: OutputOpt = None
) -> None:
    """List a job's tasks."""
    emit([views.task(t) for t in service.list_tasks(CURRENT.store, job)], output, COLUMNS)


@app.command("show")
def show(
    job: Annotated[str, typer.Option("--job", help="Job id.")],
    task_id: Annotated[str, typer.Option("--id", help="Task id.")],
    output: OutputOpt = None,
) -> None:
    """Show one task with its execution information."""
    emit(views.task(service.show_task(CURRENT.store, job, task_id)), output)


@file_app.command("download")
def download(
    name: Annotated[str, typer.Argument(help="File name, e.g. stdout.txt.")],
    job: Annotated[str, typer.Option("--job", help="Job id.")],
    task_id: Annotated[str, typer.Option("--id", help="Task id.")],
    destination: Annotated[
        Path | None,
        typer.Option("--destination", help="Where to write it (default: standard output)."),
    ] = None,
) -> None:
    """Download a collected task file (stdout.txt, stderr.txt, exit.json)."""
    path = service.task_file(CURRENT.settings, CURRENT.store, job, task_id, name)
    if destination is None:
        with path.open("rb") as f:
            shutil.copyfileobj(f, sys.stdout.buffer)
        sys.stdout.flush()
    else:
        shutil.copyfile(path, destination)
