"""The node agent that fleet uploads to each node, its task client, and helpers to read them.

``fleet_agent.py`` is a stdlib-only script (Python 3.8+) speaking the protocol in
``docs/agent-protocol.md``. The controller uploads its bytes to
``<root>/volatile/agent-<agent_hash()[:16]>.py`` and runs it there.

``fleet_task.py`` (stdlib only, Python 3.8+) is the node-side client through which a
task calls the controller ("Calls from tasks" in the protocol); the controller uploads
it next to the agent, executable.

``fleet_unpack.py`` (stdlib only, Python 3.8+) unpacks application packages on the node,
checking every member again; the controller uploads it next to the agent, named by its
content hash, and runs it with a fixed argv.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

AGENT_FILE = "fleet_agent.py"
CLIENT_FILE = "fleet_task.py"
UNPACKER_FILE = "fleet_unpack.py"


def agent_source() -> bytes:
    """Return the bytes of ``fleet_agent.py`` as shipped with this package."""
    return (Path(__file__).parent / AGENT_FILE).read_bytes()


def agent_hash() -> str:
    """Return the SHA-256 hex digest of :func:`agent_source`."""
    return hashlib.sha256(agent_source()).hexdigest()


def client_source() -> bytes:
    """Return the bytes of ``fleet_task.py`` (the ``fleet-task`` client) as shipped."""
    return (Path(__file__).parent / CLIENT_FILE).read_bytes()


def client_hash() -> str:
    """Return the SHA-256 hex digest of :func:`client_source`."""
    return hashlib.sha256(client_source()).hexdigest()


def unpacker_source() -> bytes:
    """Return the bytes of ``fleet_unpack.py`` (the node-side package unpacker) as shipped."""
    return (Path(__file__).parent / UNPACKER_FILE).read_bytes()


def unpacker_hash() -> str:
    """Return the SHA-256 hex digest of :func:`unpacker_source`."""
    return hashlib.sha256(unpacker_source()).hexdigest()
