"""Field rules shared by every spec kind: ids, names, command lines, environment, durations.

Also the one table of which Azure Batch properties each kind treats as read-only
(printed by ``show``, accepted and ignored on input) and which it does not support
yet (refused by name). Every pattern is matched whole (``fullmatch``): ``$`` would
let a final newline through.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from fleet import durations
from fleet.errors import BadInput

ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
USER_NAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
ELEVATION_LEVELS = ("nonadmin", "admin")
APPLICATION_ID_RE = ID_RE
#: Azure's package versions: letters, digits, '-', '_' and '.', starting with a letter or digit.
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

_COMMON_READ_ONLY = frozenset(
    {
        "url",
        "eTag",
        "lastModified",
        "creationTime",
        "state",
        "stateTransitionTime",
        "previousState",
        "previousStateTransitionTime",
        "stats",
        "odata.metadata",
    }
)

#: Read-only properties of each kind: what ``show -o json`` prints about an object's
#: life rather than its spec. ``create`` accepts and ignores them, so printed JSON is
#: valid input. A new kind adds its row here.
READ_ONLY: dict[str, frozenset[str]] = {
    "pool": _COMMON_READ_ONLY
    | {
        "allocationState",
        "allocationStateTransitionTime",
        "currentDedicatedNodes",
        "currentLowPriorityNodes",
        "nodeCounts",
        "resizeErrors",
        "autoScaleRun",
    },
    "job": _COMMON_READ_ONLY | {"executionInfo", "taskCounts", "jobScheduleId"},
    "job schedule": _COMMON_READ_ONLY | {"executionInfo"},
    "task": _COMMON_READ_ONLY | {"jobId", "executionInfo", "nodeInfo", "dependencyState"},
    "node user": frozenset({"hasPassword"}),
}

#: Azure properties that fleet knows but does not implement yet: reported by name.
NOT_YET: dict[str, frozenset[str]] = {
    "pool": frozenset(
        {
            "mountConfiguration",
            "networkConfiguration",
        }
    ),
    "job": frozenset({"networkConfiguration"}),
    "task": frozenset(
        {
            "containerSettings",
            "affinityInfo",
            "authenticationTokenSettings",
        }
    ),
    "jobManagerTask": frozenset(
        {"applicationPackageReferences", "containerSettings", "authenticationTokenSettings"}
    ),
    "jobPreparationTask": frozenset({"resourceFiles", "containerSettings", "userIdentity"}),
    "jobReleaseTask": frozenset({"resourceFiles", "containerSettings", "userIdentity"}),
    "startTask": frozenset({"resourceFiles", "containerSettings"}),
}


def fail(target: str, field: str, reason: str, code: str = "InvalidPropertyValue") -> BadInput:
    """Return the BadInput for ``field`` of ``target``."""
    return BadInput(reason, code=code, target=target, field=field)


def check_fields(obj: Any, target: str, prefix: str, kind: str, allowed: set[str]) -> None:
    """Raise BadInput unless ``obj`` is an object whose properties are ``allowed``, read-only
    for ``kind`` (ignored) or known but not supported yet (``UnsupportedProperty``)."""
    if not isinstance(obj, dict):
        raise fail(target, prefix or kind, f"expected a JSON object, got {type(obj).__name__}")
    for name in obj:
        path = f"{prefix}.{name}" if prefix else name
        if name in NOT_YET.get(kind, ()):
            raise fail(
                target,
                path,
                f"{path} is not supported by this version of fleet yet",
                code="UnsupportedProperty",
            )
        if name not in allowed and name not in READ_ONLY.get(kind, ()):
            raise fail(target, path, f"unknown property {path!r}", code="UnknownProperty")


def validate_id(kind: str, value: Any) -> str:
    """Return ``value`` if it is a valid id (letters, digits, '-' and '_', at most 64)."""
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise BadInput(
            f"{kind} id {value!r} must be 1-64 letters, digits, hyphens or underscores",
            code="InvalidId",
            target=kind,
            field="id",
        )
    return value


def typed(
    obj: dict[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    target: str,
    prefix: str = "",
    default: Any = None,
    required: bool = False,
) -> Any:
    """Return ``obj[name]`` if it has type ``kind``, ``default`` if absent or null."""
    path = f"{prefix}.{name}" if prefix else name
    if name not in obj or obj[name] is None:
        if required:
            raise fail(target, path, f"{path} is required", code="MissingRequiredProperty")
        return default
    value = obj[name]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise fail(target, path, f"{path} must be {names}, got {value!r}")
    return value


def int_in(
    obj: dict[str, Any], name: str, target: str, lo: int, hi: int, default: int, prefix: str = ""
) -> int:
    """Return the integer ``obj[name]`` (``default`` if absent) if it lies in ``lo..hi``."""
    value = typed(obj, name, int, target, prefix, default)
    if not lo <= value <= hi:
        path = f"{prefix}.{name}" if prefix else name
        raise fail(target, path, f"{path} must be between {lo} and {hi}, got {value}")
    return int(value)


def choice(obj: dict[str, Any], name: str, target: str, choices: tuple[str, ...]) -> str:
    """Return ``obj[name]`` lowercased if it is one of ``choices`` (default the first)."""
    value = typed(obj, name, str, target, default=choices[0])
    if value.lower() not in choices:
        raise fail(target, name, f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return str(value.lower())


def parse_command_line(value: Any, target: str, field: str = "commandLine") -> str:
    """Return the command line if it splits like a shell would into a non-empty program
    name and arguments without NUL (what the node agent runs)."""
    if not isinstance(value, str) or not value.strip():
        raise fail(
            target,
            field,
            f"{field} must be a non-empty string",
            code="MissingRequiredProperty" if value is None else "InvalidPropertyValue",
        )
    if "\0" in value:
        raise fail(target, field, f"{field} cannot contain NUL")
    if "'" not in value and '"' not in value and "\\" not in value:
        return value  # no quotes or escapes: it splits on whitespace, and is not blank
    try:
        argv = shlex.split(value)
    except ValueError as exc:
        raise fail(target, field, f"{field} cannot be split into arguments: {exc}") from exc
    if not argv or not argv[0]:
        raise fail(target, field, f"{field} must start with a program name, got {value!r}")
    return value


def parse_env(value: Any, target: str, field: str = "environmentSettings") -> list[dict[str, str]]:
    """Return ``[{name, value}]`` after checking names and string values (no NUL)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise fail(target, field, f"{field} must be a list of {{name, value}}")
    seen: set[str] = set()
    out = []
    for i, item in enumerate(value):
        path = f"{field}[{i}]"
        check_fields(item, target, path, "env", {"name", "value"})
        name = typed(item, "name", str, target, path, required=True)
        if not ENV_NAME_RE.fullmatch(name):
            raise fail(target, f"{path}.name", f"{name!r} is not a valid environment variable name")
        if name in seen:
            raise fail(target, f"{path}.name", f"environment variable {name!r} is set twice")
        seen.add(name)
        val = typed(item, "value", str, target, path, default="")
        if "\0" in val:
            raise fail(target, f"{path}.value", "environment values cannot contain NUL")
        out.append({"name": name, "value": val})
    return out


