"""Rows rendered as Azure Batch REST JSON (camelCase field names, ISO 8601 times)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fleet import specs, task_stats
from fleet.domain import NodeState
from fleet.durations import format_seconds

if TYPE_CHECKING:  # rows come from the ORM or, for reads, from fleet/reads.py
    from fleet.reads import Row
    from fleet.tables import Host, HostKey, Job, JobSchedule, Node, Pool, Subtask, Task


def iso(ts: float | None) -> str | None:
    """Return an epoch time as ISO 8601 UTC with a 'Z', or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def host(
    row: Host | Row, key: HostKey | Row | None = None, node: Node | Row | None = None
) -> dict[str, Any]:
    return _drop_none(
        {
            "id": row.id,
            "address": row.address,
            "port": row.port,
            "user": row.user,
            "keyFile": row.key_file,
            "labels": row.labels,
            "nodeRoot": row.node_root,
            "rdpPort": row.rdp_port,
            "hostKeyPolicy": row.host_key_policy,
            "hostKeyFingerprint": key.fingerprint if key else None,
            "poolId": node.pool_id if node else None,
            "source": row.source or None,
            "rebootCommand": row.reboot_command,
            "reimageCommand": row.reimage_command,
            "powerOnCommand": row.power_on_command,
            "powerOffCommand": row.power_off_command,
        }
    )


def node(row: Node | Row, address: str | None = None) -> dict[str, Any]:
    return _drop_none(
        {
            "id": row.id,
            "poolId": row.pool_id,
            "state": row.state,
            "schedulingState": row.scheduling_state,
            "stateTransitionTime": iso(row.state_changed_at),
            "lastBootTime": iso(row.last_boot_time),
            "ipAddress": address,
            "nodeRootDirectory": row.root,
            "startTaskInfo": row.start_task_info,
            "errors": row.errors or [],
        }
    )


def pool(row: Pool | Row, nodes: Sequence[Node | Row]) -> dict[str, Any]:
    """The pool as Azure's CloudPool: its spec (valid ``pool create`` input) and state.
    ``targetDedicatedNodes`` is the current target of a hostSelector pool (the spec keeps
    the one it was created with) and the number of hosts of a hosts-list pool."""
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n.state] = counts.get(n.state, 0) + 1
    spec = specs.request_fields("pool", row.spec)
    target = row.target_dedicated_nodes
    out = _drop_none(
        {
            "id": row.id,
            "displayName": spec.get("displayName"),
            "state": row.state,
            "allocationState": row.allocation_state,
            "allocationStateTransitionTime": iso(row.allocation_state_changed_at),
            "creationTime": iso(row.created_at),
            "stateTransitionTime": iso(row.state_changed_at),
            "currentDedicatedNodes": len(nodes),
            "currentLowPriorityNodes": 0,
            "targetLowPriorityNodes": 0,
            "resizeErrors": row.resize_errors or None,
            "autoScaleRun": row.auto_scale_run,
            "nodeCounts": {s: counts.get(s, 0) for s in NodeState if counts.get(s)},
        }
    )
    if target is None:
        target = len(row.spec.get("hosts", []))
    return out | spec | {"targetDedicatedNodes": target}


def job(
    row: Job | Row,
    counts: dict[str, int] | None = None,
    totals: task_stats.JobTotals | None = None,
) -> dict[str, Any]:
    """The job as Azure's CloudJob: its spec (valid ``job create`` input) and state, with
    ``stats`` when its tasks' ``totals`` and ``counts`` are given."""
    spec = specs.request_fields("job", row.spec)
    out = _drop_none(
        {
            "id": row.id,
            "displayName": spec.get("displayName"),
            "state": row.state,
            "creationTime": iso(row.created_at),
            "stateTransitionTime": iso(row.state_changed_at),
            "executionInfo": _drop_none(
                {
                    "startTime": iso(row.created_at),
                    "endTime": iso(row.end_time),
                    "poolId": row.pool_id,
                    "terminateReason": row.termination_reason,
                }
            ),
            "taskCounts": counts,
            "jobScheduleId": row.job_schedule_id,
            "stats": None
            if totals is None or counts is None
            else _job_stats(totals, counts, row.created_at),
        }
    )
    return out | spec


