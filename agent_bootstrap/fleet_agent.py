"""fleet node agent: starts tasks detached and speaks JSON lines (protocol 1) on stdin/stdout."""

# Contract: docs/agent-protocol.md. Stdlib only; runs on Python 3.8 or newer (Linux).
#
# Shape: one single-threaded selectors loop in the agent watches stdin (requests), the
# Unix socket volatile/agent.sock (exit notices from wrappers) and one start-result
# pipe per spawn in flight. Each spawn forks a *wrapper* (no exec) that owns the task
# for its whole life: it starts the command in a new session, writes attempt.json,
# reports the start over the pipe, enforces the wall-clock limit, writes exit.json
# and tells whichever agent is listening. Wrappers outlive the agent, so tasks keep
# running and their records wait on disk while no controller is connected.

from __future__ import annotations

import errno
import fcntl
import gc
import heapq
import json
import os
import platform
import pwd
import selectors
import signal
import socket
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone

PROTOCOL = 1
LAYOUT = ("startup", "shared", "applications", "certs", "fsmounts", "volatile", "workitems")
SOCKET_NAME = "agent.sock"  # relative: the agent and its wrappers run in <root>/volatile
LOCK_NAME = "agent.lock"
LOCK_TIMEOUT_ENV = "FLEET_AGENT_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 10.0
KILL_GRACE_SECONDS = 3.0
NOTIFY_TIMEOUT_SECONDS = 10.0
MAX_LINE_BYTES = 16 << 20
MAX_NOTICE_BYTES = 1 << 20
EXIT_BUSY = 3
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
STDOUT_FILE, STDERR_FILE = "stdout.txt", "stderr.txt"
ATTEMPT_FILE, EXIT_FILE = "attempt.json", "exit.json"
DEFERRED = object()  # an op result meaning "the reply is sent later"


class AgentError(Exception):
    """A failed request; ``code`` and ``message`` go back in the error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------- small helpers


def log(message: str) -> None:
    """Write one line of free text to stderr; never raises."""
    try:
        sys.stderr.write("fleet-agent[%d]: %s\n" % (os.getpid(), message))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def utc_now() -> str:
    """Return the current time as ISO 8601 UTC with microseconds and a 'Z' suffix."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_line(message: dict) -> bytes:
    """Return message as one compact JSON line (bytes, newline-terminated)."""
    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"


def write_all(fd: int, data: bytes) -> None:
    """Write all of data to fd; raises OSError (BrokenPipeError when the reader is gone)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_boot_id() -> str:
    """Return the kernel boot id, or "" if it cannot be read."""
    try:
        with open(BOOT_ID_PATH) as f:
            return f.read().strip()
    except OSError:
        return ""


def process_start_ticks(pid: int) -> int | None:
    """Return field 22 (start time, clock ticks) of /proc/<pid>/stat, or None if the
    process does not exist or is a zombie."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()  # fields[0] is field 3, the state
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def group_alive(pgid: int) -> bool:
    """Return True if process group pgid has a member that is not a zombie."""
    try:
        names = os.listdir("/proc")
    except OSError:
        names = None
    if names is None:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            pass
        return True
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()  # state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == b"%d" % pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def signal_group(pgid: int, signum: int) -> None:
    """Send signum to process group pgid, ignoring a group that is gone."""
    try:
        os.killpg(pgid, signum)
    except OSError:
        pass


def write_json_atomic(path: str, obj: dict) -> None:
    """Write obj as JSON to path via path.tmp, fsync and rename; raises OSError."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, encode_line(obj))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_json_file(path: str) -> dict | None:
    """Return the JSON object stored at path, or None if missing, unreadable or not an object."""
    try:
        with open(path, "rb") as f:
            value = json.loads(f.read())
    except (OSError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def remove_file(path: str) -> None:
    """Remove path if it exists; raises OSError for other failures."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def resolve_inside(root: str, base: str, relative: object, field: str) -> str:
    """Return the real absolute path of `relative` taken under `base`.

    Raises AgentError("BadPath") unless `relative` is a non-empty relative path with no
    '..' component whose real path (symlinks resolved) lies strictly inside `root`."""
    if not isinstance(relative, str) or not relative or "\0" in relative:
        raise AgentError("BadPath", "%s must be a non-empty relative path" % field)
    if os.path.isabs(relative) or ".." in relative.split("/"):
        raise AgentError("BadPath", "%s must be relative without '..': %r" % (field, relative))
    full = os.path.realpath(os.path.join(base, relative))
    if not full.startswith(root.rstrip("/") + "/"):
        raise AgentError("BadPath", "%s resolves outside the node root: %r" % (field, relative))
    return full


