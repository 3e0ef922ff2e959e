"""Background passes the controller starts every so often, never two of one kind at once."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleet.context import Context


class PeriodicPass:
    """Starts :meth:`sweep` in the background when ``every`` seconds have passed since the
    last start and no pass of this kind is running. Subclasses write ``sweep``."""

    def __init__(self, ctx: Context, every: float) -> None:
        self.c = ctx
        self.every = every
        self._last = 0.0
        self._running = False

    def tick(self) -> None:
        """Start a pass when one is due and none is running."""
        now = time.monotonic()
        if self._running or now - self._last < self.every:
            return
        self._last = now
        self._running = True
        self.c.spawn(self._pass())

    async def _pass(self) -> None:
        try:
            await self.sweep()
        finally:
            self._running = False

    async def sweep(self) -> None:
        """One pass; a node that is not connected is left to a later one."""
        raise NotImplementedError
