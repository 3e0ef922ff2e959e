"""``fleet controller run``: the controller in the foreground."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated

import typer

from fleet.cli.common import CURRENT
from fleet.controller import Controller

app = typer.Typer(help="Run the controller.", no_args_is_help=True)


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
) -> None:
    """Bootstrap nodes and run tasks until SIGTERM or Ctrl-C. Logs go to stderr."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    controller = Controller(CURRENT.settings, CURRENT.store, node_grace=node_grace)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await controller.run(stop)

    asyncio.run(main())
