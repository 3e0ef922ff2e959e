"""fleet node agent: starts tasks detached and speaks JSON lines on stdin/stdout."""

# Contract: docs/agent-protocol.md. Stdlib only; runs on Python 3.8 or newer (Linux).
#
# One single-threaded selectors loop watches stdin (requests), the Unix socket
# volatile/agent.sock (exit notices from wrappers; calls from tasks, whose connections
# then wait for the controller's answer) and one start-result pipe per spawn in flight.
# Each spawn forks a *wrapper* (no exec) that owns the attempt for its whole life: it
# prepares the task dir, starts the command in a new session, writes attempt.json,
# reports the start over the pipe, enforces the wall-clock limit and the kill op,
# writes exit.json and tells whichever agent is listening. Wrappers outlive the agent,
# so tasks keep running and their records wait on disk meanwhile.

from __future__ import annotations

import base64
import collections
import contextlib
import errno
import fcntl
import functools
import gc
import json
import os
import platform
import pwd
import resource  # noqa: F401  (os.wait4 imports it: once here, not in every wrapper)
import select
import selectors
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone

PROTOCOL = 5
# The node root's directories and their modes: 0711 lets a task that runs as another
# user (sudo -n -u) reach its own working dir without listing anything; shared/ is
# writable by every task, sticky like /tmp.
ROOT_MODE, TASK_DIR_MODE, TRAVERSE_MODE = 0o711, 0o700, 0o711
LAYOUT_MODES = {
    "startup": 0o711,
    "shared": 0o1777,
    "applications": 0o711,
    "certs": 0o700,
    "fsmounts": 0o711,
    "volatile": 0o700,
    "workitems": 0o711,
}
LAYOUT = tuple(LAYOUT_MODES)
AGENT_UMASK = 0o077  # what the agent and wrappers create is theirs alone
SOCKET_NAME = "agent.sock"  # relative: the agent and its wrappers run in <root>/volatile
LOCK_NAME = "agent.lock"
LOCK_TIMEOUT_ENV = "FLEET_AGENT_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 10.0
KILL_GRACE_SECONDS = 3.0
KILL_SIGNAL = signal.SIGUSR1  # agent -> wrapper: stop the task (TERM, grace, KILL)
WAKE_SIGNALS = [signal.SIGCHLD, KILL_SIGNAL]  # what a wrapper waits for
NOTIFY_TIMEOUT_SECONDS = 10.0
MAX_LINE_BYTES = 16 << 20
BATCH_BYTES = 1 << 20  # messages sent together share one batch line up to about this size
MAX_SOCKET_LINE_BYTES = 1 << 20  # an exit notice or a call on agent.sock
INLINE_BYTES = 64 << 10  # stdout.txt, stderr.txt and exit.json up to this ride the exit event
MAX_CALLS = 64  # call connections open at once (waiting for or receiving an answer)
EXIT_ANSWER_SECONDS = 5.0  # how long an exiting agent keeps sending answers
EXIT_BUSY = 3
SO_PEERPIDFD = 77  # Linux 6.5+: a pidfd of the process that connected to a Unix socket
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STDOUT_FILE, STDERR_FILE = "stdout.txt", "stderr.txt"
ATTEMPT_FILE, EXIT_FILE = "attempt.json", "exit.json"
DEFERRED = object()  # an op result meaning "the reply is sent later"

# One attempt, checked by the agent and handed to the wrapper. task_dir_arg is the
# taskDir as the controller wrote it (echoed in events); the *_dir fields are real paths.
TaskSpec = collections.namedtuple(
    "TaskSpec", "root key attempt task_dir_arg task_dir working_dir argv env max_wall_clock"
)
# The umask the agent was started with: task commands get it (their files keep the
# node's usual modes inside private directories); the agent and wrappers use AGENT_UMASK.
TASK_UMASK = [0o022]


class AgentError(Exception):
    """A failed request; ``code`` and ``message`` go back in the error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------- helpers


def log(message: str) -> None:
    """Write one line of free text to stderr; never raises."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write("fleet-agent[%d]: %s\n" % (os.getpid(), message))
        sys.stderr.flush()


def utc_now() -> str:
    """Return the current time as ISO 8601 UTC with microseconds and a 'Z' suffix."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode(message: dict) -> bytes:
    """Return message as compact JSON (bytes, no newline)."""
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def encode_line(message: dict) -> bytes:
    """Return message as one compact JSON line (bytes, newline-terminated)."""
    return encode(message) + b"\n"


def batch_lines(encoded: list) -> list:
    """Frame encoded messages as lines: a lone message as itself, several as
    {"type": "batch", "messages": [...]} lines of up to about BATCH_BYTES each."""
    lines, group, size = [], [], 0
    for item in encoded:
        if group and size + len(item) > BATCH_BYTES:
            lines.append(frame(group))
            group, size = [], 0
        group.append(item)
        size += len(item) + 1
    if group:
        lines.append(frame(group))
    return lines


def frame(group: list) -> bytes:
    """Return one line carrying the encoded messages of group, in order."""
    if len(group) == 1:
        return group[0] + b"\n"
    return b'{"type":"batch","messages":[' + b",".join(group) + b"]}\n"


def write_all(fd: int, data: bytes) -> None:
    """Write all of data to fd; raises OSError (BrokenPipeError when the reader is gone)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_boot_id() -> str:
    """Return the boot id, or "" if it cannot be read: the kernel's, unless the environment
    variable FLEET_BOOT_ID_FILE names a file to read it from (the loopback lab sets it per
    node with sshd's SetEnv, so that `fleet lab reboot` can simulate a reboot)."""
    path = os.environ.get("FLEET_BOOT_ID_FILE") or "/proc/sys/kernel/random/boot_id"
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, ValueError):
        return ""


def proc_stat(pid) -> list | None:
    """Return the fields of /proc/<pid>/stat from field 3 (the state) on, or None."""
    try:
        with open("/proc/%s/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()  # the command name may hold ") "
    return fields if len(fields) >= 20 else None


def process_start_ticks(pid: int) -> int | None:
    """Return field 22 (start time in clock ticks) of a live process, or None if it does
    not exist or is a zombie."""
    fields = proc_stat(pid)
    return int(fields[19]) if fields and fields[0] not in (b"Z", b"X") else None


