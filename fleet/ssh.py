"""The SSH layer: the only module that imports asyncssh.

One :class:`Connection` per node, with keepalives, carrying command runs, the
long-lived agent process and SFTP. Host keys are always checked against fleet's
own store (never ``~/.ssh/known_hosts``, never ``~/.ssh/config``, never agent
forwarding); asyncssh's exceptions become fleet's own (see :mod:`fleet.errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import shlex
import socket
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import asyncssh

from fleet.errors import (
    STORAGE_ERRNOS,
    AuthenticationFailed,
    FleetError,
    HostKeyMismatch,
    HostKeyUnknown,
    RemoteError,
    Unreachable,
    storage_error,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0
#: Node liveness, in two layers. The kernel notices a dead host or a cut network, at no
#: CPU cost to the controller: TCP keepalive probes start after TCP_IDLE seconds of
#: silence, and the connection drops once what was sent (data or probes) has gone
#: unacknowledged for TCP_DEAD_AFTER seconds. SSH keepalives notice an sshd that is alive
#: in the kernel but answers nothing (frozen): one goes out after KEEPALIVE_INTERVAL
#: seconds without a packet from the node, and the connection drops when the next
#: interval passes without an answer, after 60 s. Each SSH keepalive costs the controller
#: about half a millisecond of CPU, so they are spaced out: 300 idle nodes, 10 a second.
TCP_IDLE = 10
TCP_PROBE_INTERVAL = 5
TCP_DEAD_AFTER = 20.0
KEEPALIVE_INTERVAL = 30.0
KEEPALIVE_COUNT_MAX = 1
#: Ciphers in order of preference: AES-GCM is one AES-NI call per packet, where asyncssh's
#: chacha20-poly1305 (its default first choice) sets up four cipher contexts per packet;
#: that cuts the controller's CPU per packet by about a third.
ENCRYPTION_ALGS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)
#: Seconds a closing connection gets to go cleanly before it is aborted.
CLOSE_GRACE = 2.0
#: Concurrent handshakes allowed per sshd (address, port); below MaxStartups' 10.
HANDSHAKES_PER_SSHD = 8

_handshake_limits: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, int], asyncio.Semaphore]
] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Target:
    """Where and how to log in to one node, and the host key fleet expects there."""

    host_id: str
    address: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    host_key_policy: str = "accept-new"
    known_key: str | None = None  # OpenSSH one-line public key, if recorded


@dataclass(frozen=True)
class RunResult:
    """The outcome of one command run over SSH."""

    exit_code: int | None
    stdout: bytes
    stderr: bytes
    signal: str | None = None


@dataclass(frozen=True)
class RemoteFile:
    """One entry of a remote directory listing."""

    name: str
    is_directory: bool
    size: int
    mtime: float | None
    mode: int | None


NewKeyCallback = Callable[[str, str], None]  # (public key line, SHA256 fingerprint)


def fingerprint(public_key_line: str) -> str:
    """Return the ``SHA256:...`` fingerprint of an OpenSSH public key line."""
    return str(asyncssh.import_public_key(public_key_line).get_fingerprint("sha256"))


def _trust_nothing(_host: str, _addr: str, _port: int | None) -> tuple[list, list, list]:
    # Every key then goes through _Client.validate_host_public_key: fleet decides.
    return [], [], []


class _Client(asyncssh.SSHClient):
    def __init__(self, target: Target, on_new_key: NewKeyCallback | None) -> None:
        self.target = target
        self.on_new_key = on_new_key
        self.presented: str | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        line = key.export_public_key("openssh").decode().strip()
        self.presented = line
        known = self.target.known_key
        if known is None:
            if self.target.host_key_policy != "accept-new":
                return False
            if self.on_new_key is not None:
                self.on_new_key(line, str(key.get_fingerprint("sha256")))
            return True
        return _same_key(known, line)


def _same_key(a: str, b: str) -> bool:
    return a.split()[:2] == b.split()[:2]


def _host_key_error(target: Target, presented: str | None) -> FleetError:
    if target.known_key is None:
        return HostKeyUnknown(
            f"no host key recorded for this node and the policy is strict; it presented "
            f"{fingerprint(presented) if presented else 'no key'}",
            target=f"node {target.host_id}",
        )
    return HostKeyMismatch(
        f"host key changed: recorded {fingerprint(target.known_key)}, presented "
        f"{fingerprint(presented) if presented else 'unknown'}; if the host was really "
        f"reinstalled, run 'fleet host forget-key {target.host_id}'",
        target=f"node {target.host_id}",
        details={
            "expected": fingerprint(target.known_key),
            "presented": fingerprint(presented) if presented else None,
        },
    )


@asynccontextmanager
async def _translated(target: Target, path: str | None = None) -> AsyncIterator[None]:
    """Map asyncssh and socket errors raised inside the block to fleet's errors; a missing
    remote ``path`` becomes RemoteError with code FileNotFound."""
    where = f"node {target.host_id}"
    try:
        yield
    except FleetError:
        raise
    except asyncssh.SFTPNoSuchFile as exc:
        raise RemoteError(
            f"{path or 'the file'} does not exist", code="FileNotFound", target=where
        ) from exc
    except asyncssh.PermissionDenied as exc:
        raise AuthenticationFailed(
            f"{target.user or 'the login user'}@{target.address}:{target.port} refused our key: "
            f"{exc.reason}",
            target=where,
        ) from exc
    except (asyncssh.ConnectionLost, asyncssh.DisconnectError, asyncssh.ChannelOpenError) as exc:
        raise Unreachable(f"connection lost: {exc}", target=where) from exc
    except (TimeoutError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            raise storage_error(exc, "a file it fetched from this node") from exc
        reason = str(exc) or type(exc).__name__
        raise Unreachable(
            f"cannot reach {target.address}:{target.port}: {reason}", target=where
        ) from exc
    except asyncssh.Error as exc:
        raise RemoteError(f"SSH error: {exc}", target=where) from exc


class Connection:
    """One SSH connection to one node."""

    def __init__(self, target: Target, conn: asyncssh.SSHClientConnection) -> None:
        self.target = target
        self._conn = conn
        self._sftp: asyncssh.SFTPClient | None = None
        self._sftp_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        target: Target,
        on_new_key: NewKeyCallback | None = None,
        timeout: float = CONNECT_TIMEOUT,
    ) -> Connection:
        """Connect and authenticate; return the connection.

        Raises HostKeyMismatch or HostKeyUnknown when the host key is not the
        recorded one, AuthenticationFailed, or Unreachable.
        """
        client = _Client(target, on_new_key)
        options = {
            "port": target.port,
            "username": target.user or None,
            "known_hosts": _trust_nothing,
            "config": [],
            "agent_path": None,
            "agent_forwarding": False,
            "client_keys": [os.path.expanduser(target.key_file)] if target.key_file else None,
            "keepalive_interval": KEEPALIVE_INTERVAL,
            "keepalive_count_max": KEEPALIVE_COUNT_MAX,
            "encryption_algs": list(ENCRYPTION_ALGS),
            "connect_timeout": timeout,
            "login_timeout": timeout,
        }
        if target.key_file is None:
            options.pop("client_keys")
        async with _handshake_slot(target), _translated(target):
            try:
                conn = await asyncssh.connect(
                    target.address, client_factory=lambda: client, **options
                )
            except asyncssh.HostKeyNotVerifiable as exc:
                raise _host_key_error(target, client.presented) from exc
            except (ValueError, asyncssh.KeyImportError) as exc:
                raise AuthenticationFailed(
                    f"cannot use key {target.key_file}: {exc}", target=f"node {target.host_id}"
                ) from exc
        detect_dead_peer(conn.get_extra_info("socket"))
        return cls(target, conn)

    @property
    def closed(self) -> bool:
        """True once the transport is gone."""
        return self._conn.is_closed()

    async def run(
        self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float | None = None
    ) -> RunResult:
        """Run ``argv`` (quoted with shlex.join, never interpolated) and return its result.

        Raises Unreachable if the connection drops, TimedOut-style Unreachable on timeout.
        """
        # asyncssh feeds ``input`` and closes stdin only when it is non-empty: an empty
        # one is closed at once (DEVNULL), or a command reading it would wait forever
        feed: dict[str, Any] = {"stdin": asyncssh.DEVNULL} if stdin == b"" else {"input": stdin}
        async with _translated(self.target):
            proc = await asyncio.wait_for(
                self._conn.run(shlex.join(argv), encoding=None, check=False, **feed),
                timeout,
            )
        return RunResult(
            exit_code=proc.exit_status
            if proc.exit_status is not None and proc.exit_status >= 0
            else None,
            stdout=_as_bytes(proc.stdout),
            stderr=_as_bytes(proc.stderr),
            signal=proc.exit_signal[0] if proc.exit_signal else None,
        )

    async def start_process(self, argv: Sequence[str]) -> Process:
        """Start a long-lived process (the node agent) and return its byte streams."""
        async with _translated(self.target):
            proc = await self._conn.create_process(shlex.join(argv), encoding=None)
        return Process(self.target, proc)

    async def sftp(self) -> asyncssh.SFTPClient:
        async with self._sftp_lock:
            if self._sftp is None:
                async with _translated(self.target):
                    self._sftp = await self._conn.start_sftp_client()
            return self._sftp

    async def makedirs(self, path: str) -> None:
        """Create ``path`` and its parents over SFTP if missing: one round trip when only
        ``path`` itself is missing or it exists. Raises RemoteError when a part of it is not
        a directory, Unreachable when the connection drops."""
        sftp = await self.sftp()
        async with _translated(self.target, path):
            await _make_dirs(sftp, path.rstrip("/") or "/")

    async def exists(self, path: str) -> bool:
        """Return whether ``path`` exists on the node."""
        sftp = await self.sftp()
        async with _translated(self.target):
            return bool(await sftp.exists(path))

    async def upload_bytes(self, data: bytes, path: str, mode: int = 0o644) -> None:
        """Write ``data`` to ``path`` atomically (temporary name, then rename)."""
        sftp = await self.sftp()
        tmp = f"{path}.tmp{os.getpid()}"
        async with _translated(self.target):
            async with sftp.open(tmp, "wb", attrs=asyncssh.SFTPAttrs(permissions=mode)) as f:
                await f.write(data)
            await sftp.posix_rename(tmp, path)

    async def upload_file(self, local: str, remote: str, mode: int | None = None) -> None:
        """Copy the local file ``local`` to ``remote`` on the node, then set ``mode`` if given."""
        sftp = await self.sftp()
        async with _translated(self.target):
            await sftp.put(local, remote)
            if mode is not None:
                await sftp.chmod(remote, mode)

    async def remove_tree(self, path: str) -> None:
        """Delete the directory ``path`` and everything in it; a missing one is fine."""
        sftp = await self.sftp()
        async with _translated(self.target):
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                await sftp.rmtree(path)

    async def download(self, remote: str, local: str) -> None:
        """Copy ``remote`` to the local path ``local``. Raises RemoteError (FileNotFound)."""
        sftp = await self.sftp()
        async with _translated(self.target, remote):
            await sftp.get(remote, local)

    async def walk(self, path: str, recursive: bool) -> list[RemoteFile]:
        """Return the entries under directory ``path`` (relative names, '/'-separated),
        descending into subdirectories when ``recursive``; symlinks are not followed."""
        sftp = await self.sftp()
        out: list[RemoteFile] = []
        pending = [""]
        async with _translated(self.target, path):
            while pending:
                rel = pending.pop()
                entries = await sftp.readdir(f"{path}/{rel}" if rel else path)
                for entry in entries:
                    name = str(entry.filename)
                    if name in (".", ".."):
                        continue
                    attrs = entry.attrs
                    is_dir = attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY
                    child = f"{rel}/{name}" if rel else name
                    out.append(
                        RemoteFile(child, is_dir, attrs.size or 0, attrs.mtime, attrs.permissions)
                    )
                    if is_dir and recursive:
                        pending.append(child)
        return sorted(out, key=lambda f: f.name)

    async def close(self, grace: float = CLOSE_GRACE) -> None:
        """Close the connection and wait up to ``grace`` seconds for it to go, then abort it.

        Returns within about ``grace`` seconds whatever the node does; raises nothing."""
        self._conn.close()
        with suppress(TimeoutError, asyncssh.Error, OSError):
            await asyncio.wait_for(self._conn.wait_closed(), grace)
        self.abort()

    def abort(self) -> None:
        """Drop the connection at once, without waiting for the node: every command, channel
        and SFTP request still waiting on it fails (Unreachable). Raises nothing."""
        with suppress(asyncssh.Error, OSError):
            self._conn.abort()

    async def wait_closed(self) -> None:
        """Return when the connection is gone, for any reason."""
        await self._conn.wait_closed()


class Process:
    """A remote process's stdin and stdout as byte lines."""

    def __init__(self, target: Target, proc: asyncssh.SSHClientProcess) -> None:
        self._target = target
        self._proc = proc

    async def readline(self) -> bytes:
        """Return the next line, or b'' at end of stream (the channel closed)."""
        try:
            return bytes(await self._proc.stdout.readline())
        except (asyncssh.Error, OSError):
            return b""

    async def read(self, size: int) -> bytes:
        """Return up to ``size`` bytes of stdout, b'' at its end. The channel's window
        bounds what is buffered, so a slow reader slows the sender. Raises Unreachable
        when the connection drops."""
        async with _translated(self._target):
            return bytes(await self._proc.stdout.read(size))

    async def wait(self) -> int | None:
        """Wait for the process to end; return its exit status (None if killed by a
        signal). Raises Unreachable when the connection drops."""
        async with _translated(self._target):
            done = await self._proc.wait()
        return done.exit_status if done.exit_status is not None and done.exit_status >= 0 else None

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the process's stdin; Raises Unreachable if the channel is gone."""
        try:
            self._proc.stdin.write(data)
        except (asyncssh.Error, OSError, BrokenPipeError) as exc:
            raise Unreachable(
                f"agent channel closed: {exc}", target=f"node {self._target.host_id}"
            ) from exc

    async def stderr_text(self) -> str:
        """Return what the process wrote to stderr (read after it ended)."""
        try:
            return (await asyncio.wait_for(self._proc.stderr.read(), 2)).decode(errors="replace")
        except (asyncssh.Error, OSError, TimeoutError):
            return ""

    def close(self) -> None:
        """Close stdin so the process sees EOF."""
        with suppress(asyncssh.Error, OSError):
            self._proc.stdin.write_eof()
        self._proc.close()


