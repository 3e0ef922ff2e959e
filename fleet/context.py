"""What the controller's pieces share: a narrow context, never the whole controller.

Each piece (task events, lifecycle, prep/release tasks, multi-instance runs, task calls,
schedules, the sweeps) gets a :class:`Context` and, where it needs another piece, that one
function passed in by the controller.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleet.attempts import Attempt
from fleet.settings import Settings
from fleet.store import Store

if TYPE_CHECKING:
    from fleet.node_link import NodeLink


@dataclass
class Outbox:
    """Attempt events gathered during a turn; fleet/task_events.py writes them in one
    transaction: starts (with their start time), exits (with their exit record and small
    output files), and attempts going back to the queue (requeued, or never started)."""

    started: list[tuple[Attempt, float]] = field(default_factory=list)
    finished: list[tuple[Attempt, dict[str, Any]]] = field(default_factory=list)
    back_to_queue: list[tuple[Attempt, bool]] = field(default_factory=list)
    #: the small files that came inline with exits, by (task pk, attempt), then file name
    outputs: dict[tuple[int, int], dict[str, bytes]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.started or self.finished or self.back_to_queue)


@dataclass
class Context:
    """The store and settings, the node links, the attempts in flight per node (by key),
    the outbox of attempt events, and how to run a step in the background and wake the
    loop."""

    store: Store
    settings: Settings
    links: dict[str, NodeLink]
    inflight: dict[str, dict[str, Attempt]]
    outbox: Outbox
    spawn: Callable[[Coroutine[Any, Any, Any]], None]
    wake: Callable[[], None]
