"""Where fleet keeps its state: FLEET_HOME, the database URL and the file store."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_home() -> Path:
    """Return ``$FLEET_HOME``, else ``$XDG_DATA_HOME/fleet``, else ``~/.local/share/fleet``."""
    if env := os.environ.get("FLEET_HOME"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "fleet"


@dataclass(frozen=True)
class Settings:
    """Resolved locations for one fleet installation."""

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
