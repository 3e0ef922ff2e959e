"""Validation of pool, job and task specs in Azure Batch's REST JSON shape.

Each ``parse_*`` function takes the user's object (camelCase, as Azure writes it)
and returns a normalized copy, or raises :class:`BadInput` naming the object, the
field path and the reason. Fields fleet does not support yet are reported by
name (``UnsupportedProperty``), never dropped silently; read-only properties
(``spec_fields.READ_ONLY``) are accepted and ignored.

The normalized copy is itself valid input in Azure's exact shape, and parsing it
again returns it unchanged: it is what ``show`` prints (with the read-only
properties added) and what an update merges its changes into.
"""

from __future__ import annotations

from typing import Any

from fleet import autoscale_rules, dependencies, durations, exit_conditions, file_specs
from fleet.domain import FillType
from fleet.errors import BadInput
from fleet.spec_fields import (  # noqa: F401 (re-exported: callers use specs.constraint_seconds)
    ID_RE,
    READ_ONLY,
    check_fields,
    choice,
    constraint_seconds,
    duration,
    env_pairs,
    fail,
    int_in,
    parse_certificate_references,
    parse_command_line,
    parse_constraints,
    parse_env,
    parse_package_references,
    parse_user_accounts,
    parse_user_identity,
    retry_count,
    typed,
    validate_id,
)

MAX_TASKS_PER_ADD = 100
#: Where a stored pool spec's userAccounts[] keeps its password: a secret store id.
PASSWORD_SECRET = "passwordSecretId"  # noqa: S105 (a field name, not a password)
RELEASE_LIMIT_SECONDS = 15 * 60

#: Accepted so Azure specs load unchanged, kept in the spec, with no effect yet or ever.
_ACCEPTED_POOL = {"vmSize", "virtualMachineConfiguration", "metadata"}

POOL_FIELDS = {
    "id",
    "displayName",
    "hosts",
    "taskSlotsPerNode",
    "maxTasksPerNode",
    "taskSchedulingPolicy",
    "startTask",
    "userAccounts",
    "certificateReferences",
    "enableInterNodeCommunication",
    "applicationPackageReferences",
    "targetDedicatedNodes",
    *autoscale_rules.FIELDS,
    "targetLowPriorityNodes",
    "hostSelector",
    "resizeTimeout",
} | _ACCEPTED_POOL
#: The most nodes a pool may be sized to (a sanity bound, far above any inventory).
MAX_TARGET_NODES = 100_000

JOB_FIELDS = {
    "id",
    "displayName",
    "poolInfo",
    "priority",
    "metadata",
    "maxParallelTasks",
    "constraints",
    "commonEnvironmentSettings",
    "onAllTasksComplete",
    "onTaskFailure",
    "usesTaskDependencies",
    "jobPreparationTask",
    "jobReleaseTask",
    "jobManagerTask",
}

TASK_FIELDS = {
    "id",
    "displayName",
    "commandLine",
    "environmentSettings",
    "requiredSlots",
    "constraints",
    "exitConditions",
    "dependsOn",
    "resourceFiles",
    "outputFiles",
    "userIdentity",
    "multiInstanceSettings",
    "applicationPackageReferences",
}

#: Azure's JobManagerTask: a task without dependencies, exit conditions or instances.
JOB_MANAGER_FIELDS = (
    TASK_FIELDS
    - {"dependsOn", "exitConditions", "multiInstanceSettings", "applicationPackageReferences"}
) | {
    "killJobOnCompletion",
    "runExclusive",
    "allowLowPriorityNode",
}


def parse_start_task(value: Any, target: str) -> dict[str, Any] | None:
    """Return a normalized ``startTask`` or None when absent."""
    if value is None:
        return None
    allowed = {
        "commandLine",
        "environmentSettings",
        "waitForSuccess",
        "maxTaskRetryCount",
        "userIdentity",
    }
    check_fields(value, target, "startTask", "startTask", allowed)
    return {
        "commandLine": parse_command_line(
            value.get("commandLine"), target, "startTask.commandLine"
        ),
        "environmentSettings": parse_env(
            value.get("environmentSettings"), target, "startTask.environmentSettings"
        ),
        "waitForSuccess": typed(value, "waitForSuccess", bool, target, "startTask", True),
        "maxTaskRetryCount": retry_count(value, target, "startTask"),
        "userIdentity": parse_user_identity(
            value.get("userIdentity"), target, "startTask.userIdentity"
        ),
    }