def create_layout(root: str) -> None:
    """Create the node root's top-level directories; raises OSError."""
    for name in LAYOUT:
        os.makedirs(os.path.join(root, name), exist_ok=True)


# ---------------------------------------------------------------- liveness


def live_attempt(task_dir: str) -> dict | None:
    """Return attempt.json of task_dir if its wrapper is still alive (same pid and start
    time, so a reused pid does not count), else None."""
    record = read_json_file(os.path.join(task_dir, ATTEMPT_FILE))
    if record is None:
        return None
    try:
        pid, ticks = int(record["wrapperPid"]), int(record["wrapperStartTicks"])
    except (KeyError, TypeError, ValueError):
        return None
    return record if process_start_ticks(pid) == ticks else None


def finished_record(task_dir: str, key: str, attempt: int) -> dict | None:
    """Return exit.json of task_dir if it records this key and attempt, else None."""
    record = read_json_file(os.path.join(task_dir, EXIT_FILE))
    if record and record.get("attempt") == attempt and record.get("key") == key:
        return record
    return None


def task_state(task_dir: str, key: str, attempt: int) -> dict:
    """Return the status entry {"key", "state", ["exit"]} of one attempt of a task."""
    record = finished_record(task_dir, key, attempt)
    if record is None:
        live = live_attempt(task_dir)
        if live and live.get("attempt") == attempt and live.get("key") == key:
            return {"key": key, "state": "running"}
        # The wrapper may have written its record and exited since the first look.
        record = finished_record(task_dir, key, attempt)
    if record is None:
        return {"key": key, "state": "missing"}
    return {"key": key, "state": "exited", "exit": record}


# ---------------------------------------------------------------- the wrapper


class TaskSpec:
    """One attempt to run, checked by the agent and handed to the wrapper."""

    def __init__(self, key, task_dir_arg, task_dir, attempt, argv, env, working_dir, limit):
        self.key = key
        self.task_dir_arg = task_dir_arg  # as the controller wrote it, echoed in events
        self.task_dir = task_dir  # real absolute path
        self.attempt = attempt
        self.argv = argv
        self.env = env
        self.working_dir = working_dir
        self.max_wall_clock = limit  # seconds or None


