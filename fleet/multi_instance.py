"""Multi-instance tasks: nodes allocated together, a coordination command on each, then the primary.

The scheduler gives such a task ``numberOfInstances`` distinct nodes at once. Each
instance runs ``coordinationCommandLine`` on its node (agent key ``J/T@i``, in the
task directory's ``coordination/``); when every one of them has exited 0, the
primary (instance 0) runs the task's command line, and its exit ends every
instance and completes the task. A failed coordination command fails the task.
The instances are recorded in the ``subtasks`` table (``fleet task subtasks``).

A controller restart during the coordination phase sends the task back to the
queue (its instances are started again, after the old coordination commands are
killed: they are recorded as stale attempts); one during the primary's run
reattaches the primary like any task.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, select

from fleet import environment, outcomes, task_io
from fleet.attempts import Attempt, epoch
from fleet.errors import AgentError, FleetError, failure_of
from fleet.tables import Host, StaleAttempt, Subtask

if TYPE_CHECKING:
    from fleet.context import Context

log = logging.getLogger(__name__)

#: Pauses before giving up on a coordination spawn refused because an orphan (killed with
#: a TERM, then a KILL 3 s later) still runs in its directory.
ORPHAN_WAITS = (1.0, 1.0, 2.0, 2.0, 4.0)


def sub_key(key: str, instance: int) -> str:
    """Return the agent key of one instance's coordination command ('@' is never in an id)."""
    return f"{key}@{instance}"


@dataclass
class Run:
    """One multi-instance attempt in flight."""

    primary: Attempt
    nodes: list[str]
    coordination: str
    env: dict[str, dict[str, str]]  # node -> environment of its instance
    common_files: list[dict[str, Any]] = field(default_factory=list)
    start_primary: Callable[[], None] | None = None
    subs: dict[int, Attempt] = field(default_factory=dict)
    waiting: set[int] = field(default_factory=set)


