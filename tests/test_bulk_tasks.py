"""Many tasks from one file: added whole or not at all, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from fleet.errors import BadInput, Conflict
from fleet.inventory import HostSpec
from fleet.service import dependency_state, hosts, jobs, pools, tasks
from fleet.store import Store
from tests.conftest import Fleet, pg_database

N = 5_000


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.db'}"
    else:
        yield from pg_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    hosts.import_hosts(s, [HostSpec(id="h0", address="127.0.0.1", port=2200)])
    pools.create_pool(s, {"id": "p", "hosts": ["h0"], "taskSlotsPerNode": 2})
    jobs.create_job(s, {"id": "j", "poolInfo": {"poolId": "p"}, "usesTaskDependencies": True})
    yield s
    s.close()


@pytest.fixture
def cli(store_url: str, store: Store, tmp_path: Path) -> Fleet:
    """The real CLI on the same database as ``store`` (pool p, job j made already)."""
    return Fleet(tmp_path / "home", {"FLEET_DB_URL": store_url})


def many(n: int = N, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": str(i), "commandLine": f"echo {i}", **extra} for i in range(n)]


def ids(store: Store) -> list[str]:
    return [t.id for t in tasks.list_tasks(store, "j")]


def test_five_thousand_tasks_from_one_file_are_added_whole_and_listed(cli, store, tmp_path):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(many()))
    added = cli("task", "create", "--job", "j", "--json-file", str(path), "-o", "json").json()
    assert [t["id"] for t in added] == [str(i) for i in range(N)]
    assert added[4321]["commandLine"] == "echo 4321" and added[0]["state"] == "active"
    listed = cli.json("task", "list", "--job", "j")
    assert [t["id"] for t in listed] == [str(i) for i in range(N)]
    assert jobs.task_counts(store, "j")["active"] == N
    summary = cli(
        "task", "create", "--job", "j", "--json-file", "-",
        input=json.dumps([{"id": f"more{i}", "commandLine": "true"} for i in range(101)]),
    )  # fmt: skip
    assert "tasksAdded" in summary.stdout and "101" in summary.stdout


def test_a_bad_dependency_deep_in_the_file_adds_nothing_and_names_the_task(cli, store, tmp_path):
    spec = many()
    spec[4321]["dependsOn"] = {"taskIds": ["0", "ghost"]}
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(spec))
    result = cli(
        "task", "create", "--job", "j", "--json-file", str(path), "-o", "json", check=False
    )
    assert result.code == 2
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "TaskDependencyUnknownParent"
    assert error["target"] == "task j/4321" and error["field"] == "dependsOn.taskIds[1]"
    assert error["details"]["index"] == 4321 and "index 4321" in error["message"]
    assert ids(store) == []


@pytest.mark.parametrize(
    ("bad", "code", "target", "field"),
    [
        ({"id": "1"}, "DuplicateTaskId", "task j/1", "id"),
        ({"id": "bad id!"}, "InvalidId", "task j/[4321]", "id"),
        ({"commandLine": "echo 'open"}, "InvalidPropertyValue", "task j/4321", "commandLine"),
        ({"requiredSlots": 3}, "TaskNotSatisfiable", "task j/4321", "requiredSlots"),
        (
            {"dependsOn": {"taskIdRanges": [{"start": 9, "end": 1}]}},
            "InvalidPropertyValue",
            "task j/4321",
            "dependsOn.taskIdRanges[0].end",
        ),
        (
            {"dependsOn": {"taskIds": ["4321"]}},
            "TaskDependsOnItself",
            "task j/4321",
            "dependsOn.taskIds[0]",
        ),
    ],
)
def test_one_bad_task_deep_in_a_collection_adds_nothing(store, bad, code, target, field):
    spec = many()
    spec[4321] |= bad
    with pytest.raises(BadInput) as info:
        tasks.add_tasks(store, "j", spec, limit=None)
    assert (info.value.code, info.value.target, info.value.field) == (code, target, field)
    assert info.value.details["index"] == 4321
    assert ids(store) == []


def test_a_resubmitted_file_fails_with_task_exists_and_adds_nothing(cli, store, tmp_path):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(many()))
    cli("task", "create", "--job", "j", "--json-file", str(path), "-o", "json")
    again = cli("task", "create", "--job", "j", "--json-file", str(path), "-o", "json", check=False)
    assert again.code == 4
    error = json.loads(again.stderr)["error"]
    assert error["code"] == "TaskExists" and error["target"] == "task j/0"
    assert error["details"] == {"index": 0, "count": N}
    # one old id at the end of otherwise new tasks: still nothing is added
    overlap = [{"id": f"new{i}", "commandLine": "true"} for i in range(N - 1)]
    overlap.append({"id": str(N - 1), "commandLine": "true"})
    with pytest.raises(Conflict) as info:
        tasks.add_tasks(store, "j", overlap, limit=None)
    assert info.value.code == "TaskExists" and info.value.target == f"task j/{N - 1}"
    assert info.value.details["index"] == N - 1
    assert len(ids(store)) == N and "new0" not in ids(store)


def test_tasks_may_depend_on_tasks_later_in_the_same_file(store):
    spec = many()
    spec[0]["dependsOn"] = {"taskIds": [str(N - 1)]}  # the last task of the file
    spec[10]["dependsOn"] = {"taskIdRanges": [{"start": 4000, "end": 4999}]}
    added = {t.id: t for t in tasks.add_tasks(store, "j", spec, limit=None)}
    assert (added["0"].deps_state, added["0"].deps_parent) == ("waiting", str(N - 1))
    assert (added["10"].deps_state, added["10"].deps_parent) == ("waiting", "4000")
    assert added["1"].deps_state is None
    stored = {t.id: t for t in tasks.list_tasks(store, "j")}
    assert (stored["0"].deps_state, stored["10"].deps_parent) == ("waiting", "4000")
    with store.session() as s:  # the parents complete: both may run
        s.execute(text("UPDATE tasks SET state = 'completed' WHERE id NOT IN ('0', '10')"))
        assert dependency_state.refresh(s, "j") == 2
    assert {t.id for t in tasks.list_tasks(store, "j") if t.deps_state} == set()


def test_a_held_task_waits_for_a_smaller_id_added_into_its_range(store):
    waits = {"taskIdRanges": [{"start": 1, "end": 9}]}
    tasks.add_tasks(
        store,
        "j",
        [
            {"id": "5", "commandLine": "true"},
            {"id": "m", "commandLine": "true", "dependsOn": waits},
        ],
    )
    assert tasks.show_task(store, "j", "m").deps_parent == "5"
    tasks.add_tasks(store, "j", {"id": "2", "commandLine": "true"})
    assert tasks.show_task(store, "j", "m").deps_parent == "2"


def test_calls_from_nodes_keep_azures_limit_of_100_tasks(store):
    with pytest.raises(BadInput) as info:
        tasks.add_tasks(store, "j", many(101))
    assert info.value.code == "TooManyTasks"
    assert len(tasks.add_tasks(store, "j", many(100))) == 100


def test_json_lines_and_azures_value_body_are_accepted(cli, store, tmp_path):
    lines = tmp_path / "tasks.jsonl"
    lines.write_text("".join(json.dumps(t) + "\n" for t in many(300)) + "\n")
    cli("task", "create", "--job", "j", "--json-file", str(lines))
    body = tmp_path / "value.json"
    body.write_text(json.dumps({"value": [{"id": "v1", "commandLine": "true"}]}))
    cli("task", "create", "--job", "j", "--json-file", str(body))
    assert len(ids(store)) == 301 and ids(store)[-1] == "v1"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x1", "commandLine": "true"}\n{"id": "x2",\n')
    result = cli("task", "create", "--job", "j", "--json-file", str(bad), "-o", "json", check=False)
    error = json.loads(result.stderr)["error"]
    assert result.code == 2 and error["code"] == "InvalidJson"
    assert error["details"] == {"line": 2}
    assert len(ids(store)) == 301