def detach_from_agent(keep: tuple) -> None:
    """Point fds 0-2 at /dev/null and close every other inherited fd but `keep`.

    A forked child must hold no reference to the SSH channel (stdin/stdout/stderr),
    the agent's lock, listening socket, selector or pipes: they must close when the
    agent exits."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != devnull:
            os.dup2(devnull, fd)
    keep_set = set(keep) | {0, 1, 2}
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 4096))
    for fd in fds:
        if fd not in keep_set:
            try:
                os.close(fd)
            except OSError:
                pass


def wrapper_main(spec: TaskSpec, result_fd: int, stdout_fd: int, stderr_fd: int) -> None:
    """Body of the forked wrapper process: supervise one attempt, then _exit. Never returns."""
    done = False
    try:
        gc.disable()  # no collector run may finalize agent objects whose fds are closed
        os.setsid()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        detach_from_agent(keep=(result_fd, stdout_fd, stderr_fd))
        supervise(spec, result_fd, stdout_fd, stderr_fd)
        done = True
    finally:
        os._exit(0 if done else 1)


def supervise(spec: TaskSpec, result_fd: int, stdout_fd: int, stderr_fd: int) -> None:
    """Start the command, report the start over result_fd, enforce the wall-clock limit,
    write the exit record and notify the agent. Raises only on unexpected failures."""
    exit_path = os.path.join(spec.task_dir, EXIT_FILE)
    env = dict(os.environ)
    env.update(spec.env)
    proc, error = start_command(spec, env, stdout_fd, stderr_fd)
    os.close(stdout_fd)
    os.close(stderr_fd)
    if proc is None:
        write_json_atomic(exit_path, exit_record(spec, None, None, False, None, error))
        report_start(result_fd, {"error": error})
        return
    started = time.monotonic()
    start_time = utc_now()
    attempt = {
        "key": spec.key,
        "attempt": spec.attempt,
        "wrapperPid": os.getpid(),
        "wrapperStartTicks": process_start_ticks(os.getpid()),
        "pid": proc.pid,
        "startTime": start_time,
    }
    try:
        write_json_atomic(os.path.join(spec.task_dir, ATTEMPT_FILE), attempt)
    except OSError as exc:  # without attempt.json nobody could find or stop the task
        signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        report_start(result_fd, {"error": {"code": "TaskDirError", "message": str(exc)}})
        return
    report_start(result_fd, {"pid": proc.pid, "startTime": start_time})
    timed_out = wait_with_limit(proc, started, spec.max_wall_clock)
    record = exit_record(spec, proc.pid, proc.returncode, timed_out, start_time, None)
    write_json_atomic(exit_path, record)
    notice = {"event": "exited", "key": spec.key, "taskDir": spec.task_dir_arg}
    notice.update(attempt=spec.attempt, exit=record)
    notify_agent(notice)


def start_command(spec: TaskSpec, env: dict, stdout_fd: int, stderr_fd: int):
    """Popen the argv in a new session; return (proc, None) or (None, error dict)."""
    # The agent ignores SIGCHLD (auto-reaping wrappers) and the wrapper ignores SIGHUP;
    # ignored signals survive exec, so give the command default dispositions.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        proc = subprocess.Popen(
            spec.argv,
            cwd=spec.working_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout_fd,
            stderr=stderr_fd,
            start_new_session=True,
        )
    except OSError as exc:
        code = "CommandProgramNotFound" if exc.errno == errno.ENOENT else "CommandProgramNotExecutable"
        return None, {"code": code, "message": "cannot start %r: %s" % (spec.argv[0], exc)}
    finally:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # From here on a child exit is awaited with sigtimedwait (no polling); the
    # command already runs with the mask it inherited, so this does not leak to it.
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
    return proc, None


def wait_for_exit(proc: subprocess.Popen, deadline: float) -> bool:
    """Wait until proc exits or time.monotonic() reaches deadline; return True if it
    exited (and was reaped). Needs SIGCHLD blocked, so a pending one is not lost."""
    while proc.poll() is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        signal.sigtimedwait([signal.SIGCHLD], remaining)
    return True


def wait_with_limit(proc: subprocess.Popen, started: float, limit: float | None) -> bool:
    """Wait for proc, killing its process group at the wall-clock limit; return True if
    the limit was hit."""
    if limit is None:
        proc.wait()
        return False
    if wait_for_exit(proc, started + limit):
        return False
    terminate_group(proc)
    return True


def terminate_group(proc: subprocess.Popen) -> None:
    """SIGTERM the command's process group, SIGKILL it KILL_GRACE_SECONDS later if a
    member is still alive; return once the command itself is reaped."""
    pgid = proc.pid  # start_new_session made the command its group leader
    signal_group(pgid, signal.SIGTERM)
    grace_end = time.monotonic() + KILL_GRACE_SECONDS
    wait_for_exit(proc, grace_end)
    if group_alive(pgid):
        # Only if the leader went early while others linger: give them the full grace.
        time.sleep(max(0.0, grace_end - time.monotonic()))
        signal_group(pgid, signal.SIGKILL)
    proc.wait()


def exit_record(spec, pid, returncode, timed_out, start_time, error) -> dict:
    """Return the exit record of an attempt (see "Exit record" in the protocol)."""
    signum = -returncode if returncode is not None and returncode < 0 else None
    return {
        "protocol": PROTOCOL,
        "key": spec.key,
        "attempt": spec.attempt,
        "pid": pid,
        "exitCode": 128 + signum if signum else returncode,
        "signal": signum,
        "timedOut": timed_out,
        "startTime": start_time,
        "endTime": utc_now(),
        "error": error,
    }


def report_start(result_fd: int, result: dict) -> None:
    """Send the start result to the agent and close the pipe; an agent gone is ignored."""
    try:
        write_all(result_fd, encode_line(result))
    except OSError:
        pass
    finally:
        os.close(result_fd)


def notify_agent(notice: dict) -> None:
    """Send one notice line to the agent listening on SOCKET_NAME, if there is one."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(NOTIFY_TIMEOUT_SECONDS)
            sock.connect(SOCKET_NAME)
            sock.sendall(encode_line(notice))
    except OSError:
        pass  # no agent: the record waits on disk for the next status


