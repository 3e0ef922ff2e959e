"""Tests of fleet.host_hooks: real small commands run as a host's hooks on this machine."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from fleet import host_hooks
from fleet.errors import RemoteError
from fleet.host_hooks import HookResult, HostHookError, parse_argv, run_hook
from fleet.inventory import HostSpec
from fleet.service import hosts
from fleet.store import Store
from tests.conftest import Fleet


def a_host(**commands: list[str] | None) -> SimpleNamespace:
    """A host as run_hook reads it, with the given ``<kind>_command`` argvs."""
    fields: dict[str, Any] = {f"{k}_command": None for k in host_hooks.HOOK_KINDS}
    fields |= {f"{k}_command": v for k, v in commands.items()}
    return SimpleNamespace(id="node07", address="192.0.2.7", port=2207, **fields)


def script(tmp_path: Path, name: str, body: str) -> str:
    """Write an executable sh script and return its path."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def run(host: SimpleNamespace, kind: str, timeout: float = 30) -> HookResult:
    return asyncio.run(run_hook(host, kind, timeout=timeout))


def failure(host: SimpleNamespace, kind: str, timeout: float = 30) -> HostHookError:
    with pytest.raises(HostHookError) as info:
        run(host, kind, timeout)
    assert isinstance(info.value, RemoteError)
    assert info.value.exit_status == 1
    assert info.value.target == "host node07"
    return info.value


def test_hook_gets_the_host_in_its_environment_and_no_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_TEST_INHERITED", "from the controller")
    code = (
        "import json, os, sys; "
        "print(json.dumps({k: os.environ.get(k) for k in "
        "('FLEET_HOST_ID', 'FLEET_HOST_ADDRESS', 'FLEET_HOST_PORT', 'FLEET_TEST_INHERITED')}));"
        "print(repr(sys.stdin.read()))"
    )
    result = run(a_host(reboot=[sys.executable, "-c", code]), "reboot")
    env_line, stdin_line = result.output.splitlines()
    assert json.loads(env_line) == {
        "FLEET_HOST_ID": "node07",
        "FLEET_HOST_ADDRESS": "192.0.2.7",
        "FLEET_HOST_PORT": "2207",
        "FLEET_TEST_INHERITED": "from the controller",
    }
    assert stdin_line == "''"
    assert result.exit_code == 0
    assert result.kind == "reboot"
    assert result.host_id == "node07"
    assert result.to_dict()["hook"] == "rebootCommand"


def test_argv_is_never_given_to_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "expanded"
    argv = [sys.executable, "-c", "import sys; print(sys.argv[1:])", f"$(touch {marker})", "a b"]
    result = run(a_host(power_on=argv), "power_on")
    assert result.output == f"['$(touch {marker})', 'a b']\n"
    assert not marker.exists()


def test_stdout_and_stderr_are_captured_together(tmp_path: Path) -> None:
    hook = script(tmp_path, "both.sh", "echo out; echo err >&2; echo out again\n")
    assert run(a_host(reimage=[hook]), "reimage").output == "out\nerr\nout again\n"


def test_only_the_tail_of_a_long_output_is_kept() -> None:
    code = "import sys; sys.stdout.write('x' * 300000 + 'END')"
    result = run(a_host(reboot=[sys.executable, "-c", code]), "reboot")
    assert len(result.output) == host_hooks.OUTPUT_LIMIT
    assert result.output.endswith("xEND")


def test_non_zero_exit_names_host_hook_code_and_output_tail(tmp_path: Path) -> None:
    hook = script(tmp_path, "fail.sh", "echo 'powering off the BMC' >&2\nexit 3\n")
    err = failure(a_host(power_off=[hook, "--now"]), "power_off")
    assert err.code == "HostHookFailed"
    assert err.field == "powerOffCommand"
    assert err.exit_code == 3 and err.signal_number is None
    assert "exited with code 3" in err.message
    assert "powering off the BMC" in err.message
    assert hook in err.message
    assert err.details["exitCode"] == 3
    assert err.details["argv"] == [hook, "--now"]
    assert err.details["output"] == "powering off the BMC\n"
    assert err.to_dict()["code"] == "HostHookFailed"


