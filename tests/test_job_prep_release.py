"""Job preparation and release tasks on the real lab: right nodes, right order, no bouncing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_pool, wait_for

pytestmark = pytest.mark.lab

MARK = "$FLEET_NODE_SHARED_DIR/prep-$FLEET_JOB_ID"


def _job(fleet, tmp_path: Path, **spec) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"id": "j", "poolInfo": {"poolId": "p"}, **spec}))
    fleet("job", "create", "--json-file", str(path))


def _status(fleet) -> dict[str, dict]:
    return {r["nodeId"]: r for r in fleet.json("job", "prep-release-status", "j")}


def test_prep_runs_once_per_node_before_tasks_and_release_runs_where_prep_ran(
    fleet, lab_inventory, controller, tmp_path
):
    hosts = make_pool(fleet, lab_inventory, "p", 3, "--task-slots-per-node", "2")
    controller()
    _job(
        fleet,
        tmp_path,
        maxParallelTasks=2,
        jobPreparationTask={"commandLine": f"/bin/sh -c 'sleep 3; echo ready >> {MARK}'"},
        jobReleaseTask={"commandLine": f"/bin/sh -c 'echo released >> {MARK}'"},
    )
    fleet.add_tasks(
        "j", [{"id": f"t{i}", "commandLine": f"/bin/sh -c 'cat {MARK}'"} for i in range(4)]
    )
    seen_preparing = wait_for(
        lambda: any(t["state"] == "preparing" for t in fleet.json("task", "list", "--job", "j")),
        30,
        interval=0.05,
        message="a task preparing",
    )
    assert seen_preparing
    assert fleet("job", "wait", "j", "--timeout", "90").code == 0
    tasks = fleet.json("task", "list", "--job", "j")
    used = {t["nodeInfo"]["nodeId"] for t in tasks}
    for t in tasks:
        out = fleet("task", "file", "download", "stdout.txt", "--job", "j", "--id", t["id"]).stdout
        assert out == "ready\n"  # prep ran exactly once on that node, before the task
    status = _status(fleet)
    assert set(status) == used and used <= set(hosts)
    for row in status.values():
        prep = row["jobPreparationTaskExecutionInfo"]
        assert (
            prep["state"] == "completed" and prep["exitCode"] == 0 and prep["result"] == "success"
        )
        assert "jobReleaseTaskExecutionInfo" not in row
    fleet("job", "terminate", "j")
    wait_for(
        lambda: fleet.json("job", "show", "j")["state"] == "completed", 60, message="completed"
    )
    for node, row in _status(fleet).items():
        assert row["jobReleaseTaskExecutionInfo"]["exitCode"] == 0
        root = Path(row["jobPreparationTaskExecutionInfo"]["taskRootDirectory"]).parents[3]
        assert (root / "shared" / "prep-j").read_text() == "ready\nreleased\n", node


def test_failed_prep_keeps_the_jobs_tasks_off_that_node_without_bouncing(
    fleet, lab_inventory, controller, tmp_path
):
    good, bad = make_pool(fleet, lab_inventory, "p", 2, "--task-slots-per-node", "2")
    controller()
    _job(
        fleet,
        tmp_path,
        jobPreparationTask={
            "commandLine": f"/bin/sh -c 'test $FLEET_NODE_ID != {bad}'",
            "constraints": {"maxTaskRetryCount": 1},
        },
    )
    for i in range(6):
        fleet("task", "create", "--job", "j", "--id", f"t{i}", "--command-line", "sleep 0.2")
    assert fleet("job", "wait", "j", "--timeout", "90").code == 0
    for t in fleet.json("task", "list", "--job", "j"):
        assert t["nodeInfo"]["nodeId"] == good
        assert t["executionInfo"]["retryCount"] == 0
        assert t["executionInfo"]["requeueCount"] == 0
    status = _status(fleet)
    assert status[bad]["jobPreparationTaskExecutionInfo"]["result"] == "failure"
    assert status[bad]["jobPreparationTaskExecutionInfo"]["retryCount"] == 1
    assert status[good]["jobPreparationTaskExecutionInfo"]["result"] == "success"


def test_release_without_prep_is_rejected(fleet, lab_inventory, tmp_path):
    make_pool(fleet, lab_inventory, "p", 1)
    path = tmp_path / "job.json"
    path.write_text(
        json.dumps(
            {"id": "j", "poolInfo": {"poolId": "p"}, "jobReleaseTask": {"commandLine": "true"}}
        )
    )
    result = fleet("job", "create", "--json-file", str(path), "-o", "json", check=False)
    assert result.code == 2
    assert json.loads(result.stderr)["error"]["field"] == "jobReleaseTask"
    assert fleet.json("job", "list") == []
