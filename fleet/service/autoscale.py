"""Autoscale requests: enable (or change the formula), disable, and evaluate a formula
against a pool now without applying it (Azure's "evaluate auto scale")."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm.attributes import flag_modified
from sqlmodel import Session, col

from fleet import autoscale_rules
from fleet.autoscale_rules import PoolFacts
from fleet.domain import JobState, NodeState, TaskState
from fleet.errors import Conflict
from fleet.service.pools import get_pool
from fleet.store import Store
from fleet.tables import Job, Node, Pool, Task

_TASKS = Task.__table__  # type: ignore[attr-defined]
_JOBS = Job.__table__  # type: ignore[attr-defined]


def enable(store: Store, pool_id: str, formula: str, interval: str | None = None) -> Pool:
    """Turn autoscale on for a pool that claims hosts by ``hostSelector`` (or change its
    formula or interval); the controller evaluates it at once, then every interval.

    Raises BadInput (the formula, naming line and column; the interval), NotFound, or
    Conflict ``PoolNotResizable`` for a pool of listed hosts."""
    target = f"pool {pool_id}"
    settings = autoscale_rules.parse_settings(
        {
            "enableAutoScale": True,
            "autoScaleFormula": formula,
            "autoScaleEvaluationInterval": interval or autoscale_rules.DEFAULT_INTERVAL,
        },
        target,
    )
    with store.session() as s:
        pool = get_pool(s, pool_id)
        if "hostSelector" not in pool.spec:
            raise Conflict(
                "autoscale needs a pool that claims hosts by hostSelector; this one lists them",
                code="PoolNotResizable",
                target=target,
                field="enableAutoScale",
            )
        if interval is None and pool.spec.get("enableAutoScale"):  # keep the pool's interval
            settings["autoScaleEvaluationInterval"] = pool.spec["autoScaleEvaluationInterval"]
        _set_spec(pool, settings)
        pool.auto_scale_at = None  # evaluated at the controller's next look
        s.add(pool)
        return pool


def disable(store: Store, pool_id: str) -> Pool:
    """Turn autoscale off; the pool keeps its current target. Raises NotFound."""
    with store.session() as s:
        pool = get_pool(s, pool_id)
        _set_spec(pool, {})
        s.add(pool)
        return pool


def evaluate(store: Store, pool_id: str, formula: str) -> dict[str, Any]:
    """Evaluate ``formula`` against the pool as it is now (one sample of its metrics;
    the controller's history is not shared) and return Azure's AutoScaleRun plus every
    variable's value; nothing changes. Raises BadInput (the formula) or NotFound."""
    autoscale_rules.check_formula(formula, f"pool {pool_id}")
    now = time.time()
    with store.read() as s:
        pool = get_pool(s, pool_id)
        history = autoscale_rules.History()
        history.add(now, pool_metrics(s, pool_id, now - autoscale_rules.SAMPLE_PERIOD))
        outcome = autoscale_rules.evaluate(formula, history, pool_facts(s, pool), now)
    return {**outcome.run, "values": outcome.values}


def _set_spec(pool: Pool, settings: dict[str, Any]) -> None:
    spec = {k: v for k, v in pool.spec.items() if k not in autoscale_rules.FIELDS}
    pool.spec = spec | settings
    flag_modified(pool, "spec")


def pool_facts(s: Session, pool: Pool) -> PoolFacts:
    """Return the node count (not counting nodes leaving) and target of ``pool``."""
    current = s.execute(
        select(func.count())
        .select_from(Node)
        .where(col(Node.pool_id) == pool.id, col(Node.state) != NodeState.LEAVING_POOL)
    ).scalar_one()
    return PoolFacts(int(current), pool.target_dedicated_nodes)


def pool_metrics(s: Any, pool_id: str, since: float | None) -> dict[str, float]:
    """Return the task metrics of the active jobs of ``pool_id`` now (completed tasks:
    those that completed after ``since``)."""
    recent = _TASKS.c.end_time > (since if since is not None else time.time())
    rows = s.execute(
        select(
            _TASKS.c.state,
            _TASKS.c.result,
            _TASKS.c.deps_state.is_not(None),
            func.count(),
            func.coalesce(func.sum(_TASKS.c.required_slots), 0),
        )
        .join(_JOBS, _JOBS.c.id == _TASKS.c.job_id)
        .where(
            _JOBS.c.pool_id == pool_id,
            _JOBS.c.state == JobState.ACTIVE,
            (_TASKS.c.state != TaskState.COMPLETED) | recent,
        )
        .group_by(_TASKS.c.state, _TASKS.c.result, _TASKS.c.deps_state.is_not(None))
    ).all()
    return autoscale_rules.task_metrics(
        (state, result, bool(held), int(n), int(slots)) for state, result, held, n, slots in rows
    )


def pool_node_ids(s: Any, pool_id: str) -> list[str]:
    """Return the ids of the nodes of ``pool_id`` that are not leaving it."""
    return list(
        s.execute(
            select(col(Node.id)).where(
                col(Node.pool_id) == pool_id, col(Node.state) != NodeState.LEAVING_POOL
            )
        ).scalars()
    )
