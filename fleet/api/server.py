"""The HTTP server inside ``fleet controller run --listen``: uvicorn on the controller's
own event loop. The only module that uses uvicorn.

Loopback is the default; any other address needs TLS (``--tls-cert``/``--tls-key``) or
an explicit ``--insecure-http``, since SharedKey signs requests but does not hide them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from fleet.errors import BadInput

log = logging.getLogger(__name__)

DEFAULT_PORT = 8443


@dataclass(frozen=True)
class Listen:
    """Where and how the API listens."""

    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"


def parse_listen(
    text: str, tls_cert: Path | None, tls_key: Path | None, insecure_http: bool
) -> Listen:
    """Return the parsed ``--listen HOST:PORT``; BadInput (field ``--listen``) for a bad
    address, a non-loopback one without TLS or ``--insecure-http``, or half a TLS pair."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, str(DEFAULT_PORT)
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise BadInput(
            f"{text!r} is not HOST:PORT with a port from 0 to 65535",
            code="InvalidListenAddress",
            field="--listen",
        ) from None
    if (tls_cert is None) != (tls_key is None):
        raise BadInput(
            "give both --tls-cert and --tls-key, or neither",
            code="InvalidListenAddress",
            field="--tls-cert" if tls_cert is None else "--tls-key",
        )
    if tls_cert is None and not insecure_http and not _loopback(host):
        raise BadInput(
            f"{host} is not a loopback address: serve it with --tls-cert and --tls-key, "
            "or say --insecure-http to send requests and keys' signatures in the clear",
            code="InsecureListenAddress",
            field="--listen",
        )
    return Listen(host, port, tls_cert, tls_key)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the controller owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # uvicorn before 0.29
        return None


class ApiServer:
    """The running server: started with the controller, stopped before it."""

    def __init__(self, app: object, listen: Listen) -> None:
        config = uvicorn.Config(
            app,  # type: ignore[arg-type]
            host=listen.host,
            port=listen.port,
            ssl_certfile=str(listen.tls_cert) if listen.tls_cert else None,
            ssl_keyfile=str(listen.tls_key) if listen.tls_key else None,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
        )
        self.listen = listen
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    async def start(self) -> None:
        """Bind, then serve in the background; raises BadInput ``ListenFailed`` when the
        address cannot be bound."""
        family = socket.AF_INET6 if ":" in self.listen.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.listen.host, self.listen.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise BadInput(
                f"cannot listen on {self.listen.host}:{self.listen.port}: {exc.strerror}",
                code="ListenFailed",
                field="--listen",
            ) from None
        self._socket = sock
        self._task = asyncio.create_task(self._server.serve([sock]), name="api-server")
        log.info("api: listening on %s://%s", self.listen.scheme, self.address())

    def address(self) -> str:
        """Return HOST:PORT as bound (the port the kernel chose for port 0)."""
        if self._socket is None:
            return f"{self.listen.host}:{self.listen.port}"
        host, port = self._socket.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def close(self) -> None:
        """Stop serving: open requests get a moment to finish."""
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, 5)
        if self._socket is not None:
            self._socket.close()
