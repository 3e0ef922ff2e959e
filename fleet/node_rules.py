"""The rules of node operations, pure: what to do next with a node an admin asked to
reboot, reimage, remove or stop scheduling on.

An operation first deals with the node's running tasks by its deallocation option
(Azure's ``nodeDeallocationOption``): ``requeue`` and ``terminate`` end them at once
(requeued, or completed as terminated), ``taskcompletion`` and ``retaineddata`` let them
finish. Once none runs, the operation is carried out: disabling scheduling leaves the
node ``offline``; a reboot is issued to the host and then waited for (the node comes back
with a new boot id) within a time limit; a reimage wipes the node's root (after the host's
reimage command, if any) and bootstraps it afresh; a removal deletes the node's files and
the node. fleet/node_ops.py reads the facts and applies the step.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from fleet.domain import NodeOperation, NodeState

#: The state a node shows while each operation is carried out on its host.
STATE_DURING = {
    NodeOperation.REBOOT: NodeState.REBOOTING,
    NodeOperation.REIMAGE: NodeState.REIMAGING,
    NodeOperation.REMOVE: NodeState.LEAVING_POOL,
    NodeOperation.DISABLE_SCHEDULING: NodeState.OFFLINE,
}

#: States a node operation owns: losing the connection does not change them.
OPERATION_STATES = frozenset({NodeState.REBOOTING, NodeState.REIMAGING, NodeState.LEAVING_POOL})


@dataclass(frozen=True)
class NodeFacts:
    """What the rules read of a node with an operation: the operation and its option,
    when the host was told (None: not yet), and how many attempts run on it."""

    operation: str
    option: str
    issued_at: float | None
    running: int


@dataclass(frozen=True)
class NodeStep:
    """What to do now. ``end``: end the running attempts (``requeue`` or ``terminate``);
    ``state``: the node's new state; ``issue``: carry the operation out on the host now;
    ``done``: the operation is over (clear it); ``error``: an entry for the node's
    ``errors``."""

    end: str | None = None
    state: NodeState | None = None
    issue: bool = False
    done: bool = False
    error: str | None = None


def node_step(facts: NodeFacts, now: float, limit: float) -> NodeStep:
    """Return the next step of a node operation that nothing is carrying out right now;
    ``limit``: seconds a host may take to come back from a reboot before the node is
    ``unusable``. Reimage and removal are idempotent, so one a restarted controller finds
    issued is carried out again."""
    op = NodeOperation(facts.operation)
    if facts.issued_at is not None and op == NodeOperation.REBOOT:  # waiting for the host
        if now - facts.issued_at > limit:
            return NodeStep(state=NodeState.UNUSABLE, done=True, error="NodeRebootTimedOut")
        return NodeStep()
    if facts.issued_at is not None:  # a reimage or removal nobody carries out any more (the
        return NodeStep(state=STATE_DURING[op], issue=True)  # controller restarted): again
    if facts.running:
        ends_now = facts.option in ("requeue", "terminate")
        return NodeStep(end=facts.option if ends_now else None)
    if op == NodeOperation.DISABLE_SCHEDULING:
        return NodeStep(state=NodeState.OFFLINE, done=True)
    return NodeStep(state=STATE_DURING[op], issue=True)


def rebooted(
    operation: str | None, issued: bool, seen_boot: str | None, recorded_boot: str | None
) -> bool:
    """Return whether a node fleet told to reboot has come back: its host answers with a
    boot id other than the one recorded before. A node not rebooting counts as back."""
    if operation != NodeOperation.REBOOT or not issued or recorded_boot is None:
        return True
    return seen_boot != recorded_boot


def is_loopback(address: str) -> bool:
    """Return whether ``address`` names this machine (a loopback address or name): fleet
    never reboots such a host over SSH, which would reboot the controller's machine."""
    if address.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
