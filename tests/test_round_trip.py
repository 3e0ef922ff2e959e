"""What ``show -o json`` prints is valid ``create`` input, for every kind, in Azure's shapes.

The property: the richest spec of a kind (every supported field set), or any subset of
its optional fields, is created, shown, given a new id, created again and shown again:
both shows agree apart from the id and the read-only properties, and the stored specs
are equal. The service layer and the views are what the CLI runs; one CLI test per
kind proves the commands themselves. No controller and no node is needed.
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet import specs, views
from fleet.inventory import HostSpec
from fleet.service import hosts, jobs, pools, tasks
from fleet.store import Store

HOSTS = ["h1", "h2", "h3", "h4"]
_NODE_TARGETS = {"targetDedicatedNodes", "targetLowPriorityNodes"}

RICH_POOL: dict[str, Any] = {
    "id": "rich",
    "displayName": "the richest pool",
    "hosts": ["h1", "h2"],
    "targetDedicatedNodes": 2,
    "targetLowPriorityNodes": 0,
    "taskSlotsPerNode": 4,
    "taskSchedulingPolicy": {"nodeFillType": "pack"},
    "startTask": {
        "commandLine": "/bin/sh -c 'echo ready'",
        "environmentSettings": [{"name": "STAGE", "value": "start"}],
        "waitForSuccess": False,
        "maxTaskRetryCount": 2,
        "userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": "admin"}},
    },
    "userAccounts": [{"name": "worker", "elevationLevel": "nonadmin"}],
    "enableInterNodeCommunication": True,
    "vmSize": "standard_d2s_v3",
    "virtualMachineConfiguration": {"imageReference": {"publisher": "canonical"}},
    "metadata": [{"name": "team", "value": "batch"}],
}

#: A pool that claims hosts by label: the made-up hosts have none, so {} matches them all.
RICH_SELECTOR_POOL: dict[str, Any] = {
    k: v for k, v in RICH_POOL.items() if k not in ("hosts", "targetDedicatedNodes")
} | {
    "hostSelector": {"labels": {}},
    "targetDedicatedNodes": 1,
    "resizeTimeout": "PT10M",
}

_RESOURCE_FILES = [
    {
        "autoStorageContainerName": "inputs",
        "blobPrefix": "a/",
        "filePath": "in",
        "fileMode": "0644",
    },
    {"httpUrl": "https://example.com/data.csv", "filePath": "data.csv"},
]
_OUTPUT_FILES = [
    {
        "filePattern": "../std*.txt",
        "destination": {"container": {"path": "logs"}},
        "uploadOptions": {"uploadCondition": "taskfailure"},
    }
]

RICH_JOB: dict[str, Any] = {
    "id": "rich",
    "displayName": "the richest job",
    "poolInfo": {"poolId": "p"},
    "priority": 100,
    "maxParallelTasks": 3,
    "constraints": {"maxWallClockTime": "P1D", "maxTaskRetryCount": 2},
    "commonEnvironmentSettings": [{"name": "COMMON", "value": "x y"}],
    "onAllTasksComplete": "terminatejob",
    "onTaskFailure": "performexitoptionsjobaction",
    "usesTaskDependencies": True,
    "jobManagerTask": {
        "id": "manager",
        "displayName": "the manager",
        "commandLine": "python3 -c pass",
        "environmentSettings": [{"name": "ROLE", "value": "manager"}],
        "requiredSlots": 2,
        "constraints": {"maxWallClockTime": "PT1H", "maxTaskRetryCount": 1, "retentionTime": "P2D"},
        "resourceFiles": _RESOURCE_FILES,
        "outputFiles": _OUTPUT_FILES,
        "userIdentity": {"autoUser": {"scope": "task", "elevationLevel": "admin"}},
        "killJobOnCompletion": False,
        "runExclusive": False,
        "allowLowPriorityNode": True,
    },
    "jobPreparationTask": {
        "id": "prep",
        "commandLine": "/bin/sh -c 'mkdir -p $FLEET_NODE_SHARED_DIR/x'",
        "environmentSettings": [{"name": "ROLE", "value": "prep"}],
        "constraints": {"maxWallClockTime": "PT5M", "maxTaskRetryCount": 1, "retentionTime": "P1D"},
        "waitForSuccess": False,
        "rerunOnNodeRebootAfterSuccess": False,
    },
    "jobReleaseTask": {
        "id": "release",
        "commandLine": "true",
        "environmentSettings": [{"name": "ROLE", "value": "release"}],
        "maxWallClockTime": "PT5M",
        "retentionTime": "P1D",
    },
    "metadata": [{"name": "k", "value": "v"}],
}

RICH_TASK: dict[str, Any] = {
    "id": "rich",
    "displayName": "the richest task",
    "commandLine": "/bin/sh -c 'echo $X'",
    "environmentSettings": [{"name": "X", "value": "1"}],
    "requiredSlots": 2,
    "constraints": {"maxWallClockTime": "PT10M", "maxTaskRetryCount": 3, "retentionTime": "P7D"},
    "exitConditions": {
        "exitCodes": [
            {"code": 3, "exitOptions": {"jobAction": "none", "dependencyAction": "satisfy"}}
        ],
        "exitCodeRanges": [{"start": 10, "end": 20, "exitOptions": {"dependencyAction": "block"}}],
        "preProcessingError": {"jobAction": "terminate"},
        "fileUploadError": {"jobAction": "disable"},
        "default": {"jobAction": "none"},
    },
    "dependsOn": {"taskIds": ["parent"], "taskIdRanges": [{"start": 1, "end": 5}]},
    "resourceFiles": _RESOURCE_FILES,
    "outputFiles": _OUTPUT_FILES,
    "userIdentity": {"username": "worker"},
    "multiInstanceSettings": {
        "numberOfInstances": 2,
        "coordinationCommandLine": "true",
        "commonResourceFiles": _RESOURCE_FILES[:1],
    },
}


def _optional(spec: dict[str, Any], required: set[str]) -> list[str]:
    return sorted(set(spec) - required)


def _without(spec: dict[str, Any], dropped: set[str]) -> dict[str, Any]:
    out = {k: copy.deepcopy(v) for k, v in spec.items() if k not in dropped}
    if "jobPreparationTask" not in out:
        out.pop("jobReleaseTask", None)  # a release task needs a preparation task
    if "hosts" in out and "targetDedicatedNodes" in out:
        out["targetDedicatedNodes"] = len(out["hosts"])
    return out


def _strip(kind: str, shown: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in shown.items() if k != "id" and k not in specs.READ_ONLY[kind]}


def _as_input(shown: dict[str, Any], new_id: str) -> dict[str, Any]:
    """The printed JSON, through a JSON text as the CLI writes it, with a new id."""
    return json.loads(json.dumps(shown)) | {"id": new_id}


class Lab:
    """A store with made-up hosts, a pool and a job that a rich task fits in."""

    def __init__(self, path: Path) -> None:
        self.store = Store(f"sqlite:///{path / 'fleet.db'}")
        hosts.import_hosts(
            self.store, [HostSpec(id=h, address=f"192.0.2.{i}") for i, h in enumerate(HOSTS, 1)]
        )
        pools.create_pool(
            self.store, _without(RICH_POOL, _NODE_TARGETS) | {"id": "p", "hosts": ["h3", "h4"]}
        )
        jobs.create_job(self.store, {k: v for k, v in RICH_JOB.items() if k != "jobManagerTask"})
        self.job = "rich"
        tasks.add_tasks(self.store, self.job, {"id": "parent", "commandLine": "true"})
        self.ids = itertools.count()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids)}"

    def pool(self, spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        row = pools.create_pool(self.store, spec)
        shown = views.pool(*pools.show_pool(self.store, row.id))
        pools.delete_pool(self.store, row.id)  # frees its hosts for the next pool
        return row.spec, shown

    def job_(self, spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        row = jobs.create_job(self.store, spec)
        return row.spec, views.job(jobs.show_job(self.store, row.id))

    def task(self, spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        (row,) = tasks.add_tasks(self.store, self.job, spec)
        return row.spec, views.task(tasks.show_task(self.store, self.job, row.id))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return Lab(tmp_path_factory.mktemp("round-trip"))


KINDS = {
    "pool": (RICH_POOL, {"id", "hosts"}, Lab.pool),
    "selector pool": (RICH_SELECTOR_POOL, {"id", "hostSelector"}, Lab.pool),
    "job": (RICH_JOB, {"id", "poolInfo"}, Lab.job_),
    "task": (RICH_TASK, {"id", "commandLine"}, Lab.task),
}


def _round_trip(lab: Lab, kind: str, spec: dict[str, Any]) -> None:
    rich, _, create = KINDS[kind]
    kind = kind.split()[-1]  # a selector pool is a pool
    first_spec, first = create(lab, spec | {"id": lab.new_id(kind)})
    second_spec, second = create(lab, _as_input(first, lab.new_id(kind)))
    assert _strip(kind, second) == _strip(kind, first)
    assert second_spec | {"id": None} == first_spec | {"id": None}
    # nothing given was dropped on the way: every property set is printed
    assert set(spec) - {"id"} <= set(first)
    # the printed JSON is the stored spec's own shape: parsing it changes nothing
    assert (
        getattr(specs, f"parse_{kind}")(
            _as_input(first, first["id"]), *([lab.job] if kind == "task" else [])
        )
        == first_spec
    )


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_richest_spec_of_every_kind_survives_show_and_create(lab, kind):
    _round_trip(lab, kind, KINDS[kind][0])


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_subset_of_optional_fields_survives_show_and_create(lab, kind, data):
    rich, required, _ = KINDS[kind]
    dropped = data.draw(st.sets(st.sampled_from(_optional(rich, required))), label="dropped")
    _round_trip(lab, kind, _without(rich, dropped))


def test_read_only_properties_are_ignored_on_input(lab):
    shown_task = {
        "id": "ro",
        "commandLine": "true",
        "jobId": "another-job",
        "state": "completed",
        "executionInfo": {"exitCode": 1},
        "nodeInfo": {"nodeId": "h1"},
        "dependencyState": {"state": "blocked"},
        "url": "https://example.com/jobs/x/tasks/ro",
        "eTag": "0x1",
        "lastModified": "2024-01-01T00:00:00Z",
        "creationTime": "2024-01-01T00:00:00Z",
    }
    spec, shown = lab.task(shown_task)
    assert shown["state"] == "active" and shown["jobId"] == lab.job
    assert "executionInfo" not in spec and "url" not in spec


@pytest.fixture
def cli(fleet, tmp_path):
    """The CLI with made-up hosts (never contacted), a pool and a job for rich tasks."""
    inv = tmp_path / "inv.ini"
    inv.write_text("".join(f"{h} ansible_host=192.0.2.{i}\n" for i, h in enumerate(HOSTS, 1)))
    fleet("host", "import", str(inv))
    fleet(
        "pool",
        "create",
        "--json-file",
        "-",
        input=json.dumps(_without(RICH_POOL, _NODE_TARGETS) | {"id": "p", "hosts": ["h3", "h4"]}),
    )
    return fleet


def test_a_selector_pool_shown_after_a_resize_creates_a_pool_at_the_new_target(cli):
    spec = RICH_SELECTOR_POOL | {"id": "sized", "targetDedicatedNodes": 1}
    cli("pool", "create", "--json-file", "-", input=json.dumps(spec))
    first = cli.json("pool", "resize", "sized", "--target-dedicated-nodes", "2")
    assert first["targetDedicatedNodes"] == 2 and first["allocationState"] == "resizing"
    cli("pool", "delete", "sized")
    cli("pool", "create", "--json-file", "-", input=json.dumps(first | {"id": "again"}))
    second = cli.json("pool", "show", "again")
    assert (second["targetDedicatedNodes"], second["currentDedicatedNodes"]) == (2, 2)
    assert second["allocationState"] == "steady"
    assert _strip("pool", second) == _strip("pool", first)
    assert set(RICH_SELECTOR_POOL) <= set(second)


def _create_from(cli, kind: str, shown: dict[str, Any], *extra: str) -> dict[str, Any]:
    return cli.json(kind, "create", *extra, "--json-file", "-", input=json.dumps(shown))


@pytest.mark.parametrize("kind", ["pool", "job", "task"])
def test_show_output_is_accepted_by_create_through_the_cli(cli, kind):
    if kind == "pool":
        cli("pool", "create", "--json-file", "-", input=json.dumps(RICH_POOL))
        first = cli.json("pool", "show", "rich")
        cli("pool", "delete", "rich")
        cli("pool", "create", "--json-file", "-", input=json.dumps(first | {"id": "again"}))
        second = cli.json("pool", "show", "again")
    elif kind == "job":
        cli("job", "create", "--json-file", "-", input=json.dumps(RICH_JOB))
        first = cli.json("job", "show", "rich")
        cli("job", "create", "--json-file", "-", input=json.dumps(first | {"id": "again"}))
        second = cli.json("job", "show", "again")
    else:
        cli("job", "create", "--json-file", "-", input=json.dumps(RICH_JOB))
        cli.add_tasks("rich", {"id": "parent", "commandLine": "true"})
        cli.add_tasks("rich", RICH_TASK)
        first = cli.json("task", "show", "--job", "rich", "--id", "rich")
        cli.add_tasks("rich", [first | {"id": "again"}])  # a list, as task create takes
        second = cli.json("task", "show", "--job", "rich", "--id", "again")
    assert _strip(kind, second) == _strip(kind, first)
    assert set(KINDS[kind][0]) <= set(first)


@pytest.mark.parametrize(
    "flag",
    [
        ("--priority", "7"),
        ("--max-wall-clock-time", "PT3H"),
        ("--max-task-retry-count", "4"),
        ("--max-parallel-tasks", "2"),
        ("--on-all-tasks-complete", "noaction"),
    ],
    ids=lambda f: f[0],
)
def test_job_set_works_on_a_job_with_every_kind_of_job_task(cli, flag):
    cli("job", "create", "--json-file", "-", input=json.dumps(RICH_JOB))
    before = cli.json("job", "show", "rich")
    after = cli.json("job", "set", "rich", *flag)
    for name in ("jobManagerTask", "jobPreparationTask", "jobReleaseTask"):
        assert after[name] == before[name]
    assert after["jobReleaseTask"]["maxWallClockTime"] == "PT5M"
