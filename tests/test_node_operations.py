"""Node operations on the loopback lab: reboot (through fleet and outside it), reimage,
remove, and disabling scheduling with each option. Reboots are the lab's simulated ones
(``fleet lab reboot``: the node's processes killed, a new boot id), never the machine's."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from fleet import lab as lab_mod
from tests.conftest import make_pool, wait_for, wait_for_idle_nodes

pytestmark = pytest.mark.lab

#: A task whose first attempt runs long and whose later attempts succeed at once, so that
#: a requeue shows as a quick completion.
FIRST_ATTEMPT_HANGS = "/bin/sh -c 'test $FLEET_TASK_ATTEMPT -gt 1 || sleep 120'"


def _node(fleet: Any, pool: str = "p") -> dict[str, Any]:
    return fleet.json("node", "list", "--pool", pool)[0]


def _log_dir(lab: lab_mod.Lab) -> Path:
    runs = Path(tempfile.mkdtemp(dir=lab.dir / "nodes"))  # writable by the lab's login user
    runs.chmod(0o777)
    return runs


def _pool_with_start_log(fleet: Any, lab_inventory: Path, lab: lab_mod.Lab) -> tuple[str, Path]:
    log = _log_dir(lab) / "start.log"
    (host,) = make_pool(
        fleet, lab_inventory, "p", 1, "--start-task", f"/bin/sh -c 'echo x >> {log}'"
    )
    return host, log


def _running_task(fleet: Any, command: str = FIRST_ATTEMPT_HANGS) -> None:
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet("task", "create", "--job", "j", "--id", "t", "--command-line", command)
    wait_for(
        lambda: fleet.json("task", "show", "--job", "j", "--id", "t")["state"] == "running",
        60,
        message="task running",
    )


def _back_after_reboot(fleet: Any, before: dict[str, Any]) -> dict[str, Any]:
    return wait_for(
        lambda: (
            (n := _node(fleet))["state"] in ("idle", "running")
            and n.get("lastBootTime") != before.get("lastBootTime")
            and n
        ),
        90,
        message="node back from its reboot",
    )


def _task(fleet: Any) -> dict[str, Any]:
    return fleet.json("task", "show", "--job", "j", "--id", "t")


def test_reboot_through_fleet_requeues_the_running_task_and_reruns_the_start_task(
    fleet, lab_inventory, lab, controller
):
    host, log = _pool_with_start_log(fleet, lab_inventory, lab)
    controller()
    wait_for_idle_nodes(fleet, "p")
    _running_task(fleet)
    before = _node(fleet)
    shown = fleet.json("node", "reboot", "--pool", "p", "--node", host)
    assert shown[0]["id"] == host
    wait_for(lambda: _node(fleet)["state"] == "rebooting", 60, message="node rebooting")
    after = _back_after_reboot(fleet, before)
    assert after["errors"] == []  # fleet's own reboot is no error
    assert fleet("job", "wait", "j", "--timeout", "60", check=False).code == 0
    task = _task(fleet)
    assert task["executionInfo"]["exitCode"] == 0
    assert task["executionInfo"]["requeueCount"] == 1
    assert task["executionInfo"]["retryCount"] == 0
    assert log.read_text().count("x") == 2  # the start task ran again after the reboot


def test_a_reboot_outside_fleet_is_seen_by_its_boot_id(fleet, lab_inventory, lab, controller):
    host, log = _pool_with_start_log(fleet, lab_inventory, lab)
    controller()
    wait_for_idle_nodes(fleet, "p")
    _running_task(fleet)
    before = _node(fleet)
    lab_mod.reboot_node(lab, host)  # someone else's reboot: fleet was not asked
    after = _back_after_reboot(fleet, before)
    assert [e["code"] for e in after["errors"]] == ["NodeRebooted"]
    assert fleet("job", "wait", "j", "--timeout", "60", check=False).code == 0
    task = _task(fleet)
    assert (task["executionInfo"]["requeueCount"], task["executionInfo"]["retryCount"]) == (1, 0)
    assert log.read_text().count("x") == 2


def test_prep_task_reruns_after_a_reboot_unless_told_not_to(
    fleet, lab_inventory, lab, controller, tmp_path
):
    runs = _log_dir(lab)
    (host,) = make_pool(fleet, lab_inventory, "p", 1)
    controller()
    wait_for_idle_nodes(fleet, "p")
    for job, rerun in (("again", True), ("once", False)):
        spec = {
            "id": job,
            "poolInfo": {"poolId": "p"},
            "jobPreparationTask": {
                "commandLine": f"/bin/sh -c 'echo x >> {runs}/{job}.log'",
                "rerunOnNodeRebootAfterSuccess": rerun,
            },
        }
        (tmp_path / f"{job}.json").write_text(json.dumps(spec))
        fleet("job", "create", "--json-file", str(tmp_path / f"{job}.json"))
        fleet("task", "create", "--job", job, "--id", "a", "--command-line", "true")
        assert fleet("job", "wait", job, "--timeout", "60", check=False).code == 0
    before = _node(fleet)
    lab_mod.reboot_node(lab, host)
    _back_after_reboot(fleet, before)
    for job in ("again", "once"):
        fleet("task", "create", "--job", job, "--id", "b", "--command-line", "true")
        assert fleet("job", "wait", job, "--timeout", "60", check=False).code == 0
    assert (runs / "again.log").read_text().count("x") == 2
    assert (runs / "once.log").read_text().count("x") == 1


@pytest.mark.parametrize(
    ("option", "exit_code", "requeues"),
    [("requeue", 0, 1), ("terminate", 143, 0), ("taskcompletion", 0, 0)],  # 143: SIGTERM,
)
def test_disable_scheduling_deals_with_the_running_task_by_its_option(
    fleet, lab_inventory, controller, option, exit_code, requeues
):
    (host,) = make_pool(fleet, lab_inventory, "p", 1)
    controller()
    wait_for_idle_nodes(fleet, "p")
    command = "/bin/sh -c 'sleep 3'" if option == "taskcompletion" else FIRST_ATTEMPT_HANGS
    _running_task(fleet, command)
    shown = fleet.json(
        "node", "disable-scheduling", "--pool", "p", "--node", host, "--option", option
    )
    assert shown[0]["schedulingState"] == "disabled"
    wait_for(lambda: _node(fleet)["state"] == "offline", 60, message="node offline")
    task = _task(fleet)
    if option == "requeue":  # back in the queue, and the node takes nothing new
        assert task["state"] == "active"
        assert task["executionInfo"]["requeueCount"] == 1
    else:
        assert task["state"] == "completed"
        assert task["executionInfo"].get("exitCode") == exit_code
    if option == "terminate":
        assert task["executionInfo"]["failureInfo"]["code"] == "TaskEnded"
    fleet("task", "create", "--job", "j", "--id", "later", "--command-line", "true")
    assert fleet.json("task", "show", "--job", "j", "--id", "later")["state"] == "active"
    enabled = fleet.json("node", "enable-scheduling", "--pool", "p", "--node", host)
    assert enabled[0]["schedulingState"] == "enabled"
    waited = fleet("job", "wait", "j", "--timeout", "60", check=False).code
    assert waited == (1 if option == "terminate" else 0)  # 1: a task failed
    assert _task(fleet)["executionInfo"]["requeueCount"] == requeues
    assert _node(fleet)["state"] in ("idle", "running")


def test_reimage_leaves_a_clean_root_and_reruns_the_start_task(
    fleet, lab_inventory, lab, controller
):
    host, log = _pool_with_start_log(fleet, lab_inventory, lab)
    controller()
    wait_for_idle_nodes(fleet, "p")
    root = Path(_node(fleet)["nodeRootDirectory"])
    junk = root / "shared" / "left-behind"
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet("task", "create", "--job", "j", "--id", "t", "--command-line", f"touch {junk}")
    assert fleet("job", "wait", "j", "--timeout", "60", check=False).code == 0
    assert junk.exists()
    fleet("node", "reimage", "--pool", "p", "--node", host)
    wait_for(lambda: not junk.exists(), 60, message="the old root gone")
    wait_for_idle_nodes(fleet, "p", 90)
    assert (root / "volatile").is_dir()  # made again from scratch
    assert log.read_text().count("x") == 2


def test_remove_returns_the_host_to_the_free_inventory_with_its_files_gone(
    fleet, lab_inventory, controller
):
    hosts = make_pool(fleet, lab_inventory, "p", 2)
    controller()
    wait_for_idle_nodes(fleet, "p")
    roots = {
        n["id"]: Path(n["nodeRootDirectory"]) for n in fleet.json("node", "list", "--pool", "p")
    }
    fleet("node", "remove", "--pool", "p", "--node", hosts[0])
    wait_for(
        lambda: [n["id"] for n in fleet.json("node", "list", "--pool", "p")] == [hosts[1]],
        60,
        message="node gone from the pool",
    )
    assert not roots[hosts[0]].exists()
    assert roots[hosts[1]].exists()
    fleet("pool", "create", "--id", "q", "--hosts", hosts[0])  # the host is free again
    wait_for_idle_nodes(fleet, "q")


def test_bad_node_operations_are_refused_with_nothing_changed(fleet, lab_inventory):
    (host,) = make_pool(fleet, lab_inventory, "p", 1)
    bad = fleet(
        "node",
        "reboot",
        "--pool",
        "p",
        "--node",
        host,
        "--node-deallocation-option",
        "later",
        check=False,
    )
    assert bad.code == 2 and "InvalidPropertyValue" in bad.stderr
    bad = fleet(
        "node",
        "disable-scheduling",
        "--pool",
        "p",
        "--node",
        host,
        "--option",
        "retaineddata",
        check=False,
    )
    assert bad.code == 2 and "nodeDisableSchedulingOption" in bad.stderr
    missing = fleet("node", "reboot", "--pool", "p", "--node", host, "--node", "nope", check=False)
    assert missing.code == 3 and "NodeNotFound" in missing.stderr
    assert fleet("node", "reboot", "--pool", "nope", "--node", host, check=False).code == 3
    node = _node(fleet)
    assert node["schedulingState"] == "enabled"  # nothing half-done
    fleet("node", "remove", "--pool", "p", "--node", host)
    refused = fleet("node", "reboot", "--pool", "p", "--node", host, check=False)
    assert refused.code == 4 and "NodeStateConflict" in refused.stderr


def test_a_loopback_host_without_a_reboot_command_is_never_rebooted_over_ssh(fleet, tmp_path):
    inventory = tmp_path / "loop.ini"
    inventory.write_text("[x]\nloop ansible_host=127.0.0.1 ansible_port=1\n")
    fleet("host", "import", str(inventory))
    fleet("pool", "create", "--id", "p", "--hosts", "loop")
    refused = fleet("node", "reboot", "--pool", "p", "--node", "loop", check=False)
    assert refused.code == 4 and "NodeRebootRefused" in refused.stderr
    assert "fleet_reboot_command" in refused.stderr
    assert _node(fleet).get("schedulingState") == "enabled"


def test_removing_a_node_of_a_sized_pool_lowers_its_target(fleet, lab_inventory, tmp_path):
    fleet("host", "import", str(lab_inventory))
    spec = {"id": "p", "hostSelector": {"labels": {"lab": "true"}}, "targetDedicatedNodes": 2}
    (tmp_path / "p.json").write_text(json.dumps(spec))
    fleet("pool", "create", "--json-file", str(tmp_path / "p.json"))
    first, second = (n["id"] for n in fleet.json("node", "list", "--pool", "p"))
    fleet("node", "remove", "--pool", "p", "--node", first)
    fleet("node", "remove", "--pool", "p", "--node", first)  # again: counted once
    assert fleet.json("pool", "show", "p")["targetDedicatedNodes"] == 1
    fleet("node", "remove", "--pool", "p", "--node", second)
    assert fleet.json("pool", "show", "p")["targetDedicatedNodes"] == 0
