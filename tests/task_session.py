"""A task spawned through a test's agent that opens agent.sock connections and runs
commands in its own session, so that tests call the agent from a real task session."""

from __future__ import annotations

import array
import contextlib
import json
import os
import queue
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

# Runs as the task (under the agent's Python, 3.8+). One JSON line per request on the
# control socket, with file descriptors passed by SCM_RIGHTS both ways.
HELPER = r"""
import array, json, os, socket, subprocess, sys, threading
ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ctl.connect(sys.argv[1])
lock = threading.Lock()

def reply(msg, fds=()):
    data = json.dumps(msg).encode() + b"\n"
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    with lock:
        ctl.sendmsg([data], rights)

def run(rid, argv, env, fds):
    proc = subprocess.Popen(argv, env=env, stdin=fds[0], stdout=fds[1], stderr=fds[2])
    for fd in fds:
        os.close(fd)
    reply({"id": rid, "status": proc.wait()})

buf = b""
while True:
    data, ancdata, _, _ = ctl.recvmsg(1 << 16, socket.CMSG_SPACE(16 * 4))
    if not data:
        break
    fds = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
    buf += data
    line, _, buf = buf.partition(b"\n")
    msg = json.loads(line)
    if msg["op"] == "connect":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        os.chdir(msg["dir"])
        sock.connect("agent.sock")
        reply({"id": msg["id"]}, [sock.fileno()])
        sock.close()
    elif msg["op"] == "run":
        args = (msg["id"], msg["argv"], msg["env"], fds)
        threading.Thread(target=run, args=args, daemon=True).start()
"""


class SessionProcess:
    """A command the helper runs in the task's session: like a small Popen."""

    def __init__(self, answers: queue.Queue[dict[str, Any]], out: Path, err: Path) -> None:
        self._answers, self._out, self._err = answers, out, err
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            with contextlib.suppress(queue.Empty):
                self.returncode = self._answers.get_nowait()["status"]
        return self.returncode

    def communicate(self, timeout: float) -> tuple[str, str]:
        if self.returncode is None:
            self.returncode = self._answers.get(timeout=timeout)["status"]
        return self._out.read_text(), self._err.read_text()


class TaskSession:
    """A helper task spawned through ``agent`` (tests/test_agent.py's AgentClient) in
    ``root``; everything it connects or runs is in that task's session."""

    def __init__(self, agent: Any, root: Path, python: str, name: str = "caller") -> None:
        self.root = root
        self.dir = Path(tempfile.mkdtemp(prefix="fleet-session-", dir="/tmp"))
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.dir / "ctl"))
        listener.listen(1)
        listener.settimeout(10)
        self.task_dir = f"workitems/job/{name}"
        args = {"key": f"job/{name}", "taskDir": self.task_dir, "attempt": 1}
        args.update(argv=[python, "-c", HELPER, str(self.dir / "ctl")], env={})
        self.pid = agent.call("spawn", args)["pid"]
        self.ctl, _ = listener.accept()
        listener.close()
        self._next = 0
        self._answers: dict[int, queue.Queue[tuple[dict[str, Any], list[int]]]] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        fds: list[int] = []
        while True:
            try:
                data, ancdata, _, _ = self.ctl.recvmsg(1 << 16, socket.CMSG_SPACE(16 * 4))
            except OSError:
                return
            if not data:
                return
            for _level, _kind, payload in ancdata:
                fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
            buf += data
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                msg = json.loads(line)
                self._answers[msg["id"]].put((msg, fds))
                fds = []

    def _request(
        self, msg: dict[str, Any], fds: list[int] | None = None
    ) -> queue.Queue[tuple[dict[str, Any], list[int]]]:
        with self._lock:
            self._next += 1
            answers: queue.Queue[tuple[dict[str, Any], list[int]]] = queue.Queue()
            self._answers[self._next] = answers
            data = json.dumps({**msg, "id": self._next}).encode() + b"\n"
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            self.ctl.sendmsg([data], rights)
        return answers

    def connect(self) -> socket.socket:
        """Return a connection to agent.sock opened by the task."""
        _msg, fds = self._request({"op": "connect", "dir": str(self.root / "volatile")}).get(
            timeout=10
        )
        return socket.socket(fileno=fds[0])

    def run(self, argv: list[str], env: dict[str, str], stdin: bytes = b"") -> SessionProcess:
        """Run argv in the task's session with env; stdin is fed from ``stdin``."""
        n = self._next + 1
        out, err = self.dir / f"out{n}", self.dir / f"err{n}"
        read_fd, write_fd = os.pipe()
        os.write(write_fd, stdin)  # small: fits in the pipe
        os.close(write_fd)
        out_fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err_fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            answers = self._request(
                {"op": "run", "argv": argv, "env": env}, [read_fd, out_fd, err_fd]
            )
        finally:
            for fd in (read_fd, out_fd, err_fd):
                os.close(fd)
        statuses: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=lambda: statuses.put(answers.get()[0]), daemon=True).start()
        return SessionProcess(statuses, out, err)

    def close(self) -> None:
        """Stop the helper (its task exits) and remove its files."""
        with contextlib.suppress(OSError):
            self.ctl.shutdown(socket.SHUT_RDWR)
        self.ctl.close()
        shutil.rmtree(self.dir, ignore_errors=True)
