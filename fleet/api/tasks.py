"""Task routes: add one, add a collection, get, list, update, delete, terminate,
reactivate, list subtasks; and a task's files: list, get (with ``ocp-range``) and their
properties."""

from __future__ import annotations

from typing import Any

from fleet import reads, task_files, views
from fleet.api import listing
from fleet.api.context import Api
from fleet.api.wire import (
    ApiRequest,
    Reply,
    byte_range,
    check_conditions,
    entity,
    file_reply,
    http_date,
    iso_to_epoch,
)
from fleet.errors import BadInput, Conflict, FleetError, NotFound
from fleet.service import tasks as service

#: The most tasks one addtaskcollection call may carry (Azure's limit).
MAX_COLLECTION = 100


def _url(req: ApiRequest, job_id: str, task_id: str) -> str:
    return req.url("jobs", job_id, "tasks", task_id)


def _current(api: Api, req: ApiRequest) -> dict[str, Any]:
    return views.task(reads.show_task(api.reader, req.params["jobId"], req.params["taskId"]))


def add(api: Api, req: ApiRequest) -> Reply:
    """POST /jobs/{jobId}/tasks: one task, 201."""
    job_id = req.params["jobId"]
    [task] = service.add_tasks(api.store, job_id, req.json(f"job {job_id}"), limit=1)
    url = _url(req, job_id, task.id)
    return Reply(201, headers={"DataServiceId": url, "Location": url})


def add_collection(api: Api, req: ApiRequest) -> Reply:
    """POST /jobs/{jobId}/addtaskcollection: up to 100 tasks, 200 with a result per
    task. Tasks that are bad, or whose ids the job has already (``TaskExists``), get a
    ``clienterror`` result and the others are added, so sending a collection again adds
    only what is missing. A problem of the job itself fails the whole request."""
    job_id = req.params["jobId"]
    values = req.json(f"job {job_id}").get("value")
    if not isinstance(values, list) or not values:
        raise BadInput(
            "value must be a non-empty list of tasks",
            code="InvalidPropertyValue",
            target=f"job {job_id}",
            field="value",
        )
    if len(values) > MAX_COLLECTION:
        raise FleetError(
            f"at most {MAX_COLLECTION} tasks can be added in one collection, got {len(values)}",
            code="RequestBodyTooLarge",
            target=f"job {job_id}",
        )
    results: list[dict[str, Any] | None] = [None] * len(values)
    pending = list(range(len(values)))
    while pending:
        try:
            added = service.add_tasks(api.store, job_id, [values[i] for i in pending])
        except (BadInput, Conflict) as exc:
            index = exc.details.get("index")
            if not isinstance(index, int) or exc.code in ("JobNotActive", "TooManyTasks"):
                raise
            results[pending.pop(index)] = _client_error(values, pending, index, exc)
            continue
        for i, task in zip(pending, added, strict=True):
            url = _url(req, job_id, task.id)
            results[i] = {"status": "success", "taskId": task.id, "location": url}
        break
    return Reply(200, {"value": results})


def _client_error(
    values: list[Any], pending: list[int], index: int, exc: FleetError
) -> dict[str, Any]:
    item = values[pending[index]] if index < len(pending) else None
    task_id = item.get("id") if isinstance(item, dict) else None
    message = {"lang": "en-US", "value": exc.message}
    error: dict[str, Any] = {"code": exc.code, "message": message}
    if exc.field:
        error["values"] = [{"key": "PropertyName", "value": exc.field}]
    return {"status": "clienterror", "taskId": task_id, "error": error}


def get(api: Api, req: ApiRequest) -> Reply:
    """GET /jobs/{jobId}/tasks/{taskId}."""
    return entity(req, _current(api, req), _url(req, req.params["jobId"], req.params["taskId"]))


def list_(api: Api, req: ApiRequest) -> Reply:
    """GET /jobs/{jobId}/tasks, in submission order, streamed from the database a page
    at a time."""
    job_id = req.params["jobId"]
    flt, fields, limit = listing.query_options(req)
    start = listing.after(req)
    if start is not None and not start.isdigit():
        raise BadInput(
            "$skiptoken is not one this service gave",
            code="InvalidQueryParameterValue",
            field="$skiptoken",
        )
    rows = reads.iter_tasks(api.reader, job_id, after=int(start) if start else -1)
    tasks = ((str(row.pk), views.task(row)) for row in rows)
    page = listing.page_of(tasks, lambda t: _url(req, job_id, t["id"]), flt, limit)
    return listing.reply(req, page, fields)


