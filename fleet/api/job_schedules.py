"""Job schedule routes: add, get, exists, list, patch and update, delete, disable, enable
and terminate."""

from __future__ import annotations

from typing import Any

from fleet import reads, views
from fleet.api import listing
from fleet.api.context import Api
from fleet.api.wire import ApiRequest, Reply, check_conditions, entity
from fleet.errors import BadInput
from fleet.service import job_schedules as service


def _url(req: ApiRequest, schedule_id: str) -> str:
    return req.url("jobschedules", schedule_id)


def _current(api: Api, schedule_id: str) -> dict[str, Any]:
    return views.job_schedule(reads.show_schedule(api.reader, schedule_id))


def add(api: Api, req: ApiRequest) -> Reply:
    """POST /jobschedules: 201."""
    row = service.create_schedule(api.store, req.json("job schedule"))
    url = _url(req, row.id)
    return Reply(201, headers={"DataServiceId": url, "Location": url})


def get(api: Api, req: ApiRequest) -> Reply:
    """GET /jobschedules/{jobScheduleId}."""
    schedule_id = req.params["jobScheduleId"]
    return entity(req, _current(api, schedule_id), _url(req, schedule_id))


def exists(api: Api, req: ApiRequest) -> Reply:
    """HEAD /jobschedules/{jobScheduleId}: 200, or 404 without a body."""
    schedule_id = req.params["jobScheduleId"]
    return entity(req, _current(api, schedule_id), _url(req, schedule_id), body=False)


def list_(api: Api, req: ApiRequest) -> Reply:
    """GET /jobschedules, oldest first."""
    flt, fields, limit = listing.query_options(req)
    rows = reads.list_schedules(api.reader)
    start = listing.after(req)
    if start is not None:  # resume after the schedule the last page ended with
        ids = [r.id for r in rows]
        rows = rows[ids.index(start) + 1 :] if start in ids else []
    schedules = ((row.id, views.job_schedule(row)) for row in rows)
    page = listing.page_of(schedules, lambda s: _url(req, s["id"]), flt, limit)
    return listing.reply(req, page, fields)


def _change(api: Api, req: ApiRequest, replace: bool) -> Reply:
    schedule_id = req.params["jobScheduleId"]
    current = _current(api, schedule_id)
    check_conditions(req, current, _url(req, schedule_id))
    body = req.json(f"job schedule {schedule_id}")
    if replace:
        for name in ("schedule", "jobSpecification"):
            if name not in body:
                raise BadInput(
                    f"{name} is required to update a job schedule",
                    code="MissingRequiredProperty",
                    target=f"job schedule {schedule_id}",
                    field=name,
                )
        body.setdefault("metadata", [])  # an update without metadata removes it
    changes = {k: v for k, v in body.items() if current.get(k) != v}
    service.set_schedule(api.store, schedule_id, changes)
    return Reply(200, headers={"DataServiceId": _url(req, schedule_id)})


def patch(api: Api, req: ApiRequest) -> Reply:
    """PATCH /jobschedules/{jobScheduleId}: replace the ``schedule``,
    ``jobSpecification`` or ``metadata`` the body gives, from the next occurrence."""
    return _change(api, req, replace=False)


def update(api: Api, req: ApiRequest) -> Reply:
    """PUT /jobschedules/{jobScheduleId}: replace ``schedule`` and ``jobSpecification``
    (both required) and ``metadata`` (removed when absent)."""
    return _change(api, req, replace=True)


def _transition(api: Api, req: ApiRequest) -> str:
    schedule_id = req.params["jobScheduleId"]
    check_conditions(req, _current(api, schedule_id), _url(req, schedule_id))
    return schedule_id


def delete(api: Api, req: ApiRequest) -> Reply:
    """DELETE /jobschedules/{jobScheduleId}: 202; the schedule and its jobs go."""
    service.delete_schedule(api.store, _transition(api, req))
    return Reply(202)


def disable(api: Api, req: ApiRequest) -> Reply:
    """POST /jobschedules/{jobScheduleId}/disable: 204."""
    service.disable_schedule(api.store, _transition(api, req))
    return Reply(204)


def enable(api: Api, req: ApiRequest) -> Reply:
    """POST /jobschedules/{jobScheduleId}/enable: 204."""
    service.enable_schedule(api.store, _transition(api, req))
    return Reply(204)


def terminate(api: Api, req: ApiRequest) -> Reply:
    """POST /jobschedules/{jobScheduleId}/terminate: 202."""
    service.terminate_schedule(api.store, _transition(api, req))
    return Reply(202)