def test_hook_killed_by_a_signal_says_so(tmp_path: Path) -> None:
    hook = script(tmp_path, "suicide.sh", "kill -9 $$\n")
    err = failure(a_host(reboot=[hook]), "reboot")
    assert err.code == "HostHookFailed"
    assert err.signal_number == 9 and err.exit_code is None
    assert "killed by signal 9" in err.message


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # The hook starts a child in its process group that would outlive it, then hangs.
    hook = script(
        tmp_path,
        "hang.sh",
        f"sleep 300 &\necho $! > {pid_file}\necho started\nwait\n",
    )
    started = time.monotonic()
    err = failure(a_host(reboot=[hook]), "reboot", timeout=1.0)
    assert time.monotonic() - started < 10
    assert err.code == "HostHookTimedOut"
    assert "ran past 1 s" in err.message
    assert err.output == "started\n"
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the hook's child survived the timeout"


def test_hook_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    hook = script(tmp_path, "stubborn.sh", "trap '' TERM\nwhile :; do sleep 0.1; done\n")
    started = time.monotonic()
    err = failure(a_host(reboot=[hook]), "reboot", timeout=0.5)
    assert err.code == "HostHookTimedOut"
    assert err.signal_number == 9
    assert time.monotonic() - started < 10


def test_cancelling_the_caller_kills_the_hook(tmp_path: Path) -> None:
    pid_file = tmp_path / "hook.pid"
    hook = script(tmp_path, "slow.sh", f"echo $$ > {pid_file}\nexec sleep 300\n")

    async def cancel_soon() -> None:
        task = asyncio.create_task(run_hook(a_host(reboot=[hook]), "reboot", timeout=60))
        while not pid_file.exists() or not pid_file.read_text().strip():
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_soon())
    assert not _alive(int(pid_file.read_text()))


