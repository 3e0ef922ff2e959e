"""Integration tests of the loopback lab: real sshd processes, checked with paramiko."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

import agent_bootstrap
from fleet import lab
from fleet.errors import BadInput, NotFound
from fleet.host_hooks import run_hook
from fleet.inventory import parse_inventory

pytestmark = pytest.mark.lab

SSHD = shutil.which("sshd") or next(
    (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)), None
)
if SSHD is None:
    pytest.skip(
        "no sshd binary: install openssh-server to run the loopback lab tests",
        allow_module_level=True,
    )

IS_ROOT = os.geteuid() == 0
AGENT = Path(agent_bootstrap.__file__).resolve().parent / "fleet_agent.py"


def make_dir() -> Path:
    """A lab dir whose parents the lab user can search (pytest's tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="fleet-lab-test-", dir="/tmp"))
    d.chmod(0o755)
    return d


@contextlib.contextmanager
def running_lab(nodes: int) -> Iterator[Path]:
    d = make_dir()
    try:
        lab.up(d, nodes=nodes)
        yield d
    finally:
        with contextlib.suppress(NotFound):
            lab.down(d)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def lab_dir() -> Iterator[Path]:
    with running_lab(3) as d:
        yield d


@pytest.fixture
def the_lab(lab_dir: Path) -> lab.Lab:
    return lab.load(lab_dir)


def host_key(node: lab.LabNode) -> paramiko.PKey:
    kind, b64 = Path(f"{node.host_key}.pub").read_text().split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(b64))


def fingerprint(node: lab.LabNode) -> str:
    b64 = Path(f"{node.host_key}.pub").read_text().split()[1]
    return hashlib.sha256(base64.b64decode(b64)).hexdigest()


