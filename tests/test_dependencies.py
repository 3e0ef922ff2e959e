"""Tests for fleet.dependencies: dependsOn validation, cycles, and when dependents may run."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.dependencies import (
    MAX_TASK_IDS,
    ParentState,
    TaskIdIndex,
    parents,
    parse_depends_on,
    runnable,
    status,
    validate_additions,
)
from fleet.errors import BadInput

TARGET = "task j/t"
DONE = ParentState(True, "satisfy")
BLOCKED = ParentState(True, "block")
RUNNING = ParentState(False)


def ids(*names: str) -> dict[str, Any]:
    return {"taskIds": list(names), "taskIdRanges": []}


def span(start: int, end: int) -> dict[str, Any]:
    return {"taskIds": [], "taskIdRanges": [{"start": start, "end": end}]}


# --- parse_depends_on -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ({"taskIds": ["a", "b", "a"]}, {"taskIds": ["a", "b"], "taskIdRanges": []}),
        (
            {"taskIdRanges": [{"start": 1, "end": 5}]},
            {"taskIds": [], "taskIdRanges": [{"start": 1, "end": 5}]},
        ),
        (
            {"taskIds": [], "taskIdRanges": [{"start": 0, "end": 0}]},
            {"taskIds": [], "taskIdRanges": [{"start": 0, "end": 0}]},
        ),
        (
            {"taskIds": ["x_1-Y"], "taskIdRanges": None},
            {"taskIds": ["x_1-Y"], "taskIdRanges": []},
        ),
    ],
)
def test_parse_depends_on_normalizes(value: Any, expected: Any):
    assert parse_depends_on(value, TARGET) == expected


@pytest.mark.parametrize(
    ("value", "code", "field"),
    [
        (["a"], "InvalidPropertyValue", "dependsOn"),
        ({}, "InvalidPropertyValue", "dependsOn"),
        ({"taskIds": []}, "InvalidPropertyValue", "dependsOn"),
        ({"taskIds": ["a"], "ids": []}, "UnknownProperty", "dependsOn.ids"),
        ({"taskIds": "a"}, "InvalidPropertyValue", "dependsOn.taskIds"),
        ({"taskIds": ["a", "b c"]}, "InvalidPropertyValue", "dependsOn.taskIds[1]"),
        ({"taskIds": [7]}, "InvalidPropertyValue", "dependsOn.taskIds[0]"),
        ({"taskIds": ["x" * 65]}, "InvalidPropertyValue", "dependsOn.taskIds[0]"),
        (
            {"taskIds": [f"t{i}" for i in range(MAX_TASK_IDS + 1)]},
            "TaskDependencyListTooLong",
            "dependsOn.taskIds",
        ),
        (
            {"taskIds": [f"{i:060d}" for i in range(1100)]},
            "TaskDependencyListTooLong",
            "dependsOn.taskIds",
        ),
        ({"taskIdRanges": {"start": 1}}, "InvalidPropertyValue", "dependsOn.taskIdRanges"),
        ({"taskIdRanges": [[1, 2]]}, "InvalidPropertyValue", "dependsOn.taskIdRanges[0]"),
        (
            {"taskIdRanges": [{"start": 1, "end": 2, "step": 1}]},
            "UnknownProperty",
            "dependsOn.taskIdRanges[0].step",
        ),
        (
            {"taskIdRanges": [{"start": 1}]},
            "MissingRequiredProperty",
            "dependsOn.taskIdRanges[0].end",
        ),
        (
            {"taskIdRanges": [{"start": 1, "end": 2}, {"start": 3, "end": 2}]},
            "InvalidPropertyValue",
            "dependsOn.taskIdRanges[1].end",
        ),
        (
            {"taskIdRanges": [{"start": -1, "end": 2}]},
            "InvalidPropertyValue",
            "dependsOn.taskIdRanges[0].start",
        ),
        (
            {"taskIdRanges": [{"start": "1", "end": 2}]},
            "InvalidPropertyValue",
            "dependsOn.taskIdRanges[0].start",
        ),
        (
            {"taskIdRanges": [{"start": 0, "end": True}]},
            "InvalidPropertyValue",
            "dependsOn.taskIdRanges[0].end",
        ),
    ],
)
def test_bad_depends_on_is_rejected_naming_the_field(value: Any, code: str, field: str):
    with pytest.raises(BadInput) as err:
        parse_depends_on(value, TARGET)
    assert (err.value.code, err.value.field, err.value.target) == (code, field, TARGET)


# --- parents and ranges ----------------------------------------------------------------

JOB = ["1", "2", "007", "10", "11", "x", "7a", "03b", "0"]


@pytest.mark.parametrize(
    ("depends_on", "expected"),
    [
        (None, set()),
        (ids("x", "ghost"), {"x", "ghost"}),
        (span(1, 2), {"1", "2"}),
        (span(5, 10), {"007", "10"}),
        (span(7, 7), {"007"}),
        (span(0, 0), {"0"}),
        (span(12, 99), set()),
        (
            {"taskIds": ["x"], "taskIdRanges": [{"start": 0, "end": 1}, {"start": 1, "end": 2}]},
            {"x", "0", "1", "2"},
        ),
    ],
)
def test_parents_expand_ranges_over_all_digit_ids(depends_on: Any, expected: set[str]):
    assert parents(depends_on, JOB) == expected
    assert parents(depends_on, TaskIdIndex(JOB)) == expected


def test_an_index_lists_range_members_by_value():
    index = TaskIdIndex(["10", "9", "0009x", "08", "100"])
    assert index.in_range(8, 10) == ["08", "9", "10"]
    assert index.in_range(0, 7) == []


# --- validate_additions ----------------------------------------------------------------


def check(existing: dict, new: dict, uses: bool = True) -> None:
    validate_additions(existing, new, uses_task_dependencies=uses, job_id="j")


def test_dependencies_need_uses_task_dependencies_on_the_job():
    check({}, {"a": None, "b": None}, uses=False)
    with pytest.raises(BadInput) as err:
        check({"a": None}, {"b": ids("a")}, uses=False)
    assert err.value.code == "TaskDependenciesNotSpecifiedOnJob"
    assert err.value.target == "task j/b"


def test_an_unknown_explicit_parent_is_named():
    with pytest.raises(BadInput) as err:
        check({"a": None}, {"b": ids("a", "ghost")})
    assert err.value.code == "TaskDependencyUnknownParent"
    assert err.value.target == "task j/b"
    assert err.value.field == "dependsOn.taskIds[1]"
    assert "ghost" in err.value.message


def test_a_range_may_cover_no_task_at_all():
    check({"a": None}, {"b": span(100, 200)})


def test_parents_may_be_added_in_the_same_call_in_any_order():
    check({"a": None}, {"c": ids("b", "a"), "b": ids("a"), "5": span(0, 4)})


@pytest.mark.parametrize(
    ("new", "field"),
    [
        ({"a": ids("a")}, "dependsOn.taskIds[0]"),
        ({"7": span(1, 10)}, "dependsOn.taskIdRanges[0]"),
        ({"007": span(7, 7)}, "dependsOn.taskIdRanges[0]"),
    ],
)
def test_a_task_cannot_depend_on_itself(new: dict, field: str):
    with pytest.raises(BadInput) as err:
        check({}, new)
    assert err.value.code == "TaskDependsOnItself"
    assert err.value.field == field


def test_a_cycle_among_new_tasks_is_rejected_with_its_path():
    with pytest.raises(BadInput) as err:
        check({}, {"a": ids("b"), "b": ids("a")})
    assert err.value.code == "TaskDependencyCycle"
    assert "a -> b -> a" in err.value.message
    assert err.value.details["cycle"] == ["a", "b", "a"]


def test_an_existing_range_that_covers_a_new_id_can_close_a_cycle():
    existing = {"merge": span(1, 100), "1": None}
    check(existing, {"2": None})
    with pytest.raises(BadInput) as err:
        check(existing, {"3": ids("merge")})
    assert err.value.code == "TaskDependencyCycle"
    assert err.value.target == "task j/3"
    assert err.value.details["cycle"] == ["3", "merge", "3"]


def test_a_long_cycle_message_is_shortened_but_details_hold_all_of_it():
    new = {f"t{i}": ids(f"t{(i + 1) % 50}") for i in range(50)}
    with pytest.raises(BadInput) as err:
        check({}, new)
    assert "..." in err.value.message
    assert len(err.value.details["cycle"]) == 51


def test_ten_thousand_tasks_each_depending_on_every_earlier_one_validate():
    n = 10_000
    tasks = {str(i): span(0, i - 1) if i else None for i in range(n)}
    check({}, tasks)
    half = {k: v for k, v in tasks.items() if int(k) < n // 2}
    rest = {k: v for k, v in tasks.items() if int(k) >= n // 2}
    check(half, rest)
    with pytest.raises(BadInput) as err:
        check(tasks, {"late": None, "0x": ids(str(n - 1)), "z": ids("0x")} | {"0": ids("z")})
    assert err.value.code == "TaskDependencyCycle"
    states = {str(i): DONE for i in range(n - 1)}
    assert runnable(tasks, states, tasks) == set(tasks)
    states[str(n // 2)] = RUNNING
    ready = runnable(tasks, states, tasks)
    assert ready == {str(i) for i in range(n // 2 + 1)}


# --- status and runnable --------------------------------------------------------------

STATES = {"1": DONE, "2": BLOCKED, "007": RUNNING, "x": DONE, "y": BLOCKED, "0": DONE}


@pytest.mark.parametrize(
    ("depends_on", "expected"),
    [
        (None, ("runnable", None)),
        (ids("x", "1"), ("runnable", None)),
        (span(0, 1), ("runnable", None)),
        (span(5, 9), ("waiting", "007")),
        (ids("x", "11"), ("waiting", "11")),
        (ids("ghost"), ("waiting", "ghost")),
        (span(1, 2), ("blocked", "2")),
        (span(1, 7), ("blocked", "2")),
        (ids("y", "2", "007"), ("blocked", "2")),
        ({"taskIds": ["y"], "taskIdRanges": [{"start": 7, "end": 11}]}, ("blocked", "y")),
    ],
)
def test_status_says_runnable_waiting_or_blocked(depends_on: Any, expected: tuple):
    assert status("t", depends_on, STATES, JOB) == expected
    is_runnable = "t" in runnable({"t": depends_on}, STATES, JOB)
    assert is_runnable is (expected[0] == "runnable")


def test_a_completed_state_needs_a_dependency_action():
    with pytest.raises(ValueError):
        ParentState(True, None)
    with pytest.raises(ValueError):
        ParentState(True, "maybe")
    assert ParentState(False, "block").completed is False


# --- properties -----------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> dict[str, Any]:
    """Tasks in creation order; each depends only on earlier ones (by id or by range)."""
    n = draw(st.integers(1, 25))
    names: list[str] = []
    values: list[int | None] = []
    for i in range(n):
        kind = draw(st.sampled_from(["int", "padded", "name"]))
        names.append({"int": str(i), "padded": f"{i:03d}", "name": f"t{i}"}[kind])
        values.append(None if kind == "name" else i)
    tasks: dict[str, Any] = {}
    for i, name in enumerate(names):
        explicit = draw(st.lists(st.sampled_from(names[:i]), max_size=3)) if i else []
        ranges = []
        if i and draw(st.booleans()):
            for _ in range(draw(st.integers(1, 2))):
                lo = draw(st.integers(0, i - 1))
                hi = draw(st.integers(lo, i - 1))
                ranges.append({"start": lo, "end": hi})
        dep = {"taskIds": sorted(set(explicit)), "taskIdRanges": ranges}
        tasks[name] = dep if explicit or ranges else None
    return tasks


@settings(max_examples=100, deadline=None)
@given(dags(), st.randoms(use_true_random=False))
def test_simulated_runs_respect_dependencies_and_leave_only_blocked_tasks(tasks, rnd):
    index = TaskIdIndex(tasks)
    states: dict[str, ParentState] = {}
    started: set[str] = set()
    while True:
        ready = runnable({t: d for t, d in tasks.items() if t not in started}, states, index)
        for t in tasks:
            if t not in started:
                got = status(t, tasks[t], states, index)
                assert (got[0] == "runnable") is (t in ready)
        for t in ready:
            for p in parents(tasks[t], index):
                assert states[p].completed and states[p].dependency_action == "satisfy"
        if not ready:
            break
        for t in sorted(ready):
            started.add(t)
            states[t] = ParentState(True, rnd.choice(["satisfy", "block"]))

    doomed: dict[str, bool] = {}

    def is_doomed(t: str) -> bool:
        if t not in doomed:
            doomed[t] = any(
                (p in states and states[p].dependency_action == "block")
                or (p not in started and is_doomed(p))
                for p in parents(tasks[t], index)
            )
        return doomed[t]

    for t in tasks:
        if t not in started:
            assert is_doomed(t), t
            state, parent = status(t, tasks[t], states, index)
            assert state == "blocked" or (state == "waiting" and parent not in started)


@settings(max_examples=100, deadline=None)
@given(dags(), st.randoms(use_true_random=False))
def test_an_acyclic_graph_with_known_parents_is_always_accepted(tasks, rnd):
    names = list(tasks)
    cut = rnd.randrange(len(names) + 1)
    existing = {t: tasks[t] for t in names[:cut]}
    new = {t: tasks[t] for t in names[cut:]}
    check(existing, new)
    check({}, tasks)


@settings(max_examples=100, deadline=None)
@given(dags(), st.randoms(use_true_random=False))
def test_an_edge_that_closes_a_cycle_is_always_rejected(tasks, rnd):
    index = TaskIdIndex(tasks)

    def ancestors(t: str) -> set[str]:
        seen: set[str] = set()
        todo = [t]
        while todo:
            for p in parents(tasks[todo.pop()], index):
                if p not in seen:
                    seen.add(p)
                    todo.append(p)
        return seen

    candidates = [(t, a) for t in tasks for a in sorted(ancestors(t))]
    if not candidates:
        return
    child, ancestor = rnd.choice(candidates)
    old = tasks[ancestor] or {"taskIds": [], "taskIdRanges": []}
    changed = {**old, "taskIds": [*old["taskIds"], child]}
    existing = {t: d for t, d in tasks.items() if t != ancestor}
    with pytest.raises(BadInput) as err:
        check(existing, {ancestor: changed})
    assert err.value.code == "TaskDependencyCycle"
    cycle = err.value.details["cycle"]
    assert cycle[0] == cycle[-1] and ancestor in cycle and child in cycle
