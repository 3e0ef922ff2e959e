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


# Job a's manager adds a task, tries its own token through the other node's agent, then
# waits until job b's thief is done with it.
GUARDED_MANAGER = textwrap.dedent("""
    import glob, importlib.util, os, subprocess, sys, time
    client = os.environ["FLEET_TASK_CLIENT"]
    spec = importlib.util.spec_from_file_location("ft", client)
    ft = importlib.util.module_from_spec(spec); spec.loader.exec_module(ft)
    ft.add_tasks([{"id": "w1", "commandLine": "true"}])
    own = os.path.realpath(os.environ["FLEET_AGENT_DIR"])
    nodes = os.path.dirname(os.environ["FLEET_NODE_ROOT_DIR"])
    other = [d for d in glob.glob(nodes + "/*/volatile/agent.sock")
             if os.path.realpath(os.path.dirname(d)) != own][0]
    env = dict(os.environ, FLEET_AGENT_DIR=os.path.dirname(other))
    argv = [sys.executable, client, "add-task", "--id", "relayed", "--command-line", "true"]
    relayed = subprocess.run(argv, env=env, capture_output=True, text=True)
    print("relayed", relayed.returncode, relayed.stderr.split("]")[0] + "]")
    sys.stdout.flush()
    while not os.path.exists("thief-done"):
        time.sleep(0.2)
""")

# A task of job b reads job a's manager token from /proc/<pid>/environ, as the attack
# did, and calls add-task for job a through its own node's agent and the manager's.
THIEF = textwrap.dedent("""
    import glob, os, subprocess, sys, time
    stolen = None
    while stolen is None:
        for path in glob.glob("/proc/[0-9]*/environ"):
            try:
                data = open(path, "rb").read()
            except OSError:
                continue
            env = dict(v.split(b"=", 1) for v in data.split(b"\\0") if b"=" in v)
            if env.get(b"FLEET_JOB_ID") == b"a" and env.get(b"FLEET_TASK_TOKEN"):
                stolen = {k.decode(): v.decode() for k, v in env.items()}
                break
        time.sleep(0.1)
    own = os.environ["FLEET_NODE_ROOT_DIR"] + "/volatile"
    for name, agent_dir in (("own", own), ("managers", stolen["FLEET_AGENT_DIR"])):
        env = dict(os.environ, FLEET_TASK_TOKEN=stolen["FLEET_TASK_TOKEN"], FLEET_AGENT_DIR=agent_dir)
        argv = [sys.executable, stolen["FLEET_TASK_CLIENT"], "add-task", "--id", "evil-" + name,
                "--command-line", "true"]
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        print(name, done.returncode, done.stderr.split("]")[0] + "]")
    open(os.path.join(stolen["FLEET_TASK_WORKING_DIR"], "thief-done"), "w").close()
""")


def test_a_token_stolen_by_another_jobs_task_or_relayed_through_another_node_is_refused(
    fleet, lab_inventory, controller, tmp_path
):
    make_pool(fleet, lab_inventory, "p", 2, "--task-slots-per-node", "2")
    for name, text in (("manager.py", GUARDED_MANAGER), ("thief.py", THIEF)):
        (tmp_path / name).write_text(text)
        fleet("file", "upload", str(tmp_path / name), f"scripts/{name}")
    scripts = [{"autoStorageContainerName": "scripts"}]
    (tmp_path / "a.json").write_text(
        json.dumps(
            {
                "id": "a",
                "poolInfo": {"poolId": "p"},
                "jobManagerTask": {
                    "id": "manager",
                    "commandLine": "python3 manager.py",
                    "resourceFiles": scripts,
                },
            }
        )
    )
    fleet("job", "create", "--json-file", str(tmp_path / "a.json"))
    fleet("job", "create", "--id", "b", "--pool", "p")
    fleet.add_tasks(
        "b", {"id": "thief", "commandLine": "python3 thief.py", "resourceFiles": scripts}
    )
    controller()
    assert fleet("job", "wait", "b", "--timeout", "120").code == 0
    result = fleet("job", "wait", "a", "--timeout", "120", "-o", "json", check=False)
    assert result.json()["state"] == "completed", result.stdout

    def out(job, task):
        return fleet("task", "file", "download", "stdout.txt", "--job", job, "--id", task).stdout

    # Through its own node's agent the call is the thief's: the token is not its own.
    # Through the manager's node's agent the caller is in no task session of that node.
    assert out("b", "thief") == "own 1 error [InvalidToken]\nmanagers 1 error [CallerNotATask]\n"
    # The real manager's own token, relayed through the other node's agent, is refused too.
    assert out("a", "manager") == "relayed 1 error [CallerNotATask]\n"
    tasks = {t["id"]: t for t in fleet.json("task", "list", "--job", "a")}
    assert set(tasks) == {"manager", "w1"}
    assert all(t["executionInfo"]["result"] == "success" for t in tasks.values())
