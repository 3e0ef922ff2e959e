"""What route handlers work with: the settings, a store for writes and a reader for reads.

The API runs in the controller's process with a store of its own, so its writes wake the
controller the way the CLI's do (``Store.wake_controller``)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from fleet.reads import Reader
from fleet.settings import Settings
from fleet.store import Store

#: How long a looked-up account key is trusted before it is read again.
KEY_CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class Api:
    """The narrow context of every route handler."""

    settings: Settings
    store: Store
    reader: Reader
    _keys: dict[str, tuple[float, list[str] | None]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def keys(self, account: str) -> list[str] | None:
        """Return the keys of ``account`` (None: no such account), read from the secret
        store at most every KEY_CACHE_SECONDS, so a rotated or deleted key stops working
        within that."""
        from fleet.service.accounts import account_keys

        now = time.monotonic()
        with self._lock:
            hit = self._keys.get(account)
        if hit is not None and now - hit[0] < KEY_CACHE_SECONDS:
            return hit[1]
        keys = account_keys(self.store, self.settings, account)
        with self._lock:
            if len(self._keys) > 1000:  # unknown names from strangers: forget them all
                self._keys.clear()
            self._keys[account] = (now, keys)
        return keys

    @classmethod
    def of(cls, settings: Settings) -> Api:
        """Return the context for the database of ``settings``."""
        return cls(settings, Store(settings.db_url), Reader(settings.db_url))
