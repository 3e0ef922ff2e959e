"""Tests of the node agent (agent_bootstrap/fleet_agent.py), run as a local subprocess.

The agent speaks docs/agent-protocol.md over its stdin/stdout; no SSH is involved.
FLEET_TEST_AGENT_PYTHON selects the interpreter that runs the agent (for example a
Python 3.8 to check the oldest supported node Python); the default is this one.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import platform
import pwd
import queue
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import agent_bootstrap
from agent_bootstrap import agent_hash, agent_source, client_hash, client_source
from tests.task_session import TaskSession

AGENT = Path(agent_bootstrap.__file__).resolve().parent / "fleet_agent.py"
CLIENT = AGENT.parent / "fleet_task.py"
OLD_AGENT = Path(__file__).parent / "cases" / "agents" / "fleet_agent_protocol3.py"
AGENT_PYTHON = os.environ.get("FLEET_TEST_AGENT_PYTHON", sys.executable)
LAYOUT = ("startup", "shared", "applications", "certs", "fsmounts", "volatile", "workitems")
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
TIMEOUT = 10.0


class AgentClient:
    """One agent subprocess and the protocol spoken with it."""

    def __init__(self, root, stderr_path, env=None, cwd=None, read_hello=True, agent=AGENT):
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.stderr_path = stderr_path
        with open(stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [AGENT_PYTHON, str(agent), str(root)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=full_env,
                cwd=cwd,
            )
        self.incoming = queue.Queue()
        self.transcript = []  # every message received, in order
        self.backlog = []  # received but not yet claimed by a wait
        self.next_id = 0
        self.lines_with_batches = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.hello = self.next_message() if read_hello else None

    def _read(self):
        for line in self.proc.stdout:
            message = json.loads(line)
            if message.get("type") == "batch":  # several messages sent together
                self.lines_with_batches += 1
                for one in message["messages"]:
                    self.incoming.put(one)
            else:
                self.incoming.put(message)
        self.incoming.put(None)

    def stderr_text(self):
        return Path(self.stderr_path).read_text(errors="replace")

    def next_message(self, timeout=TIMEOUT):
        """Return the next message, or None once stdout is closed."""
        try:
            message = self.incoming.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message in {timeout} s; stderr:\n{self.stderr_text()}")
        if message is not None:
            self.transcript.append(message)
        return message

    def send_raw(self, data: bytes):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, op, args=None, **extra):
        """Send a request without waiting; return its id."""
        self.next_id += 1
        message = {"type": "request", "id": self.next_id, "op": op, **extra}
        if args is not None:
            message["args"] = args
        self.send_raw(json.dumps(message).encode() + b"\n")
        return self.next_id

    def wait_for(self, predicate, timeout=TIMEOUT):
        """Return the first message (backlog first) that matches predicate."""
        for message in self.backlog:
            if predicate(message):
                self.backlog.remove(message)
                return message
        deadline = time.monotonic() + timeout
        while True:
            message = self.next_message(max(0.0, deadline - time.monotonic()))
            assert message is not None, f"agent stdout closed; stderr:\n{self.stderr_text()}"
            if predicate(message):
                return message
            self.backlog.append(message)

    def wait_reply(self, request_id, timeout=TIMEOUT):
        return self.wait_for(lambda m: m["type"] == "reply" and m["id"] == request_id, timeout)

    def request(self, op, args=None, timeout=TIMEOUT):
        """Send a request and return its reply."""
        return self.wait_reply(self.send(op, args), timeout)

    def call(self, op, args=None, timeout=TIMEOUT):
        """Send a request and return its result, asserting it succeeded."""
        reply = self.request(op, args, timeout)
        assert reply["ok"], reply
        return reply["result"]

    def error_code(self, op, args=None):
        reply = self.request(op, args)
        assert not reply["ok"], reply
        return reply["error"]["code"]

    def wait_exited(self, task_dir, timeout=TIMEOUT):
        return self.wait_for(
            lambda m: m["type"] == "event" and m["event"] == "exited" and m["taskDir"] == task_dir,
            timeout,
        )

    def wait_event(self, name, timeout=TIMEOUT):
        return self.wait_for(lambda m: m["type"] == "event" and m["event"] == name, timeout)

    def close(self):
        """Close stdin (the agent exits on EOF), reap it and stop reading."""
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdin.close()
        self.reader.join(5)
        self.proc.stdout.close()


def spawn_args(name, argv, attempt=1, **extra):
    args = {"key": f"job/{name}", "taskDir": f"workitems/job/{name}", "attempt": attempt}
    args.update(argv=argv, env={}, maxWallClockSeconds=None)
    args.update(extra)
    return args


def process_gone(pid):
    """True if pid no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return data.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_until(predicate, timeout=TIMEOUT, what="condition"):
    """Poll predicate (for conditions that no message announces)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def root(tmp_path):
    return tmp_path / "root"


@pytest.fixture
def agents(tmp_path, root):
    """Start agents on a node root; close them and kill leftover tasks afterwards."""
    started = []

    def start(env=None, node_root=None, cwd=None, read_hello=True, agent=AGENT):
        stderr_path = tmp_path / f"agent{len(started)}.stderr"
        node_root = root if node_root is None else node_root
        client = AgentClient(node_root, stderr_path, env, cwd, read_hello, agent)
        started.append(client)
        return client

    yield start
    for client in started:
        client.close()
    for attempt_file in root.rglob("attempt.json"):
        if not (attempt_file.parent / "exit.json").exists():
            with contextlib.suppress(ProcessLookupError, ValueError, KeyError):
                os.killpg(json.loads(attempt_file.read_text())["pid"], signal.SIGKILL)


def test_package_helpers_return_the_agent_file():
    assert agent_source() == AGENT.read_bytes()
    assert agent_hash() == hashlib.sha256(AGENT.read_bytes()).hexdigest()
    first_line = agent_source().split(b"\n", 1)[0]
    assert re.fullmatch(rb'""".+"""', first_line)  # a one-line module docstring


def test_package_helpers_return_the_client_file():
    assert client_source() == CLIENT.read_bytes()
    assert client_hash() == hashlib.sha256(CLIENT.read_bytes()).hexdigest()
    shebang, docstring = client_source().split(b"\n")[:2]
    assert shebang == b"#!/usr/bin/env python3"
    assert re.fullmatch(rb'""".+"""', docstring)


def test_hello_reports_identity_and_creates_layout(agents, root, tmp_path):
    agent = agents(node_root="root", cwd=tmp_path)  # a relative root resolves against cwd
    hello = agent.hello
    assert hello["type"] == "hello" and hello["protocol"] == 5 and "error" not in hello
    assert hello["pid"] == agent.proc.pid
    assert hello["bootId"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert hello["root"] == os.path.realpath(root)
    assert hello["uid"] == os.getuid()
    assert hello["user"] == pwd.getpwuid(os.getuid()).pw_name
    if sys.executable == AGENT_PYTHON:
        assert hello["python"] == platform.python_version()
    for name in LAYOUT:
        assert (root / name).is_dir(), name
    assert stat.S_ISSOCK((root / "volatile" / "agent.sock").stat().st_mode)

    ping = agent.call("ping")
    assert ping["bootId"] == hello["bootId"] and ISO_UTC.fullmatch(ping["time"])

    metrics = agent.call("metrics")
    assert 0 < metrics["cpuBusy"] < metrics["cpuTotal"]
    assert 0 < metrics["memoryAvailable"] < metrics["memoryTotal"]

    shutil.rmtree(root / "shared")
    assert agent.call("setup") == {"bootId": hello["bootId"], "root": hello["root"]}
    assert (root / "shared").is_dir()


def test_spawn_records_output_exit_code_and_event(agents, root):
    agent = agents()
    task = root / "workitems/job/t1"
    script = "printf 'out\\n'; printf 'err\\n' >&2; exit 3"
    spawn_id = agent.send("spawn", spawn_args("t1", ["sh", "-c", script]))
    started = agent.wait_reply(spawn_id)
    assert started["ok"], started
    event = agent.wait_exited("workitems/job/t1")
    assert agent.transcript.index(started) < agent.transcript.index(event)

    record = event["exit"]
    assert event["key"] == "job/t1" and event["attempt"] == 1
    assert record == json.loads((task / "exit.json").read_text())
    assert record["protocol"] == 5 and record["key"] == "job/t1" and record["attempt"] == 1
    assert record["exitCode"] == 3 and record["signal"] is None
    assert record["timedOut"] is False and record["error"] is None
    assert record["pid"] == started["result"]["pid"]
    assert record["startTime"] == started["result"]["startTime"]
    assert ISO_UTC.fullmatch(record["startTime"]) and ISO_UTC.fullmatch(record["endTime"])
    assert record["endTime"] >= record["startTime"]
    assert (task / "stdout.txt").read_text() == "out\n"
    assert (task / "stderr.txt").read_text() == "err\n"
    assert (task / "wd").is_dir() and not (task / "exit.json.tmp").exists()
    # small outputs and the exit record ride the event, as read from the task dir
    inline = {name: base64.b64decode(data) for name, data in event["files"].items()}
    assert inline == {
        "stdout.txt": b"out\n",
        "stderr.txt": b"err\n",
        "exit.json": (task / "exit.json").read_bytes(),
    }

    attempt = json.loads((task / "attempt.json").read_text())
    assert attempt["key"] == "job/t1" and attempt["attempt"] == 1
    assert attempt["pid"] == record["pid"] and attempt["startTime"] == record["startTime"]
    assert isinstance(attempt["wrapperPid"], int) and isinstance(attempt["wrapperStartTicks"], int)

    query = {"key": "job/t1", "taskDir": "workitems/job/t1", "attempt": 1}
    status = agent.call("status", {"tasks": [query]})
    assert status == {"tasks": [{"key": "job/t1", "state": "exited", "exit": record}]}

    # A retry right after the exited event is not refused (the wrapper may still be
    # exiting) and truncates the output and replaces the records.
    assert agent.call("spawn", spawn_args("t1", ["true"], attempt=2))["pid"] > 0
    assert agent.wait_exited("workitems/job/t1")["exit"]["attempt"] == 2
    assert (task / "stdout.txt").read_bytes() == b"" and (task / "stderr.txt").read_bytes() == b""
    states = agent.call("status", {"tasks": [query, {**query, "attempt": 2}]})["tasks"]
    assert [s["state"] for s in states] == ["missing", "exited"]


def test_large_or_linked_outputs_do_not_ride_the_exit_event(agents, root, tmp_path):
    agent = agents()
    secret = tmp_path / "secret"
    secret.write_text("not the task's")
    agent.call("spawn", spawn_args("big", ["sh", "-c", "head -c 70000 /dev/zero"]))
    files = agent.wait_exited("workitems/job/big")["files"]
    assert files["stdout.txt"] is None  # too large: the controller fetches it
    assert set(files) == {"stdout.txt", "stderr.txt", "exit.json"}
    # a task that swaps its stderr.txt for a link to another file gets nothing inline
    swap = f"ln -sf {secret} ../stderr.txt"  # the command runs in the task dir's wd/
    agent.call("spawn", spawn_args("swap", ["sh", "-c", swap]))
    files = agent.wait_exited("workitems/job/swap")["files"]
    assert "stderr.txt" not in files and files["exit.json"]


def test_argv_runs_without_a_shell(agents, root):
    agent = agents()
    agent.call("spawn", spawn_args("meta", ["echo", "$(id)", ";", "*", "`id`", "|", "&&"]))
    assert agent.wait_exited("workitems/job/meta")["exit"]["exitCode"] == 0
    assert (root / "workitems/job/meta/stdout.txt").read_text() == "$(id) ; * `id` | &&\n"


def test_environment_and_working_directory(agents, root):
    agent = agents(env={"FLEET_TEST_INHERITED": "from-agent", "FLEET_TEST_OVERRIDE": "old"})
    # The env op's variables (the node's) lie under every later spawn's own.
    assert agent.call("env", {"env": {"FLEET_NODE_ID": "n1", "FLEET_TEST_BASE": "base"}}) == {}
    script = (
        'pwd; echo "$FLEET_TEST_INHERITED $FLEET_TEST_OVERRIDE $FLEET_TASK_ATTEMPT'
        ' $FLEET_NODE_ID $FLEET_TEST_BASE"'
    )
    env = {"FLEET_TEST_OVERRIDE": "new", "FLEET_TASK_ATTEMPT": "1", "FLEET_TEST_BASE": "task"}
    agent.call("spawn", spawn_args("env", ["sh", "-c", script], env=env))
    agent.call("spawn", spawn_args("cwd", ["pwd"], workingDir="sub/dir"))
    agent.wait_exited("workitems/job/env")
    agent.wait_exited("workitems/job/cwd")
    task = Path(os.path.realpath(root / "workitems/job"))
    assert (task / "env/stdout.txt").read_text() == f"{task / 'env/wd'}\nfrom-agent new 1 n1 task\n"
    assert (task / "cwd/stdout.txt").read_text() == f"{task / 'cwd/sub/dir'}\n"


def test_program_that_cannot_start(agents, root):
    agent = agents()
    assert agent.error_code("spawn", spawn_args("nf", ["/nonexistent/prog"])) == (
        "CommandProgramNotFound"
    )
    record = json.loads((root / "workitems/job/nf/exit.json").read_text())
    assert record["error"]["code"] == "CommandProgramNotFound"
    assert record["exitCode"] is None and record["pid"] is None and record["attempt"] == 1
    query = {"key": "job/nf", "taskDir": "workitems/job/nf", "attempt": 1}
    assert agent.call("status", {"tasks": [query]})["tasks"][0] == {
        "key": "job/nf",
        "state": "exited",
        "exit": record,
    }

    script = root / "shared" / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    code = agent.error_code("spawn", spawn_args("nx", [str(script)]))
    assert code == "CommandProgramNotExecutable"


def test_paths_outside_the_root_are_refused(agents, root, tmp_path):
    agent = agents()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "workitems" / "escape").symlink_to(outside)
    bad_task_dirs = ["../x", "/tmp/x", str(root / "workitems/x"), "workitems/../../x", "", "."]
    bad_task_dirs += ["workitems/escape/t", 7, None]
    for task_dir in bad_task_dirs:
        args = spawn_args("t", ["true"], taskDir=task_dir)
        assert agent.error_code("spawn", args) == "BadPath", task_dir
        query = {"key": "k", "taskDir": task_dir, "attempt": 1}
        assert agent.error_code("status", {"tasks": [query]}) == "BadPath", task_dir
        assert agent.error_code("kill", query) == "BadPath", task_dir
    for working_dir in ["../y", "/tmp", "a/../../y", "../../escape/y"]:
        args = spawn_args("t", ["true"], workingDir=working_dir)
        assert agent.error_code("spawn", args) == "BadPath", working_dir
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert not (root / "workitems/job/t").exists()


def test_wall_clock_limit_kills_the_process_tree(agents, root):
    agent = agents()
    script = "sleep 60 & echo $! > pids; sleep 60 & echo $! >> pids; echo $$ >> pids; wait"
    began = time.monotonic()
    agent.call("spawn", spawn_args("slow", ["sh", "-c", script], maxWallClockSeconds=1))
    record = agent.wait_exited("workitems/job/slow")["exit"]
    elapsed = time.monotonic() - began
    assert record["timedOut"] is True
    assert record["signal"] in (signal.SIGTERM, signal.SIGKILL)
    assert record["exitCode"] == 128 + record["signal"]
    assert 0.9 < elapsed < 3.5  # all died on SIGTERM: no waiting out the 3 s SIGKILL grace
    pids = [int(p) for p in (root / "workitems/job/slow/wd/pids").read_text().split()]
    assert len(pids) == 3
    for pid in pids:
        assert process_gone(pid), pid


def test_kill_op_terminates_a_running_task(agents, root):
    agent = agents()
    args = spawn_args("sleeper", ["sleep", "60"])
    query = {"key": args["key"], "taskDir": args["taskDir"], "attempt": 1}
    pid = agent.call("spawn", args)["pid"]
    assert agent.call("status", {"tasks": [query]})["tasks"][0]["state"] == "running"
    assert agent.error_code("spawn", args) == "TaskAlreadyRunning"
    assert agent.call("kill", {**query, "attempt": 2}) == {"killed": False}
    assert agent.call("kill", {**query, "key": "other"}) == {"killed": False}
    assert agent.call("kill", query) == {"killed": True}
    record = agent.wait_exited(args["taskDir"])["exit"]
    assert record["signal"] == signal.SIGTERM and record["exitCode"] == 128 + signal.SIGTERM
    assert record["timedOut"] is False and process_gone(pid)
    assert agent.call("kill", query) == {"killed": False}
    never = {"key": "job/none", "taskDir": "workitems/job/none", "attempt": 1}
    assert agent.call("kill", never) == {"killed": False}


def spawn_term_ignoring_task(agent, root, name):
    """Start a task that ignores SIGTERM and wait until it does."""
    script = "trap '' TERM; echo ready; exec sleep 60"
    args = spawn_args(name, ["sh", "-c", script])
    agent.call("spawn", args)
    stdout = root / args["taskDir"] / "stdout.txt"
    wait_until(lambda: stdout.read_text() == "ready\n", what="the task to trap SIGTERM")
    return {"key": args["key"], "taskDir": args["taskDir"], "attempt": 1}


def test_kill_op_escalates_to_sigkill_after_the_grace(agents, root):
    agent = agents()
    query = spawn_term_ignoring_task(agent, root, "stubborn")
    began = time.monotonic()
    assert agent.call("kill", query) == {"killed": True}
    assert agent.call("ping")  # the loop keeps serving during the grace
    assert time.monotonic() - began < 1
    record = agent.wait_exited(query["taskDir"])["exit"]
    assert time.monotonic() - began > 2.5
    assert record["signal"] == signal.SIGKILL and record["exitCode"] == 137


def test_kill_grace_is_kept_after_the_agent_exits(agents, root):
    first = agents()
    query = spawn_term_ignoring_task(first, root, "stubborn")
    assert first.call("kill", query) == {"killed": True}
    assert first.call("shutdown") == {}
    assert first.proc.wait(5) == 0
    second = agents()
    record = second.wait_exited(query["taskDir"])["exit"]
    assert record["signal"] == signal.SIGKILL


def gated_task(root, name):
    """Spawn args of a task that runs until the test writes a line to its FIFO."""
    gate = root / "shared" / f"{name}.gate"
    os.mkfifo(gate)
    return gate, spawn_args(name, ["sh", "-c", f'read line < "{gate}"; echo "got $line"'])


def test_task_outlives_a_killed_agent_and_the_next_agent_reports_it(agents, root):
    first = agents()
    gate, args = gated_task(root, "gated")
    query = {"key": args["key"], "taskDir": args["taskDir"], "attempt": 1}
    pid = first.call("spawn", args)["pid"]
    wrapper = json.loads((root / args["taskDir"] / "attempt.json").read_text())["wrapperPid"]
    wrapper_fds = Path(f"/proc/{wrapper}/fd")

    def only_devnull():  # the wrapper closes its start-result pipe after the agent read it
        return {os.readlink(fd) for fd in wrapper_fds.iterdir()} == {"/dev/null"}

    wait_until(only_devnull, what="the wrapper to hold only /dev/null")
    first.proc.kill()
    first.proc.wait()
    # No wrapper or task holds the agent's stdout: it reaches EOF at once.
    assert first.next_message(timeout=5) is None
    assert not process_gone(pid) and not process_gone(wrapper)

    second = agents()
    assert "error" not in second.hello
    assert second.call("status", {"tasks": [query]})["tasks"][0]["state"] == "running"
    with open(gate, "w") as f:
        f.write("go\n")
    record = second.wait_exited(args["taskDir"])["exit"]
    assert record["exitCode"] == 0 and record["pid"] == pid
    assert (root / args["taskDir"] / "stdout.txt").read_text() == "got go\n"
    status = second.call("status", {"tasks": [query]})
    assert status["tasks"] == [{"key": args["key"], "state": "exited", "exit": record}]


def test_task_that_ended_while_no_agent_ran_is_reported_by_status(agents, root):
    first = agents()
    gate, args = gated_task(root, "offline")
    pid = first.call("spawn", args)["pid"]
    first.close()  # EOF on stdin: the agent exits, the task keeps running
    assert first.proc.returncode == 0
    assert not (root / "volatile" / "agent.sock").exists()
    assert not process_gone(pid)
    with open(gate, "w") as f:
        f.write("late\n")
    exit_file = root / args["taskDir"] / "exit.json"
    wait_until(exit_file.exists, what="the exit record")

    second = agents()
    query = {"key": args["key"], "taskDir": args["taskDir"], "attempt": 1}
    [state] = second.call("status", {"tasks": [query]})["tasks"]
    assert state["state"] == "exited"
    assert state["exit"] == json.loads(exit_file.read_text()) and state["exit"]["exitCode"] == 0


def test_second_agent_waits_for_the_lock(agents):
    first = agents()
    began = time.monotonic()
    busy = agents(env={"FLEET_AGENT_LOCK_TIMEOUT": "0.5"})
    assert busy.hello["protocol"] == 5 and busy.hello["error"]["code"] == "AgentBusy"
    assert busy.proc.wait(5) == 3
    assert time.monotonic() - began >= 0.45
    assert first.call("ping")

    waiting = agents(env={"FLEET_AGENT_LOCK_TIMEOUT": "10"}, read_hello=False)
    with pytest.raises(queue.Empty):
        waiting.incoming.get(timeout=0.3)  # still waiting for the lock
    assert first.call("shutdown") == {}
    hello = waiting.next_message()
    assert "error" not in hello and hello["pid"] == waiting.proc.pid
    assert waiting.call("ping")


def test_malformed_input_never_stops_the_agent(agents, root):
    agent = agents()
    agent_socket = root / "volatile" / "agent.sock"
    assert len(str(agent_socket)) < 108, "tmp_path too long for a Unix socket path"
    for line in [b"this is not json", b"\xff\xfe{}", b"[" * 100_000, b'{"type": "request"']:
        agent.send_raw(line + b"\n")
        assert agent.wait_event("protocolError")["message"]

    agent.send_raw(b"[1, 2]\n{}\n")
    for _ in range(2):
        reply = agent.wait_for(lambda m: m["type"] == "reply")
        assert reply["id"] is None and reply["error"]["code"] == "BadRequest"

    assert agent.error_code("reboot") == "BadRequest"
    agent.send_raw(b'{"type": "request", "id": "x", "op": ["spawn"]}\n')
    assert agent.wait_reply("x")["error"]["code"] == "BadRequest"
    agent.send_raw(b'{"type": "event", "id": 99, "op": "ping"}\n')
    assert agent.wait_reply(99)["error"]["code"] == "BadRequest"
    bad_spawns = [
        {"argv": []},
        {"argv": "echo hi"},
        {"argv": ["echo", 1]},
        {"argv": ["echo", "a\u0000b"]},
        {"env": {"A": 1}},
        {"env": {"A=B": "x"}},
        {"env": ["A"]},
        {"attempt": "1"},
        {"attempt": True},
        {"key": ""},
        {"maxWallClockSeconds": -1},
        {"maxWallClockSeconds": "10"},
    ]
    for change in bad_spawns:
        args = {**spawn_args("t", ["true"]), **change}
        assert agent.error_code("spawn", args) == "BadRequest", change
    assert agent.error_code("spawn", [1]) == "BadRequest"
    for env in ({"A": 1}, {"": "x"}, ["A"], "A=1"):
        assert agent.error_code("env", {"env": env}) == "BadRequest", env
    assert agent.error_code("status", {"tasks": "all"}) == "BadRequest"
    assert agent.error_code("status", {"tasks": [{"taskDir": "workitems/a"}]}) == "BadRequest"

    agent.send_raw(b"\n   \n")  # blank lines are ignored
    # Junk on the wrapper socket is dropped without an event.
    for junk in [b"", b"garbage\n", b'{"event": "other"}\n', b'{"event": "exited", "taskDir": [1]']:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(agent_socket))
            sock.sendall(junk)
    ping_id = agent.send("ping")
    assert agent.next_message()["id"] == ping_id
    assert agent.proc.poll() is None


def test_status_of_unknown_attempts_is_missing(agents):
    agent = agents()
    agent.call("spawn", spawn_args("done", ["true"]))
    agent.wait_exited("workitems/job/done")
    queries = [
        {"key": "job/done", "taskDir": "workitems/job/done", "attempt": 2},
        {"key": "job/other", "taskDir": "workitems/job/done", "attempt": 1},
        {"key": "job/never", "taskDir": "workitems/job/never", "attempt": 1},
    ]
    states = agent.call("status", {"tasks": queries})["tasks"]
    assert [(s["key"], s["state"]) for s in states] == [
        ("job/done", "missing"),
        ("job/other", "missing"),
        ("job/never", "missing"),
    ]
    assert agent.call("status", {"tasks": []}) == {"tasks": []}


def test_hundreds_of_spawns_are_served_quickly(agents):
    agent = agents()
    agent_fds = Path(f"/proc/{agent.proc.pid}/fd")
    fds_before = len(list(agent_fds.iterdir()))
    count = 300
    began = time.monotonic()
    ids = [agent.send("spawn", spawn_args(f"t{i}", ["true"])) for i in range(count)]
    for request_id in ids:
        reply = agent.wait_reply(request_id)
        assert reply["ok"], reply
    for i in range(count):
        assert agent.wait_exited(f"workitems/job/t{i}")["exit"]["exitCode"] == 0
    elapsed = time.monotonic() - began
    assert elapsed < 10, f"{count} tasks took {elapsed:.2f} s"
    assert len(list(agent_fds.iterdir())) == fds_before  # no pipe or connection leaked


def batch_line(messages):
    return json.dumps({"type": "batch", "messages": messages}).encode() + b"\n"


def test_one_batch_line_carries_many_spawns_and_replies_come_batched(agents):
    agent = agents()
    count = 40
    requests = [
        {"type": "request", "id": 100 + i, "op": "spawn", "args": spawn_args(f"b{i}", ["true"])}
        for i in range(count)
    ]
    requests.append({"type": "request", "id": 999, "op": "nosuchop", "args": {}})
    requests.append("not a request")
    agent.send_raw(batch_line(requests))
    for i in range(count):
        assert agent.wait_reply(100 + i)["ok"]
    assert agent.wait_reply(999)["error"]["code"] == "BadRequest"
    assert agent.wait_reply(None)["error"]["code"] == "BadRequest"  # no id to answer to
    for i in range(count):
        assert agent.wait_exited(f"workitems/job/b{i}")["exit"]["exitCode"] == 0
    # the agent sent what it had together: some lines carried several messages
    assert agent.lines_with_batches >= 1
    # and a spawn's reply still comes before its exited event
    order = [(m.get("id"), m.get("taskDir")) for m in agent.transcript]
    for i in range(count):
        assert order.index((100 + i, None)) < order.index((None, f"workitems/job/b{i}"))


@pytest.mark.parametrize(
    "line",
    [
        b'{"type": "batch", "messages": 5}\n',
        b'{"type": "batch"}\n',
        b'{"type": "batch", "messages": [{"type": "batch", "messages": []}]}\n',
    ],
)
def test_malformed_batches_are_refused_and_the_agent_goes_on(agents, line):
    agent = agents()
    agent.send_raw(line)
    if b"[{" in line:  # a batch inside a batch is not a request
        assert agent.wait_reply(None)["error"]["code"] == "BadRequest"
    else:
        assert "batch" in agent.wait_event("protocolError")["message"]
    assert agent.call("ping")["bootId"]


def test_tasks_of_a_protocol_3_agent_are_reported_by_the_new_agent(agents, root):
    """An upgrade: the old agent (released file, protocol 3) exits with its channel, its
    task keeps running, and the new agent, uploaded beside it, reports that task."""
    old = agents(agent=OLD_AGENT)
    assert old.hello["protocol"] == 3
    gate, args = gated_task(root, "upgraded")
    pid = old.call("spawn", args)["pid"]
    old.close()
    assert not process_gone(pid)

    new = agents()
    assert new.hello["protocol"] == 5 and "error" not in new.hello
    query = {"key": args["key"], "taskDir": args["taskDir"], "attempt": 1}
    assert new.call("status", {"tasks": [query]})["tasks"][0]["state"] == "running"
    with open(gate, "w") as f:
        f.write("after the upgrade\n")
    event = new.wait_exited(args["taskDir"])
    assert event["exit"]["exitCode"] == 0 and event["exit"]["protocol"] == 3
    assert base64.b64decode(event["files"]["stdout.txt"]) == b"got after the upgrade\n"


# ---------------------------------------------------------------- calls from tasks


def client_env(root, env=None):
    full_env = {**os.environ, "FLEET_AGENT_DIR": str(root / "volatile")}
    return {**full_env, "FLEET_TASK_TOKEN": "tok-1", **(env or {})}


def run_client(session, *argv, env=None, stdin_text=None):
    """Start fleet_task.py in a task's session (FLEET_AGENT_DIR, FLEET_TASK_TOKEN set)."""
    full_env = client_env(session.root, env)
    return session.run([AGENT_PYTHON, str(CLIENT), *argv], full_env, (stdin_text or "").encode())


