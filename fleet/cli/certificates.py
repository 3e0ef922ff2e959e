"""``fleet certificate``: add, list, show and delete certificates (PEM, DER or PFX)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleet.cli.common import CURRENT, OutputOpt, emit, stderr
from fleet.errors import BadInput
from fleet.service import certificates as service

app = typer.Typer(help="Certificates that pools install on their nodes.", no_args_is_help=True)

COLUMNS = [
    ("THUMBPRINT", "thumbprint"),
    ("STATE", "state"),
    ("SUBJECT", "subject"),
    ("NOT AFTER", "notAfter"),
    ("PRIVATE KEY", "hasPrivateKey"),
]


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInput(
            f"cannot read {what} {path}: {exc.strerror}", code="FileUnreadable", target=str(path)
        ) from None


@app.command("create")
def create(
    file: Annotated[Path, typer.Option("--file", help="Certificate file: PEM, DER or PFX.")],
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="pem, der or pfx (detected when not given)."),
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file",
            help="File holding the PFX (or encrypted PEM key) password; one trailing "
            "newline is dropped.",
        ),
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Add a certificate; a private key in it is stored encrypted."""
    password = None
    if password_file is not None:
        password = _read(password_file, "the password file").removesuffix(b"\n")
        password = password.removesuffix(b"\r")
    added = service.create_certificate(
        CURRENT.store,
        CURRENT.settings,
        _read(file, "the certificate file"),
        str(file),
        fmt,
        password,
    )
    for note in added.notes:
        stderr.print(f"note: {note}", markup=False, highlight=False)
    emit(service.view(added.certificate), output)


def _path(thumbprint: str) -> str:
    """Return Azure's path of a certificate."""
    return f"/certificates(thumbprintAlgorithm=sha1,thumbprint={thumbprint.lower()})"


@app.command("list")
def list_(output: OutputOpt = None) -> None:
    """List certificates."""
    if (remote := CURRENT.remote) is not None:
        emit(list(remote.list("/certificates")), output, COLUMNS)
        return
    emit([service.view(c) for c in service.list_certificates(CURRENT.store)], output, COLUMNS)


@app.command("show")
def show(
    thumbprint: Annotated[str, typer.Argument(help="SHA-1 thumbprint (hex).")],
    output: OutputOpt = None,
) -> None:
    """Show one certificate (never its private key)."""
    if (remote := CURRENT.remote) is not None:
        emit(remote.get(_path(thumbprint)), output)
        return
    emit(service.view(service.show_certificate(CURRENT.store, thumbprint)), output)


@app.command("cancel-delete")
def cancel_delete(
    thumbprint: Annotated[str, typer.Argument(help="SHA-1 thumbprint (hex).")],
    output: OutputOpt = None,
) -> None:
    """Keep a certificate whose deletion failed (a pool uses it): it is active again."""
    if (remote := CURRENT.remote) is not None:
        remote.call("POST", _path(thumbprint) + "/canceldelete")
        emit(remote.get(_path(thumbprint)), output)
        return
    emit(service.view(service.cancel_deletion(CURRENT.store, thumbprint)), output)


@app.command("delete")
def delete(
    thumbprint: Annotated[str, typer.Argument(help="SHA-1 thumbprint (hex).")],
    output: OutputOpt = None,
) -> None:
    """Delete a certificate; refused (exit 4, state deletefailed) while a pool uses it."""
    if (remote := CURRENT.remote) is not None:
        remote.call("DELETE", _path(thumbprint))
    else:
        service.delete_certificate(CURRENT.store, thumbprint)
    emit({"thumbprint": thumbprint.lower(), "deleted": True}, output)
