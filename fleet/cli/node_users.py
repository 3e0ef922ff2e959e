"""``fleet node user ...``, ``fleet node remote-login-settings`` and ``fleet node rdp-file``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleet.cli.common import CURRENT, OutputOpt, emit, lazy_module, load_json_file, read_text
from fleet.errors import BadInput

if TYPE_CHECKING:
    from fleet.service import node_users as service
else:
    service = lazy_module("fleet.service.node_users")

user_app = typer.Typer(help="Manage users on a node, for remote login.", no_args_is_help=True)

PoolOpt = Annotated[str, typer.Option("--pool", help="Pool id.")]
NodeOpt = Annotated[str, typer.Option("--node", help="Node id.")]
NameOpt = Annotated[str | None, typer.Option("--name", help="User name.")]
AdminOpt = Annotated[bool, typer.Option("--admin", help="Give the user passwordless sudo.")]
ExpiryOpt = Annotated[
    str | None,
    typer.Option("--expiry-time", help="ISO 8601 time the user is removed (default: in 1 day)."),
]
PasswordFileOpt = Annotated[
    str | None, typer.Option("--password-file", help="File holding the password ('-': stdin).")
]
KeyOpt = Annotated[
    str | None, typer.Option("--ssh-public-key", help="One OpenSSH public key line.")
]
KeyFileOpt = Annotated[
    str | None, typer.Option("--ssh-public-key-file", help="File holding the public key.")
]
JsonFileOpt = Annotated[
    str | None,
    typer.Option("--json-file", help="Azure node user JSON ('-' for stdin)."),
]
USER_COLUMNS = [
    ("NAME", "name"),
    ("ADMIN", "isAdmin"),
    ("EXPIRES", "expiryTime"),
    ("PASSWORD", "hasPassword"),
]


def _user_data(
    name: str | None,
    admin: bool,
    expiry_time: str | None,
    password_file: str | None,
    ssh_public_key: str | None,
    ssh_public_key_file: str | None,
    json_file: str | None,
) -> Any:
    """Return Azure's node user JSON from the flags or from ``--json-file``."""
    flags = (name, expiry_time, password_file, ssh_public_key, ssh_public_key_file)
    if json_file:
        if any(f is not None for f in flags) or admin:
            raise BadInput(
                "--json-file cannot be combined with the other user options",
                code="ConflictingOptions",
            )
        return load_json_file(json_file)
    if not name:
        raise BadInput("give --name, or --json-file", code="MissingRequiredProperty")
    if ssh_public_key is not None and ssh_public_key_file is not None:
        raise BadInput(
            "give --ssh-public-key or --ssh-public-key-file, not both",
            code="ConflictingOptions",
        )
    data: dict[str, Any] = {"name": name}
    if admin:
        data["isAdmin"] = True
    if expiry_time is not None:
        data["expiryTime"] = expiry_time
    if password_file is not None:
        data["password"] = read_text(password_file, code="InvalidPasswordFile").rstrip("\r\n")
    if ssh_public_key_file is not None:
        ssh_public_key = read_text(ssh_public_key_file, code="InvalidSshPublicKey")
    if ssh_public_key is not None:
        data["sshPublicKey"] = ssh_public_key
    return data


@user_app.command("create")
def create(
    pool: PoolOpt,
    node: NodeOpt,
    name: NameOpt = None,
    admin: AdminOpt = False,
    expiry_time: ExpiryOpt = None,
    password_file: PasswordFileOpt = None,
    ssh_public_key: KeyOpt = None,
    ssh_public_key_file: KeyFileOpt = None,
    json_file: JsonFileOpt = None,
    output: OutputOpt = None,
) -> None:
    """Create an OS account on the node for remote login."""
    data = _user_data(
        name, admin, expiry_time, password_file, ssh_public_key, ssh_public_key_file, json_file
    )
    if (remote := CURRENT.remote) is not None:
        emit(remote.call("POST", f"/pools/{pool}/nodes/{node}/users", body=data), output)
        return
    emit(service.create_user(CURRENT.store, pool, node, data, CURRENT.settings), output)


@user_app.command("set")
def set_(
    pool: PoolOpt,
    node: NodeOpt,
    name: NameOpt = None,
    admin: AdminOpt = False,
    expiry_time: ExpiryOpt = None,
    password_file: PasswordFileOpt = None,
    ssh_public_key: KeyOpt = None,
    ssh_public_key_file: KeyFileOpt = None,
    json_file: JsonFileOpt = None,
    output: OutputOpt = None,
) -> None:
    """Replace a node user's password, key and expiry (what is not given is removed)."""
    data = _user_data(
        name, admin, expiry_time, password_file, ssh_public_key, ssh_public_key_file, json_file
    )
    if (remote := CURRENT.remote) is not None:
        name = data.get("name") if isinstance(data, dict) else None
        if not isinstance(name, str) or not name:
            raise BadInput(
                "the user to change needs a name", code="MissingRequiredProperty", field="name"
            )
        body = {k: v for k, v in data.items() if k != "name"}
        path = f"/pools/{pool}/nodes/{node}/users/{name}"
        emit(remote.call("PUT", path, body=body), output)
        return
    emit(service.update_user(CURRENT.store, pool, node, data), output)


@user_app.command("delete")
def delete(
    pool: PoolOpt,
    node: NodeOpt,
    name: Annotated[str, typer.Option("--name", help="User name.")],
    output: OutputOpt = None,
) -> None:
    """Delete a user fleet created on the node, with its home directory."""
    if (remote := CURRENT.remote) is not None:
        remote.call("DELETE", f"/pools/{pool}/nodes/{node}/users/{name}")
    else:
        service.delete_user(CURRENT.store, pool, node, name)
    emit({"deleted": name, "nodeId": node}, output)


@user_app.command("list")
def list_(pool: PoolOpt, node: NodeOpt, output: OutputOpt = None) -> None:
    """List the users fleet created on the node."""
    if (remote := CURRENT.remote) is not None:
        users = remote.call("GET", f"/pools/{pool}/nodes/{node}/users")["value"]
        emit(users, output, USER_COLUMNS)
        return
    emit(service.list_users(CURRENT.store, pool, node), output, USER_COLUMNS)


def remote_login_settings(pool: PoolOpt, node: NodeOpt, output: OutputOpt = None) -> None:
    """Print the address and port to log in to the node with SSH."""
    if (remote := CURRENT.remote) is not None:
        emit(remote.call("GET", f"/pools/{pool}/nodes/{node}/remoteloginsettings"), output)
        return
    emit(service.remote_login_settings(CURRENT.store, pool, node), output)


def rdp_file(
    pool: PoolOpt,
    node: NodeOpt,
    destination: Annotated[
        str | None, typer.Option("--destination", help="Where to write (default: NODE.rdp).")
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Write an .rdp file for a node that runs an RDP server (xrdp on Linux)."""
    emit(service.rdp_file(CURRENT.store, pool, node, destination or f"{node}.rdp"), output)


def register(node_app: typer.Typer) -> None:
    """Add ``user``, ``remote-login-settings`` and ``rdp-file`` to the ``node`` group."""
    node_app.add_typer(user_app, name="user")
    node_app.command("remote-login-settings")(remote_login_settings)
    node_app.command("rdp-file")(rdp_file)