def run_client_outside(root, *argv, env=None, stdin_text=None):
    """Start fleet_task.py outside any task's session."""
    full_env = client_env(root, env)
    read_fd, write_fd = os.pipe()
    os.write(write_fd, (stdin_text or "").encode())  # small: fits in the pipe
    os.close(write_fd)
    with open(read_fd, "rb") as stdin:
        return subprocess.Popen(
            [AGENT_PYTHON, str(CLIENT), *argv],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            text=True,
        )


def client_outcome(proc):
    """Wait for a client; return (exit status, stdout, stderr)."""
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out, err


@pytest.fixture
def session_of():
    """Start TaskSession helpers (tasks whose session calls come from); stop them after."""
    started = []

    def start(agent, root, name="caller"):
        started.append(TaskSession(agent, root, AGENT_PYTHON, name))
        return started[-1]

    yield start
    for session in started:
        session.close()


def call_line(token="tok-1", op="listTasks", args=None):
    return json.dumps({"call": {"token": token, "op": op, "args": args or {}}}).encode() + b"\n"


def open_call(root_or_session, line):
    """Connect to agent.sock (in a task's session when given one, else from the test
    process) and send line; return the socket."""
    if isinstance(root_or_session, TaskSession):
        sock = root_or_session.connect()
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(root_or_session / "volatile" / "agent.sock"))
    sock.settimeout(TIMEOUT)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(line)
    return sock


