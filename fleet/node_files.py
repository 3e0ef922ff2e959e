"""Files of a node: listed and streamed from under its fleet root, never through a link.

``fleet node file list|download`` name a path relative to the root the node's agent
reported (``nodes.root``, the realpath of the node root). The path is checked here
first (:func:`node_path`): absolute paths, NUL and any ``..`` component are refused with
BadInput ``InvalidPath`` before anything connects. On the node, the agent file runs as
the same one-shot file command that ``fleet task file`` uses (docs/agent-protocol.md,
"Task files"), over the same kind of connection (the host's recorded key, read without
the ORM). That command walks from the directory it is given one component at a time
with ``O_NOFOLLOW``, so no symlink anywhere on the path is followed, whether it points
inside the root or out of it: such a path is refused with ``InvalidPath`` too.

The agent's file commands take a non-empty directory under their base, and the root
itself must be listable, so the walk starts from the root's parent with the root's
own name as its first component (the root is a realpath: that component is a real
directory, never a link). The agent file itself is installed, and run, from the node
root's ``volatile/`` as usual.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

from fleet import reads, targets, views
from fleet.agent_client import install_agent
from fleet.errors import BadInput, Conflict, FleetError, NotFound, RemoteError
from fleet.reads import Reader, Row
from fleet.ssh import Connection, Process

CHUNK = 1 << 20
#: Longest path accepted (Linux's PATH_MAX).
MAX_PATH_LENGTH = 4096
#: What the node's file command answers for a path that would leave the root.
ESCAPE_CODES = {"PathEscapesTaskDir", "BadPath"}
#: Progress callback of a download: (bytes written so far, file size).
Progress = Callable[[int, int], None]

T = TypeVar("T")


def node_path(path: str | None, *, target: str | None = None) -> str:
    """Return ``path`` (relative to a node root) normalized to ``a/b/c``, or ``""`` for
    the root itself (``None``, empty or ``.``). Empty and ``.`` segments are dropped.

    Raises BadInput ``InvalidPath`` for an absolute path, a ``..`` component (even one
    that would stay inside), a NUL or a path longer than 4096 characters."""
    if path is None:
        return ""

    def bad(reason: str) -> BadInput:
        return BadInput(f"path {path!r} {reason}", code="InvalidPath", target=target, field="path")

    if len(path) > MAX_PATH_LENGTH:
        raise bad(f"is longer than {MAX_PATH_LENGTH} characters")
    if "\0" in path:
        raise bad("contains NUL")
    if path.startswith("/"):
        raise bad("is absolute: give a path relative to the node's fleet root")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise bad("has a '..' component: paths stay under the node's fleet root")
    return "/".join(parts)


@dataclass(frozen=True)
class NodeRoot:
    """Where a node's files are: its root, split for the agent's walk."""

    node_id: str
    root: str

    @property
    def base(self) -> str:
        """The directory the walk starts from: the root's parent."""
        return posixpath.dirname(self.root.rstrip("/")) or "/"

    def under_base(self, path: str) -> str:
        """Return ``path`` (under the root) as a path under :attr:`base`."""
        name = posixpath.basename(self.root.rstrip("/"))
        return f"{name}/{path}" if path else name

    @property
    def target(self) -> str:
        return f"node {self.node_id}"


def _locate(db: Reader, pool_id: str, node_id: str) -> tuple[NodeRoot, Row, Row | None]:
    """Return the node's root, its host and recorded host key. Raises NotFound
    (PoolNotFound, NodeNotFound), Conflict NodeRootUnknown when the node has never
    reported its root."""
    node, host, key = reads.node_access(db, pool_id, node_id)
    root = node.root
    if not root or not root.startswith("/") or root.rstrip("/") == "":
        raise Conflict(
            "the node has not reported its fleet root yet (has it joined the pool? is "
            "'fleet controller run' running?)",
            code="NodeRootUnknown",
            target=f"node {node_id}",
        )
    return NodeRoot(node_id, root.rstrip("/")), host, key


def list_files(
    db: Reader, pool_id: str, node_id: str, path: str | None = None, recursive: bool = False
) -> list[dict[str, Any]]:
    """Return the entries under ``path`` (default: the root) of a node's fleet root as
    Azure NodeFile objects (``name`` relative to the root, ``isDirectory``,
    ``properties`` with ``contentLength``, ``lastModified``, ``fileMode``); symlinks are
    listed, never followed or descended into.

    Raises BadInput InvalidPath (see :func:`node_path`, or a symlink on the path);
    NotFound (PoolNotFound, NodeNotFound, FileNotFound for a missing directory);
    Conflict NodeRootUnknown; RemoteError (NodeUnreachable, HostKeyMismatch, ...)."""
    rel = node_path(path, target=f"node {node_id}")
    where, host, key = _locate(db, pool_id, node_id)
    argv = ["list", where.under_base(rel), *(["--recursive"] * recursive)]

    async def run() -> list[dict[str, Any]]:
        conn = await Connection.open(targets.target(host, key))
        try:
            proc = await _file_command(conn, where, argv)
            files = (await _header(where, conn, proc)).get("files")
            if not isinstance(files, list):
                raise RemoteError("the node's file list is malformed", target=where.target)
            return files
        finally:
            await conn.close()

    files = _answer(where, rel, "directory", lambda: asyncio.run(run()))
    prefix = f"{rel}/" if rel else ""
    return [
        views.node_file(
            prefix + f["name"], bool(f["isDirectory"]), f["size"], f.get("mtime"), f.get("mode")
        )
        for f in files
    ]


