"""The controller's pure rules (fleet/rules.py), case by case: facts in, changes out."""

from __future__ import annotations

from typing import Any

import pytest

from fleet import rules, task_stats
from fleet.domain import JobState, TaskState

NOW = 1_000_000.0
OK = {"exitCode": 0, "startTime": "1970-01-12T13:46:30Z", "endTime": "1970-01-12T13:46:39Z"}
FAIL = {"exitCode": 3}
RETRY_ONCE = {"constraints": {"maxTaskRetryCount": 1}}
MANAGER = {"jobManager": {"killJobOnCompletion": True, "runExclusive": True}}
ON_FAILURE = {"onTaskFailure": "performexitoptionsjobaction"}
EXIT_3 = {"exitConditions": {"exitCodes": [{"code": 3, "exitOptions": {"jobAction": "disable"}}]}}
TERMINATE_ON_FAIL = {"exitConditions": {"default": {"jobAction": "terminate"}}}


def _task(spec: dict[str, Any] | None = None, retries: int = 0) -> rules.TaskFacts:
    return rules.TaskFacts(spec or {}, retry_count=retries, requeue_count=2, start_time=5.0)


def _job(state: str = JobState.ACTIVE, **spec: Any) -> rules.JobFacts:
    return rules.JobFacts(state, spec, created_at=NOW - 100)


