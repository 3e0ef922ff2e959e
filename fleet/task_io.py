"""A task's files in motion: resource files staged into ``wd/`` before it starts, output
files saved to the controller's file store when it ends (both over SFTP).

Failures become the failureInfo codes Azure Batch users know:
``ResourceFileDownloadError`` (the task never starts) and ``FileUploadError``;
neither is retried.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from fleet import file_patterns, file_store
from fleet.errors import FleetError, RemoteError
from fleet.settings import Settings
from fleet.ssh import Connection

HTTP_TIMEOUT = 60.0


async def stage(
    conn: Connection,
    settings: Settings,
    task_root: str,
    resource_files: list[dict[str, Any]],
    into: str = "wd",
) -> None:
    """Copy every resource file under ``into`` (the working directory, or "" for the task
    directory itself, where a multi-instance task's common files go) on the node.

    Raises RemoteError with code ResourceFileDownloadError, naming the file."""
    wd = f"{task_root}/{into}".rstrip("/")
    for rf in resource_files:
        try:
            if "httpUrl" in rf:
                await _stage_url(conn, rf, wd)
            else:
                await _stage_store(conn, settings, rf, wd)
        except FleetError as exc:
            what = (
                rf.get("httpUrl")
                or f"file store {rf.get('autoStorageContainerName')}/{rf.get('blobPrefix', '')}"
            )
            raise RemoteError(
                f"cannot stage {what}: {exc.message}", code="ResourceFileDownloadError"
            ) from exc


async def _stage_store(conn: Connection, settings: Settings, rf: dict[str, Any], wd: str) -> None:
    container = rf["autoStorageContainerName"]
    prefix = rf.get("blobPrefix", "")
    entries = [
        e
        for e in file_store.list_files(settings, container)
        if e["name"][len(container) + 1 :].startswith(prefix)
    ]
    if not entries:
        raise RemoteError(f"no files under {container}/{prefix} in the file store")
    base = f"{wd}/{rf['filePath']}" if rf.get("filePath") else wd
    for entry in entries:
        rel = entry["name"][len(container) + 1 :]
        dest = f"{base}/{rel}"
        await conn.makedirs(posixpath.dirname(dest))
        await conn.upload_file(str(file_store.open_file(settings, entry["name"])), dest, _mode(rf))


async def _stage_url(conn: Connection, rf: dict[str, Any], wd: str) -> None:
    dest = f"{wd}/{rf['filePath']}"
    fd, tmp = tempfile.mkstemp(prefix="fleet-fetch-")
    os.close(fd)
    try:
        await asyncio.to_thread(_fetch, rf["httpUrl"], tmp)
        await conn.makedirs(posixpath.dirname(dest))
        await conn.upload_file(tmp, dest, _mode(rf))
    finally:
        os.unlink(tmp)


def _fetch(url: str, path: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as resp, open(path, "wb") as out:  # noqa: S310 (http/https checked in file_specs)
            shutil.copyfileobj(resp, out)
    except OSError as exc:
        raise RemoteError(f"download failed: {exc}") from exc


def _mode(rf: dict[str, Any]) -> int | None:
    return int(rf["fileMode"], 8) if rf.get("fileMode") else None


async def save_outputs(
    conn: Connection,
    settings: Settings,
    task_root: str,
    output_files: list[dict[str, Any]],
    succeeded: bool,
) -> list[str]:
    """Upload the files matching each output file's pattern, when its condition holds, to
    its path in the file store; return the stored names.

    A pattern without wildcards that matches one file is stored at ``path`` itself;
    otherwise matches keep their relative names under ``path``. Raises RemoteError
    with code FileUploadError."""
    wanted = [
        o
        for o in output_files
        if o["uploadOptions"]["uploadCondition"] == "taskcompletion"
        or (o["uploadOptions"]["uploadCondition"] == "tasksuccess") == succeeded
    ]
    if not wanted:
        return []
    try:
        files = [f.name for f in await conn.walk(task_root, recursive=True) if not f.is_directory]
        stored: list[str] = []
        for out in wanted:
            pattern = out["filePattern"]
            base = "" if pattern.startswith("../") else "wd/"
            pattern = pattern.removeprefix("../")
            names = [n[len(base) :] for n in files if n.startswith(base)]
            matches = file_patterns.select(pattern, names)
            single = len(matches) == 1 and not any(c in pattern for c in "*?[")
            for rel in matches:
                path = out["destination"]["container"]["path"]
                name = path if single else f"{path}/{rel}"
                stored.append(await _save(conn, settings, f"{task_root}/{base}{rel}", name))
        return stored
    except FleetError as exc:
        raise RemoteError(
            f"cannot save output files: {exc.message}", code="FileUploadError"
        ) from exc


async def _save(conn: Connection, settings: Settings, remote: str, name: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix="fleet-out-")
    os.close(fd)
    try:
        await conn.download(remote, tmp)
        return str(file_store.put_file(settings, Path(tmp), name)["name"])
    finally:
        os.unlink(tmp)
