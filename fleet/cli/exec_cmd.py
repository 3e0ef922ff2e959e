"""``fleet exec``: run one command on many hosts at once, without the controller."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from fleet import execute
from fleet.cli.common import CURRENT, OutputFormat, OutputOpt, emit, fmt, stdout
from fleet.errors import EXIT_FAILED, BadInput


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
    output: OutputOpt = None,
) -> None:
    """Exit 0 when the command exited 0 everywhere, 1 when any host failed or was unreachable."""
    if (pool is None) == (hosts is None):
        raise BadInput("give exactly one of --pool or --hosts", code="MissingRequiredProperty")
    targets = execute.select_targets(CURRENT.reader, pool=pool, pattern=hosts)
    db_url = CURRENT.settings.db_url
    results = asyncio.run(execute.run_everywhere(db_url, targets, command, timeout))
    data = [r.to_dict() for r in results]
    if fmt(output) == OutputFormat.JSON:
        emit(data, output)
    else:
        for group in execute.group_identical(results):
            stdout.print(f"[bold]---- {group.label} ----[/bold]", highlight=False)
            stdout.out(
                group.text,
                end="" if group.text.endswith("\n") or not group.text else "\n",
                highlight=False,
            )
    if any(not r.ok for r in results):
        raise typer.Exit(EXIT_FAILED)
