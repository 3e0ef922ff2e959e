#!/usr/bin/env python3
"""fleet-task: call the fleet controller from inside a task, through the node agent."""

# Contract: "Calls from tasks" in docs/agent-protocol.md. Stdlib only; Python 3.8+.
#
# The controller uploads this file next to the agent and gives a task that may call
# (a job manager) FLEET_TASK_TOKEN, FLEET_AGENT_DIR and FLEET_TASK_CLIENT (this file's
# path). Use it as a module (call, add_tasks, list_tasks, show_job) or as a command:
#
#     fleet-task add-task --id T --command-line "..." [--env K=V ...]
#     fleet-task add-tasks --json-file tasks.json   (a task object or a list; - = stdin)
#     fleet-task list-tasks
#     fleet-task show-job
#
# The command prints the result as JSON; on error it prints "error [CODE]: message"
# to stderr and exits with the error's exit status.

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import threading
import time

TOKEN_ENV = "FLEET_TASK_TOKEN"
AGENT_DIR_ENV = "FLEET_AGENT_DIR"
SOCKET_NAME = "agent.sock"
DEFAULT_TIMEOUT = 120.0
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_TIMED_OUT = 1, 2, 5

_chdir_lock = threading.Lock()  # connecting changes the process's working directory


class FleetTaskError(Exception):
    """A failed call: a stable ``code``, a ``message`` and the CLI's ``exit_status``."""

    def __init__(self, code: str, message: str, exit_status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_status = exit_status


def _environment() -> tuple:
    """Return (token, agent dir) from the environment; raises FleetTaskError."""
    values = []
    for name in (TOKEN_ENV, AGENT_DIR_ENV):
        value = os.environ.get(name, "")
        if not value:
            message = "%s is not set: calls work only from a fleet task that may call" % name
            raise FleetTaskError("NotInATask", message, EXIT_BAD_INPUT)
        values.append(value)
    return tuple(values)


def _connect(agent_dir: str, timeout: float) -> socket.socket:
    """Connect to agent.sock in agent_dir (by a relative name: socket paths are limited
    to 107 bytes), then go back to the previous working directory."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(max(0.001, timeout))
        with _chdir_lock:
            previous = os.open(".", getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY)
            try:
                os.chdir(agent_dir)
                sock.connect(SOCKET_NAME)
            finally:
                try:
                    os.fchdir(previous)
                finally:
                    os.close(previous)
    except socket.timeout:
        sock.close()
        message = "the agent did not accept the call in time"
        raise FleetTaskError("TimedOut", message, EXIT_TIMED_OUT) from None
    except OSError as exc:
        sock.close()
        message = "no node agent is listening in %s: %s" % (agent_dir, exc)
        raise FleetTaskError("AgentUnavailable", message) from None
    return sock


def _exchange(sock: socket.socket, line: bytes, deadline: float) -> bytes:
    """Send the call line and return the answer line (without the newline)."""
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    # A broken pipe: the agent refused the call early (CallTooLarge); read its answer.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(line)
    data = b""
    while b"\n" not in data:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            message = "the agent closed the connection without an answer"
            raise FleetTaskError("ControllerUnavailable", message)
        data += chunk
    return data.split(b"\n", 1)[0]


def _parse_answer(line: bytes) -> dict:
    """Return the result of an answer line; raises FleetTaskError for an error answer."""
    try:
        answer = json.loads(line)
    except (ValueError, RecursionError):
        answer = None
    if not isinstance(answer, dict):
        raise FleetTaskError("BadAnswer", "the agent's answer is not a JSON object")
    if answer.get("ok") is True and isinstance(answer.get("result"), dict):
        return answer["result"]
    error = answer.get("error")
    if answer.get("ok") is not False or not isinstance(error, dict):
        raise FleetTaskError("BadAnswer", "the agent's answer has neither a result nor an error")
    status = error.get("exitStatus")
    if not isinstance(status, int) or isinstance(status, bool) or not 0 < status < 256:
        status = EXIT_FAILED
    code = error.get("code") if isinstance(error.get("code"), str) else "CallFailed"
    raise FleetTaskError(code, str(error.get("message", "")), status)


def call(op: str, args: dict, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Call the controller: send op with args (a JSON object) through the node agent and
    return the result object. Raises FleetTaskError. Not safe against other threads that
    use relative paths while it connects (it changes the working directory briefly)."""
    token, agent_dir = _environment()
    if not isinstance(op, str) or not op or not isinstance(args, dict):
        message = "op must be a non-empty str and args a dict"
        raise FleetTaskError("BadCall", message, EXIT_BAD_INPUT)
    try:
        message = {"call": {"token": token, "op": op, "args": args}}
        line = json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"
    except (TypeError, ValueError) as exc:
        message = "args cannot be sent as JSON: %s" % exc
        raise FleetTaskError("BadCall", message, EXIT_BAD_INPUT) from None
    deadline = time.monotonic() + timeout
    sock = _connect(agent_dir, timeout)
    try:
        with sock:
            answer = _exchange(sock, line, deadline)
    except socket.timeout:
        message = "no answer from the controller within %g s" % timeout
        raise FleetTaskError("TimedOut", message, EXIT_TIMED_OUT) from None
    except OSError as exc:
        raise FleetTaskError("AgentUnavailable", "talking to the agent failed: %s" % exc) from None
    return _parse_answer(answer)


def _field(result: dict, name: str, kind: type):
    value = result.get(name)
    if not isinstance(value, kind):
        raise FleetTaskError("BadAnswer", "the result has no %r %s" % (name, kind.__name__))
    return value


def add_tasks(tasks: list) -> list:
    """Add tasks (a list of task objects) to the caller's job, all or none; return them
    as the controller stored them."""
    if not isinstance(tasks, list):
        raise FleetTaskError("BadCall", "tasks must be a list of task objects", EXIT_BAD_INPUT)
    return _field(call("addTasks", {"tasks": tasks}), "tasks", list)


def list_tasks() -> list:
    """Return the tasks of the caller's job."""
    return _field(call("listTasks", {}), "tasks", list)


def show_job() -> dict:
    """Return the caller's job."""
    return _field(call("showJob", {}), "job", dict)


# ---------------------------------------------------------------- the command


def _load_json_file(path: str):
    try:
        if path == "-":
            return json.load(sys.stdin)
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        message = "cannot read %s: %s" % (path, exc)
        raise FleetTaskError("BadInput", message, EXIT_BAD_INPUT) from None


def _env_pairs(pairs: list) -> list:
    settings = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            message = "--env %r must look like NAME=VALUE" % pair
            raise FleetTaskError("BadInput", message, EXIT_BAD_INPUT)
        settings.append({"name": name, "value": value})
    return settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleet-task", description="Call the fleet controller from inside a task."
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the answer"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    many = commands.add_parser("add-tasks", help="add tasks from a JSON file to this job")
    many.add_argument("--json-file", required=True, help="a task object or a list ('-': stdin)")
    one = commands.add_parser("add-task", help="add one task to this job; print it")
    one.add_argument("--id", required=True, dest="task_id", metavar="ID")
    one.add_argument("--command-line", required=True, metavar="COMMAND_LINE")
    one.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="repeatable")
    commands.add_parser("list-tasks", help="list the tasks of this job")
    commands.add_parser("show-job", help="show this job")
    return parser


def main(argv: list | None = None) -> int:
    """Run the fleet-task command; return its exit status."""
    options = _parser().parse_args(argv)
    try:
        if options.command == "add-tasks":
            data = _load_json_file(options.json_file)
            tasks = data if isinstance(data, list) else [data]
            result = _field(call("addTasks", {"tasks": tasks}, options.timeout), "tasks", list)
        elif options.command == "add-task":
            task = {"id": options.task_id, "commandLine": options.command_line}
            task["environmentSettings"] = _env_pairs(options.env)
            added = _field(call("addTasks", {"tasks": [task]}, options.timeout), "tasks", list)
            result = added[0] if len(added) == 1 else added
        elif options.command == "list-tasks":
            result = _field(call("listTasks", {}, options.timeout), "tasks", list)
        else:
            result = _field(call("showJob", {}, options.timeout), "job", dict)
    except FleetTaskError as exc:
        sys.stderr.write("error [%s]: %s\n" % (exc.code, exc.message))
        return exc.exit_status
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