def env_pairs(pairs: list[str], target: str) -> list[dict[str, str]]:
    """Return ``[{name, value}]`` from ``K=V`` strings given on the command line."""
    items = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise fail(target, "environmentSettings", f"--env {pair!r} must look like NAME=VALUE")
        items.append({"name": name, "value": value})
    return parse_env(items, target)


def retry_count(obj: dict[str, Any], target: str, prefix: str) -> int:
    """Return ``maxTaskRetryCount`` (-1 for no limit, default 0)."""
    return int_in(obj, "maxTaskRetryCount", target, -1, 1_000_000, 0, prefix)


def duration(obj: dict[str, Any], name: str, target: str, prefix: str) -> str | None:
    """Return ``obj[name]`` as a normalized positive ISO 8601 duration, or None when it is
    absent or Azure's unlimited value."""
    path = f"{prefix}.{name}" if prefix else name
    if obj.get(name) is None:
        return None
    seconds = durations.parse(obj[name], field=path, target=target)
    if seconds is not None and seconds <= 0:
        raise fail(target, path, f"{path} must be longer than zero")
    return None if seconds is None else durations.format_seconds(seconds)


def parse_constraints(value: Any, target: str, *, task: bool) -> dict[str, Any]:
    """Return normalized ``constraints``: ``maxWallClockTime`` (ISO 8601, left out for
    unlimited), ``maxTaskRetryCount`` (-1..), and for tasks ``retentionTime``."""
    if value is None:
        return {}
    allowed = {"maxWallClockTime", "maxTaskRetryCount"} | ({"retentionTime"} if task else set())
    check_fields(value, target, "constraints", "constraints", allowed)
    out: dict[str, Any] = {}
    for name in ("maxWallClockTime", "retentionTime"):
        if name in allowed and (text := duration(value, name, target, "constraints")):
            out[name] = text
    if value.get("maxTaskRetryCount") is not None:
        out["maxTaskRetryCount"] = retry_count(value, target, "constraints")
    return out


