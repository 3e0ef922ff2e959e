"""``fleet exec``: one command on many hosts at once, one result per host, none hidden.

Like Fabric's ``GroupResult``: every host gets a result or an error, and a partial
failure is never hidden. Where each host's connection comes from is the caller's
choice: a new one per host (cold: :class:`FreshConnections`), or the controller's open
ones (warm: fleet/control_server.py). Handshakes are capped per sshd by the SSH layer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Protocol

from fleet import hostsets, reads, targets
from fleet.errors import FleetError, NotFound, TimedOut
from fleet.exec_results import HostResult
from fleet.settings import Settings, private_dir
from fleet.ssh import Connection, Target

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fleet.store import Store

log = logging.getLogger(__name__)


class Connections(Protocol):
    """Where ``run_everywhere`` gets the connection of each target."""

    def connect(self, target: Target) -> AbstractAsyncContextManager[Connection]:
        """Return a context that yields a connection to ``target`` for one run.
        Raises what Connection.open raises."""
        ...


class FreshConnections:
    """A new connection per target, closed after its run. A host key seen for the first
    time is recorded in the database of ``db_url`` (the ORM loads only then)."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self._store: Store | None = None

    @asynccontextmanager
    async def connect(self, target: Target) -> AsyncIterator[Connection]:
        conn = await Connection.open(
            target, on_new_key=lambda line, fp: self._record(target.host_id, line, fp)
        )
        try:
            yield conn
        finally:
            await conn.close()

    def _record(self, host_id: str, line: str, fingerprint: str) -> None:
        from fleet.service.hosts import record_host_key  # the ORM, only for a new key
        from fleet.store import Store

        if self._store is None:
            self._store = Store(self.db_url)
        record_host_key(self._store, host_id, line, fingerprint)

    def close(self) -> None:
        """Close the store opened to record keys, if any."""
        if self._store is not None:
            self._store.close()


def select_targets(
    db: reads.Reader, *, pool: str | None = None, pattern: str | None = None
) -> list[Target]:
    """Return the SSH targets of a pool's nodes or of the hosts matching ``pattern``
    (read without the ORM).

    Raises NotFound for an unknown pool or a pattern item that matches no host."""
    if pool is not None:
        ids = reads.node_ids(db, pool)
        if not ids:
            raise NotFound("the pool has no nodes", code="NodeNotFound", target=f"pool {pool}")
    else:
        ids = hostsets.select(pattern or "", reads.host_ids(db))
    found = reads.hosts_with_keys(db, ids)
    targets.check_found(ids, {host.id for host, _ in found})
    return [targets.target(host, key) for host, key in found]


def run_cold(
    settings: Settings,
    *,
    pool: str | None,
    pattern: str | None,
    argv: Sequence[str],
    timeout: float | None,
) -> list[HostResult]:
    """Run ``argv`` on the targets selected in the database of ``settings``, over a new
    connection to each. Raises what ``select_targets`` raises."""
    private_dir(settings.home)
    db = reads.Reader(settings.db_url)
    db.keep_private()
    chosen = select_targets(db, pool=pool, pattern=pattern)
    fresh = FreshConnections(settings.db_url)
    try:
        return asyncio.run(run_everywhere(chosen, argv, fresh, timeout))
    finally:
        fresh.close()


async def run_everywhere(
    targets: Sequence[Target],
    argv: Sequence[str],
    connections: Connections,
    timeout: float | None = None,
) -> list[HostResult]:
    """Run ``argv`` on every target at once, each on a connection from ``connections``;
    return one result per target, in order. ``timeout`` bounds each target's connect
    and run."""

    async def one(target: Target) -> HostResult:
        try:
            return await asyncio.wait_for(_run_one(target, argv, connections), timeout)
        except TimeoutError:
            err = TimedOut(f"no result within {timeout} s", target=f"host {target.host_id}")
            return HostResult(target.host_id, error={"code": err.code, "message": str(err)})
        except FleetError as exc:
            return HostResult(target.host_id, error={"code": exc.code, "message": str(exc)})
        except Exception as exc:  # one host's bug never hides the others' results
            log.exception("fleet exec on host %s failed", target.host_id)
            message = f"internal error: {type(exc).__name__}: {exc}"
            return HostResult(target.host_id, error={"code": "InternalError", "message": message})

    return list(await asyncio.gather(*(one(t) for t in targets)))


async def _run_one(target: Target, argv: Sequence[str], connections: Connections) -> HostResult:
    async with connections.connect(target) as conn:
        result = await conn.run(argv)
    return HostResult(
        target.host_id,
        result.exit_code,
        result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
        None
        if result.exit_code is not None
        else {"code": "KilledBySignal", "message": f"killed by signal {result.signal}"},
    )
