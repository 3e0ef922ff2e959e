"""Task resource statistics: the agent's rusage in the exit record, and task and job ``stats``
on the real lab."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from fleet import durations, specs, task_stats
from tests.conftest import make_pool
from tests.test_agent import AGENT_PYTHON, AgentClient, spawn_args

BURN = "sum(range(10**7))"
FSYNC_MIB = (
    "import os; f = open('out.bin', 'wb'); f.write(b'x' * (1 << 20)); f.flush(); "
    "os.fsync(f.fileno())"
)


@pytest.fixture
def agent(tmp_path: Path):
    client = AgentClient(tmp_path / "root", tmp_path / "agent.stderr")
    yield client
    client.close()


def _on_a_block_device(path: Path) -> bool:
    """True if writes under ``path`` reach a disk the kernel counts blocks for (not tmpfs
    or an overlay, whose devices are anonymous: major 0)."""
    return os.major(os.stat(path).st_dev) != 0


def test_the_exit_record_counts_the_command_and_the_children_it_waited_for(agent, tmp_path):
    # sh waits for the python it starts, so python's CPU time is in sh's rusage
    script = '"$0" -c "$1"; "$0" -c "$2"; sleep 0.3'
    argv = ["sh", "-c", script, AGENT_PYTHON, BURN, FSYNC_MIB]
    agent.call("spawn", spawn_args("t", argv))
    record = agent.wait_exited("workitems/job/t")["exit"]
    assert record["exitCode"] == 0
    stats = record["stats"]
    assert set(stats) == set(task_stats.RECORD_KEYS.values())
    assert stats["userCPUSeconds"] > 0.05
    assert stats["kernelCPUSeconds"] >= 0
    assert stats["wallClockSeconds"] >= 0.3
    assert stats["maxRSSBytes"] > 1 << 20
    assert all(isinstance(stats[k], int) for k in ("readBlocks", "writeBlocks", "maxRSSBytes"))
    if _on_a_block_device(tmp_path):
        assert stats["writeBlocks"] >= 2048  # 1 MiB in 512-byte blocks
    assert task_stats.from_record(record) is not None


def test_a_task_stopped_at_its_wall_clock_limit_reports_its_usage(agent):
    agent.call("spawn", spawn_args("slow", ["sleep", "60"], maxWallClockSeconds=1))
    record = agent.wait_exited("workitems/job/slow")["exit"]
    assert record["timedOut"] is True
    assert 1.0 <= record["stats"]["wallClockSeconds"] < 10


def test_a_command_that_cannot_start_reports_no_usage(agent, tmp_path):
    args = spawn_args("none", ["/nonexistent/program"])
    assert agent.error_code("spawn", args) == "CommandProgramNotFound"
    record = json.loads((tmp_path / "root/workitems/job/none/exit.json").read_text())
    assert record["error"]["code"] == "CommandProgramNotFound"
    assert record["stats"] is None and task_stats.from_record(record) is None


def _seconds(text: str) -> float:
    value = durations.parse(text)
    assert value is not None
    return value


@pytest.mark.lab
def test_task_and_job_show_report_resource_statistics(fleet, lab_inventory, controller):
    make_pool(fleet, lab_inventory, "p", 1, "--task-slots-per-node", "3")
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet.add_tasks(
        "j",
        [  # tasks run as the pool's task user: the node's python3, not this venv's
            {"id": "burn", "commandLine": f"python3 -c {shlex.quote(BURN)}"},
            {"id": "write", "commandLine": f"python3 -c {shlex.quote(FSYNC_MIB)}"},
            {"id": "sleep", "commandLine": "sleep 0.5"},
            {  # two attempts of 0.3 s: a task's statistics cover its whole life
                "id": "retried",
                "commandLine": "/bin/sh -c 'sleep 0.3; exit 3'",
                "constraints": {"maxTaskRetryCount": 1},
            },
        ],
    )
    controller()
    assert fleet("job", "wait", "j", "--timeout", "60", check=False).code == 1  # one failed
    tasks = {t["id"]: t for t in fleet.json("task", "list", "--job", "j")}
    stats = {task_id: task["stats"] for task_id, task in tasks.items()}
    assert _seconds(stats["burn"]["userCPUTime"]) > 0.05
    assert _seconds(stats["sleep"]["wallClockTime"]) >= 0.5
    assert tasks["retried"]["executionInfo"]["retryCount"] == 1
    assert _seconds(stats["retried"]["wallClockTime"]) >= 0.6
    for task_id, s in stats.items():
        assert s["maxRSSBytes"] > 1 << 20, task_id
        assert s["startTime"] == tasks[task_id]["creationTime"]
        assert _seconds(s["waitTime"]) >= 0
        assert s["writeIOGiB"] == s["writeIOps"] * 512 / (1 << 30)
    shown = fleet.json("task", "show", "--job", "j", "--id", "write")
    assert shown["stats"] == stats["write"]  # the same from either read
    # what task show prints stays valid input: stats are read-only and ignored
    assert "stats" not in specs.parse_task(shown | {"id": "again"}, "j")

    job_shown = fleet.json("job", "show", "j")
    job = job_shown["stats"]
    assert job["startTime"] == job_shown["creationTime"]
    for key in ("userCPUTime", "kernelCPUTime", "wallClockTime"):
        total = sum(_seconds(s[key]) for s in stats.values())
        assert _seconds(job[key]) == pytest.approx(total, abs=1e-6), key
    for key in ("readIOps", "writeIOps"):
        assert job[key] == sum(s[key] for s in stats.values()), key
    assert job["maxRSSBytes"] == max(s["maxRSSBytes"] for s in stats.values())
    assert (job["numSucceededTasks"], job["numFailedTasks"], job["numTaskRetries"]) == (3, 1, 1)
