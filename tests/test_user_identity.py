"""User identities: admin through sudo -n, pool user accounts, and the argv that runs them."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest

from fleet.identity import needs_sudo, wrap
from tests.conftest import wait_for_idle_nodes

ACCOUNTS = ["fleettestuser", "fleettestadmin"]


@pytest.mark.parametrize(
    ("identity", "login", "expected"),
    [
        (None, "fleetlab", ["id"]),
        ({"autoUser": {"elevationLevel": "nonadmin"}}, "fleetlab", ["id"]),
        (
            {"autoUser": {"elevationLevel": "admin"}},
            "fleetlab",
            ["sudo", "-n", "--preserve-env", "--", "id"],
        ),
        ({"autoUser": {"elevationLevel": "admin"}}, "root", ["id"]),
        (
            {"username": "bob"},
            "fleetlab",
            ["sudo", "-n", "-u", "bob", "--preserve-env", "--", "id"],
        ),
        ({"username": "fleetlab"}, "fleetlab", ["id"]),
    ],
)
def test_the_argv_that_runs_a_task_as_someone(identity, login, expected):
    assert wrap(identity, ["id"], login) == expected
    assert needs_sudo(identity, login) == (expected[0] == "sudo")


@pytest.fixture
def accounts():
    if os.geteuid() != 0:
        pytest.skip("creating OS user accounts on the lab host needs root")
    yield ACCOUNTS
    for name in ACCOUNTS:
        subprocess.run(["userdel", "-r", name], capture_output=True)
        subprocess.run(["rm", "-f", f"/etc/sudoers.d/fleet-{name}"], capture_output=True)


@pytest.mark.lab
def test_tasks_run_as_admin_as_pool_users_and_as_the_login_user(
    fleet, lab_inventory, controller, accounts, tmp_path
):
    fleet("host", "import", str(lab_inventory))
    host = fleet.json("host", "list")[0]["id"]
    (tmp_path / "pool.json").write_text(
        json.dumps(
            {
                "id": "p",
                "hosts": [host],
                "taskSlotsPerNode": 4,
                "userAccounts": [
                    {"name": "fleettestuser"},
                    {"name": "fleettestadmin", "elevationLevel": "admin"},
                ],
                "startTask": {
                    "commandLine": "/bin/sh -c 'id -u > $FLEET_NODE_SHARED_DIR/start-uid'",
                    "userIdentity": {"autoUser": {"elevationLevel": "admin"}},
                },
            }
        )
    )
    fleet("pool", "create", "--json-file", str(tmp_path / "pool.json"))
    controller()
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet.add_tasks(
        "j",
        [
            {"id": "plain", "commandLine": "id -un"},
            {
                "id": "admin",
                "commandLine": "id -u",
                "userIdentity": {"autoUser": {"scope": "task", "elevationLevel": "admin"}},
            },
            {
                "id": "named",
                "commandLine": "/bin/sh -c 'id -un; echo $FLEET_TASK_ID; touch mine'",
                "userIdentity": {"username": "fleettestuser"},
            },
            {
                "id": "named-admin",
                "commandLine": "sudo -n id -u",
                "userIdentity": {"username": "fleettestadmin"},
            },
        ],
    )
    assert fleet("job", "wait", "j", "--timeout", "90").code == 0

    def out(task):
        return fleet("task", "file", "download", "stdout.txt", "--job", "j", "--id", task).stdout

    assert out("plain") == "fleetlab\n"
    assert out("admin") == "0\n"
    assert out("named") == "fleettestuser\nnamed\n"  # the environment survives sudo
    assert out("named-admin") == "0\n"
    node = fleet.json("node", "list", "--pool", "p")[0]
    assert Path(node["nodeRootDirectory"], "shared", "start-uid").read_text() == "0\n"

    # On the node, task dirs and outputs are the login user's and the task user's only.
    def mode(path):
        return stat.S_IMODE(path.lstat().st_mode)

    root = Path(node["nodeRootDirectory"])
    login = root.stat().st_uid
    assert (mode(root), mode(root / "shared"), mode(root / "workitems")) == (0o711, 0o1777, 0o711)
    plain, named = root / "workitems/j/job-1/plain", root / "workitems/j/job-1/named"
    assert (mode(plain), mode(plain / "wd")) == (0o700, 0o700)
    assert mode(named) == 0o711  # the named user passes through to its own wd
    wd = (named / "wd").stat()
    assert (stat.S_IMODE(wd.st_mode), wd.st_gid) == (0o2750, root.stat().st_gid)
    assert pwd.getpwuid(wd.st_uid).pw_name == "fleettestuser"
    assert (named / "wd/mine").stat().st_gid == root.stat().st_gid  # fleet reads outputs
    for task in (plain, named):
        for name in ("stdout.txt", "stderr.txt", "exit.json"):
            st = (task / name).stat()
            assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, login), (task, name)


def test_bad_user_names_and_passwords_are_refused(fleet, tmp_path):
    (tmp_path / "inv.ini").write_text("n1 ansible_host=127.0.0.1\n")
    fleet("host", "import", str(tmp_path / "inv.ini"))
    for accounts, code in (
        ([{"name": "Root; rm -rf /"}], "InvalidPropertyValue"),
        ([{"name": "ok", "password": ""}], "InvalidPropertyValue"),
        ([{"name": "ok", "password": "two\nlines"}], "InvalidPropertyValue"),
        ([{"name": "ok", "passwordSecretId": "0" * 32}], "UnknownProperty"),
    ):
        (tmp_path / "pool.json").write_text(
            json.dumps({"id": "p", "hosts": ["n1"], "userAccounts": accounts})
        )
        result = fleet(
            "pool", "create", "--json-file", str(tmp_path / "pool.json"), "-o", "json", check=False
        )
        assert result.code == 2
        assert json.loads(result.stderr)["error"]["code"] == code
    assert fleet.json("pool", "list") == []


def test_a_task_naming_a_user_its_pool_lacks_is_refused(fleet, tmp_path):
    (tmp_path / "inv.ini").write_text("n1 ansible_host=127.0.0.1\n")
    fleet("host", "import", str(tmp_path / "inv.ini"))
    fleet("pool", "create", "--id", "p", "--hosts", "n1")
    fleet("job", "create", "--id", "j", "--pool", "p")
    result = fleet.add_tasks(
        "j", {"id": "t", "commandLine": "id", "userIdentity": {"username": "nobody"}}, check=False
    )
    assert result.code == 2
    assert json.loads(result.stderr)["error"]["field"] == "userIdentity.username"
    assert fleet.json("task", "list", "--job", "j") == []


@pytest.mark.lab
def test_a_start_task_runs_as_a_pool_user_in_its_own_private_wd(
    fleet, lab_inventory, controller, accounts, tmp_path
):
    fleet("host", "import", str(lab_inventory))
    host = fleet.json("host", "list")[0]["id"]
    (tmp_path / "pool.json").write_text(
        json.dumps(
            {
                "id": "p",
                "hosts": [host],
                "userAccounts": [{"name": "fleettestuser"}],
                "startTask": {
                    "commandLine": "/bin/sh -c 'id -un > made; cp made $FLEET_NODE_SHARED_DIR/who'",
                    "userIdentity": {"username": "fleettestuser"},
                    "waitForSuccess": True,
                },
            }
        )
    )
    fleet("pool", "create", "--json-file", str(tmp_path / "pool.json"))
    controller()
    wait_for_idle_nodes(fleet, "p")
    root = Path(fleet.json("node", "list", "--pool", "p")[0]["nodeRootDirectory"])
    assert (root / "shared/who").read_text() == "fleettestuser\n"
    wd = (root / "startup/wd").stat()
    assert stat.S_IMODE(wd.st_mode) == 0o2750
    assert pwd.getpwuid(wd.st_uid).pw_name == "fleettestuser"


@pytest.mark.lab
def test_a_named_users_output_file_cannot_be_a_link_to_the_login_users_files(
    fleet, lab_inventory, controller, accounts, tmp_path
):
    fleet("host", "import", str(lab_inventory))
    host = fleet.json("host", "list")[0]["id"]
    pool = {"id": "p", "hosts": [host], "userAccounts": [{"name": "fleettestuser"}]}
    (tmp_path / "pool.json").write_text(json.dumps(pool))
    fleet("pool", "create", "--json-file", str(tmp_path / "pool.json"))
    controller()
    wait_for_idle_nodes(fleet, "p")
    root = Path(fleet.json("node", "list", "--pool", "p")[0]["nodeRootDirectory"])
    secret = root / "volatile" / "login-users-secret"
    secret.write_text("only the login user may read this\n")
    os.chown(secret, root.stat().st_uid, root.stat().st_gid)
    secret.chmod(0o600)
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet.add_tasks(
        "j",
        {
            "id": "t",
            "commandLine": f"/bin/sh -c 'echo mine > real.txt; ln -s {secret} leak.txt'",
            "userIdentity": {"username": "fleettestuser"},
            "outputFiles": [
                {
                    "filePattern": "*.txt",
                    "destination": {"container": {"path": "out"}},
                    "uploadOptions": {"uploadCondition": "taskcompletion"},
                }
            ],
        },
    )
    assert fleet("job", "wait", "j", "--timeout", "60").code == 0
    assert fleet("file", "download", "out/real.txt").stdout == "mine\n"
    assert fleet("file", "download", "out/leak.txt", check=False).code == 3
