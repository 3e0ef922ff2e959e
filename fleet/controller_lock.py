"""One controller per database: a lease row that a controller claims, renews and releases.

A second controller stops at once naming the first, or waits as a standby and takes
over when the first stops or dies. :func:`decide` holds the rules (may this controller take
the lease, given the row, the time and who it is); :class:`Lease` applies them to the
``controller_lease`` row, on SQLite and PostgreSQL alike. Lease times come from the
database's clock on PostgreSQL (one clock for every host) and from the local clock on
SQLite (one host). The holder trusts its lease for half its ttl after a renewal began, by
its own monotonic clock, and confirms it again before any transaction past that; another
controller may take it only after the full ttl without renewal, so two controllers never
act at once, even after a long pause (SIGSTOP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Table, delete, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from fleet.errors import Conflict, FleetError
from fleet.store import Store, database_error
from fleet.tables import ControllerLease
from fleet.views import iso

log = logging.getLogger(__name__)

#: Seconds without renewal after which another controller may take the lease.
LEASE_TTL = 10.0
#: Seconds between a standby's looks at the lease.
STANDBY_POLL = 0.5

LEASE: Table = ControllerLease.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Identity:
    """Who a controller is: an id of its own, and the host and process it runs as."""

    holder: str
    hostname: str
    pid: int
    machine: str  # boot id and pid namespace; '' where /proc does not say

    @classmethod
    def mine(cls) -> Identity:
        """Return a fresh identity for this process."""
        return cls(uuid.uuid4().hex, socket.gethostname(), os.getpid(), machine_id())


@dataclass(frozen=True)
class Holder:
    """The lease row as read: who holds it, since when, when it last renewed, for how long."""

    holder: str
    hostname: str
    pid: int
    machine: str
    ttl: float
    since: float
    renewed_at: float

    def describe(self) -> str:
        return f"{self.hostname} pid {self.pid}, since {iso(self.since)}"


@dataclass(frozen=True)
class Verdict:
    """Whether the lease may be taken, and why: free, mine, expired, holder gone or held."""

    take: bool
    reason: str


def decide(
    row: Holder | None, me: Identity, now: float, pid_alive: Callable[[int], bool]
) -> Verdict:
    """Return whether ``me`` may take the lease described by ``row`` at time ``now``.

    Free, already mine, or not renewed for more than the holder's ttl: take it. Held from
    this very machine (same hostname, boot and pid namespace) by a process that is gone:
    take it at once. Otherwise it is held. ``pid_alive`` is asked only about pids of this
    machine, so a pid from another host or container is never mistaken for a dead one."""
    if row is None:
        return Verdict(True, "free")
    if row.holder == me.holder:
        return Verdict(True, "mine")
    if now - row.renewed_at > row.ttl:
        return Verdict(True, "expired")
    same_machine = row.hostname == me.hostname and row.machine == me.machine
    if same_machine and not pid_alive(row.pid):
        return Verdict(True, "holder gone")
    return Verdict(False, "held")


def machine_id() -> str:
    """Return this process's boot id and pid namespace, or '' where /proc does not tell."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{namespace}"


def pid_alive(pid: int) -> bool:
    """Return whether process ``pid`` of this machine still runs (a zombie does not)."""
    if Path("/proc/self/stat").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat[stat.rfind(")") + 2 :][:1] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_error(holder: Holder) -> Conflict:
    """The error a second controller stops with: who runs, where, since when."""
    return Conflict(
        f"another controller runs on this database: {holder.describe()}; stop it first, or "
        "start this one with --standby to take over when it stops",
        code="ControllerRunning",
        target="controller",
        details={
            "hostname": holder.hostname,
            "pid": holder.pid,
            "since": iso(holder.since),
            "renewedAt": iso(holder.renewed_at),
        },
    )


class _Raced(Exception):
    """Another controller changed the row between our read and our write."""


