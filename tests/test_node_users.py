"""Node users: real OS accounts on a lab node, checked by logging in with paramiko."""

from __future__ import annotations

import base64
import json
import os
import pwd
import socket
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet import lab as lab_mod
from tests.conftest import make_pool, wait_for

pytestmark = pytest.mark.lab


@pytest.fixture
def names():
    """Fresh user names for one test; every account they name is removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating OS user accounts on the lab host needs root")
    made = [f"fnu{uuid.uuid4().hex[:8]}" for _ in range(3)]
    yield made
    for name in made:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", "--force", "--remove", name], capture_output=True)
        subprocess.run(["rm", "-f", f"/etc/sudoers.d/fleet-node-user-{name}"], check=True)


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[str, paramiko.PKey]:
    """An ed25519 key pair: the public key line and the private key for paramiko."""
    key = Ed25519PrivateKey.generate()
    private = tmp_path / "user_key"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode() + " test@fleet", paramiko.Ed25519Key.from_private_key_file(str(private))


def login(node: lab_mod.LabNode, user: str, key: paramiko.PKey) -> paramiko.SSHClient:
    """Log in as ``user`` with paramiko, trusting only the node's own host key."""
    kind, b64 = Path(f"{node.host_key}.pub").read_text().split()[:2]
    host_key = paramiko.PKey.from_type_string(kind, base64.b64decode(b64))
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.get_host_keys().add(f"[127.0.0.1]:{node.port}", host_key.get_name(), host_key)
    client.connect(
        "127.0.0.1",
        port=node.port,
        username=user,
        pkey=key,
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
        banner_timeout=10,
        auth_timeout=10,
    )
    return client


def run(client: paramiko.SSHClient, command: str) -> tuple[int, str]:
    _, stdout, _ = client.exec_command(command, timeout=10)
    out = stdout.read().decode()
    return stdout.channel.recv_exit_status(), out


