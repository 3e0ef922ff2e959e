"""Node operations asked by an admin: reboot, reimage, remove, disable and enable scheduling.

The CLI records the request on the node; the controller carries it out (fleet/node_ops.py,
rules in fleet/node_rules.py), since it owns the connections and the tasks running on the
node. A node with an operation under way gets no new tasks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlmodel import Session, select

from fleet import host_hooks, node_rules
from fleet.domain import (
    DISABLE_SCHEDULING_OPTIONS,
    NODE_DEALLOCATION_OPTIONS,
    NodeOperation,
    NodeState,
    SchedulingState,
)
from fleet.errors import BadInput, Conflict, NotFound
from fleet.service.pools import get_pool
from fleet.store import Store
from fleet.tables import Host, Node

#: Node states from which each operation may start. Reboot and reimage are also how an
#: admin recovers a node that failed its start task or became unusable.
_FROM = {
    NodeOperation.REBOOT: {
        NodeState.IDLE,
        NodeState.RUNNING,
        NodeState.START_TASK_FAILED,
        NodeState.UNUSABLE,
        NodeState.UNKNOWN,
        NodeState.OFFLINE,
    },
    NodeOperation.DISABLE_SCHEDULING: {
        NodeState.IDLE,
        NodeState.RUNNING,
        NodeState.START_TASK_FAILED,
        NodeState.UNUSABLE,
        NodeState.UNKNOWN,
        NodeState.OFFLINE,
        NodeState.CREATING,
        NodeState.STARTING,
        NodeState.WAITING_FOR_START_TASK,
    },
}
_FROM[NodeOperation.REIMAGE] = _FROM[NodeOperation.REBOOT]
_FROM[NodeOperation.REMOVE] = {*NodeState} - {NodeState.LEAVING_POOL}


def request(
    store: Store,
    pool_id: str,
    node_ids: Sequence[str],
    operation: NodeOperation,
    option: str = "requeue",
) -> list[Node]:
    """Record ``operation`` on each node in ``node_ids`` of pool ``pool_id``, all or none,
    and return the nodes. Disabling scheduling takes effect at once (no new tasks).

    Raises BadInput (an option this operation does not take, no node named), NotFound
    (pool or node) or Conflict ``NodeStateConflict`` (the node's state or another
    operation under way forbids it)."""
    allowed = (
        DISABLE_SCHEDULING_OPTIONS
        if operation == NodeOperation.DISABLE_SCHEDULING
        else NODE_DEALLOCATION_OPTIONS
    )
    field = (
        "nodeDisableSchedulingOption"
        if operation == NodeOperation.DISABLE_SCHEDULING
        else "nodeDeallocationOption"
    )
    if option not in allowed:
        raise BadInput(
            f"{field} must be one of {', '.join(allowed)}, not {option!r}",
            code="InvalidPropertyValue",
            target=f"pool {pool_id}",
            field=field,
        )
    if not node_ids:
        raise BadInput("name at least one node", target=f"pool {pool_id}", field="nodeList")
    with store.session() as s:
        pool = get_pool(s, pool_id)
        leaving_before = {n.id for n in _leaving(s, pool_id)}
        nodes = request_in(s, pool_id, node_ids, operation, option, time.time())
        newly = [n for n in nodes if n.operation == NodeOperation.REMOVE]
        newly = [n for n in newly if n.id not in leaving_before]
        if newly and pool.target_dedicated_nodes is not None:
            # As Azure's "remove nodes": a sized pool's target drops by the nodes removed.
            pool.target_dedicated_nodes = max(0, pool.target_dedicated_nodes - len(newly))
            s.add(pool)
        return nodes


def _leaving(s: Session, pool_id: str) -> list[Node]:
    return list(
        s.exec(select(Node).where(Node.pool_id == pool_id, Node.operation == NodeOperation.REMOVE))
    )


def request_in(
    s: Session,
    pool_id: str,
    node_ids: Sequence[str],
    operation: NodeOperation,
    option: str,
    now: float,
) -> list[Node]:
    """Record ``operation`` on the nodes in session ``s``, as :func:`request` does (its
    caller has checked the option); for the controller's pool sizing, which asks nodes to
    leave in the transaction that decides it. Raises as :func:`request`."""
    get_pool(s, pool_id)
    nodes = [_node(s, pool_id, node_id) for node_id in dict.fromkeys(node_ids)]
    for node in nodes:
        if operation == NodeOperation.REBOOT:
            _check_rebootable(s, node)
        _check(node, operation)
        if node.operation == operation:
            continue  # asked again: the first request stands
        node.operation, node.operation_option = operation.value, option
        node.operation_at, node.operation_issued_at = now, None
        if operation == NodeOperation.DISABLE_SCHEDULING:
            node.scheduling_state = SchedulingState.DISABLED
        s.add(node)
    return nodes


def enable_scheduling(store: Store, pool_id: str, node_ids: Sequence[str]) -> list[Node]:
    """Let the nodes take tasks again; a disable still draining is called off. Raises
    NotFound, or Conflict ``NodeStateConflict`` for a node being rebooted, reimaged or
    removed."""
    with store.session() as s:
        get_pool(s, pool_id)
        nodes = [_node(s, pool_id, node_id) for node_id in dict.fromkeys(node_ids)]
        for node in nodes:
            if node.operation not in (None, NodeOperation.DISABLE_SCHEDULING):
                raise _conflict(node, f"a {node.operation} is under way")
            node.scheduling_state = SchedulingState.ENABLED
            if node.state == NodeState.OFFLINE:  # drained: nothing runs on it
                node.state, node.state_changed_at = NodeState.IDLE, time.time()
            node.operation = node.operation_option = None
            node.operation_at = node.operation_issued_at = None
            s.add(node)
    return nodes


def _node(s: Session, pool_id: str, node_id: str) -> Node:
    node = s.get(Node, node_id)
    if node is None or node.pool_id != pool_id:
        raise NotFound(
            f"pool {pool_id} has no node {node_id!r}",
            code="NodeNotFound",
            target=f"node {node_id}",
        )
    return node


def _check(node: Node, operation: NodeOperation) -> None:
    if node.operation not in (None, operation, NodeOperation.DISABLE_SCHEDULING):
        raise _conflict(node, f"a {node.operation} is under way")
    if node.operation == operation:
        return
    if node.state not in _FROM[operation]:
        raise _conflict(node, f"it is {node.state}")


def _check_rebootable(s: Session, node: Node) -> None:
    host = s.get(Host, node.id)
    if (
        host is not None
        and not host_hooks.hook_argv(host, "reboot")
        and node_rules.is_loopback(host.address)
    ):
        raise Conflict(
            f"node {node.id} is reached on {host.address}, this machine: fleet does not "
            "reboot it over SSH; give the host a fleet_reboot_command",
            code="NodeRebootRefused",
            target=f"node {node.id}",
            field="rebootCommand",
        )


def _conflict(node: Node, why: str) -> Conflict:
    return Conflict(
        f"node {node.id} cannot be changed now: {why}",
        code="NodeStateConflict",
        target=f"node {node.id}",
        details={"state": node.state, "operation": node.operation},
    )