def read_answer(sock):
    """Return the answer line the agent sends on sock (then EOF), decoded."""
    data = b""
    while chunk := sock.recv(1 << 16):
        data += chunk
    sock.close()
    assert data.endswith(b"\n") and data.count(b"\n") == 1, data[:200]
    return json.loads(data)


def answer(agent, call_id, **fields):
    """Send an answer request; return its reply."""
    return agent.request("answer", {"callId": call_id, **fields})


def agent_socket_count(agent):
    """Return how many sockets the agent holds open (stdin/stdout are pipes)."""
    count = 0
    for fd in Path(f"/proc/{agent.proc.pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            count += os.readlink(fd).startswith("socket:")
    return count


def test_call_from_a_task_reaches_the_controller_and_back(agents, tmp_path, session_of):
    # A root too long for a socket path: agent and client both use the relative name.
    root = tmp_path / ("r" * 60) / ("s" * 60) / "root"
    agent = agents(node_root=root)
    assert len(str(root / "volatile" / "agent.sock")) > 107
    session = session_of(agent, root)
    client = run_client(
        session, "add-task", "--id", "t1", "--command-line", "echo hi", "--env", "A=1=2"
    )
    event = agent.wait_event("call")
    assert event == {
        "type": "event",
        "event": "call",
        "callId": event["callId"],
        "taskKey": "job/caller",
        "attempt": 1,
        "token": "tok-1",
        "op": "addTasks",
        "args": {
            "tasks": [
                {
                    "id": "t1",
                    "commandLine": "echo hi",
                    "environmentSettings": [{"name": "A", "value": "1=2"}],
                }
            ]
        },
    }
    assert isinstance(event["callId"], int)
    added = {"id": "t1", "state": "active"}
    reply = answer(agent, event["callId"], ok=True, result={"tasks": [added]})
    assert reply["ok"] and reply["result"] == {}, reply
    status, out, err = client_outcome(client)
    assert (status, json.loads(out), err) == (0, added, "")
    # Answered once: a second answer is refused.
    assert answer(agent, event["callId"], ok=True, result={})["error"]["code"] == "UnknownCall"

    tasks = [{"id": "a", "commandLine": "true"}, {"id": "b", "commandLine": "false"}]
    client = run_client(session, "add-tasks", "--json-file", "-", stdin_text=json.dumps(tasks))
    second = agent.wait_event("call")
    assert second["callId"] > event["callId"]
    assert (second["op"], second["args"]) == ("addTasks", {"tasks": tasks})
    assert answer(agent, second["callId"], ok=True, result={"tasks": tasks})["ok"]
    status, out, _ = client_outcome(client)
    assert (status, json.loads(out)) == (0, tasks)

    client = run_client(session, "show-job")
    third = agent.wait_event("call")
    assert (third["op"], third["args"]) == ("showJob", {})
    assert answer(agent, third["callId"], ok=True, result={"job": {"id": "J"}})["ok"]
    status, out, _ = client_outcome(client)
    assert (status, json.loads(out)) == (0, {"id": "J"})


PYTHON_API = """
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("ft", sys.argv[1])
ft = importlib.util.module_from_spec(spec); spec.loader.exec_module(ft)
def show(function, *args):
    try:
        print(json.dumps(["ok", function(*args)]))
    except ft.FleetTaskError as exc:
        print(json.dumps(["error", exc.code, exc.message, exc.exit_status]))
    sys.stdout.flush()
cwd = os.getcwd()
show(ft.list_tasks)
print(json.dumps(os.getcwd() == cwd))
show(ft.add_tasks, [{"id": "y", "commandLine": "true"}])
show(ft.call, "showJob", {}, 0.3)
del os.environ["FLEET_TASK_TOKEN"]
show(ft.show_job)
"""


def test_python_api_of_the_client(agents, root, session_of):
    agent = agents()
    session = session_of(agent, root)
    script = session.run(
        [AGENT_PYTHON, "-c", PYTHON_API, str(CLIENT)],
        client_env(root, {"FLEET_TASK_TOKEN": "tok-2"}),
    )
    event = agent.wait_event("call")
    assert (event["token"], event["op"], event["args"]) == ("tok-2", "listTasks", {})
    assert answer(agent, event["callId"], ok=True, result={"tasks": [{"id": "x"}]})["ok"]

    event = agent.wait_event("call")
    assert event["args"] == {"tasks": [{"id": "y", "commandLine": "true"}]}
    error = {"code": "TaskExists", "message": "task y exists", "exitStatus": 4}
    assert answer(agent, event["callId"], ok=False, error=error)["ok"]

    event = agent.wait_event("call")
    assert event["op"] == "showJob"
    wait_until(lambda: agent_socket_count(agent) == 1, what="the agent to drop the call")
    assert answer(agent, event["callId"], ok=True, result={})["error"]["code"] == "UnknownCall"

    status, out, _ = client_outcome(script)
    assert status == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        ["ok", [{"id": "x"}]],
        True,  # the working directory is restored after connecting
        ["error", "TaskExists", "task y exists", 4],
        ["error", "TimedOut", "no answer from the controller within 0.3 s", 5],
        [
            "error",
            "NotInATask",
            "FLEET_TASK_TOKEN is not set: calls work only from a fleet task that may call",
            2,
        ],
    ]


