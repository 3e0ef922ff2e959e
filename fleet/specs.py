"""Validation of pool, job and task specs in Azure Batch's REST JSON shape.

Each ``parse_*`` function takes the user's object (camelCase, as Azure writes it)
and returns a normalized copy, or raises :class:`BadInput` naming the object, the
field path and the reason. Fields fleet does not support yet are reported by
name (``UnsupportedProperty``), never dropped silently.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from fleet import dependencies, durations, exit_conditions, file_specs
from fleet.domain import FillType
from fleet.errors import BadInput

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
MAX_TASKS_PER_ADD = 100

#: Accepted so Azure specs load unchanged, kept in the spec, with no effect yet or ever.
_ACCEPTED_POOL = {
    "vmSize",
    "virtualMachineConfiguration",
    "metadata",
    "url",
    "eTag",
    "odata.metadata",
}

#: Azure fields that fleet knows but does not implement yet: reported by name.
_NOT_YET = {
    "pool": {
        "hostSelector",
        "targetDedicatedNodes",
        "targetLowPriorityNodes",
        "certificateReferences",
        "applicationPackageReferences",
        "enableAutoScale",
        "autoScaleFormula",
        "autoScaleEvaluationInterval",
        "mountConfiguration",
        "networkConfiguration",
        "resizeTimeout",
    },
    "job": {
        "autoPoolSpecification",
        "networkConfiguration",
    },
    "task": {
        "applicationPackageReferences",
        "containerSettings",
        "affinityInfo",
        "authenticationTokenSettings",
    },
    "startTask": {"resourceFiles", "containerSettings"},
}


def _fail(target: str, field: str, reason: str, code: str = "InvalidPropertyValue") -> BadInput:
    return BadInput(reason, code=code, target=target, field=field)


def _check_fields(obj: Any, target: str, prefix: str, kind: str, allowed: set[str]) -> None:
    if not isinstance(obj, dict):
        raise _fail(target, prefix or kind, f"expected a JSON object, got {type(obj).__name__}")
    for name in obj:
        path = f"{prefix}.{name}" if prefix else name
        if name in _NOT_YET.get(kind, ()):
            raise _fail(
                target,
                path,
                f"{path} is not supported by this version of fleet yet",
                code="UnsupportedProperty",
            )
        if name not in allowed:
            raise _fail(target, path, f"unknown property {path!r}", code="UnknownProperty")


def validate_id(kind: str, value: Any) -> str:
    """Return ``value`` if it is a valid id (letters, digits, '-' and '_', at most 64)."""
    if not isinstance(value, str) or not ID_RE.match(value):
        raise BadInput(
            f"{kind} id {value!r} must be 1-64 letters, digits, hyphens or underscores",
            code="InvalidId",
            target=kind,
            field="id",
        )
    return value


def _typed(
    obj: dict[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    target: str,
    prefix: str = "",
    default: Any = None,
    required: bool = False,
) -> Any:
    path = f"{prefix}.{name}" if prefix else name
    if name not in obj or obj[name] is None:
        if required:
            raise _fail(target, path, f"{path} is required", code="MissingRequiredProperty")
        return default
    value = obj[name]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise _fail(target, path, f"{path} must be {names}, got {value!r}")
    return value


def _int_in(
    obj: dict[str, Any], name: str, target: str, lo: int, hi: int, default: int, prefix: str = ""
) -> int:
    value = _typed(obj, name, int, target, prefix, default)
    if not lo <= value <= hi:
        path = f"{prefix}.{name}" if prefix else name
        raise _fail(target, path, f"{path} must be between {lo} and {hi}, got {value}")
    return int(value)


def parse_command_line(value: Any, target: str, field: str = "commandLine") -> str:
    """Return the command line if it is a non-empty string that splits like a shell would."""
    if not isinstance(value, str) or not value.strip():
        raise _fail(
            target,
            field,
            f"{field} must be a non-empty string",
            code="MissingRequiredProperty" if value is None else "InvalidPropertyValue",
        )
    try:
        shlex.split(value)
    except ValueError as exc:
        raise _fail(target, field, f"{field} cannot be split into arguments: {exc}") from exc
    return value


def parse_env(value: Any, target: str, field: str = "environmentSettings") -> list[dict[str, str]]:
    """Return ``[{name, value}]`` after checking names and string values."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(target, field, f"{field} must be a list of {{name, value}}")
    seen: set[str] = set()
    out = []
    for i, item in enumerate(value):
        path = f"{field}[{i}]"
        _check_fields(item, target, path, "env", {"name", "value"})
        name = _typed(item, "name", str, target, path, required=True)
        if not ENV_NAME_RE.match(name):
            raise _fail(
                target, f"{path}.name", f"{name!r} is not a valid environment variable name"
            )
        if name in seen:
            raise _fail(target, f"{path}.name", f"environment variable {name!r} is set twice")
        seen.add(name)
        val = _typed(item, "value", str, target, path, default="")
        if "\0" in val:
            raise _fail(target, f"{path}.value", "environment values cannot contain NUL")
        out.append({"name": name, "value": val})
    return out


