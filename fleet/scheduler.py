"""Task placement: a pure function from a snapshot of free slots and pending tasks to a plan.

No I/O, no clock. The controller builds the snapshot from the store, calls
:func:`plan`, writes the plan ahead (``dispatching``) and then acts on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fleet.domain import FillType


@dataclass(frozen=True)
class NodeSlots:
    """A schedulable node and how many of its task slots are taken."""

    id: str
    pool_id: str
    capacity: int
    used: int = 0
    last_assigned: float = 0.0  # when it was last given a task; spread rotates by it


@dataclass(frozen=True)
class PendingTask:
    """A task waiting for a node. ``seq`` is its submission order within the store."""

    job_id: str
    task_id: str
    pool_id: str
    priority: int = 0
    job_seq: float = 0.0
    seq: int = 0
    required_slots: int = 1
    instances: int = 1  # a multi-instance task needs this many distinct nodes at once


@dataclass(frozen=True)
class Assignment:
    """Place task ``job_id/task_id`` on node ``node_id``."""

    job_id: str
    task_id: str
    node_id: str
    others: tuple[str, ...] = ()  # the other nodes of a multi-instance task


def order(tasks: Sequence[PendingTask]) -> list[PendingTask]:
    """Return tasks in the order they are considered: higher job priority first, then
    older jobs, then submission order within a job."""
    return sorted(tasks, key=lambda t: (-t.priority, t.job_seq, t.job_id, t.seq))


def plan(
    nodes: Sequence[NodeSlots],
    tasks: Sequence[PendingTask],
    fill_types: Mapping[str, str] | None = None,
    job_room: Mapping[str, int] | None = None,
    avoid: Mapping[str, set[str]] | None = None,
) -> list[Assignment]:
    """Return the assignments to make now.

    Tasks are taken in :func:`order`. Each goes to a node of its own pool with enough
    free slots: with ``spread`` (the default) the node with the most free slots, ties
    going to the node given a task longest ago (then by id), so that work rotates;
    with ``pack`` the fullest node that still fits, ties broken by node id. A task
    that fits nowhere is passed over, and smaller tasks behind it may still be placed.
    ``job_room`` caps how many more tasks of a job may start (its ``maxParallelTasks``
    less those running); jobs missing from it have no cap. ``avoid`` lists, per job,
    nodes its tasks must not go to (its prep task failed there). Running tasks are
    never moved. A multi-instance task gets ``instances`` distinct nodes at once, or
    none (``Assignment.others`` lists the nodes besides the primary).
    """
    fill_types = fill_types or {}
    job_left = dict(job_room or {})
    free: dict[str, dict[str, int]] = {}
    rank = {n.id: (n.last_assigned, 0, n.id) for n in nodes}
    for node in nodes:
        room = node.capacity - node.used
        if room > 0:
            free.setdefault(node.pool_id, {})[node.id] = room
    result: list[Assignment] = []
    for task in order(tasks):
        pool_free = free.get(task.pool_id)
        if not pool_free or job_left.get(task.job_id, 1) <= 0:
            continue
        avoid_nodes = set((avoid or {}).get(task.job_id, set()))
        chosen: list[str] = []
        for _ in range(task.instances):  # one node per instance, all or none
            node_id = _choose(
                pool_free,
                task.required_slots,
                fill_types.get(task.pool_id),
                rank,
                avoid_nodes | set(chosen),
            )
            if node_id is None:
                break
            chosen.append(node_id)
        if len(chosen) < task.instances:
            continue
        for node_id in chosen:
            pool_free[node_id] -= task.required_slots
            rank[node_id] = (float("inf"), len(result), node_id)  # just placed: last in line
            if pool_free[node_id] == 0:
                del pool_free[node_id]
        if task.job_id in job_left:
            job_left[task.job_id] -= 1
        result.append(Assignment(task.job_id, task.task_id, chosen[0], tuple(chosen[1:])))
    return result


def _choose(
    pool_free: dict[str, int],
    need: int,
    fill_type: str | None,
    rank: dict[str, tuple[float, int, str]],
    avoid: set[str],
) -> str | None:
    fits = [
        (room, node_id)
        for node_id, room in pool_free.items()
        if room >= need and node_id not in avoid
    ]
    if not fits:
        return None
    if fill_type == FillType.PACK:
        return min(fits)[1]
    return min(fits, key=lambda f: (-f[0], rank[f[1]]))[1]
