"""Fault tests on the real lab: controller crashes, lost nodes, changed host keys, shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from fleet import lab as lab_mod
from tests.conftest import make_pool, wait_for, wait_for_idle_nodes

pytestmark = pytest.mark.lab


def _tasks(fleet, job):
    return {t["id"]: t for t in fleet.json("task", "list", "--job", job)}


def test_controller_sigkill_mid_job_loses_nothing(fleet, lab_inventory, lab, controller, tmp_path):
    make_pool(fleet, lab_inventory, "p", 2, "--task-slots-per-node", "3")
    fleet("job", "create", "--id", "j", "--pool", "p")
    runs = Path(tempfile.mkdtemp(dir=lab.dir / "nodes"))  # writable by the lab's login user
    runs.chmod(0o777)
    tasks = [
        {
            "id": f"t{i}",
            "commandLine": f"/bin/sh -c 'sleep {1 + i % 3}; echo $FLEET_TASK_ID >> {runs}/{i}; echo ok{i}'",
        }
        for i in range(12)
    ]
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    fleet("task", "create", "--job", "j", "--json-file", str(tmp_path / "tasks.json"))
    first = controller()
    wait_for(
        lambda: sum(t["state"] == "running" for t in _tasks(fleet, "j").values()) >= 4,
        60,
        message="tasks running",
    )
    first.kill()
    states = {t["state"] for t in _tasks(fleet, "j").values()}
    assert "running" in states  # the crash really happened mid-job
    second = controller()
    result = fleet("job", "wait", "j", "--timeout", "90", "-o", "json", check=False)
    assert result.code == 0, second.log_text()[-3000:]
    final = _tasks(fleet, "j")
    for i in range(12):
        task = final[f"t{i}"]
        assert task["state"] == "completed"
        assert task["executionInfo"]["exitCode"] == 0
        assert (
            fleet("task", "file", "download", "stdout.txt", "--job", "j", "--id", f"t{i}").stdout
            == f"ok{i}\n"
        )
        # Each ran exactly once: reattached after the crash, not run again.
        assert (runs / str(i)).read_text() == f"t{i}\n"


def test_node_lost_mid_task_requeues_it_onto_another_node(fleet, lab_inventory, lab, controller):
    hosts = make_pool(fleet, lab_inventory, "p", 2)
    controller()
    wait_for_idle_nodes(fleet, "p")
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet(
        "task",
        "create",
        "--job",
        "j",
        "--id",
        "t",
        "--command-line",
        "/bin/sh -c 'sleep 3; echo finished on $FLEET_NODE_ID attempt $FLEET_TASK_ATTEMPT'",
    )
    task = wait_for(
        lambda: (t := _tasks(fleet, "j")["t"])["state"] == "running" and t,
        60,
        message="task running",
    )
    victim = task["nodeInfo"]["nodeId"]
    survivor = next(h for h in hosts if h != victim)
    try:
        lab_mod.stop_node(lab, victim, kill_sessions=True)
        wait_for(
            lambda: (
                fleet.json("node", "show", "--pool", "p", "--node", victim)["state"] == "unknown"
            ),
            30,
            message="node unknown",
        )
        assert fleet("job", "wait", "j", "--timeout", "60", check=False).code == 0
    finally:
        lab_mod.start_node(lab, victim)
    done = _tasks(fleet, "j")["t"]
    assert done["nodeInfo"]["nodeId"] == survivor
    assert done["executionInfo"]["requeueCount"] == 1
    assert done["executionInfo"]["retryCount"] == 0
    out = fleet("task", "file", "download", "stdout.txt", "--job", "j", "--id", "t").stdout
    assert out == f"finished on {survivor} attempt 2\n"


def _fingerprint(pub: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[1]


def test_changed_host_key_is_refused_naming_node_and_both_fingerprints(fleet, lab_inventory, lab):
    fleet("host", "import", str(lab_inventory))
    node = lab.nodes[-1]
    old = _fingerprint(node.host_key.with_suffix(".pub"))
    fleet("exec", "--hosts", node.name, "--", "true")
    assert fleet.json("host", "show", node.name)["hostKeyFingerprint"] == old
    lab_mod.regenerate_host_key(lab, node.name)
    new = _fingerprint(node.host_key.with_suffix(".pub"))
    assert new != old
    result = fleet("exec", "--hosts", node.name, "-o", "json", "--", "true", check=False)
    assert result.code == 1
    [host] = result.json()
    assert host["error"]["code"] == "HostKeyMismatch"
    assert node.name in host["error"]["message"]
    assert old in host["error"]["message"] and new in host["error"]["message"]
    # The recorded key is untouched: a changed key is never silently accepted.
    assert fleet.json("host", "show", node.name)["hostKeyFingerprint"] == old


def test_strict_policy_refuses_a_host_with_no_recorded_key(fleet, lab_inventory, lab):
    fleet("host", "import", str(lab_inventory), "--host-key-policy", "strict")
    name = lab.nodes[0].name
    result = fleet("exec", "--hosts", name, "-o", "json", "--", "true", check=False)
    assert result.code == 1
    assert result.json()[0]["error"]["code"] == "HostKeyUnknown"
    assert "hostKeyFingerprint" not in fleet.json("host", "show", name)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_a_stale_attempt_dies_when_its_node_returns_even_after_a_controller_restart(
    fleet, lab_inventory, lab, controller
):
    make_pool(fleet, lab_inventory, "p", 2)
    first = controller()
    wait_for_idle_nodes(fleet, "p")
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet(
        "task",
        "create",
        "--job",
        "j",
        "--id",
        "t",
        "--command-line",
        "/bin/sh -c 'echo $$ > pid; test $FLEET_TASK_ATTEMPT -ge 2 || sleep 300'",
    )
    task = wait_for(
        lambda: (t := _tasks(fleet, "j")["t"])["state"] == "running" and t,
        60,
        message="task running",
    )
    victim = task["nodeInfo"]["nodeId"]
    pid_file = Path(task["nodeInfo"]["taskRootDirectory"], "wd", "pid")
    pid = int(
        wait_for(
            lambda: pid_file.exists() and pid_file.read_text().strip(), 30, message="pid written"
        )
    )
    try:
        lab_mod.stop_node(lab, victim, kill_sessions=True)
        assert fleet("job", "wait", "j", "--timeout", "60").code == 0  # requeued and done
        assert _tasks(fleet, "j")["t"]["nodeInfo"]["nodeId"] != victim
        assert _alive(pid)  # the first attempt still runs on the lost node
        first.kill()  # and only the store remembers it
    finally:
        lab_mod.start_node(lab, victim)
    controller()
    wait_for(lambda: not _alive(pid), 60, message="stale attempt killed")


def _sigterm(proc, twice: bool = False) -> tuple[int, float]:
    """Send SIGTERM (``twice``: again once the controller is stopping); return the exit
    status and the seconds it took to exit."""
    start = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    if twice:
        wait_for(lambda: "SIGTERM: stopping" in proc.log_text(), 5, 0.01, message="stopping")
        proc.proc.send_signal(signal.SIGTERM)
    try:
        status = proc.proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.proc.kill()
        status = proc.proc.wait()
    return status, time.monotonic() - start


BIG_START_TASK = "/bin/sh -c 'head -c 300000000 /dev/zero'"  # its stdout takes a while to collect


def _freeze_mid_transfer(fleet, lab, lab_inventory, controller):
    """A controller whose first node is frozen (SIGSTOP) while the controller downloads its
    start task's output over SFTP, and whose second node is frozen before it connects.
    Return the controller and the frozen nodes."""
    busy, idle = make_pool(fleet, lab_inventory, "p", 2, "--start-task", BIG_START_TASK)
    lab_mod.stop_node(lab, idle, signal.SIGSTOP, kill_sessions=True)
    ctl = controller()
    out = fleet.home / "nodefiles" / busy / "startup" / "stdout.txt"
    try:
        wait_for(lambda: out.exists() and out.stat().st_size > 0, 60, 0.02, message="download")
    finally:
        lab_mod.stop_node(lab, busy, signal.SIGSTOP, kill_sessions=True)
    return ctl, (busy, idle)


def test_sigterm_stops_the_controller_within_seconds_while_its_nodes_are_frozen(
    fleet, lab_inventory, lab, controller
):
    ctl, frozen = _freeze_mid_transfer(fleet, lab, lab_inventory, controller)
    try:
        status, took = _sigterm(ctl)
    finally:
        for node in frozen:
            lab_mod.start_node(lab, node)
    assert status == 0, ctl.log_text()[-3000:]
    assert took < 8, f"took {took:.1f} s to stop"
    assert "controller stopped" in ctl.log_text()


def test_a_second_sigterm_exits_at_once(fleet, lab_inventory, lab, controller):
    ctl, frozen = _freeze_mid_transfer(fleet, lab, lab_inventory, controller)
    try:
        status, took = _sigterm(ctl, twice=True)
    finally:
        for node in frozen:
            lab_mod.start_node(lab, node)
    assert status == 128 + signal.SIGTERM, ctl.log_text()[-3000:]
    assert took < 3, f"took {took:.1f} s to exit"
    assert "second SIGTERM: exiting at once" in ctl.log_text()