def connect(
    the_lab: lab.Lab, node: lab.LabNode, key: paramiko.PKey | None = None
) -> paramiko.SSHClient:
    """Connect with paramiko, trusting only ``key`` (default: the node's own .pub)."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key = key or host_key(node)
    client.get_host_keys().add(f"[127.0.0.1]:{node.port}", key.get_name(), key)
    client.connect(
        "127.0.0.1",
        port=node.port,
        username=the_lab.user,
        pkey=paramiko.Ed25519Key.from_private_key_file(str(the_lab.key_file)),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
        banner_timeout=10,
        auth_timeout=10,
    )
    return client


def run(client: paramiko.SSHClient, command: str) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=10)
    out, err = stdout.read().decode(), stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


def state(lab_dir: Path, name: str) -> dict[str, object]:
    return next(row for row in lab.status(lab_dir) if row["node"] == name)


def wait_dead(transport: paramiko.Transport, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while transport.is_active() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not transport.is_active()


def test_up_writes_lab_files(the_lab: lab.Lab, lab_dir: Path) -> None:
    assert the_lab.dir == lab_dir.resolve()
    assert [n.name for n in the_lab.nodes][:3] == ["node01", "node02", "node03"]
    assert len({n.port for n in the_lab.nodes}) == len(the_lab.nodes)
    assert the_lab.user == (lab.LAB_USER if IS_ROOT else pwd.getpwuid(os.geteuid()).pw_name)
    assert (lab_dir / "lab.json").is_file()
    assert the_lab.inventory_path.is_file()
    assert the_lab.key_file.stat().st_mode & 0o077 == 0
    for node in the_lab.nodes:
        assert node.alive() and node.pid() is not None
        assert node.root == lab_dir.resolve() / "nodes" / node.name
        assert "ListenAddress 127.0.0.1\n" in node.config.read_text()
        assert f"[127.0.0.1]:{node.port} ssh-ed25519 " in the_lab.known_hosts_path.read_text()


def test_every_node_logs_in_with_its_own_host_key(the_lab: lab.Lab) -> None:
    assert len({fingerprint(n) for n in the_lab.nodes}) == len(the_lab.nodes)
    for node in the_lab.nodes:
        with connect(the_lab, node) as client:
            assert run(client, "id -un") == (0, f"{the_lab.user}\n", "")
            assert run(client, "echo hi") == (0, "hi\n", "")
            probe = shlex.quote(str(node.root / "probe"))
            assert run(client, f"touch {probe} && rm {probe}")[0] == 0


def test_wrong_host_key_is_rejected(the_lab: lab.Lab) -> None:
    first, second = the_lab.nodes[:2]
    with pytest.raises(paramiko.BadHostKeyException):
        connect(the_lab, second, key=host_key(first))


def test_status_reports_running_nodes(lab_dir: Path, the_lab: lab.Lab) -> None:
    rows = lab.status(lab_dir)
    assert [r["node"] for r in rows] == [n.name for n in the_lab.nodes]
    for row, node in zip(rows, the_lab.nodes, strict=True):
        assert row == {
            "node": node.name,
            "port": node.port,
            "pid": node.pid(),
            "state": "running",
            "root": str(node.root),
        }


def test_up_again_keeps_running_nodes(lab_dir: Path, the_lab: lab.Lab) -> None:
    before = {n.name: (n.port, n.pid()) for n in the_lab.nodes}
    again = lab.up(lab_dir, nodes=len(the_lab.nodes))
    assert {n.name: (n.port, n.pid()) for n in again.nodes} == before


def test_up_grows_the_lab(lab_dir: Path, the_lab: lab.Lab) -> None:
    before = {n.name: (n.port, n.pid()) for n in the_lab.nodes}
    grown = lab.up(lab_dir, nodes=len(the_lab.nodes) + 1)
    assert len(grown.nodes) == len(before) + 1
    assert {n.name: (n.port, n.pid()) for n in grown.nodes[: len(before)]} == before
    new = grown.nodes[-1]
    assert new.name == f"node{len(grown.nodes):02d}"
    assert new.port not in {port for port, _ in before.values()}
    with connect(grown, new) as client:
        assert run(client, "echo hi")[1] == "hi\n"
    assert f"{new.name} ansible_host=127.0.0.1" in grown.inventory_path.read_text()


def test_stop_and_start_node_on_the_same_port(lab_dir: Path, the_lab: lab.Lab) -> None:
    node = the_lab.nodes[1]
    with connect(the_lab, node) as client:
        lab.stop_node(the_lab, node.name)
        assert state(lab_dir, node.name)["state"] == "stopped"
        assert state(lab_dir, node.name)["pid"] is None
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", node.port), 2):
            pass
        # the listener is gone, but the open connection has its own sshd processes
        assert run(client, "echo still here")[1] == "still here\n"
    lab.start_node(the_lab, node.name)
    assert state(lab_dir, node.name)["state"] == "running"
    assert state(lab_dir, node.name)["port"] == node.port
    with connect(the_lab, node) as client:
        assert run(client, "echo hi")[1] == "hi\n"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["TERM", "KILL"])
def test_stop_node_with_kill_sessions_cuts_live_connections(the_lab: lab.Lab, sig: int) -> None:
    node = the_lab.nodes[2]
    with connect(the_lab, node) as client:
        assert run(client, "echo hi")[1] == "hi\n"
        client.exec_command("cat", timeout=15)  # exits at EOF, once the session is cut
        transport = client.get_transport()
        assert transport is not None
        lab.stop_node(the_lab, node.name, sig, kill_sessions=True)
        assert not node.alive()
        assert wait_dead(transport), "the connection survived kill_sessions"
        with pytest.raises((paramiko.SSHException, EOFError, OSError)):
            run(client, "echo hi")
    lab.start_node(the_lab, node.name)
    with connect(the_lab, node) as client:
        assert run(client, "echo back")[1] == "back\n"


def test_sigstop_freezes_node_and_start_node_resumes_it(the_lab: lab.Lab) -> None:
    node = the_lab.nodes[0]
    lab.stop_node(the_lab, node.name, signal.SIGSTOP)
    try:
        assert node.alive()
        with socket.create_connection(("127.0.0.1", node.port), 2) as sock:
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                sock.recv(64)  # the kernel accepts, but a stopped sshd never greets
    finally:
        lab.start_node(the_lab, node.name)
    with connect(the_lab, node) as client:
        assert run(client, "echo hi")[1] == "hi\n"


def test_regenerate_host_key_changes_the_fingerprint(the_lab: lab.Lab) -> None:
    node = the_lab.nodes[0]
    old_key, old_print = host_key(node), fingerprint(node)
    lab.regenerate_host_key(the_lab, node.name)
    assert fingerprint(node) != old_print
    assert node.alive()
    with pytest.raises(paramiko.BadHostKeyException):
        connect(the_lab, node, key=old_key)
    with connect(the_lab, node) as client:
        assert run(client, "echo hi")[1] == "hi\n"
    assert Path(f"{node.host_key}.pub").read_text().split()[1] in (
        the_lab.known_hosts_path.read_text()
    )


def test_write_inventory(the_lab: lab.Lab, tmp_path: Path) -> None:
    path = lab.write_inventory(the_lab, tmp_path / "inv.ini", node_root_base=Path("/srv/roots"))
    assert path == tmp_path / "inv.ini"
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    assert lines[0] == "[lab]"
    assert len(lines) == 1 + len(the_lab.nodes)
    node = the_lab.nodes[0]
    assert lines[1] == (
        f"{node.name} ansible_host=127.0.0.1 ansible_port={node.port} "
        f"ansible_user={the_lab.user} ansible_ssh_private_key_file={the_lab.key_file} "
        f"fleet_node_root=/srv/roots/{node.name} "
        f"fleet_reboot_command={shlex.quote(shlex.join(lab.reboot_command(the_lab, node.name)))}"
    )
    default = lab.write_inventory(the_lab, tmp_path / "default.ini").read_text()
    assert f"fleet_node_root={the_lab.dir}/nodes/{node.name} " in default


@pytest.mark.skipif(not IS_ROOT, reason="the lab user gets sudo only when the lab runs as root")
def test_lab_user_has_passwordless_sudo(the_lab: lab.Lab) -> None:
    if shutil.which("sudo") is None:
        pytest.skip("sudo is not installed")
    with connect(the_lab, the_lab.nodes[0]) as client:
        assert run(client, "sudo -n true")[0] == 0
        assert run(client, "sudo -n id -un")[1] == "root\n"


@pytest.mark.skipif(not IS_ROOT, reason="only a root lab logs in as another user")
def test_unsearchable_parent_is_refused() -> None:
    parent = Path(tempfile.mkdtemp(dir="/tmp"))  # mode 0700, like /tmp/pytest-of-root
    try:
        with pytest.raises(BadInput) as err:
            lab.up(parent / "lab", nodes=1)
        assert err.value.code == "LabDirNotAccessible"
        assert str(parent) in err.value.message
        assert not (parent / "lab").exists()
    finally:
        shutil.rmtree(parent)


def test_down_stops_everything_and_up_restarts_on_the_same_ports() -> None:
    with running_lab(2) as d:
        first = lab.load(d)
        client = connect(first, first.nodes[0])
        transport = client.get_transport()
        assert transport is not None
        lab.down(d)
        assert [r["state"] for r in lab.status(d)] == ["stopped", "stopped"]
        assert wait_dead(transport), "down left a session running"
        client.close()
        assert (d / "lab.json").exists() and first.nodes[0].host_key.exists()
        again = lab.up(d, nodes=2)
        assert [n.port for n in again.nodes] == [n.port for n in first.nodes]
        assert all(n.alive() for n in again.nodes)


def test_bad_calls(lab_dir: Path, the_lab: lab.Lab, tmp_path: Path) -> None:
    with pytest.raises(NotFound) as err:
        lab.load(tmp_path / "nothing")
    assert err.value.code == "LabNotFound"
    with pytest.raises(NotFound) as err:
        lab.stop_node(the_lab, "node99")
    assert err.value.code == "LabNodeNotFound"
    with pytest.raises(BadInput):
        lab.up(lab_dir, nodes=0)


def test_default_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    assert lab.default_dir() == tmp_path / "home" / "lab"
    monkeypatch.delenv("FLEET_HOME")
    if os.geteuid() == 0:
        # Root's own home is private to the lab user: root's default lives in /var/lib.
        assert lab.default_dir() == Path("/var/lib/fleet-lab")
        return
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert lab.default_dir() == tmp_path / "xdg" / "fleet" / "lab"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert lab.default_dir() == tmp_path / ".local" / "share" / "fleet" / "lab"


# --- simulated reboots -----------------------------------------------------------------------


def agent_hello(
    the_lab: lab.Lab, node: lab.LabNode
) -> tuple[dict[str, object], paramiko.SSHClient]:
    """Start the node agent in a fresh SSH session; return its hello and the open client
    (the agent runs until the client is closed)."""
    agent = the_lab.dir / "fleet_agent_test.py"
    if not agent.exists():
        shutil.copyfile(AGENT, agent)
        agent.chmod(0o644)
    client = connect(the_lab, node)
    stdin, stdout, _ = client.exec_command(
        f"python3 {shlex.quote(str(agent))} {shlex.quote(str(node.root))}", timeout=15
    )
    client.agent_stdin = stdin  # type: ignore[attr-defined]  # EOF on it stops the agent
    hello = json.loads(stdout.readline())
    assert hello["type"] == "hello" and "error" not in hello, hello
    return hello, client


def start_detached_sleep(the_lab: lab.Lab, node: lab.LabNode) -> int:
    """Start a `sleep` on the node in a session of its own, outliving the SSH session."""
    with connect(the_lab, node) as client:
        code, out, err = run(client, "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!")
    assert code == 0, err
    return int(out)


def alive(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return raw[raw.rfind(")") + 2 :][:1] not in ("Z", "X")


def test_sessions_read_the_nodes_own_boot_id_file(the_lab: lab.Lab) -> None:
    ids = set()
    for node in the_lab.nodes[:2]:
        with connect(the_lab, node) as client:
            assert run(client, 'printf %s "$FLEET_BOOT_ID_FILE"')[1] == str(node.boot_id_file)
        hello, client = agent_hello(the_lab, node)
        client.close()
        assert hello["bootId"] == node.boot_id()
        ids.add(hello["bootId"])
    assert len(ids) == 2
    real = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert real not in ids


def test_reboot_node_kills_its_processes_and_gives_a_new_boot_id(the_lab: lab.Lab) -> None:
    node, other = the_lab.nodes[0], the_lab.nodes[1]
    hello, client = agent_hello(the_lab, node)
    transport = client.get_transport()
    assert transport is not None
    sleeper = start_detached_sleep(the_lab, node)
    bystander = start_detached_sleep(the_lab, other)
    old_listener = node.pid()
    try:
        assert alive(sleeper) and alive(int(str(hello["pid"])))
        result = lab.reboot_node(the_lab, node.name)
        assert result["bootId"] == node.boot_id() != hello["bootId"]
        assert result["state"] == "running" and result["port"] == node.port
        assert isinstance(result["killed"], int) and result["killed"] >= 3
        assert not alive(sleeper), "a detached process of the node survived the reboot"
        assert not alive(int(str(hello["pid"]))), "the agent survived the reboot"
        assert old_listener is not None and not alive(old_listener)
        assert wait_dead(transport), "a connection survived the reboot"
        assert alive(bystander), "rebooting one node killed a process of another"
        again, client2 = agent_hello(the_lab, node)
        client2.close()
        assert again["bootId"] == result["bootId"]
    finally:
        client.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(bystander, signal.SIGKILL)


def test_the_inventorys_reboot_command_reboots_the_node_through_run_hook(
    the_lab: lab.Lab,
) -> None:
    node = the_lab.nodes[2]
    (spec,) = [
        h
        for h in parse_inventory(the_lab.inventory_path.read_text(), filename="inventory.ini")
        if h.id == node.name
    ]
    assert spec.reboot_command == lab.reboot_command(the_lab, node.name)
    before = node.boot_id()
    sleeper = start_detached_sleep(the_lab, node)
    result = asyncio.run(run_hook(spec, "reboot", timeout=60))
    printed = json.loads(result.output)
    assert printed["node"] == node.name
    assert printed["bootId"] == node.boot_id() != before
    assert not alive(sleeper)
    with connect(the_lab, node) as client:
        assert run(client, "echo back")[1] == "back\n"


def test_reboot_of_an_unknown_node_is_refused(the_lab: lab.Lab) -> None:
    with pytest.raises(NotFound) as err:
        lab.reboot_node(the_lab, "node99")
    assert err.value.code == "LabNodeNotFound"
