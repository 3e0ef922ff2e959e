"""The ``fleet`` command line: global options, command groups and error reporting.

Each command's module is imported only when that command runs (``LazyGroup``), so
``fleet --help`` and the read commands start without the ORM."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from fleet import __version__
from fleet.cli import common
from fleet.cli.common import OutputFormat
from fleet.errors import FleetError

#: name -> (module in fleet.cli, its Typer or register function, help in ``fleet --help``);
#: in the order ``fleet --help`` lists them. tests/test_cli_imports.py checks the help.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "exec": (
        "exec_cmd",
        "register",
        "Run COMMAND on every selected host at once; identical outputs are grouped.",
    ),
    "lab": ("lab", "app", "Run a local lab of real sshd nodes on 127.0.0.1."),
    "host": ("hosts", "app", "Manage the inventory of hosts."),
    "pool": ("pools", "app", "Manage pools of nodes."),
    "node": ("pools", "node_app", "Inspect and operate the nodes of a pool."),
    "job": ("jobs", "app", "Manage jobs."),
    "task": ("tasks", "app", "Manage the tasks of a job."),
    "controller": ("controller_cmd", "app", "Run the controller."),
    "file": (
        "files",
        "app",
        "The controller's file store (like a storage container): "
        "resource files come from it, output files go to it.",
    ),
    "certificate": ("certificates", "app", "Certificates that pools install on their nodes."),
    "secrets": ("secrets", "app", "The key that encrypts secrets at rest."),
    "account": ("accounts", "app", "Accounts of the REST API and their SharedKey keys."),
    "application": (
        "applications",
        "app",
        "Applications: versioned zip or tar.gz packages unpacked on nodes.",
    ),
    "job-schedule": ("job_schedules", "app", "Manage job schedules (recurring jobs)."),
    "schedule": ("job_schedules", "app", "Alias of job-schedule."),
}


class LazyGroup(TyperGroup):
    """The top-level group: lists every command from ``COMMANDS`` and imports a command's
    module only when it is resolved to run (or its own help is asked for)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._listing = False
        self._loaded: set[str] = set()
        for name, (_, attr, help_) in COMMANDS.items():
            # stand-ins that carry the name and help the command list shows
            stub = TyperCommand if attr == "register" else TyperGroup
            self.commands[name] = stub(name=name, help=help_)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in COMMANDS and cmd_name not in self._loaded and not self._listing:
            self.commands[cmd_name] = load_command(cmd_name)
            self._loaded.add(cmd_name)
        return self.commands.get(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def load_command(name: str) -> Any:
    """Import the module of command ``name`` and return its click command."""
    module_name, attr, help_ = COMMANDS[name]
    module = importlib.import_module(f"fleet.cli.{module_name}")
    holder = typer.Typer()
    if attr == "register":
        module.register(holder)
    else:
        sub: typer.Typer = getattr(module, attr)
        if name == "schedule":
            holder.add_typer(sub, name=name, help=help_)
        else:
            holder.add_typer(sub, name=name)
    return typer.main.get_group(holder).commands[name]


app = typer.Typer(
    cls=LazyGroup,
    name="fleet",
    help="Run batch work on hosts you own, over SSH, on the Azure Batch model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="FLEET_URL",
            help="A controller's REST API (fleet controller run --listen): send commands "
            "there instead of to the local database.",
        ),
    ] = None,
    account: Annotated[
        str | None,
        typer.Option("--account", envvar="FLEET_ACCOUNT", help="The API account for --url."),
    ] = None,
    key_file: Annotated[
        str | None,
        typer.Option("--key-file", help="A file holding the account's key (default: $FLEET_KEY)."),
    ] = None,
    ca_file: Annotated[
        str | None,
        typer.Option("--ca-file", help="CA certificates (PEM) to verify an https --url with."),
    ] = None,
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
    common.CURRENT.url = url
    common.CURRENT.account = account
    common.CURRENT.ca_file = ca_file
    common.CURRENT.key = common.read_key(key_file)


def main() -> None:
    """Run the CLI; print fleet errors to stderr with their code and exit with their status."""
    try:
        app()
    except FleetError as exc:
        report_error(exc)
    except KeyboardInterrupt:
        sys.exit(130)


def report_error(exc: FleetError) -> NoReturn:
    """Print ``exc`` to stderr with its code (as JSON with ``-o json``); exit with its status."""
    wants_json = common.CURRENT.output == OutputFormat.JSON or _argv_wants_json()
    if wants_json:
        sys.stderr.write(json.dumps({"error": exc.to_dict()}) + "\n")
    else:
        common.stderr.print(f"error [{exc.code}]: {exc}", markup=False, highlight=False)
    sys.exit(exc.exit_status)


def _argv_wants_json() -> bool:
    args = sys.argv[1:]
    return (
        any(a in ("-o", "--output") and args[i + 1 : i + 2] == ["json"] for i, a in enumerate(args))
        or "--output=json" in args
        or "-ojson" in args
    )