def finish_kills_detached(timers: list) -> None:
    """Fork a detached process that sends the kill op's pending SIGKILLs on time, so
    they still happen after the agent exits."""
    try:
        pid = os.fork()
    except OSError as exc:
        log("cannot fork to finish pending kills: %s" % exc)
        return
    if pid:
        return
    try:
        os.setsid()
        detach_from_agent(keep=())
        for deadline, pgid in sorted(timers):
            time.sleep(max(0.0, deadline - time.monotonic()))
            signal_group(pgid, signal.SIGKILL)
    finally:
        os._exit(0)


# ---------------------------------------------------------------- request checking


def require_str(args: dict, name: str) -> str:
    """Return args[name] if it is a non-empty str; raises AgentError("BadRequest")."""
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise AgentError("BadRequest", "%s must be a non-empty string" % name)
    return value


def require_int(args: dict, name: str) -> int:
    """Return args[name] if it is an integer; raises AgentError("BadRequest")."""
    value = args.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise AgentError("BadRequest", "%s must be an integer" % name)
    return value


def check_spawn_args(args: dict) -> tuple:
    """Return (argv, env, limit) of a spawn request; raises AgentError("BadRequest")."""
    argv = args.get("argv")
    if not isinstance(argv, list) or not argv:
        raise AgentError("BadRequest", "argv must be a non-empty list of strings")
    if not all(isinstance(a, str) and "\0" not in a for a in argv) or not argv[0]:
        raise AgentError("BadRequest", "argv must be a non-empty list of strings without NUL")
    env = args.get("env") or {}
    if not isinstance(env, dict):
        raise AgentError("BadRequest", "env must be an object of strings")
    for name, value in env.items():
        if not name or "=" in name or "\0" in name:
            raise AgentError("BadRequest", "bad environment variable name %r" % name)
        if not isinstance(value, str) or "\0" in value:
            raise AgentError("BadRequest", "environment variable %s must be a string" % name)
    limit = args.get("maxWallClockSeconds")
    if limit is not None and (
        not isinstance(limit, (int, float)) or isinstance(limit, bool) or not 0 < limit < 1e9
    ):
        raise AgentError("BadRequest", "maxWallClockSeconds must be a positive number or null")
    return argv, env, None if limit is None else float(limit)


# ---------------------------------------------------------------- the agent


class PendingSpawn:
    """A spawn request whose wrapper has not reported the start result yet."""

    def __init__(self, request_id, spec: TaskSpec, fd: int) -> None:
        self.request_id = request_id
        self.spec = spec
        self.fd = fd
        self.data = b""


