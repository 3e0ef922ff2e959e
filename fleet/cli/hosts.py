"""``fleet host``: import, list, show and remove inventory hosts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fleet import reads, views
from fleet.cli.common import CURRENT, OutputOpt, emit, lazy_module, read_text
from fleet.errors import BadInput

if TYPE_CHECKING:
    from fleet import inventory
    from fleet.service import hosts as service
else:
    inventory = lazy_module("fleet.inventory")
    service = lazy_module("fleet.service.hosts")

app = typer.Typer(help="Manage the inventory of hosts.", no_args_is_help=True)

COLUMNS = [
    ("ID", "id"),
    ("ADDRESS", "address"),
    ("PORT", "port"),
    ("USER", "user"),
    ("POOL", "poolId"),
    ("LABELS", "labels"),
    ("HOST KEY", "hostKeyFingerprint"),
]


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="Inventory file.")],
    format: Annotated[
        str | None,
        typer.Option(
            "--format", help="ansible-ini, ansible-yaml, ssh-config or vagrant (default: detected)."
        ),
    ] = None,
    host_key_policy: Annotated[
        str, typer.Option("--host-key-policy", help="strict or accept-new.")
    ] = "accept-new",
    output: OutputOpt = None,
) -> None:
    """Import hosts from an inventory file, atomically."""
    if format is not None and format not in inventory.FORMATS:
        raise BadInput(
            f"--format must be one of {', '.join(inventory.FORMATS)}",
            code="InvalidFormat",
            field="format",
        )
    text = read_text(str(file), code="InventoryParseError")
    specs = inventory.parse_inventory(text, filename=str(file), fmt=format)
    result = service.import_hosts(CURRENT.store, specs, host_key_policy)
    emit({"imported": len(specs), **result}, output)


@app.command("list")
def list_(output: OutputOpt = None) -> None:
    """List the hosts in the inventory."""
    rows = [views.host(*info) for info in reads.list_hosts(CURRENT.reader)]
    emit(rows, output, COLUMNS)


@app.command("show")
def show(host_id: str, output: OutputOpt = None) -> None:
    """Show one host."""
    emit(views.host(*reads.show_host(CURRENT.reader, host_id)), output)


@app.command("remove")
def remove(host_id: str, output: OutputOpt = None) -> None:
    """Remove a host that is not in a pool."""
    service.remove_host(CURRENT.store, host_id)
    emit({"removed": host_id}, output)


@app.command("forget-key")
def forget_key(host_id: str, output: OutputOpt = None) -> None:
    """Forget a host's recorded SSH host key (after a legitimate reinstall)."""
    existed = service.forget_host_key(CURRENT.store, host_id)
    emit({"host": host_id, "forgotten": existed}, output)
