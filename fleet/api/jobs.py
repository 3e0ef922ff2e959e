"""Job routes: add, get, list, patch and update, delete, disable, enable, terminate, task
counts and the preparation and release task status."""

from __future__ import annotations

from typing import Any

from fleet import reads, views
from fleet.api import listing
from fleet.api.context import Api
from fleet.api.wire import ApiRequest, Reply, check_conditions, entity
from fleet.service import jobs as service


def _url(req: ApiRequest, job_id: str) -> str:
    return req.url("jobs", job_id)


def _current(api: Api, job_id: str) -> dict[str, Any]:
    return views.job(*reads.show_job_with_stats(api.reader, job_id))


def add(api: Api, req: ApiRequest) -> Reply:
    """POST /jobs: 201."""
    job = service.create_job(api.store, req.json("job"), api.settings)
    url = _url(req, job.id)
    return Reply(201, headers={"DataServiceId": url, "Location": url})


def get(api: Api, req: ApiRequest) -> Reply:
    """GET /jobs/{jobId}, with its task counts and, always, its ``stats``."""
    job_id = req.params["jobId"]
    return entity(req, _current(api, job_id), _url(req, job_id))


def list_(api: Api, req: ApiRequest) -> Reply:
    """GET /jobs, oldest first."""
    flt, fields, limit = listing.query_options(req)
    rows = reads.list_jobs(api.reader, req.params.get("jobScheduleId"))
    start = listing.after(req)
    if start is not None:  # resume after the job the last page ended with
        ids = [r.id for r in rows]
        rows = rows[ids.index(start) + 1 :] if start in ids else []
    jobs = ((row.id, views.job(row)) for row in rows)
    page = listing.page_of(jobs, lambda j: _url(req, j["id"]), flt, limit)
    return listing.reply(req, page, fields)


def patch(api: Api, req: ApiRequest) -> Reply:
    """PATCH and PUT /jobs/{jobId}: change the properties that differ from the job's."""
    job_id = req.params["jobId"]
    current = _current(api, job_id)
    check_conditions(req, current, _url(req, job_id))
    body = req.json(f"job {job_id}")
    changes = {k: v for k, v in body.items() if current.get(k) != v}
    service.set_job(api.store, job_id, changes)
    return Reply(200, headers={"DataServiceId": _url(req, job_id)})


def _transition(api: Api, req: ApiRequest) -> str:
    job_id = req.params["jobId"]
    check_conditions(req, _current(api, job_id), _url(req, job_id))
    return job_id


def delete(api: Api, req: ApiRequest) -> Reply:
    """DELETE /jobs/{jobId}: 202; the job shows ``deleting`` until it is gone."""
    service.delete_job(api.store, _transition(api, req))
    return Reply(202)


def terminate(api: Api, req: ApiRequest) -> Reply:
    """POST /jobs/{jobId}/terminate: 202."""
    job_id = _transition(api, req)
    reason = req.json(f"job {job_id}").get("terminateReason") if req.body else None
    service.terminate_job(api.store, job_id, reason)
    return Reply(202)


def disable(api: Api, req: ApiRequest) -> Reply:
    """POST /jobs/{jobId}/disable: 202."""
    job_id = _transition(api, req)
    option = req.json(f"job {job_id}").get("disableTasks") or "requeue"
    service.disable_job(api.store, job_id, option)
    return Reply(202)


def enable(api: Api, req: ApiRequest) -> Reply:
    """POST /jobs/{jobId}/enable: 202."""
    service.enable_job(api.store, _transition(api, req))
    return Reply(202)


def task_counts(api: Api, req: ApiRequest) -> Reply:
    """GET /jobs/{jobId}/taskcounts: Azure's ``taskCounts`` and ``taskSlotCounts``
    (fleet counts a task as one slot each)."""
    counts = reads.task_counts(api.reader, req.params["jobId"])
    return Reply(200, {"taskCounts": counts, "taskSlotCounts": counts})


def prep_release_status(api: Api, req: ApiRequest) -> Reply:
    """GET /jobs/{jobId}/jobpreparationandreleasetaskstatus."""
    return Reply(200, {"value": service.prep_release_status(api.store, req.params["jobId"])})
