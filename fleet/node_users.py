"""Node users: validating Azure's node user JSON and the OS accounts fleet makes for it on a node.

A node user is a real account (``useradd``) marked as fleet's by its comment field
and by the ``fleet-node-users`` group; admins get a sudoers file; the account
expires (``--expiredate``, day granularity) and the controller's sweep removes it
at its exact ``expiryTime``. Every command is a fixed argv: names and keys are
validated first, passwords reach ``chpasswd -e`` hashed on standard input and the
key reaches ``tee`` (run as the user, so no link in their home can redirect it)
on standard input.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from sqlmodel import col, select

from fleet import certificates
from fleet.errors import Conflict, FleetError, NotFound, RemoteError
from fleet.passwords import crypt_sha512
from fleet.periodic import PeriodicPass
from fleet.spec_fields import USER_NAME_RE, check_fields, fail
from fleet.ssh import Connection, Target
from fleet.tables import NodeUser

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The comment (GECOS) field of every account fleet creates; accounts without it are not fleet's.
MARKER = "fleet node user"
GROUP = "fleet-node-users"
DEFAULT_EXPIRY_SECONDS = 24 * 3600
MAX_PASSWORD_LENGTH = 256
FIELDS = {"name", "isAdmin", "expiryTime", "password", "sshPublicKey"}
#: Key types the controller can parse (cryptography), as ``ssh-keygen`` writes them.
KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)
_KEY_LINE = re.compile(r"(?P<type>[a-z0-9-]+) (?P<blob>[A-Za-z0-9+/]+={0,2})(?: (?P<comment>.*))?")
_COMMENT_OK = re.compile(r"[^\x00-\x1f\x7f]*")


def sudo_prefix(login_user: str | None) -> list[str]:
    """Return the argv prefix that runs a command as root for ``login_user``."""
    return [] if login_user == "root" else ["sudo", "-n"]


def as_user_prefix(name: str, login_user: str | None) -> list[str]:
    """Return the argv prefix that runs a command as the (validated) user ``name``."""
    if login_user == "root":
        return ["runuser", "-u", name, "--"]
    return ["sudo", "-n", "-u", name, "--"]


def sudoers_path(name: str) -> str:
    return f"/etc/sudoers.d/fleet-node-user-{name}"


# -- validation (pure) ----------------------------------------------------------------


def parse_ssh_public_key(value: Any, target: str, field: str = "sshPublicKey") -> str:
    """Return ``value`` as one OpenSSH public key line ``TYPE BASE64 [COMMENT]``: no
    options, no newlines, a key the controller can parse whose blob names ``TYPE``."""
    if not isinstance(value, str):
        raise fail(target, field, "must be a string: one OpenSSH public key line")
    line = value.strip()
    match = _KEY_LINE.fullmatch(line)
    if not match or not _COMMENT_OK.fullmatch(match["comment"] or ""):
        raise fail(
            target,
            field,
            "is not one OpenSSH public key line 'TYPE BASE64 [COMMENT]' "
            "(no options, no newlines or control characters)",
            code="InvalidSshPublicKey",
        )
    if match["type"] not in KEY_TYPES:
        raise fail(
            target,
            field,
            f"key type {match['type']!r} is not one of {', '.join(KEY_TYPES)}",
            code="InvalidSshPublicKey",
        )
    try:
        blob = base64.b64decode(match["blob"], validate=True)
        load_ssh_public_key(f"{match['type']} {match['blob']}".encode())
    except (binascii.Error, ValueError) as exc:
        raise fail(
            target, field, f"is not a valid {match['type']} key: {exc}", code="InvalidSshPublicKey"
        ) from None
    named = match["type"].encode()
    if blob[4 : 4 + len(named)] != named or int.from_bytes(blob[:4], "big") != len(named):
        raise fail(
            target, field, f"the key data is not a {match['type']} key", code="InvalidSshPublicKey"
        )
    return line


def parse_expiry(value: Any, target: str, now: float) -> float:
    """Return an ISO 8601 ``expiryTime`` as epoch seconds; it must carry a time zone (or
    'Z') and lie in the future."""
    if not isinstance(value, str):
        raise fail(target, "expiryTime", "must be an ISO 8601 time such as 2030-01-31T12:00:00Z")
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise fail(
            target, "expiryTime", f"{value!r} is not an ISO 8601 time such as 2030-01-31T12:00:00Z"
        ) from None
    if when.tzinfo is None:
        raise fail(target, "expiryTime", f"{value!r} has no time zone: end it with 'Z' or +HH:MM")
    try:
        ts = when.timestamp()
    except (OverflowError, ValueError, OSError):
        raise fail(target, "expiryTime", f"{value!r} is out of range") from None
    if ts <= now:
        raise fail(target, "expiryTime", f"{value!r} is not in the future")
    if when.astimezone(UTC).year > 9999 - 1:
        raise fail(target, "expiryTime", f"{value!r} is out of range")
    return ts


def parse_node_user(data: Any, target: str, now: float) -> dict[str, Any]:
    """Return a validated node user: ``name``, ``isAdmin``, ``expiryTime`` (epoch seconds;
    default one day from ``now``), ``password`` and ``sshPublicKey`` (either may be None).

    Raises BadInput naming ``target`` and the field."""
    check_fields(data, target, "", "node user", FIELDS)
    if "name" not in data:
        raise fail(target, "name", "is required", code="MissingRequiredProperty")
    name = data["name"]
    if not isinstance(name, str) or not USER_NAME_RE.fullmatch(name):
        raise fail(
            target,
            "name",
            f"{name!r} is not a valid user name: lowercase letters, digits, '_' and '-', "
            "starting with a letter or '_', at most 32",
        )
    is_admin = data.get("isAdmin", False)
    if not isinstance(is_admin, bool):
        raise fail(target, "isAdmin", "must be true or false")
    expiry = data.get("expiryTime")
    password = data.get("password")
    if password is not None and (
        not isinstance(password, str)
        or not 1 <= len(password) <= MAX_PASSWORD_LENGTH
        or "\x00" in password
    ):
        raise fail(
            target, "password", f"must be a non-empty string of at most {MAX_PASSWORD_LENGTH}"
        )
    key = data.get("sshPublicKey")
    return {
        "name": name,
        "isAdmin": is_admin,
        "expiryTime": now + DEFAULT_EXPIRY_SECONDS
        if expiry is None
        else parse_expiry(expiry, target, now),
        "password": password,
        "sshPublicKey": None if key is None else parse_ssh_public_key(key, target),
    }


def expire_date(expiry: float) -> str:
    """Return the day (UTC, ``YYYY-MM-DD``) for ``useradd --expiredate``: the account stays
    usable through that day, and the sweep removes it at the exact time."""
    return datetime.fromtimestamp(expiry, UTC).strftime("%Y-%m-%d")


# -- on the node ----------------------------------------------------------------------


async def read_account(conn: Connection, name: str) -> dict[str, str] | None:
    """Return the node's passwd entry of ``name`` (``comment``, ``home``), or None."""
    result = await conn.run(["getent", "passwd", name])
    if result.exit_code == 2:
        return None
    if result.exit_code != 0:
        raise _failed("getent", name, result.exit_code, result.stderr)
    fields = result.stdout.decode(errors="replace").strip().split(":")
    if len(fields) != 7 or fields[0] != name:
        raise RemoteError(f"unexpected passwd entry for {name}", code="UserAccountError")
    return {"comment": fields[4], "home": fields[5]}


