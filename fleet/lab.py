"""The loopback lab: N real OpenSSH sshd processes on 127.0.0.1 that stand in for fleet nodes."""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TypeVar

from fleet import lab_processes as processes
from fleet.errors import BadInput, Conflict, FleetError, NotFound, RemoteError
from fleet.settings import default_home

__all__ = [
    "LAB_USER",
    "Lab",
    "LabNode",
    "default_dir",
    "down",
    "load",
    "reboot_command",
    "reboot_node",
    "regenerate_host_key",
    "start_node",
    "status",
    "stop_node",
    "up",
    "write_inventory",
]

LAB_USER = "fleetlab"  # the login user of a lab run as root
NODE_USERS_GROUP = "fleet-node-users"  # fleet.node_users.GROUP (kept apart: lab imports no SSH)
BANNER_TIMEOUT = 10.0
MAX_NODES = 999
BOOT_ID_ENV = "FLEET_BOOT_ID_FILE"  # read by the agent (agent_bootstrap/fleet_agent.py)
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\"'\\%#]")  # would need escaping in sshd_config
_DYING = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGKILL}
_SSHD_CONFIG = """\
# written by fleet.lab; rewritten by every `fleet lab up`
Port {port}
ListenAddress 127.0.0.1
HostKey "{host_key}"
PidFile "{pid_file}"
AuthorizedKeysFile "{authorized_keys}"
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 200:30:400
MaxSessions 64
Subsystem sftp internal-sftp
X11Forwarding no
AllowAgentForwarding no
PermitUserEnvironment no
LogLevel INFO
{per_source}{set_env}# node users fleet creates (fleet node user create) log in with their own keys
Match Group {node_users_group}
	AuthorizedKeysFile .ssh/authorized_keys
	AllowUsers *
"""
T = TypeVar("T")


@dataclass
class LabNode:
    """One sshd of the lab and its files."""

    name: str
    port: int
    root: Path  # the node root (fleet_node_root), owned by the login user
    config: Path
    pid_file: Path
    log: Path
    host_key: Path  # private key; the public key is beside it with ".pub"
    boot_id_file: Path  # its simulated boot id, FLEET_BOOT_ID_FILE in its sessions

    def boot_id(self) -> str | None:
        """Return the node's simulated boot id, or None if it has none yet."""
        try:
            return self.boot_id_file.read_text().strip() or None
        except OSError:
            return None

    def pid(self) -> int | None:
        """Return the pid in the pid file, or None if there is no readable pid file."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        """Return True if the pid file names a live sshd listener using this node's config."""
        pid = self.pid()
        if pid is None or processes.exited(pid):
            return False
        try:  # guards against a recycled pid
            return os.fsencode(str(self.config)) in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False


@dataclass
class Lab:
    """A lab directory: its login user, client key and nodes."""

    dir: Path
    user: str
    key_file: Path  # client private key, authorized on every node
    nodes: list[LabNode]

    @property
    def inventory_path(self) -> Path:
        """Return the path of the lab's Ansible INI inventory."""
        return self.dir / "inventory.ini"

    @property
    def known_hosts_path(self) -> Path:
        """Return the path of the OpenSSH known_hosts file listing every node's host key."""
        return self.dir / "known_hosts"

    def node(self, name: str) -> LabNode:
        """Return the node called ``name``; raise NotFound(code="LabNodeNotFound") if none."""
        for node in self.nodes:
            if node.name == name:
                return node
        names = ", ".join(n.name for n in self.nodes) or "none"
        raise NotFound(f"no such lab node (nodes: {names})", code="LabNodeNotFound", target=name)


def default_dir() -> Path:
    """Return $FLEET_HOME/lab when FLEET_HOME is set; otherwise /var/lib/fleet-lab for root
    (the lab user must reach the dir, and /root is private) and the XDG data dir's
    fleet/lab for everyone else."""
    if os.geteuid() == 0 and "FLEET_HOME" not in os.environ:
        return Path("/var/lib/fleet-lab")
    return default_home() / "lab"


