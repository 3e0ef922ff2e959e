"""Retries, requeues and wall-clock limits on the real lab, with exact counters."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import make_pool, wait_for

pytestmark = pytest.mark.lab


def _add(fleet, tmp_path: Path, job: str, tasks: list[dict]) -> None:
    spec = tmp_path / f"{job}-tasks.json"
    spec.write_text(json.dumps(tasks))
    fleet("task", "create", "--job", job, "--json-file", str(spec))


def _info(fleet, job: str, task: str) -> dict:
    return fleet.json("task", "show", "--job", job, "--id", task)["executionInfo"]


@pytest.fixture
def pool(fleet, lab_inventory, controller):
    make_pool(fleet, lab_inventory, "p", 2, "--task-slots-per-node", "4")
    controller()
    return fleet


def test_retry_counts_are_exact_for_0_2_and_unlimited(pool, tmp_path):
    pool("job", "create", "--id", "j", "--pool", "p")
    _add(
        pool,
        tmp_path,
        "j",
        [
            {"id": "never", "commandLine": "false", "constraints": {"maxTaskRetryCount": 0}},
            {
                "id": "twice",
                "commandLine": "/bin/sh -c 'echo attempt $FLEET_TASK_ATTEMPT; exit 9'",
                "constraints": {"maxTaskRetryCount": 2},
            },
            # Unlimited, bounded by the test: succeeds on its fourth attempt.
            {
                "id": "until",
                "commandLine": "/bin/sh -c 'test $FLEET_TASK_ATTEMPT -ge 4'",
                "constraints": {"maxTaskRetryCount": -1},
            },
        ],
    )
    assert pool("job", "wait", "j", "--timeout", "90", check=False).code == 1
    never, twice, until = (_info(pool, "j", t) for t in ("never", "twice", "until"))
    assert never["retryCount"] == 0 and never["result"] == "failure"
    assert twice["retryCount"] == 2 and twice["exitCode"] == 9 and twice["result"] == "failure"
    assert "lastRetryTime" in twice
    out = pool("task", "file", "download", "stdout.txt", "--job", "j", "--id", "twice").stdout
    assert out == "attempt 3\n"  # the last of three tries
    assert until["retryCount"] == 3 and until["result"] == "success" and until["exitCode"] == 0
    assert "failureInfo" not in until
    for info in (never, twice, until):
        assert info["requeueCount"] == 0


def test_job_max_task_retry_count_is_the_default_for_its_tasks(pool, tmp_path):
    spec = tmp_path / "job.json"
    spec.write_text(
        json.dumps(
            {"id": "j", "poolInfo": {"poolId": "p"}, "constraints": {"maxTaskRetryCount": 1}}
        )
    )
    pool("job", "create", "--json-file", str(spec))
    _add(
        pool,
        tmp_path,
        "j",
        [
            {"id": "inherits", "commandLine": "false"},
            {"id": "overrides", "commandLine": "false", "constraints": {"maxTaskRetryCount": 0}},
        ],
    )
    pool("job", "wait", "j", "--timeout", "60", check=False)
    assert _info(pool, "j", "inherits")["retryCount"] == 1
    assert _info(pool, "j", "overrides")["retryCount"] == 0


def test_wall_clock_limit_kills_the_whole_process_tree(pool, tmp_path):
    pool("job", "create", "--id", "j", "--pool", "p")
    _add(
        pool,
        tmp_path,
        "j",
        [
            {
                "id": "slow",
                "commandLine": "/bin/sh -c 'sleep 120 & echo $! > $FLEET_TASK_DIR/child; sleep 120'",
                "constraints": {"maxWallClockTime": "PT2S"},
            }
        ],
    )
    assert pool("job", "wait", "j", "--timeout", "60", check=False).code == 1
    task = pool.json("task", "show", "--job", "j", "--id", "slow")
    info = task["executionInfo"]
    assert info["failureInfo"]["code"] == "TaskEnded"
    assert info["failureInfo"]["category"] == "servererror"
    assert info["exitCode"] in (128 + 15, 128 + 9)
    assert info["retryCount"] == 0
    child = int(Path(task["nodeInfo"]["taskRootDirectory"], "child").read_text())
    assert (
        not os.path.exists(f"/proc/{child}")
        or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    )


def test_iso_durations_are_validated(pool, tmp_path):
    pool("job", "create", "--id", "j", "--pool", "p")
    spec = tmp_path / "bad.json"
    spec.write_text(
        json.dumps(
            {"id": "t", "commandLine": "true", "constraints": {"maxWallClockTime": "90 minutes"}}
        )
    )
    result = pool(
        "task", "create", "--job", "j", "--json-file", str(spec), "-o", "json", check=False
    )
    assert result.code == 2
    err = json.loads(result.stderr)["error"]
    assert err["code"] == "InvalidDuration" and err["field"] == "constraints.maxWallClockTime"
    assert pool.json("task", "list", "--job", "j") == []


def test_task_directories_are_swept_after_their_retention_time(fleet, lab_inventory, controller):
    make_pool(fleet, lab_inventory, "p", 1)
    controller("--sweep-interval", "0.5")
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet.add_tasks(
        "j",
        [
            {"id": "short", "commandLine": "true", "constraints": {"retentionTime": "PT1S"}},
            {"id": "kept", "commandLine": "true"},
        ],
    )
    fleet("job", "wait", "j", "--timeout", "60")
    tasks = {
        t["id"]: Path(t["nodeInfo"]["taskRootDirectory"])
        for t in fleet.json("task", "list", "--job", "j")
    }
    wait_for(lambda: not tasks["short"].exists(), 30, message="short task dir swept")
    assert tasks["kept"].is_dir()  # the default retention is 7 days
    # The collected copies stay with the controller.
    assert fleet("task", "file", "download", "stdout.txt", "--job", "j", "--id", "short").code == 0
