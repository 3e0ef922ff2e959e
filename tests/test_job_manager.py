"""Job manager tasks on the real lab: first to start, adding tasks from the node, ending the job."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.conftest import make_pool

pytestmark = pytest.mark.lab

# The job manager uses the node-side client both ways: its Python API and its CLI.
MANAGER = textwrap.dedent("""
    import importlib.util, os, subprocess, sys, time
    spec = importlib.util.spec_from_file_location("ft", os.environ["FLEET_TASK_CLIENT"])
    ft = importlib.util.module_from_spec(spec); spec.loader.exec_module(ft)
    added = ft.add_tasks([{"id": "w%d" % i, "commandLine": "echo worker %d" % i} for i in range(3)])
    print("added", len(added))
    subprocess.run([sys.executable, os.environ["FLEET_TASK_CLIENT"], "add-task", "--id", "cli",
                    "--command-line", "echo from the cli"], check=True, stdout=subprocess.DEVNULL)
    while True:
        tasks = {t["id"]: t for t in ft.list_tasks()}
        if all(tasks[t]["state"] == "completed" for t in ("w0", "w1", "w2", "cli", "early")):
            break
        time.sleep(0.2)
    print("job", ft.show_job()["id"])
""")


def test_job_manager_starts_first_adds_tasks_and_ends_the_job(
    fleet, lab_inventory, controller, tmp_path
):
    make_pool(fleet, lab_inventory, "p", 2, "--task-slots-per-node", "2")
    (tmp_path / "job.json").write_text(
        json.dumps(
            {
                "id": "j",
                "poolInfo": {"poolId": "p"},
                "jobManagerTask": {
                    "id": "manager",
                    "commandLine": "python3 manager.py",
                    "resourceFiles": [{"autoStorageContainerName": "scripts"}],
                },
            }
        )
    )
    (tmp_path / "manager.py").write_text(MANAGER)
    fleet("file", "upload", str(tmp_path / "manager.py"), "scripts/manager.py")
    fleet("job", "create", "--json-file", str(tmp_path / "job.json"))
    fleet("task", "create", "--job", "j", "--id", "early", "--command-line", "true")
    controller()
    result = fleet("job", "wait", "j", "--timeout", "120", "-o", "json", check=False)
    assert result.json()["state"] == "completed", result.stdout
    assert result.json()["terminateReason"] == "JMComplete"
    tasks = {t["id"]: t for t in fleet.json("task", "list", "--job", "j")}
    assert set(tasks) == {"manager", "early", "w0", "w1", "w2", "cli"}
    assert all(t["executionInfo"]["result"] == "success" for t in tasks.values())
    manager = tasks["manager"]["executionInfo"]
    for tid in ("early", "w0", "cli"):
        assert tasks[tid]["executionInfo"]["startTime"] >= manager["startTime"]
    # runExclusive: the manager had its node to itself.
    manager_node = tasks["manager"]["nodeInfo"]["nodeId"]
    assert all(
        t["nodeInfo"]["nodeId"] != manager_node for tid, t in tasks.items() if tid != "manager"
    )
    out = fleet("task", "file", "download", "stdout.txt", "--job", "j", "--id", "manager").stdout
    assert out == "added 3\njob j\n"


def test_a_forged_token_is_refused(fleet, lab_inventory, controller):
    make_pool(fleet, lab_inventory, "p", 1)
    controller()
    fleet("job", "create", "--id", "j", "--pool", "p")
    # An ordinary task finds the client and the agent socket, but has no valid token.
    probe = (
        "/bin/sh -c 'v=$FLEET_NODE_ROOT_DIR/volatile; FLEET_AGENT_DIR=$v "
        "FLEET_TASK_TOKEN=forged python3 $v/fleet-task-*.py add-task --id sneaky "
        "--command-line true; echo exit=$?'"
    )
    fleet("task", "create", "--job", "j", "--id", "t", "--command-line", probe)
    fleet("job", "wait", "j", "--timeout", "60")

    def out(name):
        return fleet("task", "file", "download", name, "--job", "j", "--id", "t").stdout

    assert out("stdout.txt") == "exit=1\n"
    assert "InvalidToken" in out("stderr.txt")
    assert [t["id"] for t in fleet.json("task", "list", "--job", "j")] == ["t"]
