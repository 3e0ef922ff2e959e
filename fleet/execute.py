"""``fleet exec``: one command on many hosts at once, one result per host, none hidden.

Like Fabric's ``GroupResult``: every host gets a result or an error, and a partial
failure is never hidden. Connections open concurrently, with handshakes capped per
sshd by the SSH layer.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fleet import hostsets, reads, targets
from fleet.errors import FleetError, NotFound, TimedOut
from fleet.ssh import Connection, Target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostResult:
    """What one host did with the command."""

    host: str
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    error: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "exitCode": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "error": self.error,
        }


@dataclass(frozen=True)
class Group:
    """Hosts that produced the same outcome, and that outcome as text."""

    hosts: list[str]
    label: str
    text: str


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


async def run_everywhere(
    db_url: str, targets: Sequence[Target], argv: Sequence[str], timeout: float | None = None
) -> list[HostResult]:
    """Run ``argv`` on every target at once; return one result per target, in order.
    A host key seen for the first time is recorded in the database of ``db_url``."""
    stores: list[Any] = []

    def record(host_id: str, line: str, fingerprint: str) -> None:
        from fleet.service.hosts import record_host_key  # the ORM, only for a new key
        from fleet.store import Store

        if not stores:
            stores.append(Store(db_url))
        record_host_key(stores[0], host_id, line, fingerprint)

    def remember(host_id: str) -> Any:
        return lambda line, fp: record(host_id, line, fp)

    async def one(target: Target) -> HostResult:
        try:
            return await asyncio.wait_for(_run_one(target, argv, remember(target.host_id)), timeout)
        except TimeoutError:
            err = TimedOut(f"no result within {timeout} s", target=f"host {target.host_id}")
            return HostResult(target.host_id, error={"code": err.code, "message": str(err)})
        except FleetError as exc:
            return HostResult(target.host_id, error={"code": exc.code, "message": str(exc)})
        except Exception as exc:  # one host's bug never hides the others' results
            log.exception("fleet exec on host %s failed", target.host_id)
            message = f"internal error: {type(exc).__name__}: {exc}"
            return HostResult(target.host_id, error={"code": "InternalError", "message": message})

    try:
        return list(await asyncio.gather(*(one(t) for t in targets)))
    finally:
        for store in stores:
            store.close()


async def _run_one(target: Target, argv: Sequence[str], on_new_key: Any) -> HostResult:
    conn = await Connection.open(target, on_new_key=on_new_key)
    try:
        result = await conn.run(argv)
    finally:
        await conn.close()
    return HostResult(
        target.host_id,
        result.exit_code,
        result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
        None
        if result.exit_code is not None
        else {"code": "KilledBySignal", "message": f"killed by signal {result.signal}"},
    )


def group_identical(results: Sequence[HostResult]) -> list[Group]:
    """Return results grouped by identical outcome (exit code, output, error), largest first."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for r in results:
        err = r.error["message"] if r.error else None
        groups.setdefault((r.exit_code, r.stdout, r.stderr, err), []).append(r.host)
    out = []
    for (code, out_text, err_text, err), hosts in groups.items():
        status = f"error: {err}" if err else f"exit {code}"
        text = out_text + (f"[stderr]\n{err_text}" if err_text else "")
        out.append(Group(hosts, f"{fold(hosts)} ({len(hosts)}) {status}", text))
    return sorted(out, key=lambda g: -len(g.hosts))


_NUMBERED = re.compile(r"(.*?)(\d+)")


def fold(names: Sequence[str]) -> str:
    """Return host names folded into ranges: node01,node02,node03,web -> node[01-03],web."""
    by_prefix: dict[tuple[str, int], list[int]] = {}
    plain: list[str] = []
    for name in names:
        m = _NUMBERED.fullmatch(name)
        if m:
            by_prefix.setdefault((m.group(1), len(m.group(2))), []).append(int(m.group(2)))
        else:
            plain.append(name)
    parts = []
    for (prefix, width), nums in by_prefix.items():
        nums.sort()
        spans, start, prev = [], nums[0], nums[0]
        for n in nums[1:] + [None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            spans.append(
                f"{start:0{width}d}" if start == prev else f"{start:0{width}d}-{prev:0{width}d}"
            )
            if n is not None:
                start = prev = n
        parts.append(f"{prefix}{spans[0]}" if len(nums) == 1 else f"{prefix}[{','.join(spans)}]")
    return ",".join(parts + plain)