def task(row: Task | Row) -> dict[str, Any]:
    """The task as Azure's CloudTask: its spec (valid ``task create`` input) and state."""
    execution = _drop_none(
        {
            "startTime": iso(row.start_time),
            "endTime": iso(row.end_time),
            "exitCode": row.exit_code,
            "result": row.result,
            "retryCount": row.retry_count,
            "requeueCount": row.requeue_count,
            "lastRetryTime": iso(row.last_retry_time),
            "lastRequeueTime": iso(row.last_requeue_time),
            "failureInfo": row.failure_info,
        }
    )
    node_info = None
    if row.node_id:
        node_info = _drop_none(
            {
                "poolId": row.pool_id,
                "nodeId": row.node_id,
                "taskRootDirectory": row.task_root,
            }
        )
    spec = specs.request_fields("task", row.spec)
    out = _drop_none(
        {
            "id": row.id,
            "jobId": row.job_id,
            "displayName": spec.get("displayName"),
            "state": row.state,
            "commandLine": row.command_line,
            "creationTime": iso(row.created_at),
            "stateTransitionTime": iso(row.state_changed_at),
            # fleet's addition: why a task with dependsOn is not running yet
            "dependencyState": {"state": row.deps_state, "parentId": row.deps_parent}
            if row.deps_state
            else None,
            "executionInfo": execution,
            "nodeInfo": node_info,
            "stats": _task_stats(row),
        }
    )
    # the slots a job manager that runs exclusive really takes
    return out | spec | {"requiredSlots": row.required_slots}


def _task_stats(row: Task | Row) -> dict[str, Any] | None:
    """Azure's TaskStatistics of the task's whole life (``startTime`` is its creation), plus
    ``maxRSSBytes``; None until an attempt reported its usage. ``waitTime`` runs from its
    creation to its latest attempt's start."""
    usage = task_stats.of_row(row)
    if usage is None:
        return None
    wait = None if row.start_time is None else max(0.0, row.start_time - row.created_at)
    return _statistics(usage, row.created_at, row.stats_time, wait)


def _job_stats(
    totals: task_stats.JobTotals, counts: dict[str, int], created_at: float
) -> dict[str, Any]:
    """Azure's JobStatistics: its tasks' statistics summed, their largest ``maxRSSBytes``."""
    out = _statistics(totals.usage, created_at, totals.updated_at, totals.wait_seconds)
    if totals.updated_at is None:  # no task has reported: no peak to tell
        del out["maxRSSBytes"]
    return out | {
        "numSucceededTasks": counts["succeeded"],
        "numFailedTasks": counts["failed"],
        "numTaskRetries": totals.retries,
    }


def _statistics(
    usage: task_stats.Usage, start: float, updated: float | None, wait: float | None
) -> dict[str, Any]:
    gib = task_stats.BLOCK_BYTES / (1 << 30)
    return _drop_none(
        {
            "startTime": iso(start),
            "lastUpdateTime": iso(updated),
            "userCPUTime": format_seconds(usage.user_cpu_seconds),
            "kernelCPUTime": format_seconds(usage.kernel_cpu_seconds),
            "wallClockTime": format_seconds(usage.wall_clock_seconds),
            "readIOps": usage.read_blocks,
            "writeIOps": usage.write_blocks,
            "readIOGiB": usage.read_blocks * gib,
            "writeIOGiB": usage.write_blocks * gib,
            "waitTime": None if wait is None else format_seconds(wait),
            "maxRSSBytes": usage.max_rss_bytes,
        }
    )