def up(dir: Path, nodes: int = 4) -> Lab:
    """Create or reuse the lab in ``dir`` with at least ``nodes`` nodes; start the stopped ones.

    Returns the Lab once every sshd it started has sent an SSH banner, after writing
    lab.json, inventory.ini and known_hosts. A smaller lab grows; a bigger one keeps all its
    nodes. Raises BadInput for a bad count or dir (code LabDirNotAccessible if, as root, the
    lab user cannot reach the dir), Conflict if the lab belongs to another user, FleetError
    if a tool fails, and RemoteError naming the node, with its log tail, if an sshd fails
    its config check or start or sends no banner within 10 s.
    """
    if not 1 <= nodes <= MAX_NODES:
        raise BadInput(f"must be 1..{MAX_NODES}, got {nodes}", field="nodes")
    base = _prepare_dir(Path(dir))
    with _locked(base):
        user = _login_user()
        lab = Lab(base, user, base / "id_ed25519", [])
        if (base / "lab.json").exists():
            lab = _read(base)
        if lab.user != user:
            msg = f"the lab belongs to {lab.user}, not {user}; run as {lab.user} or use another dir"
            raise Conflict(msg, code="LabUserMismatch", target=str(base))
        if not lab.key_file.exists():
            _keygen(lab.key_file, f"fleet-lab-client@{base}")
        _write(base / "authorized_keys", _pub(lab.key_file), 0o644)
        width = 3 if nodes >= 100 else 2
        ports = _free_ports(nodes - len(lab.nodes), {n.port for n in lab.nodes})
        for i, port in enumerate(ports, start=len(lab.nodes) + 1):
            lab.nodes.append(_node(base, f"node{i:0{width}d}", port))
        _mkdir(base / "nodes", lab.user)
        _mkdir(base / "sshd", None)
        nodes_json = [{"name": n.name, "port": n.port} for n in lab.nodes]
        _write(base / "lab.json", json.dumps({"user": user, "nodes": nodes_json}, indent=1), 0o644)
        todo = [n for n in lab.nodes if not n.alive()]
        _each(lambda n: _make_node_files(lab, n), lab.nodes)
        write_inventory(lab, lab.inventory_path)
        _start(lab, todo)
    return lab


def load(dir: Path) -> Lab:
    """Return the Lab recorded in ``dir``/lab.json; raise NotFound(code="LabNotFound") if none."""
    return _read(Path(dir).expanduser().resolve())


def status(dir: Path) -> list[dict[str, object]]:
    """Return one dict per node: node, port, pid (None when stopped), state, root.

    ``state`` is "running" or "stopped". Raises NotFound(code="LabNotFound") if no lab.
    """
    out: list[dict[str, object]] = []
    for n in load(dir).nodes:
        alive = n.alive()
        state = "running" if alive else "stopped"
        pid = n.pid() if alive else None
        out.append(
            {"node": n.name, "port": n.port, "pid": pid, "state": state, "root": str(n.root)}
        )
    return out


def down(dir: Path) -> None:
    """Stop every sshd of the lab, with the sshd processes of its open connections; keep files.

    Sends SIGTERM (and SIGCONT, for stopped ones), waits up to 5 s, then SIGKILLs the rest.
    Returns None. Raises NotFound(code="LabNotFound") if no lab.
    """
    lab = load(dir)
    with _locked(lab.dir):
        table = processes.table_of_processes()
        victims: list[int] = []
        for node in lab.nodes:
            if node.alive() and (pid := node.pid()):
                victims += [pid, *processes.sessions(pid, table)]
        processes.terminate(victims, signal.SIGTERM)


def stop_node(
    lab: Lab, name: str, sig: int = signal.SIGTERM, *, kill_sessions: bool = False
) -> None:
    """Send ``sig`` to the node's sshd listener, and with kill_sessions to its sessions too.

    The listener only accepts connections: each open connection has its own sshd processes,
    which outlive the listener unless kill_sessions is True (that cuts live connections; the
    commands they ran are not signalled, they only see their pipes close). For SIGTERM, SIGINT, SIGQUIT and SIGKILL it waits
    until they are gone (SIGTERM escalates to SIGKILL after 5 s); other signals, such as
    SIGSTOP, are only sent. Returns None, at once if the node is not running. Raises
    NotFound(code="LabNodeNotFound") for an unknown node.
    """
    node = lab.node(name)
    pid = node.pid()
    if pid is None or not node.alive():
        return
    victims = [
        pid,
        *(processes.sessions(pid, processes.table_of_processes()) if kill_sessions else []),
    ]
    if sig in _DYING:
        processes.terminate(victims, sig)
    else:
        processes.send(victims, sig)


