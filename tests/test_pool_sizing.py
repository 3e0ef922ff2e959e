"""Pool sizing on the loopback lab: hostSelector pools created at a target, resized up and
down by a running controller (idle nodes leave first, the hosts come back free with their
roots gone, power hooks run), too few hosts, stop-resize, and bad input refused whole."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.lab

WORKERS = 3  # lab hosts labelled role=worker; the others are role=db


def _labelled_inventory(lab_inventory: Path, tmp_path: Path, hooks: bool = False) -> Path:
    """The lab inventory with a role label on every host (its first WORKERS hosts are
    workers), and with power hooks that log to power.log when ``hooks``."""
    log = tmp_path / "power.log"
    lines, hosts = [], 0
    for line in lab_inventory.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            line += f" role={'worker' if hosts < WORKERS else 'db'}"
            hosts += 1
            if hooks:
                for kind in ("on", "off"):
                    argv = ["/bin/sh", "-c", f'echo {kind} "$FLEET_HOST_ID" >> {log}']
                    line += f" fleet_power_{kind}_command={shlex.quote(shlex.join(argv))}"
        lines.append(line)
    path = tmp_path / "labelled.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def _import(fleet: Any, inventory: Path) -> list[str]:
    fleet("host", "import", str(inventory))
    return [h["id"] for h in fleet.json("host", "list") if h["labels"].get("role") == "worker"]


def _create(fleet: Any, tmp_path: Path, target: int, pool: str = "p", **extra: Any) -> Any:
    spec = {"id": pool, "hostSelector": {"labels": {"role": "worker"}}} | extra
    spec["targetDedicatedNodes"] = target
    path = tmp_path / f"{pool}.json"
    path.write_text(json.dumps(spec))
    return fleet.json("pool", "create", "--json-file", str(path))


def _nodes(fleet: Any, pool: str = "p") -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in fleet.json("node", "list", "--pool", pool)}


def _settled(fleet: Any, count: int, pool: str = "p") -> dict[str, Any]:
    """Wait until the pool is steady with ``count`` nodes, all idle or running."""

    def settled() -> dict[str, Any] | None:
        shown = fleet.json("pool", "show", pool)
        nodes = _nodes(fleet, pool)
        ok = (
            shown["allocationState"] == "steady"
            and len(nodes) == count
            and all(n["state"] in ("idle", "running") for n in nodes.values())
        )
        return shown if ok else None

    return wait_for(settled, 90, 0.2, f"pool {pool} steady with {count} ready nodes")


def _free(fleet: Any) -> set[str]:
    return {h["id"] for h in fleet.json("host", "list") if not h.get("poolId")}


def test_a_selector_pool_grows_and_shrinks_idle_nodes_first(
    fleet, lab_inventory, controller, tmp_path
):
    workers = _import(fleet, _labelled_inventory(lab_inventory, tmp_path, hooks=True))
    created = _create(fleet, tmp_path, 2)
    assert created["targetDedicatedNodes"] == 2 and created["currentDedicatedNodes"] == 2
    assert created["allocationState"] == "steady" and "resizeErrors" not in created
    assert set(_nodes(fleet)) == set(workers[:2])  # claimed at once, in id order
    controller()
    _settled(fleet, 2)

    grown = fleet.json("pool", "resize", "p", "--target-dedicated-nodes", "3")
    assert grown["targetDedicatedNodes"] == 3 and grown["allocationState"] == "resizing"
    shown = _settled(fleet, 3)
    assert shown["targetDedicatedNodes"] == 3 and set(_nodes(fleet)) == set(workers)

    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet("task", "create", "--job", "j", "--id", "t", "--command-line", "sleep 90")
    busy = wait_for(
        lambda: (
            fleet.json("task", "show", "--job", "j", "--id", "t").get("nodeInfo", {}).get("nodeId")
        ),
        60,
        message="task running",
    )
    roots = {i: Path(n["nodeRootDirectory"]) for i, n in _nodes(fleet).items()}
    shrunk = fleet.json("pool", "resize", "p", "--target-dedicated-nodes", "1")
    assert shrunk["targetDedicatedNodes"] == 1
    shown = _settled(fleet, 1)
    assert list(_nodes(fleet)) == [busy]  # the idle nodes went, the busy one stays
    assert "resizeErrors" not in shown
    gone = set(workers) - {busy}
    assert gone <= _free(fleet)
    assert not any(roots[i].exists() for i in gone) and roots[busy].exists()
    task = fleet.json("task", "show", "--job", "j", "--id", "t")
    assert task["state"] == "running" and task["executionInfo"]["requeueCount"] == 0

    power = tmp_path / "power.log"
    wait_for(lambda: power.exists() and power.read_text().count("off") == 2, 30)
    log = power.read_text().split("\n")
    assert sorted(line for line in log if line.startswith("on")) == [f"on {w}" for w in workers]
    assert sorted(line for line in log if line.startswith("off")) == sorted(
        f"off {w}" for w in gone
    )
    assert fleet("pool", "create", "--id", "q", "--hosts", min(gone)).code == 0  # free again


def test_too_few_matching_hosts_give_resize_errors(fleet, lab_inventory, controller, tmp_path):
    workers = _import(fleet, _labelled_inventory(lab_inventory, tmp_path))
    short = _create(fleet, tmp_path, WORKERS + 2, pool="big")
    assert short["currentDedicatedNodes"] == WORKERS and short["allocationState"] == "steady"
    (error,) = short["resizeErrors"]
    assert error["code"] == "InsufficientHosts"
    assert f"wanted {WORKERS + 2} more nodes, found {WORKERS} free hosts" in error["message"]
    assert "role=worker" in error["message"]
    fleet("pool", "delete", "big")

    _create(fleet, tmp_path, 1)
    running = controller()
    _settled(fleet, 1)
    asked = fleet.json("pool", "resize", "p", "--target-dedicated-nodes", "5")
    assert "resizeErrors" not in asked
    shown = _settled(fleet, WORKERS)
    assert shown["targetDedicatedNodes"] == 5 and shown["currentDedicatedNodes"] == WORKERS
    assert [e["code"] for e in shown["resizeErrors"]] == ["InsufficientHosts"]
    assert "wanted 4 more nodes, found 2 free hosts" in shown["resizeErrors"][0]["message"]
    assert set(_nodes(fleet)) == set(workers)  # never a host that does not match
    assert "powerOnCommand" not in running.log_text()  # these hosts have no power hooks


def test_stop_resize_cancels_growth_and_keeps_what_the_pool_has(
    fleet, lab_inventory, controller, tmp_path
):
    _import(fleet, _labelled_inventory(lab_inventory, tmp_path))
    _create(fleet, tmp_path, 1)
    asked = fleet.json("pool", "resize", "p", "--target-dedicated-nodes", "3")
    assert asked["allocationState"] == "resizing"  # no controller yet: nothing moves
    stopping = fleet.json("pool", "stop-resize", "p")
    assert stopping["allocationState"] == "stopping"
    assert stopping["allocationStateTransitionTime"] >= asked["allocationStateTransitionTime"]
    controller()
    shown = _settled(fleet, 1)
    assert shown["targetDedicatedNodes"] == 1 and shown["currentDedicatedNodes"] == 1
    again = fleet.json("pool", "stop-resize", "p")  # steady: nothing to stop
    assert again["allocationState"] == "steady"


def test_bad_sizing_input_is_refused_with_nothing_changed(fleet, lab_inventory, tmp_path):
    workers = _import(fleet, _labelled_inventory(lab_inventory, tmp_path))
    _create(fleet, tmp_path, 1)
    before = fleet.json("pool", "show", "p")
    cases = [
        (["--target-dedicated-nodes", "-1"], 2, "targetDedicatedNodes"),
        (["--target-dedicated-nodes", "2", "--node-deallocation-option", "later"], 2, "later"),
        (["--target-dedicated-nodes", "x"], 2, ""),
    ]
    for args, code, text in cases:
        bad = fleet("pool", "resize", "p", *args, check=False)
        assert bad.code == code and text in bad.stderr, (args, bad.stderr)
    missing = fleet("pool", "resize", "nope", "--target-dedicated-nodes", "1", check=False)
    assert missing.code == 3 and "PoolNotFound" in missing.stderr
    assert fleet("pool", "stop-resize", "nope", check=False).code == 3
    fleet("pool", "create", "--id", "listed", "--hosts", workers[-1])
    listed = fleet("pool", "resize", "listed", "--target-dedicated-nodes", "2", check=False)
    assert listed.code == 4 and "PoolNotResizable" in listed.stderr
    assert fleet.json("pool", "show", "p") == before
    fleet("pool", "resize", "p", "--target-dedicated-nodes", "2")
    busy = fleet("pool", "resize", "p", "--target-dedicated-nodes", "0", check=False)
    assert busy.code == 4 and "PoolNotSteady" in busy.stderr
    after = fleet.json("pool", "show", "p")
    assert (after["targetDedicatedNodes"], after["allocationState"]) == (2, "resizing")

    specs = [
        ({"hosts": [workers[0]], "hostSelector": {"labels": {}}}, "hostSelector"),
        ({"hostSelector": {"labels": {"role": 1}}}, "hostSelector.labels.role"),
        ({"hostSelector": {"role": "worker"}}, "hostSelector.role"),
        ({"hostSelector": {"labels": {}}, "targetDedicatedNodes": -2}, "targetDedicatedNodes"),
        ({"hostSelector": {"labels": {}}, "targetLowPriorityNodes": 1}, "targetLowPriorityNodes"),
        ({"hostSelector": {"labels": {}}, "resizeTimeout": "soon"}, "resizeTimeout"),
        ({}, "hosts"),
    ]
    for spec, field in specs:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps({"id": "bad"} | spec))
        bad = fleet("pool", "create", "--json-file", str(path), check=False)
        assert bad.code == 2 and field in bad.stderr, (spec, bad.stderr)
    assert fleet("pool", "show", "bad", check=False).code == 3
    assert len(_free(fleet)) == len(fleet.json("host", "list")) - 2