def test_error_answer_sets_the_client_exit_status(agents, root, tmp_path, session_of):
    agent = agents()
    client = run_client(session_of(agent, root), "list-tasks")
    event = agent.wait_event("call")
    error = {"code": "JobNotActive", "message": "the job is completed", "exitStatus": 4}
    assert answer(agent, event["callId"], ok=False, error=error)["ok"]
    assert client_outcome(client) == (4, "", "error [JobNotActive]: the job is completed\n")

    # Outside a task, or with no agent listening, the client fails on its own.
    outside = run_client_outside(root, "show-job", env={"FLEET_TASK_TOKEN": ""})
    status, _, err = client_outcome(outside)
    assert status == 2 and err.startswith("error [NotInATask]: FLEET_TASK_TOKEN")
    no_agent = {"FLEET_AGENT_DIR": str(tmp_path)}
    status, _, err = client_outcome(run_client_outside(root, "show-job", env=no_agent))
    assert status == 1 and err.startswith("error [AgentUnavailable]: ")


def test_client_that_disconnects_leaves_an_unknown_call(agents, root, session_of):
    agent = agents()
    session = session_of(agent, root)
    baseline = agent_socket_count(agent)
    sock = open_call(session, call_line())
    event = agent.wait_event("call")
    sock.close()
    wait_until(lambda: agent_socket_count(agent) == baseline, what="the agent to drop the call")
    reply = answer(agent, event["callId"], ok=True, result={})
    assert reply["error"]["code"] == "UnknownCall"
    assert answer(agent, 12345, ok=True, result={})["error"]["code"] == "UnknownCall"
    bad_answers = [
        {"callId": "1", "ok": True, "result": {}},
        {"callId": 1, "ok": "yes", "result": {}},
        {"callId": 1, "ok": True, "result": [1]},
        {"callId": 1, "ok": False},
        {"ok": True, "result": {}},
    ]
    for args in bad_answers:
        assert agent.error_code("answer", args) == "BadRequest", args


