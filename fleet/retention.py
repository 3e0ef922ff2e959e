"""The retention sweep: task directories deleted on their nodes once ``retentionTime`` has passed.

Every completed task keeps its directory on its node for its ``retentionTime``
(default 7 days, as in Azure Batch), counted from its end. The controller runs
this sweep periodically; a node that is not connected is swept on a later pass.
"""

from __future__ import annotations

import logging
import time

from sqlmodel import col, select

from fleet import specs
from fleet.domain import TaskState
from fleet.errors import FleetError
from fleet.periodic import PeriodicPass
from fleet.tables import Task

log = logging.getLogger(__name__)

DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600
BATCH = 200


def expired(task: Task, now: float) -> bool:
    """Return whether a completed task's directory has outlived its retentionTime."""
    keep = specs.constraint_seconds(task.spec, "retentionTime") or DEFAULT_RETENTION_SECONDS
    return task.end_time is not None and now - task.end_time >= keep


class RetentionSweep(PeriodicPass):
    """Deletes expired task directories, a batch per pass."""

    async def sweep(self) -> None:
        now = time.time()
        with self.c.store.read() as s:
            candidates = [
                t
                for t in s.exec(
                    select(Task)
                    .where(
                        Task.state == TaskState.COMPLETED,
                        col(Task.files_deleted).is_(False),
                        col(Task.task_root).is_not(None),
                    )
                    .order_by(col(Task.end_time))
                    .limit(BATCH)
                )
                if expired(t, now)
            ]
        swept = []
        for task in candidates:
            link = self.c.links.get(task.node_id or "")
            if link is None or not link.ready or link.conn is None or not task.task_root:
                continue
            try:
                await link.conn.remove_tree(task.task_root)
            except FleetError as exc:
                log.warning("task %s/%s: retention sweep failed: %s", task.job_id, task.id, exc)
                continue
            swept.append(task.pk)
        if swept:
            with self.c.store.session() as s:
                for row in s.exec(select(Task).where(col(Task.pk).in_(swept))):
                    row.files_deleted = True
                    s.add(row)
            log.info("retention sweep: deleted %d task directories", len(swept))
