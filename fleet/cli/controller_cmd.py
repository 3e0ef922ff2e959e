"""``fleet controller run``: the controller in the foreground."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fleet.cli.common import CURRENT, OutputFormat, OutputOpt, fmt
from fleet.controller_lock import LEASE_TTL, Lease
from fleet.errors import EXIT_FAILED

log = logging.getLogger(__name__)

#: Seconds after the first SIGTERM/SIGINT by which the process is gone, whatever blocks it.
SHUTDOWN_DEADLINE = 15.0

app = typer.Typer(help="Run the controller.", no_args_is_help=True)


class LogFormat(StrEnum):
    """How the controller writes its log lines to stderr."""

    TEXT = "text"
    JSON = "json"


@app.command("run")
def run(
    node_grace: Annotated[
        float,
        typer.Option(
            "--node-grace", help="Seconds a node may be unreachable before its tasks are requeued."
        ),
    ] = 30.0,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.")
    ] = "info",
    log_format: Annotated[
        LogFormat | None,
        typer.Option(
            "--log-format",
            help="text, or json: one object per line with time, level, logger, message "
            "and exception (default: text, or json with -o json).",
        ),
    ] = None,
    sweep_interval: Annotated[
        float,
        typer.Option("--sweep-interval", help="Seconds between retention sweeps of task dirs."),
    ] = 30.0,
    standby: Annotated[
        bool,
        typer.Option(
            "--standby",
            help="If another controller runs on this database, wait and take over when it stops.",
        ),
    ] = False,
    lease_timeout: Annotated[
        float,
        typer.Option(
            "--lease-timeout",
            min=1.0,
            help="Seconds without renewal after which a standby may take this controller's lease.",
        ),
    ] = LEASE_TTL,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            help="Serve Azure Batch's REST API on HOST:PORT (loopback unless TLS or "
            "--insecure-http); clients sign requests with a key from `fleet account create`.",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate (chain) for --listen.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="PEM private key for --tls-cert.")
    ] = None,
    insecure_http: Annotated[
        bool,
        typer.Option("--insecure-http", help="Allow plain HTTP on an address other than loopback."),
    ] = False,
    output: OutputOpt = None,
) -> None:
    """Bootstrap nodes and run tasks until SIGTERM or Ctrl-C. Logs go to stderr, as text
    or (--log-format json) one JSON object per line. One controller runs per database: a
    second one exits with status 4 naming the first, or waits with --standby. With
    --listen, GET /metrics serves Prometheus metrics without SharedKey."""
    served = None
    if listen is not None or tls_cert is not None or insecure_http:
        from fleet.api.server import parse_listen

        served = parse_listen(listen or "127.0.0.1", tls_cert, tls_key, insecure_http)
    handler = logging.StreamHandler()
    if log_format is None:  # -o json, the older way to ask, still gives JSON logs
        log_format = LogFormat.JSON if fmt(output) == OutputFormat.JSON else LogFormat.TEXT
    if log_format == LogFormat.JSON:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), handlers=[handler])
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # 4 lines per timer otherwise
    from fleet.controller import Controller  # here: other commands start faster without it

    store = CURRENT.store
    lease = Lease(store, ttl=lease_timeout)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        seen: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, stop, sig, seen)
        if not await lease.acquire(standby, stop):
            return  # stopped while standing by
        store.guard = lease.check  # no transaction once the lease is lost
        lease.on_lost(stop.set)
        keeper = asyncio.create_task(lease.keep(), name="controller-lease")
        controller = Controller(
            CURRENT.settings, store, node_grace=node_grace, sweep_interval=sweep_interval
        )
        server = None
        try:
            if served is not None:
                from fleet.api import serve

                server = await serve(CURRENT.settings, served)
            await controller.run(stop)
        finally:
            if server is not None:
                await server.close()
            keeper.cancel()
            lease.release()  # the guard stays: nothing is written after this
        if lease.lost is not None:
            raise lease.lost

    asyncio.run(main())


def _on_signal(stop: asyncio.Event, sig: signal.Signals, seen: list[signal.Signals]) -> None:
    """First SIGTERM/SIGINT: stop cleanly, within SHUTDOWN_DEADLINE. Second: exit at once."""
    if seen:
        log.warning("second %s: exiting at once", sig.name)
        os._exit(128 + sig)
    seen.append(sig)
    log.info("%s: stopping (at most %.0f s)", sig.name, SHUTDOWN_DEADLINE)
    stop.set()
    watchdog = threading.Timer(SHUTDOWN_DEADLINE, _shutdown_overdue)
    watchdog.daemon = True
    watchdog.start()


def _shutdown_overdue() -> None:
    # A thread, so that it fires even when the event loop is stuck.
    log.error("shutdown took more than %.0f s: exiting now", SHUTDOWN_DEADLINE)
    os._exit(EXIT_FAILED)


class _JsonFormatter(logging.Formatter):
    """A log record as one JSON object: time (ISO 8601, UTC), level, logger, message, and
    exception (its traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)
