"""Job lifecycle on the real lab: terminate, disable, enable, delete, limits and actions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_pool, wait_for

pytestmark = pytest.mark.lab

SLEEPER = "/bin/sh -c 'test $FLEET_TASK_ATTEMPT -ge 2 || sleep 120'"


@pytest.fixture
def pool(fleet, lab_inventory, controller):
    make_pool(fleet, lab_inventory, "p", 2, "--task-slots-per-node", "2")
    controller()
    return fleet


def _job(fleet, tmp_path: Path, **spec) -> None:
    path = tmp_path / f"{spec['id']}.json"
    path.write_text(json.dumps({"poolInfo": {"poolId": "p"}, **spec}))
    fleet("job", "create", "--json-file", str(path))


def _state(fleet, job: str, task: str) -> dict:
    return fleet.json("task", "show", "--job", job, "--id", task)


def _running(fleet, job: str, task: str) -> dict:
    return wait_for(
        lambda: (t := _state(fleet, job, task))["state"] == "running" and t,
        60,
        message=f"{job}/{task} running",
    )


def test_terminate_kills_running_tasks_and_completes_the_job(pool):
    pool("job", "create", "--id", "j", "--pool", "p")
    pool("task", "create", "--job", "j", "--id", "t", "--command-line", "sleep 120")
    _running(pool, "j", "t")
    pool("job", "terminate", "j", "--reason", "enough")
    result = pool("job", "wait", "j", "--timeout", "60", "-o", "json", check=False)
    assert result.code == 1
    assert result.json()["state"] == "completed"
    job = pool.json("job", "show", "j")
    assert job["state"] == "completed" and job["executionInfo"]["terminateReason"] == "enough"
    info = _state(pool, "j", "t")["executionInfo"]
    assert info["result"] == "failure" and info["failureInfo"]["code"] == "TaskEnded"
    again = pool("job", "terminate", "j", "-o", "json", check=False)
    assert again.code == 4


def test_disable_requeue_puts_running_tasks_back_and_enable_runs_them(pool):
    pool("job", "create", "--id", "j", "--pool", "p")
    pool("task", "create", "--job", "j", "--id", "t", "--command-line", SLEEPER)
    _running(pool, "j", "t")
    pool("job", "disable", "j", "--disable-tasks", "requeue")
    wait_for(lambda: pool.json("job", "show", "j")["state"] == "disabled", 60, message="disabled")
    task = _state(pool, "j", "t")
    assert task["state"] == "active"
    assert task["executionInfo"]["requeueCount"] == 1
    assert task["executionInfo"]["retryCount"] == 0
    pool("job", "enable", "j")
    assert pool("job", "wait", "j", "--timeout", "60").code == 0
    assert _state(pool, "j", "t")["executionInfo"]["result"] == "success"


def test_disable_terminate_ends_running_tasks(pool):
    pool("job", "create", "--id", "j", "--pool", "p")
    pool("task", "create", "--job", "j", "--id", "t", "--command-line", "sleep 120")
    _running(pool, "j", "t")
    pool("job", "disable", "j", "--disable-tasks", "terminate")
    wait_for(lambda: pool.json("job", "show", "j")["state"] == "disabled", 60, message="disabled")
    info = _state(pool, "j", "t")["executionInfo"]
    assert info["failureInfo"]["code"] == "TaskEnded"


def test_disable_wait_lets_running_tasks_finish_and_holds_the_rest(pool):
    pool("job", "create", "--id", "j", "--pool", "p")
    pool("task", "create", "--job", "j", "--id", "t", "--command-line", "sleep 2")
    _running(pool, "j", "t")
    pool("job", "disable", "j", "--disable-tasks", "wait")
    pool("task", "create", "--job", "j", "--id", "later", "--command-line", "true", check=False)
    wait_for(lambda: pool.json("job", "show", "j")["state"] == "disabled", 60, message="disabled")
    assert _state(pool, "j", "t")["executionInfo"]["result"] == "success"
    bad = pool("job", "disable", "j", "--disable-tasks", "sometimes", "-o", "json", check=False)
    assert bad.code in (2, 4)


def test_delete_kills_running_tasks_and_removes_the_job(pool):
    pool("job", "create", "--id", "j", "--pool", "p")
    pool("task", "create", "--job", "j", "--id", "t", "--command-line", "sleep 120")
    task = _running(pool, "j", "t")
    pool("job", "delete", "j")
    wait_for(lambda: pool("job", "show", "j", check=False).code == 3, 60, message="job deleted")
    assert pool("task", "list", "--job", "j", check=False).code == 3
    assert task["nodeInfo"]["taskRootDirectory"]


def test_job_wall_clock_limit_terminates_the_job(pool, tmp_path):
    _job(pool, tmp_path, id="j", constraints={"maxWallClockTime": "PT8S"})  # room for a slow CLI
    pool("task", "create", "--job", "j", "--id", "t", "--command-line", "sleep 120")
    result = pool("job", "wait", "j", "--timeout", "60", "-o", "json", check=False)
    assert result.code == 1
    assert result.json()["terminateReason"] == "MaxWallClockTimeExpiry"
    assert _state(pool, "j", "t")["executionInfo"]["failureInfo"]["code"] == "TaskEnded"


def test_on_all_tasks_complete_terminates_the_job(pool, tmp_path):
    pool("job", "create", "--id", "j", "--pool", "p")
    pool("task", "create", "--job", "j", "--id", "a", "--command-line", "true")
    pool("task", "create", "--job", "j", "--id", "b", "--command-line", "true")
    pool("job", "set", "j", "--on-all-tasks-complete", "terminatejob")
    wait_for(lambda: pool.json("job", "show", "j")["state"] == "completed", 60, message="completed")
    assert pool.json("job", "show", "j")["executionInfo"]["terminateReason"] == "AllTasksComplete"


def test_exit_conditions_terminate_the_job_on_a_matching_failure(pool, tmp_path):
    _job(pool, tmp_path, id="j", onTaskFailure="performexitoptionsjobaction")
    spec = tmp_path / "t.json"
    spec.write_text(
        json.dumps(
            [
                {
                    "id": "ok-fail",
                    "commandLine": "/bin/sh -c 'exit 4'",
                    "exitConditions": {
                        "exitCodes": [{"code": 4, "exitOptions": {"jobAction": "none"}}]
                    },
                },
                {
                    "id": "fatal",
                    "commandLine": "/bin/sh -c 'sleep 1; exit 3'",
                    "exitConditions": {
                        "exitCodeRanges": [
                            {"start": 1, "end": 3, "exitOptions": {"jobAction": "terminate"}}
                        ]
                    },
                },
                {"id": "long", "commandLine": "sleep 120"},
            ]
        )
    )
    pool("task", "create", "--job", "j", "--json-file", str(spec))
    wait_for(lambda: pool.json("job", "show", "j")["state"] == "completed", 60, message="completed")
    assert pool.json("job", "show", "j")["executionInfo"]["terminateReason"] == "TaskFailed"
    assert _state(pool, "j", "long")["executionInfo"]["failureInfo"]["code"] == "TaskEnded"


def test_max_parallel_tasks_limits_concurrency(pool, tmp_path):
    _job(pool, tmp_path, id="j", maxParallelTasks=1)
    for i in range(3):
        pool("task", "create", "--job", "j", "--id", f"t{i}", "--command-line", "sleep 1")
    pool("job", "wait", "j", "--timeout", "60")
    spans = sorted(
        (t["executionInfo"]["startTime"], t["executionInfo"]["endTime"])
        for t in pool.json("task", "list", "--job", "j")
    )
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end  # never two at once


def test_task_environment_overrides_the_jobs_common_environment(pool, tmp_path):
    _job(
        pool,
        tmp_path,
        id="j",
        commonEnvironmentSettings=[
            {"name": "SHARED", "value": "from-job"},
            {"name": "OVERRIDDEN", "value": "from-job"},
        ],
    )
    pool(
        "task",
        "create",
        "--job",
        "j",
        "--id",
        "t",
        "--env",
        "OVERRIDDEN=from-task",
        "--command-line",
        "/bin/sh -c 'echo $SHARED $OVERRIDDEN'",
    )
    pool("job", "wait", "j", "--timeout", "60")
    out = pool("task", "file", "download", "stdout.txt", "--job", "j", "--id", "t").stdout
    assert out == "from-job from-task\n"
