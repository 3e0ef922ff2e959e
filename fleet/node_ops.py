"""Carrying out node operations: reboot, reimage, remove, disable scheduling.

Each turn that reads the store, the controller reads the nodes with an operation and
applies :func:`fleet.node_rules.node_step`: end the running attempts (by the deallocation
option), wait for them, then act on the host in the background. While an operation owns
a node (``busy``), the controller keeps no link to it; the link made again afterwards
bootstraps the node (a rebooted node reruns its start task, a reimaged one starts from
nothing).
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete
from sqlmodel import Session, col

from fleet import host_hooks, node_rules, targets, views
from fleet.domain import NodeOperation, NodeState
from fleet.errors import FleetError, RemoteError, Unreachable
from fleet.sql import Sql, Statement
from fleet.ssh import Connection
from fleet.tables import Host, HostKey, JobNode, Node, NodeUser, StaleAttempt

if TYPE_CHECKING:
    from fleet.attempts import Attempt
    from fleet.context import Context

log = logging.getLogger(__name__)

#: Seconds a host may take to come back from a reboot before its node is ``unusable``.
REBOOT_LIMIT = 600.0
#: Seconds to wait for a host's SSH after its reimage command, and for a reboot command.
HOST_COMMAND_LIMIT = 300.0
#: The commands a node is rebooted with over SSH (through ``sudo -n`` unless the login user
#: is root) when its host names no reboot command: the first that works.
REBOOT_ARGVS = (("systemctl", "reboot"), ("reboot",))
#: What the once-a-second look reads of the nodes with an operation.
_WITH_OPERATION = Statement(
    "SELECT id, operation, operation_option, operation_issued_at FROM nodes"
    " WHERE operation IS NOT NULL"
)
#: Directories every node root has (fleet_agent.py LAYOUT): a path without them is no
#: node root, and is never deleted.
ROOT_MARKERS = ("volatile", "workitems")


class NodeOps:
    """The controller's handling of node operations. ``end_attempt(att, how)`` ends a
    running attempt (``requeue`` or ``terminate``) as the lifecycle does."""

    def __init__(
        self,
        ctx: Context,
        end_attempt: Callable[[Attempt, str], None],
        stop_link: Callable[[str], Any],
        limit: float = REBOOT_LIMIT,
        removed: Callable[[str, str], None] | None = None,
    ) -> None:
        self.c = ctx
        #: told (node id, pool id) once a node has left its pool (pool sizing powers it off)
        self._removed = removed
        self._end_attempt = end_attempt
        self._stop_link = stop_link  # awaitable: the node's link closed and forgotten
        self.limit = limit
        self.busy: set[str] = set()  # nodes an operation holds: no link is made for them

    def read(self, db: Sql) -> list[Any]:
        """Read the nodes with an operation (for :meth:`tick`)."""
        return db.rows(_WITH_OPERATION)

    def tick(self, nodes: list[Any]) -> None:
        """Advance every node of ``nodes`` (as :meth:`read` returned them) with an
        operation that is not under way yet."""
        now = time.time()
        for node in nodes:
            if node.id not in self.busy:
                self._advance(node, now)

    def _advance(self, node: Any, now: float) -> None:
        attempts = list(self.c.inflight.get(node.id, {}).values())
        facts = node_rules.NodeFacts(
            str(node.operation),
            node.operation_option or "requeue",
            node.operation_issued_at,
            len(attempts),
        )
        step = node_rules.node_step(facts, now, self.limit)
        if step.end is not None:
            link = self.c.links.get(node.id)
            if link is not None and link.ready:
                for att in attempts:
                    self._end_attempt(att, step.end)
            else:  # cannot be killed now: requeued, and killed if the node comes back
                self.c.outbox.back_to_queue.extend((a, True) for a in attempts)
        if step.state is None and not step.done:
            return
        fields: dict[str, Any] = {}
        if step.issue:
            fields["operation_issued_at"] = now
        if step.done:
            fields |= _cleared()
        if step.error:
            fields["errors"] = [_error(step.error, f"node {node.id} did not come back in time")]
        _write(self.c.store, node.id, step.state, **fields)
        if step.issue:
            self.busy.add(node.id)
            self.c.spawn(self._carry_out(node.id, NodeOperation(str(node.operation))))
        self.c.wake()

    async def _carry_out(self, node_id: str, op: NodeOperation) -> None:
        """Act on the host; whatever happens, the node is released to its link after."""
        try:
            link = self.c.links.get(node_id)
            boot = link.agent.hello.get("bootId") if link and link.agent else None
            root = link.agent.hello.get("root") if link and link.agent else None
            await self._stop_link(node_id)
            if op == NodeOperation.REBOOT:
                await self._reboot(node_id, boot)
            elif op == NodeOperation.REIMAGE:
                await self._reimage(node_id, root)
            else:
                await self._remove(node_id, root)
        except FleetError as exc:
            log.warning("node %s: %s failed: %s (%s)", node_id, op, exc, exc.code)
            _write(
                self.c.store,
                node_id,
                NodeState.UNKNOWN,
                errors=[_error(exc.code, str(exc))],
                **_cleared(),
            )
        except Exception as exc:
            log.exception("node %s: %s failed", node_id, op)
            _write(
                self.c.store,
                node_id,
                NodeState.UNKNOWN,
                errors=[_error("InternalError", repr(exc))],
                **_cleared(),
            )
        finally:
            self.busy.discard(node_id)
            self.c.wake()

    # -- the operations ---------------------------------------------------------------

    async def _reboot(self, node_id: str, boot_id: str | None) -> None:
        """Tell the host to reboot (its rebootCommand on this machine, else over SSH); its
        link, made again, waits for the new boot id."""
        if boot_id is not None:
            _write(self.c.store, node_id, None, boot_id=boot_id)
        host = self._host(node_id)
        if host_hooks.hook_argv(host, "reboot"):
            await host_hooks.run_hook(host, "reboot", timeout=HOST_COMMAND_LIMIT)
            log.info("node %s: rebooted by its host's reboot command", node_id)
            return
        if node_rules.is_loopback(host.address):  # that would reboot the controller's own machine
            raise RemoteError(
                f"node {node_id} is reached on {host.address}, this machine: fleet does not "
                "reboot it over SSH; give the host a fleet_reboot_command",
                code="NodeRebootRefused",
                target=f"node {node_id}",
            )
        conn = await self._connect(node_id)
        try:
            sudo = [] if conn.target.user == "root" else ["sudo", "-n"]
            failures = []
            for command in REBOOT_ARGVS:  # systemd's, then the classic one
                argv = [*sudo, *command]
                try:
                    result = await conn.run(argv, timeout=HOST_COMMAND_LIMIT)
                except RemoteError:
                    return  # the connection went down with the host: that is a reboot
                if result.exit_code in (0, None):
                    break
                message = result.stderr.decode(errors="replace").strip()[-300:]
                failures.append(f"{' '.join(argv)} exited with {result.exit_code}: {message}")
            else:
                raise RemoteError(
                    f"node {node_id}: cannot reboot: {'; '.join(failures)}",
                    code="NodeRebootFailed",
                    target=f"node {node_id}",
                )
        finally:
            await conn.close()
        log.info("node %s: rebooting", node_id)

    async def _reimage(self, node_id: str, root: str | None) -> None:
        """Run the host's reimageCommand if it has one, delete the node's root and let it
        bootstrap from nothing."""
        host = self._host(node_id)
        if host_hooks.hook_argv(host, "reimage"):
            await host_hooks.run_hook(host, "reimage", timeout=HOST_COMMAND_LIMIT)
        await self._wipe(node_id, root)
        _write(
            self.c.store,
            node_id,
            NodeState.CREATING,
            boot_id=None,
            root=None,
            start_task_info=None,
            start_task_attempt=0,
            errors=[],
            **_cleared(),
        )
        with self.c.store.session() as s:
            s.exec(delete(JobNode).where(col(JobNode.node_id) == node_id))
        log.info("node %s: reimaged", node_id)

    async def _remove(self, node_id: str, root: str | None) -> None:
        """Delete the node's files from its host, then the node: the host is free again."""
        try:
            await self._wipe(node_id, root)
        except FleetError as exc:  # the node leaves the pool anyway; its files stay behind
            log.warning("node %s: its files were not deleted: %s (%s)", node_id, exc, exc.code)
        with self.c.store.session() as s:
            for table in (JobNode, StaleAttempt, NodeUser):
                s.exec(delete(table).where(col(table.node_id) == node_id))
            node = s.get(Node, node_id)
            pool_id = node.pool_id if node is not None else None
            if node is not None:
                s.delete(node)
        log.info("node %s: removed from its pool", node_id)
        if self._removed is not None and pool_id is not None:
            self._removed(node_id, pool_id)

    async def _wipe(self, node_id: str, root: str | None) -> None:
        """Delete the node root ``root`` on the host, if it is one."""
        if root is None:
            with self.c.store.read() as s:
                node = s.get(Node, node_id)
                root = node.root if node else None
        if root is None:
            return  # never bootstrapped: nothing of fleet's is there
        if root != posixpath.normpath(root) or not root.startswith("/") or root.count("/") < 2:
            raise RemoteError(
                f"node {node_id}: {root!r} does not look like a node root; not deleted",
                code="NodeRootRefused",
                target=f"node {node_id}",
            )
        conn = await self._connect(node_id)
        try:
            for marker in ROOT_MARKERS:
                if not await conn.exists(f"{root}/{marker}"):
                    return  # gone already, or not fleet's
            result = await conn.run(["rm", "-rf", "--", root], timeout=HOST_COMMAND_LIMIT)
            if result.exit_code != 0 and conn.target.user != "root":
                # files of other users' tasks: remove them as root if the login user may
                result = await conn.run(
                    ["sudo", "-n", "rm", "-rf", "--", root], timeout=HOST_COMMAND_LIMIT
                )
            if result.exit_code != 0:
                message = result.stderr.decode(errors="replace").strip()[-500:]
                raise RemoteError(
                    f"node {node_id}: cannot delete {root}: {message}",
                    code="NodeRootNotDeleted",
                    target=f"node {node_id}",
                )
        finally:
            await conn.close()

    def _host(self, node_id: str) -> Host:
        with self.c.store.read() as s:
            host = s.get(Host, node_id)
        if host is None:
            raise FleetError(f"host {node_id} is gone from the inventory", code="HostNotFound")
        return host

    async def _connect(self, node_id: str) -> Connection:
        """Connect to the node's host, trying again while it is unreachable (a host that
        a reimage command restored may still be booting) for up to HOST_COMMAND_LIMIT."""
        deadline = time.monotonic() + HOST_COMMAND_LIMIT
        delay = 0.5
        while True:
            with self.c.store.read() as s:
                host, key = self._host(node_id), s.get(HostKey, node_id)
            try:
                return await Connection.open(targets.target(host, key))
            except Unreachable:
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)


def _cleared() -> dict[str, Any]:
    return {
        "operation": None,
        "operation_option": None,
        "operation_at": None,
        "operation_issued_at": None,
    }


def _error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "time": views.iso(time.time())}


def _write(store: Any, node_id: str, state: NodeState | None, **fields: Any) -> None:
    with store.session() as s:
        _apply(s, node_id, state, fields)


def _apply(s: Session, node_id: str, state: NodeState | None, fields: dict[str, Any]) -> None:
    node = s.get(Node, node_id)
    if node is None:
        return
    if state is not None and node.state != state:
        node.state = state
        node.state_changed_at = time.time()
    for name, value in fields.items():
        setattr(node, name, value)
    s.add(node)
