"""Task ``exitConditions``: validation, and the job and dependency actions for a finished task.

Resolution follows Azure Batch's documented rules:

- A pre-processing failure (the command never started) uses ``preProcessingError``,
  else ``default``.
- A file upload failure uses the ``exitCodes``/``exitCodeRanges`` entry matching
  the exit code if there is one, else ``fileUploadError``, else ``default``.
- Otherwise the first matching ``exitCodes`` entry, then the first matching
  ``exitCodeRanges`` entry; then ``default``, which applies only to failures: a
  task that exits 0 with no failure and no explicit entry for 0 gets the built-in
  defaults.
- Fields left out take Azure's defaults: ``jobAction`` ``none`` on success and
  ``terminate`` on failure, ``dependencyAction`` ``satisfy`` on success and
  ``block`` on failure. The caller acts on ``jobAction`` only when the job's
  ``onTaskFailure`` is ``performexitoptionsjobaction``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleet.errors import BadInput

JOB_ACTIONS = ("none", "disable", "terminate")
DEPENDENCY_ACTIONS = ("satisfy", "block")
#: failureInfo codes for a task whose command never ran (as fleet.outcomes.PRE_PROCESSING).
PRE_PROCESSING_CODES = frozenset(
    {
        "ResourceFileDownloadError",
        "ApplicationPackageError",
        "CommandProgramNotFound",
        "CommandProgramNotExecutable",
        "UserIdentityError",
    }
)
FILE_UPLOAD_CODE = "FileUploadError"
#: Most entries in exitCodes plus exitCodeRanges.
MAX_ENTRIES = 1000

_OPTIONS_FIELDS = ("preProcessingError", "fileUploadError", "default")
_ALLOWED = {"exitCodes", "exitCodeRanges", *_OPTIONS_FIELDS}


def _fail(target: str, field: str, reason: str, code: str = "InvalidPropertyValue") -> BadInput:
    return BadInput(reason, code=code, target=target, field=field)


def _check_keys(obj: Any, target: str, path: str, allowed: tuple[str, ...] | set[str]) -> None:
    if not isinstance(obj, dict):
        raise _fail(target, path, f"{path} must be a JSON object, got {obj!r}")
    for name in obj:
        if name not in allowed:
            raise _fail(
                target, f"{path}.{name}", f"unknown property '{path}.{name}'", "UnknownProperty"
            )


def _int(obj: dict[str, Any], name: str, target: str, path: str) -> int:
    value = obj.get(name)
    if value is None:
        raise _fail(
            target, f"{path}.{name}", f"{path}.{name} is required", "MissingRequiredProperty"
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(target, f"{path}.{name}", f"{path}.{name} must be an integer, got {value!r}")
    return value


def _parse_options(value: Any, target: str, path: str) -> dict[str, str]:
    _check_keys(value, target, path, ("jobAction", "dependencyAction"))
    out = {}
    for name, choices in (("jobAction", JOB_ACTIONS), ("dependencyAction", DEPENDENCY_ACTIONS)):
        raw = value.get(name)
        if raw is None:
            continue
        if not isinstance(raw, str) or raw.lower() not in choices:
            raise _fail(
                target,
                f"{path}.{name}",
                f"{path}.{name} must be one of {', '.join(choices)}, got {raw!r}",
            )
        out[name] = raw.lower()
    return out


def _parse_list(value: Any, target: str, name: str, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(target, f"exitConditions.{name}", f"exitConditions.{name} must be a list")
    out = []
    for i, item in enumerate(value):
        path = f"exitConditions.{name}[{i}]"
        _check_keys(item, target, path, (*keys, "exitOptions"))
        entry: dict[str, Any] = {k: _int(item, k, target, path) for k in keys}
        if "end" in entry and entry["start"] > entry["end"]:
            raise _fail(
                target,
                f"{path}.end",
                f"{path}.end ({entry['end']}) is below its start ({entry['start']})",
            )
        if item.get("exitOptions") is None:
            raise _fail(
                target,
                f"{path}.exitOptions",
                f"{path}.exitOptions is required",
                "MissingRequiredProperty",
            )
        entry["exitOptions"] = _parse_options(item["exitOptions"], target, f"{path}.exitOptions")
        out.append(entry)
    return out


def parse_exit_conditions(value: Any, target: str) -> dict[str, Any] | None:
    """Return normalized ``exitConditions`` (actions lowercased, absent parts left out) or None.

    Raises :class:`BadInput` (``UnknownProperty``, ``MissingRequiredProperty`` or
    ``InvalidPropertyValue``) naming the field path, such as
    ``exitConditions.exitCodeRanges[0].end``.
    """
    if value is None:
        return None
    _check_keys(value, target, "exitConditions", _ALLOWED)
    codes = _parse_list(value.get("exitCodes"), target, "exitCodes", ("code",))
    ranges = _parse_list(value.get("exitCodeRanges"), target, "exitCodeRanges", ("start", "end"))
    if len(codes) + len(ranges) > MAX_ENTRIES:
        raise _fail(
            target,
            "exitConditions",
            f"exitConditions lists more than {MAX_ENTRIES} exit codes and ranges",
        )
    out: dict[str, Any] = {}
    if codes:
        out["exitCodes"] = codes
    if ranges:
        out["exitCodeRanges"] = ranges
    for name in _OPTIONS_FIELDS:
        if value.get(name) is not None:
            out[name] = _parse_options(value[name], target, f"exitConditions.{name}")
    return out


def specifies_job_action(conditions: Mapping[str, Any] | None) -> bool:
    """Return True if any exit option sets ``jobAction``.

    Azure rejects such a task when the job's ``onTaskFailure`` is ``noaction``
    (code ``InvalidPropertyValue``); the service layer makes that check.
    """
    if not conditions:
        return False
    options = [
        e["exitOptions"] for k in ("exitCodes", "exitCodeRanges") for e in conditions.get(k, ())
    ]
    options += [conditions[k] for k in _OPTIONS_FIELDS if k in conditions]
    return any("jobAction" in o for o in options)


def _by_exit_code(conditions: Mapping[str, Any], exit_code: int | None) -> dict[str, str] | None:
    if exit_code is None:
        return None
    for entry in conditions.get("exitCodes", ()):
        if entry["code"] == exit_code:
            return dict(entry["exitOptions"])
    for entry in conditions.get("exitCodeRanges", ()):
        if entry["start"] <= exit_code <= entry["end"]:
            return dict(entry["exitOptions"])
    return None


def resolve(
    conditions: Mapping[str, Any] | None, *, exit_code: int | None, failure_code: str | None
) -> dict[str, str]:
    """Return ``{"jobAction": ..., "dependencyAction": ...}`` for a task that has completed.

    ``exit_code`` is None when the command never ran; ``failure_code`` is the
    ``failureInfo.code`` or None. ``conditions`` must come from
    :func:`parse_exit_conditions`. Raises nothing.
    """
    failed = exit_code != 0 or failure_code is not None
    conditions = conditions or {}
    chosen: dict[str, str] | None
    if failure_code in PRE_PROCESSING_CODES:
        chosen = conditions.get("preProcessingError")
    elif failure_code == FILE_UPLOAD_CODE:
        chosen = _by_exit_code(conditions, exit_code)
        if chosen is None:
            chosen = conditions.get("fileUploadError")
    else:
        chosen = _by_exit_code(conditions, exit_code)
    if chosen is None and failed:
        chosen = conditions.get("default")
    if chosen is None:
        chosen = {}
    return {
        "jobAction": chosen.get("jobAction", "terminate" if failed else "none"),
        "dependencyAction": chosen.get("dependencyAction", "block" if failed else "satisfy"),
    }