def download(
    db: Reader,
    pool_id: str,
    node_id: str,
    path: str,
    sink: BinaryIO,
    progress: Progress | None = None,
    start: int | None = None,
    end: int | None = None,
) -> int:
    """Write bytes ``start``..``end`` (inclusive; default: all) of the regular file
    ``path`` under the node's fleet root to ``sink`` in chunks of at most 1 MiB (bounded
    memory); return how many bytes were written. ``progress`` is called after each chunk
    with the bytes written so far and the file's size.

    Raises BadInput InvalidPath (see :func:`node_path`, or a symlink on the path),
    NotARegularFile; NotFound (PoolNotFound, NodeNotFound, FileNotFound); Conflict
    NodeRootUnknown; RemoteError (NodeUnreachable, ...; ``details["written"]`` says how
    much went out when it fails midway)."""
    rel = node_path(path, target=f"node {node_id}")
    if not rel:
        raise BadInput(
            "give the path of a file under the node's fleet root, not the root itself",
            code="InvalidPath",
            target=f"node {node_id}",
            field="path",
        )
    where, host, key = _locate(db, pool_id, node_id)
    parent, name = posixpath.split(rel)

    async def run() -> int:
        conn = await Connection.open(targets.target(host, key))
        written = 0
        try:
            bounds = [str(start or 0), *([str(end)] if end is not None else [])]
            proc = await _file_command(
                conn, where, ["read", where.under_base(parent), name, *bounds]
            )
            size = int((await _header(where, conn, proc)).get("size") or 0)
            while chunk := await proc.read(CHUNK):
                sink.write(chunk)
                written += len(chunk)
                if progress is not None:
                    progress(written, size)
            if await proc.wait() != 0:
                raise RemoteError(f"reading {rel} on the node failed midway", target=where.target)
            return written
        except FleetError as exc:
            exc.details["written"] = written
            raise
        finally:
            await conn.close()

    return _answer(where, rel, "file", lambda: asyncio.run(run()))


def _answer(where: NodeRoot, rel: str, what: str, call: Callable[[], T]) -> T:
    """Return ``call()``, with the node's refusals turned into fleet's errors for ``rel``
    (``what``: "directory" or "file")."""
    try:
        return call()
    except RemoteError as exc:
        shown = rel or "."
        if exc.code in ESCAPE_CODES:
            raise BadInput(
                f"path {shown!r} goes through a symbolic link: links under a node's fleet "
                "root are never followed",
                code="InvalidPath",
                target=where.target,
                field="path",
            ) from exc
        if exc.code == "FileNotFound":
            raise NotFound(
                f"no {what} {shown!r} under the node's fleet root",
                code="FileNotFound",
                target=where.target,
                field="path",
            ) from exc
        if exc.code == "NotARegularFile":
            raise BadInput(
                f"{shown} is not a regular file",
                code="NotARegularFile",
                target=where.target,
                field="path",
            ) from exc
        raise


async def _file_command(conn: Connection, where: NodeRoot, argv: list[str]) -> Process:
    """Start the agent file (installed under the node root) as a one-shot file command
    walking from the root's parent; argv is quoted by the SSH layer, never a shell."""
    agent = await install_agent(conn, where.root)
    return await conn.start_process(["python3", "-S", agent, where.base, *argv])


async def _header(where: NodeRoot, conn: Connection, proc: Process) -> dict[str, Any]:
    """Return the ok header line of a file command. Raises RemoteError with the node's
    code for a refusal (FileNotFound, PathEscapesTaskDir, ...), or for no answer."""
    try:
        header = json.loads(await proc.readline())
    except ValueError:
        header = None
    if not isinstance(header, dict):
        detail = (await proc.stderr_text()).strip()[-300:]
        raise RemoteError(
            f"the node's file command failed: {detail or 'no answer'}", target=where.target
        )
    if header.get("ok") is not True:
        error = header.get("error") or {}
        raise RemoteError(
            str(error.get("message", "refused")),
            code=str(error.get("code", "RemoteError")),
            target=where.target,
        )
    return header
