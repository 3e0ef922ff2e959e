"""The CLI as a client: ``fleet --url URL --account NAME`` (key in FLEET_KEY) prints what
the local commands print and exits with the same statuses, through a real controller's
REST API."""

from __future__ import annotations

import json

import pytest

from tests.api_client import free_port
from tests.conftest import Fleet, make_pool, wait_for, wait_for_idle_nodes

pytestmark = pytest.mark.lab


@pytest.fixture
def remote(fleet, lab_inventory, controller, tmp_path):
    """A lab pool behind a controller with --listen, and a CLI that only has the URL."""
    make_pool(fleet, lab_inventory, "p", 2, "--task-slots-per-node", "4")
    key = fleet.json("account", "create", "cli")["key"]
    port = free_port()
    controller("--listen", f"127.0.0.1:{port}")
    wait_for_idle_nodes(fleet, "p")
    env = {"FLEET_URL": f"http://127.0.0.1:{port}", "FLEET_ACCOUNT": "cli", "FLEET_KEY": key}
    client = Fleet(tmp_path / "elsewhere", env)  # an empty home: everything comes over HTTP

    def listening():
        return client("pool", "list", check=False).code == 0

    wait_for(listening, 30, message="the API to listen")
    return client


def test_reads_print_what_the_local_commands_print(fleet, remote):
    for args in (
        ("pool", "list"),
        ("pool", "show", "p"),
        ("node", "list", "--pool", "p"),
    ):
        assert remote.json(*args) == fleet.json(*args), args
    node = fleet.json("node", "list", "--pool", "p")[0]["id"]
    assert remote.json("node", "show", "--pool", "p", "--node", node) == fleet.json(
        "node", "show", "--pool", "p", "--node", node
    )


def test_a_job_runs_through_the_remote_cli(fleet, remote, tmp_path):
    created = remote.json("job", "create", "--id", "j", "--pool", "p")
    assert created["id"] == "j" and created["state"] == "active"
    one = remote.json("task", "create", "--job", "j", "--id", "t0", "--command-line", "echo zero")
    assert one["id"] == "t0"
    tasks = [{"id": f"t{i}", "commandLine": f"echo task {i}"} for i in range(1, 151)]
    spec = tmp_path / "tasks.json"
    spec.write_text(json.dumps(tasks))
    added = remote.json("task", "create", "--job", "j", "--json-file", str(spec))
    assert [t["id"] for t in added] == [t["id"] for t in tasks]
    waited = remote("job", "wait", "j", "--timeout", "120", "-o", "json")
    assert waited.json()["taskCounts"]["succeeded"] == 151
    assert remote.json("task", "list", "--job", "j") == fleet.json("task", "list", "--job", "j")
    assert remote.json("job", "show", "j") == fleet.json("job", "show", "j")
    assert remote.json("job", "task-counts", "j") == fleet.json("job", "task-counts", "j")
    shown = remote.json("task", "show", "--job", "j", "--id", "t7")
    assert shown == fleet.json("task", "show", "--job", "j", "--id", "t7")
    out = remote("task", "file", "download", "stdout.txt", "--job", "j", "--id", "t7").stdout
    assert out == "task 7\n"
    part = remote(
        "task",
        "file",
        "download",
        "stdout.txt",
        "--job",
        "j",
        "--id",
        "t7",
        "--start",
        "5",
        "--end",
        "5",
    ).stdout
    assert part == "7"
    names = {f["name"] for f in remote.json("task", "file", "list", "--job", "j", "--id", "t7")}
    assert "stdout.txt" in names
    ended = remote.json("job", "terminate", "j", "--reason", "enough")
    assert ended["id"] == "j"