class Agent:
    """The agent's state and its single-threaded event loop."""

    def __init__(self, root: str, lock_fd: int, listener: socket.socket, boot_id: str) -> None:
        self.root = root
        self.lock_fd = lock_fd
        self.listener = listener
        self.boot_id = boot_id
        self.selector = selectors.DefaultSelector()
        self.outbox = []  # encoded lines, written before the loop blocks again
        self.stdin_buffer = b""
        self.discarding = False  # inside an overlong line
        self.spawns = {}  # start-result pipe fd -> PendingSpawn
        self.notices = {}  # wrapper connection -> bytes received
        self.kill_timers = []  # heap of (monotonic deadline, pgid) for SIGKILL
        self.running = True
        self.ops = {
            "ping": self.op_ping,
            "setup": self.op_setup,
            "spawn": self.op_spawn,
            "status": self.op_status,
            "kill": self.op_kill,
            "shutdown": self.op_shutdown,
        }
        self.selector.register(0, selectors.EVENT_READ, self.on_stdin)
        self.selector.register(listener, selectors.EVENT_READ, self.on_accept)

    # -- loop and output

    def send(self, message: dict) -> None:
        """Queue one message for the controller."""
        self.outbox.append(encode_line(message))

    def flush(self) -> None:
        """Write the queued messages to stdout; stop the agent if the controller is gone."""
        data, self.outbox = b"".join(self.outbox), []
        try:
            write_all(1, data)
        except OSError as exc:
            log("stdout closed (%s); exiting" % exc)
            self.running = False

    def run(self) -> None:
        """Serve until stdin closes, stdout breaks or a shutdown request."""
        while self.running:
            self.flush()
            if not self.running:
                break
            timeout = None
            if self.kill_timers:
                timeout = max(0.0, self.kill_timers[0][0] - time.monotonic())
            for key, _ in self.selector.select(timeout):
                if not self.running:
                    break
                if self.selector.get_map().get(key.fd) is not key:
                    continue  # closed by an earlier handler in this round
                try:
                    key.data(key.fileobj)
                except Exception:
                    log("internal error:\n" + traceback.format_exc())
            self.fire_due_kills()
        self.flush()

    def close(self) -> None:
        """Release everything; tasks keep running, pending SIGKILLs still happen."""
        if self.kill_timers:
            finish_kills_detached(self.kill_timers)
        try:
            remove_file(SOCKET_NAME)  # still ours: we hold the lock
        except OSError:
            pass
        for conn in list(self.notices):
            conn.close()
        for fd in list(self.spawns):
            os.close(fd)
        self.selector.close()
        self.listener.close()
        os.close(self.lock_fd)

    # -- stdin: requests

    def on_stdin(self, _fileobj) -> None:
        """Read request bytes from stdin and handle each complete line."""
        try:
            data = os.read(0, 1 << 16)
        except OSError:
            data = b""
        if not data:
            log("stdin closed; exiting")
            self.running = False
            return
        lines = (self.stdin_buffer + data).split(b"\n")
        self.stdin_buffer = lines.pop()
        for line in lines:
            if not self.running:
                return
            if self.discarding:
                self.discarding = False
            else:
                self.handle_line(line)
        if len(self.stdin_buffer) > MAX_LINE_BYTES:
            self.stdin_buffer = b""
            if not self.discarding:
                self.protocol_error("line longer than %d bytes" % MAX_LINE_BYTES)
            self.discarding = True

    def protocol_error(self, message: str) -> None:
        """Tell the controller a line could not be read as a message."""
        self.send({"type": "event", "event": "protocolError", "message": message})

    def reply_error(self, request_id, code: str, message: str) -> None:
        """Send an error reply."""
        error = {"code": code, "message": message}
        self.send({"type": "reply", "id": request_id, "ok": False, "error": error})

    def handle_line(self, line: bytes) -> None:
        """Decode one request line and answer it (now or, for spawn, later)."""
        if not line.strip():
            return
        try:
            message = json.loads(line)
        except (ValueError, RecursionError) as exc:
            self.protocol_error("not a JSON line: %s" % exc)
            return
        request_id = message.get("id") if isinstance(message, dict) else None
        try:
            if not isinstance(message, dict) or message.get("type") != "request":
                raise AgentError("BadRequest", 'expected an object with "type": "request"')
            op, args = message.get("op"), message.get("args")
            if not isinstance(op, str) or op not in self.ops:
                raise AgentError("BadRequest", "unknown op %r" % (op,))
            if args is None:
                args = {}
            if not isinstance(args, dict):
                raise AgentError("BadRequest", "args must be an object")
            result = self.ops[op](request_id, args)
        except AgentError as exc:
            self.reply_error(request_id, exc.code, exc.message)
            return
        except Exception as exc:
            log("internal error:\n" + traceback.format_exc())
            self.reply_error(request_id, "InternalError", "%s: %s" % (type(exc).__name__, exc))
            return
        if result is not DEFERRED:
            self.send({"type": "reply", "id": request_id, "ok": True, "result": result})

    # -- ops

    def op_ping(self, _request_id, _args) -> dict:
        """Return {"bootId", "time"}."""
        return {"bootId": self.boot_id, "time": utc_now()}

    def op_setup(self, _request_id, _args) -> dict:
        """Create the layout; return {"bootId", "root"}."""
        try:
            create_layout(self.root)
        except OSError as exc:
            raise AgentError("TaskDirError", "cannot create the layout: %s" % exc) from None
        return {"bootId": self.boot_id, "root": self.root}

    def op_shutdown(self, _request_id, _args) -> dict:
        """Stop the agent after this reply; tasks keep running."""
        self.running = False
        return {}

    def task_dir_of(self, args: dict) -> str:
        """Return the real path of args["taskDir"]; raises AgentError("BadPath")."""
        return resolve_inside(self.root, self.root, args.get("taskDir"), "taskDir")

    def pending_spawn(self, task_dir: str) -> PendingSpawn | None:
        """Return the spawn in flight for task_dir (real path), if any."""
        for pending in self.spawns.values():
            if pending.spec.task_dir == task_dir:
                return pending
        return None

    def op_status(self, _request_id, args) -> dict:
        """Return {"tasks": [...]} with the state of each requested attempt."""
        tasks = args.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise AgentError("BadRequest", "tasks must be a list of objects")
        queries = [(require_str(t, "key"), self.task_dir_of(t), require_int(t, "attempt")) for t in tasks]
        states = []
        for key, task_dir, attempt in queries:
            pending = self.pending_spawn(task_dir)
            if pending and pending.spec.key == key and pending.spec.attempt == attempt:
                states.append({"key": key, "state": "running"})  # starting right now
            else:
                states.append(task_state(task_dir, key, attempt))
        return {"tasks": states}

    def op_kill(self, _request_id, args) -> dict:
        """SIGTERM a live attempt's process group, SIGKILL 3 s later; return {"killed"}."""
        key, attempt = require_str(args, "key"), require_int(args, "attempt")
        record = live_attempt(self.task_dir_of(args))
        if not record or record.get("key") != key or record.get("attempt") != attempt:
            return {"killed": False}
        try:
            pgid = int(record["pid"])
            os.killpg(pgid, signal.SIGTERM)
        except (KeyError, TypeError, ValueError, OSError):
            return {"killed": False}
        heapq.heappush(self.kill_timers, (time.monotonic() + KILL_GRACE_SECONDS, pgid))
        return {"killed": True}

    def fire_due_kills(self) -> None:
        """SIGKILL the process groups whose grace after a kill op has run out."""
        now = time.monotonic()
        while self.kill_timers and self.kill_timers[0][0] <= now:
            _, pgid = heapq.heappop(self.kill_timers)
            signal_group(pgid, signal.SIGKILL)

    def op_spawn(self, request_id, args) -> object:
        """Fork a wrapper for one attempt; the reply follows once the command started."""
        key, attempt = require_str(args, "key"), require_int(args, "attempt")
        task_dir = self.task_dir_of(args)
        working_dir = args.get("workingDir")
        working_dir = resolve_inside(self.root, task_dir, working_dir or "wd", "workingDir")
        argv, env, limit = check_spawn_args(args)
        spec = TaskSpec(key, args["taskDir"], task_dir, attempt, argv, env, working_dir, limit)
        if self.pending_spawn(task_dir) or live_attempt(task_dir):
            raise AgentError("TaskAlreadyRunning", "%s has a live attempt" % spec.task_dir_arg)
        stdout_fd, stderr_fd = prepare_task_dir(spec)
        self.fork_wrapper(request_id, spec, stdout_fd, stderr_fd)
        return DEFERRED

    def fork_wrapper(self, request_id, spec: TaskSpec, stdout_fd: int, stderr_fd: int) -> None:
        """Fork the wrapper and watch its start-result pipe; raises AgentError("SpawnFailed")."""
        read_fd, write_fd = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in (read_fd, write_fd, stdout_fd, stderr_fd):
                os.close(fd)
            raise AgentError("SpawnFailed", "fork failed: %s" % exc) from None
        if pid == 0:
            wrapper_main(spec, write_fd, stdout_fd, stderr_fd)  # never returns
        for fd in (write_fd, stdout_fd, stderr_fd):
            os.close(fd)
        os.set_blocking(read_fd, False)
        self.spawns[read_fd] = PendingSpawn(request_id, spec, read_fd)
        self.selector.register(read_fd, selectors.EVENT_READ, self.on_start_result)

    def on_start_result(self, fd: int) -> None:
        """Collect a wrapper's start result; reply once it is complete."""
        pending = self.spawns[fd]
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        pending.data += chunk
        if not chunk or b"\n" in pending.data:
            self.finish_spawn(pending)

    def finish_spawn(self, pending: PendingSpawn) -> None:
        """Reply to a spawn from what its wrapper reported and stop watching the pipe."""
        self.selector.unregister(pending.fd)
        os.close(pending.fd)
        del self.spawns[pending.fd]
        try:
            result = json.loads(pending.data.split(b"\n", 1)[0])
        except ValueError:
            result = None
        if isinstance(result, dict) and isinstance(result.get("pid"), int):
            start = {"pid": result["pid"], "startTime": result.get("startTime")}
            self.send({"type": "reply", "id": pending.request_id, "ok": True, "result": start})
        elif isinstance(result, dict) and isinstance(result.get("error"), dict):
            error = result["error"]
            self.reply_error(pending.request_id, error.get("code"), error.get("message"))
        else:
            message = "the wrapper exited before reporting the start"
            self.reply_error(pending.request_id, "SpawnFailed", message)

    def settle_spawn(self, task_dir_arg, attempt) -> None:
        """Reply to the spawn of this attempt now if still pending, so its reply always
        precedes its exited event (the wrapper wrote the start result before the
        command could exit)."""
        for pending in list(self.spawns.values()):
            if pending.spec.task_dir_arg == task_dir_arg and pending.spec.attempt == attempt:
                try:
                    pending.data += os.read(pending.fd, 4096)
                except OSError:
                    continue  # nothing there yet: not from this attempt's wrapper
                self.finish_spawn(pending)

    # -- the Unix socket: notices from wrappers

    def on_accept(self, listener: socket.socket) -> None:
        """Accept the connections of wrappers that want to report an exit."""
        for _ in range(64):
            try:
                conn, _ = listener.accept()
            except OSError:  # BlockingIOError: none left; others: try next round
                return
            conn.setblocking(False)
            self.notices[conn] = b""
            self.selector.register(conn, selectors.EVENT_READ, self.on_notice_data)

    def on_notice_data(self, conn: socket.socket) -> None:
        """Read a wrapper's notice line; forward it once complete."""
        try:
            chunk = conn.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        data = self.notices[conn] + chunk
        self.notices[conn] = data
        if chunk and b"\n" not in data and len(data) <= MAX_NOTICE_BYTES:
            return
        self.selector.unregister(conn)
        del self.notices[conn]
        conn.close()
        if b"\n" in data:
            self.forward_notice(data.split(b"\n", 1)[0])

    def forward_notice(self, line: bytes) -> None:
        """Forward a wrapper's exited notice to the controller as an event."""
        try:
            notice = json.loads(line)
        except (ValueError, RecursionError):
            notice = None
        if not isinstance(notice, dict) or notice.get("event") != "exited":
            log("ignoring a malformed notice on %s" % SOCKET_NAME)
            return
        self.settle_spawn(notice.get("taskDir"), notice.get("attempt"))
        event = {"type": "event", "event": "exited"}
        for name in ("key", "taskDir", "attempt", "exit"):
            event[name] = notice.get(name)
        self.send(event)


