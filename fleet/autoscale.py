"""The controller's autoscale: sample each autoscaled pool's task counts, evaluate its
formula every ``autoScaleEvaluationInterval``, record ``autoScaleRun`` and hand a new
target to pool sizing (fleet/service/pools.py ``set_target``; fleet/pool_sizing.py grows
and shrinks the pool). The rules are in fleet/autoscale_rules.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from fleet import autoscale_rules
from fleet.autoscale_rules import History
from fleet.domain import PoolState
from fleet.service.autoscale import pool_facts, pool_metrics, pool_node_ids
from fleet.service.pools import set_target
from fleet.sql import Sql, Statement
from fleet.tables import Pool

if TYPE_CHECKING:
    from fleet.context import Context

log = logging.getLogger(__name__)

#: What the once-a-second look reads of the active pools (autoscale is in their spec).
_ACTIVE_POOLS = Statement(
    "SELECT id, spec, auto_scale_at FROM pools WHERE state = :active", json_columns=["spec"]
)


class AutoScaler:
    """Samples and evaluations of the pools with ``enableAutoScale``. Node metrics
    (``$CPUPercent``, ``$MemoryBytes``) come from each node's agent, read in the
    background whenever a pool takes a sample (at most every 5 s); a sample uses the
    latest readings of its pool's nodes."""

    def __init__(self, ctx: Context) -> None:
        self.c = ctx
        self.histories: dict[str, History] = {}
        self.readings: dict[str, list[dict[str, int]]] = {}  # node -> its last two
        self._polled_at = 0.0

    def read(self, db: Sql) -> list[tuple[str, dict[str, Any], float | None]]:
        """Read the active pools with autoscale: id, spec, last evaluation (for :meth:`tick`)."""
        rows = db.rows(_ACTIVE_POOLS, {"active": PoolState.ACTIVE})
        return [(p.id, p.spec, p.auto_scale_at) for p in rows if p.spec.get("enableAutoScale")]

    def tick(self, pools: list[tuple[str, dict[str, Any], float | None]]) -> None:
        """Take the samples that are due and evaluate the formulas that are due, of the
        autoscaled ``pools`` (as :meth:`read` returned them)."""
        now = time.time()
        for pid in set(self.histories) - {p for p, _, _ in pools}:
            del self.histories[pid]  # autoscale disabled, or the pool deleted
        sampled = set()
        for pid, spec, at in pools:
            history = self.histories.setdefault(pid, History())
            evaluate = at is None or now - at >= autoscale_rules.interval_seconds(spec)
            if evaluate or history.due(now):
                sampled.add(pid)
                with self.c.store.read() as s:
                    values = pool_metrics(s, pid, history.taken_at)
                    nodes = pool_node_ids(s, pid)
                values |= autoscale_rules.node_metrics([self.readings.get(n, []) for n in nodes])
                history.add(now, values)
            if evaluate:
                self._evaluate(pid, spec["autoScaleFormula"], history, now)
        # Node readings for the next samples (a sample uses the latest ones there are).
        if sampled and now - self._polled_at >= autoscale_rules.MIN_INTERVAL_SECONDS:
            self._polled_at = now
            self.c.spawn(self._poll_nodes(sampled))

    async def _poll_nodes(self, pool_ids: set[str]) -> None:
        """Read the metrics of the ready nodes of ``pool_ids`` (a node that does not answer
        in time keeps its last readings)."""
        with self.c.store.read() as s:
            node_ids = [n for pid in pool_ids for n in pool_node_ids(s, pid)]
        links = [self.c.links[n] for n in node_ids if n in self.c.links]
        ready = [link for link in links if link.ready and link.agent is not None]
        answers = await asyncio.gather(
            *(link.agent.request("metrics", timeout=10) for link in ready if link.agent),
            return_exceptions=True,
        )
        for link, answer in zip(ready, answers, strict=True):
            if isinstance(answer, dict):
                self.readings[link.node_id] = [*self.readings.get(link.node_id, [])[-1:], answer]
        for gone in set(self.readings) - set(node_ids):
            del self.readings[gone]

    def _evaluate(self, pool_id: str, text: str, history: History, now: float) -> None:
        with self.c.store.session() as s:
            pool = s.get(Pool, pool_id)
            if pool is None or not pool.spec.get("enableAutoScale"):
                return
            facts = pool_facts(s, pool)
            outcome = autoscale_rules.evaluate(text, history, facts, now)
            pool.auto_scale_run, pool.auto_scale_at = outcome.run, now
            s.add(pool)
            if outcome.target is not None and outcome.target != facts.target_nodes:
                log.info("pool %s: autoscale asks for %d nodes", pool_id, outcome.target)
                set_target(s, pool, outcome.target, outcome.option, now)
            elif "error" in outcome.run:
                log.warning("pool %s: autoscale formula failed: %s", pool_id, outcome.run["error"])
        self.c.wake()
