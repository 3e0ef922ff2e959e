"""Job preparation and release tasks: before a job's first task on a node, and when it ends.

A task placed on a node where its job's preparation task has not run yet waits in
state ``preparing`` while the controller runs it there. Success releases the
waiting tasks; a failure (after the prep task's retries) with ``waitForSuccess``
sends them back to ``active`` once, and keeps the job's tasks off that node.
When the job ends, its release task runs on every node that ran the prep task,
for 15 minutes at most, before the job completes. The per-node record lives in
the ``job_nodes`` table.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, select

from fleet import applications, environment, outcomes, rules, specs, views
from fleet.attempts import Attempt, epoch
from fleet.errors import FleetError, failure_of
from fleet.sql import Sql, Statement
from fleet.tables import Job, JobNode, Node

if TYPE_CHECKING:
    from fleet.context import Context
    from fleet.node_link import NodeLink

log = logging.getLogger(__name__)

PREP, RELEASE = "prep", "release"
SPEC_FIELD = {PREP: "jobPreparationTask", RELEASE: "jobReleaseTask"}
#: The nodes where a job's prep task failed (read by every placement).
_PREP_FAILED = Statement("SELECT job_id, node_id FROM job_nodes WHERE prep_state = :failed")


def agent_key(job_id: str, kind: str) -> str:
    """Return the agent key of a job's prep or release task ('#' is never in an id)."""
    return f"{job_id}#{kind}"


@dataclass
class Held:
    """A task waiting for its job's prep task on its node, and how to start it."""

    att: Attempt
    start: Callable[[], None]


