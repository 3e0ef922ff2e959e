"""Auto pools: a pool a job, or a job schedule, makes for itself from its
``poolInfo.autoPoolSpecification`` and that fleet deletes when its owner ends.

A job's auto pool (``poolLifetimeOption`` ``job``) is made with the job and goes when the
job has completed or is gone. A schedule's (``jobschedule``) is made with the schedule's
first job, shared by all its jobs, and goes when the schedule has completed or is gone and
no job still uses it. ``keepAlive`` keeps either after its owner ends (delete it with
``fleet pool delete``). The owner is written on the pool row (``auto_owner``), so a
restarted controller finishes what the last one left.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from sqlmodel import Session, col, select

from fleet import specs
from fleet.domain import JobState
from fleet.errors import FleetError
from fleet.service.pools import add_pool, remove_pool
from fleet.settings import Settings
from fleet.store import Store
from fleet.tables import Job, JobSchedule, Pool

log = logging.getLogger(__name__)

#: How often the controller looks for auto pools whose owner has ended.
SWEEP_SECONDS = 1.0


def owner(kind: str, owner_id: str) -> str:
    """Return the ``auto_owner`` of an auto pool owned by a ``job`` or a ``jobschedule``."""
    return f"{kind}:{owner_id}"


def new_pool_id(prefix: str | None) -> str:
    """Return a fresh auto pool id: ``<prefix>_<uuid>``, or the uuid alone."""
    unique = str(uuid.uuid4())
    return f"{prefix}_{unique}" if prefix else unique


def pool_for(
    s: Session,
    auto: dict[str, Any],
    job_id: str,
    schedule_id: str | None,
    now: float,
    settings: Settings,
) -> str:
    """Return the id of the pool that job ``job_id`` runs on, from its normalized
    ``autoPoolSpecification`` ``auto``: its schedule's auto pool when there is one already,
    else a new one added to ``s``. Raises what pool creation raises (unknown or busy host,
    ...), naming ``poolInfo.autoPoolSpecification.pool.<field>``, with nothing added."""
    if auto["poolLifetimeOption"] == "jobschedule" and schedule_id is not None:
        who = owner("jobschedule", schedule_id)
        existing = s.exec(select(Pool.id).where(Pool.auto_owner == who)).first()
        if existing is not None:
            return existing
    else:
        who = owner("job", job_id)
    spec = specs.parse_pool(auto["pool"] | {"id": new_pool_id(auto.get("autoPoolIdPrefix"))})
    try:
        add_pool(s, spec, now, settings, auto_owner=who, keep_alive=auto["keepAlive"])
    except FleetError as exc:
        field = "poolInfo.autoPoolSpecification.pool"
        exc.field = f"{field}.{exc.field}" if exc.field else field
        exc.target = f"job {job_id}"
        raise
    log.info("auto pool %s created for %s", spec["id"], who)
    return spec["id"]


def ended(s: Session, pool: Pool) -> bool:
    """Return whether ``pool``'s owner has ended and no job still uses it, so that it can
    go (never for a pool kept alive, or one that is not an auto pool)."""
    if pool.auto_owner is None or pool.auto_keep_alive:
        return False
    kind, _, owner_id = pool.auto_owner.partition(":")
    if kind == "job":
        job = s.get(Job, owner_id)
        if job is not None and job.state != JobState.COMPLETED:
            return False
    else:
        schedule = s.get(JobSchedule, owner_id)
        if schedule is not None and schedule.state != "completed":
            return False
    busy = select(Job.id).where(Job.pool_id == pool.id, col(Job.state) != JobState.COMPLETED)
    return s.exec(busy).first() is None


def retire_ended(s: Session) -> list[str]:
    """Delete, in session ``s``, every auto pool whose owner has ended; return their ids."""
    pools = list(s.exec(select(Pool).where(col(Pool.auto_owner).is_not(None))))
    gone = [p.id for p in pools if ended(s, p)]
    for pool_id in gone:
        remove_pool(s, pool_id)
        log.info("auto pool %s deleted: its owner ended", pool_id)
    if gone:
        s.flush()  # its hosts are free for a pool made next in this same transaction
    return gone


class AutoPoolSweep:
    """The controller's step that deletes auto pools whose owner has ended, every
    SWEEP_SECONDS."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._at = 0.0

    def tick(self) -> bool:
        """Delete what has ended, if a sweep is due; return whether any pool went."""
        now = time.monotonic()
        if now - self._at < SWEEP_SECONDS:
            return False
        self._at = now
        with self.store.read() as s:  # most sweeps find no auto pool: no write lock for that
            if s.exec(select(Pool.id).where(col(Pool.auto_owner).is_not(None))).first() is None:
                return False
        with self.store.session() as s:
            return bool(retire_ended(s))
