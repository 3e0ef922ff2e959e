"""Host hook commands: a host's own argv for reboot, reimage, power on and power off, run on
the controller machine (``vagrant reload NAME``, an IPMI power cycle, ``fleet lab reboot``).

A hook is an argv (a list of strings), never a shell line: it is run with
``asyncio.create_subprocess_exec`` in a session of its own, stdin ``/dev/null``, stdout and
stderr captured together (the last ``OUTPUT_LIMIT`` bytes kept), and the environment of the
controller plus ``FLEET_HOST_ID``, ``FLEET_HOST_ADDRESS`` and ``FLEET_HOST_PORT``. When the
timeout runs out (or the caller is cancelled) its whole process group is killed.

Errors (all ``HostHookError``, a RemoteError, exit status 1, ``target`` ``host ID``,
``field`` the hook's JSON name, ``details`` ``{"hook", "argv", "exitCode", "signal",
"output"}``):

    HostHookNotSet                  the host has no command for that hook
    HostHookProgramNotFound         argv[0] does not exist
    HostHookProgramNotExecutable    argv[0] cannot be run (permissions, not a program)
    HostHookFailed                  it exited non-zero or was killed by a signal
    HostHookTimedOut                it ran past the timeout; its process group was killed
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shlex
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fleet.errors import RemoteError

__all__ = [
    "DEFAULT_TIMEOUT",
    "HOOK_KINDS",
    "HookResult",
    "HostHookError",
    "OUTPUT_LIMIT",
    "hook_argv",
    "hook_command",
    "json_field",
    "parse_argv",
    "run_hook",
]

#: Hook kinds, each with its Host attribute ``<kind>_command``, host JSON field
#: ``<camelKind>Command`` and inventory host var ``fleet_<kind>_command``.
HOOK_KINDS = ("reboot", "reimage", "power_on", "power_off")
DEFAULT_TIMEOUT = 600.0  # seconds: `vagrant reload` or a BMC power cycle can take minutes
OUTPUT_LIMIT = 64 << 10  # bytes of combined stdout and stderr kept (the tail)
MESSAGE_TAIL = 2000  # characters of that tail quoted in an error's message
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL to a timed-out hook's group
EOF_GRACE = 1.0  # seconds to wait for the output's EOF once the hook exited
MAX_ARGS = 4096
MAX_ARG_BYTES = 128 << 10  # Linux's MAX_ARG_STRLEN


class HookHost(Protocol):
    """What run_hook reads of a host: a fleet.tables.Host row or a fleet.reads.Row."""

    id: str
    address: str
    port: int


@dataclass(frozen=True)
class HookResult:
    """A hook that exited 0: what ran, for how long, and the tail of what it printed."""

    host_id: str
    kind: str
    argv: list[str]
    exit_code: int
    output: str  # the last OUTPUT_LIMIT bytes of stdout and stderr together, decoded
    duration: float  # seconds

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready camelCase fields."""
        return {
            "hostId": self.host_id,
            "hook": json_field(self.kind),
            "argv": list(self.argv),
            "exitCode": self.exit_code,
            "output": self.output,
            "duration": round(self.duration, 3),
        }


class HostHookError(RemoteError):
    """A hook that could not run or did not succeed; carries what happened as data."""

    code = "HostHookFailed"

    def __init__(
        self,
        message: str,
        *,
        code: str,
        host_id: str,
        kind: str,
        argv: Sequence[str] = (),
        exit_code: int | None = None,
        signal_number: int | None = None,
        output: str = "",
    ) -> None:
        self.host_id = host_id
        self.kind = kind
        self.argv = list(argv)
        self.exit_code = exit_code
        self.signal_number = signal_number
        self.output = output
        details: dict[str, Any] = {"hook": json_field(kind), "argv": self.argv}
        details |= {"exitCode": exit_code, "signal": signal_number, "output": output}
        super().__init__(
            message, code=code, target=f"host {host_id}", field=json_field(kind), details=details
        )


def json_field(kind: str) -> str:
    """Return the host JSON field of a hook kind: ``power_on`` -> ``powerOnCommand``."""
    head, *rest = kind.split("_")
    return head + "".join(w.capitalize() for w in rest) + "Command"


def parse_argv(value: Any) -> list[str]:
    """Return a hook's argv from inventory or JSON input: a string is split with
    ``shlex.split``; a list must hold strings (integers are taken as their text).

    Raises ValueError, with a reason fit to follow the variable's name, for bad quoting,
    another type, an empty command, an empty or NUL-holding program, or an argv over
    Linux's limits."""
    if isinstance(value, str):
        argv = shlex.split(value)  # ValueError: "No closing quotation", "No escaped character"
    elif isinstance(value, list):
        argv = []
        for item in value:
            if isinstance(item, bool):  # YAML reads a bare on/off/yes/no as a boolean
                raise ValueError(f"every argument must be a string, not {item!r} (quote it)")
            if not isinstance(item, (str, int)):
                raise ValueError(f"every argument must be a string, not {item!r}")
            argv.append(str(item))
    else:
        raise ValueError(f"must be a command line or a list of arguments, not {value!r}")
    if not argv or argv[0] == "":
        raise ValueError("must name a program to run")
    if len(argv) > MAX_ARGS or any(len(os.fsencode(a)) > MAX_ARG_BYTES for a in argv):
        raise ValueError(f"is too long (at most {MAX_ARGS} arguments of 128 KiB)")
    if any("\0" in a for a in argv):
        raise ValueError("must not contain NUL characters")
    return argv


