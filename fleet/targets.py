"""SSH targets of inventory hosts, carrying the host keys fleet recorded for them."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from fleet.errors import NotFound
from fleet.ssh import Target

if TYPE_CHECKING:  # the ORM loads only where a session is used (not in fleet exec)
    from sqlmodel import Session

    from fleet.reads import Row
    from fleet.store import Store
    from fleet.tables import Host, HostKey


def target(host: Host | Row, key: HostKey | Row | None) -> Target:
    """Return how to reach ``host``, expecting ``key`` if one was recorded."""
    return Target(
        host_id=host.id,
        address=host.address,
        port=host.port,
        user=host.user or login_user(),  # hosts imported before users were recorded
        key_file=host.key_file,
        host_key_policy=host.host_key_policy,
        known_key=key.public_key if key else None,
    )


def for_hosts(session: Session, host_ids: Sequence[str]) -> list[Target]:
    """Return the targets of ``host_ids`` in that order. Raises NotFound for an unknown id."""
    from sqlmodel import col, select

    from fleet.tables import Host, HostKey

    hosts = {h.id: h for h in session.exec(select(Host).where(col(Host.id).in_(host_ids)))}
    keys = {
        k.host_id: k
        for k in session.exec(select(HostKey).where(col(HostKey.host_id).in_(host_ids)))
    }
    check_found(host_ids, hosts)
    return [target(hosts[i], keys.get(i)) for i in host_ids]


def check_found(host_ids: Sequence[str], found: Collection[str]) -> None:
    """Raise NotFound (HostNotFound) for the first of ``host_ids`` not in ``found``."""
    missing = [i for i in host_ids if i not in found]
    if missing:
        raise NotFound(
            f"no host with id {missing[0]!r}", code="HostNotFound", target=f"host {missing[0]}"
        )


def login_user() -> str:
    """Return the user to log in as when an inventory names none (fleet.inventory's rule,
    imported here only when needed: it loads YAML)."""
    from fleet.inventory import login_user as user

    return user()


def for_host(store: Store, host_id: str) -> Target:
    """Return one host's target. Raises NotFound."""
    with store.session() as s:
        return for_hosts(s, [host_id])[0]
