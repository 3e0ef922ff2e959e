"""Imports point down, and each third-party library sits behind one module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fleet

PACKAGE = Path(fleet.__file__).resolve().parent

#: library -> the only modules (relative to fleet/) allowed to import it
OWNERS = {
    "asyncssh": {"ssh.py"},
    "typer": {"cli/"},
    "apscheduler": {"timers.py"},
    "passlib": {"passwords.py"},
    "sqlmodel": {
        "tables.py",
        "store.py",
        "secret_store.py",
        "service/",
        "task_events.py",
        "sql.py",
        "job_tasks.py",
        "retention.py",
        "node_users.py",
        "task_calls.py",
        "multi_instance.py",
        "controller.py",
        "lifecycle.py",
        "execute.py",
        "targets.py",
        "schedule_runner.py",
        "node_ops.py",
        "pool_sizing.py",
        "autoscale.py",
    },
    # DB-API drivers used directly (the store reaches them through SQLAlchemy)
    "sqlite3": {"reads.py"},
    "psycopg": {"reads.py"},
    "starlette": {"api/app.py"},
    "uvicorn": {"api/server.py"},
    "jinja2": {"api/pages.py"},
    "prometheus_client": {"metrics.py"},
}
#: module -> fleet modules it must never import
FORBIDDEN = {
    "scheduler.py": {
        "fleet.store",
        "fleet.tables",
        "fleet.ssh",
        "fleet.controller",
        "fleet.service",
        "fleet.cli",
    },
    "service/": {"fleet.cli", "fleet.controller", "fleet.ssh"},
    "ssh.py": {"fleet.cli", "fleet.service", "fleet.store", "fleet.controller"},
    "rules.py": {"fleet.store", "fleet.tables", "fleet.ssh", "fleet.controller", "fleet.service"},
    # `fleet task file list|download` read the database without the ORM
    "task_files.py": {"fleet.store", "fleet.tables", "fleet.service"},
    "autoscale_rules.py": {"fleet.store", "fleet.tables", "fleet.ssh", "fleet.controller"},
    # the autoscale formula language is pure: text and inputs in, an Evaluation out
    "formula/": {
        "fleet.store",
        "fleet.tables",
        "fleet.ssh",
        "fleet.controller",
        "fleet.service",
        "fleet.cli",
        "fleet.context",
    },
}
# the REST API's pure parts: text in, answers out; no web framework, store or nodes
for _pure in ("api/shared_key.py", "api/odata.py", "api/wire.py"):
    FORBIDDEN[_pure] = {"fleet.store", "fleet.tables", "fleet.ssh", "fleet.controller", "fleet.cli"}
# the controller and the rest of fleet never import the API; it imports them
for _below in ("controller.py", "service/", "reads.py", "views.py", "specs.py"):
    FORBIDDEN.setdefault(_below, set()).add("fleet.api")
#: What a warm ``fleet exec`` loads: stdlib only, no SSH, ORM or CLI framework.
_WARM_EXEC_BANS = {
    "fleet.ssh",
    "fleet.store",
    "fleet.tables",
    "fleet.service",
    "fleet.controller",
    "fleet.cli",
}
FORBIDDEN |= {
    "control_socket.py": _WARM_EXEC_BANS | {"fleet.execute", "asyncio"},
    "exec_results.py": _WARM_EXEC_BANS | {"fleet.execute", "asyncio"},
    "exec_command.py": _WARM_EXEC_BANS,  # fleet.execute loads only for a cold run
}

#: The controller's pieces: each gets a narrow context (fleet/context.py), never the
#: controller, and none imports another (what one needs of another is passed in; the
#: sweeps share the base class in periodic.py).
PIECES = {
    "dispatch.py",
    "task_events.py",
    "lifecycle.py",
    "job_tasks.py",
    "multi_instance.py",
    "task_calls.py",
    "retention.py",
    "node_users.py",
    "schedule_runner.py",
    "collection.py",
    "control_server.py",
    "node_ops.py",
    "pool_sizing.py",
    "autoscale.py",
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _matches(rel: str, patterns: set[str]) -> bool:
    return any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in patterns)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_respects_the_layering(path: Path) -> None:
    rel = str(path.relative_to(PACKAGE))
    imports = _imports(path)
    for library, owners in OWNERS.items():
        if any(name == library or name.startswith(library + ".") for name in imports):
            assert _matches(rel, owners), f"{rel} imports {library}; only {sorted(owners)} may"
    for pattern, banned in FORBIDDEN.items():
        if _matches(rel, {pattern}):
            bad = {n for n in imports for b in banned if n == b or n.startswith(b + ".")}
            assert not bad, f"{rel} must not import {sorted(bad)}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_starts_with_a_one_line_docstring(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc, f"{path.name} has no module docstring"


@pytest.mark.parametrize("piece", sorted(PIECES))
def test_controller_pieces_import_neither_the_controller_nor_each_other(piece: str) -> None:
    imports = _imports(PACKAGE / piece)  # TYPE_CHECKING imports count too: no circle at all
    others = {f"fleet.{p.removesuffix('.py')}" for p in PIECES - {piece}}
    bad = imports & (others | {"fleet.controller"})
    assert not bad, f"{piece} imports {sorted(bad)}"
