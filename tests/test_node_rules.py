"""Node operations' pure rules (fleet/node_rules.py), case by case."""

from __future__ import annotations

import pytest

from fleet import node_rules
from fleet.domain import NodeState
from fleet.node_rules import NodeFacts, NodeStep

NOW, LIMIT = 1_000.0, 600.0

# (case, facts) -> step expected
STEP_CASES = [
    (
        "requeue ends the running attempts as requeued",
        NodeFacts("reboot", "requeue", None, 2),
        NodeStep(end="requeue"),
    ),
    (
        "terminate ends them as terminated",
        NodeFacts("reimage", "terminate", None, 1),
        NodeStep(end="terminate"),
    ),
    ("taskcompletion lets them finish", NodeFacts("reboot", "taskcompletion", None, 3), NodeStep()),
    ("retaineddata lets them finish too", NodeFacts("remove", "retaineddata", None, 1), NodeStep()),
    (
        "disable scheduling, drained: offline, done",
        NodeFacts("disablescheduling", "requeue", None, 0),
        NodeStep(state=NodeState.OFFLINE, done=True),
    ),
    (
        "disable with taskcompletion waits while tasks run",
        NodeFacts("disablescheduling", "taskcompletion", None, 1),
        NodeStep(),
    ),
    (
        "reboot, drained: rebooting, issued",
        NodeFacts("reboot", "taskcompletion", None, 0),
        NodeStep(state=NodeState.REBOOTING, issue=True),
    ),
    (
        "reimage, drained: reimaging, issued",
        NodeFacts("reimage", "requeue", None, 0),
        NodeStep(state=NodeState.REIMAGING, issue=True),
    ),
    (
        "remove, drained: leaving the pool, issued",
        NodeFacts("remove", "terminate", None, 0),
        NodeStep(state=NodeState.LEAVING_POOL, issue=True),
    ),
    (
        "an issued reboot waits for the host",
        NodeFacts("reboot", "requeue", NOW - 10, 0),
        NodeStep(),
    ),
    (
        "a reboot past the limit makes the node unusable",
        NodeFacts("reboot", "requeue", NOW - LIMIT - 1, 0),
        NodeStep(state=NodeState.UNUSABLE, done=True, error="NodeRebootTimedOut"),
    ),
    (
        "an issued reimage nobody carries out (a controller restart) is carried out again",
        NodeFacts("reimage", "requeue", NOW - 5, 0),
        NodeStep(state=NodeState.REIMAGING, issue=True),
    ),
    (
        "so is an issued removal",
        NodeFacts("remove", "requeue", NOW - 5, 0),
        NodeStep(state=NodeState.LEAVING_POOL, issue=True),
    ),
]


@pytest.mark.parametrize(("case", "facts", "expected"), STEP_CASES, ids=[c[0] for c in STEP_CASES])
def test_node_step(case: str, facts: NodeFacts, expected: NodeStep) -> None:
    assert node_rules.node_step(facts, NOW, LIMIT) == expected


# (case, operation, issued, boot seen, boot recorded) -> back
REBOOTED_CASES = [
    ("same boot id after the reboot was issued: not back", "reboot", True, "a", "a", False),
    ("a new boot id: back", "reboot", True, "b", "a", True),
    ("not issued yet: nothing to wait for", "reboot", False, "a", "a", True),
    ("no boot recorded: cannot tell, so back", "reboot", True, "a", None, True),
    ("a node not rebooting is back", "reimage", True, "a", "a", True),
]


@pytest.mark.parametrize(
    ("case", "operation", "issued", "seen", "recorded", "back"),
    REBOOTED_CASES,
    ids=[c[0] for c in REBOOTED_CASES],
)
def test_rebooted(
    case: str, operation: str, issued: bool, seen: str, recorded: str | None, back: bool
) -> None:
    assert node_rules.rebooted(operation, issued, seen, recorded) is back
