"""Dispatch: placing pending tasks on free slots and starting them on their nodes.

Each turn the controller fills the free slots of ready nodes in three steps:
:meth:`Dispatch.plan` reads the queue (fleet/queue.py) and asks the pure scheduler for a
plan (fleet/scheduler.py); :meth:`Dispatch.write_ahead` writes every assignment ahead as
``dispatching``, in the transaction that also records the turn's task events; once that
commits, :meth:`Dispatch.send` prepares each task on its node (user identity, resource
files, application packages) and sends its spawn. A spawn the agent confirmed goes to the
outbox as a start; one that could never run completes with its failureInfo code.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shlex
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from fleet import (
    applications,
    environment,
    identity,
    metrics,
    outcomes,
    queue,
    scheduler,
    specs,
    task_calls,
    task_io,
)
from fleet.attempts import Attempt, epoch, internal_error
from fleet.context import Context
from fleet.domain import NodeState, PoolState, TaskState
from fleet.errors import AgentError, FleetError, RemoteError
from fleet.node_link import NodeLink
from fleet.sql import Sql, Statement

log = logging.getLogger(__name__)

SPAWN_RETRY_DELAY = 2.0
#: Spawn refusals that say the task itself can never run: it completes instead of retrying.
REFUSED_FOR_GOOD = frozenset({"BadRequest", "BadPath"})

#: What placement reads of the nodes with a ready link, and of the pools.
_READY_NODES = Statement(
    "SELECT id, pool_id, state, scheduling_state FROM nodes WHERE id IN :ids AND operation IS NULL"
)
_ACTIVE_POOLS = Statement(
    "SELECT id, task_slots_per_node, node_fill_type FROM pools WHERE state = :active"
)


@functools.lru_cache(maxsize=4096)
def _split(command_line: str) -> tuple[str, ...]:
    """A command line's argv (the tasks of a job often share one)."""
    return tuple(shlex.split(command_line))


class Plan(NamedTuple):
    """Where the scheduler would start which pending tasks, with what placement read:
    each pending task's primary key (by job and task id), the active jobs and the pool of
    each node."""

    assignments: list[scheduler.Assignment]
    pks: dict[tuple[str, str], int]
    jobs: dict[str, Any]
    node_pools: dict[str, str]


class Spawn(NamedTuple):
    """One attempt's start on its node: what to prepare there, then what to spawn."""

    link: NodeLink
    att: Attempt
    argv: list[str]
    env: dict[str, str]
    max_wall_clock: float | None
    resource_files: list[dict[str, Any]]
    user: dict[str, Any] | None
    app_refs: list[dict[str, str]]


class Placement(NamedTuple):
    """A plan written ahead: the attempts it put in flight (a multi-instance task's
    subtasks included) and what to send once the write commits, each behind its gate
    (``multi``: a multi-instance run's other nodes; ``wait``: the job's prep task)."""

    placed: list[Attempt]
    sends: list[tuple[str, Spawn]]


class PrepGate(Protocol):
    """What dispatch asks of the job prep tasks (fleet/job_tasks.py)."""

    def excluded_nodes(self, db: Sql) -> dict[str, set[str]]: ...
    def gate(self, s: Any, job: Any, link: NodeLink) -> str: ...
    def hold(self, att: Attempt, start: Callable[[], None]) -> None: ...


class MultiRuns(Protocol):
    """What dispatch asks of the multi-instance runs (fleet/multi_instance.py)."""

    def prepare(
        self,
        s: Any,
        spec: dict[str, Any],
        required_slots: int,
        att: Attempt,
        nodes: list[str],
        roots: dict[str, str],
        env: dict[str, str],
    ) -> dict[str, str]: ...
    def launch(self, att: Attempt, start_primary: Callable[[], None]) -> None: ...


