"""What a finished attempt means for its task: retry, or complete with which result.

Pure logic over the exit record the agent wrote and the task's and job's specs.
Retries follow Azure Batch: a failed command exit is retried up to
``maxTaskRetryCount`` times (0 never, -1 without limit; the task's constraint
wins over the job's), and so is a timeout (its exit is the kill status); failures
before the command starts, upload failures and terminations are not retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Failures that happen before the command runs, or after it, which no retry can fix.
NOT_RETRIED = frozenset(
    {
        "CommandProgramNotFound",
        "CommandProgramNotExecutable",
        "ResourceFileDownloadError",
        "ApplicationPackageError",
        "FileUploadError",
        "UserIdentityError",
    }
)
PRE_PROCESSING = frozenset(
    {
        "CommandProgramNotFound",
        "CommandProgramNotExecutable",
        "ResourceFileDownloadError",
        "ApplicationPackageError",
        "UserIdentityError",
    }
)


@dataclass(frozen=True)
class Outcome:
    """The decision for one finished attempt."""

    retry: bool
    exit_code: int | None
    failure_info: dict[str, Any] | None

    @property
    def result(self) -> str:
        return "failure" if self.failure_info else "success"


def failure_info(
    record: dict[str, Any], terminated_reason: str | None = None
) -> dict[str, Any] | None:
    """Return Azure's ``failureInfo`` for an exit record, or None for a success.

    ``terminated_reason`` is set when fleet itself ended the task (a user's terminate,
    a job terminate or disable): the task then fails with ``TaskEnded``."""
    if terminated_reason:
        return {"category": "usererror", "code": "TaskEnded", "message": terminated_reason}
    error = record.get("error")
    if error:
        code = error.get("code") or "TaskFailed"
        category = "usererror" if code in PRE_PROCESSING | {"FileUploadError"} else "servererror"
        return {"category": category, "code": code, "message": error.get("message", "")}
    if record.get("timedOut"):
        return {
            "category": "servererror",
            "code": "TaskEnded",
            "message": "the task ran longer than its maxWallClockTime and was killed",
        }
    exit_code = record.get("exitCode")
    if exit_code != 0:
        return {
            "category": "usererror",
            "code": "FailureExitCode",
            "message": f"the task process exited with an unexpected exit code {exit_code}",
        }
    return None


def max_retries(task_spec: dict[str, Any], job_spec: dict[str, Any]) -> int:
    """Return the effective ``maxTaskRetryCount``: the task's, else the job's, else 0."""
    for spec in (task_spec, job_spec):
        value = (spec.get("constraints") or {}).get("maxTaskRetryCount")
        if value is not None:
            return int(value)
    return 0


def decide(
    record: dict[str, Any],
    *,
    retry_count: int,
    task_spec: dict[str, Any],
    job_spec: dict[str, Any],
    terminated_reason: str | None = None,
) -> Outcome:
    """Return whether to retry the task or complete it, with its exit code and failure."""
    failure = failure_info(record, terminated_reason)
    limit = max_retries(task_spec, job_spec)
    retry = (
        failure is not None
        and terminated_reason is None
        and failure["code"] not in NOT_RETRIED
        and (limit == -1 or retry_count < limit)
    )
    return Outcome(retry=retry, exit_code=record.get("exitCode"), failure_info=failure)
