"""Task lifecycle on the real lab: terminate, reactivate, delete, update constraints."""

from __future__ import annotations

import pytest

from tests.conftest import make_pool, wait_for

pytestmark = pytest.mark.lab


@pytest.fixture
def job(fleet, lab_inventory, controller):
    make_pool(fleet, lab_inventory, "p", 1, "--task-slots-per-node", "4")
    controller()
    fleet("job", "create", "--id", "j", "--pool", "p")
    return fleet


def _show(fleet, task: str) -> dict:
    return fleet.json("task", "show", "--job", "j", "--id", task)


def test_terminating_a_running_task_fails_it_without_retry(job):
    job("task", "create", "--job", "j", "--id", "t", "--command-line", "sleep 120")
    job("task", "set", "--job", "j", "--id", "t", "--max-task-retry-count", "3")
    wait_for(lambda: _show(job, "t")["state"] == "running", 60, message="running")
    job("task", "terminate", "--job", "j", "--id", "t")
    wait_for(lambda: _show(job, "t")["state"] == "completed", 60, message="completed")
    info = _show(job, "t")["executionInfo"]
    assert info["failureInfo"]["code"] == "TaskEnded" and info["retryCount"] == 0
    again = job("task", "terminate", "--job", "j", "--id", "t", "-o", "json", check=False)
    assert again.code == 4


def test_terminating_an_active_task_completes_it_at_once(job):
    job("job", "set", "j", "--max-parallel-tasks", "1")
    job("task", "create", "--job", "j", "--id", "busy", "--command-line", "sleep 120")
    job("task", "create", "--job", "j", "--id", "queued", "--command-line", "true")
    wait_for(lambda: _show(job, "busy")["state"] == "running", 60, message="running")
    assert _show(job, "queued")["state"] == "active"
    job("task", "terminate", "--job", "j", "--id", "queued")
    task = _show(job, "queued")
    assert task["state"] == "completed"
    assert task["executionInfo"]["failureInfo"]["code"] == "TaskEnded"
    assert "nodeInfo" not in task


def test_reactivating_a_failed_task_runs_it_again_with_counters_reset(job):
    job.add_tasks(
        "j",
        {
            "id": "t",
            "constraints": {"maxTaskRetryCount": 1},
            "commandLine": "/bin/sh -c 'test -e $FLEET_NODE_SHARED_DIR/fixed-$FLEET_JOB_ID'",
        },
    )
    assert job("job", "wait", "j", "--timeout", "60", check=False).code == 1
    failed = _show(job, "t")
    assert failed["executionInfo"]["retryCount"] == 1
    # The problem gets fixed on the node, then the reactivated task succeeds.
    root = failed["nodeInfo"]["taskRootDirectory"].split("/workitems/")[0]
    job("exec", "--pool", "p", "--", "touch", f"{root}/shared/fixed-j")
    ok = job("task", "reactivate", "--job", "j", "--id", "t", "-o", "json", check=False)
    assert ok.code == 0
    assert job("job", "wait", "j", "--timeout", "60").code == 0
    info = _show(job, "t")["executionInfo"]
    assert info["result"] == "success" and info["retryCount"] == 0
    refused = job("task", "reactivate", "--job", "j", "--id", "t", "-o", "json", check=False)
    assert refused.code == 4  # only failed tasks


def test_deleting_tasks_removes_them_running_or_not(job):
    job("task", "create", "--job", "j", "--id", "done", "--command-line", "true")
    job("job", "wait", "j", "--timeout", "60")
    job("task", "create", "--job", "j", "--id", "busy", "--command-line", "sleep 120")
    wait_for(lambda: _show(job, "busy")["state"] == "running", 60, message="running")
    assert job.json("task", "delete", "--job", "j", "--id", "done")["deleted"] is True
    job("task", "delete", "--job", "j", "--id", "busy")
    wait_for(
        lambda: job("task", "show", "--job", "j", "--id", "busy", check=False).code == 3,
        60,
        message="busy deleted",
    )
    assert job.json("task", "list", "--job", "j") == []
    assert (
        job(
            "task", "file", "download", "stdout.txt", "--job", "j", "--id", "done", check=False
        ).code
        == 3
    )
