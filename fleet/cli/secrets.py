"""``fleet secrets``: manage the key that encrypts secrets at rest."""

from __future__ import annotations

import typer

from fleet import secret_store
from fleet.cli.common import CURRENT, OutputOpt, emit

app = typer.Typer(help="The key that encrypts secrets at rest.", no_args_is_help=True)


@app.command("rotate")
def rotate(output: OutputOpt = None) -> None:
    """Re-encrypt every secret under a new key, atomically; the old key stops working."""
    settings = CURRENT.settings
    count = secret_store.rotate(CURRENT.store, settings)
    emit({"reencrypted": count, "keyFile": str(secret_store.key_file(settings))}, output)
