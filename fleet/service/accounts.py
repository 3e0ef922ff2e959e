"""API accounts: create, list, rotate a key, delete; their SharedKey keys live in the secret store.

An account is what a REST API client names in ``Authorization: SharedKey NAME:SIG``
(fleet/api/shared_key.py). Its key is, as in Azure Batch, the base64 of 64 random
bytes; it is shown once, when created or rotated, and kept Fernet-encrypted.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from typing import Any

from sqlmodel import Session, select

from fleet import secret_store
from fleet.errors import BadInput, Conflict, NotFound
from fleet.secret_store import SecretStore
from fleet.settings import Settings
from fleet.store import Store
from fleet.tables import Account
from fleet.views import iso

#: Azure Batch account names: 3 to 24 lowercase letters and digits.
NAME_RE = re.compile(r"[a-z0-9]{3,24}")
#: How many random bytes a key has (Azure's keys are 64 bytes, base64: 88 characters).
KEY_BYTES = 64


def new_key() -> str:
    """Return a new key: the base64 of KEY_BYTES random bytes."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def check_name(name: str) -> None:
    """Raise BadInput (InvalidPropertyValue, field ``name``) unless ``name`` is an
    account name."""
    if not NAME_RE.fullmatch(name):
        raise BadInput(
            "an account name is 3 to 24 lowercase letters and digits",
            code="InvalidPropertyValue",
            target=f"account {name}",
            field="name",
        )


def create_account(store: Store, settings: Settings, name: str) -> tuple[Account, str]:
    """Create account ``name`` with a new key; return the account and its key.

    Raises BadInput (InvalidPropertyValue) or Conflict (AccountExists)."""
    check_name(name)
    key = new_key()
    vault = SecretStore.of(settings)
    with store.session() as s:
        if s.get(Account, name) is not None:
            raise Conflict(
                "an account with this name exists already",
                code="AccountExists",
                target=f"account {name}",
            )
        account = Account(
            name=name,
            secret_id=vault.put(s, f"account {name} key", key),
            created_at=time.time(),
        )
        s.add(account)
    return account, key


def list_accounts(store: Store) -> list[Account]:
    """Return every account, by name."""
    with store.read() as s:
        return list(s.exec(select(Account).order_by(Account.name)))


def rotate_key(store: Store, settings: Settings, name: str) -> str:
    """Give account ``name`` a new key and return it; the old key stops working at once.

    Raises NotFound (AccountNotFound)."""
    key = new_key()
    vault = SecretStore.of(settings)
    with store.session() as s:
        account = _get(s, name)
        old = account.secret_id
        account.secret_id = vault.put(s, f"account {name} key", key)
        account.key_rotated_at = time.time()
        s.add(account)
        secret_store.delete(s, old)
    return key


def delete_account(store: Store, name: str) -> None:
    """Delete account ``name`` and its key, in one transaction.

    Raises NotFound (AccountNotFound)."""
    with store.session() as s:
        account = _get(s, name)
        secret_store.delete(s, account.secret_id)
        s.delete(account)


def account_keys(store: Store, settings: Settings, name: str) -> list[str] | None:
    """Return the keys (base64) that sign account ``name``'s requests now, or None when
    there is no such account. A list, so that a grace period after a rotation can keep
    the old key too."""
    with store.read() as s:
        account = s.get(Account, name)
        if account is None:
            return None
        return [SecretStore.of(settings).get(s, account.secret_id).decode("ascii")]


def view(account: Account) -> dict[str, Any]:
    """Return the account as printed and served: never its key."""
    return {
        "name": account.name,
        "creationTime": iso(account.created_at),
        "keyRotationTime": iso(account.key_rotated_at),
    }


def _get(session: Session, name: str) -> Account:
    account = session.get(Account, name)
    if account is None:
        raise NotFound(
            f"there is no account {name!r}", code="AccountNotFound", target=f"account {name}"
        )
    return account