async def check_ours(conn: Connection, name: str, target: str) -> dict[str, str] | None:
    """Return the account ``name`` if it is fleet's (or None if it is absent). Raises
    Conflict (exit 4) ``NodeUserNotManaged`` for an account fleet did not create."""
    account = await read_account(conn, name)
    if account is not None and account["comment"] != MARKER:
        raise Conflict(
            f"the node has an account {name!r} that fleet did not create; fleet never "
            "modifies or deletes it",
            code="NodeUserNotManaged",
            target=target,
        )
    return account


async def create_account(conn: Connection, user: dict[str, Any]) -> None:
    """Create the account of a validated node user; on failure remove what was made."""
    login, name = conn.target.user, user["name"]
    sudo = sudo_prefix(login)
    await _must(conn, [*sudo, "groupadd", "-f", GROUP], name)
    await _must(
        conn,
        [
            *sudo,
            "useradd",
            "--create-home",
            "--shell",
            "/bin/sh",
            "--comment",
            MARKER,
            "--groups",
            GROUP,
            "--password",
            "*",  # no password login, but not locked (sshd without PAM refuses "!")
            "--expiredate",
            expire_date(user["expiryTime"]),
            "--",
            name,
        ],
        name,
    )
    try:
        await apply_settings(conn, user)
    except FleetError:
        await remove_account(conn, name)
        raise