def test_errors_have_the_local_codes_and_exit_statuses(fleet, remote):
    for args in (("job", "show", "nope"), ("task", "show", "--job", "nope", "--id", "t")):
        mine, theirs = (
            remote(*args, "-o", "json", check=False),
            fleet(*args, "-o", "json", check=False),
        )
        assert (mine.code, json.loads(mine.stderr)["error"]["code"]) == (
            theirs.code,
            json.loads(theirs.stderr)["error"]["code"],
        )
    bad = remote("job", "create", "--id", "bad id!", "--pool", "p", check=False)
    assert bad.code == fleet("job", "create", "--id", "bad id!", "--pool", "p", check=False).code
    local_only = remote("host", "list", check=False)
    assert local_only.code == 2 and "NotAvailableRemotely" in local_only.stderr
    wrong = Fleet(remote.home, {**remote.env, "FLEET_KEY": "d3Jvbmcg" * 11})
    refused = wrong("pool", "list", check=False)
    assert refused.code == 1 and "AuthenticationFailed" in refused.stderr
    garbled = Fleet(remote.home, {**remote.env, "FLEET_KEY": "not base64!"})
    assert "InvalidKey" in garbled("pool", "list", check=False).stderr
    nokey = Fleet(remote.home, {k: v for k, v in remote.env.items() if k != "FLEET_KEY"})
    missing = nokey("pool", "list", check=False)
    assert missing.code == 2 and "MissingRequiredProperty" in missing.stderr


def test_writes_through_the_remote_cli(fleet, remote, tmp_path):
    spec = tmp_path / "pool.json"
    spec.write_text(
        json.dumps({"id": "q", "hostSelector": {"labels": {}}, "targetDedicatedNodes": 1})
    )
    made = remote.json("pool", "create", "--json-file", str(spec), "--wait", "--timeout", "60")
    assert made["id"] == "q" and made["currentDedicatedNodes"] == 1
    assert made == fleet.json("pool", "show", "q")
    shrunk = remote.json("pool", "resize", "q", "--target-dedicated-nodes", "0")
    assert shrunk["targetDedicatedNodes"] == 0
    wait_for(lambda: not fleet.json("node", "list", "--pool", "q"), 60, message="q empty")
    assert remote.json("pool", "delete", "q") == {"deleted": "q"}
    assert fleet("pool", "show", "q", check=False).code == 3

    remote("job", "create", "--id", "k", "--pool", "p")
    assert remote.json("job", "disable", "k", "--disable-tasks", "requeue")["state"] in (
        "disabling",
        "disabled",
    )
    assert remote.json("job", "enable", "k")["state"] in ("enabling", "active")
    remote("task", "create", "--job", "k", "--id", "t", "--command-line", "sleep 60")
    deleted = remote.json("task", "delete", "--job", "k", "--id", "t")
    assert deleted["id"] == "t" and deleted["state"] in ("deleted", "deleting")
    assert remote.json("job", "delete", "k")["state"] == "deleting"
    wait_for(lambda: fleet("job", "show", "k", check=False).code == 3, 60, message="k gone")


def test_schedules_nodes_and_counts_through_the_remote_cli(fleet, remote):
    node = fleet.json("node", "list", "--pool", "p")[0]["id"]
    for args in (
        ("pool", "node-counts"),
        ("pool", "node-counts", "p"),
        ("node", "remote-login-settings", "--pool", "p", "--node", node),
    ):
        assert remote.json(*args) == fleet.json(*args), args
    assert remote("pool", "node-counts", "nope", check=False).code == 3

    [off] = remote.json("node", "disable-scheduling", "--pool", "p", "--node", node)
    assert off["id"] == node and off == {k: v for k, v in off.items() if k != "ipAddress"}
    wait_for(
        lambda: (
            fleet.json("node", "show", "--pool", "p", "--node", node)["schedulingState"]
            == "disabled"
        ),
        30,
        message="scheduling disabled",
    )
    [on] = remote.json("node", "enable-scheduling", "--pool", "p", "--node", node)
    assert on["schedulingState"] == "enabled"

    made = remote.json(
        "schedule",
        "create",
        "--id",
        "s",
        "--pool",
        "p",
        "--every",
        "PT1H",
        "--job-manager-command-line",
        "true",
    )
    assert made == fleet.json("schedule", "show", "s")
    assert remote.json("schedule", "list") == fleet.json("schedule", "list")
    assert remote("schedule", "exists", "s").code == 0
    assert remote("schedule", "exists", "nope", check=False).code == 3
    assert (
        remote.json("schedule", "set", "s", "--every", "PT2H")["schedule"]["recurrenceInterval"]
        == "PT2H"
    )
    assert remote.json("schedule", "disable", "s")["state"] == "disabled"
    assert remote.json("schedule", "enable", "s")["state"] == "active"
    assert remote.json("schedule", "terminate", "s")["state"] in ("terminating", "completed")
    assert remote.json("schedule", "delete", "s")["state"] == "deleting"