class JobTasks:
    """The controller's handling of job preparation and release tasks."""

    def __init__(self, ctx: Context) -> None:
        self.c = ctx
        self.held: dict[tuple[str, str], list[Held]] = {}
        self.retries: dict[tuple[str, str], int] = {}

    # -- preparation ------------------------------------------------------------------

    def gate(self, s: Session, job: Any, link: NodeLink) -> str:
        """Return ``go`` when a task of ``job`` may start on ``link``'s node now, ``wait``
        when it must wait (``preparing``) for the job's prep task there, which this starts
        if needed."""
        prep = job.spec.get("jobPreparationTask")
        if not prep:
            return "go"
        row = s.get(JobNode, (job.id, link.node_id)) or JobNode(job_id=job.id, node_id=link.node_id)
        boot = link.agent.hello.get("bootId") if link.agent else None
        stale = (
            row.prep_state == "succeeded"
            and prep.get("rerunOnNodeRebootAfterSuccess", True)
            and row.prep_boot_id != boot
        )
        if row.prep_state == "succeeded" and not stale:
            return "go"
        if row.prep_state in (None, "succeeded") or stale:
            row.prep_state = "running"
            row.prep_attempt += 1
            row.prep_info = {
                "state": "running",
                "retryCount": self.retries.get((job.id, link.node_id), 0),
            }
            s.add(row)
            attempt = row.prep_attempt
            self.c.spawn(self._spawn(link, job.id, job.spec, PREP, attempt))
        return "wait" if prep.get("waitForSuccess", True) else "go"

    def hold(self, att: Attempt, start: Callable[[], None]) -> None:
        """Keep ``att`` until the prep task of its job on its node has finished."""
        self.held.setdefault((att.job_id, att.node_id), []).append(Held(att, start))

    def excluded_nodes(self, db: Sql) -> dict[str, set[str]]:
        """Return, per job, the nodes its tasks must avoid: prep failed there with waitForSuccess."""
        out: dict[str, set[str]] = {}
        for row in db.rows(_PREP_FAILED, {"failed": "failed"}):
            out.setdefault(row.job_id, set()).add(row.node_id)
        return out

    # -- spawning and exits -------------------------------------------------------------

    async def _spawn(
        self, link: NodeLink, job_id: str, job_spec: dict[str, Any], kind: str, attempt: int
    ) -> None:
        spec = job_spec[SPEC_FIELD[kind]]
        root = link.agent.hello.get("root") if link.agent else None
        if link.agent is None or root is None:
            return  # the node dropped: reconcile() settles it when it returns
        tdir = environment.task_dir(job_id, spec["id"])
        env = environment.task_env(  # over the node's own, which its agent holds
            root=root,
            pool_id=self._pool_of(link.node_id),
            task_dir_rel=tdir,
            attempt=attempt,
            job_id=job_id,
            task_id=spec["id"],
            user_env=[
                *job_spec.get("commonEnvironmentSettings", []),
                *spec.get("environmentSettings", []),
            ],
        )
        applications.add_env(env, link.app_env)  # the pool's application packages
        try:
            await link.agent.request(
                "spawn",
                key=agent_key(job_id, kind),
                taskDir=tdir,
                attempt=attempt,
                argv=shlex.split(spec["commandLine"]),
                env=env,
                maxWallClockSeconds=specs.constraint_seconds(spec, "maxWallClockTime"),
            )
        except Exception as exc:  # whatever it was, the prep or release task has an outcome
            if not isinstance(exc, FleetError):
                log.error("job %s: %s task not started", job_id, kind, exc_info=exc)
            self.finished(link, job_id, kind, attempt, {"exitCode": None, "error": failure_of(exc)})

    def on_event(self, link: NodeLink, msg: dict[str, Any]) -> None:
        """Handle an agent's ``exited`` event for a prep or release task."""
        job_id, _, kind = str(msg.get("key")).partition("#")
        self.finished(link, job_id, kind, int(msg.get("attempt") or 0), msg.get("exit") or {})

    def finished(
        self, link: NodeLink, job_id: str, kind: str, attempt: int, record: dict[str, Any]
    ) -> None:
        """Record a prep or release attempt's end and act on it."""
        node_id = link.node_id
        now = time.time()
        with self.c.store.session() as s:
            job = s.get(Job, job_id)
            row = s.get(JobNode, (job_id, node_id))
            if job is None or row is None:
                return
            spec = job.spec.get(SPEC_FIELD[kind]) or {}
            failure = outcomes.failure_info(record)
            info = {
                "state": "completed",
                "startTime": record.get("startTime"),
                "endTime": record.get("endTime") or views.iso(now),
                "exitCode": record.get("exitCode"),
                "result": "failure" if failure else "success",
                "failureInfo": failure,
                "taskRootDirectory": f"{link.agent.hello.get('root') if link.agent else ''}/"
                f"{environment.task_dir(job_id, spec.get('id', kind))}",
            }
            if kind == RELEASE:
                row.release_state, row.release_info = "completed", info
                s.add(row)
                self.c.wake()
                return
            if attempt != row.prep_attempt or row.prep_state != "running":
                return  # a stale report
            retries = self.retries.get((job_id, node_id), 0)
            info["retryCount"] = retries
            end = rules.on_prep_end(record, retries, spec)
            if end.retry:
                self.retries[(job_id, node_id)] = retries + 1
                row.prep_attempt += 1
                row.prep_info = {**info, "state": "running"}
                s.add(row)
                self.c.spawn(self._spawn(link, job_id, job.spec, PREP, row.prep_attempt))
                return
            row.prep_state = end.state
            row.prep_boot_id = link.agent.hello.get("bootId") if link.agent else None
            row.prep_info = info
            s.add(row)
        held = self.held.pop((job_id, node_id), [])
        log.info(
            "job %s: prep task on %s %s (%d tasks waiting)", job_id, node_id, end.state, len(held)
        )
        for h in held:
            if end.held == "requeue":
                self.c.outbox.back_to_queue.append((h.att, False))
            else:
                h.start()
        self.c.wake()

    async def reconcile(self, link: NodeLink) -> None:
        """After a (re)connect, settle prep and release attempts this node was running."""
        with self.c.store.session() as s:
            rows = list(s.exec(select(JobNode).where(JobNode.node_id == link.node_id)))
            jobs = {r.job_id: s.get(Job, r.job_id) for r in rows}
        asks = []
        for row in rows:
            job = jobs[row.job_id]
            if job is None:
                continue
            for kind, state in ((PREP, row.prep_state), (RELEASE, row.release_state)):
                if state == "running":
                    spec_id = job.spec[SPEC_FIELD[kind]]["id"]
                    attempt = row.prep_attempt if kind == PREP else 1
                    asks.append(
                        (
                            job,
                            kind,
                            attempt,
                            {
                                "key": agent_key(job.id, kind),
                                "attempt": attempt,
                                "taskDir": environment.task_dir(job.id, spec_id),
                            },
                        )
                    )
        if not asks or link.agent is None:
            return
        result = await link.agent.request("status", tasks=[a[3] for a in asks])
        for (job, kind, attempt, _), item in zip(asks, result.get("tasks", []), strict=False):
            if item.get("state") == "exited":
                self.finished(link, job.id, kind, attempt, item.get("exit") or {})
            elif item.get("state") == "missing":
                self._forget(job.id, link.node_id, kind)

    def _forget(self, job_id: str, node_id: str, kind: str) -> None:
        with self.c.store.session() as s:
            row = s.get(JobNode, (job_id, node_id))
            if row is None:
                return
            if kind == PREP:
                row.prep_state = None
            else:
                row.release_state = None
            s.add(row)

    def _pool_of(self, node_id: str) -> str:
        """Return the pool the node belongs to ('' if it left)."""
        with self.c.store.session() as s:
            node = s.get(Node, node_id)
            return node.pool_id if node else ""

    # -- release ----------------------------------------------------------------------

    def releases_done(self, job_id: str, job_spec: dict[str, Any]) -> bool:
        """Start the job's release task on every node that ran its prep task; return True
        once every one of them has finished (or its node could not run it)."""
        if not job_spec.get("jobReleaseTask"):
            return True
        done = True
        with self.c.store.session() as s:
            for row in s.exec(select(JobNode).where(JobNode.job_id == job_id)):
                if row.prep_state is None or row.release_state == "completed":
                    continue
                done = False
                if row.release_state == "running":
                    started = epoch((row.release_info or {}).get("startTime")) or time.time()
                    if time.time() - started > specs.RELEASE_LIMIT_SECONDS + 60:
                        row.release_state = "completed"  # the agent's limit failed to report
                        s.add(row)
                    continue
                link = self.c.links.get(row.node_id)
                if link is None or not link.ready:
                    row.release_state = "completed"
                    row.release_info = {
                        "state": "completed",
                        "result": "failure",
                        "failureInfo": {
                            "category": "servererror",
                            "code": "NodeUnreachable",
                            "message": "the node was not reachable when the job ended",
                        },
                    }
                else:
                    row.release_state = "running"
                    row.release_info = {"state": "running", "startTime": views.iso(time.time())}
                    self.c.spawn(self._spawn(link, job_id, job_spec, RELEASE, 1))
                s.add(row)
        return done
