"""The controller side of the node agent protocol (docs/agent-protocol.md): JSON lines over SSH."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable
from typing import Any, NamedTuple

from agent_bootstrap import agent_hash, agent_source, client_hash, client_source
from fleet.errors import AgentError, FleetError, Unreachable
from fleet.ssh import Connection, Process

log = logging.getLogger(__name__)

PROTOCOL = 5
HELLO_TIMEOUT = 30.0
BATCH_BYTES = 1 << 20  # requests sent together share one batch line up to about this size

EventHandler = Callable[[dict[str, Any]], None]
#: The future of a request's result (AgentError or Unreachable instead, if it fails).
Answer = asyncio.Future[dict[str, Any]]
#: What settles a request sent with :meth:`AgentClient.send`: called once, with the
#: result, or with None and the error (AgentError or Unreachable).
Reply = Callable[[dict[str, Any] | None, FleetError | None], None]


class _Pending(NamedTuple):
    """A request sent and not answered yet."""

    op: str
    reply: Reply
    timeout: float | None
    deadline: float  # loop time; infinite without a timeout


def agent_remote_path(root: str) -> str:
    """Return where the agent file lives on a node: named by its content hash."""
    return f"{root.rstrip('/')}/volatile/agent-{agent_hash()[:16]}.py"


def client_remote_path(root: str) -> str:
    """Return where the node-side client for tasks (``fleet-task``) lives on a node."""
    return f"{root.rstrip('/')}/volatile/fleet-task-{client_hash()[:16]}.py"


async def install_agent(conn: Connection, root: str) -> str:
    """Upload this version's agent and task client to the node root unless they are there
    already; return the agent's path. Both are looked for, and uploaded, at once (pipelined
    on the one SFTP session). Raises Unreachable or RemoteError."""
    path = agent_remote_path(root)
    files = ((path, agent_source, 0o644), (client_remote_path(root), client_source, 0o755))
    found = await asyncio.gather(*(conn.exists(remote) for remote, _, _ in files))
    missing = [file for file, there in zip(files, found, strict=True) if not there]
    if missing:
        await conn.makedirs(f"{root.rstrip('/')}/volatile")
        await asyncio.gather(
            *(conn.upload_bytes(source(), remote, mode) for remote, source, mode in missing)
        )
    return path


def batch_lines(encoded: list[bytes]) -> list[bytes]:
    """Frame encoded messages as lines: a lone message as itself, several as
    ``{"type": "batch", "messages": [...]}`` lines of up to about BATCH_BYTES each
    (docs/agent-protocol.md, "Batches"; the agent frames its replies and events alike)."""
    lines: list[bytes] = []
    group: list[bytes] = []
    size = 0
    for item in encoded:
        if group and size + len(item) > BATCH_BYTES:
            lines.append(_frame(group))
            group, size = [], 0
        group.append(item)
        size += len(item) + 1
    if group:
        lines.append(_frame(group))
    return lines


def _frame(group: list[bytes]) -> bytes:
    if len(group) == 1:
        return group[0] + b"\n"
    return b'{"type":"batch","messages":[' + b",".join(group) + b"]}\n"


class AgentClient:
    """One running agent on one node: requests with futures, events to a callback."""

    def __init__(self, node_id: str, process: Process, on_event: EventHandler) -> None:
        self.node_id = node_id
        self._process = process
        self._on_event = on_event
        self._pending: dict[int, _Pending] = {}  # by request id
        self._next_id = 0
        self._expiry: asyncio.TimerHandle | None = None  # one timer: the earliest deadline
        self._out: list[bytes] = []  # encoded requests, written together at the next flush
        self._reader: asyncio.Task[None] | None = None
        self.hello: dict[str, Any] = {}
        self.closed = asyncio.Event()

    @classmethod
    async def launch(cls, conn: Connection, root: str, on_event: EventHandler) -> AgentClient:
        """Upload the agent if this node lacks this version, start it and return the client
        once it said hello. Raises AgentError or Unreachable."""
        path = await install_agent(conn, root)
        # -S: the agent is stdlib-only, and skipping site-packages saves the node about a
        # third of the interpreter's start-up
        process = await conn.start_process(["python3", "-S", path, root])
        client = cls(conn.target.host_id, process, on_event)
        await client._handshake()
        return client

    async def _handshake(self) -> None:
        try:
            line = await asyncio.wait_for(self._process.readline(), HELLO_TIMEOUT)
        except TimeoutError as exc:
            raise AgentError(
                "the node agent did not say hello in time", target=f"node {self.node_id}"
            ) from exc
        if not line:
            detail = (await self._process.stderr_text()).strip()[-500:]
            raise AgentError(
                f"the node agent did not start: {detail or 'no output'}",
                code="AgentStartFailed",
                target=f"node {self.node_id}",
            )
        hello = json.loads(line)
        if hello.get("type") != "hello" or hello.get("protocol") != PROTOCOL:
            raise AgentError(f"unexpected agent greeting {hello!r}", target=f"node {self.node_id}")
        if error := hello.get("error"):
            raise AgentError(
                error.get("message", "agent refused to start"),
                code=error.get("code", "AgentError"),
                target=f"node {self.node_id}",
            )
        self.hello = hello
        self._reader = asyncio.create_task(self._read_loop(), name=f"agent-reader-{self.node_id}")

    async def _read_loop(self) -> None:
        try:
            while line := await self._process.readline():
                try:
                    msg = json.loads(line)
                except ValueError:
                    log.warning(
                        "node %s: agent sent a line that is not JSON: %r", self.node_id, line
                    )
                    continue
                if isinstance(msg, dict) and msg.get("type") == "batch":
                    for one in msg.get("messages") or ():
                        self._receive(one)
                else:
                    self._receive(msg)
        finally:
            self.closed.set()
            if self._expiry is not None:
                self._expiry.cancel()
            pending, self._pending = self._pending, {}
            error = Unreachable("agent channel closed", target=f"node {self.node_id}")
            for one in pending.values():
                self._settle(one, None, error)

    def _receive(self, msg: Any) -> None:
        """Settle the request a reply answers, or hand an event to the callback."""
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "reply":
            pending = self._pending.pop(msg.get("id"), None)
            if pending is None:
                return  # expired meanwhile
            if msg.get("ok"):
                self._settle(pending, dict(msg.get("result") or {}), None)
            else:
                error = msg.get("error") or {}
                failed = AgentError(
                    error.get("message", f"{pending.op} failed"),
                    code=error.get("code", "AgentError"),
                    target=f"node {self.node_id}",
                )
                self._settle(pending, None, failed)
        elif kind == "event":
            try:
                self._on_event(msg)
            except Exception:
                log.exception(
                    "node %s: event handler failed for a %s event", self.node_id, msg.get("event")
                )  # calls carry tokens

    async def request(self, op: str, timeout: float | None = 60.0, **args: Any) -> dict[str, Any]:
        """Send one request and return its result. Raises AgentError with the agent's code
        (``AgentTimeout`` after ``timeout`` seconds), or Unreachable when the channel
        closes first."""
        return await self.submit(op, timeout, **args)

    def submit(self, op: str, timeout: float | None = 60.0, **args: Any) -> Answer:
        """Send one request and return the future of its result, settled as
        :meth:`request` returns or raises."""
        answer: Answer = asyncio.get_running_loop().create_future()

        def settle(result: dict[str, Any] | None, error: FleetError | None) -> None:
            if answer.done():
                return  # the caller gave up on it
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(result or {})

        self.send(op, settle, timeout, **args)
        return answer

    def send(self, op: str, reply: Reply, timeout: float | None = 60.0, **args: Any) -> None:
        """Send one request; ``reply`` is called with its result or error, as
        :meth:`request` returns or raises (for a caller that needs neither a coroutine
        nor a future per request, such as a spawn)."""
        loop = asyncio.get_running_loop()
        if self.closed.is_set():
            error = Unreachable("agent channel closed", target=f"node {self.node_id}")
            loop.call_soon(reply, None, error)
            return
        self._next_id += 1
        rid = self._next_id
        deadline = math.inf if timeout is None else loop.time() + timeout
        self._pending[rid] = _Pending(op, reply, timeout, deadline)
        payload = {"type": "request", "id": rid, "op": op, "args": args}
        self._send(json.dumps(payload, separators=(",", ":")).encode())
        if self._expiry is None or deadline < self._expiry.when():
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        """Expire requests at ``deadline`` (one timer per client, not one per request)."""
        if self._expiry is not None:
            self._expiry.cancel()
        finite = deadline != math.inf
        self._expiry = (
            asyncio.get_running_loop().call_at(deadline, self._expire) if finite else None
        )

    def _expire(self) -> None:
        """Fail the requests past their deadline, and wait for the next deadline."""
        self._expiry = None
        now = asyncio.get_running_loop().time()
        late = [rid for rid, one in self._pending.items() if one.deadline <= now]
        for rid in late:
            one = self._pending.pop(rid)
            error = AgentError(
                f"agent did not answer {one.op} in {one.timeout} s",
                code="AgentTimeout",
                target=f"node {self.node_id}",
            )
            self._settle(one, None, error)
        if self._pending:
            self._arm(min(one.deadline for one in self._pending.values()))

    def _settle(
        self, pending: _Pending, result: dict[str, Any] | None, error: FleetError | None
    ) -> None:
        try:
            pending.reply(result, error)
        except Exception:
            log.exception("node %s: handling the answer to %s failed", self.node_id, pending.op)

    def _send(self, message: bytes) -> None:
        """Queue an encoded request; every request queued during one turn of the event
        loop goes out in one batch line (one write, one line for the agent to parse)."""
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(message)

    def _flush(self) -> None:
        data, self._out = b"".join(batch_lines(self._out)), []
        with contextlib.suppress(BrokenPipeError):  # closed: the reader fails the futures
            self._process.write(data)

    def close(self) -> None:
        """Close the channel; the agent exits and its tasks keep running."""
        self._process.close()
        if self._reader is not None:
            self._reader.cancel()
