"""The controller's end of the control socket: ``fleet exec`` on its open connections.

fleet/control_socket.py has the path, the wire format and the client. Here the
controller answers each exec request as a cold ``fleet exec`` would (same target
selection, same errors, same per-host results), but runs the command on the node
link's connection where the host is a ready node, and otherwise on a connection it
keeps for later runs (:class:`WarmConnections`). Each request is its own asyncio task,
and at most MAX_REQUESTS run at once, so the controller's loop never waits on one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fleet import control_socket, execute, reads
from fleet.errors import BadInput, FleetError
from fleet.service.hosts import record_host_key
from fleet.settings import Settings
from fleet.ssh import Connection, Target

if TYPE_CHECKING:
    from fleet.store import Store

log = logging.getLogger(__name__)

#: Exec requests run at once; more wait for a turn.
MAX_REQUESTS = 4
#: Seconds a kept connection may stay unused before it is closed.
IDLE_CLOSE = 60.0
#: Connections kept at most; past that the longest unused is closed.
MAX_KEPT = 256

Resolve = Callable[[str | None, str | None], list[Target]]  # (pool, hosts pattern) -> targets
NewKey = Callable[[str, str, str], None]  # (host id, public key line, fingerprint)


class Link(Protocol):
    """What warm exec needs of a node link (fleet/node_link.py)."""

    conn: Connection | None
    ready: bool


_Login = tuple[str, str, int, str | None, str | None]


def _login(target: Target) -> _Login:
    """Return what a kept connection to ``target`` must have been opened with: its host,
    address, port, user and key, not the host key then expected (the connection checked
    the key it was shown when it opened, as a node link's does)."""
    return (target.host_id, target.address, target.port, target.user, target.key_file)


class WarmConnections:
    """Connections for warm exec: a ready node link's own; else one kept from an earlier
    run (at most MAX_KEPT, each closed once unused for IDLE_CLOSE seconds); else a new
    one, kept after a run that went well. First-seen host keys go to ``on_new_key``."""

    def __init__(self, links: Mapping[str, Link], on_new_key: NewKey) -> None:
        self.links = links
        self.on_new_key = on_new_key
        self._kept: dict[_Login, list[tuple[Connection, float]]] = {}

    @contextlib.asynccontextmanager
    async def connect(self, target: Target) -> AsyncIterator[Connection]:
        link = self.links.get(target.host_id)
        if link is not None and link.ready and link.conn is not None and not link.conn.closed:
            log.debug("exec on %s: node link", target.host_id)
            yield link.conn
            return
        conn = self._take(target)
        if conn is None:
            log.debug("exec on %s: new connection", target.host_id)
            on_new_key = functools.partial(self.on_new_key, target.host_id)
            conn = await Connection.open(target, on_new_key=on_new_key)
        else:
            log.debug("exec on %s: kept connection", target.host_id)
        try:
            yield conn
        except BaseException:
            conn.abort()  # failed or cancelled mid-run: its state is unknown
            raise
        self._keep(target, conn)

    def _take(self, target: Target) -> Connection | None:
        kept = self._kept.get(_login(target), [])
        while kept:
            conn, _ = kept.pop()
            if not conn.closed:
                return conn
        self._kept.pop(_login(target), None)
        return None

    def _keep(self, target: Target, conn: Connection) -> None:
        if conn.closed:
            return
        self._kept.setdefault(_login(target), []).append((conn, time.monotonic()))  # oldest first
        if sum(len(kept) for kept in self._kept.values()) > MAX_KEPT:
            oldest = min(self._kept, key=lambda t: self._kept[t][0][1])
            self._drop_unused_since(self._kept[oldest][0][1], oldest)[0].abort()

    def _drop_unused_since(self, since: float, *only: _Login) -> list[Connection]:
        """Forget the kept connections (of the targets ``only``, if given) last used before
        ``since`` (or at that time), and the closed ones; return them."""
        out: list[Connection] = []
        for target in only or list(self._kept):
            keep: list[tuple[Connection, float]] = []
            for conn, used in self._kept[target]:
                if used <= since or conn.closed:
                    out.append(conn)
                else:
                    keep.append((conn, used))
            if keep:
                self._kept[target] = keep
            else:
                del self._kept[target]
        return out

    async def close_idle(self) -> None:
        """Close, every IDLE_CLOSE / 4 seconds, the kept connections unused for IDLE_CLOSE
        seconds; runs until cancelled."""
        while True:
            await asyncio.sleep(IDLE_CLOSE / 4)
            idle = self._drop_unused_since(time.monotonic() - IDLE_CLOSE)
            await asyncio.gather(*(conn.close() for conn in idle))

    def close(self) -> None:
        """Drop every kept connection at once."""
        for conn in self._drop_unused_since(float("inf")):
            conn.abort()


class ControlServer:
    """Answers exec requests on the control socket at ``path``, with targets from
    ``resolve`` and connections from :class:`WarmConnections`."""

    def __init__(
        self, path: Path, links: Mapping[str, Link], resolve: Resolve, on_new_key: NewKey
    ) -> None:
        self.path = path
        self.resolve = resolve
        self.connections = WarmConnections(links, on_new_key)
        self._slots = asyncio.Semaphore(MAX_REQUESTS)
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._clients: set[asyncio.Task[Any]] = set()

    @classmethod
    def of(cls, settings: Settings, store: Store, links: Mapping[str, Link]) -> ControlServer:
        """Return the server of the controller of ``settings``: targets read as a cold
        ``fleet exec`` reads them, new host keys recorded in ``store``."""
        db = reads.Reader(store.url)

        def resolve(pool: str | None, pattern: str | None) -> list[Target]:
            return execute.select_targets(db, pool=pool, pattern=pattern)

        return cls(
            control_socket.socket_path(settings),
            links,
            resolve,
            functools.partial(record_host_key, store),
        )

    async def start(self) -> None:
        """Listen (owner-only, replacing a socket file a killed controller left). Raises
        nothing: if the socket cannot be made, ``fleet exec`` runs cold, as logged."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))  # 0600
        except OSError as exc:
            sock.close()
            log.warning(
                "control socket: cannot listen at %s (%s); fleet exec runs cold", self.path, exc
            )
            return
        finally:
            os.umask(old)
        self._server = await asyncio.start_unix_server(
            self._serve, sock=sock, limit=control_socket.MAX_REQUEST
        )
        self._sweeper = asyncio.create_task(self.connections.close_idle(), name="control-idle")
        log.info("control socket: listening at %s", self.path)

    async def close(self) -> None:
        """Stop listening, cancel the requests running, drop the kept connections."""
        if self._server is None:
            return
        self._server.close()
        waiting = [*self._clients, *([self._sweeper] if self._sweeper else [])]
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        self.connections.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            if not control_socket.same_user(writer.get_extra_info("socket")):
                log.warning("control socket: refused a connection from another user")
                return
            writer.write(control_socket.encode(control_socket.HELLO))
            await writer.drain()
            line = await reader.readline()
            if not line.endswith(b"\n"):
                return  # the client left (or sent too much) before its request was whole
            answer = await self._answer(line, reader)
            if answer is not None:
                writer.write(control_socket.encode(answer))
                await writer.drain()
        except (OSError, ValueError) as exc:  # the client went away
            log.debug("control socket: client lost: %s", exc)
        finally:
            self._clients.discard(task)
            writer.close()

    async def _answer(self, line: bytes, reader: asyncio.StreamReader) -> dict[str, Any] | None:
        """Return the answer to the request ``line``, or None if the client left before
        the results were in (the runs are then cancelled, as a cold exec's on Ctrl-C)."""
        try:
            log.debug("control socket: exec request")
            pool, pattern, argv, timeout = _exec_request(json.loads(line))
            async with self._slots:
                chosen = self.resolve(pool, pattern)
                log.debug("control socket: exec on %d hosts", len(chosen))
                run = asyncio.ensure_future(
                    execute.run_everywhere(chosen, argv, self.connections, timeout)
                )
                gone = asyncio.ensure_future(reader.read(1))  # the client sends no more
                try:
                    await asyncio.wait({run, gone}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    gone.cancel()
                    if not run.done():
                        run.cancel()
                        await asyncio.wait({run})
                if run.cancelled():
                    log.debug("control socket: the client left; its runs were cancelled")
                    return None
                return {"results": [r.to_dict() for r in run.result()]}
        except FleetError as exc:
            return control_socket.error_message(exc)
        except Exception as exc:
            log.exception("control socket: exec request failed")
            return control_socket.error_message(
                FleetError(f"internal error: {type(exc).__name__}: {exc}", code="InternalError")
            )


def _exec_request(
    request: Any,
) -> tuple[str | None, str | None, Sequence[str], float | None]:
    """Return (pool, hosts pattern, argv, timeout) of an exec request. Raises BadInput."""
    if isinstance(request, dict) and request.get("op") == "exec":
        pool, pattern, argv, timeout = (
            request.get(k) for k in ("pool", "hosts", "argv", "timeout")
        )
        if (
            all(isinstance(v, str | None) for v in (pool, pattern))
            and (pool is None) != (pattern is None)
            and isinstance(argv, list)
            and argv
            and all(isinstance(a, str) for a in argv)
            and (
                timeout is None
                or (isinstance(timeout, int | float) and not isinstance(timeout, bool))
            )
        ):
            return pool, pattern, argv, timeout
    raise BadInput("not a valid exec request", code="BadControlRequest")