class Lease:
    """This controller's claim on its database: acquire, keep renewed, check, release."""

    def __init__(self, store: Store, ttl: float = LEASE_TTL, me: Identity | None = None) -> None:
        self.store = store
        self.ttl = ttl
        self.me = me or Identity.mine()
        self.interval = min(1.0, ttl / 5)
        self.lost: FleetError | None = None
        self._confirmed = -math.inf  # monotonic time at which the last good renewal began
        self._held = False
        self._on_lost: list[Callable[[], None]] = []

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once if the lease is found lost."""
        self._on_lost.append(callback)

    # -- claiming ---------------------------------------------------------------------

    def try_acquire(self) -> Holder | None:
        """Take the lease if :func:`decide` allows it. Return None when this controller holds
        it now, else the holder that keeps it. Raises FleetError (DatabaseError)."""
        for _ in range(3):
            started = time.monotonic()
            try:
                holder, verdict = self._claim()
            except (IntegrityError, _Raced):
                continue  # another controller wrote the row first: read it again
            except DBAPIError as exc:
                raise database_error(exc) from exc
            if not verdict.take:
                return holder
            if holder is not None and verdict.reason in ("expired", "holder gone"):
                log.warning(
                    "took the controller lease over from %s (%s)", holder.describe(), verdict.reason
                )
            self._confirmed = started
            self._held = True
            return None
        raise FleetError(
            "the controller lease changed hands three times while this controller tried to "
            "take it; try again",
            code="ControllerLeaseContended",
        )

    def _claim(self) -> tuple[Holder | None, Verdict]:
        """In one transaction: read the row (locked), decide, and write it if taking it."""
        with self.store.engine.begin() as conn:
            now = self._now(conn)
            row = _read(conn, for_update=True)
            verdict = decide(row, self.me, now, pid_alive)
            if not verdict.take:
                return row, verdict
            since = row.since if row is not None and verdict.reason == "mine" else now
            values = {**self._values(since), "renewed_at": now}
            if row is None:
                conn.execute(insert(LEASE).values(id=1, **values))
            else:
                taken = conn.execute(
                    update(LEASE)
                    .where(LEASE.c.id == 1, LEASE.c.holder == row.holder)
                    .values(**values)
                )
                if taken.rowcount != 1:
                    raise _Raced
        return row, verdict

    async def acquire(self, standby: bool, stop: asyncio.Event) -> bool:
        """Take the lease and return True. When another controller holds it: raise
        Conflict (ControllerRunning); or, with ``standby``, wait until it can be taken
        (True) or ``stop`` is set (False). Raises FleetError (DatabaseError), which a
        standby logs and retries instead."""
        announced = ""
        while not stop.is_set():
            try:
                holder = self.try_acquire()
            except FleetError as exc:
                if not standby:
                    raise
                log.warning("standby: cannot read the controller lease: %s", exc)
                holder = None
            else:
                if holder is None:
                    return True
                if not standby:
                    raise running_error(holder)
                if holder.holder != announced:
                    log.info(
                        "standby: the controller on %s holds this database; taking over when "
                        "it stops",
                        holder.describe(),
                    )
                    announced = holder.holder
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STANDBY_POLL)
        return False

    # -- holding ------------------------------------------------------------------------

    def renew(self) -> None:
        """Confirm this controller still holds the lease and push its expiry on.

        Raises Conflict (ControllerLeaseLost) when another controller took it, and from then
        on; FleetError (DatabaseError) when the database cannot be reached."""
        self._raise_unless_held()
        started = time.monotonic()
        try:
            with self.store.engine.begin() as conn:
                now = self._now(conn)
                renewed = conn.execute(
                    update(LEASE)
                    .where(LEASE.c.id == 1, LEASE.c.holder == self.me.holder)
                    .values(renewed_at=now)
                ).rowcount
                taker = None if renewed == 1 else _read(conn, for_update=False)
        except DBAPIError as exc:
            raise database_error(exc) from exc
        if renewed == 1:
            self._confirmed = started
            return
        self._lose(taker)
        assert self.lost is not None
        raise self.lost

    def check(self) -> None:
        """Raise unless this controller may act now: its lease was confirmed less than half
        a ttl ago, or is confirmed again here. Install it as the store's guard so that no
        transaction of a controller that lost its lease (say after a SIGSTOP) goes through.
        Raises what :meth:`renew` raises."""
        self._raise_unless_held()
        if time.monotonic() - self._confirmed > self.ttl / 2:
            self.renew()

    async def keep(self) -> None:
        """Renew the lease every ``interval`` seconds until cancelled or lost (its on_lost
        callbacks have run then). Database errors are logged and retried."""
        while self.lost is None:
            await asyncio.sleep(self.interval)
            try:
                self.renew()
            except FleetError as exc:
                if self.lost is None:
                    log.warning("controller lease not renewed: %s", exc)

    def release(self) -> None:
        """Give the lease up on a clean shutdown, so that a standby takes over at once.
        Raises nothing: a lease that cannot be released expires after its ttl."""
        if not self._held or self.lost is not None:
            return
        self._held = False
        try:
            with self.store.engine.begin() as conn:
                conn.execute(delete(LEASE).where(LEASE.c.id == 1, LEASE.c.holder == self.me.holder))
        except DBAPIError as exc:
            log.warning("controller lease not released (it expires in %.0f s): %s", self.ttl, exc)

    # -- helpers ------------------------------------------------------------------------

    def _raise_unless_held(self) -> None:
        if self.lost is not None:
            raise self.lost
        if not self._held:
            raise Conflict(
                "this controller does not hold the lease on its database (never taken, or "
                "released)",
                code="ControllerLeaseLost",
                target="controller",
            )

    def _values(self, since: float) -> dict[str, Any]:
        me = self.me
        return {
            "holder": me.holder,
            "hostname": me.hostname,
            "pid": me.pid,
            "machine": me.machine,
            "ttl": self.ttl,
            "since": since,
        }

    def _now(self, conn: Connection) -> float:
        if self.store.is_sqlite:
            return time.time()
        return float(
            conn.execute(text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")).scalar_one()
        )

    def _lose(self, taker: Holder | None) -> None:
        who = (
            f"the controller on {taker.describe()}" if taker else "no controller (it was released)"
        )
        self.lost = Conflict(
            f"this controller lost its lease on the database, now held by {who}: it did not "
            f"renew it for more than {self.ttl:g} s (was it paused, or its database "
            "unreachable?); stopping so that only one controller acts",
            code="ControllerLeaseLost",
            target="controller",
            details={"holder": taker.hostname, "pid": taker.pid} if taker else {},
        )
        log.error("%s", self.lost.message)
        for callback in self._on_lost:
            callback()


def _read(conn: Connection, for_update: bool) -> Holder | None:
    query = select(LEASE).where(LEASE.c.id == 1)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        return None
    return Holder(
        holder=row["holder"],
        hostname=row["hostname"],
        pid=row["pid"],
        machine=row["machine"],
        ttl=row["ttl"],
        since=row["since"],
        renewed_at=row["renewed_at"],
    )