class Dispatch:
    """Places and starts tasks. Needs what gates a start (the job's prep task on the node,
    a multi-instance run's other nodes), what to do with an attempt that ended at once
    (``exited``: collect it), and how to run the next turn of the loop (``nudge``)."""

    def __init__(
        self,
        ctx: Context,
        prep: PrepGate,
        multi: MultiRuns,
        exited: Callable[[NodeLink, Attempt, dict[str, Any]], None],
        nudge: Callable[[], None],
    ) -> None:
        self.c = ctx
        self.prep = prep
        self.multi = multi
        self._exited = exited
        self._nudge = nudge
        self.last_assigned: dict[str, float] = {}  # node -> monotonic time of its last task

    def plan(self, db: Sql) -> Plan | None:
        """Read the free slots and the queue, and return the scheduler's plan for them
        (None when there is nothing to place)."""
        ready = {nid for nid, link in self.c.links.items() if link.ready}
        if not ready or not queue.any_active_job(db):
            return None
        nodes = db.rows(_READY_NODES, {"ids": list(ready)})  # columns only: cheap when idle
        pools = {p.id: p for p in db.rows(_ACTIVE_POOLS, {"active": PoolState.ACTIVE})}
        snapshot = self._free_slots(nodes, pools)
        free = sum(n.capacity - n.used for n in snapshot)
        if free <= 0:
            return None
        jobs = queue.active_jobs(db, {n.pool_id for n in snapshot})
        pending = queue.pending(db, jobs, limit=free * 2)
        if not pending:
            return None
        caps = {j.id: j.spec.get("maxParallelTasks", -1) for j in jobs}
        avoid = self.prep.excluded_nodes(db)
        fill_types = {p.id: p.node_fill_type for p in pools.values()}
        assignments = scheduler.plan(snapshot, pending, fill_types, self._job_room(caps), avoid)
        if not assignments:
            return None
        return Plan(
            assignments,
            {(t.job_id, t.task_id): t.seq for t in pending},
            {j.id: j for j in jobs},
            {n.id: n.pool_id for n in snapshot},
        )

    def _free_slots(self, nodes: list[Any], pools: dict[str, Any]) -> list[scheduler.NodeSlots]:
        """Return the schedulable ``nodes`` with their slots and how many are in use."""
        snapshot = []
        for node in nodes:
            pool = pools.get(node.pool_id)
            if pool is None or node.scheduling_state != "enabled":
                continue
            if node.state not in (NodeState.IDLE, NodeState.RUNNING):
                continue
            # An attempt that has exited frees its slots at once, while its output is
            # still being collected.
            inflight = self.c.inflight.get(node.id, {}).values()
            used = sum(a.slots for a in inflight if not a.collecting)
            snapshot.append(
                scheduler.NodeSlots(
                    node.id,
                    node.pool_id,
                    pool.task_slots_per_node,
                    used,
                    self.last_assigned.get(node.id, 0.0),
                )
            )
        return snapshot

    def _job_room(self, caps: dict[str, int]) -> dict[str, int]:
        """Return how many more tasks each capped job may start (maxParallelTasks ``caps``)."""
        running: dict[str, int] = {}
        for per_node in self.c.inflight.values():
            for att in per_node.values():
                running[att.job_id] = running.get(att.job_id, 0) + 1
        return {jid: cap - running.get(jid, 0) for jid, cap in caps.items() if cap and cap > 0}

    def write_ahead(self, s: Any, plan: Plan) -> Placement:
        """Write every assignment of ``plan`` ahead as ``dispatching`` in the transaction of
        ``s``, and put its attempts in flight. If the transaction then fails,
        :meth:`forget` the placement; once it commits, :meth:`send` it."""
        placed: list[Attempt] = []
        writes, sends = [], []
        try:
            db = Sql.of(s)
            pks = [plan.pks[a.job_id, a.task_id] for a in plan.assignments]
            tasks = queue.to_dispatch(db, pks)
            for a, pk in zip(plan.assignments, pks, strict=True):
                assigned = self._assign(s, plan, a, tasks.get(pk), placed)
                if assigned is not None:
                    writes.append(assigned[0])
                    sends.append(assigned[1])
            queue.mark_dispatched(db, writes)
        except BaseException:
            self.forget(Placement(placed, []))
            raise
        return Placement(placed, sends)

    def _assign(
        self, s: Any, plan: Plan, a: scheduler.Assignment, task: Any, placed: list[Attempt]
    ) -> tuple[dict[str, Any], tuple[str, Spawn]] | None:
        """Return the write-ahead of one assignment and what to send once it commits, its
        attempts put in flight and added to ``placed``; None if the task changed since
        the plan was made or its node dropped."""
        link = self.c.links[a.node_id]
        root = link.agent.hello.get("root") if link.agent else None
        if task is None or root is None:
            return None
        if task.state != TaskState.ACTIVE or task.attempt_state is not None:
            return None  # deleted or changed since the snapshot
        tdir = environment.task_dir(a.job_id, a.task_id)
        write = {
            "b_pk": task.pk,
            "b_attempt": task.attempt,
            "attempt": task.attempt + 1,
            "node_id": a.node_id,
            "pool_id": plan.node_pools[a.node_id],
            "task_root": f"{root}/{tdir}",
            "token_hash": task.token_hash,
            "state": TaskState.ACTIVE,
        }
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
        self.c.inflight.setdefault(a.node_id, {})[att.key] = att
        placed.append(att)
        job = plan.jobs[task.job_id]
        env = environment.task_env(  # over the node's own, which its agent holds
            root=root,
            pool_id=write["pool_id"],
            task_dir_rel=tdir,
            attempt=att.attempt,
            job_id=a.job_id,
            task_id=a.task_id,
            user_env=[
                *job.spec.get("commonEnvironmentSettings", []),
                *task.spec.get("environmentSettings", []),
            ],
        )
        if task.job_manager:
            token, write["token_hash"] = task_calls.new_token()
            env.update(task_calls.client_env(root, token))
        if task.spec.get("multiInstanceSettings"):
            nodes = [a.node_id, *a.others]
            roots = {n: self._root(n) for n in nodes}
            env = self.multi.prepare(s, task.spec, task.required_slots, att, nodes, roots, env)
            placed.extend(self.c.inflight[n][f"{att.key}@{nodes.index(n)}"] for n in a.others)
            gate = "multi"
        else:
            gate = self.prep.gate(s, job, link)
            if gate == "wait":
                write["state"] = TaskState.PREPARING
        spawn = Spawn(
            link,
            att,
            list(_split(task.command_line)),
            env,
            specs.constraint_seconds(task.spec, "maxWallClockTime"),
            task.spec.get("resourceFiles") or [],
            task.spec.get("userIdentity"),
            task.spec.get("applicationPackageReferences") or [],
        )
        return write, (gate, spawn)

    def forget(self, placement: Placement) -> None:
        """Take a placement's attempts out of flight: its transaction failed."""
        for att in placement.placed:
            self.c.inflight.get(att.node_id, {}).pop(att.key, None)

    def send(self, placement: Placement) -> None:
        """Start the attempts of a committed placement (or hold them at their gate)."""
        stamp = time.monotonic()
        for gate, spawn in placement.sends:
            self.last_assigned[spawn.att.node_id] = stamp
            start = functools.partial(self._start, spawn)
            if gate == "multi":
                self.multi.launch(spawn.att, start)
            elif gate == "wait":
                self.prep.hold(spawn.att, start)
            else:
                start()

    def _start(self, sp: Spawn) -> None:
        if sp.resource_files or sp.app_refs or identity.needs_sudo(sp.user, sp.link.login_user):
            self.c.spawn(self._prepare_and_spawn(sp))
        else:  # nothing to prepare on the node (most tasks): no coroutine, no wait
            applications.add_env(sp.env, sp.link.app_env)
            self._spawn(sp)

    def _finish_unstarted(self, att: Attempt, code: str, message: str) -> None:
        """Complete an attempt whose command never started, with ``code`` as its failure."""
        att.collecting = True  # nothing ran: there is nothing to collect
        error = {"code": code, "message": message}
        self.c.outbox.finished.append((att, {"exitCode": None, "error": error}))
        self._nudge()

    async def _prepare_and_spawn(self, sp: Spawn) -> None:
        """Prepare the task on its node (identity, resource files, application packages),
        then spawn it. Failures before the command can start complete the attempt with
        their failureInfo code."""
        link, att, user = sp.link, sp.att, sp.user
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
            if sp.resource_files:
                await task_io.stage(link.conn, self.c.settings, task_root, sp.resource_files)
            await applications.prepare_task(
                link, self.c.settings, self.c.store, sp.app_refs, sp.env
            )
        except FleetError as exc:
            if exc.code in outcomes.PRE_PROCESSING or exc.code == "UserAccountError":
                code = "UserIdentityError" if exc.code == "UserAccountError" else exc.code
                self._finish_unstarted(att, code, exc.message)
            elif link.agent is not None and not link.agent.closed.is_set():
                log.warning("task %s: not started on %s: %s", att.key, att.node_id, exc)
                self._retry_later(att)
            return  # else the node dropped: the reconcile on its return settles the attempt
        except Exception as exc:
            failed = internal_error(att, exc, {})["error"]
            self._finish_unstarted(att, failed["code"], failed["message"])
            return
        self._spawn(sp)

    def _spawn(self, sp: Spawn) -> None:
        """Send the spawn; :meth:`_spawned` handles its answer."""
        link, att = sp.link, sp.att
        if link.agent is None:
            return  # the node dropped; reconcile on reconnect settles this attempt
        try:
            link.agent.send(
                "spawn",
                functools.partial(self._spawned, link, att),
                key=att.key,
                taskDir=att.task_dir,
                attempt=att.attempt,
                argv=identity.wrap(sp.user, sp.argv, link.login_user),
                env=sp.env,
                maxWallClockSeconds=sp.max_wall_clock,
            )
        except Exception as exc:  # not sent: the task completes with the error
            failed = internal_error(att, exc, {})["error"]
            self._finish_unstarted(att, failed["code"], failed["message"])

    def _spawned(
        self,
        link: NodeLink,
        att: Attempt,
        result: dict[str, Any] | None,
        exc: FleetError | None,
    ) -> None:
        """A started spawn goes to the outbox as a start; a refused one completes (the
        task can never run) or goes back to the queue (the node's trouble)."""
        if isinstance(exc, AgentError):
            if exc.code in outcomes.PRE_PROCESSING or exc.code in REFUSED_FOR_GOOD:
                code = "TaskRejectedByNode" if exc.code in REFUSED_FOR_GOOD else exc.code
                error = {"code": code, "message": f"node {att.node_id}: {exc.message}"}
                self._exited(link, att, {"exitCode": None, "error": error})
                self._nudge()
            else:  # the node's trouble, not the task's: try again, but not in a tight loop
                log.warning("task %s: spawn failed on %s: %s", att.key, att.node_id, exc)
                self._retry_later(att)
            return
        if exc is not None or result is None:  # Unreachable: the channel closed
            log.info("task %s: node %s dropped during spawn: %s", att.key, att.node_id, exc)
            return  # the reconcile on the node's return settles the attempt
        acked = time.time()
        if att.eligible_at:
            metrics.TASK_DISPATCH.add(acked - att.eligible_at)
        self.c.outbox.started.append((att, epoch(result.get("startTime")) or acked))
        self._nudge()

    def _retry_later(self, att: Attempt) -> None:
        """Send ``att`` back to the queue after SPAWN_RETRY_DELAY (not in a tight loop)."""

        def back() -> None:
            self.c.outbox.back_to_queue.append((att, False))
            self._nudge()

        asyncio.get_running_loop().call_later(SPAWN_RETRY_DELAY, back)

    def _root(self, node_id: str) -> str:
        link = self.c.links.get(node_id)
        return str(link.agent.hello.get("root", "")) if link and link.agent else ""