def boot_ticks() -> int:
    """Return the time since boot in clock ticks, as /proc/<pid>/stat counts start times."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * CLOCK_TICKS)


def peer_session(conn: socket.socket, accepted_ticks: int) -> int | None:
    """Return the session id of the process that connected conn (SO_PEERCRED), or None
    when that process is gone or its pid may since name another process.

    With SO_PEERPIDFD (Linux 6.5+) the pidfd proves the pid still names the caller
    after getsid; without it, a process whose start time is after the connection was
    accepted is a later one with a reused pid."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", creds)[0]
    except OSError:
        return None
    try:
        pidfd = conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        pidfd = None
    try:
        ticks = process_start_ticks(pid)
        if ticks is None or (pidfd is None and ticks > accepted_ticks):
            return None
        sid = os.getsid(pid)
        if pidfd is not None:
            return None if select.select([pidfd], [], [], 0)[0] else sid  # readable: exited
        return sid if process_start_ticks(pid) == ticks else None
    except OSError:
        return None
    finally:
        if pidfd is not None:
            os.close(pidfd)


def group_alive(pgid: int) -> bool:
    """Return True if process group pgid has a member that is not a zombie (orphans are
    not reaped everywhere, e.g. in some containers, so kill(-pgid, 0) is not enough)."""
    for name in os.listdir("/proc"):
        fields = proc_stat(name) if name.isdigit() else None
        if fields and fields[2] == b"%d" % pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def signal_group(pgid: int, signum: int) -> None:
    """Send signum to process group pgid, ignoring a group that is gone."""
    with contextlib.suppress(OSError):
        os.killpg(pgid, signum)


def write_json_atomic(path: str, obj: dict) -> None:
    """Write obj as JSON to path via path.tmp and rename, so readers never see half a
    record; raises OSError. No fsync: only a power loss could lose the page cache, that
    is a reboot, and after a reboot (a new boot id) the controller requeues every task
    that was in flight without reading any record."""
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, encode_line(obj))
    finally:
        os.close(fd)
    os.replace(path + ".tmp", path)


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
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def resolve_inside(root: str, base: str, relative: object, field: str) -> str:
    """Return the real path of `relative` taken under `base`. Raises AgentError("BadPath")
    unless it is a non-empty relative path without '..' components whose real path
    (symlinks resolved) lies strictly inside `root`."""
    if not isinstance(relative, str) or not relative or "\0" in relative:
        raise AgentError("BadPath", "%s must be a non-empty relative path" % field)
    if os.path.isabs(relative) or ".." in relative.split("/"):
        raise AgentError("BadPath", "%s must be relative without '..': %r" % (field, relative))
    full = os.path.realpath(os.path.join(base, relative))
    if not full.startswith(root.rstrip("/") + "/"):
        raise AgentError("BadPath", "%s resolves outside the node root: %r" % (field, relative))
    return full


def ensure_dir(path: str, mode: int) -> None:
    """Create directory path with mode, or give an existing one of ours that mode (an SFTP
    makedirs or an older agent may have made it 0755); raises OSError."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(errno.ENOTDIR, "not a directory", path)
    if stat.S_IMODE(st.st_mode) != mode and st.st_uid == os.getuid():
        os.chmod(path, mode)  # mkdir's mode went through the umask; sticky needs chmod


def create_layout(root: str) -> None:
    """Create the node root's top-level directories with their modes; raises OSError."""
    ensure_dir(root, ROOT_MODE)
    for name, mode in LAYOUT_MODES.items():
        ensure_dir(os.path.join(root, name), mode)


