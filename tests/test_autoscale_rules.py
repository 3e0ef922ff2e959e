"""Autoscale's pure rules (fleet/autoscale_rules.py): settings, samples, one evaluation."""

from __future__ import annotations

from typing import Any

import pytest

from fleet import autoscale_rules as rules
from fleet.autoscale_rules import History, PoolFacts
from fleet.errors import BadInput

T = "pool p"
NOW = 1_700_000_000.0
GROW = "$TargetDedicatedNodes = min(3, val($PendingTasks.GetSample(1), 0));"


# (case, pool spec fields) -> normalized autoscale fields
SETTINGS = [
    ("off by default", {}, {}),
    ("off explicitly", {"enableAutoScale": False}, {}),
    (
        "on, with Azure's default interval",
        {"enableAutoScale": True, "autoScaleFormula": GROW},
        {"enableAutoScale": True, "autoScaleFormula": GROW, "autoScaleEvaluationInterval": "PT15M"},
    ),
    (
        "fleet allows intervals down to 5 s, for labs",
        {"enableAutoScale": True, "autoScaleFormula": GROW, "autoScaleEvaluationInterval": "PT5S"},
        {"enableAutoScale": True, "autoScaleFormula": GROW, "autoScaleEvaluationInterval": "PT5S"},
    ),
]


@pytest.mark.parametrize(("case", "data", "expected"), SETTINGS, ids=[c[0] for c in SETTINGS])
def test_settings(case: str, data: dict[str, Any], expected: dict[str, Any]) -> None:
    assert rules.parse_settings(data, T) == expected


# (case, pool spec fields) -> (code, field, text in the message)
BAD_SETTINGS = [
    ("a formula without enableAutoScale", {"autoScaleFormula": GROW},
     ("InvalidPropertyValue", "autoScaleFormula", "needs enableAutoScale")),
    ("enabled without a formula", {"enableAutoScale": True},
     ("InvalidPropertyValue", "autoScaleFormula", "needs an autoScaleFormula")),
    ("a formula that does not parse names line and column",
     {"enableAutoScale": True, "autoScaleFormula": "$a = 1;\n$TargetDedicatedNodes = (2;"},
     ("InvalidAutoScaleFormula", "autoScaleFormula", "line 2, column")),
    ("an interval under 5 s",
     {"enableAutoScale": True, "autoScaleFormula": GROW, "autoScaleEvaluationInterval": "PT1S"},
     ("InvalidPropertyValue", "autoScaleEvaluationInterval", "PT5S")),
    ("an interval over 168 h",
     {"enableAutoScale": True, "autoScaleFormula": GROW, "autoScaleEvaluationInterval": "P8D"},
     ("InvalidPropertyValue", "autoScaleEvaluationInterval", "PT168H")),
    ("an interval that is no duration",
     {"enableAutoScale": True, "autoScaleFormula": GROW, "autoScaleEvaluationInterval": "5m"},
     ("InvalidDuration", "autoScaleEvaluationInterval", "ISO 8601")),
    ("enableAutoScale not a boolean", {"enableAutoScale": "yes"},
     ("InvalidPropertyValue", "enableAutoScale", "")),
]  # fmt: skip


@pytest.mark.parametrize(("case", "data", "error"), BAD_SETTINGS, ids=[c[0] for c in BAD_SETTINGS])
def test_bad_settings(case: str, data: dict[str, Any], error: tuple[str, str, str]) -> None:
    with pytest.raises(BadInput) as caught:
        rules.parse_settings(data, T)
    code, field, text = error
    assert (caught.value.code, caught.value.field, caught.value.target) == (code, field, T)
    assert text in caught.value.message


def test_history_keeps_hours_and_says_when_a_sample_is_due() -> None:
    h = History()
    assert h.due(NOW)
    h.add(NOW - rules.HISTORY_SECONDS - 1, {"$ActiveTasks": 9})
    h.add(NOW, {"$ActiveTasks": 2})
    assert list(h.samples["$ActiveTasks"]) == [(NOW, 2.0)]  # the old one dropped
    assert not h.due(NOW + rules.SAMPLE_PERIOD - 1)
    assert h.due(NOW + rules.SAMPLE_PERIOD)


def test_task_metrics_count_tasks_and_slots_by_state() -> None:
    rows = [
        ("active", None, False, 4, 8),  # ready: 4 tasks of 2 slots
        ("active", None, True, 5, 5),  # held by dependencies: not active
        ("running", None, False, 2, 2),
        ("preparing", None, False, 1, 1),
        ("completed", "success", False, 7, 7),
        ("completed", "failure", False, 1, 1),
    ]
    m = rules.task_metrics(rows)
    assert m == {
        "$ActiveTasks": 4,
        "$RunningTasks": 3,
        "$PendingTasks": 7,
        "$SucceededTasks": 7,
        "$FailedTasks": 1,
        "$ActiveTaskSlots": 8,
        "$PendingTaskSlots": 11,
    }


def test_an_evaluation_gives_the_target_and_azures_run_record() -> None:
    h = History()
    h.add(NOW - 30, {"$PendingTasks": 1})
    h.add(NOW, {"$PendingTasks": 5})
    text = GROW + "\n$NodeDeallocationOption = taskcompletion;"
    out = rules.evaluate(text, h, PoolFacts(current_nodes=1, target_nodes=1), NOW)
    assert (out.target, out.option) == (3, "taskcompletion")
    assert out.run["timestamp"] == "2023-11-14T22:13:20.000Z"
    assert out.run["results"].startswith("$TargetDedicatedNodes=3;")
    assert "error" not in out.run
    assert out.values["$CurrentDedicatedNodes"] == "1"


def test_a_formula_that_fails_records_the_error_and_changes_nothing() -> None:
    out = rules.evaluate("$TargetDedicatedNodes = 1 / 0;", History(), PoolFacts(2, None), NOW)
    assert out.target is None
    assert out.run["error"]["code"] == "AutoScaleFormulaEvaluationError"
    assert "line 1" in out.run["error"]["message"]


def test_the_target_starts_at_the_node_count_when_the_pool_has_none() -> None:
    out = rules.evaluate("$x = $TargetDedicatedNodes;", History(), PoolFacts(2, None), NOW)
    assert out.target == 2


def test_node_metrics_average_the_nodes_busy_share_and_memory_in_use() -> None:
    a = [
        {"cpuBusy": 100, "cpuTotal": 1000, "memoryTotal": 8, "memoryAvailable": 6},
        {"cpuBusy": 150, "cpuTotal": 1100, "memoryTotal": 8, "memoryAvailable": 4},
    ]
    b = [{"cpuBusy": 0, "cpuTotal": 0, "memoryTotal": 8, "memoryAvailable": 8}]  # one reading
    assert rules.node_metrics([a, b]) == {"$CPUPercent": 50.0, "$MemoryBytes": 2.0}
    assert rules.node_metrics([[{}], []]) == {}  # nothing known: no sample at all