def test_pending_calls_get_controller_unavailable_when_stdin_closes(agents, root, session_of):
    agent = agents()
    session = session_of(agent, root)
    client = run_client(session, "show-job")
    sock = open_call(session, call_line(op="showJob"))
    for _ in range(2):
        agent.wait_event("call")
    agent.close()
    assert agent.proc.returncode == 0
    status, out, err = client_outcome(client)
    assert (status, out) == (1, "") and err.startswith("error [ControllerUnavailable]: ")
    error = read_answer(sock)["error"]
    assert error["code"] == "ControllerUnavailable" and error["exitStatus"] == 1


def test_malformed_and_oversized_calls_are_refused(agents, root, tmp_path):
    agent = agents()
    lines = [
        b"not json\n",
        b'{"call": "listTasks"}\n',
        b'{"call": {"token": "t", "op": 1, "args": {}}}\n',
        b'{"call": {"token": 5, "op": "listTasks", "args": {}}}\n',
        b'{"call": {"token": "", "op": "listTasks", "args": {}}}\n',
        b'{"call": {"token": "t", "op": "listTasks"}}\n',
        b'{"call": {"token": "t", "op": "listTasks", "args": [1]}}\n',
        b'{"event": "other"}\n',
        b"[" * 100_000 + b"\n",
        b'{"call": {"token": "t", "op": "x", "args": {}}',  # no newline: the client shuts down
    ]
    for line in lines:
        sock = open_call(root, line)
        if not line.endswith(b"\n"):
            sock.shutdown(socket.SHUT_WR)
        error = read_answer(sock)["error"]
        assert (error["code"], error["exitStatus"]) == ("BadCall", 2), line[:60]

    big = b'{"call": {"token": "t", "op": "addTasks", "args": {"x": "' + b"a" * (1 << 20)
    error = read_answer(open_call(root, big + b'"}}}\n'))["error"]
    assert error["code"] == "CallTooLarge"
    # The client reads the refusal even though the agent stopped reading its line.
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"id": "big", "commandLine": "x" * (1 << 20)}))
    big_call = run_client_outside(root, "add-tasks", "--json-file", str(tasks))
    status, _, err = client_outcome(big_call)
    assert status == 2 and err.startswith("error [CallTooLarge]: ")

    ping_id = agent.send("ping")
    assert agent.next_message()["id"] == ping_id  # nothing was forwarded
    assert agent.proc.poll() is None