def hook_argv(host: Any, kind: str) -> list[str] | None:
    """Return the host's argv for ``kind`` (one of HOOK_KINDS), or None when it has none.
    Raises ValueError for an unknown kind."""
    if kind not in HOOK_KINDS:
        raise ValueError(f"unknown hook kind {kind!r}; expected one of {', '.join(HOOK_KINDS)}")
    argv = getattr(host, f"{kind}_command", None)
    return list(argv) if argv else None


def hook_command(host: Any, kind: str) -> list[str]:
    """Return the host's argv for ``kind``; Raises HostHookError(HostHookNotSet) if unset."""
    argv = hook_argv(host, kind)
    if argv is None:
        raise HostHookError(
            f"the host has no {json_field(kind)} (inventory var fleet_{kind}_command)",
            code="HostHookNotSet",
            host_id=host.id,
            kind=kind,
        )
    return argv


def hook_env(host: HookHost) -> dict[str, str]:
    """Return the hook's environment: the controller's plus the FLEET_HOST_* variables."""
    return {
        **os.environ,
        "FLEET_HOST_ID": str(host.id),
        "FLEET_HOST_ADDRESS": str(host.address),
        "FLEET_HOST_PORT": str(host.port),
    }


async def run_hook(host: HookHost, kind: str, timeout: float = DEFAULT_TIMEOUT) -> HookResult:
    """Run the host's ``kind`` hook (one of HOOK_KINDS) on this machine and wait for it.

    Returns a HookResult when it exits 0. Raises HostHookError with code HostHookNotSet,
    HostHookProgramNotFound, HostHookProgramNotExecutable, HostHookFailed (non-zero exit
    or a signal: exit code, signal and the output's tail in the message and details) or
    HostHookTimedOut (after ``timeout`` seconds; the process group got SIGTERM, then
    SIGKILL after 2 s). Cancelling the caller kills the process group too. Raises
    ValueError for an unknown kind."""
    argv = hook_command(host, kind)
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=hook_env(host),
            start_new_session=True,  # its own process group, killed whole on a timeout
        )
    except OSError as exc:
        missing = exc.errno == errno.ENOENT
        raise HostHookError(
            f"cannot start its {json_field(kind)} {shlex.join(argv)}: {exc.strerror or exc}",
            code="HostHookProgramNotFound" if missing else "HostHookProgramNotExecutable",
            host_id=host.id,
            kind=kind,
            argv=argv,
        ) from None
    tail = bytearray()
    assert proc.stdout is not None
    reader = asyncio.create_task(_keep_tail(proc.stdout, tail))
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        await _kill_group(proc)
        output = await _finish(reader, tail)
        raise HostHookError(
            f"its {json_field(kind)} {shlex.join(argv)} ran past {timeout:g} s and was "
            f"killed{_quoted(output)}",
            code="HostHookTimedOut",
            host_id=host.id,
            kind=kind,
            argv=argv,
            signal_number=-proc.returncode if proc.returncode and proc.returncode < 0 else None,
            output=output,
        ) from None
    except BaseException:  # cancelled: leave nothing running behind
        await asyncio.shield(_kill_group(proc))
        reader.cancel()
        raise
    output = await _finish(reader, tail)
    code = proc.returncode
    assert code is not None
    if code != 0:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise HostHookError(
            f"its {json_field(kind)} {shlex.join(argv)} {how}{_quoted(output)}",
            code="HostHookFailed",
            host_id=host.id,
            kind=kind,
            argv=argv,
            exit_code=code if code >= 0 else None,
            signal_number=-code if code < 0 else None,
            output=output,
        )
    return HookResult(host.id, kind, argv, code, output, time.monotonic() - started)


async def _keep_tail(stream: asyncio.StreamReader, tail: bytearray) -> None:
    """Read ``stream`` to EOF, keeping only its last OUTPUT_LIMIT bytes in ``tail``."""
    while chunk := await stream.read(65536):
        tail += chunk
        if len(tail) > OUTPUT_LIMIT:
            del tail[: len(tail) - OUTPUT_LIMIT]


async def _finish(reader: asyncio.Task[None], tail: bytearray) -> str:
    """Wait briefly for the output's EOF (a daemon the hook left may hold the pipe open),
    then return the tail decoded."""
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(reader, EOF_GRACE)
    return bytes(tail).decode(errors="replace")


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it after KILL_GRACE, reap ``proc``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), KILL_GRACE)
            if sig == signal.SIGTERM:  # the leader is gone: make sure its group is too
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            return


def _quoted(output: str) -> str:
    """Return "; output ended:" and the last MESSAGE_TAIL characters, or "" if none."""
    text = output.strip()
    if not text:
        return ""
    return f"; output ended:\n{text[-MESSAGE_TAIL:]}"
