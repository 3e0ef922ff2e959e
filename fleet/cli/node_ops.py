"""``fleet node reboot|reimage|remove|disable-scheduling|enable-scheduling``.

Each records the request; a running controller carries it out (fleet/node_ops.py) and
the node's state shows how far it got (``fleet node show``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from fleet import views
from fleet.cli.common import CURRENT, OutputOpt, emit, lazy_module
from fleet.domain import NodeOperation

if TYPE_CHECKING:
    from fleet.service import node_ops as service
else:
    service = lazy_module("fleet.service.node_ops")

PoolOpt = Annotated[str, typer.Option("--pool", help="Pool id.")]
NodesOpt = Annotated[list[str], typer.Option("--node", help="Node id (repeat for several).")]
DeallocationOpt = Annotated[
    str,
    typer.Option(
        "--node-deallocation-option",
        help="What happens to running tasks: requeue (default), terminate, taskcompletion "
        "(let them finish) or retaineddata.",
    ),
]
COLUMNS = [("ID", "id"), ("STATE", "state"), ("SCHEDULING", "schedulingState")]


def _request(
    pool: str, nodes: list[str], op: NodeOperation, option: str, output: OutputOpt
) -> None:
    rows = service.request(CURRENT.store, pool, nodes, op, option)
    emit([views.node(n) for n in rows], output, COLUMNS)


def reboot(
    pool: PoolOpt, node: NodesOpt, option: DeallocationOpt = "requeue", output: OutputOpt = None
) -> None:
    """Reboot nodes; their start task runs again when they are back.

    A host's rebootCommand runs on this machine; without one, `sudo -n systemctl reboot`
    runs on the node."""
    _request(pool, node, NodeOperation.REBOOT, option, output)


def reimage(
    pool: PoolOpt, node: NodesOpt, option: DeallocationOpt = "requeue", output: OutputOpt = None
) -> None:
    """Wipe nodes' fleet roots and bootstrap them from scratch.

    A host's reimageCommand (say `vagrant snapshot restore NAME clean`) runs first."""
    _request(pool, node, NodeOperation.REIMAGE, option, output)


def remove(
    pool: PoolOpt, node: NodesOpt, option: DeallocationOpt = "requeue", output: OutputOpt = None
) -> None:
    """Take nodes out of their pool; their fleet files are deleted, the hosts are free."""
    _request(pool, node, NodeOperation.REMOVE, option, output)


def disable_scheduling(
    pool: PoolOpt,
    node: NodesOpt,
    option: Annotated[
        str,
        typer.Option(
            "--option",
            "--node-disable-scheduling-option",
            help="What happens to running tasks: requeue (default), terminate or "
            "taskcompletion. The node is offline once none runs.",
        ),
    ] = "requeue",
    output: OutputOpt = None,
) -> None:
    """Stop giving nodes new tasks."""
    _request(pool, node, NodeOperation.DISABLE_SCHEDULING, option, output)


def enable_scheduling(pool: PoolOpt, node: NodesOpt, output: OutputOpt = None) -> None:
    """Give nodes tasks again."""
    rows = service.enable_scheduling(CURRENT.store, pool, node)
    emit([views.node(n) for n in rows], output, COLUMNS)


def register(node_app: typer.Typer) -> None:
    """Add the node operations to the ``node`` group."""
    node_app.command("reboot")(reboot)
    node_app.command("reimage")(reimage)
    node_app.command("remove")(remove)
    node_app.command("disable-scheduling")(disable_scheduling)
    node_app.command("enable-scheduling")(enable_scheduling)
