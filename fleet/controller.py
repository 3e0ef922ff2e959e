"""The controller: the reconcile loop that places tasks on nodes and records what they did.

Each turn of the loop: open links to nodes that need one, apply the events that
came in (starts, exits, lost nodes) in one transaction, requeue the tasks of
nodes lost for longer than the grace period, then ask the scheduler for a plan,
write it ahead (``dispatching``) and send the spawns. See DESIGN.md,
"Reliability model".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shlex
import time
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from fleet import (
    applications,
    environment,
    identity,
    metrics,
    outcomes,
    queue,
    rules,
    scheduler,
    specs,
    task_calls,
    task_io,
)
from fleet.attempts import Attempt, epoch
from fleet.autoscale import AutoScaler
from fleet.collection import Collector, internal_error
from fleet.context import Context, Outbox
from fleet.control_server import ControlServer
from fleet.domain import AttemptState, NodeState, PoolState, TaskState
from fleet.errors import (
    AgentError,
    FleetError,
    RemoteError,
)
from fleet.job_tasks import JobTasks
from fleet.lifecycle import Lifecycle
from fleet.multi_instance import MultiInstance
from fleet.node_link import NodeLink
from fleet.node_ops import NodeOps
from fleet.node_users import NodeUserSweep
from fleet.pool_sizing import PoolSizing
from fleet.retention import RetentionSweep
from fleet.schedule_runner import ScheduleRunner
from fleet.service.auto_pools import AutoPoolSweep
from fleet.settings import Settings
from fleet.store import Store, WakeListener
from fleet.tables import Node, Pool, StaleAttempt, Task
from fleet.task_calls import TaskCalls
from fleet.task_events import TaskEvents

log = logging.getLogger(__name__)

#: Longest wait before retrying a turn of the loop or a collection that failed.
TURN_RETRY_MAX = 5.0
#: Longest wait between turns of an idle loop: CLI writes wake it at once (fleet/wakeups.py);
#: time-based rules (node grace, wall clock limits) are seen within this time.
IDLE_TICK_MAX = 1.0
#: Longest time between two reads of the store's jobs, nodes and schedules when nothing
#: asked for one: a safety net, since every write of the CLI wakes the loop and asks.
LOOK_INTERVAL = 1.0
#: While tasks finish, the jobs are read again this often (not every turn: under load a
#: turn comes every few milliseconds), so a job's end follows its last task closely.
LOOK_AFTER_EXITS = 0.25
SPAWN_RETRY_DELAY = 2.0
#: Spawn refusals that say the task itself can never run: it completes instead of retrying.
REFUSED_FOR_GOOD = frozenset({"BadRequest", "BadPath"})

#: Why a task ended by a node operation with ``terminate`` ended.
NODE_OPERATION_ENDED = "the task was terminated by an operation on its node"
#: Seconds shutdown waits for background work and links (each bounds itself sooner).
SHUTDOWN_LIMIT = 6.0

#: What placement reads of the nodes with a ready link.
_READY_NODES = sa_select(
    col(Node.id), col(Node.pool_id), col(Node.state), col(Node.scheduling_state)
).where(col(Node.id).in_(bindparam("ids", expanding=True)), col(Node.operation).is_(None))


@functools.lru_cache(maxsize=4096)
def _split(command_line: str) -> tuple[str, ...]:
    """A command line's argv (the tasks of a job often share one)."""
    return tuple(shlex.split(command_line))


