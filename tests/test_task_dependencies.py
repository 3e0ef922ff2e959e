"""Task dependencies on the real lab: by id, by range, blocking, and rejected graphs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_pool, wait_for

pytestmark = pytest.mark.lab


@pytest.fixture
def job(fleet, lab_inventory, controller, tmp_path):
    make_pool(fleet, lab_inventory, "p", 2, "--task-slots-per-node", "4")
    controller()
    spec = tmp_path / "job.json"
    spec.write_text(
        json.dumps({"id": "j", "poolInfo": {"poolId": "p"}, "usesTaskDependencies": True})
    )
    fleet("job", "create", "--json-file", str(spec))
    return fleet


def _add(fleet, tmp_path: Path, tasks, check=True):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    return fleet(
        "task", "create", "--job", "j", "--json-file", str(path), "-o", "json", check=check
    )


def _tasks(fleet) -> dict[str, dict]:
    return {t["id"]: t for t in fleet.json("task", "list", "--job", "j")}


def test_dependents_start_only_after_their_parents_by_id_and_by_range(job, tmp_path):
    _add(
        job,
        tmp_path,
        [
            {"id": "1", "commandLine": "sleep 1"},
            {"id": "2", "commandLine": "sleep 1"},
            {"id": "3", "commandLine": "true", "dependsOn": {"taskIds": ["1"]}},
            {
                "id": "sum",
                "commandLine": "true",
                "dependsOn": {"taskIdRanges": [{"start": 1, "end": 3}]},
            },
            {"id": "last", "commandLine": "true", "dependsOn": {"taskIds": ["sum", "2"]}},
        ],
    )
    assert job("job", "wait", "j", "--timeout", "90").code == 0
    t = {k: v["executionInfo"] for k, v in _tasks(job).items()}
    assert t["3"]["startTime"] >= t["1"]["endTime"]
    for parent in ("1", "2", "3"):
        assert t["sum"]["startTime"] >= t[parent]["endTime"]
    assert t["last"]["startTime"] >= max(t["sum"]["endTime"], t["2"]["endTime"])


def test_a_failed_parent_blocks_its_dependents_and_says_which(job, tmp_path):
    _add(
        job,
        tmp_path,
        [
            {"id": "bad", "commandLine": "false"},
            {"id": "child", "commandLine": "true", "dependsOn": {"taskIds": ["bad"]}},
            {"id": "grandchild", "commandLine": "true", "dependsOn": {"taskIds": ["child"]}},
        ],
    )
    wait_for(lambda: _tasks(job)["bad"]["state"] == "completed", 60, message="parent done")
    child = wait_for(
        lambda: (
            (c := _tasks(job)["child"]).get("dependencyState", {}).get("state") == "blocked" and c
        ),
        30,
        message="child blocked",
    )
    assert child["state"] == "active"
    assert child["dependencyState"] == {"state": "blocked", "parentId": "bad"}
    assert _tasks(job)["grandchild"]["dependencyState"] == {"state": "waiting", "parentId": "child"}
    assert job("job", "wait", "j", "--timeout", "2", check=False).code == 5


def test_exit_conditions_can_let_a_failed_parent_satisfy(job, tmp_path):
    _add(
        job,
        tmp_path,
        [
            {
                "id": "flaky",
                "commandLine": "/bin/sh -c 'exit 2'",
                "exitConditions": {
                    "exitCodes": [{"code": 2, "exitOptions": {"dependencyAction": "satisfy"}}]
                },
            },
            {"id": "after", "commandLine": "true", "dependsOn": {"taskIds": ["flaky"]}},
        ],
    )
    wait_for(lambda: _tasks(job)["after"]["state"] == "completed", 60, message="dependent ran")
    assert _tasks(job)["after"]["executionInfo"]["result"] == "success"


def test_bad_dependency_graphs_are_rejected_and_nothing_is_stored(job, fleet, tmp_path):
    unknown = _add(
        job,
        tmp_path,
        [{"id": "a", "commandLine": "true", "dependsOn": {"taskIds": ["ghost"]}}],
        check=False,
    )
    assert unknown.code == 2
    assert json.loads(unknown.stderr)["error"]["code"] == "TaskDependencyUnknownParent"
    cycle = _add(
        job,
        tmp_path,
        [
            {"id": "x", "commandLine": "true", "dependsOn": {"taskIds": ["y"]}},
            {"id": "y", "commandLine": "true", "dependsOn": {"taskIds": ["x"]}},
        ],
        check=False,
    )
    assert cycle.code == 2
    err = json.loads(cycle.stderr)["error"]
    assert err["code"] == "TaskDependencyCycle" and "x" in err["message"] and "y" in err["message"]
    _add(
        job,
        tmp_path,
        [
            {
                "id": "5",
                "commandLine": "sleep 30",
                "dependsOn": {"taskIdRanges": [{"start": 1, "end": 4}]},
            }
        ],
    )
    # A new task inside that range which depends on 5 would close a cycle.
    closing = _add(
        job,
        tmp_path,
        [{"id": "3", "commandLine": "true", "dependsOn": {"taskIds": ["5"]}}],
        check=False,
    )
    assert closing.code == 2
    assert json.loads(closing.stderr)["error"]["code"] == "TaskDependencyCycle"
    assert set(_tasks(job)) == {"5"}
    fleet("job", "create", "--id", "plain", "--pool", "p")
    plain = tmp_path / "plain.json"
    plain.write_text(
        json.dumps(
            [
                {"id": "a", "commandLine": "true"},
                {"id": "b", "commandLine": "true", "dependsOn": {"taskIds": ["a"]}},
            ]
        )
    )
    refused = fleet(
        "task", "create", "--job", "plain", "--json-file", str(plain), "-o", "json", check=False
    )
    assert refused.code == 2
    assert json.loads(refused.stderr)["error"]["code"] == "TaskDependenciesNotSpecifiedOnJob"
    assert fleet.json("task", "list", "--job", "plain") == []
