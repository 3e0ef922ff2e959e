"""Where fleet keeps its state: FLEET_HOME, the database URL and the file store."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import NamedTuple

#: Controller state (the database, collected output, the file store) is the owner's only.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def default_home() -> Path:
    """Return ``$FLEET_HOME``, else ``$XDG_DATA_HOME/fleet``, else ``~/.local/share/fleet``."""
    if env := os.environ.get("FLEET_HOME"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "fleet"


class Settings(NamedTuple):
    """Resolved locations for one fleet installation (a NamedTuple, not a dataclass:
    ``fleet exec`` imports this, and dataclasses costs it 14 ms of start-up)."""

    home: Path
    db_url: str

    @classmethod
    def resolve(cls, home: str | Path | None = None, db_url: str | None = None) -> Settings:
        """Return settings from explicit values, then environment, then defaults."""
        home_path = Path(home).expanduser() if home else default_home()
        url = db_url or os.environ.get("FLEET_DB_URL") or f"sqlite:///{home_path / 'fleet.db'}"
        return cls(home=home_path.absolute(), db_url=url)

    @property
    def task_files(self) -> Path:
        """Directory where collected task output lives: ``task_files/<job>/<task>/``."""
        return self.home / "taskfiles"

    @property
    def node_files(self) -> Path:
        """Directory where collected start-task output lives: ``node_files/<node>/startup/``."""
        return self.home / "nodefiles"

    @property
    def files(self) -> Path:
        """Root of the controller's file store: ``files/<container>/<path>``."""
        return self.home / "files"


def private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents owner-only (0700), and take group and other
    permissions off ``path`` if it exists with them (unless it is a shared sticky dir such
    as /tmp). Returns ``path``."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    mode = path.stat().st_mode
    if mode & 0o077 and not mode & stat.S_ISVTX:
        path.chmod(PRIVATE_DIR_MODE)
    return path


def private_file(path: Path) -> None:
    """Create ``path`` empty and owner-only (0600) if it is missing, and take group and
    other permissions off it if it exists with them."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE_MODE))
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(PRIVATE_FILE_MODE)