def start_node(lab: Lab, name: str) -> None:
    """Start the node's sshd again, on the same port with the same host key; wait for a banner.

    A node stopped with SIGSTOP gets SIGCONT instead (its sessions too). Returns None.
    Raises NotFound(code="LabNodeNotFound") for an unknown node and RemoteError, with the
    log tail, if sshd fails or sends no banner within 10 s.
    """
    node = lab.node(name)
    pid = node.pid()
    if pid is not None and node.alive():
        processes.send(
            [pid, *processes.sessions(pid, processes.table_of_processes())], signal.SIGCONT
        )
        _wait_banners([node], {node.name: _size(node.log)}, {node.name: pid})
    else:
        _make_node_files(lab, node)
        _start(lab, [node])


def regenerate_host_key(lab: Lab, name: str) -> None:
    """Give the node a new host key, rewrite known_hosts and restart its sshd.

    Open connections stay up on the old key. Returns None. Raises
    NotFound(code="LabNodeNotFound") for an unknown node and RemoteError if the restart fails.
    """
    node = lab.node(name)
    stop_node(lab, name)
    for path in (node.host_key, _pubpath(node.host_key)):
        path.unlink(missing_ok=True)
    _make_node_files(lab, node)
    _start(lab, [node])


def reboot_node(lab: Lab, name: str) -> dict[str, object]:
    """Simulate a reboot of the node: kill every process of it, give it a new boot id, start
    its sshd again on the same port with the same host key, and wait for its banner.

    The node's processes are its sshd listener, the sshd processes of its connections, every
    process whose environment holds its FLEET_BOOT_ID_FILE (what its sessions started: login
    shells, agents, task wrappers and tasks, even detached ones) and their descendants; all
    get SIGKILL, as at a power cut, in rounds until none is left. This process and its
    ancestors are spared, and so is the machine: nothing else is touched.
    Returns the node's status row (see ``status``) plus ``bootId`` and ``killed`` (how many
    processes). Raises NotFound(code="LabNodeNotFound") for an unknown node,
    FleetError(code="LabRebootUnsupported") when sshd is older than 7.8 (no SetEnv),
    FleetError(code="LabRebootFailed") if a process survives, and RemoteError if sshd
    fails to start again.
    """
    node = lab.node(name)
    if _sshd_version() < (7, 8):
        msg = "simulated reboots need OpenSSH 7.8 or newer (sshd_config SetEnv)"
        raise FleetError(msg, code="LabRebootUnsupported", target=name)
    with _locked(lab.dir):
        marker = os.fsencode(f"{BOOT_ID_ENV}={node.boot_id_file}")
        killed = processes.kill_node(name, lambda: node.pid() if node.alive() else None, marker)
        _write(node.boot_id_file, f"{uuid.uuid4()}\n", 0o644)
        node.pid_file.unlink(missing_ok=True)
        _make_node_files(lab, node)
        _start(lab, [node])
    row = next(r for r in status(lab.dir) if r["node"] == name)
    return {**row, "bootId": node.boot_id(), "killed": killed}


def reboot_command(lab: Lab, name: str) -> list[str]:
    """Return the argv that reboots node ``name`` (``fleet lab reboot NAME --dir DIR -o json``,
    run by this Python), as the lab's inventory gives it in ``fleet_reboot_command``."""
    return [
        sys.executable,
        "-m",
        "fleet",
        "lab",
        "reboot",
        name,
        "--dir",
        str(lab.dir),
        "-o",
        "json",
    ]


