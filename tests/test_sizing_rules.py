"""Pool sizing's pure rules (fleet/sizing_rules.py): data-driven cases
(tests/cases/sizing/*.json) and properties of growing and shrinking."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.domain import AllocationState, NodeState
from fleet.sizing_rules import NodeFacts, PoolFacts, SizingStep, removal_order, sizing_step

CASES = sorted((Path(__file__).parent / "cases" / "sizing").glob("*.json"))


def _facts(data: dict[str, Any]) -> PoolFacts:
    return PoolFacts(
        data["allocationState"],
        data["target"],
        tuple(NodeFacts(**n) for n in data["nodes"]),
        tuple(data.get("freeHosts", ())),
    )


def _step(data: dict[str, Any]) -> SizingStep:
    state = data.get("state")
    shortfall = data.get("shortfall")
    return SizingStep(
        claim=tuple(data.get("claim", ())),
        remove=tuple(data.get("remove", ())),
        state=AllocationState(state) if state else None,
        target=data.get("target"),
        shortfall=tuple(shortfall) if shortfall else None,  # type: ignore[arg-type]
    )


def test_there_are_cases():
    assert len(CASES) >= 10


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_sizing_case(path: Path) -> None:
    case = json.loads(path.read_text())
    assert sizing_step(_facts(case["facts"])) == _step(case["expect"]), case["description"]


_STATES = [s.value for s in NodeState if s != NodeState.LEAVING_POOL]
_nodes = st.lists(
    st.builds(
        NodeFacts,
        id=st.text("abcdefgh", min_size=1, max_size=3),
        state=st.sampled_from(_STATES),
        running=st.integers(0, 4),
        leaving=st.booleans(),
        busy=st.booleans(),
    ),
    max_size=8,
    unique_by=lambda n: n.id,
)


@given(
    nodes=_nodes,
    target=st.integers(0, 10),
    free=st.lists(st.sampled_from(["h1", "h2", "h3", "h4"]), unique=True),
)
def test_a_resize_never_overshoots_and_never_touches_a_leaving_node(nodes, target, free):
    facts = PoolFacts(AllocationState.RESIZING, target, tuple(nodes), tuple(free))
    step = sizing_step(facts)
    staying = [n for n in nodes if not n.leaving]
    assert not (step.claim and step.remove)
    assert len(staying) + len(step.claim) - len(step.remove) >= target or not step.remove
    assert len(staying) + len(step.claim) <= max(target, len(staying))
    by_id = {n.id: n for n in nodes}
    assert all(not by_id[i].leaving and not by_id[i].busy for i in step.remove)
    assert set(step.claim) <= set(free)
    if step.shortfall is not None:  # only when every free host was claimed
        assert step.claim == tuple(free) and step.state == AllocationState.STEADY


@given(nodes=_nodes)
def test_idle_nodes_leave_before_any_other(nodes):
    order = removal_order(nodes)
    idle = [i for i, n in enumerate(order) if n.state == NodeState.IDLE and not n.running]
    assert idle == list(range(len(idle)))  # all at the front
