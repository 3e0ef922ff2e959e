"""The domain vocabulary: states and names shared by every layer (Azure Batch's spelling)."""

from __future__ import annotations

from enum import StrEnum


class PoolState(StrEnum):
    ACTIVE = "active"
    DELETING = "deleting"


class AllocationState(StrEnum):
    STEADY = "steady"
    RESIZING = "resizing"
    STOPPING = "stopping"


class NodeState(StrEnum):
    CREATING = "creating"
    STARTING = "starting"
    WAITING_FOR_START_TASK = "waitingforstarttask"
    START_TASK_FAILED = "starttaskfailed"
    IDLE = "idle"
    RUNNING = "running"
    REBOOTING = "rebooting"
    REIMAGING = "reimaging"
    LEAVING_POOL = "leavingpool"
    OFFLINE = "offline"
    UNUSABLE = "unusable"
    UNKNOWN = "unknown"
    PREEMPTED = "preempted"


#: Node states in which a node may be given tasks (free slots permitting).
SCHEDULABLE_NODE_STATES = frozenset({NodeState.IDLE, NodeState.RUNNING})


class NodeOperation(StrEnum):
    """What an admin asked of a node (fleet/service/node_ops.py); the controller carries it
    out once the node's running tasks are dealt with per its deallocation option."""

    REBOOT = "reboot"
    REIMAGE = "reimage"
    REMOVE = "remove"
    DISABLE_SCHEDULING = "disablescheduling"


#: Azure's ``nodeDeallocationOption``: what happens to a node's running tasks.
NODE_DEALLOCATION_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")
#: Azure's ``nodeDisableSchedulingOption``.
DISABLE_SCHEDULING_OPTIONS = ("requeue", "terminate", "taskcompletion")


class SchedulingState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class JobState(StrEnum):
    ACTIVE = "active"
    DISABLING = "disabling"
    DISABLED = "disabled"
    ENABLING = "enabling"
    TERMINATING = "terminating"
    COMPLETED = "completed"
    DELETING = "deleting"


class TaskState(StrEnum):
    ACTIVE = "active"
    PREPARING = "preparing"
    RUNNING = "running"
    COMPLETED = "completed"


class AttemptState(StrEnum):
    """Write-ahead marker of a task's current attempt."""

    DISPATCHING = "dispatching"
    RUNNING = "running"


class TaskResult(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


class FillType(StrEnum):
    SPREAD = "spread"
    PACK = "pack"
