"""The controller's Prometheus metrics: the only module that imports prometheus_client.

Everything lives on fleet's own registry (:data:`REGISTRY`, not the library's global
one), served by ``GET /metrics`` of ``fleet controller run --listen`` (fleet/api/app.py).
Counts of tasks, nodes, pools and jobs by state are read from the database at scrape
time (:func:`fleet.reads.state_counts`), never counted by hand. The task histograms are
fed from the controller's hot path, so a sample costs a list append there and is binned
once a turn (:class:`Durations`, :func:`end_turn`).
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterator, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from fleet import reads
from fleet.domain import JobState, NodeState, PoolState, TaskState
from fleet.errors import FleetError

log = logging.getLogger(__name__)

#: fleet's own registry: only what this module registers on it is served.
REGISTRY = CollectorRegistry()
disable_created_metrics()  # no ``*_created`` twin of every counter and histogram

#: Upper bounds (seconds) of a task's wait for a node: a full pool keeps tasks for long.
DISPATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: Upper bounds (seconds) from an exit event to its commit (larger outputs come over SFTP).
COMPLETION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Upper bounds (seconds) of an API request's handling.
API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

#: Why an SSH handshake failed, by fleet error code; any other code counts as ``other``.
HANDSHAKE_REASONS = {
    "HostKeyMismatch": "host_key_mismatch",
    "HostKeyUnknown": "host_key_unknown",
    "AuthenticationFailed": "auth",
    "NodeUnreachable": "unreachable",
}

#: The states each scrape reports (zero when no row has them), by table.
STATES: dict[str, tuple[str, ...]] = {
    "tasks": tuple(TaskState),
    "nodes": tuple(NodeState),
    "pools": tuple(PoolState),
    "jobs": tuple(JobState),
}


class Durations:
    """A histogram fed in bulk: :meth:`add` appends a sample (the controller's loop
    thread only), :meth:`flush` bins what was added (the same thread, once a turn), and
    a scrape reads the bins from any thread."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(sorted(buckets))
        self._pending: list[float] = []
        self._counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        """Record one sample; it is seen by scrapes after the next :meth:`flush`."""
        self._pending.append(seconds)

    def flush(self) -> None:
        """Bin the samples added since the last flush."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        with self._lock:
            for value in pending:
                self._counts[bisect.bisect_left(self.bounds, value)] += 1
            self._sum += sum(pending)

    def collect(self) -> Iterator[Metric]:
        """Yield the histogram as Prometheus sees it: cumulative buckets, sum, count."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, n in zip([*map(floatToGoString, self.bounds), "+Inf"], counts, strict=True):
            running += n
            cumulative.append((bound, float(running)))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=cumulative, sum_value=total
        )


class StoreCounts:
    """Tasks, nodes, pools and jobs by state, read from the database at each scrape."""

    def __init__(self) -> None:
        self.reader: reads.Reader | None = None

    def collect(self) -> Iterator[Metric]:
        if self.reader is None:
            return
        try:
            counts = reads.state_counts(self.reader)
        except FleetError as exc:  # the other metrics are still worth serving
            log.warning("metrics: cannot count from the database: %s (%s)", exc, exc.code)
            return
        for table, states in STATES.items():
            family = GaugeMetricFamily(
                f"fleet_{table}", f"{table.capitalize()} by state.", labels=["state"]
            )
            found = counts.get(table, {})
            for state in sorted({*states, *map(str, found)}):
                family.add_metric([state], found.get(state, 0))
            yield family


TASK_DISPATCH = Durations(
    "fleet_task_dispatch_seconds",
    "Seconds from a task becoming eligible (created, retried or requeued) until a node "
    "acknowledged its spawn.",
    DISPATCH_BUCKETS,
)
TASK_COMPLETION = Durations(
    "fleet_task_completion_seconds",
    "Seconds from a task's exit event reaching the controller until its completion was committed.",
    COMPLETION_BUCKETS,
)
STORE_COUNTS = StoreCounts()
for _collector in (TASK_DISPATCH, TASK_COMPLETION, STORE_COUNTS):
    REGISTRY.register(_collector)

SSH_CONNECTIONS = Gauge(
    "fleet_ssh_connections", "Open SSH connections of the controller to nodes.", registry=REGISTRY
)
SSH_HANDSHAKE_FAILURES = Counter(
    "fleet_ssh_handshake_failures",
    "SSH connections to nodes that failed before they were open, by reason.",
    ["reason"],
    registry=REGISTRY,
)
for _reason in sorted({*HANDSHAKE_REASONS.values(), "other"}):
    SSH_HANDSHAKE_FAILURES.labels(_reason)  # every reason is served, zero until it happens
API_REQUESTS = Counter(
    "fleet_api_requests",
    "REST API requests answered, by operation and HTTP status.",
    ["operation", "status"],
    registry=REGISTRY,
)
API_SECONDS = Histogram(
    "fleet_api_request_seconds",
    "Seconds to answer a REST API request (until its body starts), by operation.",
    ["operation"],
    buckets=API_BUCKETS,
    registry=REGISTRY,
)
CONTROLLER_TURNS = Counter(
    "fleet_controller_turns", "Turns of the controller's loop.", registry=REGISTRY
)
ProcessCollector(registry=REGISTRY)


def end_turn() -> None:
    """Count a turn of the controller's loop and bin the task durations it recorded."""
    CONTROLLER_TURNS.inc()
    TASK_DISPATCH.flush()
    TASK_COMPLETION.flush()


def count_from(reader: reads.Reader) -> None:
    """Read the tasks, nodes, pools and jobs by state from ``reader``'s database."""
    STORE_COUNTS.reader = reader


def handshake_failed(code: str) -> None:
    """Count an SSH handshake that failed with the fleet error ``code``."""
    SSH_HANDSHAKE_FAILURES.labels(HANDSHAKE_REASONS.get(code, "other")).inc()


def api_request(operation: str, status: int, seconds: float) -> None:
    """Count one answered API request of ``operation`` and how long it took."""
    API_REQUESTS.labels(operation, str(status)).inc()
    API_SECONDS.labels(operation).observe(seconds)


def exposition() -> tuple[bytes, str]:
    """Return every metric in Prometheus' text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