def test_concurrent_calls_are_answered_out_of_order_beside_exit_notices(agents, root, session_of):
    agent = agents()
    session = session_of(agent, root)
    first = run_client(session, "list-tasks", env={"FLEET_TASK_TOKEN": "first"})
    event_1 = agent.wait_event("call")
    second = run_client(session, "list-tasks", env={"FLEET_TASK_TOKEN": "second"})
    event_2 = agent.wait_event("call")
    assert (event_1["token"], event_2["token"]) == ("first", "second")
    assert event_2["callId"] > event_1["callId"]

    agent.call("spawn", spawn_args("beside", ["true"]))
    assert agent.wait_exited("workitems/job/beside")["exit"]["exitCode"] == 0

    assert answer(agent, event_2["callId"], ok=True, result={"tasks": [{"id": "2"}]})["ok"]
    assert client_outcome(second)[:2] == (0, '[\n  {\n    "id": "2"\n  }\n]\n')
    assert first.poll() is None
    assert answer(agent, event_1["callId"], ok=True, result={"tasks": [{"id": "1"}]})["ok"]
    status, out, _ = client_outcome(first)
    assert (status, json.loads(out)) == (0, [{"id": "1"}])


def test_too_many_pending_calls_are_refused(agents, root, session_of):
    agent = agents()
    session = session_of(agent, root)
    socks = [open_call(session, call_line(token=f"t{i}")) for i in range(64)]
    events = [agent.wait_event("call") for _ in socks]
    assert len({e["callId"] for e in events}) == 64
    error = read_answer(open_call(session, call_line()))["error"]
    assert (error["code"], error["exitStatus"]) == ("TooManyCalls", 1)
    assert answer(agent, events[0]["callId"], ok=True, result={"n": 0})["ok"]
    assert read_answer(socks[0]) == {"ok": True, "result": {"n": 0}}
    sock = open_call(session, call_line(token="late"))
    assert agent.wait_event("call")["token"] == "late"
    sock.close()
    for other in socks[1:]:
        other.close()