def write_inventory(lab: Lab, path: Path, node_root_base: Path | None = None) -> Path:
    """Write an Ansible INI inventory (group [lab], one line per node); return its path.

    Each host gets ansible_host, ansible_port, ansible_user, ansible_ssh_private_key_file,
    fleet_node_root (``node_root_base``/NAME, by default the lab's own node roots) and
    fleet_reboot_command (``reboot_command``: a simulated reboot, never the machine's).
    """
    base = Path(node_root_base) if node_root_base is not None else lab.dir / "nodes"
    lines = [f"# fleet loopback lab {lab.dir}; host keys in {lab.known_hosts_path}", "[lab]"]
    for node in lab.nodes:
        host = {
            "ansible_host": "127.0.0.1",
            "ansible_port": str(node.port),
            "ansible_user": lab.user,
            "ansible_ssh_private_key_file": str(lab.key_file),
            "fleet_node_root": str(base / node.name),
            "fleet_reboot_command": shlex.join(reboot_command(lab, node.name)),
        }
        lines.append(" ".join([node.name, *(f"{k}={shlex.quote(v)}" for k, v in host.items())]))
    _write(Path(path), "\n".join(lines) + "\n", 0o644)
    return Path(path)


def _node(base: Path, name: str, port: int) -> LabNode:
    f = base / "sshd" / name  # apart from the node root, which the login user owns
    key = f / "ssh_host_ed25519_key"
    return LabNode(
        name,
        port,
        base / "nodes" / name,
        f / "sshd_config",
        f / "sshd.pid",
        f / "sshd.log",
        key,
        f / "boot_id",
    )


def _read(base: Path) -> Lab:
    try:
        data = json.loads((base / "lab.json").read_text())
        nodes = [_node(base, str(n["name"]), int(n["port"])) for n in data["nodes"]]
        return Lab(base, str(data["user"]), base / "id_ed25519", nodes)
    except FileNotFoundError:
        msg = f"no lab in {base}; run `fleet lab up` first"
        raise NotFound(msg, code="LabNotFound", target=str(base)) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FleetError(f"bad lab.json: {exc}", code="LabCorrupt", target=str(base)) from exc