def _host_selection(data: dict[str, Any], target: str) -> dict[str, Any]:
    """Return how the pool claims hosts: ``{"hosts": [...]}`` (one node per listed host) or
    ``{"hostSelector": {"labels": {...}}, "targetDedicatedNodes": N}`` (up to N free hosts
    whose labels include every selector label). Exactly one of the two is given;
    ``targetLowPriorityNodes`` is accepted as 0 only (every fleet node is dedicated)."""
    low = typed(data, "targetLowPriorityNodes", int, target)
    if low not in (None, 0):
        raise fail(
            target,
            "targetLowPriorityNodes",
            f"targetLowPriorityNodes must be 0 or left out: fleet has dedicated nodes only, "
            f"got {low}",
        )
    has_hosts, has_selector = data.get("hosts") is not None, data.get("hostSelector") is not None
    if has_hosts and has_selector:
        raise fail(
            target,
            "hostSelector",
            "give either hosts or hostSelector, not both",
            "ConflictingProperties",
        )
    if has_selector:
        return _parse_selector(data, target)
    hosts = typed(data, "hosts", list, target)
    if hosts is None:
        raise fail(
            target,
            "hosts",
            "give hosts (a list of host ids) or hostSelector",
            "MissingRequiredProperty",
        )
    if not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise fail(target, "hosts", "hosts must be a non-empty list of host ids")
    if len(set(hosts)) != len(hosts):
        raise fail(target, "hosts", "hosts lists a host twice")
    wanted = typed(data, "targetDedicatedNodes", int, target)
    if wanted is not None and wanted != len(hosts):
        raise fail(
            target,
            "targetDedicatedNodes",
            f"targetDedicatedNodes must be {len(hosts)} or left out: a pool with a hosts list "
            "has one node per host (size a pool with hostSelector instead)",
        )
    return {"hosts": list(hosts)}


def _parse_selector(data: dict[str, Any], target: str) -> dict[str, Any]:
    selector = typed(data, "hostSelector", dict, target)
    check_fields(selector, target, "hostSelector", "hostSelector", {"labels"})
    labels = typed(selector, "labels", dict, target, "hostSelector", required=True)
    for key, value in labels.items():
        if not key or not isinstance(value, str):
            raise fail(
                target,
                f"hostSelector.labels.{key}",
                f"a selector label needs a non-empty name and a string value, got {key!r}: {value!r}",
            )
    count = int_in(data, "targetDedicatedNodes", target, 0, MAX_TARGET_NODES, 0)
    return {"hostSelector": {"labels": dict(sorted(labels.items()))}, "targetDedicatedNodes": count}


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Return whether a host with ``labels`` matches a normalized ``hostSelector``: every
    selector label is one of the host's, with the same value."""
    return all(labels.get(k) == v for k, v in selector["labels"].items())


