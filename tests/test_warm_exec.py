"""Warm ``fleet exec``: through a running controller's connections, printing what a cold
one prints; without a controller that answers, ``fleet exec`` runs cold."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fleet import control_socket, exec_command
from fleet import lab as lab_mod
from fleet.control_server import ControlServer
from fleet.settings import Settings
from tests.conftest import ControllerProcess, Fleet, make_pool, wait_for, wait_for_idle_nodes

REQUESTS = "control socket: exec request"


def _socket(fleet: Fleet) -> Path:
    return control_socket.socket_path(Settings.resolve(fleet.home))


def _start(controller, fleet: Fleet) -> ControllerProcess:
    proc = controller()
    wait_for(lambda: _socket(fleet).exists(), message="the control socket")
    return proc


def _rows(fleet: Fleet, *args: str) -> list[dict]:
    """The results of ``fleet -o json exec ARGS``."""
    return fleet("-o", "json", "exec", *args).json()


def _fails_on(port: int) -> list[str]:
    """A command that exits 3 on the lab node of sshd port ``port``, and prints ok elsewhere."""
    return ["sh", "-c", f'[ "${{SSH_CONNECTION##* }}" != {port} ] || exit 3; echo ok']


@pytest.mark.lab
def test_warm_exec_prints_what_cold_exec_prints(fleet, lab_inventory, lab, controller):
    fleet("host", "import", str(lab_inventory))
    command = ["--hosts", "node0[1-3]", "--timeout", "10", "--", *_fails_on(lab.nodes[1].port)]
    forms = {
        "table": ["exec", *command],
        "json": ["-o", "json", "exec", *command],
        "json, read by the CLI framework": ["exec", "-ojson", *command],
    }
    lab_mod.stop_node(lab, lab.nodes[2].name)
    try:
        cold = {name: fleet(*args, check=False) for name, args in forms.items()}
        proc = _start(controller, fleet)
        warm = {name: fleet(*args, check=False) for name, args in forms.items()}
        forced_cold = fleet("exec", "--no-controller", *command, check=False)
    finally:
        lab_mod.start_node(lab, lab.nodes[2].name)
    assert proc.log_text().count(REQUESTS) == len(forms)  # --no-controller did not ask
    for name in forms:
        assert (warm[name].code, warm[name].stdout) == (cold[name].code, cold[name].stdout), name
    assert forced_cold.stdout == cold["table"].stdout
    rows = {r["host"]: r for r in warm["json"].json()}
    assert warm["json"].code == 1
    assert rows["node01"]["stdout"] == "ok\n" and rows["node01"]["exitCode"] == 0
    assert rows["node02"]["exitCode"] == 3 and rows["node02"]["error"] is None
    assert rows["node03"]["error"]["code"] == "NodeUnreachable"
    assert "node02 (1) exit 3" in warm["table"].stdout


@pytest.mark.lab
def test_an_unknown_pool_or_host_is_the_same_error_warm_and_cold(fleet, lab_inventory, controller):
    fleet("host", "import", str(lab_inventory))
    forms = [
        ("exec", "--pool", "nosuch", "--", "true"),
        ("-o", "json", "exec", "--hosts", "node01,nosuch", "--", "true"),
        ("exec", "--hosts", "node01", "--pool", "p", "--", "true"),
    ]
    cold = [fleet(*args, check=False) for args in forms]
    proc = _start(controller, fleet)
    warm = [fleet(*args, check=False) for args in forms]
    assert [(r.code, r.stderr, r.stdout) for r in warm] == [
        (r.code, r.stderr, r.stdout) for r in cold
    ]
    assert [r.code for r in warm] == [3, 3, 2]
    assert json.loads(warm[1].stderr)["error"]["code"] == "HostNotFound"
    assert proc.log_text().count(REQUESTS) == 2  # the bad flags were refused before asking


@pytest.mark.lab
def test_a_second_warm_exec_reuses_the_connections_it_opened(fleet, lab_inventory, controller):
    fleet("host", "import", str(lab_inventory))
    proc = _start(controller, fleet)
    for _ in range(2):
        rows = _rows(fleet, "--hosts", "node0[1-2]", "--", "echo", "hi")
        assert [r["stdout"] for r in rows] == ["hi\n", "hi\n"]
    log = proc.log_text()
    assert log.count(": new connection") == 2
    assert log.count(": kept connection") == 2


@pytest.mark.lab
def test_warm_exec_on_a_pool_runs_on_the_node_links(fleet, lab_inventory, controller):
    make_pool(fleet, lab_inventory, "p", 2)
    proc = _start(controller, fleet)
    wait_for_idle_nodes(fleet, "p")
    rows = _rows(fleet, "--pool", "p", "--", "echo", "hi")
    assert [(r["host"], r["stdout"]) for r in rows] == [("node01", "hi\n"), ("node02", "hi\n")]
    log = proc.log_text()
    assert log.count(": node link") == 2 and ": new connection" not in log


@pytest.mark.lab
def test_the_control_socket_is_the_owners_only_and_goes_with_the_controller(
    fleet, lab_inventory, controller
):
    fleet("host", "import", str(lab_inventory))
    proc = _start(controller, fleet)
    assert _socket(fleet).stat().st_mode & 0o777 == 0o600
    assert proc.stop() == 0
    assert not _socket(fleet).exists()


@pytest.mark.lab
@pytest.mark.parametrize("kind", ["stale", "silent"])
def test_exec_runs_cold_when_no_controller_answers_on_the_socket(fleet, lab_inventory, kind):
    """A socket file a killed controller left (connection refused), or one whose owner
    never says hello: fleet exec runs the command itself, once."""
    fleet("host", "import", str(lab_inventory))
    path = _socket(fleet)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        if kind == "silent":
            sock.listen()
        else:
            sock.close()
        started = time.monotonic()
        rows = _rows(fleet, "--hosts", "node01", "--", "echo", "hi")
    assert rows[0]["stdout"] == "hi\n"
    assert time.monotonic() - started < control_socket.HELLO_TIMEOUT + 30


@pytest.mark.lab
def test_a_long_warm_exec_does_not_hold_up_another(fleet, lab_inventory, controller):
    fleet("host", "import", str(lab_inventory))
    proc = _start(controller, fleet)
    slow = subprocess.Popen(
        [sys.executable, "-m", "fleet", "exec", "--hosts", "node01", "--", "sleep", "5"],
        env=fleet.env,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: "exec on 1 hosts" in proc.log_text(), message="the slow exec")
        assert _rows(fleet, "--hosts", "node02", "--", "echo", "hi")[0]["stdout"] == "hi\n"
        assert slow.poll() is None
    finally:
        assert slow.wait(30) == 0


@pytest.mark.lab
def test_a_client_that_leaves_cancels_its_warm_run(fleet, lab_inventory, controller):
    fleet("host", "import", str(lab_inventory))
    proc = _start(controller, fleet)
    slow = subprocess.Popen(
        [sys.executable, "-m", "fleet", "exec", "--hosts", "node01", "--", "sleep", "60"],
        env=fleet.env,
        stdout=subprocess.DEVNULL,
    )
    wait_for(lambda: "exec on 1 hosts" in proc.log_text(), message="the slow exec")
    slow.kill()
    slow.wait()
    wait_for(lambda: "the client left; its runs were cancelled" in proc.log_text())
    assert _rows(fleet, "--hosts", "node01", "--", "echo", "hi")[0]["stdout"] == "hi\n"


@pytest.mark.lab
def test_a_controller_that_dies_mid_run_is_an_error_not_a_second_run(
    fleet, lab_inventory, controller
):
    fleet("host", "import", str(lab_inventory))
    proc = _start(controller, fleet)
    slow = subprocess.Popen(
        [sys.executable, "-m", "fleet", "exec", "--hosts", "node01", "--", "sleep", "30"],
        env=fleet.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: "exec on 1 hosts" in proc.log_text(), message="the slow exec")
    proc.kill()
    out, err = slow.communicate(timeout=20)
    assert slow.returncode == 1 and out == ""
    assert "ControllerLost" in err


WRAPPER = """
import atexit, json, os, sys
def report():
    with open(os.environ["FLEET_TEST_MODULES"], "w") as f:
        json.dump(sorted({m.split(".")[0] for m in sys.modules}), f)
