"""Bad input through the CLI: clear errors, stable codes and exit statuses, nothing stored."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.fixture
def with_pool(fleet, tmp_path):
    inv = tmp_path / "inv.ini"
    inv.write_text("[web]\nweb[1:3] ansible_host=127.0.0.1 ansible_port=1\n")
    fleet("host", "import", str(inv))
    fleet("pool", "create", "--id", "p", "--hosts", "web1,web2")
    return fleet


def _error(result) -> dict:
    return json.loads(result.stderr)["error"]


def test_bad_inventory_line_names_file_and_line_and_imports_nothing(fleet, tmp_path):
    inv = tmp_path / "bad.ini"
    inv.write_text("[web]\nweb1 ansible_host=10.0.0.1\nweb2 ansible_port=notaport\n")
    result = fleet("host", "import", str(inv), "-o", "json", check=False)
    assert result.code == 2
    err = _error(result)
    assert err["code"] == "InventoryParseError"
    assert f"{inv}:3" in err["message"]
    assert fleet.json("host", "list") == []


def test_unknown_pool_is_not_found_with_exit_3(with_pool):
    result = with_pool("pool", "show", "nope", "-o", "json", check=False)
    assert result.code == 3
    assert _error(result)["code"] == "PoolNotFound"


def test_duplicate_pool_is_a_conflict_with_exit_4(with_pool):
    result = with_pool("pool", "create", "--id", "p", "--hosts", "web3", "-o", "json", check=False)
    assert result.code == 4
    assert _error(result)["code"] == "PoolExists"


def test_negative_task_slots_are_rejected_naming_the_field(with_pool, tmp_path):
    spec = tmp_path / "pool.json"
    spec.write_text(json.dumps({"id": "q", "hosts": ["web3"], "taskSlotsPerNode": -1}))
    result = with_pool("pool", "create", "--json-file", str(spec), "-o", "json", check=False)
    assert result.code == 2
    err = _error(result)
    assert err["field"] == "taskSlotsPerNode" and err["target"] == "pool q"
    assert [p["id"] for p in with_pool.json("pool", "list")] == ["p"]


def test_unsupported_azure_field_is_reported_by_name(with_pool, tmp_path):
    spec = tmp_path / "job.json"
    spec.write_text(
        json.dumps(
            {
                "id": "j",
                "poolInfo": {"poolId": "p"},
                "networkConfiguration": {"subnetId": "x"},
            }
        )
    )
    result = with_pool("job", "create", "--json-file", str(spec), "-o", "json", check=False)
    assert result.code == 2
    err = _error(result)
    assert err["code"] == "UnsupportedProperty" and err["field"] == "networkConfiguration"


def test_task_collection_with_a_bad_task_stores_none(with_pool, tmp_path):
    with_pool("job", "create", "--id", "j", "--pool", "p")
    spec = tmp_path / "tasks.json"
    spec.write_text(
        json.dumps(
            [{"id": "a", "commandLine": "true"}, {"id": "b", "commandLine": "echo 'unterminated"}]
        )
    )
    result = with_pool(
        "task", "create", "--job", "j", "--json-file", str(spec), "-o", "json", check=False
    )
    assert result.code == 2
    assert _error(result)["target"] == "task j/b"
    assert with_pool.json("task", "list", "--job", "j") == []


def test_duplicate_task_ids_are_rejected(with_pool, tmp_path):
    with_pool("job", "create", "--id", "j", "--pool", "p")
    with_pool("task", "create", "--job", "j", "--id", "a", "--command-line", "true")
    spec = tmp_path / "tasks.json"
    spec.write_text(
        json.dumps([{"id": "b", "commandLine": "true"}, {"id": "b", "commandLine": "true"}])
    )
    dup = with_pool(
        "task", "create", "--job", "j", "--json-file", str(spec), "-o", "json", check=False
    )
    assert dup.code == 2 and _error(dup)["code"] == "DuplicateTaskId"
    again = with_pool(
        "task",
        "create",
        "--job",
        "j",
        "--id",
        "a",
        "--command-line",
        "true",
        "-o",
        "json",
        check=False,
    )
    assert again.code == 4 and _error(again)["code"] == "TaskExists"
    assert [t["id"] for t in with_pool.json("task", "list", "--job", "j")] == ["a"]


def test_host_in_a_pool_cannot_be_removed(with_pool):
    result = with_pool("host", "remove", "web1", "-o", "json", check=False)
    assert result.code == 4 and _error(result)["code"] == "HostInUse"
    with_pool("host", "remove", "web3")
    assert [h["id"] for h in with_pool.json("host", "list")] == ["web1", "web2"]


def test_azure_pool_json_loads_with_vm_size_kept(fleet, tmp_path):
    inv = tmp_path / "inv.ini"
    inv.write_text("n1 ansible_host=127.0.0.1\n")
    fleet("host", "import", str(inv))
    spec = tmp_path / "pool.json"
    spec.write_text(
        json.dumps(
            {
                "id": "azure",
                "vmSize": "standard_d2s_v3",
                "hosts": ["n1"],
                "taskSlotsPerNode": 4,
                "taskSchedulingPolicy": {"nodeFillType": "Pack"},
                "virtualMachineConfiguration": {"imageReference": {"publisher": "canonical"}},
                "startTask": {
                    "commandLine": "/bin/true",
                    "waitForSuccess": True,
                    "maxTaskRetryCount": 2,
                    "environmentSettings": [{"name": "A", "value": "1"}],
                },
            }
        )
    )
    fleet("pool", "create", "--json-file", str(spec))
    pool = fleet.json("pool", "show", "azure")
    assert pool["taskSlotsPerNode"] == 4
    assert pool["taskSchedulingPolicy"] == {"nodeFillType": "pack"}
    assert pool["vmSize"] == "standard_d2s_v3"
    assert pool["state"] == "active" and pool["allocationState"] == "steady"
    assert pool["currentDedicatedNodes"] == 1


def _leaf_commands():
    import typer.main

    from fleet.cli import app

    def walk(cmd, path):
        names = cmd.list_commands(None) if hasattr(cmd, "list_commands") else []
        if names:  # get_command, not .commands: the top group loads its commands lazily
            for name in names:
                yield from walk(cmd.get_command(None, name), [*path, name])
        else:
            yield " ".join(path), cmd

    return list(walk(typer.main.get_command(app), []))


@pytest.mark.parametrize(
    ("name", "command"), _leaf_commands(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_command_takes_the_output_option(name, command):
    opts = {o for p in command.params for o in getattr(p, "opts", [])}
    assert {"-o", "--output"} <= opts, f"fleet {name} lacks -o/--output"


@pytest.mark.parametrize(
    ("kind", "spec", "field"),
    [
        ("job", {"id": "j2", "poolInfo": {"poolId": "p"}, "priority": "high"}, "priority"),
        (
            "job",
            {"id": "j2", "poolInfo": {"poolId": "p"}, "usesTaskDependencies": "yes"},
            "usesTaskDependencies",
        ),
        ("task", {"id": "t", "commandLine": ["echo", "hi"]}, "commandLine"),
        (
            "task",
            {"id": "t", "commandLine": "true", "constraints": {"maxTaskRetryCount": "3"}},
            "constraints.maxTaskRetryCount",
        ),
        ("task", {"id": "t", "commandLine": "true", "requiredSlots": 0}, "requiredSlots"),
    ],
)
def test_wrongly_typed_fields_are_rejected_by_name(with_pool, kind, spec, field):
    if kind == "task":
        with_pool("job", "create", "--id", "j", "--pool", "p")
        args = ("task", "create", "--job", "j")
    else:
        args = ("job", "create")
    result = with_pool(*args, "--json-file", "-", "-o", "json", check=False, input=json.dumps(spec))
    assert result.code == 2
    assert json.loads(result.stderr)["error"]["field"] == field


@pytest.mark.parametrize("kind", ["pool", "job", "task"])
def test_a_spec_file_that_is_not_utf8_is_invalid_json_naming_the_file(with_pool, tmp_path, kind):
    spec = tmp_path / "spec.json"
    spec.write_bytes(b'{"id": "caf\xe9", "commandLine": "true"}')
    args = ("task", "create", "--job", "j") if kind == "task" else (kind, "create")
    if kind == "task":
        with_pool("job", "create", "--id", "j", "--pool", "p")
    from_file = with_pool(*args, "--json-file", str(spec), "-o", "json", check=False)
    from_stdin = subprocess.run(  # raw bytes on stdin, as a pipe gives them
        [sys.executable, "-m", "fleet", *args, "--json-file", "-", "-o", "json"],
        env=with_pool.env,
        input=spec.read_bytes(),
        capture_output=True,
        timeout=60,
    )
    for code, stderr, name in (
        (from_file.code, from_file.stderr, str(spec)),
        (from_stdin.returncode, from_stdin.stderr.decode(), "standard input"),
    ):
        assert code == 2 and "Traceback" not in stderr, stderr
        err = json.loads(stderr)["error"]
        assert err["code"] == "InvalidJson" and err["target"] == name
        assert "UTF-8" in err["message"]


def test_an_inventory_that_is_not_utf8_is_refused_naming_the_file(fleet, tmp_path):
    inv = tmp_path / "inv.ini"
    inv.write_bytes(b"[web]\nweb1 ansible_host=caf\xe9\n")
    result = fleet("host", "import", str(inv), "-o", "json", check=False)
    assert result.code == 2 and "Traceback" not in result.stderr
    err = _error(result)
    assert err["code"] == "InventoryParseError" and err["target"] == str(inv)
    assert err["details"]["line"] == 2
    assert fleet.json("host", "list") == []


def test_a_task_needing_more_slots_than_a_node_has_is_refused(with_pool):
    with_pool("job", "create", "--id", "j", "--pool", "p")
    result = with_pool.add_tasks(
        "j",
        [
            {"id": "fits", "commandLine": "true"},
            {"id": "big", "commandLine": "true", "requiredSlots": 2},
        ],
        check=False,
    )
    assert result.code == 2
    err = _error(result)
    assert err["code"] == "TaskNotSatisfiable" and err["field"] == "requiredSlots"
    assert err["target"] == "task j/big"
    assert with_pool.json("task", "list", "--job", "j") == []


def test_a_job_manager_needing_more_slots_than_a_node_has_is_refused(with_pool):
    manager = {"commandLine": "true", "requiredSlots": 2, "runExclusive": False}
    spec = {"id": "j", "poolInfo": {"poolId": "p"}, "jobManagerTask": manager}
    result = with_pool(
        "job", "create", "--json-file", "-", "-o", "json", check=False, input=json.dumps(spec)
    )
    assert result.code == 2
    err = _error(result)
    assert err["code"] == "TaskNotSatisfiable"
    assert err["field"] == "jobManagerTask.requiredSlots"
    assert with_pool.json("job", "list") == []


def test_a_host_without_a_user_gets_the_importing_user_recorded(fleet, tmp_path):
    from fleet.inventory import login_user

    ini = tmp_path / "inv.ini"
    ini.write_text("web1 ansible_host=192.0.2.1\nweb2 ansible_host=192.0.2.2 ansible_user=deploy\n")
    ssh = tmp_path / "ssh_config"
    ssh.write_text("Host db1\n  HostName 192.0.2.3\n")
    fleet("host", "import", str(ini))
    fleet("host", "import", str(ssh))
    users = {h["id"]: h["user"] for h in fleet.json("host", "list")}
    assert users == {"web1": login_user(), "web2": "deploy", "db1": login_user()}
