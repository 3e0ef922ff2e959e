"""Job schedules on the real lab: recurring jobs, one active at a time, skipped occurrences,
a controller killed across occurrences, terminate and delete."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
import time
from typing import Any

import pytest

from tests.conftest import ControllerProcess, Fleet, make_pool, pg_database, wait_for

pytestmark = pytest.mark.lab


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def _create(fleet: Any, tmp_path: Any, data: dict[str, Any]) -> dict[str, Any]:
    path = tmp_path / f"{data['id']}.json"
    path.write_text(json.dumps(data))
    return fleet.json("job-schedule", "create", "--json-file", str(path))


def _schedule(sid: str, command: str, **timing: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "schedule": timing,
        "jobSpecification": {
            "poolInfo": {"poolId": "p"},
            "jobManagerTask": {"commandLine": command},
        },
    }


def _jobs(fleet: Any, sid: str) -> dict[str, dict[str, Any]]:
    return {j["id"]: j for j in fleet.json("job", "list", "--job-schedule", sid)}


def test_schedule_creates_numbered_jobs_one_active_at_a_time(
    fleet, lab_inventory, controller, tmp_path
):
    make_pool(fleet, lab_inventory, "p", 1)
    controller()
    _create(fleet, tmp_path, _schedule("s", "sleep 1", recurrenceInterval="PT2S"))
    wait_for(lambda: "s:job-3" in _jobs(fleet, "s"), timeout=90, message="three jobs")
    jobs = _jobs(fleet, "s")
    assert all(j["jobScheduleId"] == "s" for j in jobs.values())
    for n in (1, 2):
        ended = dt.datetime.fromisoformat(jobs[f"s:job-{n}"]["executionInfo"]["endTime"])
        started = dt.datetime.fromisoformat(jobs[f"s:job-{n + 1}"]["creationTime"])
        assert ended <= started  # never two active jobs
    shown = fleet.json("schedule", "show", "s")
    assert shown["state"] == "active"
    assert shown["executionInfo"]["recentJob"]["id"].startswith("s:job-")
    assert "nextRunTime" in shown["executionInfo"]
    # show -o json is valid create input
    shown["id"] = "s2"
    _create(fleet, tmp_path, shown)
    fleet("job-schedule", "terminate", "s")
    fleet("job-schedule", "terminate", "s2")
    wait_for(
        lambda: fleet.json("job-schedule", "show", "s")["state"] == "completed",
        timeout=60,
        message="terminated schedule completes",
    )
    last = fleet.json("job-schedule", "show", "s")["executionInfo"]
    assert "endTime" in last and "nextRunTime" not in last
    assert all(j["state"] == "completed" for j in _jobs(fleet, "s").values())


def test_occurrence_the_active_job_outlasts_is_skipped_with_the_reason(
    fleet, lab_inventory, controller, tmp_path
):
    make_pool(fleet, lab_inventory, "p", 1)
    controller()
    _create(
        fleet,
        tmp_path,
        _schedule("busy", "sleep 7", recurrenceInterval="PT3S", startWindow="PT1S"),
    )
    skipped = wait_for(
        lambda: fleet.json("job-schedule", "show", "busy")["executionInfo"].get("skippedRuns"),
        timeout=60,
        message="a skipped run",
    )
    assert skipped[0]["reason"] == "the previous job was still active after startWindow"
    jobs = _jobs(fleet, "busy")
    assert list(jobs) == ["busy:job-1"]
    assert jobs["busy:job-1"]["state"] == "active"
    fleet("job-schedule", "terminate", "busy")
    wait_for(
        lambda: _jobs(fleet, "busy")["busy:job-1"]["state"] == "completed",
        timeout=60,
        message="the active job terminated",
    )
    assert _jobs(fleet, "busy")["busy:job-1"]["executionInfo"]["terminateReason"] == (
        "TerminateJobSchedule"
    )


def test_controller_killed_across_occurrences_runs_each_once_or_records_it_skipped(
    fleet, lab_inventory, controller, tmp_path
):
    make_pool(fleet, lab_inventory, "p", 1)
    first = controller()
    _create(fleet, tmp_path, _schedule("k", "true", recurrenceInterval="PT2S", startWindow="PT1S"))
    wait_for(lambda: "k:job-1" in _jobs(fleet, "k"), timeout=60, message="first job")
    first.kill()
    time.sleep(6)  # at least two occurrences come and their start windows pass meanwhile
    second = controller()
    wait_for(
        lambda: (
            len(fleet.json("job-schedule", "show", "k")["executionInfo"].get("skippedRuns", []))
            >= 2
            and len(_jobs(fleet, "k")) >= 3
        ),
        timeout=60,
        message="skips recorded and jobs created after the restart",
    )
    fleet("job-schedule", "disable", "k")
    second.stop()
    info = fleet.json("job-schedule", "show", "k")["executionInfo"]
    skipped = [s["scheduledTime"] for s in info["skippedRuns"]]
    assert {s["reason"] for s in info["skippedRuns"]} <= {
        "controller down",
        "the schedule was disabled",
        "the previous job was still active after startWindow",  # a slow run, under load
    }
    assert "controller down" in {s["reason"] for s in info["skippedRuns"]}
    jobs = _jobs(fleet, "k")
    numbers = sorted(int(j.rsplit("-", 1)[1]) for j in jobs)
    assert numbers == list(range(1, len(numbers) + 1))  # no gaps, no doubles
    # each skipped occurrence is on the grid and no job was created for it
    assert len(set(skipped)) == len(skipped)


def test_schedule_runs_once_at_do_not_run_until_then_completes_and_delete_removes_its_jobs(
    fleet, lab_inventory, controller, tmp_path
):
    make_pool(fleet, lab_inventory, "p", 1)
    controller()
    made = _create(fleet, tmp_path, _schedule("once", "true", doNotRunUntil=_iso(time.time() + 3)))
    assert made["executionInfo"]["nextRunTime"]
    wait_for(
        lambda: fleet.json("job-schedule", "show", "once")["state"] == "completed",
        timeout=60,
        message="one-off schedule completes",
    )
    jobs = _jobs(fleet, "once")
    assert list(jobs) == ["once:job-1"]
    assert jobs["once:job-1"]["creationTime"] >= _iso(time.time() - 60)
    fleet("job-schedule", "delete", "once")
    wait_for(
        lambda: fleet("job-schedule", "exists", "once", check=False).code == 3,
        timeout=60,
        message="schedule deleted",
    )
    assert fleet("job", "show", "once:job-1", check=False).code == 3


def test_flag_form_and_bad_input_exit_2_naming_the_field(fleet, lab_inventory, tmp_path):
    make_pool(fleet, lab_inventory, "p", 1)
    bad = fleet(
        "job-schedule", "create", "--id", "x", "--pool", "p", "--every", "PT0S",
        "--job-manager-command-line", "true", "-o", "json", check=False,
    )  # fmt: skip
    assert bad.code == 2
    assert "schedule.recurrenceInterval" in bad.stdout + bad.stderr
    made = fleet.json(
        "schedule", "create", "--id", "c", "--pool", "p", "--cron", "0 2 * * *",
        "--time-zone", "Europe/Paris", "--job-manager-command-line", "true",
    )  # fmt: skip
    assert made["schedule"] == {"cron": "0 2 * * *", "timeZone": "Europe/Paris"}
    assert made["executionInfo"]["nextRunTime"].endswith(":00:00.000Z")
    assert fleet("job-schedule", "exists", "c", check=False).code == 0
    assert fleet("job-schedule", "exists", "nope", check=False).code == 3
    assert fleet("job", "list", "--job-schedule", "nope", check=False).code == 3


def test_occurrence_due_while_the_controller_is_down_runs_on_restart_within_start_window(
    fleet, lab_inventory, controller, tmp_path
):
    make_pool(fleet, lab_inventory, "p", 1)
    first = controller()
    due = time.time() + 4
    _create(
        fleet,
        tmp_path,
        _schedule("late", "true", doNotRunUntil=_iso(due), startWindow="PT2M"),
    )
    # the controller arms the occurrence's timer in fleet's own database
    wait_for(lambda: _timers(fleet).get("late") is not None, timeout=30, message="timer armed")
    assert _timers(fleet)["late"] == pytest.approx(due, abs=0.01)
    first.kill()  # SIGKILL: nothing is cleaned up
    time.sleep(max(0.0, due - time.time()) + 2)
    assert _jobs(fleet, "late") == {}
    controller()
    wait_for(lambda: "late:job-1" in _jobs(fleet, "late"), timeout=30, message="the late job")
    shown = fleet.json("job-schedule", "show", "late")
    assert not shown["executionInfo"].get("skippedRuns")
    created = dt.datetime.fromisoformat(_jobs(fleet, "late")["late:job-1"]["creationTime"])
    assert created.timestamp() >= due


def _timers(fleet: Any) -> dict[str, float]:
    """The armed timers; none before the controller has made its timer table."""
    with contextlib.closing(sqlite3.connect(fleet.home / "fleet.db")) as db:
        try:
            return dict(db.execute("SELECT id, next_run_time FROM fleet_timers").fetchall())
        except sqlite3.OperationalError:
            return {}


def test_set_disable_enable_and_do_not_run_after(fleet, lab_inventory, controller, tmp_path):
    make_pool(fleet, lab_inventory, "p", 1)
    controller()
    _create(
        fleet,
        tmp_path,
        _schedule(
            "s", "echo first", recurrenceInterval="PT1H", doNotRunUntil=_iso(time.time() + 3600)
        ),
    )
    # set: a new schedule takes effect at once, a new job specification from the next job
    (tmp_path / "every.json").write_text(json.dumps({"schedule": {"recurrenceInterval": "PT2S"}}))
    fleet("job-schedule", "set", "s", "--json-file", str(tmp_path / "every.json"))
    wait_for(lambda: "s:job-1" in _jobs(fleet, "s"), timeout=30, message="job after set")
    spec = {"poolInfo": {"poolId": "p"}, "jobManagerTask": {"commandLine": "echo second"}}
    (tmp_path / "set.json").write_text(json.dumps({"jobSpecification": spec}))
    fleet("job-schedule", "set", "s", "--json-file", str(tmp_path / "set.json"))
    changed = wait_for(
        lambda: [
            j
            for j in _jobs(fleet, "s").values()
            if j["jobManagerTask"]["commandLine"] == "echo second"
        ],
        timeout=30,
        message="a job of the new specification",
    )
    assert changed[0]["id"] != "s:job-1"
    # disable: occurrences are recorded skipped and no job is created until enable
    fleet("job-schedule", "disable", "s")
    before = set(_jobs(fleet, "s"))
    skipped = wait_for(
        lambda: [
            r
            for r in fleet.json("job-schedule", "show", "s")["executionInfo"].get("skippedRuns", [])
            if r["reason"] == "the schedule was disabled"
        ],
        timeout=30,
        message="an occurrence skipped while disabled",
    )
    assert skipped and set(_jobs(fleet, "s")) == before
    fleet("job-schedule", "enable", "s")
    wait_for(lambda: set(_jobs(fleet, "s")) > before, timeout=30, message="jobs after enable")
    fleet("job-schedule", "terminate", "s")
    # doNotRunAfter: a few jobs, then the schedule completes when its last job has
    end = time.time() + 5
    _create(
        fleet,
        tmp_path,
        _schedule("end", "true", recurrenceInterval="PT2S", doNotRunAfter=_iso(end)),
    )
    done = wait_for(
        lambda: (
            (shown := fleet.json("job-schedule", "show", "end"))["state"] == "completed" and shown
        ),
        timeout=60,
        message="the schedule completes after doNotRunAfter",
    )
    assert "nextRunTime" not in done["executionInfo"] and "endTime" in done["executionInfo"]
    jobs = _jobs(fleet, "end")
    assert 2 <= len(jobs) <= 3
    assert all(j["state"] == "completed" for j in jobs.values())
    assert max(dt.datetime.fromisoformat(j["creationTime"]).timestamp() for j in jobs.values()) <= (
        end + 1
    )


def test_schedules_and_their_timers_on_a_postgresql_store(lab_inventory, pg_server, tmp_path):
    import psycopg

    for url in pg_database(pg_server):
        pg_fleet = Fleet(tmp_path / "pg-home", {"FLEET_DB_URL": url})
        make_pool(pg_fleet, lab_inventory, "p", 1)
        proc = ControllerProcess(pg_fleet, tmp_path / "pg-controller.log").start()
        try:
            _create(pg_fleet, tmp_path, _schedule("pg", "true", recurrenceInterval="PT2S"))
            wait_for(lambda: "pg:job-2" in _jobs(pg_fleet, "pg"), timeout=60, message="2 jobs")
            with contextlib.closing(psycopg.connect(url)) as db:
                rows = db.execute("SELECT id FROM fleet_timers").fetchall()
            assert rows == [("pg",)]
            pg_fleet("job-schedule", "terminate", "pg")
        finally:
            assert proc.stop() == 0


def test_deleting_a_schedule_whose_timer_is_armed_removes_both(
    fleet, lab_inventory, controller, tmp_path
):
    make_pool(fleet, lab_inventory, "p", 1)
    controller()
    _create(fleet, tmp_path, _schedule("armed", "true", doNotRunUntil=_iso(time.time() + 3600)))
    wait_for(lambda: "armed" in _timers(fleet), timeout=30, message="timer armed")
    fleet("job-schedule", "delete", "armed")
    wait_for(
        lambda: fleet("job-schedule", "exists", "armed", check=False).code == 3,
        timeout=15,
        message="schedule deleted",
    )
    wait_for(lambda: "armed" not in _timers(fleet), timeout=15, message="timer removed")