def detach_from_agent(keep: int) -> None:
    """In a forked child: point fds 0-2 at /dev/null and close every other inherited fd
    but `keep`, so the child holds no reference to the SSH channel, the agent's lock,
    listening socket, selector or pipes (they must close when the agent exits)."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != devnull:
            os.dup2(devnull, fd)
    for fd in [int(name) for name in os.listdir("/proc/self/fd")]:
        if fd > 2 and fd != keep:
            with contextlib.suppress(OSError):
                os.close(fd)


# ---------------------------------------------------------------- liveness


def finished_record(task_dir: str, key: str, attempt: int) -> dict | None:
    """Return exit.json of task_dir if it records this key and attempt, else None."""
    record = read_json_file(os.path.join(task_dir, EXIT_FILE))
    if record and record.get("attempt") == attempt and record.get("key") == key:
        return record
    return None


def live_attempt(task_dir: str) -> dict | None:
    """Return attempt.json of task_dir if that attempt is still running: its wrapper is
    alive with the recorded start time (so a reused pid does not count) and has not
    written the exit record yet. Else None."""
    record = read_json_file(os.path.join(task_dir, ATTEMPT_FILE))
    try:
        pid, ticks = int(record["wrapperPid"]), int(record["wrapperStartTicks"])
    except (KeyError, TypeError, ValueError):
        return None
    if process_start_ticks(pid) != ticks:
        return None
    if finished_record(task_dir, record.get("key"), record.get("attempt")):
        return None  # done; the wrapper is only telling the agent
    return record


def task_state(task_dir: str, key: str, attempt: int) -> dict:
    """Return the status entry {"key", "state", ["exit"]} of one attempt of a task."""
    live = live_attempt(task_dir)
    if live and live.get("attempt") == attempt and live.get("key") == key:
        return {"key": key, "state": "running"}
    # Looked at after the wrapper: one that just exited wrote its record first.
    record = finished_record(task_dir, key, attempt)
    if record is None:
        return {"key": key, "state": "missing"}
    return {"key": key, "state": "exited", "exit": record}


# ---------------------------------------------------------------- the wrapper


def wrapper_main(spec: TaskSpec, result_fd: int) -> None:
    """Body of the forked wrapper process: supervise one attempt, then _exit. Never returns."""
    done = False
    try:
        gc.disable()  # no collection may finalize agent objects whose fds are closed
        os.setsid()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        detach_from_agent(keep=result_fd)
        supervise(spec, result_fd)
        done = True
    finally:
        os._exit(0 if done else 1)


def supervise(spec: TaskSpec, result_fd: int) -> None:
    """Prepare the task dir, start the command, report the start over result_fd, wait for
    the command (enforcing the limit and the kill op), write the exit record and notify
    the agent. Raises only on unexpected failures.

    The wrapper's working directory is the task dir: an agent reads it from
    /proc/<wrapper>/cwd to tell which task a calling process belongs to."""
    exit_path = os.path.join(spec.task_dir, EXIT_FILE)
    try:
        stdout_fd, stderr_fd = prepare_task_dir(spec)
        os.chdir(spec.task_dir)
    except OSError as exc:
        message = "cannot prepare %s: %s" % (spec.task_dir_arg, exc)
        report_start(result_fd, {"error": {"code": "TaskDirError", "message": message}})
        return
    command, error = start_command(spec, stdout_fd, stderr_fd)
    if command is None:
        write_json_atomic(exit_path, exit_record(spec, None, None, False, None, error))
        report_start(result_fd, {"error": error})
        return
    start_time = utc_now()
    attempt = {
        "key": spec.key,
        "attempt": spec.attempt,
        "wrapperPid": os.getpid(),
        "wrapperStartTicks": process_start_ticks(os.getpid()),
        "pid": command.pid,
        "startTime": start_time,
    }
    try:
        write_json_atomic(os.path.join(spec.task_dir, ATTEMPT_FILE), attempt)
    except OSError as exc:  # without attempt.json nobody could find or stop the task
        signal_group(command.pid, signal.SIGKILL)
        command.poll(block=True)
        report_start(result_fd, {"error": {"code": "TaskDirError", "message": str(exc)}})
        return
    report_start(result_fd, {"pid": command.pid, "startTime": start_time})
    timed_out = run_to_exit(command, spec.max_wall_clock)
    record = exit_record(
        spec, command.pid, command.returncode, timed_out, start_time, None, command.stats
    )
    write_json_atomic(exit_path, record)
    notice = {"event": "exited", "key": spec.key, "taskDir": spec.task_dir_arg}
    notice.update(attempt=spec.attempt, exit=record)
    notify_agent(os.path.join(spec.root, "volatile"), notice)


def prepare_task_dir(spec: TaskSpec) -> tuple:
    """Create the task dir and working dir with their modes, drop the previous attempt's
    records and open truncated stdout.txt and stderr.txt (0600); return their fds.
    Raises OSError.

    Directories between the root and the task dir are 0711; the task dir is 0700, or
    0711 when its working dir belongs to another user (identity.py made it theirs, group
    the login user's, 2750), who must reach it; a working dir of ours is 0700."""
    parts = os.path.relpath(spec.task_dir, spec.root).split("/")
    path = spec.root
    for part in parts[:-1]:
        path = os.path.join(path, part)
        ensure_dir(path, TRAVERSE_MODE)
    with contextlib.suppress(FileExistsError):
        os.mkdir(spec.task_dir, TASK_DIR_MODE)
    os.makedirs(os.path.dirname(spec.working_dir), exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(spec.working_dir, TASK_DIR_MODE)
    foreign = os.stat(spec.working_dir).st_uid != os.getuid()
    if not foreign:
        ensure_dir(spec.working_dir, TASK_DIR_MODE)
    if len(parts) > 1:  # a task dir of the layout itself (startup) keeps the layout's mode
        ensure_dir(spec.task_dir, TRAVERSE_MODE if foreign else TASK_DIR_MODE)
    remove_file(os.path.join(spec.task_dir, EXIT_FILE))
    remove_file(os.path.join(spec.task_dir, ATTEMPT_FILE))
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    stdout_fd = os.open(os.path.join(spec.task_dir, STDOUT_FILE), flags, 0o600)
    try:
        os.fchmod(stdout_fd, 0o600)  # a file of an older agent was 0644
        stderr_fd = os.open(os.path.join(spec.task_dir, STDERR_FILE), flags, 0o600)
        os.fchmod(stderr_fd, 0o600)
        return stdout_fd, stderr_fd
    except OSError:
        os.close(stdout_fd)
        raise


def start_command(spec: TaskSpec, stdout_fd: int, stderr_fd: int) -> tuple:
    """Popen the argv in a new session (closing the output fds given); return
    (Command, None) or (None, error dict) if it cannot start."""
    env = dict(os.environb)  # bytes: no decoding and encoding of every variable per task
    env.update((os.fsencode(k), os.fsencode(v)) for k, v in spec.env.items())
    # The agent ignores SIGCHLD (to auto-reap wrappers) and the wrapper SIGHUP; ignored
    # signals survive exec, so the command must get the default dispositions.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    os.umask(TASK_UMASK[0])  # the wrapper is single-threaded: the command inherits it
    started = time.monotonic()  # before the fork: its wall-clock time is never short
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
        not_found = exc.errno == errno.ENOENT
        code = "CommandProgramNotFound" if not_found else "CommandProgramNotExecutable"
        return None, {"code": code, "message": "cannot start %r: %s" % (spec.argv[0], exc)}
    finally:
        os.umask(AGENT_UMASK)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        os.close(stdout_fd)
        os.close(stderr_fd)
    # From here on the wrapper sleeps in sigwaitinfo/sigtimedwait (no polling). The
    # command already runs with the mask it inherited, so this does not leak to it.
    signal.pthread_sigmask(signal.SIG_BLOCK, WAKE_SIGNALS)
    return Command(proc, started), None


class Command:
    """The task's command, reaped with os.wait4 instead of Popen's waitpid, so that the
    kernel's account of its resources (rusage) is kept: its own and that of the children
    it waited for; processes it left behind are not counted."""

    def __init__(self, proc: subprocess.Popen, started: float) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.started = started  # time.monotonic() when it was started
        self.returncode = None  # as Popen's: the exit status, or -N when signal N killed it
        self.stats = None  # the exit record's "stats", once reaped

    def poll(self, block: bool = False):
        """Reap the command if it has exited (block: wait until it has); return its
        returncode, or None while it runs."""
        if self.returncode is None:
            pid, status, usage = os.wait4(self.pid, 0 if block else os.WNOHANG)
            if pid:
                self.reaped(status, usage, time.monotonic() - self.started)
        return self.returncode

    def reaped(self, status: int, usage, wall_clock: float) -> None:
        """Record what os.wait4 returned for the command: its status and rusage."""
        if os.WIFSIGNALED(status):
            self.returncode = -os.WTERMSIG(status)
        else:
            self.returncode = os.WEXITSTATUS(status)
        # Popen must not wait for a pid that is no longer ours (it could be reused).
        self.proc.returncode = self.returncode
        self.stats = {
            "userCPUSeconds": usage.ru_utime,
            "kernelCPUSeconds": usage.ru_stime,
            "wallClockSeconds": round(wall_clock, 6),
            "maxRSSBytes": usage.ru_maxrss * 1024,  # Linux counts KiB
            "readBlocks": usage.ru_inblock,  # 512-byte units read from storage
            "writeBlocks": usage.ru_oublock,
        }


def wait_for_exit(command: Command, deadline: float | None) -> str:
    """Wait until the command exits (and reap it), time.monotonic() reaches deadline
    (None: never) or KILL_SIGNAL arrives; return "exited", "timeout" or "kill"."""
    while command.poll() is None:
        if deadline is None:
            info = signal.sigwaitinfo(WAKE_SIGNALS)
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            info = signal.sigtimedwait(WAKE_SIGNALS, remaining)
        if info is not None and info.si_signo == KILL_SIGNAL:
            return "kill"
    return "exited"


def run_to_exit(command: Command, limit: float | None) -> bool:
    """Wait for the command, stopping its process group at the wall-clock limit (seconds
    from its start) or on the kill op; return True if the limit was hit."""
    outcome = wait_for_exit(command, None if limit is None else command.started + limit)
    if outcome != "exited":
        terminate_group(command)
    return outcome == "timeout"


def terminate_group(command: Command) -> None:
    """SIGTERM the command's process group, SIGKILL it KILL_GRACE_SECONDS later if a
    member is still alive; return once the command itself is reaped."""
    pgid = command.pid  # start_new_session made the command its group leader
    signal_group(pgid, signal.SIGTERM)
    grace_end = time.monotonic() + KILL_GRACE_SECONDS
    while wait_for_exit(command, grace_end) == "kill":
        pass  # a repeated kill op does not shorten the grace
    # The other members are not our children, so no signal tells when they are gone:
    # poll (only here, on the way out of a stopped task) until the grace ends.
    while group_alive(pgid):
        if time.monotonic() >= grace_end:
            signal_group(pgid, signal.SIGKILL)
            break
        time.sleep(0.05)
    command.poll(block=True)


def exit_record(spec, pid, returncode, timed_out, start_time, error, stats=None) -> dict:
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
        "stats": stats,
    }


def report_start(result_fd: int, result: dict) -> None:
    """Send the start result to the agent and close the pipe; an agent gone is ignored."""
    with contextlib.suppress(OSError):
        write_all(result_fd, encode_line(result))
    os.close(result_fd)


def notify_agent(volatile: str, notice: dict) -> None:
    """Send one notice line to the agent listening on SOCKET_NAME in volatile, if there is
    one (changing into volatile: socket paths are limited to 107 bytes)."""
    # No agent listening: the record waits on disk for the next status.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(OSError), sock:
        os.chdir(volatile)
        sock.settimeout(NOTIFY_TIMEOUT_SECONDS)
        sock.connect(SOCKET_NAME)
        sock.sendall(encode_line(notice))


# ---------------------------------------------------------------- the agent


def require(args: dict, name: str, kind: type):
    """Return args[name] if it is a non-empty str (kind str) or an int (kind int, not a
    bool); raises AgentError("BadRequest")."""
    value = args.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) or value == "":
        raise AgentError("BadRequest", "%s must be a non-empty %s" % (name, kind.__name__))
    return value