def update(api: Api, req: ApiRequest) -> Reply:
    """PUT /jobs/{jobId}/tasks/{taskId}: replace the task's constraints."""
    job_id, task_id = req.params["jobId"], req.params["taskId"]
    check_conditions(req, _current(api, req), _url(req, job_id, task_id))
    constraints = req.json(f"task {job_id}/{task_id}").get("constraints") or {}
    service.set_task(api.store, job_id, task_id, constraints)
    return Reply(200, headers={"DataServiceId": _url(req, job_id, task_id)})


def delete(api: Api, req: ApiRequest) -> Reply:
    """DELETE /jobs/{jobId}/tasks/{taskId}: 200."""
    job_id, task_id = req.params["jobId"], req.params["taskId"]
    check_conditions(req, _current(api, req), _url(req, job_id, task_id))
    service.delete_task(api.settings, api.store, job_id, task_id)
    return Reply(200)


def terminate(api: Api, req: ApiRequest) -> Reply:
    """POST /jobs/{jobId}/tasks/{taskId}/terminate: 204."""
    job_id, task_id = req.params["jobId"], req.params["taskId"]
    check_conditions(req, _current(api, req), _url(req, job_id, task_id))
    service.terminate_task(api.store, job_id, task_id)
    return Reply(204)


def reactivate(api: Api, req: ApiRequest) -> Reply:
    """POST /jobs/{jobId}/tasks/{taskId}/reactivate: 204."""
    job_id, task_id = req.params["jobId"], req.params["taskId"]
    check_conditions(req, _current(api, req), _url(req, job_id, task_id))
    service.reactivate_task(api.store, job_id, task_id)
    return Reply(204)


def subtasks(api: Api, req: ApiRequest) -> Reply:
    """GET /jobs/{jobId}/tasks/{taskId}/subtasksinfo."""
    rows = service.list_subtasks(api.store, req.params["jobId"], req.params["taskId"])
    return Reply(200, {"value": [views.subtask(r) for r in rows]})


# -- files


def _file_url(req: ApiRequest, name: str) -> str:
    base = _url(req, req.params["jobId"], req.params["taskId"])
    from urllib.parse import quote

    return f"{base}/files/{quote(name, safe='/')}"


def list_files(api: Api, req: ApiRequest) -> Reply:
    """GET /jobs/{jobId}/tasks/{taskId}/files[?recursive=true]."""
    flt, fields, limit = listing.query_options(req)
    recursive = req.query.get("recursive", "").lower() == "true"
    start = listing.after(req)
    files = task_files.list_files(
        api.settings, api.reader, req.params["jobId"], req.params["taskId"], recursive
    )
    keyed = ((f["name"], f) for f in files if start is None or f["name"] > start)
    page = listing.page_of(keyed, lambda f: _file_url(req, f["name"]), flt, limit)
    return listing.reply(req, page, fields)


def _properties(api: Api, req: ApiRequest, name: str) -> dict[str, Any]:
    job_id, task_id = req.params["jobId"], req.params["taskId"]
    parent = name.rsplit("/", 1)[0] if "/" in name else ""
    for entry in task_files.list_files(api.settings, api.reader, job_id, task_id, bool(parent)):
        if entry["name"] == name:
            return entry
    raise NotFound(
        f"no file {name!r} for this task", code="FileNotFound", target=f"task {job_id}/{task_id}"
    )


def _file_headers(req: ApiRequest, name: str, entry: dict[str, Any]) -> dict[str, str]:
    props = entry.get("properties") or {}
    modified = iso_to_epoch(props.get("lastModified"))
    headers = {
        "ocp-batch-file-isdirectory": "true" if entry.get("isDirectory") else "false",
        "ocp-batch-file-url": _file_url(req, name),
    }
    if modified is not None:
        headers["Last-Modified"] = http_date(modified)
        headers["ocp-creation-time"] = http_date(modified)
    if props.get("fileMode"):
        headers["ocp-batch-file-mode"] = props["fileMode"]
    return headers


def file_properties(api: Api, req: ApiRequest) -> Reply:
    """HEAD /jobs/{jobId}/tasks/{taskId}/files/{filePath}."""
    name = req.params["filePath"]
    entry = _properties(api, req, name)
    headers = _file_headers(req, name, entry)
    headers["Content-Length"] = str((entry.get("properties") or {}).get("contentLength", 0))
    return Reply(200, headers=headers, media_type="application/octet-stream")


def get_file(api: Api, req: ApiRequest) -> Reply:
    """GET /jobs/{jobId}/tasks/{taskId}/files/{filePath}, all of it or the bytes
    ``ocp-range: bytes=START-END`` names; streamed through a spooled file (memory
    bounded)."""
    name = req.params["filePath"]
    start, end = byte_range(req.headers.get("ocp-range"))
    return file_reply(
        lambda f: task_files.download(
            api.settings, api.reader, req.params["jobId"], req.params["taskId"], name, f, start, end
        ),
        _file_url(req, name),
    )
