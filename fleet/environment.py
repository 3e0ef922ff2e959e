"""The environment every task gets on a node: FLEET_* variables and their AZ_BATCH_* twins."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

#: Node directories under the node root, and the variable naming each (concepts.md section 4).
NODE_DIRS = {
    "NODE_STARTUP_DIR": "startup",
    "NODE_SHARED_DIR": "shared",
    "CERTIFICATES_DIR": "certs",
    "NODE_MOUNTS_DIR": "fsmounts",
}


#: Files of a task's directory that the controller collects when the task ends.
COLLECTED_FILES = ("stdout.txt", "stderr.txt", "exit.json")


def task_dir(job_id: str, task_id: str) -> str:
    """Return a task's directory relative to the node root."""
    return f"workitems/{job_id}/job-1/{task_id}"


def node_env(root: str, node_id: str) -> dict[str, str]:
    """Return the variables that are the same for every task of a node: its agent holds
    them (docs/agent-protocol.md, op ``env``) and starts each task's environment from them."""
    root = root.rstrip("/")
    return twins(
        {
            "NODE_ROOT_DIR": root,
            **{name: f"{root}/{rel}" for name, rel in NODE_DIRS.items()},
            "NODE_ID": node_id,
            "NODE_IS_DEDICATED": "true",
        }
    )


def task_env(
    *,
    root: str,
    pool_id: str,
    task_dir_rel: str,
    attempt: int,
    job_id: str | None = None,
    task_id: str | None = None,
    user_env: Iterable[Mapping[str, str]] = (),
) -> dict[str, str]:
    """Return a task's own variables, under both names, then the user's
    ``environmentSettings`` (which win, as in Azure Batch). The agent adds them to the
    node's (:func:`node_env`)."""
    root = root.rstrip("/")
    values = {
        "POOL_ID": pool_id,
        "TASK_DIR": f"{root}/{task_dir_rel}",
        "TASK_WORKING_DIR": f"{root}/{task_dir_rel}/wd",
        "TASK_ATTEMPT": str(attempt),
    }
    if job_id is not None:
        values["JOB_ID"] = job_id
    if task_id is not None:
        values["TASK_ID"] = task_id
    env = twins(values)
    for item in user_env:
        env[item["name"]] = item["value"]
    return env


def twins(values: Mapping[str, str]) -> dict[str, str]:
    """Return ``values`` under both names: ``FLEET_<NAME>`` and ``AZ_BATCH_<NAME>``."""
    out = {}
    for name, value in values.items():
        out[f"FLEET_{name}"] = value
        out[f"AZ_BATCH_{name}"] = value
    return out


#: Application packages land in ``applications/<app>#<version>`` under the node root.
APPLICATIONS_DIR = "applications"


def package_dir_name(app_id: str, version: str) -> str:
    """Return the directory name of an unpacked package: ``<app>#<version>``."""
    return f"{app_id}#{version}"


def package_vars(root: str, app_id: str, version: str, is_default: bool) -> dict[str, str]:
    """Return ``FLEET_APP_PACKAGE_<app>_<version>`` and its ``AZ_BATCH_`` twin naming the
    package's directory ('.', '-' and '#' become '_'; the id's case is kept), and for the
    default version also the names without the version."""
    path = f"{root.rstrip('/')}/{APPLICATIONS_DIR}/{package_dir_name(app_id, version)}"
    values = {"APP_PACKAGE_" + re.sub(r"[.#-]", "_", f"{app_id}#{version}"): path}
    if is_default:
        values["APP_PACKAGE_" + re.sub(r"[.#-]", "_", app_id)] = path
    return twins(values)
