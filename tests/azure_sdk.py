"""The azure-batch SDKs for tests: run a Python snippet with one SDK version importable.

scripts/setup installs each version with its dependencies into
``.sdk/azure-batch-VERSION`` at the repository's root. The snippet runs in a subprocess
with that directory on ``PYTHONPATH`` and without site-packages (``-S``), so neither
fleet nor the test venv's packages mix with the SDK's own. The directory is found from
this file, so it is the checkout's even when the tests run against the installed wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

SDK_ROOT = Path(__file__).resolve().parent.parent / ".sdk"
#: The legacy client (BatchServiceClient, batch_auth.SharedKeyCredentials) and the
#: current one (BatchClient, AzureNamedKeyCredential).
VERSIONS = ("14.2.0", "15.1.0")


def sdk_dir(version: str) -> Path:
    """Return where scripts/setup installs azure-batch ``version``."""
    return SDK_ROOT / f"azure-batch-{version}"


def run_sdk(version: str, code: str, args: Sequence[str] = (), timeout: float = 120) -> str:
    """Run ``code`` (its ``sys.argv[1:]`` is ``args``) with azure-batch ``version``
    importable and return its stdout.

    Skips the test when that version is not installed; fails it, with the snippet's
    stderr, when the snippet exits non-zero."""
    where = sdk_dir(version)
    if not (where / "azure" / "batch").is_dir():
        pytest.skip(f"azure-batch {version} is not installed in {where}: run scripts/setup")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(where)
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"the azure-batch {version} snippet exited {proc.returncode}:\n{proc.stderr}"
        )
    return proc.stdout
