"""The rules of pool sizing, pure: what a hostSelector pool that is ``resizing`` or
``stopping`` does next.

A resizing pool grows by claiming free hosts that match its selector, and shrinks by
asking nodes to leave (a REMOVE node operation with the pool's deallocation option):
idle nodes first, then those that cannot run tasks (``starttaskfailed``, ``unusable``,
``unknown``), then the others with the fewest running tasks. A node already leaving is
never chosen again, and a node under another operation (reboot, reimage) is not chosen.
The pool is ``steady`` once it has its target and no node is leaving; when too few hosts
match it takes what there is, goes ``steady`` and says why in ``resizeErrors``. A
stopping pool asks nothing more of its hosts and nodes (nodes leaving go on leaving),
takes the nodes it keeps as its target and goes ``steady``. fleet/pool_sizing.py reads
the facts and applies the step.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.domain import AllocationState, NodeState

#: Nodes that cannot run tasks: shrinking takes them right after the idle ones.
_UNFIT = frozenset({NodeState.START_TASK_FAILED, NodeState.UNUSABLE, NodeState.UNKNOWN})


@dataclass(frozen=True)
class NodeFacts:
    """What the rules read of one node: its state, how many tasks run on it, whether it
    is leaving the pool, and whether another operation (reboot, reimage) holds it."""

    id: str
    state: str
    running: int = 0
    leaving: bool = False
    busy: bool = False


@dataclass(frozen=True)
class PoolFacts:
    """What the rules read of a pool: its allocation state and target, its nodes, and the
    free hosts matching its selector (in the order to claim them; the rules claim from
    the front)."""

    allocation_state: str
    target: int
    nodes: tuple[NodeFacts, ...]
    free_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class SizingStep:
    """What to do now. ``claim``: hosts to make nodes of; ``remove``: nodes to ask to
    leave; ``state``: the pool's new allocation state (None: unchanged); ``target``: its
    new target (None: unchanged); ``shortfall``: (nodes wanted more, free hosts found)
    when too few free hosts match, for the pool's ``resizeErrors``."""

    claim: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    state: AllocationState | None = None
    target: int | None = None
    shortfall: tuple[int, int] | None = None


def removal_order(nodes: tuple[NodeFacts, ...] | list[NodeFacts]) -> list[NodeFacts]:
    """Return the nodes that may be asked to leave, the first to go first: idle, then
    unfit (starttaskfailed, unusable, unknown), then the rest by fewest running tasks;
    ties by id. Nodes leaving already or held by another operation are left out."""

    def rank(n: NodeFacts) -> tuple[int, int, str]:
        group = 0 if n.state == NodeState.IDLE and not n.running else 1 if n.state in _UNFIT else 2
        return group, n.running, n.id

    return sorted((n for n in nodes if not n.leaving and not n.busy), key=rank)


def sizing_step(facts: PoolFacts) -> SizingStep:
    """Return the next step of a pool whose allocation state is ``facts.allocation_state``."""
    staying = [n for n in facts.nodes if not n.leaving]
    any_leaving = len(staying) < len(facts.nodes)
    if facts.allocation_state == AllocationState.STOPPING:
        return SizingStep(state=AllocationState.STEADY, target=len(staying))
    if facts.allocation_state != AllocationState.RESIZING:
        return SizingStep()
    need = facts.target - len(staying)
    if need > 0:
        claim = tuple(facts.free_hosts[:need])
        if len(claim) < need:
            return SizingStep(
                claim=claim,
                state=AllocationState.STEADY,
                shortfall=(need, len(claim)),
            )
        return SizingStep(claim=claim, state=None if any_leaving else AllocationState.STEADY)
    if need < 0:
        remove = tuple(n.id for n in removal_order(staying)[:-need])
        return SizingStep(remove=remove)
    return SizingStep(state=None if any_leaving else AllocationState.STEADY)