def account(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def iso_in(seconds: float) -> str:
    return datetime.fromtimestamp(time.time() + seconds, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def node(fleet, lab, lab_inventory) -> tuple[str, lab_mod.LabNode]:
    """A pool ``p`` of one lab node (no controller needed): its id and its sshd."""
    [host] = make_pool(fleet, lab_inventory, "p", 1)
    return host, lab.node(host)


def test_a_node_user_logs_in_with_its_key_and_only_an_admin_may_sudo(
    fleet, node, names, keypair, tmp_path
):
    host, lab_node = node
    plain, admin, _ = names
    public, private = keypair
    made = fleet.json(
        "node", "user", "create", "--pool", "p", "--node", host, "--name", plain,
        "--ssh-public-key", public,
    )  # fmt: skip
    assert made["name"] == plain and made["isAdmin"] is False and made["hasPassword"] is False
    password = tmp_path / "password"
    password.write_text("s3cret-Pa55\n")
    fleet(
        "node", "user", "create", "--pool", "p", "--node", host, "--name", admin, "--admin",
        "--password-file", str(password), "--ssh-public-key", public,
    )  # fmt: skip

    with login(lab_node, plain, private) as client:
        assert run(client, "id -un") == (0, f"{plain}\n")
        assert run(client, "sudo -n true")[0] != 0
    with login(lab_node, admin, private) as client:
        assert run(client, "sudo -n id -u") == (0, "0\n")

    entry = account(admin)
    assert entry is not None and entry.pw_gecos == "fleet node user"
    shadow = Path("/etc/shadow").read_text()
    assert f"{admin}:$6$" in shadow and "s3cret" not in shadow
    keys = Path(entry.pw_dir) / ".ssh" / "authorized_keys"
    assert keys.read_text() == public + "\n"
    assert oct(keys.stat().st_mode & 0o777) == "0o600" and keys.stat().st_uid == entry.pw_uid
    listed = fleet("node", "user", "list", "--pool", "p", "--node", host, "-o", "json")
    assert "s3cret" not in listed.stdout
    assert [u["name"] for u in listed.json()] == sorted([plain, admin])


def test_a_deleted_node_user_can_no_longer_log_in_and_its_account_is_gone(
    fleet, node, names, keypair
):
    host, lab_node = node
    name = names[0]
    public, private = keypair
    fleet(
        "node", "user", "create", "--pool", "p", "--node", host, "--name", name, "--admin",
        "--ssh-public-key", public,
    )  # fmt: skip
    login(lab_node, name, private).close()
    fleet("node", "user", "delete", "--pool", "p", "--node", host, "--name", name)
    with pytest.raises(paramiko.AuthenticationException):
        login(lab_node, name, private)
    assert account(name) is None
    assert not Path(f"/etc/sudoers.d/fleet-node-user-{name}").exists()
    assert fleet.json("node", "user", "list", "--pool", "p", "--node", host) == []
    again = fleet(
        "node", "user", "delete", "--pool", "p", "--node", host, "--name", name, check=False
    )
    assert again.code == 3 and "NodeUserNotFound" in again.stderr


def test_set_replaces_the_key_and_the_old_key_is_refused(fleet, node, names, keypair, tmp_path):
    host, lab_node = node
    name = names[0]
    public, private = keypair
    fleet(
        "node", "user", "create", "--pool", "p", "--node", host, "--name", name,
        "--ssh-public-key", public,
    )  # fmt: skip
    other = Ed25519PrivateKey.generate()
    other_public = (
        other.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    key_file = tmp_path / "other.pub"
    key_file.write_text(other_public + "\n")
    expiry = iso_in(3 * 24 * 3600)
    shown = fleet.json(
        "node", "user", "set", "--pool", "p", "--node", host, "--name", name,
        "--ssh-public-key-file", str(key_file), "--expiry-time", expiry,
    )  # fmt: skip
    assert shown["sshPublicKey"] == other_public
    assert shown["expiryTime"][:16] == expiry[:16]
    with pytest.raises(paramiko.AuthenticationException):
        login(lab_node, name, private)


def test_users_that_fleet_did_not_create_are_never_modified_or_deleted(fleet, node, names, keypair):
    host, _ = node
    public, _ = keypair
    outsider = names[0]
    subprocess.run(["useradd", "--create-home", outsider], check=True)
    for argv in (
        ["create", "--name", outsider, "--ssh-public-key", public],
        ["set", "--name", outsider, "--ssh-public-key", public],
        ["delete", "--name", outsider],
        ["delete", "--name", "root"],
    ):
        result = fleet("node", "user", *argv, "--pool", "p", "--node", host, check=False)
        assert result.code == 4 and "NodeUserNotManaged" in result.stderr, result.stderr
    entry = account(outsider)
    assert entry is not None and entry.pw_gecos == ""
    assert not (Path(entry.pw_dir) / ".ssh").exists()
    assert account("root") is not None
    assert fleet.json("node", "user", "list", "--pool", "p", "--node", host) == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (["--name", "Root!"], "name"),
        (["--name", "x" * 33], "name"),
        (["--name", "ok", "--ssh-public-key", "ssh-ed25519 AAAA"], "sshPublicKey"),
        (["--name", "ok", "--ssh-public-key", 'command="sh" ssh-ed25519 AAAAC3Nz'], "sshPublicKey"),
        (["--name", "ok", "--expiry-time", "yesterday"], "expiryTime"),
        (["--name", "ok", "--expiry-time", "2001-01-01T00:00:00Z"], "expiryTime"),
        (["--name", "ok", "--expiry-time", "2099-01-01T00:00:00"], "expiryTime"),
    ],
)
def test_bad_node_users_are_refused_before_anything_runs(fleet, node, extra, field):
    host, _ = node
    result = fleet(
        "node", "user", "create", "--pool", "p", "--node", host, *extra, "-o", "json",
        check=False,
    )  # fmt: skip
    assert result.code == 2, result.stderr
    assert json.loads(result.stderr)["error"]["field"] == field
    assert account("ok") is None
    assert fleet.json("node", "user", "list", "--pool", "p", "--node", host) == []


def test_the_json_file_takes_azure_node_user_json(fleet, node, names, keypair, tmp_path):
    host, lab_node = node
    name = names[0]
    public, private = keypair
    spec = tmp_path / "user.json"
    spec.write_text(json.dumps({"name": name, "isAdmin": True, "sshPublicKey": public}))
    shown = fleet.json(
        "node", "user", "create", "--pool", "p", "--node", host, "--json-file", str(spec)
    )
    assert shown["isAdmin"] is True
    created = datetime.fromisoformat(shown["expiryTime"].replace("Z", "+00:00")).timestamp()
    assert abs(created - (time.time() + 24 * 3600)) < 120  # default: one day
    with login(lab_node, name, private) as client:
        assert run(client, "sudo -n true")[0] == 0


def test_an_expired_node_user_is_removed_by_a_controller_started_after_it_expired(
    fleet, node, names, keypair, controller
):
    host, lab_node = node
    name = names[0]
    public, private = keypair
    fleet(
        "node", "user", "create", "--pool", "p", "--node", host, "--name", name,
        "--ssh-public-key", public, "--expiry-time", iso_in(3),
    )  # fmt: skip
    login(lab_node, name, private).close()
    time.sleep(3.5)  # it expires while no controller runs
    controller("--sweep-interval", "0.5")
    wait_for(lambda: account(name) is None, 60, message="the expired account removed")
    with pytest.raises(paramiko.AuthenticationException):
        login(lab_node, name, private)
    wait_for(
        lambda: fleet.json("node", "user", "list", "--pool", "p", "--node", host) == [],
        10,
        message="the record dropped",
    )


def test_remote_login_settings_name_the_address_and_port_fleet_uses(fleet, node):
    host, lab_node = node
    shown = fleet.json("node", "remote-login-settings", "--pool", "p", "--node", host)
    assert shown == {"remoteLoginIPAddress": "127.0.0.1", "remoteLoginPort": lab_node.port}


def test_a_node_without_an_rdp_server_gets_a_clear_error(fleet, node, tmp_path):
    host, _ = node
    dest = tmp_path / "n.rdp"
    result = fleet(
        "node", "rdp-file", "--pool", "p", "--node", host, "--destination", str(dest), check=False
    )
    if result.code == 0:
        pytest.skip("something listens on 127.0.0.1:3389 on this machine")
    assert result.code == 3 and "RdpServerNotFound" in result.stderr
    assert not dest.exists()


def test_an_rdp_file_names_the_node_when_an_rdp_server_listens(fleet, node, tmp_path):
    host, _ = node
    server = socket.socket()
    try:
        server.bind(("127.0.0.1", 3389))
    except OSError:
        pytest.skip("port 3389 is taken or needs root on this machine")
    with server:
        server.listen()
        dest = tmp_path / "n.rdp"
        shown = fleet.json(
            "node", "rdp-file", "--pool", "p", "--node", host, "--destination", str(dest)
        )
    assert shown["destination"] == str(dest)
    assert "full address:s:127.0.0.1:3389\n" in dest.read_text()


def test_a_node_user_gets_the_pools_remoteuser_certificates_in_its_own_certs(
    fleet, lab, lab_inventory, names, keypair, tmp_path
):
    from tests.cert_files import make_cert, sha1, write_pem

    cert, key = make_cert("for-remote-users")
    fleet("certificate", "create", "--file", str(write_pem(tmp_path / "c.pem", cert, key)))
    fleet("host", "import", str(lab_inventory))
    host = fleet.json("host", "list")[0]["id"]
    thumbprint = sha1(cert)
    pool = {
        "id": "p",
        "hosts": [host],
        "certificateReferences": [{"thumbprint": thumbprint, "visibility": ["remoteuser"]}],
    }
    (tmp_path / "pool.json").write_text(json.dumps(pool))
    fleet("pool", "create", "--json-file", str(tmp_path / "pool.json"))
    name = names[0]
    public, private = keypair
    fleet(
        "node", "user", "create", "--pool", "p", "--node", host, "--name", name,
        "--ssh-public-key", public,
    )  # fmt: skip
    with login(lab.node(host), name, private) as client:
        status, listing = run(client, "ls ~/certs")
        assert status == 0
        assert f"sha1-{thumbprint}.cer" in listing.split()
        assert run(client, f"cat ~/certs/sha1-{thumbprint}.key.pem")[0] == 0


def test_an_rdp_file_uses_the_hosts_own_rdp_port_from_the_inventory(
    fleet, lab, lab_inventory, tmp_path
):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    lines = lab_inventory.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("node"))
    lines[first] += f" fleet_rdp_port={port}"
    (tmp_path / "rdp.ini").write_text("\n".join(lines) + "\n")
    fleet("host", "import", str(tmp_path / "rdp.ini"))
    host = lines[first].split()[0]
    assert fleet.json("host", "show", host)["rdpPort"] == port
    fleet("pool", "create", "--id", "p", "--hosts", host)
    dest = tmp_path / "n.rdp"
    with server:
        fleet("node", "rdp-file", "--pool", "p", "--node", host, "--destination", str(dest))
    assert f"full address:s:127.0.0.1:{port}\n" in dest.read_text()
    refused = fleet("node", "rdp-file", "--pool", "p", "--node", host, check=False)
    assert refused.code == 3 and "RdpServerNotFound" in refused.stderr