def env_pairs(pairs: list[str], target: str) -> list[dict[str, str]]:
    """Return ``[{name, value}]`` from ``K=V`` strings given on the command line."""
    items = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise _fail(target, "environmentSettings", f"--env {pair!r} must look like NAME=VALUE")
        items.append({"name": name, "value": value})
    return parse_env(items, target)


def _retry_count(obj: dict[str, Any], target: str, prefix: str) -> int:
    return _int_in(obj, "maxTaskRetryCount", target, -1, 1_000_000, 0, prefix)


def _duration(obj: dict[str, Any], name: str, target: str, prefix: str) -> str | None:
    if obj.get(name) is None:
        return None
    seconds = durations.parse(obj[name], field=f"{prefix}.{name}", target=target)
    if seconds is not None and seconds <= 0:
        raise _fail(target, f"{prefix}.{name}", f"{prefix}.{name} must be longer than zero")
    return None if seconds is None else durations.format_seconds(seconds)


def parse_constraints(value: Any, target: str, *, task: bool) -> dict[str, Any]:
    """Return normalized ``constraints``: ``maxWallClockTime`` (ISO 8601, None for
    unlimited), ``maxTaskRetryCount`` (-1..), and for tasks ``retentionTime``."""
    if value is None:
        return {}
    allowed = {"maxWallClockTime", "maxTaskRetryCount"} | ({"retentionTime"} if task else set())
    _check_fields(value, target, "constraints", "constraints", allowed)
    out: dict[str, Any] = {}
    for name in ("maxWallClockTime", "retentionTime"):
        if name in allowed and (text := _duration(value, name, target, "constraints")):
            out[name] = text
    if value.get("maxTaskRetryCount") is not None:
        out["maxTaskRetryCount"] = _retry_count(value, target, "constraints")
    return out


def constraint_seconds(spec: dict[str, Any], name: str) -> float | None:
    """Return a duration constraint of a normalized spec in seconds, or None if unset."""
    text = (spec.get("constraints") or {}).get(name)
    return durations.parse(text) if text else None