def detect_dead_peer(sock: socket.socket | None) -> None:
    """Have the kernel drop the TCP connection ``sock`` when its peer stops acknowledging
    for TCP_DEAD_AFTER seconds, probing it after TCP_IDLE seconds of silence (Linux; where
    an option is missing, its system default stays). Raises nothing."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    options = (
        ("TCP_KEEPIDLE", TCP_IDLE),
        ("TCP_KEEPINTVL", TCP_PROBE_INTERVAL),
        ("TCP_USER_TIMEOUT", int(TCP_DEAD_AFTER * 1000)),
    )
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in options:
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


async def _make_dirs(sftp: asyncssh.SFTPClient, path: str) -> None:
    """mkdir ``path``, and its missing parents first (asyncssh's makedirs stats every part
    of the path from the top, two round trips each)."""
    for made_parents in (False, True):
        try:
            await sftp.mkdir(path)
            return
        except asyncssh.SFTPNoSuchFile:
            parent = posixpath.dirname(path)
            if made_parents or parent in ("", "/", path):
                raise
            await _make_dirs(sftp, parent)
        except (asyncssh.SFTPFailure, asyncssh.SFTPFileAlreadyExists):
            if not await sftp.isdir(path):
                raise
            return


def _as_bytes(data: bytes | str | None) -> bytes:
    return data if isinstance(data, bytes) else (data or "").encode()


@asynccontextmanager
async def _handshake_slot(target: Target) -> AsyncIterator[None]:
    per_loop = _handshake_limits.setdefault(asyncio.get_running_loop(), {})
    key = (target.address, target.port)
    sem = per_loop.get(key)
    if sem is None:
        sem = per_loop[key] = asyncio.Semaphore(HANDSHAKES_PER_SSHD)
    async with sem:
        yield
