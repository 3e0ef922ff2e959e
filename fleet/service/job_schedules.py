"""Job schedule requests: create, list, show, set, disable, enable, terminate and delete."""

from __future__ import annotations

import time
from typing import Any

from sqlmodel import Session, col, select

from fleet import schedules
from fleet.errors import BadInput, Conflict, NotFound
from fleet.service.pools import get_pool
from fleet.store import Store
from fleet.tables import Host, JobSchedule

ACTIVE, DISABLED, COMPLETED = "active", "disabled", "completed"
TERMINATING, DELETING = "terminating", "deleting"
#: What ``set`` may change: the rest of a schedule is its identity.
CHANGEABLE = {"schedule", "jobSpecification", "metadata", "displayName"}


def create_schedule(store: Store, data: dict[str, Any]) -> JobSchedule:
    """Validate an Azure-style job schedule and store it; its first occurrence is at
    ``doNotRunUntil`` or now. Raises BadInput, NotFound (unknown pool) or Conflict."""
    spec = schedules.parse_schedule(data)
    now = time.time()
    with store.session() as s:
        _check_pool(s, spec)
        if s.get(JobSchedule, spec["id"]) is not None:
            raise Conflict(
                "a job schedule with this id exists already",
                code="JobScheduleExists",
                target=f"job schedule {spec['id']}",
            )
        row = JobSchedule(
            id=spec["id"],
            spec=spec,
            next_run=schedules.first_occurrence(spec["schedule"], now),
            created_at=now,
            state_changed_at=now,
        )
        s.add(row)
        return row


def get_schedule(session: Session, schedule_id: str) -> JobSchedule:
    """Return the schedule; Raises NotFound (JobScheduleNotFound)."""
    row = session.get(JobSchedule, schedule_id)
    if row is None:
        raise NotFound(
            f"no job schedule with id {schedule_id!r}",
            code="JobScheduleNotFound",
            target=f"job schedule {schedule_id}",
        )
    return row


def list_schedules(store: Store) -> list[JobSchedule]:
    """Return every schedule, oldest first."""
    with store.read() as s:
        query = select(JobSchedule).order_by(col(JobSchedule.created_at), col(JobSchedule.id))
        return list(s.exec(query))


def show_schedule(store: Store, schedule_id: str) -> JobSchedule:
    """Return one schedule; Raises NotFound."""
    with store.read() as s:
        return get_schedule(s, schedule_id)


def set_schedule(store: Store, schedule_id: str, changes: dict[str, Any]) -> JobSchedule:
    """Replace the schedule's ``schedule``, ``jobSpecification``, ``metadata`` or
    ``displayName``; the change takes effect from the next occurrence. Raises BadInput,
    NotFound or Conflict (completed, terminating or deleting)."""
    target = f"job schedule {schedule_id}"
    unknown = set(changes) - CHANGEABLE
    if unknown:
        raise BadInput(
            f"cannot change {', '.join(sorted(unknown))} of a job schedule; changeable: "
            f"{', '.join(sorted(CHANGEABLE))}",
            code="UnsupportedProperty",
            target=target,
            field=sorted(unknown)[0],
        )
    now = time.time()
    with store.session() as s:
        row = _in_state(s, schedule_id, {ACTIVE, DISABLED}, "change")
        spec = schedules.parse_schedule({**row.spec, **changes})
        _check_pool(s, spec)
        if spec["schedule"] != row.spec["schedule"]:
            row.next_run = schedules.first_occurrence(spec["schedule"], now)
        row.spec = spec
        s.add(row)
        return row


def disable_schedule(store: Store, schedule_id: str) -> JobSchedule:
    """Stop creating jobs (occurrences meanwhile are recorded as skipped); the active job
    runs on. Raises NotFound or Conflict."""
    return _transition(store, schedule_id, {ACTIVE}, "disable", DISABLED)


def enable_schedule(store: Store, schedule_id: str) -> JobSchedule:
    """Create jobs again from the next occurrence. Raises NotFound or Conflict."""
    return _transition(store, schedule_id, {DISABLED}, "enable", ACTIVE)


def terminate_schedule(store: Store, schedule_id: str) -> JobSchedule:
    """End the schedule: the controller terminates its active job (``terminateReason``
    ``TerminateJobSchedule``), then completes it. Raises NotFound or Conflict."""
    return _transition(store, schedule_id, {ACTIVE, DISABLED}, "terminate", TERMINATING)


def delete_schedule(store: Store, schedule_id: str) -> JobSchedule:
    """Ask the controller to delete the schedule and every job it created. Raises
    NotFound or Conflict (already deleting)."""
    states = {ACTIVE, DISABLED, COMPLETED, TERMINATING}
    return _transition(store, schedule_id, states, "delete", DELETING)


def _check_pool(s: Session, spec: dict[str, Any]) -> None:
    """Raise NotFound when the schedule's jobs name a pool, or an auto pool names a host,
    that does not exist (an auto pool itself is made with the first job that needs it,
    when its hosts must also be free)."""
    pool_info = spec["jobSpecification"]["poolInfo"]
    if "poolId" in pool_info:
        get_pool(s, pool_info["poolId"])
        return
    for host_id in pool_info["autoPoolSpecification"]["pool"].get("hosts") or []:
        if s.get(Host, host_id) is None:
            raise NotFound(
                f"no host with id {host_id!r} in the inventory",
                code="HostNotFound",
                target=f"job schedule {spec['id']}",
                field="jobSpecification.poolInfo.autoPoolSpecification.pool.hosts",
            )


def _in_state(s: Session, schedule_id: str, allowed: set[str], verb: str) -> JobSchedule:
    row = get_schedule(s, schedule_id)
    if row.state not in allowed:
        raise Conflict(
            f"cannot {verb} a job schedule that is {row.state}",
            code="JobScheduleStateConflict",
            target=f"job schedule {schedule_id}",
        )
    return row


def _transition(
    store: Store, schedule_id: str, allowed: set[str], verb: str, state: str
) -> JobSchedule:
    with store.session() as s:
        row = _in_state(s, schedule_id, allowed, verb)
        row.state = state
        row.state_changed_at = time.time()
        s.add(row)
        return row