def test_a_large_answer_reaches_a_slow_client(agents, root, session_of):
    agent = agents()
    sock = open_call(session_of(agent, root), call_line())
    event = agent.wait_event("call")
    tasks = [{"id": f"t{i}", "commandLine": "x" * 1000} for i in range(5000)]
    assert answer(agent, event["callId"], ok=True, result={"tasks": tasks})["ok"]
    assert agent.call("ping")  # the agent serves while the answer waits for the client
    assert read_answer(sock) == {"ok": True, "result": {"tasks": tasks}}


ESCAPED_CALLER = """
import os, socket, sys
os.setsid()  # leaves the task's session
os.chdir(sys.argv[1])
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect("agent.sock")
sock.sendall(sys.argv[2].encode())
sys.stdout.write(sock.makefile().readline())
"""


def test_calls_from_outside_every_task_session_are_refused(agents, root, session_of):
    agent = agents()
    refused = {"code": "CallerNotATask", "exitStatus": 1}
    error = read_answer(open_call(root, call_line()))["error"]
    assert {k: error[k] for k in refused} == refused
    # A process a task started, but which left the task's session, is no task either.
    session = session_of(agent, root)
    line = call_line().decode()
    escaped = session.run([AGENT_PYTHON, "-c", ESCAPED_CALLER, str(root / "volatile"), line], {})
    status, out, err = client_outcome(escaped)
    assert status == 0, err
    assert json.loads(out)["error"]["code"] == "CallerNotATask"
    # Nothing reached the controller; a call from the task itself still does.
    ping_id = agent.send("ping")
    assert agent.next_message()["id"] == ping_id
    sock = open_call(session, call_line())
    assert agent.wait_event("call")["taskKey"] == "job/caller"
    sock.close()


