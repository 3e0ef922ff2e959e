"""``fleet application``: upload, list, show and delete application packages; default versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleet.cli.common import CURRENT, OutputOpt, emit
from fleet.service import applications as service

app = typer.Typer(
    help="Applications: versioned zip or tar.gz packages unpacked on nodes.",
    no_args_is_help=True,
)
package_app = typer.Typer(help="Packages: one version of an application.", no_args_is_help=True)
app.add_typer(package_app, name="package")

COLUMNS = [("ID", "id"), ("DEFAULT", "defaultVersion"), ("VERSIONS", "versions")]
PACKAGE_COLUMNS = [
    ("VERSION", "version"),
    ("STATE", "state"),
    ("FORMAT", "format"),
    ("SIZE", "size"),
    ("SHA256", "sha256"),
    ("ACTIVATED", "lastActivationTime"),
]


@app.command("list")
def list_(output: OutputOpt = None) -> None:
    """List the applications with their versions."""
    if (remote := CURRENT.remote) is not None:
        emit(list(remote.list("/applications")), output, COLUMNS)
        return
    rows = [service.application_json(a, p) for a, p in service.list_applications(CURRENT.store)]
    emit(rows, output, COLUMNS)


@app.command("show")
def show(
    application: Annotated[str, typer.Argument(help="Application id.")],
    output: OutputOpt = None,
) -> None:
    """Show an application and its packages."""
    if (remote := CURRENT.remote) is not None:
        emit(remote.get(f"/applications/{application}"), output)
        return
    emit(service.application_json(*service.show_application(CURRENT.store, application)), output)


@app.command("set")
def set_(
    application: Annotated[str, typer.Argument(help="Application id.")],
    default_version: Annotated[
        str | None,
        typer.Option("--default-version", help="Version used by references that name none."),
    ] = None,
    display_name: Annotated[
        str | None, typer.Option("--display-name", help="A name to show.")
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Set an application's default version or display name."""
    result = service.set_application(CURRENT.store, application, default_version, display_name)
    emit(service.application_json(*result), output)


@package_app.command("create")
def create_package(
    application: Annotated[str, typer.Argument(help="Application id (created if new).")],
    version: Annotated[str, typer.Argument(help="Version, e.g. 1.0.")],
    file: Annotated[Path, typer.Argument(help="A zip or tar.gz archive.")],
    output: OutputOpt = None,
) -> None:
    """Check an archive member by member and store it as a version of an application."""
    pkg = service.create_package(CURRENT.settings, CURRENT.store, application, version, file)
    emit({"applicationId": application, **service.package_json(pkg)}, output)


@package_app.command("delete")
def delete_package(
    application: Annotated[str, typer.Argument(help="Application id.")],
    version: Annotated[str, typer.Argument(help="Version to delete.")],
    output: OutputOpt = None,
) -> None:
    """Delete one version of an application (nodes keep what they unpacked)."""
    service.delete_package(CURRENT.settings, CURRENT.store, application, version)
    emit({"applicationId": application, "version": version, "deleted": True}, output)
