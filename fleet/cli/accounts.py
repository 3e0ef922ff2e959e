"""``fleet account``: the REST API's accounts and their SharedKey keys."""

from __future__ import annotations

from typing import Annotated

import typer

from fleet.cli.common import CURRENT, OutputFormat, OutputOpt, emit, fmt, stdout
from fleet.service import accounts as service

app = typer.Typer(help="Accounts of the REST API and their SharedKey keys.", no_args_is_help=True)

COLUMNS = [("NAME", "name"), ("CREATED", "creationTime"), ("KEY ROTATED", "keyRotationTime")]

NameArg = Annotated[str, typer.Argument(help="Account name: 3 to 24 lowercase letters and digits.")]


def _show_key(name: str, key: str, sentence: str, output: OutputFormat | None) -> None:
    """Print a key that is shown this once: ``{"name", "key"}`` as JSON, else ``sentence``
    and then the key alone on its line."""
    if fmt(output) == OutputFormat.JSON:
        emit({"name": name, "key": key}, output)
        return
    stdout.print(
        f"{sentence} It is shown only this once: keep it secret.", markup=False, highlight=False
    )
    stdout.print(key, markup=False, highlight=False)


@app.command("create")
def create(name: NameArg, output: OutputOpt = None) -> None:
    """Create an account and print its key (once)."""
    account, key = service.create_account(CURRENT.store, CURRENT.settings, name)
    _show_key(account.name, key, f"Account {account.name} created; its key follows.", output)


@app.command("list")
def list_(output: OutputOpt = None) -> None:
    """List accounts (never their keys)."""
    emit([service.view(a) for a in service.list_accounts(CURRENT.store)], output, COLUMNS)


@app.command("rotate-key")
def rotate_key(name: NameArg, output: OutputOpt = None) -> None:
    """Give an account a new key and print it (once); the old key stops working at once."""
    key = service.rotate_key(CURRENT.store, CURRENT.settings, name)
    _show_key(name, key, f"Account {name} has a new key; the old one no longer works.", output)


@app.command("delete")
def delete(name: NameArg, output: OutputOpt = None) -> None:
    """Delete an account and its key."""
    service.delete_account(CURRENT.store, name)
    emit({"name": name, "deleted": True}, output)
