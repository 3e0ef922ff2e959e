"""``fleet account``: keys shown once and kept encrypted, list without keys, rotation,
deletion, and the errors users hit."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from sqlalchemy import text

from fleet.errors import EXIT_BAD_INPUT, EXIT_CONFLICT, EXIT_NOT_FOUND
from fleet.service.accounts import account_keys
from fleet.settings import Settings
from fleet.store import Store
from tests.conftest import Fleet, Result


def _keys(fleet: Fleet, name: str) -> list[str] | None:
    """What the API server would get for account ``name``."""
    settings = Settings.resolve(fleet.home)
    store = Store(settings.db_url)
    try:
        return account_keys(store, settings, name)
    finally:
        store.close()


def _error(result: Result) -> Any:
    return json.loads(result.stderr)["error"]


def test_create_prints_the_key_once_and_it_decodes_to_64_bytes(fleet: Fleet) -> None:
    created = fleet.json("account", "create", "alice")
    assert set(created) == {"name", "key"}
    assert created["name"] == "alice"
    assert len(base64.b64decode(created["key"], validate=True)) == 64
    assert _keys(fleet, "alice") == [created["key"]]
    table = fleet("account", "create", "bob").stdout.splitlines()
    assert "shown only this once" in table[0]
    assert _keys(fleet, "bob") == [table[1]]
    assert len(base64.b64decode(table[1], validate=True)) == 64


def test_list_shows_names_and_times_but_never_a_key(fleet: Fleet) -> None:
    keys = [fleet.json("account", "create", name)["key"] for name in ("bob", "alice")]
    listed = fleet.json("account", "list")
    assert [a["name"] for a in listed] == ["alice", "bob"]
    assert all(set(a) == {"name", "creationTime", "keyRotationTime"} for a in listed)
    assert all(a["keyRotationTime"] is None for a in listed)
    for output in (fleet("account", "list").stdout, str(listed)):
        assert all(key not in output for key in keys)
    assert "alice" in fleet("account", "list").stdout


def test_rotate_key_replaces_the_key(fleet: Fleet) -> None:
    old = fleet.json("account", "create", "alice")["key"]
    rotated = fleet.json("account", "rotate-key", "alice")
    assert set(rotated) == {"name", "key"} and rotated["name"] == "alice"
    assert rotated["key"] != old
    assert len(base64.b64decode(rotated["key"], validate=True)) == 64
    assert _keys(fleet, "alice") == [rotated["key"]]
    assert fleet.json("account", "list")[0]["keyRotationTime"] is not None
    table = fleet("account", "rotate-key", "alice").stdout.splitlines()
    assert "no longer works" in table[0]
    assert _keys(fleet, "alice") == [table[1]]


def test_delete_removes_the_account_and_its_key(fleet: Fleet) -> None:
    fleet("account", "create", "alice")
    fleet("account", "create", "bob")
    assert fleet.json("account", "delete", "alice") == {"name": "alice", "deleted": True}
    assert [a["name"] for a in fleet.json("account", "list")] == ["bob"]
    assert _keys(fleet, "alice") is None
    store = Store(Settings.resolve(fleet.home).db_url)
    try:
        with store.engine.connect() as conn:
            purposes = [row[0] for row in conn.execute(text("SELECT purpose FROM secrets"))]
    finally:
        store.close()
    assert purposes == ["account bob key"]


@pytest.mark.parametrize(
    "name", ["ab", "a" * 25, "Alice", "al-ice", "al_ice", "al ice", "ålice", "", "../x"]
)
def test_a_name_that_is_not_an_azure_account_name_is_refused(fleet: Fleet, name: str) -> None:
    result = fleet("account", "create", name, "-o", "json", check=False)
    assert result.code == EXIT_BAD_INPUT
    error = _error(result)
    assert (error["code"], error["field"]) == ("InvalidPropertyValue", "name")
    assert fleet.json("account", "list") == []


def test_names_of_3_and_24_characters_are_accepted(fleet: Fleet) -> None:
    for name in ("abc", "a1" * 12):
        assert fleet.json("account", "create", name)["name"] == name


def test_a_duplicate_account_is_refused_and_keeps_its_key(fleet: Fleet) -> None:
    key = fleet.json("account", "create", "alice")["key"]
    result = fleet("account", "create", "alice", "-o", "json", check=False)
    assert result.code == EXIT_CONFLICT
    assert _error(result)["code"] == "AccountExists"
    assert _keys(fleet, "alice") == [key]


@pytest.mark.parametrize("command", [("rotate-key", "nobody"), ("delete", "nobody")])
def test_a_missing_account_is_not_found(fleet: Fleet, command: tuple[str, str]) -> None:
    result = fleet("account", *command, "-o", "json", check=False)
    assert result.code == EXIT_NOT_FOUND
    assert _error(result)["code"] == "AccountNotFound"


def test_keys_are_not_stored_in_plain_text(fleet: Fleet) -> None:
    keys = [fleet.json("account", "create", name)["key"] for name in ("alice", "bob")]
    keys.append(fleet.json("account", "rotate-key", "bob")["key"])
    files = [p for p in fleet.home.rglob("fleet.db*") if p.is_file()]
    assert files
    raw = b"".join(p.read_bytes() for p in files)
    for key in keys:
        assert key.encode() not in raw
        assert base64.b64decode(key) not in raw
