"""Files of a task: listed and streamed from its node without following links, else from
the controller's copies.

On the node, the agent file runs as a one-shot command (``read``, ``read-many`` or
``list``, see docs/agent-protocol.md "Task files") that walks from the node root one
component at a time and never follows a symlink, so a task swapping a directory for a
link cannot point a download outside its directory; the bytes stream over the SSH
channel in bounded chunks. When the node cannot be reached (or the task directory is
gone), the copies the controller collected when the task ended (stdout.txt,
stderr.txt, exit.json) still answer.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from fleet import environment, file_patterns, reads, targets, views
from fleet.agent_client import install_agent
from fleet.environment import COLLECTED_FILES
from fleet.errors import BadInput, FleetError, NotFound, RemoteError
from fleet.reads import Reader, Row
from fleet.settings import Settings
from fleet.ssh import Connection, Process

CHUNK = 1 << 20
#: Codes of the node's file commands that mean the request itself is bad (exit 2).
BAD_REQUEST_CODES = {"PathEscapesTaskDir", "BadPath", "NotARegularFile", "InvalidRange"}


@dataclass(frozen=True)
class Where:
    """A task and where its files are."""

    task: Row
    collected: Path

    @property
    def target(self) -> str:
        return f"task {self.task.job_id}/{self.task.id}"


def _locate(settings: Settings, db: Reader, job_id: str, task_id: str) -> Where:
    task = reads.show_task(db, job_id, task_id)
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


def _on_node(task: Row) -> tuple[str, str] | None:
    """Return (node root, task dir relative to it) of a task placed on a node, or None."""
    if not task.node_id or not task.task_root:
        return None
    task_dir = environment.task_dir(task.job_id, task.id)
    root = task.task_root.removesuffix(f"/{task_dir}")
    return (root, task_dir) if root != task.task_root else None


def _bad_request(where: Where, exc: RemoteError, field: str) -> BadInput:
    return BadInput(exc.message, code=exc.code, target=where.target, field=field)


def list_files(
    settings: Settings, db: Reader, job_id: str, task_id: str, recursive: bool = False
) -> list[dict[str, Any]]:
    """Return the task's files as Azure NodeFile objects (``name``, ``isDirectory``,
    ``properties``); symlinks are listed, never followed. Raises NotFound for an unknown
    task, or one never placed and with nothing collected; BadInput
    ``PathEscapesTaskDir`` when the task directory itself was replaced by a link."""
    where = _locate(settings, db, job_id, task_id)
    if (placed := _on_node(where.task)) is not None:
        try:
            return asyncio.run(_list_remote(db, where.task, *placed, recursive))
        except RemoteError as exc:
            if exc.code in BAD_REQUEST_CODES:
                raise _bad_request(where, exc, "taskDir") from exc
            # node gone or dir swept: fall back to what was collected
    kept = reads.task_outputs(db, where.task.pk)
    entries = {name: _entry(name, False, len(data), at, None) for name, (data, at) in kept.items()}
    if where.collected.is_dir():
        for p in where.collected.iterdir():
            if p.name in COLLECTED_FILES and p.name not in entries:
                st = p.stat()
                entries[p.name] = _entry(p.name, False, st.st_size, st.st_mtime, st.st_mode)
    if not entries:
        raise NotFound("the task has no files yet", code="FileNotFound", target=where.target)
    return [entries[name] for name in sorted(entries)]


async def _connect(db: Reader, host_id: str) -> Connection:
    """Open a connection to a node, expecting the host key recorded for it."""
    found = reads.hosts_with_keys(db, [host_id])
    targets.check_found([host_id], {host.id for host, _ in found})
    return await Connection.open(targets.target(*found[0]))


async def _list_remote(
    db: Reader, task: Row, root: str, task_dir: str, recursive: bool
) -> list[dict[str, Any]]:
    conn = await _connect(db, task.node_id)
    try:
        return [
            _entry(f["name"], bool(f["isDirectory"]), f["size"], f.get("mtime"), f.get("mode"))
            for f in await list_on_node(conn, root, task_dir, recursive)
        ]
    finally:
        await conn.close()


async def list_on_node(
    conn: Connection, root: str, task_dir: str, recursive: bool
) -> list[dict[str, Any]]:
    """Return the entries under ``task_dir`` of the node root ``root`` as the node lists
    them (``name``, ``isDirectory``, ``size``, ``mtime``, ``mode``; symlinks listed, never
    followed). Raises RemoteError (FileNotFound, PathEscapesTaskDir, ...)."""
    proc = await _file_command(conn, root, ["list", task_dir, *(["--recursive"] * recursive)])
    files = (await _header(conn, proc)).get("files")
    if not isinstance(files, list):
        raise RemoteError("the node's file list is malformed", target=_node(conn))
    return files


def download(
    settings: Settings,
    db: Reader,
    job_id: str,
    task_id: str,
    name: str,
    sink: BinaryIO,
    start: int | None = None,
    end: int | None = None,
) -> int:
    """Write bytes ``start``..``end`` (inclusive) of a file under the task directory to
    ``sink`` in chunks of at most 1 MiB; return how many were written. Bytes past the
    end of the file are not there to write.

    Raises BadInput for a name that escapes the task directory (``PathEscapesTaskDir``
    for a symlink at any part of the path), a file that is not regular or a bad range;
    NotFound when the file exists neither on the node nor among the collected copies;
    RemoteError if the node fails in the middle of the stream."""
    target = f"task {job_id}/{task_id}"
    rel = file_patterns.safe_relpath(name, target=target, field="name")
    if (start is not None and start < 0) or (end is not None and (end < 0 or end < (start or 0))):
        raise BadInput(f"bad byte range {start}-{end}", code="InvalidRange", target=target)
    where = _locate(settings, db, job_id, task_id)
    if (placed := _on_node(where.task)) is not None:
        try:
            return asyncio.run(_stream_remote(db, where.task, *placed, rel, start, end, sink))
        except RemoteError as exc:
            if exc.code in BAD_REQUEST_CODES:
                raise _bad_request(where, exc, "name") from exc
            if exc.details.get("written"):
                raise  # part of it went out already: no fallback can mend that
    kept = reads.task_outputs(db, where.task.pk) if rel in COLLECTED_FILES else {}
    if rel in kept:
        return _copy_local(io.BytesIO(kept[rel][0]), sink, start or 0, end)
    local = where.collected / rel
    if rel in COLLECTED_FILES and local.is_file() and not local.is_symlink():
        with local.open("rb") as f:
            return _copy_local(f, sink, start or 0, end)
    raise NotFound(f"no file {rel!r} for this task", code="FileNotFound", target=target)


def _copy_local(f: BinaryIO, sink: BinaryIO, start: int, end: int | None) -> int:
    written = 0
    f.seek(start)
    while end is None or start + written <= end:
        want = CHUNK if end is None else min(CHUNK, end - start - written + 1)
        if not (chunk := f.read(want)):
            break
        sink.write(chunk)
        written += len(chunk)
    return written


async def _stream_remote(
    db: Reader,
    task: Row,
    root: str,
    task_dir: str,
    rel: str,
    start: int | None,
    end: int | None,
    sink: BinaryIO,
) -> int:
    conn = await _connect(db, task.node_id)
    try:
        return await stream_from_node(conn, root, task_dir, rel, sink, start, end)
    finally:
        await conn.close()


async def stream_from_node(
    conn: Connection,
    root: str,
    task_dir: str,
    rel: str,
    sink: BinaryIO,
    start: int | None = None,
    end: int | None = None,
) -> int:
    """Write bytes ``start``..``end`` of ``task_dir/rel`` on the node to ``sink`` in
    bounded chunks, following no symlink on the way; return how many were written.
    Raises RemoteError (PathEscapesTaskDir, NotARegularFile, FileNotFound, ...), with
    ``details["written"]`` set when it fails midway."""
    written = 0
    try:
        bounds = [str(start or 0), *([str(end)] if end is not None else [])]
        proc = await _file_command(conn, root, ["read", task_dir, rel, *bounds])
        await _header(conn, proc)
        while chunk := await proc.read(CHUNK):
            sink.write(chunk)
            written += len(chunk)
        if await proc.wait() != 0:
            raise RemoteError(f"reading {rel} on the node failed midway", target=_node(conn))
        return written
    except FleetError as exc:
        exc.details["written"] = written
        raise


class Sink(Protocol):
    """Where the bytes of one file go; closed after its last byte."""

    def write(self, data: bytes, /) -> object: ...

    def close(self) -> None: ...


async def read_many_from_node(
    conn: Connection, root: str, task_dir: str, rels: list[str], sink_for: Callable[[int], Sink]
) -> dict[int, RemoteError]:
    """Stream the files ``rels`` under ``task_dir`` of the node root ``root`` through one
    command on the node, each opened as :func:`stream_from_node` opens it: the bytes of
    ``rels[i]`` go to ``sink_for(i)``, called when they start and closed after the last
    one (a thousand files never hold a thousand descriptors). Return the refused ones by
    position (RemoteError PathEscapesTaskDir, NotARegularFile, FileNotFound, ...).
    Raises RemoteError if the stream breaks off, Unreachable if the connection drops."""
    if not rels:
        return {}
    proc = await _file_command(conn, root, ["read-many", task_dir])
    proc.write(json.dumps(rels).encode() + b"\n")
    refused: dict[int, RemoteError] = {}
    for i in range(len(rels)):
        header = _parse(await proc.readline())
        if header is None:
            raise await _broken(conn, proc)
        if header.get("ok") is not True:
            refused[i] = _refusal(conn, header)
            continue
        sink = sink_for(i)
        while size := await _chunk_size(conn, proc):
            while size:
                if not (chunk := await proc.read(min(size, CHUNK))):
                    raise await _broken(conn, proc)
                sink.write(chunk)
                size -= len(chunk)
        sink.close()
    if await proc.wait() != 0:
        raise await _broken(conn, proc)
    return refused


async def _chunk_size(conn: Connection, proc: Process) -> int:
    """Return the length on the next chunk line of ``read-many`` (0 ends a file)."""
    line = (await proc.readline()).strip()
    if not line.isdigit():
        raise await _broken(conn, proc)
    return int(line)


async def _file_command(conn: Connection, root: str, argv: list[str]) -> Process:
    """Start the agent file as a one-shot task file command on the node (as argv, quoted
    by the SSH layer, never a shell string built from names)."""
    agent = await install_agent(conn, root)
    return await conn.start_process(["python3", "-S", agent, root, *argv])


async def _header(conn: Connection, proc: Process) -> dict[str, Any]:
    """Return the ok header line of a file command; raises RemoteError with the node's
    code for a refusal (FileNotFound, PathEscapesTaskDir, ...)."""
    header = _parse(await proc.readline())
    if header is None:
        raise await _broken(conn, proc)
    if header.get("ok") is not True:
        raise _refusal(conn, header)
    return header


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        header = json.loads(line)
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


def _refusal(conn: Connection, header: dict[str, Any]) -> RemoteError:
    error = header.get("error") or {}
    return RemoteError(
        str(error.get("message", "refused")),
        code=str(error.get("code", "RemoteError")),
        target=_node(conn),
    )


async def _broken(conn: Connection, proc: Process) -> RemoteError:
    detail = (await proc.stderr_text()).strip()[-300:]
    return RemoteError(
        f"the node's file command failed: {detail or 'no answer'}", target=_node(conn)
    )


def _node(conn: Connection) -> str:
    return f"node {conn.target.host_id}"
