"""Task resource statistics: the rusage an attempt's exit record reports, summed over a task's
attempts and a job's tasks (fleet/views.py renders them as Azure's TaskStatistics and
JobStatistics).

A task's statistics cover its whole life, as Azure's do: every attempt that reported any
(retries, requeued attempts and runs after a reactivation) adds to its totals. CPU and
wall-clock times and block counts are summed; the peak resident set size is the largest
any attempt reached. Linux counts block I/O in 512-byte units, so ``readIOps`` and
``writeIOps`` count those units, not requests (docs/agent-protocol.md).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

BLOCK_BYTES = 512  # the unit of ru_inblock and ru_oublock


@dataclass(frozen=True)
class Usage:
    """Resources used by one attempt, or by several together: CPU and wall-clock seconds,
    512-byte blocks read from and written to storage (sums), and the peak resident set size
    in bytes (the largest). The field names are the Task columns that hold a task's totals."""

    user_cpu_seconds: float = 0.0
    kernel_cpu_seconds: float = 0.0
    wall_clock_seconds: float = 0.0
    read_blocks: int = 0
    write_blocks: int = 0
    max_rss_bytes: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.user_cpu_seconds + other.user_cpu_seconds,
            self.kernel_cpu_seconds + other.kernel_cpu_seconds,
            self.wall_clock_seconds + other.wall_clock_seconds,
            self.read_blocks + other.read_blocks,
            self.write_blocks + other.write_blocks,
            max(self.max_rss_bytes, other.max_rss_bytes),
        )

    def columns(self) -> dict[str, Any]:
        """Return the Task column values of these totals."""
        return {name: getattr(self, name) for name in COLUMNS}


#: The Task columns that hold a task's totals (``stats_time``: when they last changed).
COLUMNS = tuple(f.name for f in fields(Usage))
#: The exit record's ``stats`` keys, by Usage field.
RECORD_KEYS = {
    "user_cpu_seconds": "userCPUSeconds",
    "kernel_cpu_seconds": "kernelCPUSeconds",
    "wall_clock_seconds": "wallClockSeconds",
    "read_blocks": "readBlocks",
    "write_blocks": "writeBlocks",
    "max_rss_bytes": "maxRSSBytes",
}
_COUNTS = ("read_blocks", "write_blocks", "max_rss_bytes")
_LIMIT = 1 << 63  # above what a BIGINT column holds; NaN and infinity compare out too


def from_record(record: dict[str, Any]) -> Usage | None:
    """Return the usage an exit record's ``stats`` reports, or None if it has none (an agent
    older than this field, a command that never started) or any value is not a number
    from 0 to below 2**63 (an integer for counts)."""
    stats = record.get("stats")
    if not isinstance(stats, dict):
        return None
    values: dict[str, Any] = {}
    for name, key in RECORD_KEYS.items():
        value = stats.get(key)
        kinds = int if name in _COUNTS else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not 0 <= value < _LIMIT:
            return None
        values[name] = float(value) if name not in _COUNTS else value
    return Usage(**values)


def of_row(row: Any) -> Usage | None:
    """Return the totals a task row (ORM or fleet/reads.py) holds, or None if none of its
    attempts reported any."""
    if row.stats_time is None:
        return None
    return Usage(**{name: getattr(row, name) or 0 for name in COLUMNS})


@dataclass(frozen=True)
class JobTotals:
    """What a job's tasks add up to: their usage, when it last changed (None: no task has
    reported any), their retries, and their wait times (seconds, summed)."""

    usage: Usage
    updated_at: float | None
    retries: int
    wait_seconds: float

    @classmethod
    def of(cls, values: tuple[Any, ...]) -> JobTotals:
        """Return the totals from one row of aggregates over a job's tasks: the sums of
        ``COLUMNS`` in their order (the max of ``max_rss_bytes``), the max of ``stats_time``,
        the sum of ``retry_count`` and of ``start_time - created_at``. Each is NULL when no
        task has a value; PostgreSQL sums big integers as decimals."""
        user, kernel, wall, read, write, rss, updated_at, retries, wait = values
        return cls(
            Usage(
                float(user or 0),
                float(kernel or 0),
                float(wall or 0),
                int(read or 0),
                int(write or 0),
                int(rss or 0),
            ),
            None if updated_at is None else float(updated_at),
            int(retries or 0),
            max(0.0, float(wait or 0)),
        )
