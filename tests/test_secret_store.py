"""The secret store: Fernet at rest, the key outside the database, atomic rotation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from fleet import secret_store
from fleet.secret_store import SecretKeyError, SecretStore
from fleet.settings import Settings
from fleet.store import Store
from tests.conftest import pg_database

PLAIN = b"correct horse battery staple"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'home' / 'fleet.db'}"
    else:
        yield from pg_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def settings(tmp_path: Path, store_url: str, monkeypatch) -> Settings:
    monkeypatch.delenv(secret_store.KEY_FILE_ENV, raising=False)
    return Settings.resolve(tmp_path / "home", store_url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store(settings.db_url)
    yield s
    s.close()


def _ciphertexts(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT ciphertext FROM secrets ORDER BY id"))]


def test_a_secret_reads_back_and_is_not_stored_in_the_clear(store, settings):
    keys = SecretStore.of(settings)
    with store.session() as s:
        sid = keys.put(s, "test password", PLAIN)
    with store.session() as s:
        assert keys.get(s, sid) == PLAIN
    assert all(PLAIN.decode() not in c for c in _ciphertexts(store))


def test_the_key_file_is_created_owner_only_under_fleet_home(store, settings):
    SecretStore.of(settings)
    path = settings.home / "secret.key"
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_key_file_can_live_elsewhere(store, settings, tmp_path, monkeypatch):
    elsewhere = tmp_path / "vault" / "fleet.key"
    monkeypatch.setenv(secret_store.KEY_FILE_ENV, str(elsewhere))
    SecretStore.of(settings)
    assert elsewhere.exists() and not (settings.home / "secret.key").exists()


def test_rotate_keeps_every_secret_readable_and_changes_the_ciphertexts(store, settings):
    keys = SecretStore.of(settings)
    with store.session() as s:
        ids = [keys.put(s, f"secret {i}", PLAIN + bytes([i])) for i in range(3)]
    before = _ciphertexts(store)
    old_key = (settings.home / "secret.key").read_bytes()
    assert secret_store.rotate(store, settings) == 3
    after = _ciphertexts(store)
    assert len(after) == 3 and not set(before) & set(after)
    assert (settings.home / "secret.key").read_bytes() != old_key
    assert len((settings.home / "secret.key").read_bytes().split()) == 1
    fresh = SecretStore.of(settings)
    with store.session() as s:
        assert [fresh.get(s, sid) for sid in ids] == [PLAIN + bytes([i]) for i in range(3)]


def test_a_rotation_cut_short_after_the_new_key_was_written_still_reads_every_secret(
    store, settings
):
    keys = SecretStore.of(settings)
    with store.session() as s:
        sid = keys.put(s, "secret", PLAIN)
    path = settings.home / "secret.key"
    # What a crash between the two key file writes leaves: [new, old], rows under old.
    new = secret_store.Fernet.generate_key()
    path.write_bytes(new + b"\n" + path.read_bytes())
    with store.session() as s:
        assert SecretStore.of(settings).get(s, sid) == PLAIN
    secret_store.rotate(store, settings)
    with store.session() as s:
        assert SecretStore.of(settings).get(s, sid) == PLAIN


def test_a_wrong_key_gives_a_clear_error(store, settings):
    keys = SecretStore.of(settings)
    with store.session() as s:
        sid = keys.put(s, "pool p user alice password", PLAIN)
    (settings.home / "secret.key").write_bytes(secret_store.Fernet.generate_key() + b"\n")
    with store.session() as s, pytest.raises(SecretKeyError) as err:
        SecretStore.of(settings).get(s, sid)
    assert err.value.code == "SecretKeyMismatch"
    assert "pool p user alice password" in err.value.message
    with pytest.raises(SecretKeyError):
        secret_store.rotate(store, settings)


def test_a_key_file_that_is_not_a_fernet_key_is_refused(store, settings):
    settings.home.mkdir(parents=True, exist_ok=True)
    path = settings.home / "secret.key"
    path.write_bytes(b"not a key\n")
    with pytest.raises(SecretKeyError) as err:
        SecretStore.of(settings)
    assert err.value.code == "SecretKeyInvalid"
