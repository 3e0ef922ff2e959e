"""The service-defined variables and named constants a formula may use."""

from __future__ import annotations

from fleet.formula.values import TICKS_PER_SECOND, TimeInterval

TARGET_DEDICATED = "$TargetDedicatedNodes"
TARGET_LOW_PRIORITY = "$TargetLowPriorityNodes"
DEALLOCATION = "$NodeDeallocationOption"

#: Read-write service variables, in the order the results text lists them.
WRITABLE = (TARGET_DEDICATED, TARGET_LOW_PRIORITY, DEALLOCATION)
#: Older names Azure still accepts; the full name wins when a formula sets both.
WRITABLE_ALIASES = {"$TargetDedicated": TARGET_DEDICATED, "$TargetLowPriority": TARGET_LOW_PRIORITY}

#: Read-only variables with a sample history (GetSample and friends work on them). Azure's
#: metrics, plus fleet's $ActiveTaskSlots and $PendingTaskSlots.
SAMPLED = (
    "$CPUPercent",
    "$WallClockSeconds",
    "$MemoryBytes",
    "$DiskBytes",
    "$DiskReadBytes",
    "$DiskWriteBytes",
    "$DiskReadOps",
    "$DiskWriteOps",
    "$NetworkInBytes",
    "$NetworkOutBytes",
    "$SampleNodeCount",
    "$ActiveTasks",
    "$RunningTasks",
    "$PendingTasks",
    "$SucceededTasks",
    "$FailedTasks",
    "$PreemptedNodeCount",
    "$ActiveTaskSlots",
    "$PendingTaskSlots",
)

#: Read-only variables that are one number, and their value when the caller gives none.
PLAIN = {
    "$CurrentDedicatedNodes": 0.0,
    "$CurrentLowPriorityNodes": 0.0,
    "$UsableNodeCount": 0.0,
    "$TaskSlotsPerNode": 1.0,
}
PLAIN_ALIASES = {
    "$CurrentDedicated": "$CurrentDedicatedNodes",
    "$CurrentLowPriority": "$CurrentLowPriorityNodes",
}

READ_ONLY = frozenset(SAMPLED) | frozenset(PLAIN) | frozenset(PLAIN_ALIASES)
SERVICE = READ_ONLY | frozenset(WRITABLE) | frozenset(WRITABLE_ALIASES)

#: The values $NodeDeallocationOption takes; each is also a bare word in a formula.
DEALLOCATION_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")

_UNITS = {
    "Zero": 0,
    "100ns": 1,
    "Microsecond": 10,
    "Millisecond": 10_000,
    "Second": TICKS_PER_SECOND,
    "Minute": 60 * TICKS_PER_SECOND,
    "Hour": 3600 * TICKS_PER_SECOND,
    "Day": 86_400 * TICKS_PER_SECOND,
    "Week": 7 * 86_400 * TICKS_PER_SECOND,
    "Year": 365 * 86_400 * TICKS_PER_SECOND,
}
#: Named constants: the TimeInterval_* units and the deallocation options.
CONSTANTS: dict[str, TimeInterval | str] = {
    **{f"TimeInterval_{unit}": TimeInterval(float(ticks)) for unit, ticks in _UNITS.items()},
    **{option: option for option in DEALLOCATION_OPTIONS},
}
