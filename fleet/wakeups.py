"""Wake-ups: a command that wrote to the store tells a running controller at once, so
that it does not wait for its next idle tick.

SQLite: a datagram to a Unix socket beside the database file (``fleet.db.wake``, in the
private FLEET_HOME), which the controller binds. PostgreSQL: ``NOTIFY fleet_wake`` in the
writing transaction (delivered when it commits), which the controller ``LISTEN``s to
(fleet/store.py does both sides of that). A wake-up that finds no controller is dropped:
the controller reads the store when it starts anyway.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

#: The PostgreSQL notification channel.
CHANNEL = "fleet_wake"


def socket_path(db_file: Path) -> Path:
    """Return the wake-up socket of the SQLite database file ``db_file``."""
    return db_file.with_name(db_file.name + ".wake")


def send(path: Path) -> None:
    """Send one wake-up to the controller listening at ``path``; never blocks or fails
    (nobody listening, or its queue full, is no error: it wakes by itself too)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        s.sendto(b"w", str(path))


class SocketListener:
    """The controller's end of the SQLite wake-up socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a controller that was killed
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        old = os.umask(0o177)
        try:
            self._sock.bind(str(path))  # 0600: only the owner may wake the controller
        finally:
            os.umask(old)

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> None:
        """Read every wake-up waiting (they all mean the same)."""
        with contextlib.suppress(BlockingIOError):
            while self._sock.recv(64):
                pass

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
