"""Controller state is the owner's only: FLEET_HOME 0700, the SQLite database and its WAL 0600."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.conftest import Fleet


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_home_and_its_database_are_owner_only(fleet: Fleet, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("h1 ansible_host=127.0.0.1 ansible_user=root\n")
    fleet("host", "import", str(inventory))
    assert _mode(fleet.home) == 0o700
    db = fleet.home / "fleet.db"
    for path in (db, db.with_name("fleet.db-wal"), db.with_name("fleet.db-shm")):
        if path.exists():
            assert _mode(path) == 0o600, path


def test_an_existing_open_home_and_database_are_tightened(fleet: Fleet) -> None:
    fleet("host", "list")
    fleet.home.chmod(0o755)
    (fleet.home / "fleet.db").chmod(0o644)
    fleet("host", "list")
    assert _mode(fleet.home) == 0o700
    assert _mode(fleet.home / "fleet.db") == 0o600


def test_a_database_outside_the_home_is_created_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere" / "state.db"
    cli = Fleet(tmp_path / "home", {"FLEET_DB_URL": f"sqlite:///{db}"})
    cli("host", "list")
    assert _mode(db) == 0o600
    assert _mode(db.parent) == 0o700
