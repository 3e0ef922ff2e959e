"""``fleet lab``: a loopback lab of real sshd nodes on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleet import lab as lab_mod
from fleet.cli.common import OutputOpt, emit

app = typer.Typer(help="Run a local lab of real sshd nodes on 127.0.0.1.", no_args_is_help=True)

DirOpt = Annotated[
    Path | None, typer.Option("--dir", help="Lab directory (default: $FLEET_HOME/lab).")
]
COLUMNS = [("NODE", "node"), ("PORT", "port"), ("PID", "pid"), ("STATE", "state"), ("ROOT", "root")]


@app.command("up")
def up(
    nodes: Annotated[int, typer.Option("--nodes", help="How many nodes.", min=1, max=500)] = 4,
    dir: DirOpt = None,
    output: OutputOpt = None,
) -> None:
    """Start the lab's sshd nodes and write an Ansible inventory of them."""
    lab = lab_mod.up(dir or lab_mod.default_dir(), nodes)
    emit(
        {
            "dir": str(lab.dir),
            "user": lab.user,
            "inventory": str(lab.inventory_path),
            "nodes": lab_mod.status(lab.dir),
        },
        output,
    )


@app.command("status")
def status(dir: DirOpt = None, output: OutputOpt = None) -> None:
    """Show each lab node and whether its sshd runs."""
    emit(lab_mod.status(dir or lab_mod.default_dir()), output, COLUMNS)


@app.command("down")
def down(dir: DirOpt = None, output: OutputOpt = None) -> None:
    """Stop every sshd of the lab (files are kept)."""
    target = dir or lab_mod.default_dir()
    lab_mod.down(target)
    emit({"dir": str(target), "state": "down"}, output)


@app.command("reboot")
def reboot(
    node: Annotated[str, typer.Argument(help="Lab node name, e.g. node01.")],
    dir: DirOpt = None,
    output: OutputOpt = None,
) -> None:
    """Simulate a reboot of one lab node: kill all its processes, give it a new boot id,
    start its sshd again (never reboots this machine)."""
    lab = lab_mod.load(dir or lab_mod.default_dir())
    emit(lab_mod.reboot_node(lab, node), output)