def prepare_task_dir(spec: TaskSpec) -> tuple:
    """Create the task and working dirs, drop the previous attempt's records and open
    truncated stdout.txt and stderr.txt; return their fds. Raises AgentError("TaskDirError")."""
    opened = []
    try:
        os.makedirs(spec.task_dir, exist_ok=True)
        os.makedirs(spec.working_dir, exist_ok=True)
        remove_file(os.path.join(spec.task_dir, EXIT_FILE))
        remove_file(os.path.join(spec.task_dir, ATTEMPT_FILE))
        for name in (STDOUT_FILE, STDERR_FILE):
            path = os.path.join(spec.task_dir, name)
            opened.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    except OSError as exc:
        for fd in opened:
            os.close(fd)
        raise AgentError("TaskDirError", "cannot prepare %s: %s" % (spec.task_dir_arg, exc)) from None
    return opened[0], opened[1]


# ---------------------------------------------------------------- startup


class _LockWaitExpired(Exception):
    """Raised by the SIGALRM handler to end the wait for the agent lock."""


def try_lock(fd: int) -> bool:
    """Take an exclusive flock on fd without waiting; return True on success."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def wait_for_lock(fd: int, timeout: float) -> None:
    """Block in flock(LOCK_EX) on fd for at most timeout seconds (a SIGALRM ends it)."""
    waiting = [False]  # the one alarm may only interrupt the flock call below

    def on_alarm(_signum, _frame):
        if waiting[0]:
            raise _LockWaitExpired()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        waiting[0] = True
        fcntl.flock(fd, fcntl.LOCK_EX)
        waiting[0] = False
    except _LockWaitExpired:
        waiting[0] = False
    signal.setitimer(signal.ITIMER_REAL, 0)


def acquire_lock(path: str, timeout: float) -> int | None:
    """Open path and take an exclusive flock, waiting up to timeout seconds for a
    previous agent to exit. Return the locked fd, or None if still held; raises OSError."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    if try_lock(fd):
        return fd
    if timeout > 0:
        wait_for_lock(fd, timeout)
    if try_lock(fd):  # also true if the alarm came just after flock succeeded
        return fd
    os.close(fd)
    return None