def test_a_task_started_by_an_earlier_agent_is_recognized_as_the_caller(agents, root, session_of):
    first = agents()
    session = session_of(first, root, name="manager")
    first.close()
    second = agents()
    sock = open_call(session, call_line())
    event = second.wait_event("call")
    assert (event["taskKey"], event["attempt"]) == ("job/manager", 1)
    assert answer(second, event["callId"], ok=True, result={"n": 1})["ok"]
    assert read_answer(sock) == {"ok": True, "result": {"n": 1}}


def mode_of(path):
    return stat.S_IMODE(path.lstat().st_mode)


def test_node_root_and_task_files_are_private_to_the_login_user(agents, root):
    root.mkdir()
    (root / "workitems/job/old/wd").mkdir(parents=True, mode=0o755)  # as SFTP makes them
    agent = agents(env={})
    assert mode_of(root) == 0o711  # others may only pass through, to their own wd
    modes = {name: mode_of(root / name) for name in LAYOUT}
    assert modes == {
        "startup": 0o711,
        "shared": 0o1777,
        "applications": 0o711,
        "certs": 0o700,
        "fsmounts": 0o711,
        "volatile": 0o700,
        "workitems": 0o711,
    }
    for name in ("new", "old"):
        agent.call("spawn", spawn_args(name, ["sh", "-c", "umask; echo x > made"]))
        agent.wait_exited(f"workitems/job/{name}")
        task = root / "workitems/job" / name
        assert mode_of(task.parent) == 0o711
        assert (mode_of(task), mode_of(task / "wd")) == (0o700, 0o700)
        for file in ("stdout.txt", "stderr.txt", "exit.json", "attempt.json"):
            assert mode_of(task / file) == 0o600, file
        # The command keeps the umask the agent was started with (here the test's).
        umask = os.umask(0)
        os.umask(umask)
        assert (task / "stdout.txt").read_text() == f"{umask:04o}\n"
        assert mode_of(task / "wd/made") == 0o666 & ~umask
