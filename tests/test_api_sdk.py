"""Unmodified azure-batch SDK programs (15.1 and the legacy 14.2) drive fleet over its REST
API against the loopback lab: pool, job, 250 tasks, poll, stdout, terminate, delete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.api_client import free_port
from tests.azure_sdk import run_sdk
from tests.conftest import wait_for

pytestmark = pytest.mark.lab

PROGRAMS = Path(__file__).parent / "sdk_programs"


@pytest.mark.parametrize(
    ("version", "program"), [("15.1.0", "batch15.py"), ("14.2.0", "batch14.py")]
)
def test_an_unmodified_sdk_program_runs_a_batch(fleet, lab_inventory, controller, version, program):
    # the pool claims two free hosts by itself, those labelled with its vmSize first
    lines = lab_inventory.read_text().splitlines()
    last = max(i for i, line in enumerate(lines) if "ansible_host=" in line)
    lines[last] += " vmSize=standard_d2s_v3"
    lab_inventory.write_text("\n".join(lines) + "\n")
    fleet("host", "import", str(lab_inventory))
    labelled = [h["id"] for h in fleet.json("host", "list") if h.get("labels", {}).get("vmSize")]
    assert len(labelled) == 1
    key = fleet.json("account", "create", "sdk")["key"]
    port = free_port()
    proc = controller("--listen", f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}"

    def up():
        import urllib.request

        try:
            return urllib.request.urlopen(url + "/openapi.json", timeout=2).status == 200
        except OSError:
            return False

    wait_for(up, 30, message="the API to listen")
    code = (PROGRAMS / program).read_text()
    out = json.loads(run_sdk(version, code, [url, "sdk", key, "2"], timeout=300).splitlines()[-1])

    assert out["added"] == 250 and out["statuses"] in (
        ["success"],
        ["TaskAddStatus.success"],
        ["BatchTaskAddStatus.SUCCESS"],
    )
    assert out["exitCodes"] == [0]
    assert out["stdout"] == "task 7\n" and out["size"] == len("task 7\n")
    assert out["vmSize"] == "standard_d2s_v3"
    assert out["jobGone"]
    pool = fleet.json("pool", "show", "sdk15pool" if version.startswith("15") else "sdk14pool")
    nodes = {n["id"] for n in pool.get("nodes", [])} or {
        n["id"] for n in fleet.json("node", "list", "--pool", pool["id"])
    }
    assert len(nodes) == 2 and labelled[0] in nodes  # the vmSize-labelled host came first
    assert "Traceback" not in proc.log_text()