def subtask(row: Subtask | Row) -> dict[str, Any]:
    """Azure's SubtaskInformation: one instance of a multi-instance task."""
    return _drop_none(
        {
            "id": row.instance,
            "nodeInfo": {"nodeId": row.node_id},
            "state": row.state,
            "exitCode": row.exit_code,
            "result": None
            if row.state != "completed"
            else ("failure" if row.failure_info else "success"),
            "failureInfo": row.failure_info,
            "startTime": iso(row.start_time),
            "endTime": iso(row.end_time),
        }
    )


def job_schedule(row: JobSchedule | Row) -> dict[str, Any]:
    """The schedule as Azure's CloudJobSchedule (valid ``job-schedule create`` input) with
    fleet's ``executionInfo.skippedRuns``."""
    spec = row.spec
    template = specs.request_fields("job", spec["jobSpecification"])
    return _drop_none(
        {
            "id": row.id,
            "displayName": spec.get("displayName"),
            "state": row.state,
            "creationTime": iso(row.created_at),
            "stateTransitionTime": iso(row.state_changed_at),
            "schedule": spec["schedule"],
            "jobSpecification": template,
            "metadata": spec.get("metadata") or None,
            "executionInfo": _drop_none(
                {
                    "nextRunTime": iso(row.next_run),
                    "recentJob": {"id": row.recent_job_id} if row.recent_job_id else None,
                    "endTime": iso(row.end_time),
                    "skippedRuns": list(row.skipped_runs or []),
                }
            ),
        }
    )


#: Azure's NodeCounts keys for fleet's node states, in Azure's order; ``deallocated``,
#: ``deallocating`` and ``upgradingOS`` are Azure states fleet's nodes are never in.
NODE_COUNT_KEYS: dict[str, str | None] = {
    "creating": NodeState.CREATING,
    "deallocated": None,
    "deallocating": None,
    "idle": NodeState.IDLE,
    "leavingPool": NodeState.LEAVING_POOL,
    "offline": NodeState.OFFLINE,
    "preempted": NodeState.PREEMPTED,
    "rebooting": NodeState.REBOOTING,
    "reimaging": NodeState.REIMAGING,
    "running": NodeState.RUNNING,
    "startTaskFailed": NodeState.START_TASK_FAILED,
    "starting": NodeState.STARTING,
    "unknown": NodeState.UNKNOWN,
    "unusable": NodeState.UNUSABLE,
    "upgradingOS": None,
    "waitingForStartTask": NodeState.WAITING_FOR_START_TASK,
}


def pool_node_counts(pool_id: str, counts: dict[str, int]) -> dict[str, Any]:
    """The node counts of a pool as Azure's PoolNodeCounts: ``dedicated`` counts every
    node (fleet's nodes are all dedicated) per state, with ``total``; ``lowPriority`` has
    the same keys, all 0. ``counts`` maps fleet's node states to how many nodes are in
    each."""
    dedicated = {
        key: counts.get(state, 0) if state else 0 for key, state in NODE_COUNT_KEYS.items()
    }
    dedicated["total"] = sum(counts.values())
    return {
        "poolId": pool_id,
        "dedicated": dedicated,
        "lowPriority": dict.fromkeys(dedicated, 0),
    }


def node_file(
    name: str, is_dir: bool, size: int, mtime: float | None, mode: int | None
) -> dict[str, Any]:
    """A file or directory under a node's fleet root as Azure's NodeFile: ``name``
    (relative to the root), ``isDirectory`` and ``properties`` (``contentLength``, 0 for
    a directory; ``lastModified``; ``fileMode`` in octal)."""
    props: dict[str, Any] = {"contentLength": 0 if is_dir else size}
    if mtime is not None:
        props["lastModified"] = iso(mtime)
    if mode is not None:
        props["fileMode"] = oct(mode & 0o7777)
    return {"name": name, "isDirectory": is_dir, "properties": props}
