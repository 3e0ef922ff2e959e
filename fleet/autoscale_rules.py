"""Autoscale, pure: a pool's autoscale settings, its metric samples, and what one
evaluation of its formula asks for.

The controller (fleet/autoscale.py) takes a sample of each pool's task counts every
SAMPLE_PERIOD seconds and before each evaluation, and evaluates the formula every
``autoScaleEvaluationInterval``; the formula language itself is fleet/formula. Samples
live in the controller's memory: a restarted controller starts with an empty history
(``GetSample`` then returns fewer samples, as on a new Azure pool). Node metrics come
from the node agents' ``metrics`` (CPU and memory counters of each host).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fleet import durations, formula
from fleet.errors import BadInput, FleetError
from fleet.spec_fields import fail, typed

#: Azure's default evaluation interval, and fleet's bounds (Azure's lower bound is 5
#: minutes; fleet allows 5 seconds, for labs).
DEFAULT_INTERVAL = "PT15M"
MIN_INTERVAL_SECONDS = 5.0
MAX_INTERVAL_SECONDS = 168 * 3600.0
#: Seconds between two samples of a pool's metrics (Azure's GetSamplePeriod).
SAMPLE_PERIOD = 30.0
#: How much history is kept per metric (Azure keeps samples for hours; formulas look back
#: minutes to an hour).
HISTORY_SECONDS = 3 * 3600.0
#: The task metrics fleet samples, each the name of a formula service variable.
TASK_METRICS = (
    "$ActiveTasks",
    "$RunningTasks",
    "$PendingTasks",
    "$SucceededTasks",
    "$FailedTasks",
    "$ActiveTaskSlots",
    "$PendingTaskSlots",
)
FIELDS = ("enableAutoScale", "autoScaleFormula", "autoScaleEvaluationInterval")


def parse_settings(data: dict[str, Any], target: str) -> dict[str, Any]:
    """Return a pool spec's normalized autoscale fields (all three when enabled, else
    none). The formula is parsed here, so a bad one is refused
    before anything is stored (code InvalidAutoScaleFormula, naming line and column)."""
    enabled = typed(data, "enableAutoScale", bool, target, default=False)
    if not enabled:
        for name in ("autoScaleFormula", "autoScaleEvaluationInterval"):
            if data.get(name) is not None:
                raise fail(target, name, f"{name} needs enableAutoScale true")
        return {}
    text = typed(data, "autoScaleFormula", str, target)
    if not text:
        raise fail(target, "autoScaleFormula", "enableAutoScale needs an autoScaleFormula")
    check_formula(text, target)
    return {
        "enableAutoScale": True,
        "autoScaleFormula": text,
        "autoScaleEvaluationInterval": parse_interval(
            data.get("autoScaleEvaluationInterval", DEFAULT_INTERVAL), target
        ),
    }


def check_formula(text: str, target: str) -> formula.Formula:
    """Return the parsed formula; raises BadInput naming the pool, line and column."""
    try:
        return formula.parse(text)
    except BadInput as exc:
        exc.target = target
        raise


def parse_interval(value: Any, target: str) -> str:
    """Return an evaluation interval as a normalized ISO 8601 duration from 5 s to 168 h."""
    name = "autoScaleEvaluationInterval"
    seconds = durations.parse(value, field=name, target=target)
    if seconds is None or not MIN_INTERVAL_SECONDS <= seconds <= MAX_INTERVAL_SECONDS:
        raise fail(target, name, f"{name} must be from 5 seconds (PT5S) to 168 hours (PT168H)")
    return durations.format_seconds(seconds)


def interval_seconds(spec: Mapping[str, Any]) -> float:
    """Return a pool spec's evaluation interval in seconds."""
    seconds = durations.parse(spec.get("autoScaleEvaluationInterval") or DEFAULT_INTERVAL)
    assert seconds is not None
    return seconds


@dataclass
class History:
    """One pool's samples: per metric, (epoch seconds, value), oldest first."""

    samples: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    taken_at: float | None = None

    def add(self, now: float, values: Mapping[str, float]) -> None:
        """Record one sample of every metric in ``values`` at ``now``; drop old ones."""
        for name, value in values.items():
            series = self.samples.setdefault(name, deque())
            series.append((now, float(value)))
            while series and series[0][0] < now - HISTORY_SECONDS:
                series.popleft()
        self.taken_at = now

    def due(self, now: float) -> bool:
        """Return whether a periodic sample is due."""
        return self.taken_at is None or now - self.taken_at >= SAMPLE_PERIOD


