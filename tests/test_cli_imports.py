"""``fleet --help``, the read commands and ``fleet exec`` start without the ORM: the real
CLI runs in a subprocess that reports, at exit, which database modules it imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.cli import COMMANDS, load_command
from tests.conftest import Fleet

#: Runs fleet.cli.main with the given arguments, then writes the ORM and driver modules
#: it imported to the file named by $FLEET_TEST_MODULES.
WRAPPER = """
import atexit, json, os, sys
def report():
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "sqlmodel"))
    with open(os.environ["FLEET_TEST_MODULES"], "w") as f:
        json.dump(heavy, f)
atexit.register(report)
from fleet.cli import main
sys.argv = ["fleet", *sys.argv[1:]]
main()
"""


def _orm_modules(fleet: Fleet, tmp_path: Path, *args: str) -> tuple[list[str], str]:
    """Run ``fleet ARGS``; return the ORM modules it imported and its stdout."""
    report = tmp_path / "modules.json"
    report.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, *args],
        env={**fleet.env, "FLEET_TEST_MODULES": str(report)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(report.read_text()), proc.stdout


def test_help_lists_every_command_without_importing_it(fleet: Fleet, tmp_path: Path) -> None:
    for args in ((), ("--help",)):
        loaded, out = _orm_modules(fleet, tmp_path, *args)
        assert loaded == [], args
        for name in COMMANDS:
            assert f" {name} " in out
    assert not (fleet.home / "fleet.db").exists()


def test_the_listed_help_is_each_commands_own() -> None:
    for name, (_, attr, help_) in COMMANDS.items():
        command = load_command(name)
        assert command.name == name
        assert command.help == help_, name
        assert hasattr(command, "commands") == (attr != "register"), name


READS = [
    ("pool", "list"),
    ("pool", "show", "p"),
    ("node", "list", "--pool", "p"),
    ("node", "show", "--pool", "p", "--node", "h1"),
    ("job", "list"),
    ("job", "list", "--job-schedule", "s"),
    ("job", "show", "j"),
    ("job", "task-counts", "j"),
    ("task", "list", "--job", "j"),
    ("task", "show", "--job", "j", "--id", "t1"),
    ("job-schedule", "list"),
    ("job-schedule", "show", "s"),
    ("job-schedule", "exists", "s"),
    ("schedule", "exists", "nope"),
    ("host", "list"),
    ("host", "show", "h1"),
    ("job", "show", "nope"),
    ("job", "wait", "j", "--timeout", "0"),
]


def test_read_commands_do_not_import_the_orm(fleet: Fleet, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[all]\nh1 ansible_host=127.0.0.1 ansible_port=1\n")
    fleet("host", "import", str(inventory))
    fleet("pool", "create", "--id", "p", "--hosts", "h1")
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet("task", "create", "--job", "j", "--id", "t1", "--command-line", "true")
    fleet(
        "job-schedule",
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
    for args in READS:
        for output in ("table", "json"):
            loaded, out = _orm_modules(fleet, tmp_path, *args, "-o", output)
            assert loaded == [], args
            assert out == fleet(*args, "-o", output, check=False).stdout, args
    # a write still works, and does load the ORM
    loaded, _ = _orm_modules(fleet, tmp_path, "job", "delete", "j")
    assert "sqlmodel" in loaded


@pytest.mark.lab
def test_exec_does_not_import_the_orm_once_host_keys_are_known(
    fleet: Fleet, tmp_path: Path, lab_inventory: Path
) -> None:
    fleet("host", "import", str(lab_inventory))
    first = fleet("exec", "--hosts", "node01", "-o", "json", "--", "true").json()
    assert first[0]["exitCode"] == 0  # the first contact recorded the host key
    assert fleet.json("host", "show", "node01")["hostKeyFingerprint"].startswith("SHA256:")
    loaded, out = _orm_modules(
        fleet, tmp_path, "exec", "--hosts", "node01", "-o", "json", "--", "true"
    )
    assert loaded == []
    assert json.loads(out)[0]["exitCode"] == 0
