"""A task's files in motion: resource files staged into ``wd/`` before it starts, output
files saved to the controller's file store when it ends (both over SFTP).

Failures become the failureInfo codes Azure Batch users know:
``ResourceFileDownloadError`` (the task never starts) and ``FileUploadError``;
neither is retried.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import posixpath
import tempfile
import time
import urllib.request
from typing import Any

from fleet import file_patterns, file_store, task_files
from fleet.errors import (
    STORAGE_ERRNOS,
    ControllerStorageError,
    FleetError,
    RemoteError,
    storage_error,
)
from fleet.settings import Settings
from fleet.ssh import Connection

log = logging.getLogger(__name__)

#: Resource files from an httpUrl are fetched by the controller, then copied to the node:
#: each read may wait HTTP_TIMEOUT s, the whole download HTTP_DEADLINE s and HTTP_MAX_BYTES.
HTTP_TIMEOUT = 60.0
HTTP_DEADLINE = float(os.environ.get("FLEET_HTTP_DEADLINE", 600))
HTTP_MAX_BYTES = int(os.environ.get("FLEET_HTTP_MAX_BYTES", 4 << 30))


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
    """Download ``url`` to ``path`` within HTTP_DEADLINE seconds and HTTP_MAX_BYTES bytes.
    Raises RemoteError for any failure (bad status line, refused, reset, too big, too slow)."""
    deadline = time.monotonic() + HTTP_DEADLINE
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as resp, open(path, "wb") as out:  # noqa: S310 (http/https checked in file_specs)
            while chunk := resp.read(1 << 20):
                size += len(chunk)
                if size > HTTP_MAX_BYTES:
                    raise RemoteError(f"larger than the {HTTP_MAX_BYTES >> 20} MiB limit")
                if time.monotonic() > deadline:
                    raise RemoteError(f"took longer than {HTTP_DEADLINE:.0f} s")
                out.write(chunk)
    except FleetError:
        raise
    except OSError as exc:
        if exc.errno in STORAGE_ERRNOS:
            raise storage_error(exc, "a downloaded resource file") from exc
        raise RemoteError(f"download failed: {exc}") from exc
    except (http.client.HTTPException, ValueError) as exc:
        raise RemoteError(f"download failed: {type(exc).__name__}: {exc}") from exc


def _mode(rf: dict[str, Any]) -> int | None:
    return int(rf["fileMode"], 8) if rf.get("fileMode") else None


async def save_outputs(
    conn: Connection,
    settings: Settings,
    root: str,
    task_dir: str,
    output_files: list[dict[str, Any]],
    succeeded: bool,
) -> list[str]:
    """Upload the files matching each output file's pattern, when its condition holds, to
    its path in the file store; return the stored names.

    Files are listed and read on the node without following any symlink (a task cannot
    point an output at a file of the login user's); symlinks and other non-regular files
    are skipped. A pattern without wildcards that matches one file is stored at ``path``
    itself; otherwise matches keep their relative names under ``path``. Raises
    RemoteError with code FileUploadError, or ControllerStorageError."""
    wanted = [
        o
        for o in output_files
        if o["uploadOptions"]["uploadCondition"] == "taskcompletion"
        or (o["uploadOptions"]["uploadCondition"] == "tasksuccess") == succeeded
    ]
    if not wanted:
        return []
    try:
        listed = await task_files.list_on_node(conn, root, task_dir, recursive=True)
        files = [f["name"] for f in listed if not f["isDirectory"]]
        wanted_files: list[tuple[str, str]] = []  # (name under the task dir, stored name)
        for out in wanted:
            pattern = out["filePattern"]
            base = "" if pattern.startswith("../") else "wd/"
            pattern = pattern.removeprefix("../")
            names = [n[len(base) :] for n in files if n.startswith(base)]
            matches = file_patterns.select(pattern, names)
            single = len(matches) == 1 and not any(c in pattern for c in "*?[")
            path = out["destination"]["container"]["path"]
            wanted_files += [
                (f"{base}{rel}", path if single else f"{path}/{rel}") for rel in matches
            ]
        return await _save(conn, settings, root, task_dir, wanted_files)
    except ControllerStorageError:
        raise  # the controller's disk, not the task's outputs: collection is retried
    except FleetError as exc:
        raise RemoteError(
            f"cannot save output files: {exc.message}", code="FileUploadError"
        ) from exc


#: Refusals of the node's read that mean "not a regular file inside the task dir": skipped.
_NOT_A_FILE = frozenset({"PathEscapesTaskDir", "NotARegularFile"})


#: Bytes of one save's output files held in memory; the files after stream to disk.
BUFFER_BYTES = 8 << 20


class _Output:
    """One output file on its way to the store: in memory while its save's budget
    lasts, else streamed into a staged file."""

    def __init__(self, outputs: _Outputs, name: str) -> None:
        self.outputs, self.name = outputs, name
        self.data = bytearray()
        self.staged: file_store.Staged | None = None

    def write(self, chunk: bytes) -> None:
        if self.staged is None and self.outputs.buffered + len(chunk) <= BUFFER_BYTES:
            self.data += chunk
            self.outputs.buffered += len(chunk)
            return
        if self.staged is None:
            self.staged = file_store.stage(self.outputs.settings, self.name)
            self.staged.write(bytes(self.data))
            self.outputs.buffered -= len(self.data)
            self.data.clear()
        self.staged.write(chunk)

    def close(self) -> None:
        if self.staged is not None:
            self.staged.close()


class _Outputs:
    """The output files of one save, in the order they came."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.buffered = 0
        self.files: list[_Output] = []

    def open(self, name: str) -> _Output:
        self.files.append(_Output(self, name))
        return self.files[-1]

    def items(self) -> list[tuple[str, bytes | bytearray | file_store.Staged]]:
        return [(f.name, f.staged or f.data) for f in self.files]

    def discard(self) -> None:
        for f in self.files:
            if f.staged is not None:
                f.staged.discard()


async def _save(
    conn: Connection, settings: Settings, root: str, task_dir: str, wanted: list[tuple[str, str]]
) -> list[str]:
    """Stream the files (name under the task dir, stored name) from the node in one
    command, then put them in the store together, off the event loop (it waits for the
    disk); return the stored names. Files that are not regular or sit behind a symlink
    are skipped, with a warning."""
    outputs = _Outputs(settings)
    try:
        rels = [rel for rel, _ in wanted]
        refused = await task_files.read_many_from_node(
            conn, root, task_dir, rels, lambda i: outputs.open(wanted[i][1])
        )
        for i, exc in refused.items():
            if exc.code not in _NOT_A_FILE:
                raise exc
            log.warning("%s/%s: not saved as an output file: %s", task_dir, rels[i], exc)
        return await asyncio.to_thread(file_store.put_many, settings, outputs.items())
    except OSError as exc:
        if exc.errno in STORAGE_ERRNOS:
            raise storage_error(exc, "an output file") from exc
        raise
    finally:
        outputs.discard()
