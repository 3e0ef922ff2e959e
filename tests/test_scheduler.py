"""The scheduler's placement: data-driven cases (tests/cases/scheduler/*.json) and properties."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.scheduler import NodeSlots, PendingTask, plan

CASES = sorted((Path(__file__).parent / "cases" / "scheduler").glob("*.json"))


def _load(case: dict) -> tuple[list[NodeSlots], list[PendingTask]]:
    nodes = [
        NodeSlots(n["id"], n["pool"], n["capacity"], n.get("used", 0), n.get("lastAssigned", 0))
        for n in case["nodes"]
    ]
    tasks = [
        PendingTask(
            t["job"],
            t["id"],
            t.get("pool", "p"),
            t.get("priority", 0),
            t.get("jobSeq", 0),
            t.get("seq", i),
            t.get("slots", 1),
            t.get("instances", 1),
        )
        for i, t in enumerate(case["tasks"])
    ]
    return nodes, tasks


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_scheduler_case(path: Path) -> None:
    case = json.loads(path.read_text())
    nodes, tasks = _load(case)
    got = [
        [f"{a.job_id}/{a.task_id}", a.node_id, *a.others]
        for a in plan(
            nodes,
            tasks,
            case.get("fillTypes"),
            case.get("jobRoom"),
            {j: set(n) for j, n in case.get("avoid", {}).items()},
        )
    ]
    assert got == case["expect"], case["description"]


node_st = st.builds(
    lambda i, cap, used, pool: NodeSlots(f"n{i}", pool, cap, min(used, cap)),
    st.integers(0, 20),
    st.integers(1, 8),
    st.integers(0, 8),
    st.sampled_from(["a", "b"]),
)
task_st = st.builds(
    lambda i, pool, prio, slots: PendingTask("j", str(i), pool, prio, 0, i, slots),
    st.integers(0, 200),
    st.sampled_from(["a", "b"]),
    st.integers(-5, 5),
    st.integers(1, 3),
)


@given(
    st.lists(node_st, max_size=8, unique_by=lambda n: n.id),
    st.lists(task_st, max_size=60, unique_by=lambda t: t.task_id),
    st.sampled_from(["spread", "pack"]),
)
def test_plan_never_overfills_a_node_or_crosses_pools(nodes, tasks, fill) -> None:
    result = plan(nodes, tasks, {"a": fill, "b": fill})
    by_node = {n.id: n for n in nodes}
    by_task = {t.task_id: t for t in tasks}
    used = {n.id: n.used for n in nodes}
    assert len({a.task_id for a in result}) == len(result)
    for a in result:
        task, node = by_task[a.task_id], by_node[a.node_id]
        assert task.pool_id == node.pool_id
        used[node.id] += task.required_slots
        assert used[node.id] <= node.capacity


@given(
    st.lists(node_st, max_size=8, unique_by=lambda n: n.id),
    st.lists(task_st, max_size=60, unique_by=lambda t: t.task_id),
)
def test_plan_leaves_no_placeable_task_waiting(nodes, tasks) -> None:
    result = plan(nodes, tasks)
    placed = {a.task_id for a in result}
    used = {n.id: n.used for n in nodes}
    for a in result:
        used[a.node_id] += next(t.required_slots for t in tasks if t.task_id == a.task_id)
    for t in tasks:
        if t.task_id in placed:
            continue
        assert all(
            n.capacity - used[n.id] < t.required_slots for n in nodes if n.pool_id == t.pool_id
        )