def _write(path: Path, text: str, mode: int, check: Callable[[Path], None] | None = None) -> None:
    """Write ``text`` with ``mode`` to a temp file, ``check`` it, then rename it to ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text)
        tmp.chmod(mode)
        if check is not None:
            check(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _mkdir(path: Path, owner: str | None) -> None:
    path.mkdir(exist_ok=True)
    path.chmod(0o755)
    if owner is not None and os.geteuid() == 0:
        pw = pwd.getpwnam(owner)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _pubpath(key: Path) -> Path:
    return key.with_name(key.name + ".pub")


def _pub(key: Path) -> str:
    """Return "TYPE BASE64\\n" of the public key beside ``key``."""
    return " ".join(_pubpath(key).read_text().split()[:2]) + "\n"


def _keygen(path: Path, comment: str) -> None:
    _run([_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _make_node_files(lab: Lab, node: LabNode) -> None:
    _mkdir(node.root, lab.user)
    _mkdir(node.config.parent, None)
    if not node.host_key.exists():
        _keygen(node.host_key, f"fleet-lab-{node.name}")
    if node.boot_id() is None:
        _write(node.boot_id_file, f"{uuid.uuid4()}\n", 0o644)
    # SetEnv came with OpenSSH 7.8; older labs report the machine's own boot id
    set_env = f'SetEnv "{BOOT_ID_ENV}={node.boot_id_file}"\n' if _sshd_version() >= (7, 8) else ""
    text = _SSHD_CONFIG.format(
        port=node.port,
        host_key=node.host_key,
        pid_file=node.pid_file,
        authorized_keys=lab.dir / "authorized_keys",
        user=lab.user,
        # per-source penalties came with OpenSSH 9.8
        per_source="PerSourcePenaltyExemptList 127.0.0.0/8\n" if _sshd_version() >= (9, 8) else "",
        node_users_group=NODE_USERS_GROUP,
        set_env=set_env,
    )
    _write(node.config, text, 0o644)


def _login_user() -> str:
    return LAB_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def _prepare_dir(path: Path) -> Path:
    """Check the lab dir (as root, set up the lab user first) and create it; return it."""
    base = path.expanduser().resolve()
    if _UNSAFE.search(str(base)):
        msg = "lab dir must not contain quotes, backslashes, '%', '#' or control characters"
        raise BadInput(msg, code="LabDirInvalid", target=str(base))
    if os.geteuid() == 0:
        _check_searchable(base, _ensure_lab_user())
    for p in reversed([p for p in (base, *base.parents) if not p.exists()]):
        p.mkdir(exist_ok=True)
        p.chmod(0o755)
    return base


def _check_searchable(base: Path, pw: pwd.struct_passwd) -> None:
    """Raise BadInput(code="LabDirNotAccessible") unless ``pw`` can search base and parents."""
    groups = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem}
    for p in (base, *base.parents):
        if not p.exists():
            continue  # created later, mode 0755
        st = p.stat()
        if st.st_uid == pw.pw_uid:
            bit = stat.S_IXUSR
        else:
            bit = stat.S_IXGRP if st.st_gid in groups else stat.S_IXOTH
        if not st.st_mode & bit:
            raise BadInput(
                f"{p} (mode {stat.S_IMODE(st.st_mode):04o}) is not searchable by the lab user "
                f"{pw.pw_name}, and sshd reads {base}/authorized_keys as that user; use a dir "
                "whose parents all have mode 0755 (say under /tmp or /var/tmp) or set FLEET_HOME",
                code="LabDirNotAccessible",
                target=str(base),
            )


def _ensure_lab_user() -> pwd.struct_passwd:
    """As root: create the lab user if missing, unlock it, give it sudo, make /run/sshd."""
    try:
        pwd.getpwnam(LAB_USER)
    except KeyError:
        useradd = [_tool("useradd"), "--create-home", "--shell", "/bin/sh", "--password", "*"]
        try:
            _run([*useradd, LAB_USER])
        except FleetError:
            if all(p.pw_name != LAB_USER for p in pwd.getpwall()):  # else made meanwhile
                raise
    # Without PAM, sshd refuses an account whose shadow password starts with "!" (locked).
    with contextlib.suppress(OSError):
        if f"\n{LAB_USER}:!" in "\n" + Path("/etc/shadow").read_text():
            _run([_tool("usermod"), "--password", "*", LAB_USER])
    sudoers = Path("/etc/sudoers.d") / LAB_USER
    text = f"# fleet loopback lab\n{LAB_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n"
    if sudoers.parent.is_dir() and not (sudoers.exists() and sudoers.read_text() == text):
        visudo = _tool("visudo", required=False)  # sudo skips the temp file: its name has dots
        _write(sudoers, text, 0o440, (lambda p: _run([visudo, "-cf", str(p)])) if visudo else None)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    return pwd.getpwnam(LAB_USER)


def _start(lab: Lab, nodes: Sequence[LabNode]) -> None:
    """Check each config and start each sshd (concurrently), then wait for every banner."""
    sshd = _sshd()
    offsets = {n.name: _size(n.log) for n in nodes}

    def start(node: LabNode) -> None:
        for what, argv in (
            ("config check", [sshd, "-t", "-f", str(node.config)]),
            ("start", [sshd, "-f", str(node.config), "-E", str(node.log)]),  # daemonizes
        ):
            res = _exec(argv)
            if res.returncode != 0:
                msg = f"sshd {what} failed (port {node.port}): {res.stderr.strip()}"
                raise RemoteError(msg + _tail(node.log, offsets[node.name]), target=node.name)

    _each(start, nodes)
    lines = [f"[127.0.0.1]:{n.port} {_pub(n.host_key)}" for n in lab.nodes]
    _write(lab.known_hosts_path, "".join(lines), 0o644)
    # The daemons forked before `sshd` returned: find them, so a dead one fails at once.
    daemons: dict[str, int | None] = {n.name: None for n in nodes}
    configs = {os.fsencode(str(n.config)): n.name for n in nodes}
    for pid, (_, comm) in processes.table_of_processes().items():
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if comm == "sshd" else b""
            for config in (c for c in configs if c in cmdline):
                daemons[configs[config]] = pid
    _wait_banners(nodes, offsets, daemons)


def _wait_banners(
    nodes: Sequence[LabNode], offsets: dict[str, int], daemons: dict[str, int | None]
) -> None:
    """Wait until each node's sshd sends an SSH banner; fail early if its daemon exits."""
    deadline = time.monotonic() + BANNER_TIMEOUT

    def wait(node: LabNode) -> None:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", node.port), timeout=1) as sock:
                    data = b""
                    while b"\n" not in data and len(data) < 512 and (chunk := sock.recv(512)):
                        data += chunk
                if data.startswith(b"SSH-"):
                    return
                why = f"it said {data[:60]!r}"
            except OSError as exc:
                why = str(exc)
            pid = daemons[node.name]
            if pid is None or processes.exited(pid):
                time.sleep(0.05)  # let it finish writing its last words
                msg = f"sshd on port {node.port} exited"
                raise RemoteError(msg + _tail(node.log, offsets[node.name]), target=node.name)
            if time.monotonic() > deadline:
                msg = f"sshd on port {node.port} sent no SSH banner in {BANNER_TIMEOUT:.0f} s"
                raise RemoteError(
                    f"{msg} ({why})" + _tail(node.log, offsets[node.name]), target=node.name
                )
            time.sleep(0.02)

    _each(wait, nodes)


