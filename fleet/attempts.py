"""Attempts: one dispatch of one task to one node, as the controller tracks it in memory."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fleet import environment
from fleet.errors import failure_of

log = logging.getLogger(__name__)


@dataclass
class Attempt:
    """One dispatch of one task to one node, as the controller tracks it in memory."""

    pk: int
    job_id: str
    task_id: str
    attempt: int
    node_id: str
    slots: int
    collecting: bool = False
    output_files: list[dict[str, Any]] = field(default_factory=list)
    kill_sent: bool = False
    on_exit: str | None = None  # None, or what its exit means: terminate | requeue | delete
    end_reason: str | None = None
    #: epoch seconds its task became eligible to run (created, retried or requeued)
    eligible_at: float = 0.0
    #: epoch seconds its exit event reached the controller (0: none yet)
    exit_seen_at: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.job_id}/{self.task_id}"

    @property
    def task_dir(self) -> str:
        return environment.task_dir(self.job_id, self.task_id)


def epoch(iso_time: Any) -> float | None:
    """Return an ISO 8601 time from an exit record as epoch seconds, or None."""
    if not isinstance(iso_time, str):
        return None
    try:
        return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def internal_error(att: Attempt, exc: BaseException, record: dict[str, Any]) -> dict[str, Any]:
    """Return ``record`` marked with an unexpected failure of the controller, logged here."""
    log.error("task %s: unexpected error while handling it", att.key, exc_info=exc)
    return {**record, "error": failure_of(exc)}
