"""Calls from tasks on nodes to the controller, such as a job manager adding tasks.

A task that may call (a job manager) gets a random token in its environment; only
its SHA-256 is stored. A call arrives through the node agent (docs/agent-protocol.md,
"Calls from tasks") and may touch the caller's own job only. A token is bound to the
attempt it was issued to: the agent names the task whose process session the call came
from, and the call is honoured only if the token is that task's and it arrived over
the link of the node that attempt runs on, so a token read from another task's
environment is worth nothing. Nodes never need a route to the controller: the call
rides the SSH channel the controller opened.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlmodel import col, select

from fleet import views
from fleet.agent_client import AgentClient, client_remote_path
from fleet.domain import TaskState
from fleet.errors import BadInput, FleetError
from fleet.service import jobs as job_service
from fleet.service import tasks as task_service
from fleet.tables import Task

if TYPE_CHECKING:
    from fleet.context import Context
    from fleet.node_link import NodeLink

log = logging.getLogger(__name__)


def new_token() -> tuple[str, str]:
    """Return a fresh token and the hash to store for it."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def client_env(root: str, token: str) -> dict[str, str]:
    """Return the variables a calling task needs: its token, the agent dir and the client."""
    return {
        "FLEET_TASK_TOKEN": token,
        "FLEET_AGENT_DIR": f"{root.rstrip('/')}/volatile",
        "FLEET_TASK_CLIENT": client_remote_path(root),
    }


@dataclass(frozen=True)
class Caller:
    """Who made a call: the token shown, the task (``job/task``) and attempt in whose
    session the agent saw the calling process, and the node whose link carried it."""

    token: str
    task_key: str
    attempt: int | None
    node_id: str

    @classmethod
    def of(cls, node_id: str, msg: dict[str, Any]) -> Caller:
        """Return the caller of a ``call`` event from ``node_id``'s agent."""
        attempt = msg.get("attempt")
        return cls(
            token=str(msg.get("token", "")),
            task_key=str(msg.get("taskKey", "")),
            attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
            node_id=node_id,
        )


def check_caller(holder: Task | None, caller: Caller) -> str:
    """Return the job the caller may act on: that of ``holder``, the task whose token
    hash matches the caller's token. Raises FleetError ``InvalidToken`` unless the holder
    is a running task, it is the calling task and attempt, and the call came over the
    link of the node that attempt runs on."""
    if (
        not caller.token
        or holder is None
        or holder.state == TaskState.COMPLETED
        or f"{holder.job_id}/{holder.id}" != caller.task_key
        or holder.attempt != caller.attempt
        or holder.node_id != caller.node_id
    ):
        raise FleetError(
            "the call's token belongs to no running job manager of the calling task on this node",
            code="InvalidToken",
        )
    return holder.job_id


class TaskCalls:
    """Answers the calls tasks make through their node's agent."""

    def __init__(self, ctx: Context) -> None:
        self.c = ctx

    def handle(self, link: NodeLink, msg: dict[str, Any]) -> None:
        """Start answering one ``call`` event from ``link``'s agent. The answer goes to the
        agent that sent the call (call ids restart with each agent), or nowhere."""
        if link.agent is not None:
            self.c.spawn(self._answer(link.node_id, link.agent, msg))

    async def _answer(self, node_id: str, agent: AgentClient, msg: dict[str, Any]) -> None:
        answer: dict[str, Any]
        try:
            caller = Caller.of(node_id, msg)
            answer = {
                "ok": True,
                "result": self.run(caller, str(msg.get("op", "")), msg.get("args") or {}),
            }
        except FleetError as exc:
            answer = {
                "ok": False,
                "error": {"code": exc.code, "message": str(exc), "exitStatus": exc.exit_status},
            }
        if agent.closed.is_set():
            return
        try:
            await agent.request("answer", callId=msg.get("callId"), **answer)
        except FleetError as exc:
            log.info("node %s: call %s not answered: %s", node_id, msg.get("callId"), exc)

    def run(self, caller: Caller, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Carry out one call for the task holding the caller's token. Raises FleetError."""
        job_id = self._caller_job(caller)
        store = self.c.store
        if op == "addTasks":
            rows = task_service.add_tasks(store, job_id, args.get("tasks"))
            self.c.wake()
            return {"tasks": [views.task(r) for r in rows]}
        if op == "listTasks":
            return {"tasks": [views.task(t) for t in task_service.list_tasks(store, job_id)]}
        if op == "showJob":
            job = job_service.show_job(store, job_id)
            counts = job_service.task_counts(store, job_id)
            return {"job": views.job(job, counts, job_service.task_totals(store, job_id))}
        raise BadInput(
            f"unknown call {op!r}; calls are addTasks, listTasks, showJob", code="UnknownCall"
        )

    def _caller_job(self, caller: Caller) -> str:
        with self.c.store.session() as s:
            holder = s.exec(
                select(Task).where(col(Task.token_hash) == token_hash(caller.token))
            ).first()
        return check_caller(holder, caller)
