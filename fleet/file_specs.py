"""Validation of task ``resourceFiles`` and ``outputFiles`` (Azure Batch shapes, fleet's file store).

Resource files come from the controller's file store (``autoStorageContainerName``,
or fleet's alias ``storageContainerName``, narrowed by ``blobPrefix``) or from an
``httpUrl``. Output files go to a path in the file store
(``destination.container.path``). Azure storage URLs have no meaning here and are
refused by name.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

from fleet import file_patterns
from fleet.errors import BadInput

_MODE = re.compile(r"0?[0-7]{3}")
UPLOAD_CONDITIONS = ("tasksuccess", "taskfailure", "taskcompletion")


def _fail(target: str, field: str, reason: str, code: str = "InvalidPropertyValue") -> BadInput:
    return BadInput(reason, code=code, target=target, field=field)


def _object(value: Any, target: str, path: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(target, path, f"{path} must be a JSON object")
    for name in value:
        if name not in allowed:
            code = (
                "UnsupportedProperty"
                if name in ("storageContainerUrl", "containerUrl", "identityReference")
                else "UnknownProperty"
            )
            raise _fail(
                target,
                f"{path}.{name}",
                f"{path}.{name} is not supported: fleet stores files in its own file "
                f"store (fleet file upload)"
                if code == "UnsupportedProperty"
                else f"unknown property {path}.{name}",
                code,
            )
    return value


def _str(obj: dict[str, Any], name: str, target: str, path: str) -> str | None:
    value = obj.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise _fail(target, f"{path}.{name}", f"{path}.{name} must be a non-empty string")
    return value


def parse_resource_files(value: Any, target: str) -> list[dict[str, Any]]:
    """Return normalized resource files in Azure's shape: ``{"autoStorageContainerName",
    "blobPrefix", "filePath", "fileMode"}`` (fleet's alias ``storageContainerName`` becomes
    ``autoStorageContainerName``) or ``{"httpUrl", "filePath", "fileMode"}``. Raises
    BadInput naming the entry."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(target, "resourceFiles", "resourceFiles must be a list")
    out = []
    for i, item in enumerate(value):
        path = f"resourceFiles[{i}]"
        _object(
            item,
            target,
            path,
            {
                "autoStorageContainerName",
                "storageContainerName",
                "httpUrl",
                "blobPrefix",
                "filePath",
                "fileMode",
            },
        )
        container = _str(item, "autoStorageContainerName", target, path) or _str(
            item, "storageContainerName", target, path
        )
        url = _str(item, "httpUrl", target, path)
        if (container is None) == (url is None):
            raise _fail(
                target,
                path,
                f"{path} needs exactly one of autoStorageContainerName "
                "(or storageContainerName) and httpUrl",
                "MissingRequiredProperty",
            )
        entry: dict[str, Any] = {}
        file_path = _str(item, "filePath", target, path)
        if file_path is not None:
            entry["filePath"] = file_patterns.safe_relpath(
                file_path, target=target, field=f"{path}.filePath"
            )
        if url is not None:
            scheme = urlparse(url).scheme
            if scheme not in ("http", "https"):
                raise _fail(
                    target, f"{path}.httpUrl", f"httpUrl must be http or https, got {scheme!r}"
                )
            if file_path is None:
                raise _fail(
                    target,
                    f"{path}.filePath",
                    "filePath is required with httpUrl",
                    "MissingRequiredProperty",
                )
            entry["httpUrl"] = url
        else:
            entry["autoStorageContainerName"] = file_patterns.safe_relpath(
                container or "", target=target, field=f"{path}.autoStorageContainerName"
            )
            prefix = _str(item, "blobPrefix", target, path)
            if prefix is not None:
                entry["blobPrefix"] = prefix
        mode = _str(item, "fileMode", target, path)
        if mode is not None:
            if not _MODE.fullmatch(mode):
                raise _fail(
                    target, f"{path}.fileMode", f"fileMode must be octal like 0755, got {mode!r}"
                )
            entry["fileMode"] = mode
        out.append(entry)
    return out


def parse_output_files(value: Any, target: str) -> list[dict[str, Any]]:
    """Return normalized output files in Azure's shape: ``{"filePattern", "destination":
    {"container": {"path"}}, "uploadOptions": {"uploadCondition"}}`` (fleet's shorthand
    ``destination.path`` becomes ``destination.container.path``).

    ``filePattern`` is relative to the task's working directory; a leading ``../``
    reaches the task directory itself (``../std*.txt``, as Azure users write it)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(target, "outputFiles", "outputFiles must be a list")
    out = []
    for i, item in enumerate(value):
        path = f"outputFiles[{i}]"
        _object(item, target, path, {"filePattern", "destination", "uploadOptions"})
        pattern = _str(item, "filePattern", target, path)
        if pattern is None:
            raise _fail(
                target, f"{path}.filePattern", "filePattern is required", "MissingRequiredProperty"
            )
        file_patterns.compile_pattern(
            pattern.removeprefix("../"), target=target, field=f"{path}.filePattern"
        )
        dest = _object(
            item.get("destination") or {}, target, f"{path}.destination", {"container", "path"}
        )
        container = _object(
            dest.get("container") or {}, target, f"{path}.destination.container", {"path"}
        )
        store_path = container.get("path") or dest.get("path")
        if not isinstance(store_path, str) or not store_path:
            raise _fail(
                target,
                f"{path}.destination.container.path",
                "destination.container.path (a path in fleet's file store) is required",
                "MissingRequiredProperty",
            )
        options = _object(
            item.get("uploadOptions") or {}, target, f"{path}.uploadOptions", {"uploadCondition"}
        )
        condition = str(options.get("uploadCondition", "taskcompletion")).lower()
        if condition not in UPLOAD_CONDITIONS:
            raise _fail(
                target,
                f"{path}.uploadOptions.uploadCondition",
                f"uploadCondition must be one of {', '.join(UPLOAD_CONDITIONS)}",
            )
        store_path = file_patterns.safe_relpath(
            store_path, target=target, field=f"{path}.destination.container.path"
        )
        out.append(
            {
                "filePattern": pattern,
                "destination": {"container": {"path": store_path}},
                "uploadOptions": {"uploadCondition": condition},
            }
        )
    return out