def parse_pool(data: Any) -> dict[str, Any]:
    """Return a normalized pool spec: id, displayName, hosts or hostSelector with
    targetDedicatedNodes, taskSlotsPerNode, taskSchedulingPolicy, startTask, userAccounts,
    enableInterNodeCommunication, resizeTimeout (when given) and the Azure fields kept as
    given (vmSize, virtualMachineConfiguration, metadata)."""
    pid = validate_id("pool", data.get("id") if isinstance(data, dict) else None)
    target = f"pool {pid}"
    check_fields(data, target, "", "pool", POOL_FIELDS)
    selection = _host_selection(data, target)
    resize_timeout = duration(data, "resizeTimeout", target, "")
    slots = int_in(
        data,
        "taskSlotsPerNode",
        target,
        1,
        256,
        typed(data, "maxTasksPerNode", int, target, default=1),
    )
    policy = typed(data, "taskSchedulingPolicy", dict, target, default={})
    check_fields(policy, target, "taskSchedulingPolicy", "policy", {"nodeFillType"})
    fill = typed(policy, "nodeFillType", str, target, "taskSchedulingPolicy", "spread")
    if fill.lower() not in set(FillType):
        raise fail(
            target,
            "taskSchedulingPolicy.nodeFillType",
            f"nodeFillType must be 'spread' or 'pack', got {fill!r}",
        )
    out = {k: data[k] for k in sorted(_ACCEPTED_POOL) if k in data}
    out.update(
        id=pid,
        displayName=typed(data, "displayName", str, target),
        **selection,
        taskSlotsPerNode=slots,
        taskSchedulingPolicy={"nodeFillType": fill.lower()},
        startTask=parse_start_task(data.get("startTask"), target),
        userAccounts=parse_user_accounts(data.get("userAccounts"), target),
        certificateReferences=parse_certificate_references(
            data.get("certificateReferences"), target
        ),
        enableInterNodeCommunication=typed(
            data, "enableInterNodeCommunication", bool, target, default=False
        ),
        applicationPackageReferences=parse_package_references(
            data.get("applicationPackageReferences"), target
        ),
    )
    if resize_timeout is not None:
        out["resizeTimeout"] = resize_timeout
    out.update(autoscale_rules.parse_settings(data, target))
    if out.get("enableAutoScale") and "hostSelector" not in out:
        raise fail(
            target,
            "enableAutoScale",
            "autoscale needs hostSelector: a pool of listed hosts cannot grow or shrink",
        )
    start_user = ((out["startTask"] or {}).get("userIdentity") or {}).get("username")
    if start_user and start_user not in {a["name"] for a in out["userAccounts"]}:
        raise fail(
            target,
            "startTask.userIdentity.username",
            f"user {start_user!r} is not one of the pool's userAccounts",
        )
    return out


def parse_job_manager_task(value: Any, target: str) -> dict[str, Any] | None:
    """Return a normalized ``jobManagerTask`` (Azure's shape: a task spec with
    ``killJobOnCompletion`` and ``runExclusive``, both true by default), or None."""
    if value is None:
        return None
    check_fields(value, target, "jobManagerTask", "jobManagerTask", JOB_MANAGER_FIELDS)
    try:
        task = parse_task(
            {k: v for k, v in value.items() if k in TASK_FIELDS}
            | {"id": value.get("id", "jobmanager")},
            target.removeprefix("job "),
        )
    except BadInput as exc:  # name the field as the job spec has it
        field = f"jobManagerTask.{exc.field}" if exc.field else "jobManagerTask"
        raise fail(target, field, exc.message, exc.code) from None
    manager = {k: v for k, v in task.items() if k in JOB_MANAGER_FIELDS and v is not None}
    manager["killJobOnCompletion"] = typed(
        value, "killJobOnCompletion", bool, target, "jobManagerTask", default=True
    )
    manager["runExclusive"] = typed(
        value, "runExclusive", bool, target, "jobManagerTask", default=True
    )
    low_priority = typed(value, "allowLowPriorityNode", bool, target, "jobManagerTask")
    if low_priority is not None:  # accepted as Azure writes it; every node is dedicated
        manager["allowLowPriorityNode"] = low_priority
    return manager


def parse_job_preparation_task(value: Any, target: str) -> dict[str, Any] | None:
    """Return a normalized ``jobPreparationTask`` or None."""
    if value is None:
        return None
    allowed = {
        "id",
        "commandLine",
        "environmentSettings",
        "constraints",
        "waitForSuccess",
        "rerunOnNodeRebootAfterSuccess",
    }
    path = "jobPreparationTask"
    check_fields(value, target, path, path, allowed)
    return {
        "id": validate_id(path, value.get("id", "jobpreparation")),
        "commandLine": parse_command_line(value.get("commandLine"), target, f"{path}.commandLine"),
        "environmentSettings": parse_env(
            value.get("environmentSettings"), target, f"{path}.environmentSettings"
        ),
        "constraints": parse_constraints(value.get("constraints"), target, task=True),
        "waitForSuccess": typed(value, "waitForSuccess", bool, target, path, default=True),
        "rerunOnNodeRebootAfterSuccess": typed(
            value, "rerunOnNodeRebootAfterSuccess", bool, target, path, default=True
        ),
    }


