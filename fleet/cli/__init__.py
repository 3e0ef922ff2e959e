"""The ``fleet`` command line: global options, command groups and error reporting."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from fleet import __version__
from fleet.cli import (
    applications,
    certificates,
    common,
    controller_cmd,
    exec_cmd,
    files,
    hosts,
    job_schedules,
    jobs,
    lab,
    node_users,
    pools,
    secrets,
    tasks,
)
from fleet.cli.common import OutputFormat
from fleet.errors import FleetError

app = typer.Typer(
    name="fleet",
    help="Run batch work on hosts you own, over SSH, on the Azure Batch model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(lab.app, name="lab")
app.add_typer(hosts.app, name="host")
app.add_typer(pools.app, name="pool")
app.add_typer(pools.node_app, name="node")
node_users.register(pools.node_app)
app.add_typer(jobs.app, name="job")
app.add_typer(tasks.app, name="task")
app.add_typer(controller_cmd.app, name="controller")
app.add_typer(files.app, name="file")
app.add_typer(certificates.app, name="certificate")
app.add_typer(secrets.app, name="secrets")
app.add_typer(applications.app, name="application")
app.add_typer(job_schedules.app, name="job-schedule")
app.add_typer(job_schedules.app, name="schedule", help="Alias of job-schedule.")
exec_cmd.register(app)


def _print_version(value: bool) -> None:
    if value:
        print(f"fleet {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    home: Annotated[
        str | None,
        typer.Option("--home", help="State directory (default: $FLEET_HOME or the XDG data dir)."),
    ] = None,
    db_url: Annotated[
        str | None,
        typer.Option(
            "--db-url", help="Database URL, e.g. postgresql://host/db (default: SQLite in --home)."
        ),
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="Output format.")
    ] = OutputFormat.TABLE,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    common.CURRENT.home = home
    common.CURRENT.db_url = db_url
    common.CURRENT.output = output


def main() -> None:
    """Run the CLI; print fleet errors to stderr with their code and exit with their status."""
    try:
        app()
    except FleetError as exc:
        wants_json = common.CURRENT.output == OutputFormat.JSON or _argv_wants_json()
        if wants_json:
            sys.stderr.write(json.dumps({"error": exc.to_dict()}) + "\n")
        else:
            common.stderr.print(f"error [{exc.code}]: {exc}", markup=False, highlight=False)
        sys.exit(exc.exit_status)
    except KeyboardInterrupt:
        sys.exit(130)


def _argv_wants_json() -> bool:
    args = sys.argv[1:]
    return (
        any(a in ("-o", "--output") and args[i + 1 : i + 2] == ["json"] for i, a in enumerate(args))
        or "--output=json" in args
        or "-ojson" in args
    )
