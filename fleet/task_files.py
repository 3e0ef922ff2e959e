"""Files of a task: listed and read on its node over SFTP, else from the controller's copies.

Every name is resolved inside the task directory, symlinks included; a name that
escapes it is refused. When the node cannot be reached (or the task directory is
gone), the copies the controller collected when the task ended (stdout.txt,
stderr.txt, exit.json) still answer.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet import file_patterns, targets, views
from fleet.errors import BadInput, FleetError, NotFound, RemoteError
from fleet.service.tasks import COLLECTED_FILES, show_task
from fleet.settings import Settings
from fleet.ssh import Connection
from fleet.store import Store
from fleet.tables import Task


@dataclass(frozen=True)
class Where:
    """A task and where its files are."""

    task: Task
    collected: Path


def _locate(settings: Settings, store: Store, job_id: str, task_id: str) -> Where:
    task = show_task(store, job_id, task_id)
    return Where(task, settings.task_files / job_id / task_id)


def _entry(
    name: str, is_dir: bool, size: int, mtime: float | None, mode: int | None
) -> dict[str, Any]:
    props: dict[str, Any] = {"contentLength": 0 if is_dir else size}
    if mtime is not None:
        props["lastModified"] = views.iso(mtime)
    if mode is not None:
        props["fileMode"] = oct(mode & 0o7777)
    return {"name": name, "isDirectory": is_dir, "properties": props}


def list_files(
    settings: Settings, store: Store, job_id: str, task_id: str, recursive: bool = False
) -> list[dict[str, Any]]:
    """Return the task's files as Azure NodeFile objects (``name``, ``isDirectory``,
    ``properties``). Raises NotFound for an unknown task, or one never placed and
    with nothing collected."""
    where = _locate(settings, store, job_id, task_id)
    if where.task.node_id and where.task.task_root:
        try:
            return asyncio.run(_list_remote(store, where.task, recursive))
        except (RemoteError, NotFound):
            pass  # node gone or dir swept: fall back to what was collected
    if not where.collected.is_dir():
        raise NotFound(
            "the task has no files yet", code="FileNotFound", target=f"task {job_id}/{task_id}"
        )
    return [
        _entry(p.name, False, p.stat().st_size, p.stat().st_mtime, p.stat().st_mode)
        for p in sorted(where.collected.iterdir())
        if p.name in COLLECTED_FILES
    ]


async def _list_remote(store: Store, task: Task, recursive: bool) -> list[dict[str, Any]]:
    assert task.node_id and task.task_root
    conn = await Connection.open(targets.for_host(store, task.node_id))
    try:
        return [
            _entry(f.name, f.is_directory, f.size, f.mtime, f.mode)
            for f in await conn.walk(task.task_root, recursive)
        ]
    finally:
        await conn.close()


def read_file(
    settings: Settings,
    store: Store,
    job_id: str,
    task_id: str,
    name: str,
    start: int | None = None,
    end: int | None = None,
) -> bytes:
    """Return the bytes ``start``..``end`` (inclusive) of a file under the task directory.

    Raises BadInput for a name that escapes the task directory or a bad range, and
    NotFound when the file exists neither on the node nor among the collected copies."""
    rel = file_patterns.safe_relpath(name, target=f"task {job_id}/{task_id}", field="name")
    if (start is not None and start < 0) or (end is not None and (end < 0 or end < (start or 0))):
        raise BadInput(
            f"bad byte range {start}-{end}", code="InvalidRange", target=f"task {job_id}/{task_id}"
        )
    where = _locate(settings, store, job_id, task_id)
    if where.task.node_id and where.task.task_root:
        try:
            return asyncio.run(_read_remote(store, where.task, rel, start or 0, end))
        except RemoteError as exc:
            if exc.code == "PathEscapesTaskDir":
                raise BadInput(
                    str(exc.message), code=exc.code, target=f"task {job_id}/{task_id}", field="name"
                ) from exc
    local = where.collected / rel
    if rel in COLLECTED_FILES and local.is_file():
        with local.open("rb") as f:
            f.seek(start or 0)
            return f.read(-1 if end is None else end - (start or 0) + 1)
    raise NotFound(
        f"no file {rel!r} for this task", code="FileNotFound", target=f"task {job_id}/{task_id}"
    )


async def _read_remote(store: Store, task: Task, rel: str, start: int, end: int | None) -> bytes:
    assert task.node_id and task.task_root
    conn = await Connection.open(targets.for_host(store, task.node_id))
    try:
        base = await conn.realpath(task.task_root)
        real = await conn.realpath(f"{task.task_root}/{rel}")
        if real != base and not real.startswith(base.rstrip("/") + "/"):
            raise RemoteError(
                f"{rel} resolves outside the task directory", code="PathEscapesTaskDir"
            )
        return await conn.read_range(real, start, end)
    except FleetError:
        raise
    except OSError as exc:
        raise RemoteError(os.strerror(exc.errno or 0)) from exc
    finally:
        await conn.close()