def parse_job_release_task(value: Any, target: str) -> dict[str, Any] | None:
    """Return a normalized ``jobReleaseTask``: as in Azure, ``maxWallClockTime`` (at most
    15 minutes, the default) and ``retentionTime`` sit at its top level."""
    if value is None:
        return None
    path = "jobReleaseTask"
    allowed = {"id", "commandLine", "environmentSettings", "maxWallClockTime", "retentionTime"}
    check_fields(value, target, path, path, allowed)
    limit = duration(value, "maxWallClockTime", target, path) or "PT15M"
    if (durations.parse(limit) or 0) > RELEASE_LIMIT_SECONDS:
        raise fail(
            target,
            f"{path}.maxWallClockTime",
            "a job release task may run for 15 minutes at most (PT15M)",
        )
    out = {
        "id": validate_id(path, value.get("id", "jobrelease")),
        "commandLine": parse_command_line(value.get("commandLine"), target, f"{path}.commandLine"),
        "environmentSettings": parse_env(
            value.get("environmentSettings"), target, f"{path}.environmentSettings"
        ),
        "maxWallClockTime": limit,
    }
    retention = duration(value, "retentionTime", target, path)
    if retention is not None:
        out["retentionTime"] = retention
    return out


def parse_job(data: Any) -> dict[str, Any]:
    """Return a normalized job spec: id, displayName, poolInfo.poolId, priority,
    maxParallelTasks, constraints, commonEnvironmentSettings, onAllTasksComplete,
    onTaskFailure, usesTaskDependencies, its job manager, preparation and release
    tasks, and metadata."""
    jid = validate_id("job", data.get("id") if isinstance(data, dict) else None)
    target = f"job {jid}"
    check_fields(data, target, "", "job", JOB_FIELDS)
    pool_info = parse_pool_info(typed(data, "poolInfo", dict, target, required=True), target)
    prep = parse_job_preparation_task(data.get("jobPreparationTask"), target)
    release = parse_job_release_task(data.get("jobReleaseTask"), target)
    if release is not None and prep is None:
        raise fail(
            target,
            "jobReleaseTask",
            "a jobReleaseTask needs a jobPreparationTask (as in Azure Batch)",
        )
    max_parallel = int_in(data, "maxParallelTasks", target, -1, 1_000_000, -1)
    if max_parallel == 0:
        raise fail(target, "maxParallelTasks", "maxParallelTasks must be -1 (no limit) or >= 1")
    return {
        "id": jid,
        "displayName": typed(data, "displayName", str, target),
        "poolInfo": pool_info,
        "priority": int_in(data, "priority", target, -1000, 1000, 0),
        "maxParallelTasks": max_parallel,
        "constraints": parse_constraints(data.get("constraints"), target, task=False),
        "commonEnvironmentSettings": parse_env(
            data.get("commonEnvironmentSettings"), target, "commonEnvironmentSettings"
        ),
        "onAllTasksComplete": choice(
            data, "onAllTasksComplete", target, ("noaction", "terminatejob")
        ),
        "usesTaskDependencies": typed(data, "usesTaskDependencies", bool, target, default=False),
        "jobManagerTask": parse_job_manager_task(data.get("jobManagerTask"), target),
        "jobPreparationTask": prep,
        "jobReleaseTask": release,
        "onTaskFailure": choice(
            data, "onTaskFailure", target, ("noaction", "performexitoptionsjobaction")
        ),
        "metadata": typed(data, "metadata", list, target, default=[]),
    }


#: The id an auto pool's spec is checked under (the real one is made when it is created).
AUTO_POOL_TEMPLATE_ID = "autopool-template"
AUTO_POOL_FIELDS = {"autoPoolIdPrefix", "poolLifetimeOption", "keepAlive", "pool"}