atexit.register(report)
from fleet.__main__ import main
sys.argv = ["fleet", *sys.argv[1:]]
main()
"""


@pytest.mark.lab
def test_warm_exec_loads_neither_asyncssh_nor_the_orm_nor_the_cli_framework(
    fleet, lab_inventory, controller, tmp_path
):
    fleet("host", "import", str(lab_inventory))
    _start(controller, fleet)
    report = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, "exec", "--hosts", "node01", "--", "echo", "hi"],
        env={**fleet.env, "FLEET_TEST_MODULES": str(report)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout == "---- node01 (1) exit 0 ----\nhi\n"
    loaded = set(json.loads(report.read_text()))
    assert not loaded & {"asyncssh", "sqlalchemy", "sqlmodel", "typer", "rich", "pydantic"}


def test_the_peer_check_compares_user_ids():
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert control_socket.peer_uid(a) == os.getuid()
        assert control_socket.same_user(a)
        assert not control_socket.same_user(a, uid=os.getuid() + 1)


CLIENT_AS_OTHER_USER = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
print(repr(s.recv(100)))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_a_client_of_another_user_gets_no_hello():
    """Even with the file mode opened up, the controller answers its own user only."""
    nobody = pwd.getpwnam("nobody")
    shared = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's tmp_path is root's only
    shared.chmod(0o755)
    path = shared / "control.sock"

    async def main() -> str:
        server = ControlServer(path, {}, lambda pool, hosts: [], lambda *key: None)
        await server.start()
        try:
            path.chmod(0o666)
            client = await asyncio.create_subprocess_exec(
                "/usr/bin/python3",
                "-c",
                CLIENT_AS_OTHER_USER,
                str(path),
                user=nobody.pw_uid,
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await client.communicate()
            return out.decode()
        finally:
            await server.close()

    try:
        assert asyncio.run(main()) == "b''\n"
        assert not path.exists()
    finally:
        shutil.rmtree(shared)


@pytest.mark.parametrize(
    ("args", "read"),
    [
        (["exec", "--hosts", "n*", "--", "true"], ({"hosts": "n*"}, ["true"])),
        (["exec", "--pool=p", "echo", "-n", "x"], ({"pool": "p"}, ["echo", "-n", "x"])),
        (
            ["--home", "h", "-o", "json", "exec", "--timeout", "5", "--hosts", "a", "--", "ls"],
            ({"home": "h", "output": "json", "timeout": "5", "hosts": "a"}, ["ls"]),
        ),
        (
            ["exec", "--no-controller", "-o", "table", "--hosts", "a", "--", "--help"],
            ({"--no-controller": "", "exec_output": "table", "hosts": "a"}, ["--help"]),
        ),
        (["exec", "--hosts", "a", "--"], None),  # no command
        (["exec", "--help"], None),
        (["exec", "-ojson", "--hosts", "a", "--", "true"], None),  # left to the CLI framework
        (["--version"], None),
        (["host", "list"], None),
        (["--home", "exec", "host", "list"], None),
    ],
)
def test_only_plain_exec_command_lines_skip_the_cli_framework(args, read):
    assert exec_command._parse(args) == read