@cache
def _sshd() -> str:
    path = _tool("sshd", required=False)
    if not path:
        raise FleetError("no sshd binary; install openssh-server", code="SshdNotFound")
    return str(Path(path).absolute())  # sshd re-executes itself, so it needs an absolute path


@cache
def _sshd_version() -> tuple[int, int]:
    res = _exec([_sshd(), "-V"])
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", res.stderr + res.stdout)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def _tool(name: str, required: bool = True) -> str:
    """Return the path of a system tool, looking in the sbin dirs too; "" if not required."""
    dirs = ("/usr/sbin", "/sbin", "/usr/local/sbin")
    found = shutil.which(name) or next(
        (f"{d}/{name}" for d in dirs if os.access(f"{d}/{name}", os.X_OK)), ""
    )
    if required and not found:
        raise FleetError(f"{name} not found", code="LabToolMissing")
    return found


def _exec(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FleetError(f"{argv[0]}: {exc}", code="LabToolFailed") from exc


def _run(argv: list[str]) -> None:
    res = _exec(argv)
    if res.returncode != 0:
        msg = f"{shlex.join(argv)} failed: {(res.stderr or res.stdout).strip()}"
        raise FleetError(msg, code="LabToolFailed")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _tail(log: Path, offset: int, lines: int = 15) -> str:
    """Return "; LOG tail:" and the last lines the log got past ``offset``, or ""."""
    with contextlib.suppress(OSError), log.open("rb") as f:
        f.seek(offset)
        kept = f.read().decode(errors="replace").strip().splitlines()[-lines:]
        return f"; {log} tail:\n" + "\n".join(kept) if kept else ""
    return ""


def _free_ports(count: int, taken: set[int]) -> list[int]:
    """Return ``count`` distinct free 127.0.0.1 ports not in ``taken``, picked by the kernel."""
    ports: list[int] = []
    with contextlib.ExitStack() as stack:  # hold every socket until all are picked
        while len(ports) < count:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            if (port := sock.getsockname()[1]) not in taken:
                ports.append(port)
    return ports


def _each(fn: Callable[[T], None], items: Sequence[T]) -> None:
    """Run ``fn`` on every item in a thread pool; when all are done, raise the first error."""
    if items:
        with ThreadPoolExecutor(max_workers=min(32, len(items))) as pool:
            futures = [pool.submit(fn, item) for item in items]
        for future in futures:
            future.result()


@contextlib.contextmanager
def _locked(base: Path) -> Iterator[None]:
    """Hold an exclusive lock on the lab dir, so one `up` or `down` runs at a time."""
    with (base / ".lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
