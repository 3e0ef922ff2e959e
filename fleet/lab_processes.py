"""A lab node's processes, found in /proc: its sshd listener's sessions, and everything a
simulated reboot must kill; signalled, and waited for until they are gone."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from fleet.errors import FleetError

STOP_TIMEOUT = 5.0
REBOOT_ROUNDS = 20  # kill rounds while processes of a rebooting node keep forking


def table_of_processes() -> dict[int, tuple[int, str]]:
    """Map every pid to (parent pid, command name), from /proc."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.scandir("/proc"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = Path(entry.path, "stat").read_text() if entry.name.isdigit() else ""
            if raw:
                ppid = int(raw[raw.rfind(")") + 2 :].split()[1])
                table[int(entry.name)] = (ppid, raw[raw.find("(") + 1 : raw.rfind(")")])
    return table


def sessions(listener: int, table: dict[int, tuple[int, str]]) -> list[int]:
    """Return the sshd processes below ``listener``: those serving its open connections."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, comm) in table.items():
        if comm.startswith("sshd"):  # "sshd-session" from OpenSSH 9.8
            children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = [listener]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def exited(pid: int) -> bool:
    """Return True if the process is gone or a zombie (the init may be slow to reap it)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return raw[raw.rfind(")") + 2 :][:1] in ("Z", "X")


def send(pids: Iterable[int], sig: int) -> None:
    """Send ``sig`` to each of ``pids`` that still runs."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def terminate(pids: list[int], sig: int) -> None:
    """Send ``sig`` (and SIGCONT, so stopped ones get it), wait, SIGKILL what is left."""
    send(pids, sig)
    send(pids, signal.SIGCONT)
    for then in (signal.SIGKILL, None):
        deadline = time.monotonic() + STOP_TIMEOUT
        while (pids := [p for p in pids if not exited(p)]) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not pids:
            return
        if then is not None:
            send(pids, then)
    raise FleetError(f"sshd processes {pids} did not exit", code="LabStopFailed")


def kill_node(name: str, listener: Callable[[], int | None], marker: bytes) -> int:
    """SIGKILL a lab node's processes until none is left; return how many (fleet/lab.py
    ``reboot_node`` says which they are). ``listener``: its sshd listener's pid now, if it
    runs; ``marker``: the environment entry every process it started holds."""
    table = table_of_processes()
    spared, pid = set(), os.getpid()
    while pid > 0 and pid not in spared:  # us and our ancestors (say, a session of the node)
        spared.add(pid)
        pid = table.get(pid, (0, ""))[0]
    killed: set[int] = set()
    for _ in range(REBOOT_ROUNDS):
        table = table_of_processes()
        found: set[int] = set()
        if (sshd := listener()) is not None:
            found = {sshd, *sessions(sshd, table)}
        for pid in table:
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    found.add(pid)
        found |= descendants(found, table)
        victims = [p for p in found - spared if not exited(p)]
        if not victims:
            return len(killed)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_TIMEOUT
        while (victims := [p for p in victims if not exited(p)]) and time.monotonic() < deadline:
            time.sleep(0.02)
        if victims:
            msg = f"processes {victims} of the node survived SIGKILL"
            raise FleetError(msg, code="LabRebootFailed", target=name)
        killed.update(found - spared)
    msg = f"the node's processes kept starting new ones after {REBOOT_ROUNDS} rounds of SIGKILL"
    raise FleetError(msg, code="LabRebootFailed", target=name)


def descendants(pids: set[int], table: dict[int, tuple[int, str]]) -> set[int]:
    """Return every process below ``pids`` in ``table`` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(pids)
    while todo:
        for kid in children.get(todo.pop(), []):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found
