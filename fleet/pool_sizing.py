"""Carrying out pool resizes: growing and shrinking hostSelector pools, powering hosts on
and off.

Each turn that reads the store, the controller looks at the hostSelector pools that are
``resizing`` or ``stopping`` and applies :func:`fleet.sizing_rules.sizing_step` in one
transaction: claimed hosts become nodes (``creating``; their links come up by
themselves), nodes chosen to leave get a REMOVE node operation with the pool's
deallocation option (fleet/node_ops.py carries it out, the one way a node leaves a pool),
and the pool's allocation state, target and ``resizeErrors`` are written.

Power hooks (fleet/host_hooks.py), run in the background: a node of a hostSelector pool
that is ``creating`` or ``unknown`` and whose host has a ``powerOnCommand`` gets it run
once per controller (at once for the hosts this piece claims); a failure goes to the
node's ``errors``. A node of such a pool that left it gets its host's ``powerOffCommand``
(NodeOps calls :meth:`PoolSizing.node_removed`); the host is not claimed again while that
runs.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, select

from fleet import host_hooks, sizing_rules, views
from fleet.domain import AllocationState, NodeOperation, NodeState, PoolState
from fleet.errors import FleetError
from fleet.service import node_ops as node_requests
from fleet.service import pools as pool_service
from fleet.sql import Sql, Statement
from fleet.tables import Host, Node, Pool

if TYPE_CHECKING:
    from fleet.context import Context

log = logging.getLogger(__name__)

#: Seconds a power hook may run before its process group is killed.
POWER_HOOK_LIMIT = 600.0
#: Node states in which a node of a hostSelector pool may be a host that is off.
_MAYBE_OFF = (NodeState.CREATING, NodeState.UNKNOWN)
#: Operations that hold a node: it is not asked to leave while one is under way.
_HOLDING = (NodeOperation.REBOOT, NodeOperation.REIMAGE)
#: What the once-a-second look reads: the hostSelector pools resizing or stopping, and
#: the hosts of their nodes that may be off (with their powerOnCommand).
_MOVING = Statement(
    "SELECT id FROM pools WHERE target_dedicated_nodes IS NOT NULL AND state = :active"
    " AND allocation_state IN :moving"
)
_MAYBE_OFF_HOSTS = Statement(
    "SELECT hosts.id, hosts.power_on_command FROM hosts JOIN nodes ON nodes.id = hosts.id"
    " JOIN pools ON pools.id = nodes.pool_id WHERE pools.target_dedicated_nodes IS NOT NULL"
    " AND pools.state = :active AND nodes.state IN :maybe_off",
    json_columns=["power_on_command"],
)


class PoolSizing:
    """The controller's handling of pool resizes and of the power hooks of their hosts."""

    def __init__(self, ctx: Context) -> None:
        self.c = ctx
        self.powered_on: set[str] = set()  # nodes whose powerOnCommand ran under this controller
        self.powering_off: set[str] = set()  # hosts whose powerOffCommand runs now

    def read(self, db: Sql) -> tuple[list[str], list[str]]:
        """Read the hostSelector pools resizing or stopping, and the hosts of their nodes
        that may be off and have a powerOnCommand not run yet (for :meth:`tick`)."""
        active = {"active": PoolState.ACTIVE}
        moving = [AllocationState.RESIZING, AllocationState.STOPPING]
        pools = [row.id for row in db.rows(_MOVING, active | {"moving": moving})]
        hosts = db.rows(_MAYBE_OFF_HOSTS, active | {"maybe_off": list(_MAYBE_OFF)})
        # (a JSON column's NULL may be JSON null: asked here)
        off = [h.id for h in hosts if h.id not in self.powered_on and h.power_on_command]
        return pools, off

    def tick(self, due: tuple[list[str], list[str]]) -> None:
        """Advance the pools that are resizing or stopping and power on the hosts of their
        nodes that may be off (``due``: as :meth:`read` returned them)."""
        moving, maybe_off = due
        if maybe_off:
            with self.c.store.read() as s:
                hosts = [h for h in (s.get(Host, i) for i in maybe_off) if h is not None]
            for host in hosts:
                if host.id not in self.powered_on and host_hooks.hook_argv(host, "power_on"):
                    self._power_on(host)
        for pool_id in moving:
            self._advance(pool_id, time.time())

    def node_removed(self, node_id: str, pool_id: str) -> None:
        """Run the host's powerOffCommand, if it has one, once ``node_id`` has left pool
        ``pool_id`` and the pool is a hostSelector pool (NodeOps calls this)."""
        self.powered_on.discard(node_id)
        with self.c.store.read() as s:
            pool, host = s.get(Pool, pool_id), s.get(Host, node_id)
        if pool is None or pool.target_dedicated_nodes is None or host is None:
            return
        if host_hooks.hook_argv(host, "power_off"):
            self.powering_off.add(host.id)
            self.c.spawn(self._run_power_off(host))

    # -- resizing -----------------------------------------------------------------------

    def _advance(self, pool_id: str, now: float) -> None:
        claimed: list[str] = []
        with self.c.store.session() as s:
            pool = s.get(Pool, pool_id, with_for_update=True)
            if pool is None or pool.target_dedicated_nodes is None:
                return
            if pool.allocation_state not in (AllocationState.RESIZING, AllocationState.STOPPING):
                return  # changed since it was read
            nodes = list(s.exec(select(Node).where(Node.pool_id == pool_id).order_by(Node.id)))
            facts = self._facts(s, pool, nodes)
            step = sizing_rules.sizing_step(facts)
            claimed = self._apply(s, pool, step, now)
        if step != sizing_rules.SizingStep():
            log.info(
                "pool %s: %s (target %s): claimed %s, asked to leave %s",
                pool_id,
                step.state or pool.allocation_state,
                pool.target_dedicated_nodes,
                list(step.claim) or "none",
                list(step.remove) or "none",
            )
            self.c.wake()
        with self.c.store.read() as s:
            hosts = [h for h in (s.get(Host, i) for i in claimed) if h is not None]
        for host in hosts:
            if host_hooks.hook_argv(host, "power_on"):
                self._power_on(host)

    def _facts(self, s: Session, pool: Pool, nodes: list[Node]) -> sizing_rules.PoolFacts:
        target = int(pool.target_dedicated_nodes or 0)
        node_facts = tuple(
            sizing_rules.NodeFacts(
                n.id,
                n.state,
                len(self.c.inflight.get(n.id, {})),
                pool_service.leaving(n),
                n.operation in _HOLDING,
            )
            for n in nodes
        )
        need = target - sum(1 for n in node_facts if not n.leaving)
        free: list[str] = []
        if pool.allocation_state == AllocationState.RESIZING and need > 0:
            selector = pool.spec["hostSelector"]
            free = pool_service.free_matching_hosts(
                s, selector, need, self.powering_off, pool_service.preferred_labels(pool.spec)
            )
        return sizing_rules.PoolFacts(pool.allocation_state, target, node_facts, tuple(free))

    def _apply(
        self, s: Session, pool: Pool, step: sizing_rules.SizingStep, now: float
    ) -> list[str]:
        """Write ``step`` in session ``s``; return the hosts claimed."""
        for host_id in step.claim:
            s.add(Node(id=host_id, pool_id=pool.id, created_at=now, state_changed_at=now))
        if step.remove:
            option = pool.resize_option or "requeue"
            node_requests.request_in(s, pool.id, step.remove, NodeOperation.REMOVE, option, now)
        if step.target is not None:
            pool.target_dedicated_nodes = step.target
        if step.shortfall is not None:
            wanted, found = step.shortfall
            errors = [pool_service.insufficient_hosts(pool.spec["hostSelector"], wanted, found)]
            pool.resize_errors = errors
        if step.state is not None:
            pool_service.set_allocation_state(pool, step.state, now)
        s.add(pool)
        return list(step.claim)

    # -- power hooks ----------------------------------------------------------------------

    def _power_on(self, host: Host) -> None:
        self.powered_on.add(host.id)
        self.c.spawn(self._run_power_on(host))

    async def _run_power_on(self, host: Host) -> None:
        try:
            await host_hooks.run_hook(host, "power_on", timeout=POWER_HOOK_LIMIT)
            log.info("host %s: powered on by its powerOnCommand", host.id)
        except FleetError as exc:
            log.warning("host %s: powerOnCommand failed: %s (%s)", host.id, exc, exc.code)
            self._node_error(host.id, exc)
        finally:
            self.c.wake()

    async def _run_power_off(self, host: Host) -> None:
        try:
            await host_hooks.run_hook(host, "power_off", timeout=POWER_HOOK_LIMIT)
            log.info("host %s: powered off by its powerOffCommand", host.id)
        except FleetError as exc:  # the node is gone: the log is where this shows
            log.warning("host %s: powerOffCommand failed: %s (%s)", host.id, exc, exc.code)
        finally:
            self.powering_off.discard(host.id)
            self.c.wake()

    def _node_error(self, node_id: str, exc: FleetError) -> None:
        error: dict[str, Any] = {
            "code": exc.code,
            "message": str(exc),
            "time": views.iso(time.time()),
        }
        with self.c.store.session() as s:
            node = s.get(Node, node_id)
            if node is not None:
                node.errors = [*(node.errors or []), error]
                s.add(node)
