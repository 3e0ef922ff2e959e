"""Who a task runs as: the node's login account, root through ``sudo -n``, or a pool user.

Nothing here goes through a shell: commands are argv lists, user names are
validated against a strict pattern (see :mod:`fleet.specs`), and the sudoers line
reaches ``tee`` on its standard input.
"""

from __future__ import annotations

from typing import Any

from fleet import specs
from fleet.errors import RemoteError
from fleet.passwords import crypt_sha512
from fleet.secret_store import SecretStore
from fleet.settings import Settings
from fleet.ssh import Connection
from fleet.store import Store

SUDO = ["sudo", "-n"]


def needs_sudo(identity: dict[str, Any] | None, login_user: str) -> bool:
    """Return whether running as ``identity`` needs passwordless sudo on the node."""
    if login_user == "root" or not identity:
        return False
    if "username" in identity:
        return identity["username"] != login_user
    return (identity.get("autoUser") or {}).get("elevationLevel") == "admin"


def wrap(identity: dict[str, Any] | None, argv: list[str], login_user: str) -> list[str]:
    """Return ``argv`` as it must be spawned to run as ``identity`` (environment kept)."""
    if not needs_sudo(identity, login_user):
        return argv
    assert identity is not None
    if "username" in identity:
        return [*SUDO, "-u", identity["username"], "--preserve-env", "--", *argv]
    return [*SUDO, "--preserve-env", "--", *argv]


async def can_sudo(conn: Connection) -> bool:
    """Return whether the login user may run ``sudo`` without a password on the node."""
    result = await conn.run([*SUDO, "true"])
    return result.exit_code == 0


def with_passwords(
    store: Store, settings: Settings, accounts: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Return a pool's stored ``userAccounts`` with each password decrypted from the secret
    store (as ``password``). Raises the secret store's SecretKeyError."""
    if not any(specs.PASSWORD_SECRET in a for a in accounts):
        return accounts
    secrets = SecretStore.of(settings)
    with store.session() as s:
        return [
            {**a, "password": secrets.get(s, a[specs.PASSWORD_SECRET]).decode()}
            if specs.PASSWORD_SECRET in a
            else a
            for a in accounts
        ]


async def ensure_accounts(
    conn: Connection, accounts: list[dict[str, Any]], login_user: str
) -> None:
    """Create the pool's user accounts on the node (admins get passwordless sudo) and set
    the password of those that have one: ``chpasswd -e`` reads ``name:<SHA-512 crypt hash>``
    on its standard input, so the password is never in an argv nor sent to the node.

    Raises RemoteError with code UserAccountError naming the account and the reason."""
    sudo = [] if login_user == "root" else SUDO
    for account in accounts:
        name = account["name"]
        if (await conn.run(["id", "-u", name])).exit_code != 0:
            await _must(conn, [*sudo, "useradd", "--create-home", "--shell", "/bin/sh", name], name)
        if account.get("elevationLevel") == "admin":
            path = f"/etc/sudoers.d/fleet-{name}"
            line = f"{name} ALL=(ALL) NOPASSWD:ALL\n".encode()
            await _must(conn, [*sudo, "tee", path], name, stdin=line)
            await _must(conn, [*sudo, "chmod", "0440", path], name)
        if account.get("password"):
            line = f"{name}:{crypt_sha512(account['password'])}\n".encode()
            await _must(conn, [*sudo, "chpasswd", "-e"], name, stdin=line)


async def prepare_workdir(
    conn: Connection, identity: dict[str, Any] | None, wd: str, login_user: str
) -> None:
    """Make a named user's task working directory theirs before the task starts: owned by
    them, group the login user's, mode 2750 (what the task writes there inherits the
    group, so fleet can still read outputs; nobody else can enter)."""
    if not identity or "username" not in identity or not needs_sudo(identity, login_user):
        return
    await conn.makedirs(wd)
    name = identity["username"]
    await _must(conn, [*SUDO, "chown", name, wd], name)  # the group stays the login user's
    await _must(conn, [*SUDO, "chmod", "2750", wd], name)


async def _must(conn: Connection, argv: list[str], name: str, stdin: bytes | None = None) -> None:
    result = await conn.run(argv, stdin=stdin)
    if result.exit_code != 0:
        detail = result.stderr.decode(errors="replace").strip()[-300:]
        raise RemoteError(
            f"{argv[len(SUDO) if argv[0] == 'sudo' else 0]} for user {name} failed "
            f"(exit {result.exit_code}): {detail}",
            code="UserAccountError",
        )
