"""Autoscale on the loopback lab: a formula grows a pool as tasks queue and shrinks it
when they are done; `fleet pool autoscale evaluate` changes nothing; bad formulas are
refused before anything is stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_pool, wait_for

pytestmark = pytest.mark.lab

FORMULA = (
    "memorySamples = $MemoryBytes.Count();\n"
    "pending = val($PendingTasks.GetSample(1), 0);\n"
    "$TargetDedicatedNodes = max(1, min(3, pending));\n"
    "$NodeDeallocationOption = taskcompletion;"
)


def _pool(fleet: Any, pool: str = "auto") -> dict[str, Any]:
    return fleet.json("pool", "show", pool)


def _create(fleet: Any, tmp_path: Path, spec: dict[str, Any]) -> None:
    path = tmp_path / f"{spec['id']}.json"
    path.write_text(json.dumps(spec))
    fleet("pool", "create", "--json-file", str(path))


def _idle_count(fleet: Any, pool: str = "auto") -> int:
    nodes = fleet.json("node", "list", "--pool", pool)
    return len(nodes) if all(n["state"] == "idle" for n in nodes) else -1


def test_a_formula_grows_the_pool_as_tasks_queue_and_shrinks_it_when_they_finish(
    fleet, lab_inventory, controller, tmp_path
):
    fleet("host", "import", str(lab_inventory))
    spec = {
        "id": "auto",
        "hostSelector": {"labels": {"lab": "true"}},
        "enableAutoScale": True,
        "autoScaleFormula": FORMULA,
        "autoScaleEvaluationInterval": "PT5S",
    }
    _create(fleet, tmp_path, spec)
    shown = _pool(fleet)
    assert shown["enableAutoScale"] is True and shown["autoScaleFormula"] == FORMULA
    controller()
    wait_for(lambda: _idle_count(fleet) == 1, 90, message="one idle node")
    run = _pool(fleet)["autoScaleRun"]
    assert run["results"].startswith("$TargetDedicatedNodes=1;")
    fleet("job", "create", "--id", "j", "--pool", "auto")
    for i in range(6):
        fleet("task", "create", "--job", "j", "--id", f"t{i}", "--command-line", "sleep 8")
    wait_for(
        lambda: len(fleet.json("node", "list", "--pool", "auto")) == 3,
        90,
        message="the pool grown to 3 nodes",
    )
    assert fleet("job", "wait", "j", "--timeout", "180", check=False).code == 0
    wait_for(lambda: _idle_count(fleet) == 1, 120, message="the pool shrunk back to 1 node")
    results = _pool(fleet)["autoScaleRun"]["results"]
    assert results.startswith("$TargetDedicatedNodes=1;")
    samples = dict(item.split("=", 1) for item in results.split(";"))["memorySamples"]
    assert int(samples) > 0  # node metrics, from the agents, reach the formula
    # the hosts it let go are free again: another pool can claim them
    free = [h["id"] for h in fleet.json("host", "list")]
    taken = {n["id"] for n in fleet.json("node", "list", "--pool", "auto")}
    fleet("pool", "create", "--id", "other", "--hosts", next(h for h in free if h not in taken))


def test_evaluate_prints_every_value_and_changes_nothing(fleet, lab_inventory, tmp_path):
    fleet("host", "import", str(lab_inventory))
    spec = {"id": "auto", "hostSelector": {"labels": {"lab": "true"}}, "targetDedicatedNodes": 1}
    _create(fleet, tmp_path, spec)
    before = _pool(fleet)
    run = fleet.json("pool", "autoscale", "evaluate", "auto", "--formula", FORMULA)
    assert run["results"].startswith("$TargetDedicatedNodes=1;")
    assert run["values"]["pending"] == "0"
    assert run["values"]["$CurrentDedicatedNodes"] == "1"
    failed = fleet(
        "pool", "autoscale", "evaluate", "auto", "--formula", "$x = 1 / 0;", "-o", "json",
        check=False,
    )  # fmt: skip
    assert failed.code == 1
    assert json.loads(failed.stdout)["error"]["code"] == "AutoScaleFormulaEvaluationError"
    assert _pool(fleet) == before


def test_bad_autoscale_input_is_refused_with_nothing_changed(fleet, lab_inventory, tmp_path):
    make_pool(fleet, lab_inventory, "listed", 1)
    bad = fleet("pool", "autoscale", "enable", "listed", "--formula", FORMULA, check=False)
    assert bad.code == 4 and "PoolNotResizable" in bad.stderr
    spec = {
        "id": "auto",
        "hostSelector": {"labels": {"lab": "true"}},
        "enableAutoScale": True,
        "autoScaleFormula": "$TargetDedicatedNodes = min(3,;",
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    refused = fleet("pool", "create", "--json-file", str(path), check=False)
    assert refused.code == 2
    assert "InvalidAutoScaleFormula" in refused.stderr and "line 1, column" in refused.stderr
    assert fleet("pool", "show", "auto", check=False).code == 3  # nothing stored
    short = fleet(
        "pool", "autoscale", "enable", "listed", "--formula", FORMULA,
        "--evaluation-interval", "PT1S", check=False,
    )  # fmt: skip
    assert short.code == 2 and "autoScaleEvaluationInterval" in short.stderr
    assert "enableAutoScale" not in _pool(fleet, "listed")
