"""Job schedules' pure logic: validation, occurrences and decisions, on a fixed clock."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from fleet import schedules
from fleet.errors import BadInput

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC).timestamp()


def _schedule(timing: dict[str, Any] | None = None, **job: Any) -> dict[str, Any]:
    spec = {"poolInfo": {"poolId": "p"}, "jobManagerTask": {"commandLine": "true"}} | job
    return {"id": "nightly", "schedule": timing or {}, "jobSpecification": spec}


def _at(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


BAD = [
    ({"recurrenceInterval": "PT0S"}, {}, "schedule.recurrenceInterval"),
    ({"recurrenceInterval": "PT0.5S"}, {}, "schedule.recurrenceInterval"),
    ({"recurrenceInterval": "-PT1H"}, {}, "schedule.recurrenceInterval"),
    ({"recurrenceInterval": "P10675199DT2H48M5.4775807S"}, {}, "schedule.recurrenceInterval"),
    ({"startWindow": "PT0S"}, {}, "schedule.startWindow"),
    (
        {"doNotRunUntil": "2026-03-02T00:00:00Z", "doNotRunAfter": "2026-03-01T00:00:00Z"},
        {},
        "schedule.doNotRunAfter",
    ),
    ({"doNotRunUntil": "tomorrow"}, {}, "schedule.doNotRunUntil"),
    ({"cron": "61 * * * *"}, {}, "schedule.cron"),
    ({"cron": "* * * *"}, {}, "schedule.cron"),
    ({"cron": "0 2 * * *", "timeZone": "Mars/Olympus"}, {}, "schedule.timeZone"),
    ({"timeZone": "Europe/Paris"}, {}, "schedule.timeZone"),
    ({"cron": "0 2 * * *", "recurrenceInterval": "PT1H"}, {}, "schedule.cron"),
    ({"every": "PT1H"}, {}, "schedule.every"),
    ({}, {"priority": 5000}, "jobSpecification.priority"),
    ({}, {"poolInfo": {}}, "jobSpecification.poolInfo"),
    ({}, {"jobManagerTask": {"commandLine": ""}}, "jobSpecification.jobManagerTask.commandLine"),
    ({}, {"bogus": 1}, "jobSpecification.bogus"),
    ({}, {"id": "mine"}, "jobSpecification.id"),
]


@pytest.mark.parametrize(("timing", "job", "field"), BAD)
def test_bad_schedule_is_refused_naming_the_field(
    timing: dict[str, Any], job: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadInput) as err:
        schedules.parse_schedule(_schedule(timing, **job))
    assert err.value.field == field
    assert err.value.target == "job schedule nightly"


def test_schedule_without_job_specification_is_refused() -> None:
    with pytest.raises(BadInput) as err:
        schedules.parse_schedule({"id": "s", "schedule": {}})
    assert err.value.field == "jobSpecification"


def test_normalized_schedule_parses_to_itself() -> None:
    spec = schedules.parse_schedule(
        _schedule({"cron": "0  2 * * 1", "timeZone": "Europe/Paris", "startWindow": "PT10M"})
    )
    assert spec["schedule"] == {
        "cron": "0 2 * * 1",
        "timeZone": "Europe/Paris",
        "startWindow": "PT10M",
    }
    assert "id" not in spec["jobSpecification"]
    assert schedules.parse_schedule(spec) == spec


def test_interval_occurrences_start_at_do_not_run_until_and_stop_after_do_not_run_after() -> None:
    timing = schedules.parse_timing(
        {
            "recurrenceInterval": "PT1H",
            "doNotRunUntil": "2026-03-01T13:00:00Z",
            "doNotRunAfter": "2026-03-01T15:00:00Z",
        },
        "t",
    )
    first = schedules.first_occurrence(timing, T0)
    assert first == _at("2026-03-01T13:00:00+00:00")
    times = [first]
    while (n := schedules.next_occurrence(timing, times[-1])) is not None:
        times.append(n)
    assert [schedules.format_time(t) for t in times] == [
        "2026-03-01T13:00:00.000Z",
        "2026-03-01T14:00:00.000Z",
        "2026-03-01T15:00:00.000Z",
    ]


def test_schedule_without_recurrence_occurs_once_at_once() -> None:
    timing = schedules.parse_timing({}, "t")
    assert schedules.first_occurrence(timing, T0) == T0
    assert schedules.next_occurrence(timing, T0) is None


def test_cron_follows_its_time_zone_across_daylight_saving() -> None:
    timing = schedules.parse_timing({"cron": "0 2 * * *", "timeZone": "America/New_York"}, "t")
    first = schedules.first_occurrence(timing, T0)
    assert first == _at("2026-03-02T07:00:00+00:00")  # 02:00 EST
    # DST starts on 8 March 2026 in New York: 02:00 EDT is 06:00 UTC from 9 March
    after = schedules.next_occurrence(timing, _at("2026-03-09T00:00:00+00:00"))
    assert after == _at("2026-03-09T06:00:00+00:00")


def test_cron_without_time_zone_is_utc() -> None:
    timing = schedules.parse_timing({"cron": "*/15 * * * *"}, "t")
    assert timing["timeZone"] == "UTC"
    assert schedules.first_occurrence(timing, T0 + 1) == T0 + 900


DECISIONS = [
    # occurrence, now, window, active job, controller since -> decision
    (100, 100, 30, False, 0, "create"),
    (100, 120, 30, True, 0, "wait"),
    (100, 130, 30, False, 0, "create"),
    (100, 131, 30, True, 0, schedules.REASON_BUSY),
    (100, 131, 30, False, 0, schedules.REASON_BUSY),
    (100, 200, 30, False, 150, schedules.REASON_DOWN),
    (100, 200, 30, True, 150, schedules.REASON_DOWN),
    (100, 125, 30, False, 120, "create"),  # missed while down, still within startWindow
]


@pytest.mark.parametrize(("occ", "now", "window", "active", "since", "expected"), DECISIONS)
def test_occurrence_decision(
    occ: float, now: float, window: float, active: bool, since: float, expected: str
) -> None:
    assert schedules.decide(occ, now, window, active, since) == expected


def test_skipped_runs_keep_the_most_recent() -> None:
    skipped: list[dict[str, Any]] = []
    for i in range(schedules.SKIPPED_RUNS_KEPT + 5):
        skipped = schedules.add_skipped(skipped, T0 + i, "r")
    assert len(skipped) == schedules.SKIPPED_RUNS_KEPT
    assert skipped[-1]["scheduledTime"] == schedules.format_time(
        T0 + schedules.SKIPPED_RUNS_KEPT + 4
    )