async def apply_settings(conn: Connection, user: dict[str, Any]) -> None:
    """Make the account's password, key, admin rights and expiry date those of ``user``
    (what is absent is removed)."""
    login, name = conn.target.user, user["name"]
    sudo = sudo_prefix(login)
    line = f"{name}:{crypt_sha512(user['password']) if user['password'] else '*'}\n"
    await _must(conn, [*sudo, "chpasswd", "-e"], name, stdin=line.encode())
    await _must(conn, [*sudo, "chage", "-E", expire_date(user["expiryTime"]), "--", name], name)
    account = await read_account(conn, name)
    assert account is not None
    as_user = as_user_prefix(name, login)
    ssh_dir = f"{account['home']}/.ssh"
    keys = f"{user['sshPublicKey']}\n".encode() if user["sshPublicKey"] else b""
    await _must(conn, [*as_user, "mkdir", "-p", "-m", "0700", "--", ssh_dir], name)
    await _must(conn, [*as_user, "chmod", "0700", "--", ssh_dir], name)
    await _must(conn, [*as_user, "tee", "--", f"{ssh_dir}/authorized_keys"], name, stdin=keys)
    await _must(conn, [*as_user, "chmod", "0600", "--", f"{ssh_dir}/authorized_keys"], name)
    if user["isAdmin"]:
        rule = f"{name} ALL=(ALL) NOPASSWD:ALL\n".encode()
        await _must(conn, [*sudo, "tee", "--", sudoers_path(name)], name, stdin=rule)
        await _must(conn, [*sudo, "chmod", "0440", "--", sudoers_path(name)], name)
    else:
        await _must(conn, [*sudo, "rm", "-f", "--", sudoers_path(name)], name)


async def remove_account(conn: Connection, name: str) -> None:
    """Stop the account's processes, delete it with its home and its sudoers file."""
    sudo = sudo_prefix(conn.target.user)
    await _must(conn, [*sudo, "rm", "-f", "--", sudoers_path(name)], name)
    await conn.run([*sudo, "pkill", "-KILL", "-u", name])  # exit 1: it had none
    result = await conn.run([*sudo, "userdel", "--force", "--remove", "--", name])
    if result.exit_code not in (0, 6, 12):  # 6: no such user; 12: could not remove home
        raise _failed("userdel", name, result.exit_code, result.stderr)


async def _must(conn: Connection, argv: list[str], name: str, stdin: bytes | None = None) -> None:
    result = await conn.run(argv, stdin=stdin)
    if result.exit_code != 0:
        command = next(a for a in argv if a not in ("sudo", "-n", "runuser") and a[0] != "-")
        raise _failed(command, name, result.exit_code, result.stderr)


def _failed(command: str, name: str, code: int | None, stderr: bytes) -> RemoteError:
    detail = stderr.decode(errors="replace").strip()[-300:]
    return RemoteError(
        f"{command} for node user {name} failed (exit {code}): {detail}",
        code="UserAccountError",
    )


# -- one operation, at once, over its own connection (for the CLI) -------------------