def test_certificates_and_applications_through_the_remote_cli(fleet, remote, tmp_path):
    import zipfile

    from tests.cert_files import make_cert, sha1, write_pem

    cert, _ = make_cert("remote-cli")
    fleet("certificate", "create", "--file", str(write_pem(tmp_path / "c.pem", cert)))
    thumbprint = sha1(cert)
    assert remote.json("certificate", "list") == fleet.json("certificate", "list")
    assert remote.json("certificate", "show", thumbprint) == fleet.json(
        "certificate", "show", thumbprint
    )
    assert remote("certificate", "show", "00" * 20, check=False).code == 3
    assert remote.json("certificate", "delete", thumbprint)["deleted"] is True
    wait_for(
        lambda: fleet("certificate", "show", thumbprint, check=False).code == 3,
        30,
        message="the certificate gone",
    )

    archive = tmp_path / "app.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("run.sh", "echo hi\n")
    fleet("application", "package", "create", "app", "1.0", str(archive))
    assert remote.json("application", "list") == fleet.json("application", "list")
    assert remote.json("application", "show", "app") == fleet.json("application", "show", "app")
    assert remote("application", "show", "nope", check=False).code == 3


def test_node_users_through_the_remote_cli(fleet, remote, tmp_path):
    node = fleet.json("node", "list", "--pool", "p")[0]["id"]
    where = ("--pool", "p", "--node", node)
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEt7Fn8kNLe0sVfXGxZQmY6JQvZg6s5gWq0b2t6hJ3xP x"
    made = remote.json(
        "node", "user", "create", *where, "--name", "remoteuser", "--ssh-public-key", key
    )
    assert made["name"] == "remoteuser"
    assert remote.json("node", "user", "list", *where) == fleet.json("node", "user", "list", *where)
    changed = remote.json(
        "node",
        "user",
        "set",
        *where,
        "--name",
        "remoteuser",
        "--expiry-time",
        "2099-01-01T00:00:00Z",
    )
    assert changed["expiryTime"].startswith("2099-01-01")
    assert remote.json("node", "user", "delete", *where, "--name", "remoteuser") == {
        "deleted": "remoteuser",
        "nodeId": node,
    }
    assert fleet.json("node", "user", "list", *where) == []
    missing = remote("node", "user", "delete", *where, "--name", "nosuchuser", check=False)
    assert (
        missing.code
        == fleet("node", "user", "delete", *where, "--name", "nosuchuser", check=False).code
    )


def test_job_wait_exits_as_locally_when_a_task_fails(fleet, remote):
    remote("job", "create", "--id", "f", "--pool", "p")
    remote("task", "create", "--job", "f", "--id", "bad", "--command-line", "sh -c 'exit 3'")
    mine = remote("job", "wait", "f", "--timeout", "60", "-o", "json", check=False)
    theirs = fleet("job", "wait", "f", "--timeout", "60", "-o", "json", check=False)
    assert mine.code == theirs.code == 1
    assert mine.json()["taskCounts"] == theirs.json()["taskCounts"]
    assert mine.json()["taskCounts"]["failed"] == 1