@dataclass(frozen=True)
class PoolFacts:
    """What an evaluation reads of a pool besides its samples."""

    current_nodes: int
    target_nodes: int | None


def inputs(history: History, facts: PoolFacts) -> dict[str, formula.Input]:
    """Return the formula's service variables: the sampled task metrics, and the node
    counts (``$TargetDedicatedNodes`` starts at the pool's target, else its node count)."""
    out: dict[str, formula.Input] = {
        name: [(_utc(t), v) for t, v in series] for name, series in history.samples.items()
    }
    out["$CurrentDedicatedNodes"] = facts.current_nodes
    out["$TargetDedicatedNodes"] = (
        facts.target_nodes if facts.target_nodes is not None else facts.current_nodes
    )
    return out


@dataclass(frozen=True)
class Outcome:
    """One evaluation: ``run`` is Azure's ``autoScaleRun`` (timestamp, results, error);
    ``target`` and ``option`` what the pool is to be resized to (None: leave it)."""

    run: dict[str, Any]
    target: int | None = None
    option: str = "requeue"
    values: dict[str, str] = field(default_factory=dict)


def evaluate(text: str, history: History, facts: PoolFacts, now: float) -> Outcome:
    """Evaluate a pool's formula at ``now``; a formula that fails is an Outcome with an
    ``error`` (Azure's AutoScaleRunError: code, message, values) and no target."""
    stamp = _utc(now)
    try:
        result = formula.evaluate(formula.parse(text), inputs(history, facts), stamp)
    except FleetError as exc:
        error = {"code": exc.code, "message": exc.message, "values": _detail_values(exc)}
        return Outcome({"timestamp": _iso(stamp), "error": error})
    run = {"timestamp": _iso(stamp), "results": result.results}
    values = {name: formula.format_value(value) for name, value in sorted(result.variables.items())}
    return Outcome(
        run,
        target=result.target_dedicated_nodes,
        option=result.node_deallocation_option or "requeue",
        values=values,
    )


def _detail_values(exc: FleetError) -> list[dict[str, str]]:
    return [{"name": str(k), "value": str(v)} for k, v in sorted(exc.details.items())]


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def task_metrics(rows: Iterable[tuple[str, str | None, bool, int, int]]) -> dict[str, float]:
    """Return the task metrics of one pool from rows of (state, result, held, tasks,
    slots): its jobs' tasks grouped by state, result (completed ones: those that completed
    since the last sample) and whether dependencies hold them."""
    m = dict.fromkeys(TASK_METRICS, 0.0)
    running_slots = 0.0
    for state, result, held, count, slots in rows:
        if state == "active" and not held:
            m["$ActiveTasks"] += count
            m["$ActiveTaskSlots"] += slots
        elif state in ("running", "preparing"):
            m["$RunningTasks"] += count
            running_slots += slots
        elif state == "completed":
            m["$SucceededTasks" if result == "success" else "$FailedTasks"] += count
    m["$PendingTasks"] = m["$ActiveTasks"] + m["$RunningTasks"]
    m["$PendingTaskSlots"] = m["$ActiveTaskSlots"] + running_slots
    return m


def node_metrics(readings: Sequence[Sequence[Mapping[str, int]]]) -> dict[str, float]:
    """Return ``$CPUPercent`` (the nodes' average busy share between their last two
    readings) and ``$MemoryBytes`` (their average memory in use at the last one) from
    each node's readings of the agent's ``metrics``, oldest first; a metric no node can
    give is left out (its history then has no sample for this time)."""
    cpu, memory = [], []
    for node in readings:
        if len(node) >= 2 and {"cpuBusy", "cpuTotal"} <= node[-2].keys() & node[-1].keys():
            total = node[-1]["cpuTotal"] - node[-2]["cpuTotal"]
            if total > 0:
                cpu.append(100.0 * (node[-1]["cpuBusy"] - node[-2]["cpuBusy"]) / total)
        if node and {"memoryTotal", "memoryAvailable"} <= node[-1].keys():
            memory.append(float(node[-1]["memoryTotal"] - node[-1]["memoryAvailable"]))
    out = {}
    if cpu:
        out["$CPUPercent"] = sum(cpu) / len(cpu)
    if memory:
        out["$MemoryBytes"] = sum(memory) / len(memory)
    return out