class MultiInstance:
    """The controller's handling of multi-instance tasks."""

    def __init__(self, ctx: Context) -> None:
        self.c = ctx
        self.runs: dict[str, Run] = {}

    def prepare(
        self,
        s: Session,
        spec: dict[str, Any],
        required_slots: int,
        att: Attempt,
        nodes: list[str],
        roots: dict[str, str],
        env: dict[str, str],
    ) -> dict[str, str]:
        """Register the task's instances (inside the dispatch transaction) and return the
        variables the primary gets on top of ``env``."""
        settings = spec["multiInstanceSettings"]
        addresses = [h.address if (h := s.get(Host, n)) else n for n in nodes]
        shared = {
            "HOST_LIST": ",".join(addresses),
            "NODE_LIST": ";".join(addresses),
            "NODE_IDS": ",".join(nodes),
            "MASTER_NODE": addresses[0],
        }
        run = Run(
            att,
            nodes,
            settings["coordinationCommandLine"],
            {},
            settings.get("commonResourceFiles") or [],
        )
        now = time.time()
        for i, node in enumerate(nodes):
            per_node = dict(env)
            per_node.update(
                environment.twins(
                    {
                        **shared,
                        "IS_CURRENT_NODE_MASTER": "true" if i == 0 else "false",
                        "TASK_SHARED_DIR": f"{roots[node]}/{att.task_dir}",
                        "NODE_ID": node,
                        "NODE_ROOT_DIR": roots[node],
                    }
                )
            )
            run.env[node] = per_node
            sub = Attempt(
                att.pk, att.job_id, att.task_id, att.attempt, node, required_slots if i else 0
            )
            run.subs[i] = sub
            if i:
                self.c.inflight.setdefault(node, {})[sub_key(att.key, i)] = sub
            s.merge(
                Subtask(
                    job_id=att.job_id,
                    task_id=att.task_id,
                    instance=i,
                    attempt=att.attempt,
                    node_id=node,
                    state="running",
                    start_time=now,
                )
            )
        run.waiting = set(run.subs)
        self.runs[att.key] = run
        return run.env[nodes[0]]

    def launch(self, att: Attempt, start_primary: Callable[[], None]) -> None:
        """Start every instance's coordination command; the primary waits for all of them."""
        run = self.runs.get(att.key)
        if run is None:
            return
        run.start_primary = start_primary
        for i, sub in run.subs.items():
            self.c.spawn(self._spawn(run, i, sub))

    async def _spawn(self, run: Run, i: int, sub: Attempt) -> None:
        link = self.c.links.get(sub.node_id)
        if link is None or link.agent is None:
            self._coordinated(
                run,
                i,
                {
                    "exitCode": None,
                    "error": {
                        "code": "NodeUnreachable",
                        "message": f"node {sub.node_id} is not connected",
                    },
                },
            )
            return
        try:
            if run.common_files and link.conn is not None:
                root = link.agent.hello.get("root", "")
                await task_io.stage(
                    link.conn,
                    self.c.settings,
                    f"{root}/{run.primary.task_dir}",
                    run.common_files,
                    into="",
                )
            for wait in (*ORPHAN_WAITS, None):
                try:
                    await link.agent.request(
                        "spawn",
                        key=sub_key(run.primary.key, i),
                        taskDir=f"{run.primary.task_dir}/coordination",
                        attempt=run.primary.attempt,
                        argv=shlex.split(run.coordination),
                        env=run.env[sub.node_id],
                        maxWallClockSeconds=None,
                    )
                    break
                except AgentError as exc:
                    # An orphan of a controller before this one is being killed: wait for it.
                    if exc.code != "TaskAlreadyRunning" or wait is None:
                        raise
                    await asyncio.sleep(wait)
        except Exception as exc:  # whatever it was, this instance has an outcome
            if not isinstance(exc, FleetError):
                log.error("%s: coordination not started", sub_key(run.primary.key, i), exc_info=exc)
            self._coordinated(run, i, {"exitCode": None, "error": failure_of(exc)})

    def on_event(self, msg: dict[str, Any]) -> None:
        """Handle an ``exited`` event of an instance's coordination command."""
        key, _, instance = str(msg.get("key")).rpartition("@")
        run = self.runs.get(key)
        if run is None or msg.get("attempt") != run.primary.attempt or not instance.isdigit():
            return
        self._coordinated(run, int(instance), msg.get("exit") or {})

    def _coordinated(self, run: Run, i: int, record: dict[str, Any]) -> None:
        if i not in run.waiting:
            return
        run.waiting.discard(i)
        failure = outcomes.failure_info(record)
        with self.c.store.session() as s:
            row = s.get(Subtask, (run.primary.job_id, run.primary.task_id, i))
            if row is not None:
                row.state = "completed"
                row.exit_code = record.get("exitCode")
                row.failure_info = failure
                row.end_time = epoch(record.get("endTime")) or time.time()
                s.add(row)
        if failure is not None:
            log.warning("task %s: coordination failed on instance %d", run.primary.key, i)
            run.waiting.clear()
            run.primary.collecting = True  # the primary never runs: nothing to collect
            self.c.outbox.finished.append(
                (
                    run.primary,
                    {
                        "exitCode": record.get("exitCode"),
                        "error": {
                            "code": "CoordinationCommandFailed",
                            "message": f"the coordination command failed on node "
                            f"{run.nodes[i]}: {failure['message']}",
                        },
                    },
                )
            )
            self.c.wake()
        elif not run.waiting and run.start_primary is not None:
            run.start_primary()

    def orphaned(self, s: Session, att: Attempt) -> set[str]:
        """Record the coordination commands of ``att``, a multi-instance attempt that a
        controller before this one started and that goes back to the queue, as stale
        attempts to kill on their nodes (now, or when they return); return those nodes."""
        rows = s.exec(
            select(Subtask).where(
                Subtask.job_id == att.job_id,
                Subtask.task_id == att.task_id,
                Subtask.attempt == att.attempt,
            )
        ).all()
        for row in rows:
            s.merge(
                StaleAttempt(
                    node_id=row.node_id,
                    key=sub_key(att.key, row.instance),
                    attempt=att.attempt,
                    task_dir=f"{att.task_dir}/coordination",
                )
            )
        return {row.node_id for row in rows}

    def finish(self, att: Attempt) -> None:
        """The primary ended (or its attempt went back to the queue): end every instance."""
        run = self.runs.get(att.key)
        if run is None or run.primary.attempt != att.attempt:
            return  # ended already (a later attempt's run is not this one's)
        del self.runs[att.key]
        for i, sub in run.subs.items():
            if i:
                self.c.inflight.get(sub.node_id, {}).pop(sub_key(att.key, i), None)
            link = self.c.links.get(sub.node_id)
            if link is not None and link.agent is not None:
                self.c.spawn(self._kill(link, sub_key(att.key, i), run, att.attempt))

    async def _kill(self, link: Any, key: str, run: Run, attempt: int) -> None:
        try:
            await link.agent.request(
                "kill", key=key, attempt=attempt, taskDir=f"{run.primary.task_dir}/coordination"
            )
        except FleetError as exc:
            log.info("%s: kill after the primary ended failed: %s", key, exc)
