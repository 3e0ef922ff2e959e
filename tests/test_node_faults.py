"""Faults on one node as the controller sees them: a killed agent, a restart mid start task."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest

from tests.conftest import make_pool, wait_for, wait_for_idle_nodes

pytestmark = pytest.mark.lab


def _agent_pids(root: str) -> set[int]:
    """Return the pids of the agents (children of sshd, unlike the task wrappers they fork)
    running for the node root ``root``."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            parent = Path(f"/proc/{ppid}/comm").read_text()
        except (OSError, IndexError):
            continue
        if parent.startswith("sshd") and any(f"{root}/volatile/agent-".encode() in a for a in argv):
            found.add(int(entry.name))
    return found


def test_a_node_whose_agent_was_killed_shows_running_while_its_task_runs(
    fleet, lab_inventory, controller
):
    make_pool(fleet, lab_inventory, "p", 1)
    controller()
    wait_for_idle_nodes(fleet, "p")
    fleet("job", "create", "--id", "j", "--pool", "p")
    # long enough to outlast the agent's restart and reconnect on a busy machine
    fleet("task", "create", "--job", "j", "--id", "t", "--command-line", "sleep 20")
    node = wait_for(
        lambda: (n := fleet.json("node", "list", "--pool", "p")[0])["state"] == "running" and n,
        30,
        message="node running",
    )
    root = node["nodeRootDirectory"]
    killed = _agent_pids(root)
    assert killed
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _agent_pids(root) - killed, 30, message="a new agent")
    wait_for(
        lambda: fleet.json("node", "list", "--pool", "p")[0]["state"] in ("idle", "running"),
        30,
        message="node back",
    )
    task = fleet.json("task", "show", "--job", "j", "--id", "t")
    assert task["state"] == "running"
    assert fleet.json("node", "list", "--pool", "p")[0]["state"] == "running"
    assert fleet("job", "wait", "j", "--timeout", "60", check=False).code == 0
    wait_for_idle_nodes(fleet, "p")


def test_a_controller_killed_mid_start_task_reattaches_instead_of_running_it_again(
    fleet, lab_inventory, lab, controller
):
    runs = Path(tempfile.mkdtemp(dir=lab.dir / "nodes"))  # writable by the lab's login user
    runs.chmod(0o777)
    log = runs / "start.log"
    make_pool(
        fleet,
        lab_inventory,
        "p",
        1,
        "--start-task",
        f"/bin/sh -c 'echo begin $FLEET_TASK_ATTEMPT >> {log}; sleep 5; echo end >> {log}'",
    )
    first = controller()
    wait_for(lambda: log.exists() and log.read_text(), 60, message="start task begun")
    assert fleet.json("node", "list", "--pool", "p")[0]["state"] == "waitingforstarttask"
    first.kill()
    controller()
    wait_for_idle_nodes(fleet, "p", timeout=60)
    assert log.read_text() == "begin 1\nend\n"
    info = fleet.json("node", "list", "--pool", "p")[0]["startTaskInfo"]
    assert info["state"] == "completed"
    assert info["exitCode"] == 0
