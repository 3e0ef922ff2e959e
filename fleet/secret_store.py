"""The secret store: private keys and passwords Fernet-encrypted at rest, the key outside the database.

This is the only module that uses Fernet. Secrets live in the ``secrets`` table as
Fernet tokens; other rows name them by id. The key file holds one key per line
(the first encrypts, every one decrypts: MultiFernet) and is kept owner-only
(0600): ``$FLEET_SECRET_KEY_FILE``, else ``$FLEET_HOME/secret.key``, created on
first use.

Rotation survives a crash at any point: the key file is first rewritten as
``[new, old...]`` (atomic rename), then every row is re-encrypted under the new
key in one transaction, then the file is rewritten as ``[new]``. Until the last
step both keys decrypt, so every secret stays readable whatever was committed.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlmodel import Session, select

from fleet.errors import FleetError, NotFound
from fleet.settings import PRIVATE_FILE_MODE, Settings, private_dir
from fleet.store import Store
from fleet.tables import Secret

KEY_FILE_ENV = "FLEET_SECRET_KEY_FILE"


class SecretKeyError(FleetError):
    """The key file is missing, unreadable, malformed, or does not decrypt the secrets."""

    code = "SecretKeyMismatch"


def key_file(settings: Settings) -> Path:
    """Return where the secret key lives: ``$FLEET_SECRET_KEY_FILE``, else
    ``<FLEET_HOME>/secret.key``."""
    env = os.environ.get(KEY_FILE_ENV)
    return Path(env).expanduser() if env else settings.home / "secret.key"


def _read_keys(path: Path) -> list[bytes]:
    try:
        mode = path.stat().st_mode
        text = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SecretKeyError(
            f"cannot read the secret key file {path}: {exc.strerror}",
            code="SecretKeyUnreadable",
            target=str(path),
        ) from None
    if mode & 0o077:
        path.chmod(PRIVATE_FILE_MODE)
    keys = [line.strip() for line in text.splitlines() if line.strip()]
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            raise SecretKeyError(
                f"the secret key file {path} is not a list of Fernet keys",
                code="SecretKeyInvalid",
                target=str(path),
            ) from None
    return keys


def _write_keys(path: Path, keys: list[bytes]) -> None:
    """Replace the key file atomically (temporary 0600 file, fsync, rename, fsync dir)."""
    if not path.parent.exists():
        private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        os.write(fd, b"".join(k + b"\n" for k in keys))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class SecretStore:
    """Encrypts and decrypts the ``secrets`` rows with the keys of one key file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        keys = _read_keys(path)
        if not keys:
            keys = [Fernet.generate_key()]
            _write_keys(path, keys)
        self.keys = keys
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    @classmethod
    def of(cls, settings: Settings) -> SecretStore:
        """Return the store for ``settings`` (the key file is created on first use)."""
        return cls(key_file(settings))

    def put(self, session: Session, purpose: str, plaintext: bytes | str) -> str:
        """Encrypt ``plaintext`` into a new row of ``session``; return its secret id."""
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        row = Secret(
            id=uuid.uuid4().hex,
            purpose=purpose,
            ciphertext=self._fernet.encrypt(data).decode("ascii"),
            created_at=time.time(),
        )
        session.add(row)
        return row.id

    def get(self, session: Session, secret_id: str) -> bytes:
        """Return the plaintext of secret ``secret_id``.

        Raises NotFound (SecretNotFound) or SecretKeyError (SecretKeyMismatch) when the
        key file's keys do not decrypt it."""
        row = session.get(Secret, secret_id)
        if row is None:
            raise NotFound(f"no secret with id {secret_id}", code="SecretNotFound", target="secret")
        return self._decrypt(row)

    def _decrypt(self, row: Secret) -> bytes:
        try:
            return self._fernet.decrypt(row.ciphertext.encode("ascii"))
        except InvalidToken:
            raise SecretKeyError(
                f"the key in {self.path} does not decrypt the secret ({row.purpose}): "
                f"the key file was replaced or belongs to another database; restore it, "
                f"or point {KEY_FILE_ENV} at the right one",
                target=str(self.path),
            ) from None


def delete(session: Session, secret_id: str | None) -> None:
    """Delete secret ``secret_id`` in ``session`` (None or a missing one is fine)."""
    if secret_id and (row := session.get(Secret, secret_id)) is not None:
        session.delete(row)


def rotate(store: Store, settings: Settings) -> int:
    """Re-encrypt every secret under a new key and return how many there were.

    Atomic across a crash (see the module docstring). Raises SecretKeyError, leaving
    every secret as it was, when the current keys do not decrypt one of them."""
    path = key_file(settings)
    current = SecretStore(path)
    with store.session() as s:  # check every row decrypts before anything changes
        rows = list(s.exec(select(Secret)))
        for row in rows:
            current._decrypt(row)
    new = Fernet.generate_key()
    _write_keys(path, [new, *current.keys])
    both = MultiFernet([Fernet(k) for k in [new, *current.keys]])
    with store.session() as s:
        rows = list(s.exec(select(Secret)))
        for row in rows:
            try:
                row.ciphertext = both.rotate(row.ciphertext.encode("ascii")).decode("ascii")
            except InvalidToken:
                raise SecretKeyError(
                    f"the key in {path} does not decrypt the secret ({row.purpose})",
                    target=str(path),
                ) from None
            s.add(row)
    _write_keys(path, [new])
    return len(rows)
