"""The SSH layer and the agent install against a real lab sshd: liveness, directories and
uploads."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from agent_bootstrap import agent_source, client_source
from fleet import agent_client, ssh
from fleet import lab as lab_mod
from fleet.errors import AgentError, RemoteError, Unreachable
from fleet.ssh import Connection, Target

T = TypeVar("T")


def on_node(
    lab: lab_mod.Lab,
    work: Callable[[Connection], Awaitable[T]],
    node: lab_mod.LabNode | None = None,
) -> T:
    """Open a connection to ``node`` (the lab's first by default), run ``work`` on it, close
    it."""
    node = node or lab.nodes[0]
    known = dict(line.split(" ", 1) for line in lab.known_hosts_path.read_text().splitlines())
    target = Target(
        node.name,
        "127.0.0.1",
        node.port,
        lab.user,
        str(lab.key_file),
        "strict",
        known[f"[127.0.0.1]:{node.port}"],
    )

    async def main() -> T:
        conn = await Connection.open(target)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


@pytest.fixture
def base(lab: lab_mod.Lab) -> Path:
    """A path under the first node's root that does not exist yet."""
    return lab.nodes[0].root / f"t-{uuid.uuid4().hex[:10]}"


def test_the_kernel_is_asked_to_drop_a_connection_whose_peer_stopped_answering() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    with server, socket.create_connection(server.getsockname()) as sock:
        ssh.detect_dead_peer(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == ssh.TCP_IDLE
        dead_after_ms = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        assert dead_after_ms == ssh.TCP_DEAD_AFTER * 1000
    a, b = socket.socketpair()
    with a, b:
        ssh.detect_dead_peer(a)  # not TCP: left alone
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


@pytest.mark.lab
def test_a_frozen_node_is_dropped_when_a_keepalive_goes_unanswered(
    lab: lab_mod.Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ssh, "KEEPALIVE_INTERVAL", 0.5)
    node = lab.nodes[-1]

    async def work(conn: Connection) -> float:
        await conn.run(["true"])
        lab_mod.stop_node(lab, node.name, signal.SIGSTOP, kill_sessions=True)
        start = time.monotonic()
        await asyncio.wait_for(conn.wait_closed(), 10)
        return time.monotonic() - start

    try:
        took = on_node(lab, work, node)
    finally:
        lab_mod.start_node(lab, node.name)
    assert 0.5 <= took < 5  # one unanswered keepalive: dropped after two intervals


@pytest.mark.lab
def test_makedirs_creates_every_missing_parent_and_accepts_an_existing_dir(
    lab: lab_mod.Lab, base: Path
) -> None:
    deep = base / "a" / "b" / "c"

    async def work(conn: Connection) -> None:
        await conn.makedirs(f"{deep}/")
        await conn.makedirs(str(deep))  # there already
        await conn.makedirs(str(base / "a" / "d"))  # only the last part missing

    on_node(lab, work)
    assert deep.is_dir() and (base / "a" / "d").is_dir()


@pytest.mark.lab
def test_makedirs_through_a_file_is_a_remote_error(lab: lab_mod.Lab, base: Path) -> None:
    async def work(conn: Connection) -> None:
        await conn.makedirs(str(base))
        await conn.upload_bytes(b"not a dir", f"{base}/file")
        with pytest.raises(RemoteError):
            await conn.makedirs(f"{base}/file/sub")
        with pytest.raises(RemoteError):
            await conn.makedirs(f"{base}/file")

    on_node(lab, work)
    assert (base / "file").read_bytes() == b"not a dir"


@pytest.mark.lab
def test_install_agent_uploads_both_files_once(lab: lab_mod.Lab, base: Path) -> None:
    root = str(base / "deep" / "root")  # its parents are missing too
    agent = Path(agent_client.agent_remote_path(root))
    client = Path(agent_client.client_remote_path(root))

    assert on_node(lab, lambda conn: agent_client.install_agent(conn, root)) == str(agent)
    assert agent.read_bytes() == agent_source()
    assert client.read_bytes() == client_source()
    assert (agent.stat().st_mode & 0o777, client.stat().st_mode & 0o777) == (0o644, 0o755)
    inodes = (agent.stat().st_ino, client.stat().st_ino)
    assert on_node(lab, lambda conn: agent_client.install_agent(conn, root)) == str(agent)
    assert (agent.stat().st_ino, client.stat().st_ino) == inodes  # not uploaded again


#: A stand-in agent for the client's request handling: says hello, answers ``echo`` with
#: its arguments and ``fail`` with an error, and never answers ``never``.
_STAND_IN_AGENT = f"""
import json, sys
print(json.dumps({{"type": "hello", "protocol": {agent_client.PROTOCOL}}}), flush=True)
for line in sys.stdin:
    msg = json.loads(line)
    for req in msg["messages"] if msg.get("type") == "batch" else [msg]:
        if req["op"] == "echo":
            print(json.dumps({{"type": "reply", "id": req["id"], "ok": True,
                               "result": req["args"]}}), flush=True)
        elif req["op"] == "fail":
            print(json.dumps({{"type": "reply", "id": req["id"], "ok": False,
                               "error": {{"code": "BadPath", "message": "no"}}}}), flush=True)
"""


@pytest.mark.lab
def test_agent_requests_are_answered_refused_timed_out_and_failed_when_the_channel_closes(
    lab: lab_mod.Lab,
) -> None:
    async def work(conn: Connection) -> dict[str, object]:
        process = await conn.start_process(["python3", "-c", _STAND_IN_AGENT])
        client = agent_client.AgentClient("n1", process, lambda _: None)
        await client._handshake()
        seen: dict[str, object] = {}
        replies: asyncio.Queue[tuple[object, object]] = asyncio.Queue()
        client.send("echo", lambda r, e: replies.put_nowait((r, e)), a=1)
        seen["sent"] = await replies.get()
        seen["echo"] = await client.request("echo", b=2)
        with pytest.raises(AgentError) as refused:
            await client.request("fail")
        seen["fail"] = refused.value.code
        # One timer serves every deadline: a later request with an earlier deadline
        # expires first, and the others keep theirs.
        slow = client.submit("never", timeout=30)
        forever = client.submit("never", timeout=None)
        t0 = time.monotonic()
        with pytest.raises(AgentError) as late:
            await client.request("never", timeout=0.3)
        seen["late"] = (late.value.code, time.monotonic() - t0)
        seen["still pending"] = (slow.done(), forever.done())
        client.close()
        await asyncio.wait_for(client.closed.wait(), 10)
        for answer in (slow, forever):
            with pytest.raises(Unreachable):
                await answer
        return seen

    seen = on_node(lab, work)
    assert seen["sent"] == ({"a": 1}, None)
    assert seen["echo"] == {"b": 2}
    assert seen["fail"] == "BadPath"
    code, waited = seen["late"]  # type: ignore[misc]
    assert code == "AgentTimeout" and 0.25 <= waited < 10
    assert seen["still pending"] == (False, False)
