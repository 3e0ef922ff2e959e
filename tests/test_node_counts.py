"""``fleet pool node-counts``: Azure's per-state node counts of each pool, read cheaply,
and on the real lab the states counted as nodes go idle, run tasks and fail start tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet import reads
from fleet.service import pools as service
from fleet.store import Store
from fleet.tables import Node
from tests.conftest import Fleet, make_pool, wait_for, wait_for_idle_nodes
from tests.test_cli_imports import _orm_modules

#: Azure's NodeCounts properties (REST "List Pool Node Counts"), total last.
AZURE_KEYS = [
    "creating",
    "deallocated",
    "deallocating",
    "idle",
    "leavingPool",
    "offline",
    "preempted",
    "rebooting",
    "reimaging",
    "running",
    "startTaskFailed",
    "starting",
    "unknown",
    "unusable",
    "upgradingOS",
    "waitingForStartTask",
    "total",
]


@pytest.fixture
def two_pools(fleet: Fleet, tmp_path: Path) -> Fleet:
    """Pools b (nodes h1, h2) and a (node h3), none reachable: their nodes stay creating
    until the test sets their states."""
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        "[all]\n" + "".join(f"h{i} ansible_host=127.0.0.1 ansible_port={i}\n" for i in range(1, 4))
    )
    fleet("host", "import", str(inventory))
    fleet("pool", "create", "--id", "b", "--hosts", "h1,h2")
    fleet("pool", "create", "--id", "a", "--hosts", "h3")
    return fleet


def _set_states(fleet: Fleet, states: dict[str, str]) -> None:
    store = Store(f"sqlite:///{fleet.home / 'fleet.db'}")
    try:
        with store.session() as s:
            for node_id, state in states.items():
                node = s.get(Node, node_id)
                assert node is not None
                node.state = state
    finally:
        store.close()


def test_counts_have_azures_keys_per_pool_in_id_order(two_pools: Fleet) -> None:
    _set_states(two_pools, {"h1": "waitingforstarttask", "h2": "leavingpool", "h3": "idle"})
    counts = two_pools.json("pool", "node-counts")
    assert [c["poolId"] for c in counts] == ["a", "b"]
    for c in counts:
        assert list(c) == ["poolId", "dedicated", "lowPriority"]
        assert list(c["dedicated"]) == AZURE_KEYS
        assert c["lowPriority"] == dict.fromkeys(AZURE_KEYS, 0)
    a, b = counts
    assert a["dedicated"] == dict.fromkeys(AZURE_KEYS, 0) | {"idle": 1, "total": 1}
    assert b["dedicated"] == dict.fromkeys(AZURE_KEYS, 0) | {
        "waitingForStartTask": 1,
        "leavingPool": 1,
        "total": 2,
    }


def test_one_pool_is_counted_alone_and_the_table_shows_its_states(two_pools: Fleet) -> None:
    _set_states(two_pools, {"h1": "starttaskfailed"})
    only = two_pools.json("pool", "node-counts", "b")
    assert [c["poolId"] for c in only] == ["b"]
    assert only[0]["dedicated"]["startTaskFailed"] == 1
    assert only[0]["dedicated"]["creating"] == 1
    table = two_pools("pool", "node-counts").stdout.splitlines()
    assert table[0].split() == ["POOL", "TOTAL", "NODE", "STATES"]
    assert table[1].split() == ["a", "1", "creating", "1"]
    assert table[2].split()[:2] == ["b", "2"]
    assert "startTaskFailed 1" in table[2] and "creating 1" in table[2]
    assert "idle" not in table[2]  # states without nodes are left out of the table


def test_an_unknown_pool_is_not_found(two_pools: Fleet) -> None:
    result = two_pools("pool", "node-counts", "nope", "-o", "json", check=False)
    assert result.code == 3
    assert json.loads(result.stderr)["error"]["code"] == "PoolNotFound"
    assert two_pools("pool", "node-counts", "nope", check=False).code == 3


def test_no_pools_is_an_empty_list(fleet: Fleet) -> None:
    assert fleet.json("pool", "node-counts") == []


def test_counts_are_read_without_the_orm_and_agree_with_the_service(
    two_pools: Fleet, tmp_path: Path
) -> None:
    _set_states(two_pools, {"h2": "running"})
    for args in (("pool", "node-counts"), ("pool", "node-counts", "b")):
        for output in ("table", "json"):
            loaded, out = _orm_modules(two_pools, tmp_path, *args, "-o", output)
            assert loaded == [], args
            assert out == two_pools(*args, "-o", output).stdout
    url = f"sqlite:///{two_pools.home / 'fleet.db'}"
    store = Store(url)
    try:
        for pool in (None, "a", "b"):
            assert service.pool_node_counts(store, pool) == reads.pool_node_counts(
                reads.Reader(url), pool
            )
    finally:
        store.close()


@pytest.mark.lab
def test_node_states_on_the_lab_are_counted(fleet: Fleet, lab_inventory: Path, controller) -> None:
    hosts = make_pool(fleet, lab_inventory, "p", 2)
    free = [h["id"] for h in fleet.json("host", "list") if h["id"] not in hosts]
    fleet("pool", "create", "--id", "bad", "--hosts", free[0], "--start-task", "/bin/false")
    controller()
    wait_for_idle_nodes(fleet, "p")
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet("task", "create", "--job", "j", "--id", "t", "--command-line", "sleep 60")

    def counts() -> dict[str, dict[str, int]] | None:
        found = {c["poolId"]: c["dedicated"] for c in fleet.json("pool", "node-counts")}
        done = found["p"]["running"] == 1 and found["bad"]["startTaskFailed"] == 1
        return found if done else None

    found = wait_for(counts, 60, 0.3, "one running node in p and a failed start task")
    assert found["p"]["idle"] == 1 and found["p"]["total"] == 2
    assert found["bad"]["total"] == 1
    fleet("task", "terminate", "--job", "j", "--id", "t")
    wait_for(
        lambda: fleet.json("pool", "node-counts", "p")[0]["dedicated"]["idle"] == 2,
        30,
        message="both nodes of p idle again",
    )
