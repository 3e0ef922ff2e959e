"""Application packages on nodes: sent by content hash, unpacked by the node-side unpacker.

A pool's packages are installed when a node joins, reboots or reconnects (before the
start task); a task's just before it runs. Each lands in
``applications/<app>#<version>`` and is reused when the sha256 recorded beside it
matches, so a node is sent each package once. The unpacker
(``agent_bootstrap/fleet_unpack.py``) is uploaded next to the agent, named by its
hash, and run with a fixed argv; it checks every member again before extracting.
Any failure is a RemoteError with code ``ApplicationPackageError``.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from agent_bootstrap import unpacker_hash, unpacker_source
from fleet import archives, environment
from fleet.errors import BadInput, FleetError, RemoteError, Unreachable
from fleet.service import applications as catalog
from fleet.settings import Settings
from fleet.ssh import Connection
from fleet.store import Store
from fleet.tables import ApplicationPackage

if TYPE_CHECKING:
    from fleet.node_link import NodeLink

log = logging.getLogger(__name__)

ERROR_CODE = "ApplicationPackageError"


def unpacker_remote_path(root: str) -> str:
    """Return where the unpacker lives on a node: named by its content hash."""
    return f"{root.rstrip('/')}/volatile/fleet-unpack-{unpacker_hash()[:16]}.py"


def _resolve(store: Store, refs: list[dict[str, str]]) -> list[tuple[ApplicationPackage, bool]]:
    """Return the package of each reference and whether it is the default version."""
    out = []
    with store.session() as s:
        for ref in refs:
            try:
                out.append(catalog.resolve(s, ref))
            except BadInput as exc:
                raise RemoteError(exc.message, code=ERROR_CODE) from exc
    return out


async def _run_unpacker(conn: Connection, argv: list[str], what: str) -> str:
    result = await conn.run(argv)
    try:
        reply: dict[str, Any] = json.loads(result.stdout.decode() or "{}")
    except ValueError:
        reply = {}
    if result.exit_code == 0 and "result" in reply:
        return str(reply["result"])
    error = reply.get("error") or {
        "code": "UnpackFailed",
        "message": result.stderr.decode(errors="replace").strip()[-300:] or "no output",
    }
    raise RemoteError(
        f"cannot install {what} on the node: {error.get('message')} ({error.get('code')})",
        code=ERROR_CODE,
    )


async def install(conn: Connection, settings: Settings, root: str, pkg: ApplicationPackage) -> bool:
    """Make ``applications/<app>#<version>`` hold ``pkg`` on the node; return whether its
    archive had to be sent (False: the one there has the same sha256 and is reused).

    Raises RemoteError ``ApplicationPackageError`` (archive gone from the file store,
    corrupted on the way, refused by the node's checks, node-side failure), or
    Unreachable when the connection drops."""
    what = f"application package {pkg.application_id}#{pkg.version}"
    script = unpacker_remote_path(root)
    if not await conn.exists(script):
        await conn.makedirs(f"{root.rstrip('/')}/volatile")
        await conn.upload_bytes(unpacker_source(), script, 0o644)
    apps = f"{root.rstrip('/')}/{environment.APPLICATIONS_DIR}"
    name = environment.package_dir_name(pkg.application_id, pkg.version)
    base = ["python3", script, apps, name, pkg.sha256]
    if await _run_unpacker(conn, base, what) == "reused":
        log.debug("%s: %s reused on the node", conn.target.host_id, what)
        return False
    local = catalog.archive_path(settings, pkg)
    if not local.is_file():
        raise RemoteError(f"{what}: its archive is missing from the file store", code=ERROR_CODE)
    remote = f"{apps}/.fleet/incoming-{uuid.uuid4().hex}"
    try:
        await conn.upload_file(str(local), remote)
    except Unreachable:
        raise  # the node dropped: not the package's fault, the attempt is settled on return
    except FleetError as exc:
        raise RemoteError(f"{what}: cannot send it: {exc.message}", code=ERROR_CODE) from exc
    limits = [str(archives.MAX_MEMBERS), str(archives.MAX_UNPACKED_BYTES)]
    result = await _run_unpacker(conn, [*base, remote, *limits], what)
    log.info("%s: %s sent (%d bytes) and %s", conn.target.host_id, what, pkg.size, result)
    return result == "unpacked"


async def install_all(
    conn: Connection, settings: Settings, store: Store, root: str, refs: list[dict[str, str]]
) -> dict[str, str]:
    """Install every referenced package on the node; return their environment variables.
    Raises RemoteError ``ApplicationPackageError``."""
    env: dict[str, str] = {}
    for pkg, is_default in _resolve(store, refs):
        await install(conn, settings, root, pkg)
        env.update(environment.package_vars(root, pkg.application_id, pkg.version, is_default))
    return env


async def install_pool_packages(link: NodeLink, pool_spec: dict[str, Any], root: str) -> None:
    """The pool hook of node bootstrap: install the pool's packages on the link's node and
    keep their variables on the link (``app_env``) for the start task and every task."""
    assert link.conn is not None
    refs = pool_spec.get("applicationPackageReferences") or []
    link.app_env = await install_all(link.conn, link.settings, link.store, root, refs)


async def prepare_task(
    link: NodeLink,
    settings: Settings,
    store: Store,
    refs: list[dict[str, str]],
    env: dict[str, str],
) -> None:
    """The task hook before a spawn: add the pool's package variables to ``env``, install
    the task's own packages on its node and add theirs. Raises RemoteError
    ``ApplicationPackageError``."""
    add_env(env, link.app_env)
    if refs and link.conn is not None and link.agent is not None:
        root = str(link.agent.hello.get("root", ""))
        add_env(env, await install_all(link.conn, settings, store, root, refs))


def add_env(env: dict[str, str], package_env: dict[str, str]) -> None:
    """Add package variables to a task's environment; the user's own settings win."""
    for name, value in package_env.items():
        env.setdefault(name, value)
