"""``fleet task``: add, list and show tasks, and download their files."""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from fleet import reads, specs, views
from fleet.cli.common import (
    CURRENT,
    FILE_COLUMNS,
    OutputFormat,
    OutputOpt,
    emit,
    emit_stream,
    fmt,
    lazy_module,
    read_text,
    write_whole,
)
from fleet.errors import BadInput, NotFound

if TYPE_CHECKING:
    from fleet import task_files
    from fleet.remote import Remote
    from fleet.service import tasks as service
else:
    service = lazy_module("fleet.service.tasks")
    task_files = lazy_module("fleet.task_files")

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


#: Above this many tasks, table output of ``create`` is a summary, not one row per task.
CREATE_TABLE_ROWS = 100


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
        typer.Option(
            "--json-file",
            help='A task object, a list of them, {"value": [...]}, or JSON Lines '
            "(one task per line); any number ('-' for stdin).",
        ),
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Add a task, or any number from a JSON file, atomically: all of them or none.

    Table output lists the tasks added, or for more than 100 says how many; -o json
    prints every task added."""
    if json_file:
        if task_id or command_line or env:
            raise BadInput(
                "--json-file cannot be combined with --id/--command-line/--env",
                code="ConflictingOptions",
            )
        data: Any = _load_tasks(json_file)
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
    if (remote := CURRENT.remote) is not None:
        out = _add_remote(remote, job, data)
        if fmt(output) == OutputFormat.TABLE and len(out) > CREATE_TABLE_ROWS:
            emit({"jobId": job, "tasksAdded": len(out)}, output)
        else:
            emit(out[0] if len(out) == 1 and not json_file else out, output, COLUMNS)
        return
    # Thousands of tasks make hundreds of thousands of small objects and no cyclic
    # garbage: the collector's passes over them cost about a fifth of the time.
    gc.disable()
    try:
        rows = service.add_tasks(CURRENT.store, job, data, limit=None)
        if fmt(output) == OutputFormat.TABLE and len(rows) > CREATE_TABLE_ROWS:
            emit({"jobId": job, "tasksAdded": len(rows)}, output)
            return
        out = [views.task(r) for r in rows]
        emit(out[0] if len(out) == 1 and not json_file else out, output, COLUMNS)
    finally:
        gc.enable()


def _load_tasks(path: str) -> Any:
    """Return the JSON in ``path``, or the list of values of its lines when it is JSON
    Lines. Raises BadInput ``InvalidJson`` naming the file (and the line)."""
    name = "standard input" if path == "-" else path
    text = read_text(path, code="InvalidJson")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise BadInput(
                f"{name} is not valid JSON: {exc}", code="InvalidJson", target=name
            ) from None
    except RecursionError:
        raise BadInput(
            f"{name} is not valid JSON: it is nested too deeply", code="InvalidJson", target=name
        ) from None
    values = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                values.append(json.loads(line))
            except (ValueError, RecursionError) as exc:
                raise BadInput(
                    f"{name} line {number} is not valid JSON: {exc}",
                    code="InvalidJson",
                    target=name,
                    details={"line": number},
                ) from None
    return values


@app.command("list")
def list_(
    job: Annotated[str, typer.Option("--job", help="Job id.")], output: OutputOpt = None
) -> None:
    """List a job's tasks."""
    if (remote := CURRENT.remote) is not None:
        emit_stream(remote.list(f"/jobs/{job}/tasks"), output, COLUMNS)
        return
    emit_stream((views.task(t) for t in reads.iter_tasks(CURRENT.reader, job)), output, COLUMNS)


@app.command("show")
def show(
    job: Annotated[str, typer.Option("--job", help="Job id.")],
    task_id: Annotated[str, typer.Option("--id", help="Task id.")],
    output: OutputOpt = None,
) -> None:
    """Show one task with its execution information."""
    if (remote := CURRENT.remote) is not None:
        emit(remote.get(f"/jobs/{job}/tasks/{task_id}"), output)
        return
    emit(views.task(reads.show_task(CURRENT.reader, job, task_id)), output)


def _add_remote(remote: Remote, job: str, data: Any) -> list[dict[str, Any]]:
    """Add tasks through the API, 100 per call (its limit): each call adds its good tasks,
    so a bad one stops the rest with its error, saying how many were added before."""
    items = specs.parse_task_collection(data, job, limit=None)  # checked whole first
    added: list[str] = []
    for i in range(0, len(items), specs.MAX_TASKS_PER_ADD):
        chunk = items[i : i + specs.MAX_TASKS_PER_ADD]
        body = {"value": [specs.request_fields("task", t) for t in chunk]}
        results = remote.call("POST", f"/jobs/{job}/addtaskcollection", body=body)["value"]
        added += [r["taskId"] for r in results if r.get("status") == "success"]
        failed = next((r for r in results if r.get("status") != "success"), None)
        if failed is not None:
            error = failed.get("error") or {}
            message = (error.get("message") or {}).get("value", "refused")
            raise BadInput(
                f"{message} ({len(added)} of {len(items)} tasks were added before it)",
                code=error.get("code", "TaskRejected"),
                target=f"task {job}/{failed.get('taskId')}",
            )
    if len(added) == 1:
        return [remote.get(f"/jobs/{job}/tasks/{added[0]}")]
    wanted = set(added)
    return [t for t in remote.list(f"/jobs/{job}/tasks") if t["id"] in wanted]


TaskOpt = Annotated[str, typer.Option("--id", help="Task id.")]
JobOpt = Annotated[str, typer.Option("--job", help="Job id.")]