def parse_pool_info(value: dict[str, Any], target: str) -> dict[str, Any]:
    """Return normalized ``poolInfo``: ``{"poolId"}``, or ``{"autoPoolSpecification"}``
    whose ``pool`` is a pool spec without its id (fleet creates the pool, and names it
    ``<autoPoolIdPrefix>_<uuid>``, when the job or the schedule's first job starts)."""
    check_fields(value, target, "poolInfo", "poolInfo", {"poolId", "autoPoolSpecification"})
    if ("poolId" in value) == ("autoPoolSpecification" in value):
        raise fail(
            target, "poolInfo", "poolInfo needs exactly one of poolId and autoPoolSpecification"
        )
    if "poolId" in value:
        return {"poolId": validate_id("pool", value["poolId"])}
    path = "poolInfo.autoPoolSpecification"
    auto = value["autoPoolSpecification"]
    check_fields(auto, target, path, "autoPoolSpecification", AUTO_POOL_FIELDS)
    prefix = typed(auto, "autoPoolIdPrefix", str, target, path)
    if prefix is not None and (len(prefix) > 20 or not ID_RE.fullmatch(prefix)):
        raise fail(
            target,
            f"{path}.autoPoolIdPrefix",
            "autoPoolIdPrefix must be 1-20 letters, digits, hyphens or underscores",
        )
    lifetime = typed(auto, "poolLifetimeOption", str, target, path, required=True)
    if lifetime not in ("job", "jobschedule"):
        raise fail(
            target,
            f"{path}.poolLifetimeOption",
            f"poolLifetimeOption must be 'job' or 'jobschedule', got {lifetime!r}",
        )
    pool = typed(auto, "pool", dict, target, path, required=True)
    if "id" in pool:
        raise fail(target, f"{path}.pool.id", "an auto pool is named by fleet: leave id out")
    if any("password" in a for a in pool.get("userAccounts") or [] if isinstance(a, dict)):
        raise fail(
            target,
            f"{path}.pool.userAccounts",
            "an auto pool's user accounts cannot have passwords (the job would keep them in "
            "clear); create the pool with fleet pool create, or use SSH keys",
            code="UnsupportedProperty",
        )
    try:
        parsed = parse_pool(pool | {"id": AUTO_POOL_TEMPLATE_ID})
    except BadInput as exc:
        field = f"{path}.pool.{exc.field}" if exc.field else f"{path}.pool"
        raise BadInput(exc.message, code=exc.code, target=target, field=field) from None
    del parsed["id"]
    out = {"autoPoolIdPrefix": prefix} if prefix is not None else {}
    out |= {
        "poolLifetimeOption": lifetime,
        "keepAlive": typed(auto, "keepAlive", bool, target, path, default=False),
        "pool": request_fields("pool", parsed),
    }
    return {"autoPoolSpecification": out}


def parse_multi_instance(value: Any, target: str) -> dict[str, Any] | None:
    """Return normalized ``multiInstanceSettings`` (``numberOfInstances``,
    ``coordinationCommandLine``, ``commonResourceFiles``) or None."""
    if value is None:
        return None
    path = "multiInstanceSettings"
    check_fields(
        value,
        target,
        path,
        path,
        {"numberOfInstances", "coordinationCommandLine", "commonResourceFiles"},
    )
    return {
        "numberOfInstances": int_in(value, "numberOfInstances", target, 1, 1000, 1, path),
        "coordinationCommandLine": parse_command_line(
            value.get("coordinationCommandLine"), target, f"{path}.coordinationCommandLine"
        ),
        "commonResourceFiles": file_specs.parse_resource_files(
            value.get("commonResourceFiles"), target
        ),
    }


