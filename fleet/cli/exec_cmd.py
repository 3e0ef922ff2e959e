"""``fleet exec``: run one command on many hosts at once, through the controller's open
connections when one runs (fleet/exec_command.py does the work)."""

from __future__ import annotations

from typing import Annotated

import typer

from fleet import exec_command
from fleet.cli.common import CURRENT, OutputFormat, OutputOpt, fmt


def register(app: typer.Typer) -> None:
    app.command(
        "exec",
        context_settings={"allow_interspersed_args": False},
        help="Run COMMAND on every selected host at once; identical outputs are grouped.",
    )(exec_)


def exec_(
    command: Annotated[list[str], typer.Argument(help="The command and its arguments (after --).")],
    pool: Annotated[str | None, typer.Option("--pool", help="Every node of this pool.")] = None,
    hosts: Annotated[
        str | None, typer.Option("--hosts", help="Glob, list or range: 'web*', 'a,b', 'node[1-8]'.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds per host (connect and run).")
    ] = None,
    no_controller: Annotated[
        bool,
        typer.Option(
            "--no-controller", help="Connect to the hosts directly even if a controller runs."
        ),
    ] = False,
    output: OutputOpt = None,
) -> None:
    """Exit 0 when the command exited 0 everywhere, 1 when any host failed or was unreachable.
    With a controller running on the same database, the command runs on its open
    connections; the output is the same either way."""
    status = exec_command.run(
        CURRENT.settings,
        command,
        pool=pool,
        hosts=hosts,
        timeout=timeout,
        as_json=fmt(output) == OutputFormat.JSON,
        use_controller=not no_controller,
    )
    if status:
        raise typer.Exit(status)
