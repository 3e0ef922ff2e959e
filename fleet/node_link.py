"""One node as the controller sees it: connect, bootstrap, run the start task, stay connected.

A :class:`NodeLink` keeps one SSH connection and one agent channel to its node,
reconnecting with backoff when either drops. It writes the node's own state
(``creating`` → ``starting`` → ``waitingforstarttask`` → ``idle``, or
``starttaskfailed``, ``unknown``, ``unusable``) and hands task events to the
controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fleet import (
    applications,
    certificates,
    environment,
    identity,
    metrics,
    node_rules,
    targets,
    views,
)
from fleet.agent_client import AgentClient
from fleet.domain import NodeOperation, NodeState, SchedulingState
from fleet.errors import (
    AgentError,
    AuthenticationFailed,
    FleetError,
    HostKeyMismatch,
    HostKeyUnknown,
    RemoteError,
    Unreachable,
)
from fleet.service.hosts import record_host_key
from fleet.settings import Settings
from fleet.ssh import Connection, Target
from fleet.store import Store
from fleet.tables import Host, HostKey, Node, Pool

log = logging.getLogger(__name__)

START_TASK_KEY = "start"
START_TASK_DIR = "startup"
RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15, 30)
#: Failures that no reconnect can fix: the node is unusable until an admin acts.
FATAL = (HostKeyMismatch, HostKeyUnknown, AuthenticationFailed)
#: Errors with these codes also leave the node unusable until an admin acts.
FATAL_CODES = {"UserAccountError", "CertificateInstallError", "SecretKeyMismatch"}
#: Seconds a stopping link's work gets to unwind before its connection is cut.
STOP_GRACE = 1.0
#: Seconds after which a stopping link stops waiting for its work.
STOP_LIMIT = 4.0


def default_node_root(user: str | None) -> str:
    """Return the node root used when the inventory names none."""
    return "/var/lib/fleet" if user == "root" else ".local/share/fleet/node"


class NodeLink:
    """The controller's live connection to one node."""

    def __init__(
        self,
        node_id: str,
        store: Store,
        settings: Settings,
        on_ready: Callable[[NodeLink], Awaitable[None]],
        on_lost: Callable[[NodeLink], None],
        on_event: Callable[[NodeLink, dict[str, Any]], None],
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.settings = settings
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._on_event = on_event
        self.conn: Connection | None = None
        self.agent: AgentClient | None = None
        self.ready = False
        self.lost_at: float | None = None
        self.boot_id_changed = False
        self.login_user = ""
        self.can_sudo = False
        self.app_env: dict[str, str] = {}  # the pool's application package variables
        self._start_waiter: asyncio.Future[dict[str, Any]] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name=f"node-{self.node_id}")

    async def stop(self) -> None:
        """Close the agent channel and the connection; tasks on the node keep running.

        Returns within about STOP_LIMIT seconds whatever the node does: when the link's work
        still waits on the node after STOP_GRACE (say an SFTP close a frozen sshd never
        answers, which outlives the cancellation), the connection is cut under it. Raises
        nothing."""
        self._stopping = True
        runner = self._runner
        if runner is not None and not runner.done():
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STOP_LIMIT
            runner.cancel()
            await asyncio.wait({runner}, timeout=STOP_GRACE)
            if not runner.done() and self.conn is not None:
                log.info(
                    "node %s: not answering while stopping; cutting the connection", self.node_id
                )
                self.conn.abort()
            while not runner.done() and loop.time() < deadline:
                runner.cancel()  # again: a library's cleanup may have swallowed the first one
                await asyncio.wait({runner}, timeout=0.1)
            if not runner.done():
                log.warning(
                    "node %s: link did not stop in %.0f s; left behind", self.node_id, STOP_LIMIT
                )
        if runner is not None and runner.done() and not runner.cancelled():
            runner.exception()  # retrieved here; _run logged whatever mattered
        await self._disconnect()

    async def _disconnect(self) -> None:
        """Close the agent channel and the connection (bounded: see Connection.close)."""
        self.ready = False
        if self.agent is not None:
            self.agent.close()
            self.agent = None
        if self.conn is not None:
            conn, self.conn = self.conn, None
            metrics.SSH_CONNECTIONS.dec()
            await conn.close()

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self._connect_and_bootstrap()
                failures = 0
                assert self.agent is not None and self.conn is not None
                await self.agent.closed.wait()
                raise RemoteError("agent channel closed", code="NodeUnreachable")
            except asyncio.CancelledError:
                raise
            except FATAL as exc:
                self._lost(exc, NodeState.UNUSABLE)
                await self._disconnect()
                await asyncio.sleep(RETRY_DELAYS[-1])
            except FleetError as exc:
                fatal = exc.code in FATAL_CODES
                self._lost(exc, NodeState.UNUSABLE if fatal else NodeState.UNKNOWN)
                await self._disconnect()
                delay = RETRY_DELAYS[-1 if fatal else min(failures, len(RETRY_DELAYS) - 1)]
                await asyncio.sleep(delay)
                failures += 1
            except Exception as exc:  # a bug must not kill the controller's other nodes
                log.exception("node %s: unexpected error", self.node_id)
                self._lost(FleetError(f"internal error: {exc!r}"), NodeState.UNKNOWN)
                await self._disconnect()
                await asyncio.sleep(RETRY_DELAYS[-1])

    def _lost(self, exc: FleetError, state: NodeState) -> None:
        log.warning("node %s: %s (%s)", self.node_id, exc, exc.code)
        was_ready = self.ready
        self.ready = False
        if self.lost_at is None:
            self.lost_at = time.time()
        with self.store.session() as s:
            node = s.get(Node, self.node_id)
            if node is None:
                return
            # A node that never connected keeps its bootstrap state but shows the error; a
            # node operation's state stays (a rebooting host is expected to be away).
            held = node.state in node_rules.OPERATION_STATES
            if not held and (
                was_ready or node.state != NodeState.CREATING or state == NodeState.UNUSABLE
            ):
                _set_state(node, state)
            node.errors = [{"code": exc.code, "message": str(exc), "time": views.iso(time.time())}]
            s.add(node)
        if was_ready:
            self._on_lost(self)

    # -- connect and bootstrap ---------------------------------------------------------

    def _target(self) -> tuple[Target, str, Pool, Node]:
        with self.store.read() as s:
            host = s.get(Host, self.node_id)
            node = s.get(Node, self.node_id)
            if host is None or node is None:
                raise FleetError("node was removed", code="NodeRemoved")
            pool = s.get(Pool, node.pool_id)
            assert pool is not None
            key = s.get(HostKey, self.node_id)
        target = targets.target(host, key)
        root = host.node_root or default_node_root(host.user)
        if root.startswith("~/"):
            root = root[2:]
        return target, root, pool, node

    async def _connect_and_bootstrap(self) -> None:
        target, root, pool, node = self._target()

        def remember(line: str, fp: str) -> None:
            record_host_key(self.store, target.host_id, line, fp)

        try:
            self.conn = await Connection.open(target, on_new_key=remember)
        except FleetError as exc:
            metrics.handshake_failed(exc.code)
            raise
        metrics.SSH_CONNECTIONS.inc()
        if node.state in (NodeState.CREATING, NodeState.UNKNOWN, NodeState.UNUSABLE):
            self._write_node(state=NodeState.STARTING)
        self.agent = await AgentClient.launch(self.conn, root, self._agent_event)
        hello = self.agent.hello
        issued = node.operation_issued_at is not None
        if not node_rules.rebooted(node.operation, issued, hello.get("bootId"), node.boot_id):
            raise RemoteError(  # the reboot command is not through yet: try again soon
                "the node has not rebooted yet", code="NodeRebooting", target=f"node {self.node_id}"
            )
        self.login_user = str(hello.get("user", ""))
        # The node's own variables, which every task's environment starts from, go once.
        await self.agent.request(
            "env", env=environment.node_env(hello.get("root", root), self.node_id)
        )
        self.can_sudo = self.login_user == "root" or await identity.can_sudo(self.conn)
        if pool.spec.get("userAccounts"):
            accounts = identity.with_passwords(self.store, self.settings, pool.spec["userAccounts"])
            await identity.ensure_accounts(self.conn, accounts, self.login_user)
        # Before the start task: the pool's certificates, then its application packages.
        await certificates.install_for_node(
            self.conn,
            self.store,
            self.settings,
            pool.spec,
            hello.get("root", root),
            self.login_user,
        )
        await applications.install_pool_packages(self, pool.spec, hello.get("root", root))
        self.boot_id_changed = bool(node.boot_id and node.boot_id != hello.get("bootId"))
        start_needed = pool.spec.get("startTask") is not None and (
            self.boot_id_changed
            or node.start_task_info is None
            or node.start_task_info.get("state") != "completed"
            or node.state in (NodeState.CREATING, NodeState.STARTING)
        )
        seen: dict[str, Any] = {
            "boot_id": hello.get("bootId"),
            "root": hello.get("root"),
            "errors": [],
        }
        if self.boot_id_changed or node.last_boot_time is None:
            seen["last_boot_time"] = time.time()
        if self.boot_id_changed and not issued:  # rebooted by someone else, or power loss
            seen["errors"] = [_rebooted_error(node.boot_id, hello.get("bootId"))]
        if node.operation == NodeOperation.REBOOT and issued:  # back from fleet's reboot
            seen |= {"operation": None, "operation_option": None, "operation_at": None}
            seen["operation_issued_at"] = None
        self.lost_at = None
        if start_needed:
            self._write_node(**seen)
            ok = await self._run_start_task(pool, hello.get("root", root))
            if not ok:
                return  # node stays starttaskfailed; the agent channel stays open
        elif node.state != NodeState.START_TASK_FAILED:
            self._write_node(state=NodeState.IDLE, **seen)  # one commit: bootstrap ends here
        else:
            self._write_node(**seen)
            return
        self.ready = True
        await self._on_ready(self)

    def _write_node(self, state: NodeState | None = None, **fields: Any) -> None:
        with self.store.session() as s:
            node = s.get(Node, self.node_id)
            if node is None:
                return
            if state == NodeState.IDLE and node.scheduling_state == SchedulingState.DISABLED:
                state = NodeState.OFFLINE  # ready, but an admin stopped its scheduling
            if state is not None:
                _set_state(node, state)
            for name, value in fields.items():
                setattr(node, name, value)
            s.add(node)

    # -- start task -------------------------------------------------------------------

    async def _run_start_task(self, pool: Pool, root: str) -> bool:
        """Run the pool's start task with its retries; return whether it succeeded. An
        attempt that a controller before this one left running is waited for, never started
        a second time."""
        spec = pool.spec["startTask"]
        wait = spec.get("waitForSuccess", True)
        max_retries = spec.get("maxTaskRetryCount", 0)
        retries, record = await self._reattach_start_task()
        while True:
            if record is None:
                attempt = self._begin_start_attempt(retries, wait)
            if not wait and retries == 0:
                self.ready = True
                await self._on_ready(self)
            if record is None:
                record = await self._start_task_attempt(pool, root, spec, attempt)
            exit_code = record.get("exitCode")
            await self._collect_start_output(root)
            info: dict[str, Any] = {
                "state": "completed",
                "startTime": record.get("startTime"),
                "endTime": record.get("endTime"),
                "exitCode": exit_code,
                "retryCount": retries,
                "result": "success" if exit_code == 0 else "failure",
            }
            if exit_code == 0:
                self._write_node(state=NodeState.IDLE if wait else None, start_task_info=info)
                return True
            error = record.get("error") or {
                "code": "FailureExitCode",
                "message": f"the start task exited with {exit_code}",
            }
            info["failureInfo"] = {"category": "usererror", **error}
            start_failed = error.get("code") != "FailureExitCode"
            if start_failed or (max_retries != -1 and retries >= max_retries):
                self.ready = False
                self._write_node(
                    state=NodeState.START_TASK_FAILED,
                    start_task_info=info,
                    errors=[
                        {
                            "code": "StartTaskFailed",
                            "message": f"start task failed: {error['message']} (exit code {exit_code}, "
                            f"after {retries} retries)",
                            "time": views.iso(time.time()),
                        }
                    ],
                )
                return False
            retries, record = retries + 1, None

    def _begin_start_attempt(self, retries: int, wait: bool) -> int:
        """Record a new start task attempt as running (written ahead of the spawn); return
        its number."""
        with self.store.session() as s:
            node = s.get(Node, self.node_id)
            assert node is not None
            node.start_task_attempt += 1
            node.start_task_info = {
                "state": "running",
                "startTime": views.iso(time.time()),
                "retryCount": retries,
            }
            _set_state(node, NodeState.WAITING_FOR_START_TASK if wait else NodeState.IDLE)
            s.add(node)
            return node.start_task_attempt

    async def _reattach_start_task(self) -> tuple[int, dict[str, Any] | None]:
        """Return the retry count and exit record of the start task attempt recorded as
        running (by a controller that has died since): waited for while it still runs, read
        back if it exited. Returns (0, None) when there is none to reattach to."""
        with self.store.session() as s:
            node = s.get(Node, self.node_id)
            info = (node.start_task_info or {}) if node else {}
            attempt = node.start_task_attempt if node else 0
        if info.get("state") != "running" or not attempt or self.agent is None:
            return 0, None
        retries = int(info.get("retryCount") or 0)
        self._start_waiter = asyncio.get_running_loop().create_future()
        query = {"key": START_TASK_KEY, "taskDir": START_TASK_DIR, "attempt": attempt}
        status = await self.agent.request("status", tasks=[query])
        item = (status.get("tasks") or [{}])[0]
        if item.get("state") == "running":
            log.info("node %s: reattached to start task attempt %d", self.node_id, attempt)
            return retries, await self._start_exit()
        if item.get("state") == "exited":
            return retries, dict(item.get("exit") or {})
        return retries, None

    async def _start_exit(self) -> dict[str, Any]:
        """Wait for the start task's exit event; raises Unreachable if the agent goes first."""
        assert self._start_waiter is not None and self.agent is not None
        closed: asyncio.Future[Any] = asyncio.ensure_future(self.agent.closed.wait())
        waiter: asyncio.Future[Any] = self._start_waiter
        try:
            await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if not self._start_waiter.done():
            raise Unreachable(
                "agent channel closed during the start task", target=f"node {self.node_id}"
            )
        return self._start_waiter.result()

    async def _start_task_attempt(
        self, pool: Pool, root: str, spec: dict[str, Any], attempt: int
    ) -> dict[str, Any]:
        assert self.agent is not None
        env = environment.task_env(  # over the node's own, sent when the link opened
            root=root,
            pool_id=pool.id,
            task_dir_rel=START_TASK_DIR,
            attempt=attempt,
            user_env=spec.get("environmentSettings", []),
        )
        applications.add_env(env, self.app_env)
        loop = asyncio.get_running_loop()
        self._start_waiter = loop.create_future()
        try:
            assert self.conn is not None
            user, wd = spec.get("userIdentity"), f"{root}/{START_TASK_DIR}/wd"
            await identity.prepare_workdir(self.conn, user, wd, self.login_user)  # wd is 0700
            await self.agent.request(
                "spawn",
                key=START_TASK_KEY,
                taskDir=START_TASK_DIR,
                attempt=attempt,
                argv=identity.wrap(
                    spec.get("userIdentity"), shlex.split(spec["commandLine"]), self.login_user
                ),
                env=env,
                maxWallClockSeconds=None,
            )
        except AgentError as exc:
            if exc.code not in ("CommandProgramNotFound", "CommandProgramNotExecutable"):
                raise
            return {"exitCode": None, "error": {"code": exc.code, "message": exc.message}}
        return await self._start_exit()

    async def _collect_start_output(self, root: str) -> None:
        assert self.conn is not None
        dest = self.settings.node_files / self.node_id / START_TASK_DIR
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("stdout.txt", "stderr.txt", "exit.json"):
            with contextlib.suppress(RemoteError):
                await self.conn.download(f"{root}/{START_TASK_DIR}/{name}", str(dest / name))

    def _agent_event(self, msg: dict[str, Any]) -> None:
        if msg.get("event") == "call":
            self._on_event(self, msg)
            return
        if msg.get("event") != "exited":
            return
        if msg.get("key") == START_TASK_KEY:
            waiter = self._start_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(msg.get("exit") or {})
            return
        self._on_event(self, msg)


def _rebooted_error(before: str | None, now: str | None) -> dict[str, Any]:
    """The node error that says its host rebooted without fleet asking."""
    return {
        "code": "NodeRebooted",
        "message": f"the host rebooted outside fleet (boot id {before} -> {now}): "
        "its running tasks were requeued and its start task runs again",
        "time": views.iso(time.time()),
    }


def _set_state(node: Node, state: NodeState) -> None:
    if node.state != state:
        node.state = state
        node.state_changed_at = time.time()