def lock_timeout() -> float:
    """Return the lock wait from FLEET_AGENT_LOCK_TIMEOUT (seconds), default 10."""
    try:
        return float(os.environ.get(LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT))
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT


def listen_socket() -> socket.socket:
    """Bind and listen on SOCKET_NAME in the current directory; raises OSError."""
    remove_file(SOCKET_NAME)  # left by an agent that was killed
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(SOCKET_NAME)
        os.chmod(SOCKET_NAME, 0o600)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def hello(root: str, boot_id: str) -> dict:
    """Return the hello message of a successful start."""
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return {
        "type": "hello",
        "protocol": PROTOCOL,
        "pid": os.getpid(),
        "bootId": boot_id,
        "root": root,
        "user": user,
        "uid": uid,
        "python": platform.python_version(),
    }


def fail_hello(code: str, message: str) -> None:
    """Send the hello of a failed start."""
    log(message)
    error = {"code": code, "message": message}
    try:
        write_all(1, encode_line({"type": "hello", "protocol": PROTOCOL, "error": error}))
    except OSError:
        pass


def main(argv: list) -> int:
    """Run the agent for the node root argv[1]; return the exit status."""
    if len(argv) != 2:
        sys.stderr.write("usage: %s ROOT\n" % argv[0])
        return 2
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # wrappers are reaped by the kernel
    root = os.path.realpath(argv[1])
    volatile = os.path.join(root, "volatile")
    try:
        os.makedirs(volatile, exist_ok=True)
        lock_fd = acquire_lock(os.path.join(volatile, LOCK_NAME), lock_timeout())
    except OSError as exc:
        fail_hello("AgentStartFailed", "cannot take %s/%s: %s" % (volatile, LOCK_NAME, exc))
        return 1
    if lock_fd is None:
        fail_hello("AgentBusy", "another agent holds %s/%s" % (volatile, LOCK_NAME))
        return EXIT_BUSY
    try:
        create_layout(root)
        os.chdir(volatile)
        listener = listen_socket()
    except OSError as exc:
        fail_hello("AgentStartFailed", "cannot set up %s: %s" % (root, exc))
        return 1
    boot_id = read_boot_id()
    agent = Agent(root, lock_fd, listener, boot_id)
    agent.send(hello(root, boot_id))
    try:
        agent.run()
    finally:
        agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
