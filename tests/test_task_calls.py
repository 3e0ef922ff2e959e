"""The controller's rule for calls from tasks: a token counts only for its own task and
attempt, and only over the link of the node that attempt runs on."""

from __future__ import annotations

import pytest

from fleet.domain import TaskState
from fleet.errors import FleetError
from fleet.tables import Task
from fleet.task_calls import Caller, check_caller


def manager(**changes: object) -> Task:
    task = Task(job_id="a", id="manager", command_line="m", attempt=2, node_id="n1")
    task.state = TaskState.RUNNING
    for name, value in changes.items():
        setattr(task, name, value)
    return task


GOOD = Caller(token="tok", task_key="a/manager", attempt=2, node_id="n1")


def test_the_token_of_the_calling_task_on_its_node_is_honoured():
    assert check_caller(manager(), GOOD) == "a"


@pytest.mark.parametrize(
    ("holder", "caller"),
    [
        pytest.param(None, GOOD, id="no task holds the token"),
        pytest.param(manager(state=TaskState.COMPLETED), GOOD, id="the holder has completed"),
        pytest.param(manager(), Caller("", "a/manager", 2, "n1"), id="no token"),
        pytest.param(manager(), Caller("tok", "b/thief", 1, "n1"), id="another task called"),
        pytest.param(manager(), Caller("tok", "", None, "n1"), id="the agent named no task"),
        pytest.param(manager(), Caller("tok", "a/manager", 1, "n1"), id="an older attempt"),
        pytest.param(manager(), Caller("tok", "a/manager", 2, "n2"), id="over another node"),
    ],
)
def test_a_token_out_of_its_task_attempt_or_node_is_refused(holder, caller):
    with pytest.raises(FleetError) as refused:
        check_caller(holder, caller)
    assert refused.value.code == "InvalidToken"


def test_the_caller_is_read_from_the_agents_call_event():
    event = {"token": "tok", "taskKey": "a/manager", "attempt": 2, "op": "listTasks"}
    assert Caller.of("n1", event) == GOOD
    assert Caller.of("n1", {"token": "tok", "attempt": True}) == Caller("tok", "", None, "n1")
