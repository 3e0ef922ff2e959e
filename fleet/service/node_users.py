"""Node users and remote access: create, update, delete and list users on a node, at once, over SSH.

These act from the CLI without a controller: each opens its own connection to the
node with the host key fleet recorded (as task file downloads do). Only users
recorded in the ``node_users`` table *and* marked as fleet's on the node are ever
changed or deleted.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from fleet import certificates, node_users, targets, views
from fleet.errors import BadInput, Conflict, NotFound
from fleet.service.pools import show_node, show_pool
from fleet.settings import Settings
from fleet.store import Store
from fleet.tables import NodeUser

RDP_PORT = 3389
RDP_PROBE_TIMEOUT = 2.0


def _target(node_id: str, name: str) -> str:
    return f"node user {node_id}/{name}"


def view(row: NodeUser) -> dict[str, Any]:
    """Return a node user as Azure's node user JSON (never the password)."""
    out: dict[str, Any] = {
        "name": row.name,
        "isAdmin": row.is_admin,
        "expiryTime": views.iso(row.expiry_time),
        "hasPassword": row.has_password,
    }
    if row.ssh_public_key:
        out["sshPublicKey"] = row.ssh_public_key
    return out


def create_user(
    store: Store, pool_id: str, node_id: str, data: Any, settings: Settings | None = None
) -> dict[str, Any]:
    """Create a node user from Azure's node user JSON and return it; it gets a ``~/certs``
    copy of the pool's certificates whose visibility names ``remoteuser`` (decrypted with
    the secret store of ``settings``, default: the environment's).

    Raises BadInput (nothing runs), NotFound, Conflict ``NodeUserExists`` or
    ``NodeUserNotManaged`` (an account fleet did not create), RemoteError."""
    show_node(store, pool_id, node_id)
    user = node_users.parse_node_user(data, f"node user {node_id}", time.time())
    name, target = user["name"], _target(node_id, user["name"])
    with store.session() as s:
        if s.get(NodeUser, (node_id, name)) is not None:
            raise Conflict(
                f"fleet already created user {name!r}", code="NodeUserExists", target=target
            )

    row = NodeUser(
        node_id=node_id,
        name=name,
        pool_id=pool_id,
        is_admin=user["isAdmin"],
        expiry_time=user["expiryTime"],
        has_password=user["password"] is not None,
        ssh_public_key=user["sshPublicKey"],
        created_at=time.time(),
    )
    with store.session() as s:  # written ahead, so the expiry sweep knows of the account
        s.add(row)
    try:
        references = show_pool(store, pool_id)[0].spec.get("certificateReferences") or []
        certs = certificates.node_certificates(store, settings or Settings.resolve(), references)
        node_users.create_on_node(targets.for_host(store, node_id), user, target, certs)
    except BaseException:
        with store.session() as s:
            if (made := s.get(NodeUser, (node_id, name))) is not None:
                s.delete(made)
        raise
    return view(row)


def update_user(store: Store, pool_id: str, node_id: str, data: Any) -> dict[str, Any]:
    """Replace a node user's password, key and expiry (what is absent is removed, the expiry
    reset to one day from now) and return it. ``isAdmin``, if given, must not change.

    Raises BadInput, NotFound ``NodeUserNotFound``, Conflict ``NodeUserNotManaged``."""
    show_node(store, pool_id, node_id)
    name = data.get("name") if isinstance(data, dict) else None
    with store.session() as s:
        row = s.get(NodeUser, (node_id, name)) if isinstance(name, str) else None
    if row is not None and "isAdmin" not in data:
        data = {**data, "isAdmin": row.is_admin}
    user = node_users.parse_node_user(data, f"node user {node_id}", time.time())
    target = _target(node_id, user["name"])
    if row is None:
        node_users.refuse_unrecorded(targets.for_host(store, node_id), user["name"], target)
    if user["isAdmin"] != row.is_admin:
        raise BadInput(
            "isAdmin cannot change: delete the user and create it again",
            code="PropertyCannotBeUpdated",
            target=target,
            field="isAdmin",
        )

    node_users.update_on_node(targets.for_host(store, node_id), user, target)
    with store.session() as s:
        stored = s.get(NodeUser, (node_id, user["name"]))
        assert stored is not None
        stored.expiry_time = user["expiryTime"]
        stored.has_password = user["password"] is not None
        stored.ssh_public_key = user["sshPublicKey"]
        s.add(stored)
        return view(stored)


def delete_user(store: Store, pool_id: str, node_id: str, name: str) -> None:
    """Delete a node user fleet created: its account, home and sudoers file, then its row.

    Raises BadInput, NotFound ``NodeUserNotFound``, Conflict ``NodeUserNotManaged``."""
    show_node(store, pool_id, node_id)
    node_users.parse_node_user({"name": name}, f"node user {node_id}", time.time())
    target = _target(node_id, name)
    with store.session() as s:
        known = s.get(NodeUser, (node_id, name)) is not None

    node_users.delete_on_node(targets.for_host(store, node_id), name, known, target)
    with store.session() as s:
        row = s.get(NodeUser, (node_id, name))
        if row is not None:
            s.delete(row)


def list_users(store: Store, pool_id: str, node_id: str) -> list[dict[str, Any]]:
    """Return the users fleet created on a node and that have not been removed."""
    show_node(store, pool_id, node_id)
    with store.read() as s:
        rows = s.exec(
            select(NodeUser).where(NodeUser.node_id == node_id).order_by(col(NodeUser.name))
        )
        return [view(r) for r in rows]


def remote_login_settings(store: Store, pool_id: str, node_id: str) -> dict[str, Any]:
    """Return the address and port fleet reaches the node's sshd on."""
    _, host = show_node(store, pool_id, node_id)
    return {"remoteLoginIPAddress": host.address, "remoteLoginPort": host.port}


def rdp_file(store: Store, pool_id: str, node_id: str, destination: str) -> dict[str, Any]:
    """Write a ``.rdp`` file for a node that runs an RDP server (found by connecting to the
    host's ``rdpPort``, inventory var ``fleet_rdp_port``, default 3389, from here) and
    return where it went. Raises NotFound ``RdpServerNotFound``."""
    _, host = show_node(store, pool_id, node_id)
    port = host.rdp_port or RDP_PORT
    try:
        with socket.create_connection((host.address, port), timeout=RDP_PROBE_TIMEOUT):
            pass
    except OSError as exc:
        raise NotFound(
            f"no RDP server answers on {host.address}:{port} ({exc.strerror or exc}); "
            "install one (xrdp on Linux) to get an .rdp file, or use SSH "
            "(fleet node remote-login-settings)",
            code="RdpServerNotFound",
            target=f"node {node_id}",
        ) from None
    text = f"full address:s:{host.address}:{port}\nprompt for credentials:i:1\n"
    path = Path(destination)
    try:
        path.write_text(text)
    except OSError as exc:
        raise BadInput(
            f"cannot write {destination}: {exc.strerror}",
            code="FileUnwritable",
            target=destination,
            field="destination",
        ) from exc
    return {
        "nodeId": node_id,
        "destination": str(path),
        "fullAddress": f"{host.address}:{port}",
    }