def _choice(obj: dict[str, Any], name: str, target: str, choices: tuple[str, ...]) -> str:
    value = _typed(obj, name, str, target, default=choices[0])
    if value.lower() not in choices:
        raise _fail(target, name, f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value.lower()


USER_NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
ELEVATION_LEVELS = ("nonadmin", "admin")


def parse_user_name(value: Any, target: str, field: str) -> str:
    """Return ``value`` if it is a safe POSIX user name (lowercase, at most 32 chars)."""
    if not isinstance(value, str) or not USER_NAME_RE.match(value):
        raise _fail(
            target,
            field,
            f"{value!r} is not a valid user name: lowercase letters, "
            "digits, '_' and '-', starting with a letter or '_', at most 32",
        )
    return value


def parse_user_identity(value: Any, target: str, prefix: str = "userIdentity") -> dict[str, Any]:
    """Return ``{"autoUser": {"scope", "elevationLevel"}}`` or ``{"username": name}``;
    the default is the non-admin auto user (the node's login account)."""
    if value is None:
        return {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}
    _check_fields(value, target, prefix, "userIdentity", {"autoUser", "username"})
    if "username" in value and "autoUser" in value:
        raise _fail(target, prefix, f"{prefix} takes autoUser or username, not both")
    if "username" in value:
        return {"username": parse_user_name(value["username"], target, f"{prefix}.username")}
    auto = _typed(value, "autoUser", dict, target, prefix, default={})
    _check_fields(auto, target, f"{prefix}.autoUser", "autoUser", {"scope", "elevationLevel"})
    level = str(auto.get("elevationLevel", "nonadmin")).lower()
    scope = str(auto.get("scope", "pool")).lower()
    if level not in ELEVATION_LEVELS:
        raise _fail(
            target,
            f"{prefix}.autoUser.elevationLevel",
            f"elevationLevel must be nonadmin or admin, got {level!r}",
        )
    if scope not in ("task", "pool"):
        raise _fail(
            target, f"{prefix}.autoUser.scope", f"scope must be task or pool, got {scope!r}"
        )
    return {"autoUser": {"scope": scope, "elevationLevel": level}}


def parse_user_accounts(value: Any, target: str) -> list[dict[str, Any]]:
    """Return a pool's ``userAccounts``: ``{name, elevationLevel, password?}`` each."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(target, "userAccounts", "userAccounts must be a list")
    out, seen = [], set()
    for i, item in enumerate(value):
        path = f"userAccounts[{i}]"
        _check_fields(
            item,
            target,
            path,
            "userAccount",
            {"name", "elevationLevel", "password", "linuxUserConfiguration"},
        )
        name = parse_user_name(item.get("name"), target, f"{path}.name")
        if name in seen:
            raise _fail(target, f"{path}.name", f"user account {name!r} is listed twice")
        seen.add(name)
        level = str(item.get("elevationLevel", "nonadmin")).lower()
        if level not in ELEVATION_LEVELS:
            raise _fail(
                target, f"{path}.elevationLevel", "elevationLevel must be nonadmin or admin"
            )
        if item.get("linuxUserConfiguration"):
            raise _fail(
                target,
                f"{path}.linuxUserConfiguration",
                "linuxUserConfiguration is not supported yet",
                "UnsupportedProperty",
            )
        if item.get("password") is not None:
            raise _fail(
                target,
                f"{path}.password",
                "passwords for pool user accounts are not "
                "supported yet (they need fleet's encrypted secret store)",
                "UnsupportedProperty",
            )
        account: dict[str, Any] = {"name": name, "elevationLevel": level}
        out.append(account)
    return out


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
    _check_fields(value, target, "startTask", "startTask", allowed)
    return {
        "commandLine": parse_command_line(
            value.get("commandLine"), target, "startTask.commandLine"
        ),
        "environmentSettings": parse_env(
            value.get("environmentSettings"), target, "startTask.environmentSettings"
        ),
        "waitForSuccess": _typed(value, "waitForSuccess", bool, target, "startTask", True),
        "maxTaskRetryCount": _retry_count(value, target, "startTask"),
        "userIdentity": parse_user_identity(
            value.get("userIdentity"), target, "startTask.userIdentity"
        ),
    }


def parse_pool(data: Any) -> dict[str, Any]:
    """Return a normalized pool spec: id, displayName, hosts, taskSlotsPerNode,
    taskSchedulingPolicy, startTask, metadata and the Azure fields kept as given."""
    pid = validate_id("pool", data.get("id") if isinstance(data, dict) else None)
    target = f"pool {pid}"
    allowed = {
        "id",
        "displayName",
        "hosts",
        "taskSlotsPerNode",
        "maxTasksPerNode",
        "taskSchedulingPolicy",
        "startTask",
        "userAccounts",
        "enableInterNodeCommunication",
    } | _ACCEPTED_POOL
    _check_fields(data, target, "", "pool", allowed)
    hosts = _typed(data, "hosts", list, target, required=True)
    if not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise _fail(target, "hosts", "hosts must be a non-empty list of host ids")
    if len(set(hosts)) != len(hosts):
        raise _fail(target, "hosts", "hosts lists a host twice")
    slots = _int_in(
        data,
        "taskSlotsPerNode",
        target,
        1,
        256,
        _typed(data, "maxTasksPerNode", int, target, default=1),
    )
    policy = _typed(data, "taskSchedulingPolicy", dict, target, default={})
    _check_fields(policy, target, "taskSchedulingPolicy", "policy", {"nodeFillType"})
    fill = _typed(policy, "nodeFillType", str, target, "taskSchedulingPolicy", "spread")
    if fill.lower() not in set(FillType):
        raise _fail(
            target,
            "taskSchedulingPolicy.nodeFillType",
            f"nodeFillType must be 'spread' or 'pack', got {fill!r}",
        )
    out = {k: data[k] for k in _ACCEPTED_POOL if k in data}
    out.update(
        id=pid,
        displayName=_typed(data, "displayName", str, target),
        hosts=list(hosts),
        taskSlotsPerNode=slots,
        taskSchedulingPolicy={"nodeFillType": fill.lower()},
        startTask=parse_start_task(data.get("startTask"), target),
        userAccounts=parse_user_accounts(data.get("userAccounts"), target),
        enableInterNodeCommunication=_typed(
            data, "enableInterNodeCommunication", bool, target, default=False
        ),
    )
    start_user = ((out["startTask"] or {}).get("userIdentity") or {}).get("username")
    if start_user and start_user not in {a["name"] for a in out["userAccounts"]}:
        raise _fail(
            target,
            "startTask.userIdentity.username",
            f"user {start_user!r} is not one of the pool's userAccounts",
        )
    return out


JOB_FIELDS = {
    "id",
    "displayName",
    "poolInfo",
    "priority",
    "metadata",
    "url",
    "eTag",
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


def parse_job_manager_task(value: Any, target: str) -> dict[str, Any] | None:
    """Return a normalized ``jobManagerTask`` (a task spec with a ``jobManager`` section:
    ``killJobOnCompletion`` and ``runExclusive``, both true by default), or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail(target, "jobManagerTask", "jobManagerTask must be a JSON object")
    extra = {"killJobOnCompletion", "runExclusive", "allowLowPriorityNode"}
    task = parse_task(
        {k: v for k, v in value.items() if k not in extra} | {"id": value.get("id", "jobmanager")},
        target.removeprefix("job "),
    )
    task["jobManager"] = {
        "killJobOnCompletion": _typed(
            value, "killJobOnCompletion", bool, target, "jobManagerTask", default=True
        ),
        "runExclusive": _typed(value, "runExclusive", bool, target, "jobManagerTask", default=True),
    }
    return task


RELEASE_LIMIT_SECONDS = 15 * 60


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
    _check_fields(value, target, "jobPreparationTask", "jobPreparationTask", allowed)
    return {
        "id": validate_id("jobPreparationTask", value.get("id", "jobpreparation")),
        "commandLine": parse_command_line(
            value.get("commandLine"), target, "jobPreparationTask.commandLine"
        ),
        "environmentSettings": parse_env(
            value.get("environmentSettings"), target, "jobPreparationTask.environmentSettings"
        ),
        "constraints": parse_constraints(value.get("constraints"), target, task=True),
        "waitForSuccess": _typed(
            value, "waitForSuccess", bool, target, "jobPreparationTask", default=True
        ),
        "rerunOnNodeRebootAfterSuccess": _typed(
            value, "rerunOnNodeRebootAfterSuccess", bool, target, "jobPreparationTask", default=True
        ),
    }


def parse_job_release_task(value: Any, target: str) -> dict[str, Any] | None:
    """Return a normalized ``jobReleaseTask`` (its maxWallClockTime at most 15 minutes)."""
    if value is None:
        return None
    allowed = {"id", "commandLine", "environmentSettings", "maxWallClockTime", "retentionTime"}
    _check_fields(value, target, "jobReleaseTask", "jobReleaseTask", allowed)
    limit = _duration(value, "maxWallClockTime", target, "jobReleaseTask") or "PT15M"
    if (durations.parse(limit) or 0) > RELEASE_LIMIT_SECONDS:
        raise _fail(
            target,
            "jobReleaseTask.maxWallClockTime",
            "a job release task may run for 15 minutes at most (PT15M)",
        )
    return {
        "id": validate_id("jobReleaseTask", value.get("id", "jobrelease")),
        "commandLine": parse_command_line(
            value.get("commandLine"), target, "jobReleaseTask.commandLine"
        ),
        "environmentSettings": parse_env(
            value.get("environmentSettings"), target, "jobReleaseTask.environmentSettings"
        ),
        "constraints": {"maxWallClockTime": limit},
    }


def parse_job(data: Any) -> dict[str, Any]:
    """Return a normalized job spec: id, displayName, poolInfo.poolId, priority,
    maxParallelTasks, constraints, commonEnvironmentSettings, onAllTasksComplete,
    onTaskFailure and metadata."""
    jid = validate_id("job", data.get("id") if isinstance(data, dict) else None)
    target = f"job {jid}"
    _check_fields(data, target, "", "job", JOB_FIELDS)
    pool_info = _typed(data, "poolInfo", dict, target, required=True)
    _check_fields(pool_info, target, "poolInfo", "poolInfo", {"poolId"})
    prep = parse_job_preparation_task(data.get("jobPreparationTask"), target)
    release = parse_job_release_task(data.get("jobReleaseTask"), target)
    if release is not None and prep is None:
        raise _fail(
            target,
            "jobReleaseTask",
            "a jobReleaseTask needs a jobPreparationTask (as in Azure Batch)",
        )
    max_parallel = _int_in(data, "maxParallelTasks", target, -1, 1_000_000, -1)
    if max_parallel == 0:
        raise _fail(target, "maxParallelTasks", "maxParallelTasks must be -1 (no limit) or >= 1")
    return {
        "id": jid,
        "displayName": _typed(data, "displayName", str, target),
        "poolInfo": {"poolId": validate_id("pool", pool_info.get("poolId"))},
        "priority": _int_in(data, "priority", target, -1000, 1000, 0),
        "maxParallelTasks": max_parallel,
        "constraints": parse_constraints(data.get("constraints"), target, task=False),
        "commonEnvironmentSettings": parse_env(
            data.get("commonEnvironmentSettings"), target, "commonEnvironmentSettings"
        ),
        "onAllTasksComplete": _choice(
            data, "onAllTasksComplete", target, ("noaction", "terminatejob")
        ),
        "usesTaskDependencies": _typed(data, "usesTaskDependencies", bool, target, default=False),
        "jobManagerTask": parse_job_manager_task(data.get("jobManagerTask"), target),
        "jobPreparationTask": prep,
        "jobReleaseTask": release,
        "onTaskFailure": _choice(
            data, "onTaskFailure", target, ("noaction", "performexitoptionsjobaction")
        ),
        "metadata": _typed(data, "metadata", list, target, default=[]),
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
    "url",
    "eTag",
}


def parse_multi_instance(value: Any, target: str) -> dict[str, Any] | None:
    """Return normalized ``multiInstanceSettings`` (``numberOfInstances``,
    ``coordinationCommandLine``, ``commonResourceFiles``) or None."""
    if value is None:
        return None
    path = "multiInstanceSettings"
    _check_fields(
        value,
        target,
        path,
        path,
        {"numberOfInstances", "coordinationCommandLine", "commonResourceFiles"},
    )
    return {
        "numberOfInstances": _int_in(value, "numberOfInstances", target, 1, 1000, 1, path),
        "coordinationCommandLine": parse_command_line(
            value.get("coordinationCommandLine"), target, f"{path}.coordinationCommandLine"
        ),
        "commonResourceFiles": file_specs.parse_resource_files(
            value.get("commonResourceFiles"), target
        ),
    }


def parse_task(data: Any, job_id: str) -> dict[str, Any]:
    """Return a normalized task spec: id, displayName, commandLine, environmentSettings,
    requiredSlots, constraints and exitConditions."""
    tid = validate_id("task", data.get("id") if isinstance(data, dict) else None)
    target = f"task {job_id}/{tid}"
    _check_fields(data, target, "", "task", TASK_FIELDS)
    return {
        "id": tid,
        "displayName": _typed(data, "displayName", str, target),
        "commandLine": parse_command_line(data.get("commandLine"), target),
        "environmentSettings": parse_env(data.get("environmentSettings"), target),
        "requiredSlots": _int_in(data, "requiredSlots", target, 1, 256, 1),
        "constraints": parse_constraints(data.get("constraints"), target, task=True),
        "exitConditions": exit_conditions.parse_exit_conditions(data.get("exitConditions"), target),
        "dependsOn": dependencies.parse_depends_on(data.get("dependsOn"), target),
        "resourceFiles": file_specs.parse_resource_files(data.get("resourceFiles"), target),
        "outputFiles": file_specs.parse_output_files(data.get("outputFiles"), target),
        "userIdentity": parse_user_identity(data.get("userIdentity"), target),
        "multiInstanceSettings": parse_multi_instance(data.get("multiInstanceSettings"), target),
    }


def parse_task_collection(data: Any, job_id: str) -> list[dict[str, Any]]:
    """Return normalized task specs from one task object, a list of them, or
    ``{"value": [...]}`` (Azure's addcollection body); at most 100 at a time."""
    items: Any = data
    if isinstance(data, dict):
        items = data["value"] if set(data) == {"value"} else [data]
    if not isinstance(items, list) or not items:
        raise BadInput(
            "expected a task object or a non-empty list of them",
            code="InvalidPropertyValue",
            target=f"job {job_id}",
        )
    if len(items) > MAX_TASKS_PER_ADD:
        raise BadInput(
            f"at most {MAX_TASKS_PER_ADD} tasks can be added at once, got {len(items)}",
            code="TooManyTasks",
            target=f"job {job_id}",
        )
    tasks = [parse_task(item, job_id) for item in items]
    seen: set[str] = set()
    for task in tasks:
        if task["id"] in seen:
            raise BadInput(
                f"task id {task['id']!r} appears twice in the collection",
                code="DuplicateTaskId",
                target=f"task {job_id}/{task['id']}",
                field="id",
            )
        seen.add(task["id"])
    return tasks