# (case, task, job, record, meaning, end reason) -> (task fields expected, job fields expected)
EXIT_CASES = [
    ("success", _task(), _job(), OK, None, None,
     {"state": TaskState.COMPLETED, "result": "success", "exit_code": 0,
      "retry_count": None, "start_time": 999990.0}, {}),
    ("failure with a retry left is retried", _task(RETRY_ONCE), _job(), FAIL, None, None,
     {"state": TaskState.ACTIVE, "retry_count": 1, "last_retry_time": NOW, "node_id": None}, {}),
    ("failure with retries used up completes failed", _task(RETRY_ONCE, retries=1), _job(),
     FAIL, None, None, {"state": TaskState.COMPLETED, "result": "failure", "exit_code": 3}, {}),
    ("the job's retry count applies when the task has none", _task(),
     _job(constraints={"maxTaskRetryCount": 2}), FAIL, None, None,
     {"state": TaskState.ACTIVE, "retry_count": 1}, {}),
    ("flagged requeue counts a requeue, never a retry", _task(RETRY_ONCE), _job(), FAIL,
     "requeue", None,
     {"state": TaskState.ACTIVE, "requeue_count": 3, "last_requeue_time": NOW,
      "retry_count": None}, {}),
    ("terminated by fleet fails with TaskEnded and is not retried", _task(RETRY_ONCE), _job(),
     FAIL, "terminate", "the task was terminated by a user",
     {"state": TaskState.COMPLETED, "result": "failure"}, {}),
    ("a job manager that completes ends its job", _task(MANAGER), _job(), OK, None, None,
     {"state": TaskState.COMPLETED, "token_hash": None},
     {"state": JobState.TERMINATING, "termination_reason": "JMComplete"}),
    ("a job manager of a job no longer active changes nothing", _task(MANAGER),
     _job(JobState.TERMINATING), OK, None, None, {"state": TaskState.COMPLETED}, {}),
    ("a failure's exit condition disables the job", _task(EXIT_3), _job(**ON_FAILURE), FAIL,
     None, None, {"state": TaskState.COMPLETED},
     {"state": JobState.DISABLING, "disable_tasks": "requeue", "termination_reason": None}),
    ("a failure's default exit option terminates the job", _task(TERMINATE_ON_FAIL),
     _job(**ON_FAILURE), FAIL, None, None, {"state": TaskState.COMPLETED},
     {"state": JobState.TERMINATING, "termination_reason": "TaskFailed"}),
    ("exit options are ignored without performexitoptionsjobaction", _task(TERMINATE_ON_FAIL),
     _job(), FAIL, None, None, {"state": TaskState.COMPLETED}, {}),
    ("a task fleet terminated takes no job action", _task(TERMINATE_ON_FAIL),
     _job(**ON_FAILURE), FAIL, "terminate", "ended", {"state": TaskState.COMPLETED}, {}),
    ("a command that never started is not retried", _task(RETRY_ONCE), _job(),
     {"exitCode": None, "error": {"code": "CommandProgramNotFound", "message": "no"}}, None,
     None, {"state": TaskState.COMPLETED, "result": "failure", "exit_code": None}, {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("task", "job", "record", "meaning", "reason", "want_task", "want_job"),
    [c[1:] for c in EXIT_CASES],
    ids=[c[0] for c in EXIT_CASES],
)
def test_exit(task, job, record, meaning, reason, want_task, want_job) -> None:
    change = rules.on_exit(task, job, record, NOW, meaning=meaning, end_reason=reason)
    assert not change.delete_task
    for name, value in want_task.items():
        assert change.task.get(name) == value, name
    for name, value in want_job.items():
        assert change.job.get(name) == value, name
    if not want_job:
        assert change.job == {}
    if change.task.get("state") == TaskState.COMPLETED:
        assert change.task["end_time"] == (999999.0 if record.get("endTime") else NOW)
    if meaning == "terminate":
        assert change.task["failure_info"]["code"] == "TaskEnded"


def test_an_exit_flagged_delete_deletes_the_task() -> None:
    assert rules.on_exit(_task(), _job(), OK, NOW, meaning="delete").delete_task


def test_exit_of_a_task_whose_job_is_gone_still_completes_it() -> None:
    change = rules.on_exit(_task(MANAGER), None, OK, NOW)
    assert change.task["state"] == TaskState.COMPLETED and change.job == {}


USED = {
    "userCPUSeconds": 1.5,
    "kernelCPUSeconds": 0.25,
    "wallClockSeconds": 3.0,
    "readBlocks": 8,
    "writeBlocks": 2056,
    "maxRSSBytes": 5 << 20,
}
EARLIER = task_stats.Usage(2.0, 1.0, 10.0, 100, 4, 9 << 20)


def _used(**changed: Any) -> dict[str, Any]:
    return {"stats": USED | changed}


FIRST = {
    "user_cpu_seconds": 1.5,
    "kernel_cpu_seconds": 0.25,
    "wall_clock_seconds": 3.0,
    "read_blocks": 8,
    "write_blocks": 2056,
    "max_rss_bytes": 5 << 20,
}
SUMMED = {
    "user_cpu_seconds": 3.5,
    "kernel_cpu_seconds": 1.25,
    "wall_clock_seconds": 13.0,
    "read_blocks": 108,
    "write_blocks": 2060,
    "max_rss_bytes": 9 << 20,
}

# (case, earlier totals, task spec, record, meaning) -> resource columns set (None: none)
STATS_CASES = [
    ("the first attempt's usage becomes the task's totals", None, {}, OK | _used(), None,
     FIRST),
    ("a retried attempt's usage adds to the totals; the peak is the larger", EARLIER,
     RETRY_ONCE, FAIL | _used(), None, SUMMED),
    ("a larger peak replaces the earlier one", EARLIER, {}, OK | _used(maxRSSBytes=10 << 20),
     None, SUMMED | {"max_rss_bytes": 10 << 20}),
    ("a requeued attempt's usage counts too", EARLIER, {}, FAIL | _used(), "requeue", SUMMED),
    ("a terminated attempt's usage counts", None, {}, FAIL | _used(), "terminate", FIRST),
    ("whole seconds are seconds", None, {}, OK | _used(userCPUSeconds=2), None,
     FIRST | {"user_cpu_seconds": 2.0}),
    ("a record without stats (an older agent) leaves the totals alone", EARLIER, {}, OK, None,
     None),
    ("a command that never started reports none", None, {},
     {"exitCode": None, "error": {"code": "CommandProgramNotFound", "message": "no"},
      "stats": None}, None, None),
    ("a negative value is not usage", None, {}, OK | _used(kernelCPUSeconds=-1.0), None, None),
    ("a count that is not whole is not usage", None, {}, OK | _used(readBlocks=1.5), None,
     None),
    ("a boolean is not a number", None, {}, OK | _used(maxRSSBytes=True), None, None),
    ("NaN is not a number", None, {}, OK | _used(wallClockSeconds=float("nan")), None, None),
    ("infinity is not usage", None, {}, OK | _used(userCPUSeconds=float("inf")), None, None),
    ("a count past 64 bits is not usage", None, {}, OK | _used(writeBlocks=1 << 63), None,
     None),
    ("a missing value is not usage", None, {}, {"exitCode": 0, "stats": {"readBlocks": 1}},
     None, None),
    ("stats that are not an object are ignored", None, {}, OK | {"stats": [1, 2]}, None,
     None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("earlier", "spec", "record", "meaning", "want"),
    [c[1:] for c in STATS_CASES],
    ids=[c[0] for c in STATS_CASES],
)
def test_exit_adds_the_attempts_usage_to_the_task(earlier, spec, record, meaning, want) -> None:
    task = rules.TaskFacts(spec, usage=earlier)
    change = rules.on_exit(task, _job(), record, NOW, meaning=meaning, end_reason="stop")
    got = {name: change.task[name] for name in task_stats.COLUMNS if name in change.task}
    if want is None:
        assert got == {} and "stats_time" not in change.task
        return
    assert got == want and change.task["stats_time"] == NOW
    for name in ("user_cpu_seconds", "kernel_cpu_seconds", "wall_clock_seconds"):
        assert type(got[name]) is float, name


# (case, job, running, releases done, tasks left, disable_tasks) -> step
STEP_CASES = [
    ("an active job with work waits", _job(), 2, False, True, None, rules.JobStep()),
    ("maxWallClockTime expired terminates",
     _job(constraints={"maxWallClockTime": "PT1M"}), 1, False, True, None,
     rules.JobStep(state=JobState.TERMINATING, reason="MaxWallClockTimeExpiry")),
    ("maxWallClockTime applies to a disabled job too",
     _job(JobState.DISABLED, constraints={"maxWallClockTime": "PT1M"}), 0, False, True, None,
     rules.JobStep(state=JobState.TERMINATING, reason="MaxWallClockTimeExpiry")),
    ("all tasks complete with terminatejob terminates",
     _job(onAllTasksComplete="terminatejob"), 0, False, False, None,
     rules.JobStep(state=JobState.TERMINATING, reason="AllTasksComplete")),
    ("all tasks complete with noaction waits", _job(), 0, False, False, None, rules.JobStep()),
    ("enabling becomes active", _job(JobState.ENABLING), 0, False, True, None,
     rules.JobStep(state=JobState.ACTIVE)),
    ("terminating ends its running attempts", _job(JobState.TERMINATING), 3, False, True, None,
     rules.JobStep(end="terminate", end_reason="the job was terminated (None)")),
    ("terminating waits for its release tasks", _job(JobState.TERMINATING), 0, False, True,
     None, rules.JobStep()),
    ("terminating completes once releases are done", _job(JobState.TERMINATING), 0, True, True,
     None, rules.JobStep(state=JobState.COMPLETED)),
    ("disabling with requeue requeues", _job(JobState.DISABLING), 2, False, True, "requeue",
     rules.JobStep(end="requeue")),
    ("disabling with terminate terminates", _job(JobState.DISABLING), 2, False, True,
     "terminate",
     rules.JobStep(end="terminate",
                   end_reason="the job was disabled with --disable-tasks terminate")),
    ("disabling with wait lets tasks finish", _job(JobState.DISABLING), 2, False, True, "wait",
     rules.JobStep()),
    ("disabling with nothing running is disabled", _job(JobState.DISABLING), 0, False, True,
     "wait", rules.JobStep(state=JobState.DISABLED)),
    ("deleting deletes its running attempts", _job(JobState.DELETING), 1, False, True, None,
     rules.JobStep(end="delete")),
    ("deleting waits for release tasks", _job(JobState.DELETING), 0, False, True, None,
     rules.JobStep()),
    ("deleting with releases done deletes the job", _job(JobState.DELETING), 0, True, True,
     None, rules.JobStep(delete_job=True)),
    ("a completed job does nothing", _job(JobState.COMPLETED), 0, True, False, None,
     rules.JobStep()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("job", "running", "releases_done", "tasks_left", "disable_tasks", "want"),
    [c[1:] for c in STEP_CASES],
    ids=[c[0] for c in STEP_CASES],
)
def test_job_step(job, running, releases_done, tasks_left, disable_tasks, want) -> None:
    got = rules.job_step(
        job,
        NOW,
        running=running,
        releases_done=releases_done,
        tasks_left=tasks_left,
        disable_tasks=disable_tasks,
    )
    assert got == want


def test_requeue_and_user_terminate_fields() -> None:
    back = rules.requeued(_task(retries=1), NOW)
    assert back["requeue_count"] == 3 and "retry_count" not in back
    assert back["state"] == TaskState.ACTIVE and back["node_id"] is None
    ended = rules.user_terminated(NOW, "stop")
    assert ended["failure_info"]["code"] == "TaskEnded" and ended["end_time"] == NOW


@pytest.mark.parametrize(
    ("status", "was_started", "want"),
    [
        ("exited", True, "collect"),
        ("running", True, "keep"),
        ("missing", True, "requeue"),  # it ran: a requeue, never a retry
        ("missing", False, "resend"),  # it never started: back to the queue uncounted
    ],
)
def test_attempt_on_a_node_that_came_back(status, was_started, want) -> None:
    assert rules.on_return(status, was_started) == want


@pytest.mark.parametrize(
    ("lost_for", "lost"), [(None, False), (0.0, False), (29.9, False), (30.0, True)]
)
def test_node_lost_after_the_grace_period(lost_for, lost) -> None:
    assert rules.node_lost(lost_for, 30.0) is lost


PREP_CASES = [
    ("success starts the held tasks", {"exitCode": 0}, 0, {},
     rules.PrepEnd(retry=False, state="succeeded", held="start")),
    ("failure with a retry left is retried", {"exitCode": 1}, 0,
     {"constraints": {"maxTaskRetryCount": 2}}, rules.PrepEnd(retry=True)),
    ("failure with retries used up requeues the held tasks", {"exitCode": 1}, 2,
     {"constraints": {"maxTaskRetryCount": 2}},
     rules.PrepEnd(retry=False, state="failed", held="requeue")),
    ("failure without waitForSuccess starts them anyway", {"exitCode": 1}, 0,
     {"waitForSuccess": False}, rules.PrepEnd(retry=False, state="failed", held="start")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("record", "retries", "spec", "want"),
    [c[1:] for c in PREP_CASES],
    ids=[c[0] for c in PREP_CASES],
)
def test_prep_task_end(record, retries, spec, want) -> None:
    assert rules.on_prep_end(record, retries, spec) == want
