"""The node agent that fleet uploads to each node, and helpers to read and name it.

``fleet_agent.py`` is a stdlib-only script (Python 3.8+) speaking the protocol in
``docs/agent-protocol.md``. The controller uploads its bytes to
``<root>/volatile/agent-<agent_hash()[:16]>.py`` and runs it there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

AGENT_FILE = "fleet_agent.py"


def agent_source() -> bytes:
    """Return the bytes of ``fleet_agent.py`` as shipped with this package."""
    return (Path(__file__).parent / AGENT_FILE).read_bytes()


def agent_hash() -> str:
    """Return the SHA-256 hex digest of :func:`agent_source`."""
    return hashlib.sha256(agent_source()).hexdigest()