def test_missing_program_is_reported(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-program")
    err = failure(a_host(reimage=[missing, "x"]), "reimage")
    assert err.code == "HostHookProgramNotFound"
    assert missing in err.message
    assert err.field == "reimageCommand"


def test_program_that_cannot_be_executed_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "not-executable"
    path.write_text("#!/bin/sh\n")
    path.chmod(stat.S_IRUSR)
    if os.access(path, os.X_OK):  # root may execute anything with an x bit; this has none
        pytest.skip("this user can execute a file without execute permission")
    err = failure(a_host(reboot=[str(path)]), "reboot")
    assert err.code == "HostHookProgramNotExecutable"


def test_host_without_that_hook_is_refused() -> None:
    err = failure(a_host(reboot=["true"]), "power_on")
    assert err.code == "HostHookNotSet"
    assert "powerOnCommand" in err.message and "fleet_power_on_command" in err.message


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown hook kind"):
        run(a_host(reboot=["true"]), "shutdown")


def test_hook_command_and_json_field() -> None:
    host = a_host(power_on=["wol", "aa:bb"])
    assert host_hooks.hook_command(host, "power_on") == ["wol", "aa:bb"]
    assert host_hooks.hook_argv(host, "reboot") is None
    assert [host_hooks.json_field(k) for k in host_hooks.HOOK_KINDS] == [
        "rebootCommand",
        "reimageCommand",
        "powerOnCommand",
        "powerOffCommand",
    ]


@pytest.mark.parametrize(
    ("value", "argv"),
    [
        ("sudo -n systemctl reboot", ["sudo", "-n", "systemctl", "reboot"]),
        ("vagrant reload 'node 1'", ["vagrant", "reload", "node 1"]),
        ('ipmitool -H "$BMC" power cycle', ["ipmitool", "-H", "$BMC", "power", "cycle"]),
        (
            ["vagrant", "snapshot", "restore", "n1", "clean"],
            ["vagrant", "snapshot", "restore", "n1", "clean"],
        ),
        (["wol", 9], ["wol", "9"]),
    ],
)
def test_parse_argv_accepts_a_command_line_or_a_list(value: Any, argv: list[str]) -> None:
    assert parse_argv(value) == argv


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("reboot 'now", "No closing quotation"),
        ("", "must name a program"),
        ("   ", "must name a program"),
        ([], "must name a program"),
        (["", "x"], "must name a program"),
        (["ok", True], "must be a string"),
        (["ok", ["nested"]], "must be a string"),
        (42, "must be a command line or a list"),
        ({"argv": ["x"]}, "must be a command line or a list"),
        (["a\0b"], "NUL"),
    ],
)
def test_parse_argv_refuses_bad_values(value: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_argv(value)


def _alive(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return raw[raw.rfind(")") + 2 :][:1] not in ("Z", "X")


def test_hooks_from_an_inventory_are_stored_and_shown(fleet: Fleet, tmp_path: Path) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text(
        "[vms]\n"
        "vm1 ansible_host=192.0.2.1 fleet_reboot_command='vagrant reload vm1'\n"
        "vm2 ansible_host=192.0.2.2\n"
        "[vms:vars]\n"
        "fleet_power_on_command=wake --mac 'aa:bb'\n"
    )
    fleet("host", "import", str(inv))
    shown = json.loads(fleet("host", "show", "vm1", "-o", "json").stdout)
    assert shown["rebootCommand"] == ["vagrant", "reload", "vm1"]
    assert shown["powerOnCommand"] == ["wake", "--mac", "aa:bb"]
    assert "reimageCommand" not in shown and "powerOffCommand" not in shown
    listed = {h["id"]: h for h in json.loads(fleet("host", "list", "-o", "json").stdout)}
    assert listed["vm1"] == shown
    assert "rebootCommand" not in listed["vm2"]
    # Importing again without the var clears it: the inventory is the truth.
    inv.write_text("vm1 ansible_host=192.0.2.1\n")
    fleet("host", "import", str(inv))
    assert "rebootCommand" not in json.loads(fleet("host", "show", "vm1", "-o", "json").stdout)


def test_a_stored_host_runs_its_hook(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'fleet.db'}")
    code = "import os; print(os.environ['FLEET_HOST_ID'], os.environ['FLEET_HOST_PORT'])"
    spec = HostSpec(
        id="h1", address="192.0.2.9", port=2209, reboot_command=[sys.executable, "-c", code]
    )
    hosts.import_hosts(store, [spec])
    row, _, _ = hosts.show_host(store, "h1")
    assert asyncio.run(run_hook(row, "reboot")).output == "h1 2209\n"


def test_shown_hook_argvs_import_back_unchanged_as_yaml_lists(fleet: Fleet, tmp_path: Path) -> None:
    # No command creates hosts from host JSON (`host import` reads inventories), so the
    # round trip is: host show -o json -> a YAML inventory with those lists -> the same show.
    argv = ["/opt/bmc tool", "--pass=$SECRET", "it's", 'say "hi"', "off", "yes", "ü", "#x", ""]
    (tmp_path / "a.yml").write_text(
        yaml.safe_dump({"all": {"hosts": {"b1": {"fleet_power_off_command": argv}}}})
    )
    fleet("host", "import", str(tmp_path / "a.yml"))
    shown = json.loads(fleet("host", "show", "b1", "-o", "json").stdout)
    assert shown["powerOffCommand"] == argv
    hooks = {k: v for k, v in shown.items() if k.endswith("Command")}
    inventory_vars = {f"fleet_{k}_command": hooks[host_hooks.json_field(k)] for k in ("power_off",)}
    (tmp_path / "b.yml").write_text(yaml.safe_dump({"all": {"hosts": {"b1": inventory_vars}}}))
    fleet("host", "import", str(tmp_path / "b.yml"))
    again = json.loads(fleet("host", "show", "b1", "-o", "json").stdout)
    assert {k: v for k, v in again.items() if k != "source"} == {
        k: v for k, v in shown.items() if k != "source"
    }