def constraint_seconds(spec: dict[str, Any], name: str) -> float | None:
    """Return a duration limit of a normalized spec in seconds, or None if unset: from its
    ``constraints``, or from its top level (a job release task, as in Azure)."""
    text = (spec.get("constraints") or {}).get(name) or spec.get(name)
    return durations.parse(text) if text else None


def parse_user_name(value: Any, target: str, field: str) -> str:
    """Return ``value`` if it is a safe POSIX user name (lowercase, at most 32 chars)."""
    if not isinstance(value, str) or not USER_NAME_RE.fullmatch(value):
        raise fail(
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
    check_fields(value, target, prefix, "userIdentity", {"autoUser", "username"})
    if "username" in value and "autoUser" in value:
        raise fail(target, prefix, f"{prefix} takes autoUser or username, not both")
    if "username" in value:
        return {"username": parse_user_name(value["username"], target, f"{prefix}.username")}
    auto = typed(value, "autoUser", dict, target, prefix, default={})
    check_fields(auto, target, f"{prefix}.autoUser", "autoUser", {"scope", "elevationLevel"})
    level = str(auto.get("elevationLevel", "nonadmin")).lower()
    scope = str(auto.get("scope", "pool")).lower()
    if level not in ELEVATION_LEVELS:
        raise fail(
            target,
            f"{prefix}.autoUser.elevationLevel",
            f"elevationLevel must be nonadmin or admin, got {level!r}",
        )
    if scope not in ("task", "pool"):
        raise fail(target, f"{prefix}.autoUser.scope", f"scope must be task or pool, got {scope!r}")
    return {"autoUser": {"scope": scope, "elevationLevel": level}}


THUMBPRINT_RE = re.compile(r"[0-9a-f]{40}")
#: What a pool's certificateReferences[].visibility may name (Azure's values).
VISIBILITIES = ("starttask", "task", "remoteuser")
#: storeLocation values that also put the certificate into the node's system trust store.
TRUST_STORE_LOCATIONS = ("localmachine", "truststore")
STORE_LOCATIONS = ("currentuser", *TRUST_STORE_LOCATIONS)


def parse_certificate_references(value: Any, target: str) -> list[dict[str, Any]]:
    """Return a pool's ``certificateReferences``: ``{thumbprint, thumbprintAlgorithm,
    storeLocation, storeName?, visibility}`` each (lowercase thumbprint and names; the
    default visibility is every identity, as in Azure)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise fail(target, "certificateReferences", "certificateReferences must be a list")
    out, seen = [], set()
    for i, item in enumerate(value):
        path = f"certificateReferences[{i}]"
        check_fields(
            item,
            target,
            path,
            "certificateReference",
            {"thumbprint", "thumbprintAlgorithm", "storeLocation", "storeName", "visibility"},
        )
        thumb = typed(item, "thumbprint", str, target, path, required=True).lower()
        if not THUMBPRINT_RE.fullmatch(thumb):
            raise fail(target, f"{path}.thumbprint", "thumbprint must be 40 hex digits (SHA-1)")
        if thumb in seen:
            raise fail(target, f"{path}.thumbprint", f"certificate {thumb} is referenced twice")
        seen.add(thumb)
        algorithm = typed(item, "thumbprintAlgorithm", str, target, path, "sha1").lower()
        if algorithm != "sha1":
            raise fail(target, f"{path}.thumbprintAlgorithm", "thumbprintAlgorithm must be sha1")
        location = typed(item, "storeLocation", str, target, path, "currentuser").lower()
        if location not in STORE_LOCATIONS:
            raise fail(
                target,
                f"{path}.storeLocation",
                f"storeLocation must be one of {', '.join(STORE_LOCATIONS)}, got {location!r}",
            )
        visibility = typed(item, "visibility", list, target, path, list(VISIBILITIES))
        names = [v.lower() if isinstance(v, str) else v for v in visibility]
        if not names or any(v not in VISIBILITIES for v in names):
            raise fail(
                target,
                f"{path}.visibility",
                f"visibility must be a non-empty list of {', '.join(VISIBILITIES)}",
            )
        ref: dict[str, Any] = {
            "thumbprint": thumb,
            "thumbprintAlgorithm": "sha1",
            "storeLocation": location,
            "visibility": [v for v in VISIBILITIES if v in names],
        }
        store_name = typed(item, "storeName", str, target, path)
        if store_name is not None:
            ref["storeName"] = store_name
        out.append(ref)
    return out


def parse_user_accounts(value: Any, target: str) -> list[dict[str, Any]]:
    """Return a pool's ``userAccounts``: ``{name, elevationLevel}`` each, and ``password``
    when given (the service layer replaces it with a secret store reference)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise fail(target, "userAccounts", "userAccounts must be a list")
    out, seen = [], set()
    for i, item in enumerate(value):
        path = f"userAccounts[{i}]"
        check_fields(
            item,
            target,
            path,
            "userAccount",
            {"name", "elevationLevel", "password", "linuxUserConfiguration"},
        )
        name = parse_user_name(item.get("name"), target, f"{path}.name")
        if name in seen:
            raise fail(target, f"{path}.name", f"user account {name!r} is listed twice")
        seen.add(name)
        level = str(item.get("elevationLevel", "nonadmin")).lower()
        if level not in ELEVATION_LEVELS:
            raise fail(target, f"{path}.elevationLevel", "elevationLevel must be nonadmin or admin")
        if item.get("linuxUserConfiguration"):
            raise fail(
                target,
                f"{path}.linuxUserConfiguration",
                "linuxUserConfiguration is not supported yet",
                "UnsupportedProperty",
            )
        account = {"name": name, "elevationLevel": level}
        password = typed(item, "password", str, target, path)
        if password is not None:
            if not password or "\0" in password or "\n" in password:
                raise fail(
                    target,
                    f"{path}.password",
                    "password must be a non-empty string without NUL or newline",
                )
            account["password"] = password  # the service keeps it in the secret store
        out.append(account)
    return out


def parse_package_references(value: Any, target: str) -> list[dict[str, str]]:
    """Return normalized ``applicationPackageReferences``: ``[{applicationId, version?}]``,
    each application at most once (a missing version means the default one)."""
    field = "applicationPackageReferences"
    if value is None:
        return []
    if not isinstance(value, list):
        raise fail(target, field, f"{field} must be a list")
    out: list[dict[str, str]] = []
    for i, ref in enumerate(value):
        path = f"{field}[{i}]"
        check_fields(ref, target, path, "applicationPackageReference", {"applicationId", "version"})
        app = typed(ref, "applicationId", str, target, path, required=True)
        if not APPLICATION_ID_RE.fullmatch(app):
            raise fail(
                target,
                f"{path}.applicationId",
                f"application id {app!r} must be 1-64 letters, digits, hyphens or underscores",
            )
        if any(o["applicationId"] == app for o in out):
            raise fail(target, path, f"application {app!r} is referenced twice")
        item = {"applicationId": app}
        version = typed(ref, "version", str, target, path)
        if version is not None:
            if not VERSION_RE.fullmatch(version):
                raise fail(
                    target,
                    f"{path}.version",
                    f"version {version!r} must be 1-64 letters, digits, '-', '_' or '.', "
                    "starting with a letter or digit",
                )
            item["version"] = version
        out.append(item)
    return out
