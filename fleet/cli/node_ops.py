"""``fleet node reboot|reimage|remove|disable-scheduling|enable-scheduling``.

Each records the request; a running controller carries it out (fleet/node_ops.py) and
the node's state shows how far it got (``fleet node show``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleet import views
from fleet.cli.common import CURRENT, OutputOpt, emit, lazy_module
from fleet.domain import NodeOperation
from fleet.errors import NotFound

if TYPE_CHECKING:
    from fleet.remote import Remote
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
    if (remote := CURRENT.remote) is not None:
        if op == NodeOperation.REMOVE:
            body = {"nodeList": nodes, "nodeDeallocationOption": option}
            remote.call("POST", f"/pools/{pool}/removenodes", body=body)
        else:
            for node in nodes:
                remote.call(
                    "POST", f"/pools/{pool}/nodes/{node}/{_PATH[op]}", body={_OPTION[op]: option}
                )
        emit(_remote_nodes(remote, pool, nodes), output, COLUMNS)
        return
    rows = service.request(CURRENT.store, pool, nodes, op, option)
    emit([views.node(n) for n in rows], output, COLUMNS)


#: Azure's operation path and option field of each node operation.
_PATH = {
    NodeOperation.REBOOT: "reboot",
    NodeOperation.REIMAGE: "reimage",
    NodeOperation.DISABLE_SCHEDULING: "disablescheduling",
}
_OPTION = {
    NodeOperation.REBOOT: "nodeRebootOption",
    NodeOperation.REIMAGE: "nodeReimageOption",
    NodeOperation.DISABLE_SCHEDULING: "nodeDisableSchedulingOption",
}


def _remote_nodes(remote: Remote, pool: str, nodes: list[str]) -> list[dict[str, Any]]:
    """Return the nodes as the local operations print them (without the host address)."""
    out = []
    for node in nodes:
        try:
            row = remote.get(f"/pools/{pool}/nodes/{node}")
        except NotFound:
            continue  # removed already
        out.append({k: v for k, v in row.items() if k != "ipAddress"})
    return out


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
    if (remote := CURRENT.remote) is not None:
        for one in node:
            remote.call("POST", f"/pools/{pool}/nodes/{one}/enablescheduling")
        emit(_remote_nodes(remote, pool, node), output, COLUMNS)
        return
    rows = service.enable_scheduling(CURRENT.store, pool, node)
    emit([views.node(n) for n in rows], output, COLUMNS)


def register(node_app: typer.Typer) -> None:
    """Add the node operations to the ``node`` group."""
    node_app.command("reboot")(reboot)
    node_app.command("reimage")(reimage)
    node_app.command("remove")(remove)
    node_app.command("disable-scheduling")(disable_scheduling)
    node_app.command("enable-scheduling")(enable_scheduling)