def _on_node(target: Target, work: Callable[[Connection], Awaitable[T]]) -> T:
    async def run() -> T:
        conn = await Connection.open(target)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def create_on_node(
    target: Target,
    user: dict[str, Any],
    what: str,
    certs: Sequence[certificates.NodeCertificate] = (),
) -> None:
    """Create a validated node user's account on the node ``target`` reaches, with a
    ``~/certs`` copy of the pool's ``certs`` whose visibility names ``remoteuser``.
    Raises Conflict ``NodeUserExists`` or ``NodeUserNotManaged`` if the name is taken."""

    async def work(conn: Connection) -> None:
        if await check_ours(conn, user["name"], what) is not None:
            raise Conflict(
                f"the node already has an account {user['name']!r}",
                code="NodeUserExists",
                target=what,
            )
        await create_account(conn, user)
        await certificates.copy_for_user(conn, user["name"], list(certs))

    _on_node(target, work)


def update_on_node(target: Target, user: dict[str, Any], what: str) -> None:
    """Replace the settings of fleet's account ``user["name"]``. Raises NotFound
    ``NodeUserNotFound`` if it is gone, Conflict ``NodeUserNotManaged`` if not fleet's."""

    async def work(conn: Connection) -> None:
        if await check_ours(conn, user["name"], what) is None:
            raise NotFound(
                "the account is gone from the node", code="NodeUserNotFound", target=what
            )
        await apply_settings(conn, user)

    _on_node(target, work)


def delete_on_node(target: Target, name: str, recorded: bool, what: str) -> None:
    """Remove fleet's account ``name`` (``recorded``: fleet's table lists it). Raises
    Conflict ``NodeUserNotManaged`` for an account fleet did not create (or has no record
    of), NotFound ``NodeUserNotFound`` when neither the record nor the account exists."""

    async def work(conn: Connection) -> None:
        account = await check_ours(conn, name, what)
        if not recorded:
            raise _unrecorded(name, account is not None, what)
        if account is not None:
            await remove_account(conn, name)

    _on_node(target, work)


def refuse_unrecorded(target: Target, name: str, what: str) -> NoReturn:
    """Raise for a name fleet has no record of: Conflict ``NodeUserNotManaged`` (exit 4)
    if the node has such an account, else NotFound ``NodeUserNotFound``."""

    async def work(conn: Connection) -> None:
        account = await check_ours(conn, name, what)
        raise _unrecorded(name, account is not None, what)

    _on_node(target, work)
    raise AssertionError("work always raises")


def _unrecorded(name: str, on_node: bool, what: str) -> FleetError:
    if on_node:  # fleet's marker, but not fleet's record: leave it
        return Conflict(
            f"fleet has no record of creating {name!r}; it is not modified or deleted",
            code="NodeUserNotManaged",
            target=what,
        )
    return NotFound(f"no node user {name!r}", code="NodeUserNotFound", target=what)


# -- the controller's expiry sweep ----------------------------------------------------


class NodeUserSweep(PeriodicPass):
    """Removes node users whose ``expiryTime`` has passed, on nodes that are connected."""

    async def sweep(self) -> None:
        with self.c.store.read() as s:
            due = list(s.exec(select(NodeUser).where(col(NodeUser.expiry_time) <= time.time())))
        for user in due:
            link = self.c.links.get(user.node_id)
            if link is None or not link.ready or link.conn is None:
                continue  # a later pass, once the node is back
            try:
                await expire(link.conn, user.node_id, user.name)
            except FleetError as exc:
                log.warning("node %s: expiring user %s failed: %s", user.node_id, user.name, exc)
                continue
            with self.c.store.session() as s:
                row = s.get(NodeUser, (user.node_id, user.name))
                if row is not None and row.expiry_time <= time.time():
                    s.delete(row)


async def expire(conn: Connection, node_id: str, name: str) -> None:
    """Remove an expired node user's account from its node, if it is still fleet's."""
    target = f"node user {node_id}/{name}"
    try:
        if await check_ours(conn, name, target) is not None:
            await remove_account(conn, name)
    except Conflict:
        log.warning("%s: the account is no longer fleet's; dropping the record only", target)
        return
    log.info("%s expired and was removed", target)