class Controller:
    """Owns every SSH connection and writes every state change through the store."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        tick: float = 0.05,
        node_grace: float = 30.0,
        sweep_interval: float = 30.0,
    ) -> None:
        self.settings = settings
        self.store = store
        self.tick = tick
        self.node_grace = node_grace
        self.links: dict[str, NodeLink] = {}
        self.inflight: dict[str, dict[str, Attempt]] = {}  # node -> key -> attempt
        self.last_assigned: dict[str, float] = {}  # node -> monotonic time of its last task
        self._wake = asyncio.Event()
        self._look_asked = True  # something may have changed in the store: read it next turn
        self._looked_at = 0.0  # monotonic time the loop last read jobs, nodes and schedules
        self._exits_unlooked = False  # tasks finished since then
        self._background: set[asyncio.Task[Any]] = set()
        self.ctx = Context(
            store, settings, self.links, self.inflight, Outbox(), self.spawn_background, self.wake
        )
        ctx = self.ctx
        self.job_tasks = JobTasks(ctx)
        self.multi = MultiInstance(ctx)
        self.events = TaskEvents(ctx, run_finished=self.multi.finish)
        self.lifecycle = Lifecycle(ctx, self.job_tasks.releases_done, self.exited)
        self.retention = RetentionSweep(ctx, sweep_interval)
        self.node_users = NodeUserSweep(ctx, sweep_interval)
        self.calls = TaskCalls(ctx)
        self.schedules = ScheduleRunner(ctx)
        self.auto_pools = AutoPoolSweep(store)
        self.autoscaler = AutoScaler(ctx)
        self.pool_sizing = PoolSizing(ctx)
        self.node_ops = NodeOps(
            ctx, self._end_for_node, self._forget_link, removed=self.pool_sizing.node_removed
        )
        self.collector = Collector(settings, self.inflight, self._collected)

    def wake(self) -> None:
        """Run the next turn of the loop now rather than at the next tick, and read the
        store's jobs, nodes and schedules in it: the store changed. (Node events only set
        ``_wake``: they need the queue read, not the rest.)"""
        self._look_asked = True
        self._wake.set()

    # -- main loop --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then close every link (tasks keep running on nodes)."""
        self._load_inflight()
        self.schedules.start()
        listener = self._listen_for_writes()
        control = ControlServer.of(self.settings, self.store, self.links)  # warm fleet exec
        await control.start()
        log.info(
            "controller started (%d attempts in flight)",
            sum(len(a) for a in self.inflight.values()),
        )
        try:
            failures, idle = 0, self.tick
            while not stop.is_set():
                woken, asked = self._wake.is_set(), self._look_asked
                self._wake.clear()  # a wake during the turn runs the next one at once
                self._look_asked = False
                try:
                    busy = await self._turn(woken, asked) or woken
                    failures = 0
                    # Idle turns come less and less often; any work, or a wake, resets that.
                    idle = self.tick if busy else min(idle * 1.5, IDLE_TICK_MAX)
                    delay = idle
                except FleetError as exc:  # e.g. the database is unreachable or its disk full
                    failures += 1
                    delay = min(TURN_RETRY_MAX, self.tick * 2**failures)
                    log.error("controller: %s (%s); retrying in %.1f s", exc, exc.code, delay)
                metrics.end_turn()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
        finally:
            await control.close()
            if listener is not None:
                asyncio.get_running_loop().remove_reader(listener.fileno())
                listener.close()
            self.schedules.stop()
            await self._shutdown()
            log.info("controller stopped")

    def _listen_for_writes(self) -> WakeListener | None:
        """Wake the loop whenever another process (the CLI) writes to the store, instead
        of waiting for the next idle tick; None when the store cannot tell."""
        self.store.wake_controller = False  # its own writes need no wake-up
        try:
            listener = self.store.wake_listener()
        except (FleetError, OSError) as exc:
            log.warning("controller: not woken by CLI writes (%s); polling instead", exc)
            return None

        def readable() -> None:
            try:
                listener.drain()
            except Exception as exc:  # e.g. PostgreSQL restarted: poll from now on
                log.warning("controller: lost the wake-up channel (%s); polling instead", exc)
                asyncio.get_running_loop().remove_reader(listener.fileno())
            self.wake()

        asyncio.get_running_loop().add_reader(listener.fileno(), readable)
        return listener

    async def _turn(self, woken: bool, asked: bool) -> bool:
        """Run one turn of the loop; return whether it found anything to do. The store's
        jobs, nodes and schedules are read when a write asked for it (``asked``), shortly
        after tasks finished, or every LOOK_INTERVAL; the queue when anything woke the loop
        or events were applied. An idle loop does not poll."""
        now = time.monotonic()
        since = now - self._looked_at
        exits = self._exits_unlooked or bool(self.ctx.outbox.finished)
        look = asked or since >= LOOK_INTERVAL or (exits and since >= LOOK_AFTER_EXITS)
        self._exits_unlooked = exits and not look
        if look:
            self._looked_at = now
            self._sync_links()
            self.node_ops.tick()
            self.autoscaler.tick()  # a new target is acted on by pool sizing at once
            self.pool_sizing.tick()
            self.lifecycle.tick()
            self.schedules.tick()  # its timers wake the loop
        self._requeue_lost_nodes()
        self.retention.tick()
        self.node_users.tick()
        retired = self.auto_pools.tick()
        applied = self.events.apply()
        self.events.release_dependents()
        placed = await self._schedule() if woken or look or applied else False
        return retired or applied or placed

    async def _shutdown(self) -> None:
        """Cancel background work and stop every link, within SHUTDOWN_LIMIT seconds whatever
        the nodes do (a link cuts the connection of a node that does not answer)."""
        waiting = list(self._background)
        for task in waiting:
            task.cancel()
        waiting += [asyncio.create_task(link.stop()) for link in self.links.values()]
        if waiting:
            done, late = await asyncio.wait(waiting, timeout=SHUTDOWN_LIMIT)
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: a node dropping mid-shutdown is no news
            if late:
                log.warning("shutdown: %d tasks still wait on nodes; leaving them", len(late))

    def spawn_background(self, coro: Any) -> None:
        """Run ``coro`` beside the loop. Each background step records its own outcome; an
        exception that escapes one anyway is logged here, never lost."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("controller: a background step failed", exc_info=exc)

    def _load_inflight(self) -> None:
        with self.store.read() as s:
            rows = s.exec(select(Task).where(col(Task.attempt_state).is_not(None))).all()
        for t in rows:
            if t.node_id is None:
                continue
            att = Attempt(
                t.pk or 0,
                t.job_id,
                t.id,
                t.attempt,
                t.node_id,
                t.required_slots,
                output_files=t.spec.get("outputFiles") or [],
            )
            self.inflight.setdefault(t.node_id, {})[att.key] = att

    def _sync_links(self) -> None:
        with self.store.read() as s:
            nodes = s.exec(
                select(Node.id)
                .join(Pool, col(Pool.id) == col(Node.pool_id))
                .where(Pool.state == PoolState.ACTIVE)
            ).all()
        wanted = set(nodes) - self.node_ops.busy  # an operation holds these
        for node_id in wanted - self.links.keys():
            link = NodeLink(
                node_id,
                self.store,
                self.settings,
                self._node_ready,
                self._node_lost,
                self._agent_event,
            )
            self.links[node_id] = link
            link.start()
        for node_id in self.links.keys() - wanted:
            link = self.links.pop(node_id)
            self.spawn_background(self._shutdown_link(link))

    async def _forget_link(self, node_id: str) -> None:
        """Close the link to ``node_id`` and drop it (a node operation takes the node)."""
        link = self.links.pop(node_id, None)
        if link is not None:
            await self._shutdown_link(link)

    def _end_for_node(self, att: Attempt, how: str) -> None:
        """End an attempt for a node operation: requeued, or completed as terminated."""
        if how == "requeue":
            self.lifecycle.end(att, requeue=True)
        else:
            self.lifecycle.end(att, reason=NODE_OPERATION_ENDED)

    async def _shutdown_link(self, link: NodeLink) -> None:
        try:
            if link.agent is not None:
                with contextlib.suppress(FleetError):
                    await link.agent.request("shutdown", timeout=5)
        finally:
            await link.stop()  # also when cancelled: the link must not outlive the controller

    # -- node events ------------------------------------------------------------------

    async def _node_ready(self, link: NodeLink) -> None:
        """Reconcile what this node runs with what the store says it runs."""
        attempts = list(self.inflight.get(link.node_id, {}).values())
        if link.boot_id_changed:
            log.warning("node %s rebooted: requeueing %d tasks", link.node_id, len(attempts))
            self.ctx.outbox.back_to_queue.extend((a, True) for a in attempts)
        elif attempts and link.agent is not None:
            result = await link.agent.request(
                "status",
                tasks=[
                    {"key": a.key, "taskDir": a.task_dir, "attempt": a.attempt} for a in attempts
                ],
            )
            by_key = {a.key: a for a in attempts}
            for item in result.get("tasks", []):
                att = by_key.get(item.get("key"))
                if att is None:
                    continue
                state = str(item.get("state"))
                action = rules.on_return(state, state == "missing" and self._was_started(att))
                if action == "collect":
                    self.exited(link, att, item.get("exit") or {})
                elif action in ("requeue", "resend"):
                    if att.key not in self.multi.runs:  # started by a controller before this one
                        with self.store.session() as s:
                            nodes = self.multi.orphaned(s, att)
                        for other in nodes - {link.node_id}:
                            if (peer := self.links.get(other)) is not None and peer.ready:
                                await self._kill_stale(peer)
                    self.ctx.outbox.back_to_queue.append((att, action == "requeue"))
        await self.job_tasks.reconcile(link)
        await self._kill_stale(link)
        with self.store.session() as s:  # the node came back idle: it is running what it runs
            self.events.update_node_busy(s, [link.node_id], time.time())
        self._wake.set()

    async def _kill_stale(self, link: NodeLink) -> None:
        """Kill attempts that were requeued off this node while it was lost."""
        with self.store.session() as s:
            stale = list(s.exec(select(StaleAttempt).where(StaleAttempt.node_id == link.node_id)))
        done = []
        for row in stale:
            if link.agent is None:
                return
            try:
                result = await link.agent.request(
                    "kill", key=row.key, taskDir=row.task_dir, attempt=row.attempt
                )
            except AgentError:
                result = {}  # the agent refused (e.g. a bad path): nothing to kill
            except FleetError:
                return  # the node dropped again: try on its next return
            if result.get("killed"):
                log.warning(
                    "node %s: killed stale attempt %d of %s", link.node_id, row.attempt, row.key
                )
            done.append((row.node_id, row.key, row.attempt))
        with self.store.session() as s:
            for pk in done:
                gone = s.get(StaleAttempt, pk)
                if gone is not None:
                    s.delete(gone)

    def _root(self, node_id: str) -> str:
        link = self.links.get(node_id)
        return str(link.agent.hello.get("root", "")) if link and link.agent else ""

    def _was_started(self, att: Attempt) -> bool:
        with self.store.read() as s:
            row = s.get(Task, att.pk)
            return row is not None and row.attempt_state == AttemptState.RUNNING

    def _node_lost(self, link: NodeLink) -> None:
        self._wake.set()

    def _agent_event(self, link: NodeLink, msg: dict[str, Any]) -> None:
        if msg.get("event") == "call":
            self.calls.handle(link, msg)
            return
        if "@" in str(msg.get("key")):
            self.multi.on_event(msg)
            return
        if "#" in str(msg.get("key")):
            self.job_tasks.on_event(link, msg)
            return
        att = self.inflight.get(link.node_id, {}).get(str(msg.get("key")))
        if att is None or att.attempt != msg.get("attempt"):
            return  # a stale attempt's late exit
        self.exited(link, att, msg.get("exit") or {}, msg.get("files"))

    def exited(
        self,
        link: NodeLink,
        att: Attempt,
        record: dict[str, Any],
        files: dict[str, str | None] | None = None,
    ) -> None:
        """Collect an attempt that exited (``files``: what came inline with its event)."""
        if att.collecting:
            return
        att.collecting = True
        att.exit_seen_at = time.time()
        if not self.collector.collect_inline(att, files):
            self.spawn_background(self.collector.collect(link, att, record, files))
        self._wake.set()  # its slots are free: schedule now

    def _collected(
        self, att: Attempt, record: dict[str, Any], files: dict[str, bytes] | None
    ) -> None:
        self.ctx.outbox.finished.append((att, record))
        if files:
            self.ctx.outbox.outputs[att.pk, att.attempt] = files
        self._wake.set()

    def _requeue_lost_nodes(self) -> None:
        now = time.time()
        for node_id, link in self.links.items():
            lost_for = None if link.ready or link.lost_at is None else now - link.lost_at
            if lost_for is None or not rules.node_lost(lost_for, self.node_grace):
                continue
            attempts = list(self.inflight.get(node_id, {}).values())
            if attempts:
                log.warning(
                    "node %s lost for %.0f s: requeueing %d tasks",
                    node_id,
                    lost_for,
                    len(attempts),
                )
                self.ctx.outbox.back_to_queue.extend((a, True) for a in attempts)

    # -- applying events in one transaction -----------------------------------------

    async def _schedule(self) -> bool:
        """Place pending tasks on free slots; return whether any was placed."""
        ready = {nid: link for nid, link in self.links.items() if link.ready}
        if not ready:
            return False
        with self.store.read() as s:  # columns only: an idle loop reads 300 nodes a second
            if not queue.any_active_job(s):
                return False
            nodes = s.connection().execute(_READY_NODES, {"ids": list(ready)}).all()
            pools = {
                p.id: p
                for p in s.connection().execute(
                    sa_select(
                        col(Pool.id), col(Pool.task_slots_per_node), col(Pool.node_fill_type)
                    ).where(col(Pool.state) == PoolState.ACTIVE)
                )
            }
        snapshot = []
        for node in nodes:
            pool = pools.get(node.pool_id)
            if pool is None or node.scheduling_state != "enabled":
                continue
            if node.state not in (NodeState.IDLE, NodeState.RUNNING):
                continue
            # An attempt that has exited frees its slots at once, while its output is
            # still being collected.
            used = sum(a.slots for a in self.inflight.get(node.id, {}).values() if not a.collecting)
            snapshot.append(
                scheduler.NodeSlots(
                    node.id,
                    node.pool_id,
                    pool.task_slots_per_node,
                    used,
                    self.last_assigned.get(node.id, 0.0),
                )
            )
        free = sum(n.capacity - n.used for n in snapshot)
        if free <= 0:
            return False
        with self.store.read() as s:
            pending = queue.pending(s, {n.pool_id for n in snapshot}, limit=free * 2)
        if not pending:
            return False
        fill_types = {p.id: p.node_fill_type for p in pools.values()}
        job_room = self._job_room({t.job_id for t in pending})
        avoid = self.job_tasks.excluded_nodes()
        plan = scheduler.plan(snapshot, pending, fill_types, job_room, avoid)
        if plan:
            await self._dispatch(plan, pending, {n.id: n.pool_id for n in snapshot})
        return bool(plan)

    def _job_room(self, job_ids: set[str]) -> dict[str, int]:
        """Return how many more tasks each capped job may start (maxParallelTasks)."""
        with self.store.read() as s:
            caps = {
                j.id: j.spec.get("maxParallelTasks", -1)
                for j in queue.job_specs(s, job_ids).values()
            }
        running: dict[str, int] = {}
        for per_node in self.inflight.values():
            for att in per_node.values():
                running[att.job_id] = running.get(att.job_id, 0) + 1
        return {jid: cap - running.get(jid, 0) for jid, cap in caps.items() if cap and cap > 0}

    async def _dispatch(
        self,
        plan: list[scheduler.Assignment],
        pending: list[scheduler.PendingTask],
        node_pools: dict[str, str],
    ) -> None:
        """Write every assignment ahead as ``dispatching`` in one transaction, then send
        the spawns."""
        now = time.time()
        pks = {(t.job_id, t.task_id): t.seq for t in pending}
        sends = []
        placed: list[Attempt] = []
        try:
            with self.store.session() as s:
                tasks = queue.to_dispatch(s, [pks[a.job_id, a.task_id] for a in plan])
                jobs = queue.job_specs(s, {t.job_id for t in tasks.values()})
                writes = []
                for a in plan:
                    task = tasks.get(pks[a.job_id, a.task_id])
                    link = self.links[a.node_id]
                    root = link.agent.hello.get("root") if link.agent else None
                    if task is None or root is None:
                        continue
                    if task.state != TaskState.ACTIVE or task.attempt_state is not None:
                        continue  # deleted or changed since the snapshot
                    tdir = environment.task_dir(a.job_id, a.task_id)
                    write = {
                        "b_pk": task.pk,
                        "b_attempt": task.attempt,
                        "attempt": task.attempt + 1,
                        "node_id": a.node_id,
                        "pool_id": node_pools[a.node_id],
                        "task_root": f"{root}/{tdir}",
                        "token_hash": task.token_hash,
                        "state": TaskState.ACTIVE,
                    }
                    writes.append(write)
                    att = Attempt(
                        task.pk,
                        a.job_id,
                        a.task_id,
                        write["attempt"],
                        a.node_id,
                        task.required_slots,
                        output_files=task.spec.get("outputFiles") or [],
                        eligible_at=max(
                            task.created_at, task.last_retry_time or 0, task.last_requeue_time or 0
                        ),
                    )
                    self.inflight.setdefault(a.node_id, {})[att.key] = att
                    placed.append(att)
                    env = environment.build(
                        root=root,
                        pool_id=write["pool_id"],
                        node_id=a.node_id,
                        task_dir_rel=tdir,
                        attempt=att.attempt,
                        job_id=a.job_id,
                        task_id=a.task_id,
                        user_env=[
                            *jobs[task.job_id].spec.get("commonEnvironmentSettings", []),
                            *task.spec.get("environmentSettings", []),
                        ],
                    )
                    if task.job_manager:
                        token, write["token_hash"] = task_calls.new_token()
                        env.update(task_calls.client_env(root, token))
                    limit = specs.constraint_seconds(task.spec, "maxWallClockTime")
                    if task.spec.get("multiInstanceSettings"):
                        nodes = [a.node_id, *a.others]
                        roots = {n: self._root(n) for n in nodes}
                        env = self.multi.prepare(
                            s, task.spec, task.required_slots, att, nodes, roots, env
                        )
                        for n in a.others:
                            placed.append(self.inflight[n][f"{att.key}@{nodes.index(n)}"])
                        gate = "multi"
                    else:
                        gate = self.job_tasks.gate(s, jobs[task.job_id], link)
                        if gate == "wait":
                            write["state"] = TaskState.PREPARING
                    io = (
                        task.spec.get("resourceFiles") or [],
                        task.spec.get("userIdentity"),
                        task.spec.get("applicationPackageReferences") or [],
                    )
                    sends.append((gate, link, att, list(_split(task.command_line)), env, limit, io))
                queue.mark_dispatched(s, writes)
                self.events.update_node_busy(s, {a.node_id for a in placed}, now)
        except BaseException:
            for att in placed:  # nothing was written: forget the plan
                self.inflight.get(att.node_id, {}).pop(att.key, None)
            raise
        stamp = time.monotonic()
        for gate, link, att, argv, env, limit, io in sends:
            self.last_assigned[att.node_id] = stamp
            start = functools.partial(self._start, link, att, argv, env, limit, io)
            if gate == "multi":
                self.multi.launch(att, start)
            elif gate == "wait":
                self.job_tasks.hold(att, start)
            else:
                start()

    def _start(
        self,
        link: NodeLink,
        att: Attempt,
        argv: list[str],
        env: dict[str, str],
        limit: float | None,
        io: tuple[list[dict[str, Any]], Any, list[dict[str, str]]],
    ) -> None:
        self.spawn_background(self._send_spawn(link, att, argv, env, limit, *io))

    def _finish_unstarted(self, att: Attempt, code: str, message: str) -> None:
        """Complete an attempt whose command never started, with ``code`` as its failure."""
        att.collecting = True  # nothing ran: there is nothing to collect
        error = {"code": code, "message": message}
        self.ctx.outbox.finished.append((att, {"exitCode": None, "error": error}))
        self._wake.set()

    async def _send_spawn(
        self,
        link: NodeLink,
        att: Attempt,
        argv: list[str],
        env: dict[str, str],
        max_wall_clock: float | None,
        resource_files: list[dict[str, Any]],
        user: dict[str, Any] | None,
        app_refs: list[dict[str, str]],
    ) -> None:
        """Prepare the task on its node (identity, resource files, application packages),
        then spawn it. Failures before the command can start complete the attempt with
        their failureInfo code."""
        if link.agent is None or link.conn is None:
            return  # the node dropped; reconcile on reconnect settles this attempt
        task_root = f"{link.agent.hello.get('root', '')}/{att.task_dir}"
        try:
            if identity.needs_sudo(user, link.login_user) and not link.can_sudo:
                raise RemoteError(
                    f"node {att.node_id}: the login user {link.login_user} cannot run sudo "
                    "without a password, which an admin or named-user task needs",
                    code="UserIdentityError",
                )
            await identity.prepare_workdir(link.conn, user, f"{task_root}/wd", link.login_user)
            if resource_files:
                await task_io.stage(link.conn, self.settings, task_root, resource_files)
            await applications.prepare_task(link, self.settings, self.store, app_refs, env)
        except FleetError as exc:
            if exc.code in outcomes.PRE_PROCESSING or exc.code == "UserAccountError":
                code = "UserIdentityError" if exc.code == "UserAccountError" else exc.code
                self._finish_unstarted(att, code, exc.message)
            elif link.agent is not None and not link.agent.closed.is_set():
                log.warning("task %s: not started on %s: %s", att.key, att.node_id, exc)
                await asyncio.sleep(SPAWN_RETRY_DELAY)
                self.ctx.outbox.back_to_queue.append((att, False))
                self._wake.set()
            return  # else the node dropped: the reconcile on its return settles the attempt
        except Exception as exc:
            failed = internal_error(att, exc, {})["error"]
            self._finish_unstarted(att, failed["code"], failed["message"])
            return
        argv = identity.wrap(user, argv, link.login_user)
        try:
            result = await link.agent.request(
                "spawn",
                key=att.key,
                taskDir=att.task_dir,
                attempt=att.attempt,
                argv=argv,
                env=env,
                maxWallClockSeconds=max_wall_clock,
            )
        except AgentError as exc:
            if exc.code in outcomes.PRE_PROCESSING or exc.code in REFUSED_FOR_GOOD:
                code = "TaskRejectedByNode" if exc.code in REFUSED_FOR_GOOD else exc.code
                error = {"code": code, "message": f"node {att.node_id}: {exc.message}"}
                self.exited(link, att, {"exitCode": None, "error": error})
            else:  # the node's trouble, not the task's: try again, but not in a tight loop
                log.warning("task %s: spawn failed on %s: %s", att.key, att.node_id, exc)
                await asyncio.sleep(SPAWN_RETRY_DELAY)
                self.ctx.outbox.back_to_queue.append((att, False))
            self._wake.set()
            return
        except FleetError as exc:
            log.info("task %s: node %s dropped during spawn: %s", att.key, att.node_id, exc)
            return
        acked = time.time()
        if att.eligible_at:
            metrics.TASK_DISPATCH.add(acked - att.eligible_at)
        self.ctx.outbox.started.append((att, epoch(result.get("startTime")) or acked))
        self._wake.set()