@app.command("terminate")
def terminate(job: JobOpt, task_id: TaskOpt, output: OutputOpt = None) -> None:
    """End a task; it completes with failure TaskEnded and is not retried."""
    if (remote := CURRENT.remote) is not None:
        remote.call("POST", f"/jobs/{job}/tasks/{task_id}/terminate")
        emit(remote.get(f"/jobs/{job}/tasks/{task_id}"), output)
        return
    emit(views.task(service.terminate_task(CURRENT.store, job, task_id)), output)


@app.command("reactivate")
def reactivate(job: JobOpt, task_id: TaskOpt, output: OutputOpt = None) -> None:
    """Run a failed task again, with its counters reset."""
    if (remote := CURRENT.remote) is not None:
        remote.call("POST", f"/jobs/{job}/tasks/{task_id}/reactivate")
        emit(remote.get(f"/jobs/{job}/tasks/{task_id}"), output)
        return
    emit(views.task(service.reactivate_task(CURRENT.store, job, task_id)), output)


@app.command("delete")
def delete(job: JobOpt, task_id: TaskOpt, output: OutputOpt = None) -> None:
    """Delete a task and its collected files (a running task is killed first)."""
    if (remote := CURRENT.remote) is not None:
        remote.call("DELETE", f"/jobs/{job}/tasks/{task_id}")
        try:
            remote.get(f"/jobs/{job}/tasks/{task_id}")
            gone = False  # running: the controller kills it, then deletes it
        except NotFound:
            gone = True
    else:
        gone = service.delete_task(CURRENT.settings, CURRENT.store, job, task_id)
    emit(
        {"id": task_id, "jobId": job, "deleted": gone, "state": "deleted" if gone else "deleting"},
        output,
    )


@app.command("set")
def set_(
    job: JobOpt,
    task_id: TaskOpt,
    max_wall_clock_time: Annotated[
        str | None,
        typer.Option(
            "--max-wall-clock-time", help="ISO 8601 duration from task start, e.g. PT10M."
        ),
    ] = None,
    max_task_retry_count: Annotated[
        int | None,
        typer.Option("--max-task-retry-count", help="Retries after the first try (-1 no limit)."),
    ] = None,
    retention_time: Annotated[
        str | None,
        typer.Option(
            "--retention-time", help="How long the task dir is kept on the node, e.g. P7D."
        ),
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Change a task's constraints."""
    current = dict(service.show_task(CURRENT.store, job, task_id).spec.get("constraints") or {})
    for name, value in (
        ("maxWallClockTime", max_wall_clock_time),
        ("maxTaskRetryCount", max_task_retry_count),
        ("retentionTime", retention_time),
    ):
        if value is not None:
            current[name] = value
    emit(views.task(service.set_task(CURRENT.store, job, task_id, current)), output)


@app.command("subtasks")
def subtasks(job: JobOpt, task_id: TaskOpt, output: OutputOpt = None) -> None:
    """List the instances of a multi-instance task (0 is the primary)."""
    rows = [views.subtask(r) for r in service.list_subtasks(CURRENT.store, job, task_id)]
    emit(
        rows,
        output,
        [
            ("ID", "id"),
            ("NODE", "nodeInfo.nodeId"),
            ("STATE", "state"),
            ("EXIT", "exitCode"),
            ("START", "startTime"),
            ("END", "endTime"),
        ],
    )


@file_app.command("list")
def file_list(
    job: JobOpt,
    task_id: TaskOpt,
    recursive: Annotated[
        bool, typer.Option("--recursive", help="Descend into subdirectories.")
    ] = False,
    output: OutputOpt = None,
) -> None:
    """List the files under a task's directory on its node."""
    if (remote := CURRENT.remote) is not None:
        query = {"recursive": "true"} if recursive else {}
        rows = list(remote.list(f"/jobs/{job}/tasks/{task_id}/files", query))
    else:
        rows = task_files.list_files(CURRENT.settings, CURRENT.reader, job, task_id, recursive)
    emit(
        rows,
        output,
        FILE_COLUMNS,
    )


@file_app.command("download")
def download(
    name: Annotated[
        str, typer.Argument(help="Path under the task directory, e.g. stdout.txt or wd/out.csv.")
    ],
    job: JobOpt,
    task_id: TaskOpt,
    destination: Annotated[
        Path | None,
        typer.Option("--destination", help="Where to write it (default: standard output)."),
    ] = None,
    start: Annotated[int | None, typer.Option("--start", help="First byte (0-based).")] = None,
    end: Annotated[int | None, typer.Option("--end", help="Last byte, inclusive.")] = None,
    output: OutputOpt = None,
) -> None:
    """Download a task file (whole, or a byte range) from its node or the collected copies,
    streamed in chunks.

    With --destination, -o json prints {name, destination, bytes}; the file appears
    whole or not at all."""
    if (remote := CURRENT.remote) is not None:
        path = f"/jobs/{job}/tasks/{task_id}/files/{name}"

        def fetch(f: BinaryIO) -> int:
            return remote.download(path, f, start, end)
    else:
        settings, db = CURRENT.settings, CURRENT.reader

        def fetch(f: BinaryIO) -> int:
            return task_files.download(settings, db, job, task_id, name, f, start, end)

    if destination is None:
        fetch(sys.stdout.buffer)
        sys.stdout.flush()
        return
    written = write_whole(destination, fetch)
    if fmt(output) == OutputFormat.JSON:
        emit({"name": name, "destination": str(destination), "bytes": written}, output)
