"""Inventory requests: import, list, show and remove hosts; fleet's host key store."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlmodel import Session, select

from fleet.errors import BadInput, Conflict, NotFound
from fleet.inventory import HostSpec, login_user
from fleet.store import Store
from fleet.tables import Host, HostKey, Node

HOST_KEY_POLICIES = ("strict", "accept-new")


def import_hosts(
    store: Store, specs: Sequence[HostSpec], policy: str = "accept-new"
) -> dict[str, list[str]]:
    """Store every host in ``specs`` in one transaction: new ids are created, known ids
    updated. A host with no user gets the importing user (``inventory.login_user``), as
    ssh and Ansible would log in, recorded so ``host show`` says who fleet logs in as.
    Return ``{"created": [...], "updated": [...]}``. Raises BadInput for a bad policy."""
    if policy not in HOST_KEY_POLICIES:
        raise BadInput(
            f"host key policy must be one of {', '.join(HOST_KEY_POLICIES)}",
            code="InvalidHostKeyPolicy",
            field="hostKeyPolicy",
        )
    created, updated = [], []
    default_user = login_user()
    now = time.time()
    with store.session() as s:
        for spec in specs:
            row = s.get(Host, spec.id)
            if row is None:
                row = Host(id=spec.id, address=spec.address, created_at=now)
                created.append(spec.id)
            else:
                updated.append(spec.id)
            row.address = spec.address
            row.port = spec.port
            row.user = spec.user or default_user
            row.key_file = spec.key_file
            row.labels = dict(spec.labels)
            row.node_root = spec.node_root
            row.rdp_port = spec.rdp_port
            row.host_key_policy = policy
            row.source = spec.source
            row.reboot_command = spec.reboot_command
            row.reimage_command = spec.reimage_command
            row.power_on_command = spec.power_on_command
            row.power_off_command = spec.power_off_command
            s.add(row)
    return {"created": created, "updated": updated}


def list_hosts(store: Store) -> list[Host]:
    """Return every host, ordered by id."""
    with store.read() as s:
        return list(s.exec(select(Host).order_by(Host.id)))


def get_host(session: Session, host_id: str) -> Host:
    """Return the host; Raises NotFound (HostNotFound)."""
    row = session.get(Host, host_id)
    if row is None:
        raise NotFound(
            f"no host with id {host_id!r}", code="HostNotFound", target=f"host {host_id}"
        )
    return row


def show_host(store: Store, host_id: str) -> tuple[Host, HostKey | None, Node | None]:
    """Return the host with its recorded key and its node (if it is in a pool)."""
    with store.read() as s:
        return get_host(s, host_id), s.get(HostKey, host_id), s.get(Node, host_id)


def remove_host(store: Store, host_id: str) -> None:
    """Delete a host and its recorded key. Raises NotFound, or Conflict while it is in a pool."""
    with store.session() as s:
        host = get_host(s, host_id)
        node = s.get(Node, host_id)
        if node is not None:
            raise Conflict(
                f"host is a node of pool {node.pool_id}; remove it from the pool first",
                code="HostInUse",
                target=f"host {host_id}",
            )
        key = s.get(HostKey, host_id)
        if key is not None:
            s.delete(key)
        s.delete(host)


def record_host_key(store: Store, host_id: str, public_key: str, fingerprint: str) -> None:
    """Record the key a host presented on first contact (accept-new). Never overwrites."""
    with store.session() as s:
        if s.get(HostKey, host_id) is None:
            s.add(
                HostKey(
                    host_id=host_id,
                    public_key=public_key,
                    fingerprint=fingerprint,
                    recorded_at=time.time(),
                )
            )


def forget_host_key(store: Store, host_id: str) -> bool:
    """Delete the recorded key so the next contact records a new one; return whether one existed."""
    with store.session() as s:
        get_host(s, host_id)
        key = s.get(HostKey, host_id)
        if key is None:
            return False
        s.delete(key)
        return True
