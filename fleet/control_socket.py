"""The controller's control socket: its path, its wire format, and the CLI's client.

A running controller listens on a stream Unix socket in FLEET_HOME, named after its
database (``control-<digest of the database URL>.sock``), created 0600; each side
checks that the other runs as the same user (``SO_PEERCRED``). One exchange per
connection, in JSON lines::

    controller: {"fleet": "control", "version": 1}
    client:     {"op": "exec", "pool": null, "hosts": "node*", "argv": ["true"], "timeout": null}
    controller: {"results": [HostResult.to_dict(), ...]}
            or  {"error": {"code", "message", "target", "field", "details", "exitStatus"}}

The client sends its request only after the controller's hello, so a controller that is
gone (no socket, or a stale one: connection refused), hung, or of another protocol
version has run nothing, and the caller falls back to its own connections. Stdlib only:
a warm ``fleet exec`` imports neither asyncssh nor the ORM.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

from fleet.errors import (
    EXIT_BAD_INPUT,
    EXIT_CONFLICT,
    EXIT_NOT_FOUND,
    EXIT_TIMED_OUT,
    BadInput,
    Conflict,
    FleetError,
    NotFound,
    TimedOut,
)
from fleet.settings import Settings

VERSION = 1
HELLO = {"fleet": "control", "version": VERSION}
#: Seconds the client waits for the hello before it runs the command itself.
HELLO_TIMEOUT = 2.0
#: Longest request line the controller reads.
MAX_REQUEST = 1 << 20
#: exit status -> the error class raised for it, so a warm error exits as a cold one.
_ERRORS: dict[int, type[FleetError]] = {
    EXIT_BAD_INPUT: BadInput,
    EXIT_NOT_FOUND: NotFound,
    EXIT_CONFLICT: Conflict,
    EXIT_TIMED_OUT: TimedOut,
}
_UCRED = struct.Struct("3i")  # pid, uid, gid


def socket_path(settings: Settings) -> Path:
    """Return the control socket of the controller of ``settings``' database."""
    digest = hashlib.sha256(settings.db_url.encode()).hexdigest()[:12]
    return settings.home / f"control-{digest}.sock"


def peer_uid(sock: socket.socket) -> int:
    """Return the user id of the process at the other end of the Unix socket ``sock``."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))[1]


def same_user(sock: socket.socket, uid: int | None = None) -> bool:
    """Return whether the peer of ``sock`` runs as ``uid`` (default: this process's user)."""
    return peer_uid(sock) == (os.getuid() if uid is None else uid)


def encode(message: dict[str, Any]) -> bytes:
    """Return ``message`` as one JSON line."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def error_message(exc: FleetError) -> dict[str, Any]:
    """Return the wire form of ``exc``."""
    return {"error": {**exc.to_dict(), "exitStatus": exc.exit_status}}


def error_from(data: dict[str, Any]) -> FleetError:
    """Return the error whose wire form is ``data``: same code, message, target and exit
    status."""
    cls = _ERRORS.get(data.get("exitStatus", 1), FleetError)
    return cls(
        str(data.get("message", "")),
        code=str(data.get("code") or cls.code),
        target=data.get("target"),
        field=data.get("field"),
        details=data.get("details"),
    )


def exec_through_controller(path: Path, request: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Send the exec ``request`` to the controller listening at ``path``; return its
    results (``HostResult.to_dict`` objects), or None when no controller of this user
    and protocol answered there, in which case nothing ran.

    Raises the error the controller reported (as fleet/errors.py's class of its exit
    status), or FleetError ``ControllerLost`` when the controller went away after it
    took the request (the command may have run on some hosts)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(HELLO_TIMEOUT)
        try:
            sock.connect(str(path))
            if not same_user(sock):
                return None
            reader = sock.makefile("rb")
            hello = json.loads(reader.readline() or b"null")
            if hello != HELLO:
                return None
            sock.settimeout(None)
            sock.sendall(encode({"op": "exec", **request}))
        except (OSError, ValueError):  # no socket, stale, hung, too long a path, garbled
            return None
        try:
            answer = json.loads(reader.readline())
        except (OSError, ValueError):
            answer = None
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        raise error_from(answer["error"])
    if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
        raise FleetError(
            "the controller stopped before it answered; the command may have run on some hosts",
            code="ControllerLost",
        )
    return answer["results"]
