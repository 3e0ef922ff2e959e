"""Job schedules, pure logic: validate the schedule JSON, compute occurrences, decide what
an occurrence does (create its job, wait for the active one, or be skipped). No I/O; the
time is always passed in."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fleet import durations, specs, timers
from fleet.errors import BadInput
from fleet.spec_fields import check_fields, duration, fail, typed, validate_id

SCHEDULE_FIELDS = {"id", "displayName", "schedule", "jobSpecification", "metadata"}
TIMING_FIELDS = {
    "doNotRunUntil",
    "doNotRunAfter",
    "startWindow",
    "recurrenceInterval",
    "cron",
    "timeZone",
}
#: Placeholder id the job specification is checked under (a template has no id).
_TEMPLATE_ID = "jobschedule-template"
#: How many skipped occurrences a schedule keeps (most recent last).
SKIPPED_RUNS_KEPT = 50
#: startWindow when none is given: an occurrence may start until the next one is due, or
#: one day for a schedule without recurrence.
DEFAULT_WINDOW = 86400.0

REASON_DOWN = "controller down"
REASON_BUSY = "the previous job was still active after startWindow"
REASON_DISABLED = "the schedule was disabled"


def parse_time(value: Any, target: str, field: str) -> float | None:
    """Return an ISO 8601 date-time (UTC when it names no offset) as epoch seconds."""
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise fail(
            target, field, f"{value!r} is not an ISO 8601 date-time such as 2026-01-31T02:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def format_time(ts: float) -> str:
    """Return epoch seconds as ISO 8601 UTC, as the views write times."""
    text = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def parse_schedule(data: Any) -> dict[str, Any]:
    """Return a normalized job schedule: id, displayName, schedule, jobSpecification and
    metadata. Raises BadInput naming the field for anything that is refused."""
    sid = validate_id("job schedule", data.get("id") if isinstance(data, dict) else None)
    target = f"job schedule {sid}"
    check_fields(data, target, "", "job schedule", SCHEDULE_FIELDS)
    return {
        "id": sid,
        "displayName": typed(data, "displayName", str, target),
        "schedule": parse_timing(data.get("schedule") or {}, target),
        "jobSpecification": parse_job_template(data.get("jobSpecification"), target),
        "metadata": typed(data, "metadata", list, target, default=[]),
    }


def parse_timing(value: Any, target: str) -> dict[str, Any]:
    """Return the normalized ``schedule`` object."""
    path = "schedule"
    check_fields(value, target, path, path, TIMING_FIELDS)
    out: dict[str, Any] = {}
    until = parse_time(value.get("doNotRunUntil"), target, f"{path}.doNotRunUntil")
    after = parse_time(value.get("doNotRunAfter"), target, f"{path}.doNotRunAfter")
    if until is not None:
        out["doNotRunUntil"] = format_time(until)
    if after is not None:
        out["doNotRunAfter"] = format_time(after)
    if until is not None and after is not None and after < until:
        raise fail(target, f"{path}.doNotRunAfter", "doNotRunAfter is before doNotRunUntil")
    if value.get("recurrenceInterval") is not None and value.get("cron") is not None:
        raise fail(target, f"{path}.cron", "give either recurrenceInterval or cron, not both")
    for name in ("startWindow", "recurrenceInterval"):
        if value.get(name) is None:
            continue
        field = f"{path}.{name}"
        seconds = durations.parse(value[name], field=field, target=target)
        if seconds is None or seconds < 1:
            raise fail(target, field, f"{name} must be at least one second (PT1S) and finite")
        out[name] = duration(value, name, target, path)
    tz = typed(value, "timeZone", str, target, path)
    cron = typed(value, "cron", str, target, path)
    if tz is not None and cron is None:
        raise fail(target, f"{path}.timeZone", "timeZone applies to cron only")
    if tz is not None:
        try:
            timers.zone(tz)
        except ValueError as exc:
            raise fail(target, f"{path}.timeZone", str(exc)) from None
    if cron is not None:
        try:
            timers.cron_trigger(cron, tz or "UTC")
        except ValueError as exc:
            raise fail(
                target, f"{path}.cron", f"the cron expression does not parse: {exc}"
            ) from None
        out["cron"] = " ".join(cron.split())
        out["timeZone"] = tz or "UTC"
    return out


def parse_job_template(value: Any, target: str) -> dict[str, Any]:
    """Return the normalized job specification: what ``fleet job create`` takes, less its id.
    Its errors name ``jobSpecification.<field>``."""
    if value is None:
        raise fail(target, "jobSpecification", "a job schedule needs a jobSpecification")
    if not isinstance(value, dict):
        raise fail(target, "jobSpecification", "jobSpecification must be a JSON object")
    if "id" in value:
        raise fail(
            target, "jobSpecification.id", "jobs of a schedule are named <scheduleId>:job-<n>"
        )
    try:
        job = specs.parse_job(value | {"id": _TEMPLATE_ID})
    except BadInput as exc:
        field = f"jobSpecification.{exc.field}" if exc.field else "jobSpecification"
        raise BadInput(exc.message, code=exc.code, target=target, field=field) from None
    del job["id"]
    return job


# -- occurrences ----------------------------------------------------------------------


def first_occurrence(timing: dict[str, Any], created: float) -> float | None:
    """Return the schedule's first occurrence: at doNotRunUntil or at once (``created``)
    for an interval or a one-off schedule, the first cron time after it for cron."""
    start = _time(timing, "doNotRunUntil")
    start = created if start is None else max(start, created)
    if "cron" in timing:
        return _bounded(timing, timers.cron_next(timing["cron"], timing["timeZone"], start - 1))
    return _bounded(timing, start)


def next_occurrence(timing: dict[str, Any], previous: float) -> float | None:
    """Return the occurrence after the one scheduled at ``previous``, or None when the
    schedule has no more (no recurrence, or past doNotRunAfter)."""
    if "cron" in timing:
        return _bounded(timing, timers.cron_next(timing["cron"], timing["timeZone"], previous))
    interval = _seconds(timing, "recurrenceInterval")
    if interval is None:
        return None
    return _bounded(timing, previous + interval)


def start_window(timing: dict[str, Any]) -> float:
    """Return the startWindow in seconds: as given, else the recurrence interval, else a day."""
    return (
        _seconds(timing, "startWindow") or _seconds(timing, "recurrenceInterval") or DEFAULT_WINDOW
    )


def decide(
    occurrence: float, now: float, window: float, job_active: bool, controller_since: float
) -> str:
    """Return what an occurrence that is due (``occurrence`` <= ``now``) does now:
    ``create`` its job, ``wait`` for the active job, or be skipped with a reason (the
    controller was down past its start window, or the active job outlasted it)."""
    if now - occurrence <= window:
        return "wait" if job_active else "create"
    if occurrence + window < controller_since:
        return REASON_DOWN
    return REASON_BUSY


def add_skipped(skipped: list[dict[str, Any]], occurrence: float, reason: str) -> list[Any]:
    """Return ``skipped`` with one more entry (most recent last, capped)."""
    entry = {"scheduledTime": format_time(occurrence), "reason": reason}
    return [*skipped, entry][-SKIPPED_RUNS_KEPT:]


def job_id(schedule_id: str, n: int) -> str:
    """Return the id of the ``n``-th job (from 1) a schedule creates."""
    return f"{schedule_id}:job-{n}"


def _time(timing: dict[str, Any], name: str) -> float | None:
    value = timing.get(name)
    return None if value is None else parse_time(value, "job schedule", name)


def _seconds(timing: dict[str, Any], name: str) -> float | None:
    value = timing.get(name)
    return None if value is None else durations.parse(value)


def _bounded(timing: dict[str, Any], when: float | None) -> float | None:
    last = _time(timing, "doNotRunAfter")
    if when is None or (last is not None and when > last):
        return None
    return when