def check_command(args: dict) -> tuple:
    """Return (argv, env, maxWallClockSeconds) of a spawn; raises AgentError("BadRequest")."""
    argv, env = args.get("argv"), args.get("env") or {}
    limit = args.get("maxWallClockSeconds")
    if not isinstance(argv, list) or not argv or not argv[0]:
        raise AgentError("BadRequest", "argv must be a non-empty list of strings")
    if not all(isinstance(a, str) and "\0" not in a for a in argv):
        raise AgentError("BadRequest", "argv must hold strings without NUL")
    check_env(env)
    if limit is not None and (
        not isinstance(limit, (int, float)) or isinstance(limit, bool) or not 0 < limit < 1e9
    ):
        raise AgentError("BadRequest", "maxWallClockSeconds must be a positive number or null")
    return argv, env, None if limit is None else float(limit)


def check_env(env) -> None:
    """Raise AgentError("BadRequest") unless ``env`` is an object of environment strings."""
    if not isinstance(env, dict):
        raise AgentError("BadRequest", "env must be an object of strings")
    for name, value in env.items():
        if not name or "=" in name or "\0" in name or not isinstance(value, str) or "\0" in value:
            raise AgentError("BadRequest", "bad environment variable %r" % name)


def call_error(code: str, message: str, exit_status: int = 1) -> dict:
    """Return the answer to a call that failed in the agent."""
    error = {"code": code, "message": message, "exitStatus": exit_status}
    return {"ok": False, "error": error}


class PendingSpawn:
    """A spawn request whose wrapper has not reported the start result yet."""

    def __init__(self, request_id, spec: TaskSpec, fd: int, wrapper_pid: int) -> None:
        self.request_id = request_id
        self.spec = spec
        self.fd = fd
        self.wrapper_pid = wrapper_pid
        self.data = b""