def parse_task(data: Any, job_id: str) -> dict[str, Any]:
    """Return a normalized task spec: id, displayName, commandLine, environmentSettings,
    requiredSlots, constraints, exitConditions, dependsOn, resourceFiles, outputFiles,
    userIdentity and multiInstanceSettings."""
    tid = validate_id("task", data.get("id") if isinstance(data, dict) else None)
    target = f"task {job_id}/{tid}"
    check_fields(data, target, "", "task", TASK_FIELDS)
    if data.get("multiInstanceSettings") and data.get("applicationPackageReferences"):
        raise fail(
            target,
            "applicationPackageReferences",
            "applicationPackageReferences of a multi-instance task are not supported yet "
            "(give them to the pool)",
            code="UnsupportedProperty",
        )
    return {
        "id": tid,
        "displayName": typed(data, "displayName", str, target),
        "commandLine": parse_command_line(data.get("commandLine"), target),
        "environmentSettings": parse_env(data.get("environmentSettings"), target),
        "requiredSlots": int_in(data, "requiredSlots", target, 1, 256, 1),
        "constraints": parse_constraints(data.get("constraints"), target, task=True),
        "exitConditions": exit_conditions.parse_exit_conditions(data.get("exitConditions"), target),
        "dependsOn": dependencies.parse_depends_on(data.get("dependsOn"), target),
        "resourceFiles": file_specs.parse_resource_files(data.get("resourceFiles"), target),
        "outputFiles": file_specs.parse_output_files(data.get("outputFiles"), target),
        "userIdentity": parse_user_identity(data.get("userIdentity"), target),
        "multiInstanceSettings": parse_multi_instance(data.get("multiInstanceSettings"), target),
        "applicationPackageReferences": parse_package_references(
            data.get("applicationPackageReferences"), target
        ),
    }


def parse_task_collection(
    data: Any, job_id: str, limit: int | None = MAX_TASKS_PER_ADD
) -> list[dict[str, Any]]:
    """Return normalized task specs from one task object, a list of them, or
    ``{"value": [...]}`` (Azure's addcollection body); at most ``limit`` (None: any number).

    Raises BadInput for the first bad task in order: the error's ``details["index"]``
    is its position, and a task without a valid id is named by that position.
    ``DuplicateTaskId`` names the second task that uses an id; ``TooManyTasks``.
    """
    items: Any = data
    if isinstance(data, dict):
        items = data["value"] if set(data) == {"value"} else [data]
    if not isinstance(items, list) or not items:
        raise BadInput(
            "expected a task object or a non-empty list of them",
            code="InvalidPropertyValue",
            target=f"job {job_id}",
        )
    if limit is not None and len(items) > limit:
        raise BadInput(
            f"at most {limit} tasks can be added at once, got {len(items)}",
            code="TooManyTasks",
            target=f"job {job_id}",
        )
    tasks = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        try:
            task = parse_task(item, job_id)
        except BadInput as exc:
            raise at_index(exc, i, len(items), job_id) from None
        if task["id"] in seen:
            raise at_index(
                BadInput(
                    f"task id {task['id']!r} appears twice in the collection",
                    code="DuplicateTaskId",
                    target=f"task {job_id}/{task['id']}",
                    field="id",
                ),
                i,
                len(items),
                job_id,
            )
        seen.add(task["id"])
        tasks.append(task)
    return tasks


def at_index(exc: BadInput, index: int, count: int, job_id: str) -> BadInput:
    """Return ``exc`` about the task at ``index`` of a collection of ``count``: its
    ``details["index"]`` set, its message saying where, and a target naming the position
    when the task had no valid id to name it by."""
    exc.details = {**exc.details, "index": index}
    if count > 1:
        exc.message = f"{exc.message} (the task at index {index} of {count})"
        exc.args = (exc.message,)
    if exc.target == "task":  # validate_id could not name it
        exc.target = f"task {job_id}/[{index}]"
    return exc


def request_fields(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Return the properties of a normalized ``kind`` spec that ``show`` prints: those that
    are valid input, without empty values (parsing fills them in again)."""
    fields = {"pool": POOL_FIELDS, "job": JOB_FIELDS, "task": TASK_FIELDS}[kind]
    out = {k: v for k, v in spec.items() if k in fields and v is not None and v != [] and v != {}}
    if out.get("userAccounts"):  # a password is never printed, nor its secret's id
        out["userAccounts"] = [
            {k: v for k, v in a.items() if k not in ("password", PASSWORD_SECRET)}
            for a in out["userAccounts"]
        ]
    return out
