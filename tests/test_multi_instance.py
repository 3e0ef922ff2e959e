"""Multi-instance tasks on the real lab: nodes together, coordination everywhere, one primary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

COORDINATION = (
    "/bin/sh -c 'echo \"$FLEET_NODE_ID $FLEET_HOST_LIST $FLEET_NODE_IDS "
    '$FLEET_IS_CURRENT_NODE_MASTER $(cat $FLEET_TASK_SHARED_DIR/common.txt)" '
    "> $FLEET_TASK_SHARED_DIR/seen'"
)


def _pool(fleet, lab_inventory, tmp_path, nodes=3, inter=True):
    fleet("host", "import", str(lab_inventory))
    hosts = [h["id"] for h in fleet.json("host", "list")][:nodes]
    (tmp_path / "pool.json").write_text(
        json.dumps({"id": "p", "hosts": hosts, "enableInterNodeCommunication": inter})
    )
    fleet("pool", "create", "--json-file", str(tmp_path / "pool.json"))
    return hosts


def test_a_multi_instance_task_on_three_nodes_sees_one_host_list(
    fleet, lab_inventory, controller, tmp_path
):
    hosts = _pool(fleet, lab_inventory, tmp_path)
    (tmp_path / "common.txt").write_text("shared-input\n")
    fleet("file", "upload", str(tmp_path / "common.txt"), "mpi/common.txt")
    controller()
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet.add_tasks(
        "j",
        {
            "id": "mpi",
            "commandLine": "/bin/sh -c 'cat $FLEET_TASK_SHARED_DIR/seen; echo $FLEET_MASTER_NODE'",
            "multiInstanceSettings": {
                "numberOfInstances": 3,
                "coordinationCommandLine": COORDINATION,
                "commonResourceFiles": [{"autoStorageContainerName": "mpi"}],
            },
        },
    )
    assert fleet("job", "wait", "j", "--timeout", "90").code == 0
    subtasks = fleet.json("task", "subtasks", "--job", "j", "--id", "mpi")
    assert [s["id"] for s in subtasks] == [0, 1, 2]
    nodes = [s["nodeInfo"]["nodeId"] for s in subtasks]
    assert sorted(nodes) == sorted(hosts)  # three distinct nodes
    assert all(s["state"] == "completed" and s["exitCode"] == 0 for s in subtasks)
    task = fleet.json("task", "show", "--job", "j", "--id", "mpi")
    assert task["nodeInfo"]["nodeId"] == nodes[0]
    primary_line, master = fleet(
        "task", "file", "download", "stdout.txt", "--job", "j", "--id", "mpi"
    ).stdout.splitlines()
    node_ids = ",".join(nodes)
    assert primary_line == f"{nodes[0]} 127.0.0.1,127.0.0.1,127.0.0.1 {node_ids} true shared-input"
    assert master == "127.0.0.1"
    # Every instance saw the same host list; only the primary is the master.
    roots = {n["id"]: n["nodeRootDirectory"] for n in fleet.json("node", "list", "--pool", "p")}
    for i, node in enumerate(nodes):
        seen = Path(roots[node], "workitems/j/job-1/mpi/seen").read_text().split()
        assert seen == [
            node,
            "127.0.0.1,127.0.0.1,127.0.0.1",
            node_ids,
            "true" if i == 0 else "false",
            "shared-input",
        ]


def test_a_failed_coordination_command_fails_the_task(fleet, lab_inventory, controller, tmp_path):
    _pool(fleet, lab_inventory, tmp_path, nodes=2)
    controller()
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet.add_tasks(
        "j",
        {
            "id": "mpi",
            "commandLine": "echo never",
            "multiInstanceSettings": {
                "numberOfInstances": 2,
                "coordinationCommandLine": "/bin/sh -c 'test $FLEET_IS_CURRENT_NODE_MASTER = true'",
            },
        },
    )
    assert fleet("job", "wait", "j", "--timeout", "60", check=False).code == 1
    info = fleet.json("task", "show", "--job", "j", "--id", "mpi")["executionInfo"]
    assert info["failureInfo"]["code"] == "CoordinationCommandFailed"
    assert (
        fleet(
            "task", "file", "download", "stdout.txt", "--job", "j", "--id", "mpi", check=False
        ).stdout
        == ""
    )


def test_a_multi_instance_task_the_pool_cannot_run_is_refused(fleet, lab_inventory, tmp_path):
    _pool(fleet, lab_inventory, tmp_path, nodes=2)
    fleet("job", "create", "--id", "j", "--pool", "p")
    result = fleet.add_tasks(
        "j",
        {
            "id": "big",
            "commandLine": "true",
            "multiInstanceSettings": {
                "numberOfInstances": 3,
                "coordinationCommandLine": "true",
            },
        },
        check=False,
    )
    assert result.code == 2
    err = json.loads(result.stderr)["error"]
    assert err["code"] == "MultiInstanceTaskNotSatisfiable" and "has 2" in err["message"]
    assert fleet.json("task", "list", "--job", "j") == []


def test_a_controller_killed_mid_coordination_kills_the_old_commands_before_new_ones(
    fleet, lab_inventory, lab, controller, tmp_path
):
    import tempfile

    from tests.conftest import wait_for

    _pool(fleet, lab_inventory, tmp_path, nodes=2)
    runs = Path(tempfile.mkdtemp(dir=lab.dir / "nodes"))  # writable by the lab's login user
    runs.chmod(0o777)
    coordination = (
        f"/bin/sh -c 'echo begin >> {runs}/$FLEET_NODE_ID; "
        f"flock -n {runs}/$FLEET_NODE_ID.lock sleep 6 || echo overlap >> {runs}/overlaps'"
    )
    first = controller()
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet.add_tasks(
        "j",
        {
            "id": "mpi",
            "commandLine": "echo primary",
            "multiInstanceSettings": {
                "numberOfInstances": 2,
                "coordinationCommandLine": coordination,
            },
        },
    )
    wait_for(lambda: len(list(runs.glob("node??"))) == 2, 60, message="coordination running")
    first.kill()
    controller()
    assert fleet("job", "wait", "j", "--timeout", "90", check=False).code == 0
    assert not (runs / "overlaps").exists()
    task = fleet.json("task", "show", "--job", "j", "--id", "mpi")
    assert task["executionInfo"]["result"] == "success"
    for node_file in runs.glob("node??"):
        assert node_file.read_text() == "begin\nbegin\n"  # the old run, then the new one