class Agent:
    """The agent's state and its single-threaded event loop."""

    def __init__(self, root: str, lock_fd: int, listener: socket.socket) -> None:
        self.root = root
        self.boot_id = read_boot_id()
        self.lock_fd = lock_fd
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.selector.register(0, selectors.EVENT_READ, self.on_stdin)
        self.selector.register(listener, selectors.EVENT_READ, self.on_accept)
        self.outbox = []  # encoded messages, written (batched) before the loop blocks again
        self.stdin_buffer = b""
        self.discarding = False  # inside an overlong line
        self.spawns = {}  # start-result pipe fd -> PendingSpawn
        self.spawning = {}  # real task dir -> PendingSpawn
        self.peers = {}  # connection on agent.sock -> bytes of its line received so far
        self.accepted = {}  # connection on agent.sock -> boot_ticks() when it was accepted
        self.calls = {}  # callId -> connection of a task waiting for the answer
        self.answers = {}  # connection -> memoryview of the answer still to send
        self.last_call_id = 0
        self.base_env = {}  # what every spawn's env is laid over (op env)
        self.running = True

    def hello(self) -> dict:
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
            "bootId": self.boot_id,
            "root": self.root,
            "user": user,
            "uid": uid,
            "python": platform.python_version(),
        }

    # -- loop and output

    def send(self, message: dict) -> None:
        """Queue one message for the controller."""
        self.outbox.append(encode(message))

    def reply_error(self, request_id, code: str, message: str) -> None:
        """Queue an error reply."""
        error = {"code": code, "message": message}
        self.send({"type": "reply", "id": request_id, "ok": False, "error": error})

    def flush(self) -> None:
        """Write the queued messages to stdout, batched; stop the agent if the controller
        is gone."""
        if not self.outbox:
            return
        data, self.outbox = b"".join(batch_lines(self.outbox)), []
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
            for key, _ in self.selector.select():
                if not self.running:
                    break
                if self.selector.get_map().get(key.fd) is not key:
                    continue  # closed by an earlier handler in this round
                try:
                    key.data(key.fileobj)
                except Exception:
                    log("internal error:\n" + traceback.format_exc())
        self.flush()

    def close(self) -> None:
        """Answer the calls still waiting, release the socket, pipes and lock; tasks
        keep running."""
        with contextlib.suppress(OSError):
            remove_file(SOCKET_NAME)  # still ours: we hold the lock
        message = "the agent stopped before the controller answered"
        for conn in self.calls.values():
            self.answer_client(conn, call_error("ControllerUnavailable", message))
        deadline = time.monotonic() + EXIT_ANSWER_SECONDS
        for conn, data in self.answers.items():  # finish them, blocking but bounded
            with contextlib.suppress(OSError):
                conn.settimeout(max(0.001, deadline - time.monotonic()))
                conn.sendall(data)
        for conn in list(self.peers) + list(self.answers):
            conn.close()
        for fd in self.spawns:
            os.close(fd)
        self.selector.close()
        self.listener.close()
        os.close(self.lock_fd)

    # -- requests on stdin

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
            if self.discarding:
                self.discarding = False  # the end of an overlong line
            elif self.running:
                self.handle_line(line)
        if len(self.stdin_buffer) > MAX_LINE_BYTES:
            if not self.discarding:
                self.send({"type": "event", "event": "protocolError", "message": "line too long"})
            self.stdin_buffer, self.discarding = b"", True

    def handle_line(self, line: bytes) -> None:
        """Decode one line, a request or a batch of them, and answer each (now or, for
        spawn, later)."""
        if not line.strip():
            return
        try:
            message = json.loads(line)
        except (ValueError, RecursionError) as exc:
            error = "not a JSON line: %s" % exc
            self.send({"type": "event", "event": "protocolError", "message": error})
            return
        if isinstance(message, dict) and message.get("type") == "batch":
            messages = message.get("messages")
            if not isinstance(messages, list):
                error = 'a batch needs "messages": a list of requests'
                self.send({"type": "event", "event": "protocolError", "message": error})
                return
            for one in messages:
                if self.running:
                    self.handle_request(one)
        else:
            self.handle_request(message)

    def handle_request(self, message) -> None:
        """Answer one decoded request (now or, for spawn, later)."""
        request_id = message.get("id") if isinstance(message, dict) else None
        try:
            if not isinstance(message, dict) or message.get("type") != "request":
                raise AgentError("BadRequest", 'expected an object with "type": "request"')
            op, args = message.get("op"), message.get("args")
            handler = getattr(self, "op_" + op, None) if isinstance(op, str) else None
            if handler is None:
                raise AgentError("BadRequest", "unknown op %r" % (op,))
            if not isinstance(args, dict) and args is not None:
                raise AgentError("BadRequest", "args must be an object")
            result = handler(request_id, args or {})
        except AgentError as exc:
            self.reply_error(request_id, exc.code, exc.message)
        except Exception as exc:
            log("internal error:\n" + traceback.format_exc())
            self.reply_error(request_id, "InternalError", "%s: %s" % (type(exc).__name__, exc))
        else:
            if result is not DEFERRED:
                self.send({"type": "reply", "id": request_id, "ok": True, "result": result})

    # -- ops: op_<name>(request_id, args) returns the result or DEFERRED

    def op_ping(self, _request_id, _args) -> dict:
        """Return {"bootId", "time"}."""
        return {"bootId": self.boot_id, "time": utc_now()}

    def op_metrics(self, _request_id, _args) -> dict:
        """Return the host's CPU and memory counters for autoscale's node metrics:
        {"cpuBusy", "cpuTotal"} (clock ticks since boot, from /proc/stat) and
        {"memoryTotal", "memoryAvailable"} (bytes, from /proc/meminfo); a counter the
        kernel does not give is left out."""
        out = {}
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:]]
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
            total = sum(ticks[:8])  # guest time is counted in user already
            out.update(cpuBusy=total - idle, cpuTotal=total)
        with contextlib.suppress(OSError, ValueError, IndexError):
            info = {}
            with open("/proc/meminfo") as f:
                for line in f:
                    name, _, rest = line.partition(":")
                    info[name] = int(rest.split()[0]) * 1024
            out.update(memoryTotal=info["MemTotal"], memoryAvailable=info["MemAvailable"])
        return out

    def op_setup(self, _request_id, _args) -> dict:
        """Create the layout; return {"bootId", "root"}."""
        try:
            create_layout(self.root)
        except OSError as exc:
            raise AgentError("SetupFailed", "cannot create the layout: %s" % exc) from None
        return {"bootId": self.boot_id, "root": self.root}

    def op_env(self, _request_id, args) -> dict:
        """Set the variables every later spawn starts from (its own ``env`` wins):
        the node's, sent once per channel instead of with every spawn."""
        env = args.get("env") or {}
        check_env(env)
        self.base_env = dict(env)
        return {}

    def op_shutdown(self, _request_id, _args) -> dict:
        """Stop the agent after this reply; tasks keep running."""
        self.running = False
        return {}

    def op_answer(self, _request_id, args) -> dict:
        """Send the controller's answer to the task waiting on call args["callId"]."""
        call_id, ok = require(args, "callId", int), args.get("ok")
        if ok is True and isinstance(args.get("result"), dict):
            answer = {"ok": True, "result": args["result"]}
        elif ok is False and isinstance(args.get("error"), dict):
            answer = {"ok": False, "error": args["error"]}
        else:
            raise AgentError("BadRequest", "give ok true and a result, or ok false and an error")
        conn = self.calls.pop(call_id, None)
        if conn is None:
            raise AgentError("UnknownCall", "call %d is not waiting for an answer" % call_id)
        self.answer_client(conn, answer)
        return {}

    def task_dir_of(self, args: dict) -> str:
        """Return the real path of args["taskDir"]; raises AgentError("BadPath")."""
        return resolve_inside(self.root, self.root, args.get("taskDir"), "taskDir")

    def op_status(self, _request_id, args) -> dict:
        """Return {"tasks": [...]} with the state of each requested attempt."""
        tasks = args.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise AgentError("BadRequest", "tasks must be a list of objects")
        queries = [
            (require(t, "key", str), self.task_dir_of(t), require(t, "attempt", int)) for t in tasks
        ]
        states = []
        for key, task_dir, attempt in queries:
            pending = self.spawning.get(task_dir)
            if pending and pending.spec.key == key and pending.spec.attempt == attempt:
                states.append({"key": key, "state": "running"})  # starting right now
            else:
                states.append(task_state(task_dir, key, attempt))
        return {"tasks": states}

    def op_kill(self, _request_id, args) -> dict:
        """Have a live attempt's wrapper SIGTERM the task's process group and SIGKILL it
        3 s later (a promise the wrapper keeps even if the agent exits); return {"killed"}."""
        key, attempt = require(args, "key", str), require(args, "attempt", int)
        record = live_attempt(self.task_dir_of(args))
        if not record or record.get("key") != key or record.get("attempt") != attempt:
            return {"killed": False}
        try:
            os.kill(int(record["wrapperPid"]), KILL_SIGNAL)
        except OSError:
            return {"killed": False}
        return {"killed": True}

    def op_spawn(self, request_id, args) -> object:
        """Fork a wrapper for one attempt; the reply follows once the command started."""
        key, attempt = require(args, "key", str), require(args, "attempt", int)
        task_dir = self.task_dir_of(args)
        working_dir = args.get("workingDir") or "wd"
        working_dir = resolve_inside(self.root, task_dir, working_dir, "workingDir")
        argv, env, limit = check_command(args)
        env = {**self.base_env, **env}
        if task_dir in self.spawning or live_attempt(task_dir):
            raise AgentError("TaskAlreadyRunning", "%s has a live attempt" % args["taskDir"])
        spec = TaskSpec(
            self.root, key, attempt, args["taskDir"], task_dir, working_dir, argv, env, limit
        )
        read_fd, write_fd = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            raise AgentError("SpawnFailed", "fork failed: %s" % exc) from None
        if pid == 0:
            wrapper_main(spec, write_fd)  # never returns
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        pending = PendingSpawn(request_id, spec, read_fd, pid)
        self.spawns[read_fd] = self.spawning[task_dir] = pending
        self.selector.register(read_fd, selectors.EVENT_READ, self.on_start_result)
        return DEFERRED

    # -- start results from wrappers

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
        del self.spawns[pending.fd], self.spawning[pending.spec.task_dir]
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
        """Reply to this attempt's spawn now if it is still pending, so that the reply
        always precedes the exited event (the wrapper wrote the start result before the
        command started)."""
        try:
            task_dir = resolve_inside(self.root, self.root, task_dir_arg, "taskDir")
        except AgentError:
            return
        pending = self.spawning.get(task_dir)
        if pending and (pending.spec.task_dir_arg, pending.spec.attempt) == (task_dir_arg, attempt):
            try:
                pending.data += os.read(pending.fd, 4096)
            except OSError:
                return  # nothing there: the notice did not come from this wrapper
            self.finish_spawn(pending)

    # -- agent.sock: exit notices from wrappers, calls from tasks

    def on_accept(self, listener: socket.socket) -> None:
        """Accept the connections of wrappers that report an exit and tasks that call."""
        for _ in range(64):
            try:
                conn, _ = listener.accept()
            except OSError:  # BlockingIOError: none left; others: try next round
                return
            conn.setblocking(False)
            self.peers[conn] = b""
            self.accepted[conn] = boot_ticks()
            self.selector.register(conn, selectors.EVENT_READ, self.on_peer_data)

    def on_peer_data(self, conn: socket.socket) -> None:
        """Read the one line a connection sends; act on it once complete."""
        try:
            chunk = conn.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        data = self.peers[conn] = self.peers[conn] + chunk
        line, newline, _ = data.partition(b"\n")
        if chunk and not newline and len(line) <= MAX_SOCKET_LINE_BYTES:
            return
        del self.peers[conn]
        accepted_ticks = self.accepted.pop(conn)
        if len(line) > MAX_SOCKET_LINE_BYTES:
            message = "a call line may hold at most %d bytes" % MAX_SOCKET_LINE_BYTES
            self.answer_client(conn, call_error("CallTooLarge", message, 2))
            return
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            message = None
        if isinstance(message, dict) and "call" in message:
            self.start_call(conn, message["call"], accepted_ticks)
        elif isinstance(message, dict) and message.get("event") == "exited":
            self.selector.unregister(conn)
            conn.close()
            self.forward_exit(message)
        else:
            log("answering a malformed line on %s with BadCall" % SOCKET_NAME)
            error = 'expected one JSON line {"call": {"token", "op", "args"}}'
            self.answer_client(conn, call_error("BadCall", error, 2))

    def forward_exit(self, notice: dict) -> None:
        """Send a wrapper's exit notice to the controller (after the spawn reply)."""
        self.settle_spawn(notice.get("taskDir"), notice.get("attempt"))
        event = {"type": "event", "event": "exited"}
        event.update((name, notice.get(name)) for name in ("key", "taskDir", "attempt", "exit"))
        event["files"] = self.inline_files(notice)
        self.send(event)

    def inline_files(self, notice: dict) -> dict:
        """Return the attempt's exit record, stdout and stderr as read from its task dir
        (never through a symlink), for the exit event: {name: base64 text} for each of at
        most INLINE_BYTES, {name: None} for a larger one (the controller fetches it), and
        no entry for one that is absent. {} when the exit record on disk is not this
        attempt's: the notice may come from anyone, the files are the truth."""
        try:
            task_dir = self.task_dir_of(notice)
        except AgentError:
            return {}
        if finished_record(task_dir, notice.get("key"), notice.get("attempt")) is None:
            return {}
        files = {}
        try:
            dir_fd = os.open(task_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return {}
        try:
            for name in (EXIT_FILE, STDOUT_FILE, STDERR_FILE):
                try:
                    fd = open_no_follow(dir_fd, name, False, name)
                except FileCommandError:
                    continue
                try:
                    info = os.fstat(fd)
                    if not stat.S_ISREG(info.st_mode):
                        continue
                    if info.st_size > INLINE_BYTES:
                        files[name] = None
                        continue
                    data = os.read(fd, INLINE_BYTES + 1)
                    files[name] = (
                        None if len(data) > INLINE_BYTES else base64.b64encode(data).decode()
                    )
                finally:
                    os.close(fd)
        finally:
            os.close(dir_fd)
        return files

    def session_task(self, sid: int) -> tuple | None:
        """Return (key, attempt) of the live attempt whose command leads session sid, or
        None. The leader's parent must be that attempt's wrapper: one this agent is
        starting, or one whose working directory is a task dir whose attempt.json names
        it (alive, same start time) and sid as its command."""
        fields = proc_stat(sid)
        if not fields or fields[3] != b"%d" % sid:  # no such process, or not a session leader
            return None
        wrapper = int(fields[1])
        for pending in self.spawning.values():
            if pending.wrapper_pid == wrapper:
                return pending.spec.key, pending.spec.attempt
        try:
            task_dir = os.readlink("/proc/%d/cwd" % wrapper)
        except OSError:
            return None
        if not task_dir.startswith(self.root.rstrip("/") + "/"):
            return None
        record = live_attempt(task_dir)
        if not record or record.get("wrapperPid") != wrapper or record.get("pid") != sid:
            return None
        return record.get("key"), record.get("attempt")

    def start_call(self, conn: socket.socket, call, accepted_ticks: int) -> None:
        """Forward a task's call to the controller as a call event naming the calling task
        (or refuse it); the connection waits for the answer."""
        fields = (("token", str), ("op", str), ("args", dict))
        caller = None
        if not isinstance(call, dict) or not all(
            isinstance(call.get(name), kind) and call[name] != "" for name, kind in fields
        ):
            error = "call must be an object with token (str), op (str) and args (object)"
            self.answer_client(conn, call_error("BadCall", error, 2))
        elif (caller := self.caller_task(conn, accepted_ticks)) is None:
            error = "the caller is not in the session of a task running on this node"
            self.answer_client(conn, call_error("CallerNotATask", error))
        elif len(self.calls) + len(self.answers) >= MAX_CALLS:
            error = "more than %d calls are open on this node" % MAX_CALLS
            self.answer_client(conn, call_error("TooManyCalls", error))
        else:
            self.last_call_id += 1
            call_id = self.last_call_id
            self.calls[call_id] = conn
            on_hangup = functools.partial(self.on_call_hangup, call_id)
            self.selector.modify(conn, selectors.EVENT_READ, on_hangup)
            event = {"type": "event", "event": "call", "callId": call_id}
            event.update(taskKey=caller[0], attempt=caller[1])
            event.update((name, call[name]) for name in ("token", "op", "args"))
            self.send(event)

    def caller_task(self, conn: socket.socket, accepted_ticks: int) -> tuple | None:
        """Return (key, attempt) of the task whose session the caller on conn is in, or None."""
        sid = peer_session(conn, accepted_ticks)
        return None if sid is None else self.session_task(sid)

    def on_call_hangup(self, call_id: int, conn: socket.socket) -> None:
        """Drop a waiting call whose client closed (more bytes it sends are ignored)."""
        try:
            chunk = conn.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            del self.calls[call_id]
            self.selector.unregister(conn)
            conn.close()

    def answer_client(self, conn: socket.socket, answer: dict) -> None:
        """Send one answer line on conn, then close it; the part the socket does not take
        at once goes out as the client reads."""
        self.answers[conn] = memoryview(encode_line(answer))
        self.selector.modify(conn, selectors.EVENT_WRITE, self.on_answer_writable)
        self.on_answer_writable(conn)

    def on_answer_writable(self, conn: socket.socket) -> None:
        """Send more of an answer; close the connection once sent or if the client left."""
        data = self.answers[conn]
        try:
            data = data[conn.send(data) :]
        except BlockingIOError:
            return
        except OSError:
            data = b""  # the client is gone
        if data:
            self.answers[conn] = data
            return
        del self.answers[conn]
        self.selector.unregister(conn)
        conn.close()


# ---------------------------------------------------------------- task files


class FileCommandError(Exception):
    """A refused read or list; ``code`` and ``message`` go into the answer header."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def path_parts(relative: str, field: str) -> list:
    """Return the components of a relative path; raises FileCommandError("BadPath")."""
    parts = relative.split("/")
    if not relative or "\0" in relative or relative.startswith("/"):
        raise FileCommandError("BadPath", "%s must be a non-empty relative path" % field)
    if any(part in ("", ".", "..") for part in parts):
        raise FileCommandError(
            "BadPath", "%s has an empty, '.' or '..' part: %r" % (field, relative)
        )
    return parts


def open_no_follow(dir_fd: int, name: str, want_dir: bool, shown: str) -> int:
    """Open name in directory dir_fd without following a symlink; return the fd: an O_PATH
    fd of a directory (usable as a dir_fd) when want_dir, else a read-only fd (non-blocking,
    so a FIFO cannot hang us). The type is checked on what was opened, never looked up
    again. Raises FileCommandError: PathEscapesTaskDir for a symlink, FileNotFound,
    FileUnreadable."""
    flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
    flags |= os.O_PATH if want_dir else os.O_RDONLY | os.O_NONBLOCK
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink as the last component
            message = "%s is a symbolic link; links in task dirs are not followed" % shown
            raise FileCommandError("PathEscapesTaskDir", message) from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise FileCommandError("FileNotFound", "%s does not exist" % shown) from None
        message = "cannot open %s: %s" % (shown, exc.strerror)
        raise FileCommandError("FileUnreadable", message) from None
    mode = os.fstat(fd).st_mode
    if want_dir and not stat.S_ISDIR(mode):
        os.close(fd)
        if stat.S_ISLNK(mode):  # O_PATH|O_NOFOLLOW opens the link itself
            message = "%s is a symbolic link; links in task dirs are not followed" % shown
            raise FileCommandError("PathEscapesTaskDir", message)
        raise FileCommandError("FileNotFound", "%s is not a directory" % shown)
    return fd


def open_beneath(root: str, parts: list, want_dir: bool, named_from: int = 0) -> int:
    """Open root/<parts> one component at a time from root, following no symlink at any
    component (each from the previous one's fd); return the last one's fd as
    open_no_follow does. Errors name the path from part named_from on. Raises
    FileCommandError."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, part in enumerate(parts):
            shown = "/".join(parts[min(named_from, index) : index + 1])
            last = index == len(parts) - 1
            next_fd = open_no_follow(fd, part, want_dir or not last, shown)
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_header(header: dict) -> None:
    """Write the answer header line of a file command to stdout."""
    write_all(1, encode_line(header))


def copy_range(src: int, offset: int, count: int | None) -> None:
    """Write count bytes (None: to the end) of src from offset to stdout, in chunks."""
    while count is None or count > 0:
        size = 1 << 20 if count is None else min(1 << 20, count)
        chunk = os.pread(src, size, offset)
        if not chunk:
            return
        write_all(1, chunk)
        offset += len(chunk)
        if count is not None:
            count -= len(chunk)


def command_read(root: str, args: list) -> None:
    """read TASK_DIR NAME START [END]: stream bytes START..END (inclusive) of a regular
    file under the task dir, opened without following links, after a header line."""
    if len(args) not in (3, 4) or not all(a.isdigit() for a in args[2:]):
        raise FileCommandError("BadRequest", "usage: read TASK_DIR NAME START [END]")
    task_dir = path_parts(args[0], "taskDir")
    parts = task_dir + path_parts(args[1], "name")
    start, end = int(args[2]), int(args[3]) if len(args) == 4 else None
    if end is not None and end < start:
        raise FileCommandError("InvalidRange", "the range %d-%d is empty" % (start, end))
    fd = open_beneath(root, parts, False, len(task_dir))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileCommandError("NotARegularFile", "%s is not a regular file" % args[1])
        write_header({"ok": True, "size": st.st_size})
        copy_range(fd, start, None if end is None else end - start + 1)
    finally:
        os.close(fd)


def command_read_many(root: str, args: list) -> None:
    """read-many TASK_DIR: read a JSON list of names under the task dir from one line of
    stdin; for each in turn write a header line, as read's, and after an ok one the file
    as chunks, each its length on a line and then its bytes, ending with "0\\n". A name
    refused (as read refuses it) gets an error header and the next one follows."""
    if len(args) != 1:
        raise FileCommandError("BadRequest", "usage: read-many TASK_DIR < JSON list of names")
    task_dir = path_parts(args[0], "taskDir")
    try:
        names = json.loads(sys.stdin.buffer.readline(MAX_LINE_BYTES))
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise FileCommandError("BadRequest", "stdin must be one JSON list of names")
    out = bytearray()  # small files go out together, not as three writes each
    for name in names:
        try:
            fd = open_beneath(root, task_dir + path_parts(name, "name"), False, len(task_dir))
        except FileCommandError as exc:
            out += encode_line({"ok": False, "error": {"code": exc.code, "message": exc.message}})
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                error = {"code": "NotARegularFile", "message": "%s is not a regular file" % name}
                out += encode_line({"ok": False, "error": error})
                continue
            out += encode_line({"ok": True, "size": st.st_size})
            offset = 0
            while chunk := os.pread(fd, 1 << 20, offset):
                out += b"%d\n" % len(chunk)
                out += chunk
                offset += len(chunk)
                if len(out) >= 1 << 20:
                    write_all(1, bytes(out))
                    out.clear()
            out += b"0\n"
        finally:
            os.close(fd)
    write_all(1, bytes(out))


def list_entries(dir_fd: int, prefix: str, recursive: bool, out: list) -> None:
    """Append the entries of directory dir_fd (an O_PATH fd; names under prefix) to out,
    descending into real directories (never links) when recursive."""
    readable = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        with os.scandir(readable) as entries:
            found = sorted((entry.name, entry.stat(follow_symlinks=False)) for entry in entries)
    finally:
        os.close(readable)
    for name, st in found:
        is_dir = stat.S_ISDIR(st.st_mode)
        out.append(
            {
                "name": prefix + name,
                "isDirectory": is_dir,
                "size": 0 if is_dir else st.st_size,
                "mtime": st.st_mtime,
                "mode": stat.S_IMODE(st.st_mode),
            }
        )
        if is_dir and recursive:
            try:
                child = open_no_follow(dir_fd, name, True, name)
            except FileCommandError:
                continue  # replaced or removed meanwhile
            try:
                list_entries(child, prefix + name + "/", recursive, out)
            finally:
                os.close(child)


def command_list(root: str, args: list) -> None:
    """list TASK_DIR [--recursive]: write one JSON line {"ok": true, "files": [...]}
    describing the entries under the task dir, walked without following links."""
    if len(args) not in (1, 2) or args[1:] not in ([], ["--recursive"]):
        raise FileCommandError("BadRequest", "usage: list TASK_DIR [--recursive]")
    fd = open_beneath(root, path_parts(args[0], "taskDir"), True)
    try:
        files = []
        list_entries(fd, "", len(args) == 2, files)
    finally:
        os.close(fd)
    write_header({"ok": True, "files": files})


FILE_COMMANDS = {"read": command_read, "read-many": command_read_many, "list": command_list}


def run_file_command(root: str, name: str, args: list) -> int:
    """Run one task file command; on error write {"ok": false, "error"} and return 1."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # the reader left: stop quietly
    try:
        FILE_COMMANDS[name](root, args)
    except FileCommandError as exc:
        write_header({"ok": False, "error": {"code": exc.code, "message": exc.message}})
        return 1
    except OSError as exc:
        error = {"code": "FileUnreadable", "message": str(exc)}
        with contextlib.suppress(OSError):
            write_header({"ok": False, "error": error})
        return 1
    return 0


# ---------------------------------------------------------------- startup


def acquire_lock(path: str, timeout: float) -> int | None:
    """Open path and take an exclusive flock, waiting up to timeout seconds for a
    previous agent to exit. Return the locked fd, or None if still held; raises OSError."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    waiting = [False]  # the single alarm may interrupt only the blocking flock below

    def on_alarm(_signum, _frame):
        if waiting[0]:
            raise TimeoutError()

    signal.signal(signal.SIGALRM, on_alarm)
    # Try, wait, try again: the last try covers an alarm that came right after flock.
    for blocking in (False, True, False) if timeout > 0 else (False,):
        if blocking:
            signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            waiting[0] = blocking
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
            waiting[0] = False
            return fd
        except (BlockingIOError, TimeoutError):
            waiting[0] = False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    os.close(fd)
    return None


def lock_timeout() -> float:
    """Return the lock wait in seconds from FLEET_AGENT_LOCK_TIMEOUT, default 10."""
    try:
        return max(0.0, min(float(os.environ.get(LOCK_TIMEOUT_ENV, "")), 86400.0))
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


def fail_hello(code: str, message: str) -> None:
    """Send the hello of a failed start."""
    log(message)
    error = {"code": code, "message": message}
    with contextlib.suppress(OSError):
        write_all(1, encode_line({"type": "hello", "protocol": PROTOCOL, "error": error}))


def main(argv: list) -> int:
    """Run the agent for the node root argv[1], or with more arguments one task file
    command (read, read-many, list) under it; return the exit status."""
    if len(argv) > 2 and argv[2] in FILE_COMMANDS:
        return run_file_command(os.path.realpath(argv[1]), argv[2], argv[3:])
    if len(argv) != 2:
        sys.stderr.write("usage: %s ROOT [read|read-many|list ARGS...]\n" % argv[0])
        return 2
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps exited wrappers
    root = os.path.realpath(argv[1])
    volatile = os.path.join(root, "volatile")
    try:
        os.makedirs(volatile, exist_ok=True)  # parents with the login's usual modes
        TASK_UMASK[0] = os.umask(AGENT_UMASK)
        lock_fd = acquire_lock(os.path.join(volatile, LOCK_NAME), lock_timeout())
        if lock_fd is None:
            fail_hello("AgentBusy", "another agent holds %s/%s" % (volatile, LOCK_NAME))
            return EXIT_BUSY
        create_layout(root)
        os.chdir(volatile)  # socket paths are limited to 107 bytes: bind a relative one
        listener = listen_socket()
    except OSError as exc:
        fail_hello("AgentStartFailed", "cannot start in %s: %s" % (root, exc))
        return 1
    agent = Agent(root, lock_fd, listener)
    agent.send(agent.hello())
    try:
        agent.run()
    finally:
        agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
