"""End to end on the real lab: pools bootstrap, tasks run, results are recorded exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import (
    ControllerProcess,
    Fleet,
    make_pool,
    pg_database,
    wait_for,
    wait_for_idle_nodes,
)

pytestmark = pytest.mark.lab


def _task(fleet: Fleet, job: str, task: str) -> dict:
    return fleet.json("task", "show", "--job", job, "--id", task)


def _file(fleet: Fleet, job: str, task: str, name: str) -> str:
    return fleet("task", "file", "download", name, "--job", job, "--id", task).stdout


def test_task_stdout_stderr_and_exit_code_are_recorded_exactly(fleet, lab_inventory, controller):
    make_pool(fleet, lab_inventory, "p", 2)
    controller()
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet(
        "task",
        "create",
        "--job",
        "j",
        "--id",
        "t1",
        "--command-line",
        "/bin/sh -c 'echo out; echo err >&2; exit 3'",
    )
    result = fleet("job", "wait", "j", "--timeout", "60", check=False)
    assert result.code == 1, result.stderr  # a failed task makes wait exit 1

    task = _task(fleet, "j", "t1")
    assert task["state"] == "completed"
    info = task["executionInfo"]
    assert info["exitCode"] == 3
    assert info["result"] == "failure"
    assert info["failureInfo"]["code"] == "FailureExitCode"
    assert info["retryCount"] == 0 and info["requeueCount"] == 0
    assert task["nodeInfo"]["poolId"] == "p"
    assert task["nodeInfo"]["taskRootDirectory"].endswith("/workitems/j/job-1/t1")
    assert _file(fleet, "j", "t1", "stdout.txt") == "out\n"
    assert _file(fleet, "j", "t1", "stderr.txt") == "err\n"
    record = json.loads(_file(fleet, "j", "t1", "exit.json"))
    assert record["exitCode"] == 3


def test_job_wait_exits_zero_when_every_task_succeeds(fleet, lab_inventory, controller, tmp_path):
    make_pool(fleet, lab_inventory, "p", 2, "--task-slots-per-node", "2")
    controller()
    fleet("job", "create", "--id", "j", "--pool", "p")
    tasks = [{"id": f"t{i}", "commandLine": f"echo task {i}"} for i in range(12)]
    spec = tmp_path / "tasks.json"
    spec.write_text(json.dumps(tasks))
    fleet("task", "create", "--job", "j", "--json-file", str(spec))
    assert fleet("job", "wait", "j", "--timeout", "60", "-o", "json").json()["taskCounts"] == {
        "active": 0,
        "running": 0,
        "completed": 12,
        "succeeded": 12,
        "failed": 0,
    }
    for i in range(12):
        assert _file(fleet, "j", f"t{i}", "stdout.txt") == f"task {i}\n"
    nodes = {t["nodeInfo"]["nodeId"] for t in fleet.json("task", "list", "--job", "j")}
    assert len(nodes) == 2  # spread used both nodes


def test_shell_metacharacters_reach_the_program_literally(fleet, lab_inventory, controller):
    make_pool(fleet, lab_inventory, "p", 1)
    controller()
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet(
        "task",
        "create",
        "--job",
        "j",
        "--id",
        "t",
        "--command-line",
        "echo '$(id)' ';' '`uname`' '&&' '|' '$HOME' '*'",
    )
    fleet("job", "wait", "j", "--timeout", "60")
    assert _file(fleet, "j", "t", "stdout.txt") == "$(id) ; `uname` && | $HOME *\n"


def test_tasks_get_fleet_and_azure_environment_variables(fleet, lab_inventory, controller):
    make_pool(fleet, lab_inventory, "p", 1)
    controller()
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet(
        "task",
        "create",
        "--job",
        "j",
        "--id",
        "t",
        "--env",
        "GREETING=hello world",
        "--command-line",
        "/bin/sh -c 'env; echo CWD=$(pwd -P)'",
    )
    fleet("job", "wait", "j", "--timeout", "60")
    env = dict(
        line.split("=", 1)
        for line in _file(fleet, "j", "t", "stdout.txt").splitlines()
        if "=" in line
    )
    assert env["GREETING"] == "hello world"
    for name, value in [("JOB_ID", "j"), ("TASK_ID", "t"), ("POOL_ID", "p"), ("TASK_ATTEMPT", "1")]:
        assert env[f"FLEET_{name}"] == value
        assert env[f"AZ_BATCH_{name}"] == value
    root = env["FLEET_NODE_ROOT_DIR"]
    assert env["AZ_BATCH_NODE_ROOT_DIR"] == root
    assert env["FLEET_TASK_WORKING_DIR"] == f"{root}/workitems/j/job-1/t/wd"
    assert env["AZ_BATCH_TASK_DIR"] == f"{root}/workitems/j/job-1/t"
    assert env["FLEET_NODE_SHARED_DIR"] == f"{root}/shared"
    assert env["CWD"] == str(Path(env["FLEET_TASK_WORKING_DIR"]).resolve())
    for sub in ("startup", "shared", "applications", "certs", "fsmounts", "volatile", "workitems"):
        assert Path(root, sub).is_dir()


def test_start_task_runs_before_tasks_and_node_becomes_idle(fleet, lab_inventory, controller):
    make_pool(
        fleet,
        lab_inventory,
        "p",
        2,
        "--start-task",
        "/bin/sh -c 'echo started > $FLEET_NODE_SHARED_DIR/marker'",
    )
    controller()
    fleet("pool", "show", "p")
    wait_for_idle_nodes(fleet, "p")
    for node in fleet.json("node", "list", "--pool", "p"):
        info = node["startTaskInfo"]
        assert (
            info["state"] == "completed" and info["exitCode"] == 0 and info["result"] == "success"
        )
        assert Path(node["nodeRootDirectory"], "shared", "marker").read_text() == "started\n"


def test_failing_start_task_leaves_node_starttaskfailed_with_no_tasks(
    fleet, lab_inventory, controller, tmp_path
):
    fleet("host", "import", str(lab_inventory))
    good, bad = [h["id"] for h in fleet.json("host", "list")][:2]
    pool = {
        "id": "p",
        "hosts": [good, bad],
        "taskSlotsPerNode": 4,
        "startTask": {
            "commandLine": f"/bin/sh -c 'test $FLEET_NODE_ID != {bad} || exit 7'",
            "waitForSuccess": True,
            "maxTaskRetryCount": 1,
        },
    }
    (tmp_path / "pool.json").write_text(json.dumps(pool))
    fleet("pool", "create", "--json-file", str(tmp_path / "pool.json"))
    controller()
    result = fleet("pool", "create", "--id", "p2", "--hosts", bad, check=False)
    assert result.code == 4  # the host is in pool p already: conflict
    fleet("job", "create", "--id", "j", "--pool", "p")
    for i in range(6):
        fleet("task", "create", "--job", "j", "--id", f"t{i}", "--command-line", "true")
    fleet("job", "wait", "j", "--timeout", "60")
    node = fleet.json("node", "show", "--pool", "p", "--node", bad)
    assert node["state"] == "starttaskfailed"
    assert node["startTaskInfo"]["exitCode"] == 7
    assert node["startTaskInfo"]["retryCount"] == 1
    assert node["errors"][0]["code"] == "StartTaskFailed"
    assert "exit code 7" in node["errors"][0]["message"]
    assert {t["nodeInfo"]["nodeId"] for t in fleet.json("task", "list", "--job", "j")} == {good}


def test_priority_orders_jobs_on_a_busy_pool(fleet, lab_inventory, controller):
    make_pool(fleet, lab_inventory, "p", 1)
    fleet("job", "create", "--id", "low", "--pool", "p", "--priority", "-5")
    fleet("job", "create", "--id", "high", "--pool", "p", "--priority", "100")
    for job in ("low", "high"):
        for i in range(3):
            fleet("task", "create", "--job", job, "--id", f"t{i}", "--command-line", "true")
    controller()
    fleet("job", "wait", "low", "--timeout", "60")
    fleet("job", "wait", "high", "--timeout", "60")
    starts = sorted(
        (t["executionInfo"]["startTime"], job)
        for job in ("low", "high")
        for t in fleet.json("task", "list", "--job", job)
    )
    assert [job for _, job in starts] == ["high"] * 3 + ["low"] * 3


def test_command_that_does_not_exist_fails_with_command_program_not_found(
    fleet, lab_inventory, controller
):
    make_pool(fleet, lab_inventory, "p", 1)
    controller()
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet("task", "create", "--job", "j", "--id", "t", "--command-line", "/no/such/program arg")
    assert fleet("job", "wait", "j", "--timeout", "60", check=False).code == 1
    info = _task(fleet, "j", "t")["executionInfo"]
    assert info["result"] == "failure"
    assert info["failureInfo"]["code"] == "CommandProgramNotFound"
    assert info["failureInfo"]["category"] == "usererror"


def test_job_wait_times_out_with_exit_status_5(fleet, lab_inventory):
    make_pool(fleet, lab_inventory, "p", 1)
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet("task", "create", "--job", "j", "--id", "t", "--command-line", "true")
    result = fleet("job", "wait", "j", "--timeout", "0.5", "-o", "json", check=False)
    assert result.code == 5
    assert json.loads(result.stderr)["error"]["code"] == "TimedOut"


def test_pool_create_wait_returns_once_nodes_are_idle(fleet, lab_inventory, controller):
    fleet("host", "import", str(lab_inventory))
    hosts = [h["id"] for h in fleet.json("host", "list")][:2]
    controller()
    pool = fleet(
        "pool",
        "create",
        "--id",
        "p",
        "--hosts",
        ",".join(hosts),
        "--start-task",
        "/bin/sh -c 'sleep 1'",
        "--wait",
        "--timeout",
        "60",
        "-o",
        "json",
    ).json()
    assert pool["nodeCounts"] == {"idle": 2}
    nodes = fleet.json("node", "list", "--pool", "p")
    assert [n["state"] for n in nodes] == ["idle", "idle"]
    assert all(n["ipAddress"] == "127.0.0.1" and n["schedulingState"] == "enabled" for n in nodes)


def test_controller_stops_cleanly_on_sigterm(fleet, lab_inventory, controller):
    make_pool(fleet, lab_inventory, "p", 1)
    proc = controller()
    wait_for(
        lambda: fleet.json("node", "list", "--pool", "p")[0]["state"] == "idle",
        60,
        message="node idle",
    )
    assert proc.stop() == 0
    assert "controller stopped" in proc.log_text()


def test_a_job_runs_end_to_end_on_a_postgresql_store(lab_inventory, pg_server, tmp_path):
    for url in pg_database(pg_server):
        pg_fleet = Fleet(tmp_path / "pg-home", {"FLEET_DB_URL": url})
        make_pool(pg_fleet, lab_inventory, "p", 2)
        proc = ControllerProcess(pg_fleet, tmp_path / "pg-controller.log").start()
        try:
            pg_fleet("job", "create", "--id", "j", "--pool", "p")
            pg_fleet("task", "create", "--job", "j", "--id", "t", "--command-line", "echo on pg")
            pg_fleet("job", "wait", "j", "--timeout", "60")
            assert _file(pg_fleet, "j", "t", "stdout.txt") == "on pg\n"
            assert not (tmp_path / "pg-home" / "fleet.db").exists()  # the state is in PostgreSQL
        finally:
            assert proc.stop() == 0
