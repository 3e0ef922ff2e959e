"""Auto pools on the real lab: a job or a job schedule makes its pool from
``poolInfo.autoPoolSpecification`` and fleet deletes it when its owner ends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.lab


def _hosts(fleet: Any, inventory: Any, n: int) -> list[str]:
    fleet("host", "import", str(inventory))
    return [h["id"] for h in fleet.json("host", "list")][:n]


def _auto(hosts: list[str], lifetime: str = "job", **extra: Any) -> dict[str, Any]:
    return {
        "autoPoolSpecification": {
            "autoPoolIdPrefix": "ap",
            "poolLifetimeOption": lifetime,
            "pool": {"hosts": hosts, "taskSlotsPerNode": 2},
            **extra,
        }
    }


def _create(fleet: Any, tmp_path: Any, kind: str, data: dict[str, Any], check: bool = True) -> Any:
    path = tmp_path / f"{kind}-{data['id']}.json"
    path.write_text(json.dumps(data))
    return fleet(kind, "create", "--json-file", str(path), "-o", "json", check=check)


def _pool_ids(fleet: Any) -> set[str]:
    return {p["id"] for p in fleet.json("pool", "list")}


def test_a_jobs_auto_pool_is_made_with_it_and_deleted_when_it_completes(
    fleet, lab_inventory, controller, tmp_path
):
    hosts = _hosts(fleet, lab_inventory, 2)
    controller()
    job = {
        "id": "j",
        "poolInfo": _auto(hosts),
        "jobManagerTask": {"id": "m", "commandLine": "sleep 2"},
    }
    made = _create(fleet, tmp_path, "job", job).json()
    pool_id = made["executionInfo"]["poolId"]
    assert pool_id.startswith("ap_") and len(pool_id) == len("ap_") + 36
    assert _pool_ids(fleet) == {pool_id}
    assert made["poolInfo"] == job["poolInfo"] | {
        "autoPoolSpecification": made["poolInfo"]["autoPoolSpecification"]
    }
    assert sorted(n["id"] for n in fleet.json("node", "list", "--pool", pool_id)) == sorted(hosts)
    wait_for(
        lambda: fleet.json("job", "show", "j")["state"] == "completed",
        timeout=90,
        message="the job completes after its manager",
    )
    assert fleet.json("task", "show", "--job", "j", "--id", "m")["executionInfo"]["exitCode"] == 0
    wait_for(lambda: not _pool_ids(fleet), timeout=30, message="the auto pool deleted")
    # the hosts are free again, and show -o json of the job is valid create input
    shown = fleet.json("job", "show", "j")
    shown["id"] = "j2"
    again = _create(fleet, tmp_path, "job", shown).json()
    assert again["executionInfo"]["poolId"] != pool_id
    fleet("job", "terminate", "j2")
    wait_for(lambda: not _pool_ids(fleet), timeout=60, message="the second auto pool deleted")


def test_keep_alive_keeps_the_pool_and_a_busy_host_refuses_the_job_whole(
    fleet, lab_inventory, controller, tmp_path
):
    hosts = _hosts(fleet, lab_inventory, 1)
    controller()
    job = {
        "id": "k",
        "poolInfo": _auto(hosts, keepAlive=True),
        "onAllTasksComplete": "terminatejob",
    }
    pool_id = _create(fleet, tmp_path, "job", job).json()["executionInfo"]["poolId"]
    wait_for(
        lambda: fleet.json("job", "show", "k")["state"] == "completed",
        timeout=60,
        message="a job without tasks completes",
    )
    # its host is still the kept pool's: a second auto pool on it is refused, job and all
    busy = _create(fleet, tmp_path, "job", job | {"id": "k2"}, check=False)
    assert busy.code != 0
    error = json.loads(busy.stdout or busy.stderr)["error"]
    assert error["code"] == "HostInUse"
    assert error["field"] == "poolInfo.autoPoolSpecification.pool.hosts"
    assert fleet("job", "show", "k2", check=False).code == 3
    assert _pool_ids(fleet) == {pool_id}
    fleet("pool", "delete", pool_id)
    assert _pool_ids(fleet) == set()


def test_bad_auto_pool_specifications_are_refused_naming_the_field(fleet, lab_inventory, tmp_path):
    hosts = _hosts(fleet, lab_inventory, 1)
    cases = {
        "poolInfo.autoPoolSpecification.poolLifetimeOption": _auto(hosts, "jobschedule"),
        "poolInfo.autoPoolSpecification.pool.hosts": _auto(["no-such-host"]),
        "poolInfo": {"poolId": "p"} | _auto(hosts),
    }
    for field, pool_info in cases.items():
        bad = _create(fleet, tmp_path, "job", {"id": "b", "poolInfo": pool_info}, check=False)
        assert bad.code in (2, 3), bad
        assert json.loads(bad.stdout or bad.stderr)["error"]["field"] == field
    assert fleet.json("job", "list") == []
    assert _pool_ids(fleet) == set()
    schedule = {
        "id": "s",
        "schedule": {"recurrenceInterval": "PT1H"},
        "jobSpecification": {"poolInfo": _auto(["no-such-host"], "jobschedule")},
    }
    bad = _create(fleet, tmp_path, "job-schedule", schedule, check=False)
    assert bad.code == 3
    error = json.loads(bad.stdout or bad.stderr)["error"]
    assert error["field"] == "jobSpecification.poolInfo.autoPoolSpecification.pool.hosts"
    assert fleet.json("job-schedule", "list") == []


def test_a_schedules_pool_is_shared_by_its_jobs_or_made_per_job(
    fleet, lab_inventory, controller, tmp_path
):
    hosts = _hosts(fleet, lab_inventory, 2)
    controller()
    for sid, lifetime, host in (("shared", "jobschedule", hosts[0]), ("each", "job", hosts[1])):
        schedule = {
            "id": sid,
            "schedule": {"recurrenceInterval": "PT2S"},
            "jobSpecification": {
                "poolInfo": _auto([host], lifetime),
                "onAllTasksComplete": "terminatejob",
            },
        }
        _create(fleet, tmp_path, "job-schedule", schedule)

    def jobs(sid: str) -> list[dict[str, Any]]:
        return fleet.json("job", "list", "--job-schedule", sid)

    wait_for(
        lambda: all(len(jobs(s)) >= 3 for s in ("shared", "each")),
        timeout=90,
        message="three jobs of each schedule",
    )
    for sid in ("shared", "each"):
        fleet("job-schedule", "terminate", sid)
    shared = {j["executionInfo"]["poolId"] for j in jobs("shared")}
    each = [j["executionInfo"]["poolId"] for j in jobs("each")]
    assert len(shared) == 1
    assert len(set(each)) == len(each)  # a pool per job, one after the other on one host
    for sid in ("shared", "each"):
        assert not fleet.json("job-schedule", "show", sid)["executionInfo"].get("skippedRuns")
    wait_for(lambda: not _pool_ids(fleet), timeout=60, message="every auto pool deleted")
