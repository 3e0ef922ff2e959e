"""The controller: the reconcile loop that places tasks on nodes and records what they did.

Each turn of the loop: open links to nodes that need one, requeue the tasks of nodes
lost for longer than the grace period, then, in one transaction, write the events that
came in (starts, exits, requeues), release the tasks they unblock and write ahead the
placements on free slots (fleet/dispatch.py: a plan from the scheduler, written as
``dispatching``); once that commits, send the spawns. See DESIGN.md, "Reliability model".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sqlmodel import col, select

from fleet import metrics, rules
from fleet.attempts import Attempt
from fleet.autoscale import AutoScaler
from fleet.collection import Collector
from fleet.context import Context, Outbox
from fleet.control_server import ControlServer
from fleet.dispatch import Dispatch
from fleet.domain import AttemptState, PoolState
from fleet.errors import AgentError, FleetError
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
from fleet.sql import Sql, Statement
from fleet.store import Store, WakeListener
from fleet.tables import StaleAttempt, Task
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
#: While tasks finish, the jobs (not nodes or schedules) are read again this often (not
#: every turn: under load a turn comes every few milliseconds), so a job's end follows its
#: last task closely.
LOOK_AFTER_EXITS = 0.25

#: The nodes of active pools: each gets a link.
_LINKED_NODES = Statement(
    "SELECT nodes.id FROM nodes JOIN pools ON pools.id = nodes.pool_id WHERE pools.state = :active"
)

#: Why a task ended by a node operation with ``terminate`` ended.
NODE_OPERATION_ENDED = "the task was terminated by an operation on its node"
#: Seconds shutdown waits for background work and links (each bounds itself sooner).
SHUTDOWN_LIMIT = 6.0


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
        self._wake = asyncio.Event()
        self._look_asked = True  # something may have changed in the store: read it next turn
        self._looked_at = 0.0  # monotonic time the loop last read jobs, nodes and schedules
        self._jobs_looked_at = 0.0  # and its jobs alone (lifecycle)
        self._exits_unlooked = False  # tasks finished since the jobs were last read
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
        self.dispatch = Dispatch(
            ctx,
            self.job_tasks,
            self.multi,
            self.exited,
            self._wake.set,
        )

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
        jobs, nodes and schedules are read when a write asked for it (``asked``) or every
        LOOK_INTERVAL; the jobs alone shortly after tasks finished (only a job's step can
        follow from an exit); the queue when anything woke the loop or events were
        applied. An idle loop does not poll."""
        now = time.monotonic()
        exits = self._exits_unlooked or bool(self.ctx.outbox.finished)
        look = asked or now - self._looked_at >= LOOK_INTERVAL
        jobs = look or (exits and now - self._jobs_looked_at >= LOOK_AFTER_EXITS)
        self._exits_unlooked = exits and not jobs
        if look:  # one read transaction, then each piece acts on what it read
            self._looked_at = now
            with self.store.read() as s:
                db = Sql.of(s)
                nodes = {row.id for row in db.rows(_LINKED_NODES, {"active": PoolState.ACTIVE})}
                operations = self.node_ops.read(db)
                autoscaled = self.autoscaler.read(db)
                sizing = self.pool_sizing.read(db)
                schedules_due = self.schedules.read(db)
            self._sync_links(nodes)
            self.node_ops.tick(operations)
            self.autoscaler.tick(autoscaled)  # a new target wakes the loop: sized next turn
            self.pool_sizing.tick(sizing)
        if jobs:
            self._jobs_looked_at = now
            self.lifecycle.tick()
        if look:
            self.schedules.tick(schedules_due)  # its timers wake the loop
        self._requeue_lost_nodes()
        self.retention.tick()
        self.node_users.tick()
        retired = self.auto_pools.tick()
        applied, placed = self._record_and_place(woken or jobs)
        return retired or applied or placed

    def _record_and_place(self, placing: bool) -> tuple[bool, bool]:
        """Write the turn's task events, release the tasks they unblock and write ahead
        the placements on free slots (looked for when ``placing`` or events were
        written), all in one transaction: one commit, an fsync on SQLite. Then start
        the placed tasks. Return whether there were events and placements."""
        ev = self.events.take()
        if not (ev or placing or self.events.dependents_due()):
            return False, False
        placement = None
        try:
            with self.store.session() as s:
                now = time.time()
                touched = self.events.write(s, ev, now)
                self.events.release_dependents(s)
                plan = self.dispatch.plan(Sql.of(s)) if placing or ev else None
                if plan is not None:
                    placement = self.dispatch.write_ahead(s, plan)
                    touched.update(att.node_id for att in placement.placed)
                self.events.update_node_busy(Sql.of(s), touched, now)
        except BaseException:  # nothing was committed
            if placement is not None:  # first: a new attempt may share an old one's key
                self.dispatch.forget(placement)
            self.events.restore(ev)
            raise
        self.events.committed(ev)
        if placement is not None:
            self.dispatch.send(placement)
        return bool(ev), placement is not None

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

    def _sync_links(self, nodes: set[str]) -> None:
        """Open a link to each of ``nodes`` (of active pools) that has none, and close the
        others' links."""
        wanted = nodes - self.node_ops.busy  # an operation holds these
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
            self.events.update_node_busy(Sql.of(s), [link.node_id], time.time())
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
