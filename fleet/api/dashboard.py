"""The web dashboard's pages and actions, free of any web framework: pools and their nodes,
jobs with their progress, a job's tasks, a task with the tail of its output, job
schedules; terminate a job, reactivate a task, disable or enable scheduling on a node.

Handlers take a :class:`PageRequest` (``fleet/api/app.py`` has checked the session
cookie, the origin of a POST and its CSRF token) and return a :class:`~fleet.api.wire.Reply`
whose body is HTML. They read and write through the same ``reads``, ``views`` and
``service`` functions as the CLI and the REST API; an error of a change is shown on the
page it was asked from.
"""

from __future__ import annotations

import hmac
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

from fleet import reads, task_files, views
from fleet.api import pages
from fleet.api.context import Api
from fleet.api.sessions import LoginLimiter, Session, Sessions, cookie
from fleet.api.wire import Reply, status_of
from fleet.domain import NodeOperation, NodeState
from fleet.errors import FleetError
from fleet.service import jobs as job_service
from fleet.service import node_ops as node_service
from fleet.service import tasks as task_service

log = logging.getLogger(__name__)

HTML_TYPE = "text/html; charset=utf-8"
#: The most bytes of a task's stdout and stderr its page shows: the end of each file.
TAIL_BYTES = 16 << 10
#: Tasks on one page of a job's task list.
TASK_PAGE = 50
#: The newest jobs the jobs page lists.
JOB_LIMIT = 200
#: Task filters a job page offers (empty: any).
TASK_STATES = ("active", "preparing", "running", "completed")
TASK_RESULTS = ("success", "failure")
#: The static files, by name, with their media types.
STATIC = {"live.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}


@dataclass(frozen=True)
class Dashboard:
    """What page handlers share: the API's context, the sessions and the login limit."""

    api: Api
    sessions: Sessions = field(default_factory=Sessions)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)


@dataclass
class PageRequest:
    """One request for a page, as handlers see it."""

    method: str
    path: str
    params: dict[str, str]  # path parameters
    query: dict[str, str]
    form: dict[str, str]  # a POST's urlencoded fields
    client: str  # the client's address
    secure: bool  # served over TLS
    session: Session | None = None
    live_only: bool = False  # the live script asks for the page's live block alone


PageHandler = Callable[[Dashboard, PageRequest], Reply]


@dataclass(frozen=True)
class Page:
    """One route of the dashboard; ``public`` ones need no session."""

    method: str
    path: str
    handler: PageHandler
    public: bool = False


def _html(
    dash: Dashboard,
    req: PageRequest,
    template: str,
    context: dict[str, Any],
    status: int = 200,
    error: str | None = None,
) -> Reply:
    session = req.session
    base = {
        "account": session.account if session else None,
        "csrf": dash.sessions.csrf(session) if session else "",
        "path": req.path,
        "error": error,
    }
    body = pages.render(template, base | context, live_only=req.live_only)
    return Reply(status, body, media_type=HTML_TYPE)


def redirect(location: str, headers: dict[str, str] | None = None) -> Reply:
    """Reply 303 See Other to ``location``."""
    return Reply(303, "", {"Location": location, **(headers or {})}, media_type=HTML_TYPE)


def error_page(dash: Dashboard, req: PageRequest, exc: FleetError) -> Reply:
    """Reply with a page that shows ``exc``, with the status the API would answer."""
    return _html(dash, req, "error.html", {"title": "Error"}, status_of(exc), str(exc))


def _act(
    dash: Dashboard,
    req: PageRequest,
    change: Callable[[], object],
    back: str,
    view: Callable[[Dashboard, PageRequest, str | None, int], Reply],
) -> Reply:
    """Make ``change``, then send the browser back to ``back``; on a FleetError show
    ``view`` (the page the change was asked from) with the error."""
    try:
        change()
    except FleetError as exc:
        log.info("dashboard: %s by %s: %s", req.path, _who(req), exc)
        get = PageRequest("GET", back, req.params, {}, {}, req.client, req.secure, req.session)
        return view(dash, get, str(exc), status_of(exc))
    log.info("dashboard: %s by %s", req.path, _who(req))
    return redirect(back)


def _who(req: PageRequest) -> str:
    return req.session.account if req.session else "?"


def _url(*parts: str) -> str:
    return "/ui/" + "/".join(quote(p, safe="") for p in parts)


# -- login


def _safe_next(target: str | None) -> str:
    """Return ``target`` when it is a path on this site, else the home page."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def login_form(dash: Dashboard, req: PageRequest) -> Reply:
    """GET /ui/login."""
    context = {"title": "Log in", "next": _safe_next(req.query.get("next")), "name": ""}
    return _html(dash, req, "login.html", context)


def login(dash: Dashboard, req: PageRequest) -> Reply:
    """POST /ui/login: check the account's key; on success set the session cookie."""
    now = time.time()
    name, key = req.form.get("account", ""), req.form.get("key", "")
    context = {"title": "Log in", "next": _safe_next(req.form.get("next")), "name": name}
    if not dash.limiter.allowed(req.client, now):
        log.warning("dashboard: login for %r from %s refused: too many failures", name, req.client)
        error = "too many failed logins from your address: wait a minute and try again"
        return _html(dash, req, "login.html", context, 429, error)
    keys = dash.api.keys(name) if name else None
    if not keys or not any(hmac.compare_digest(key.encode(), k.encode()) for k in keys):
        dash.limiter.failed(req.client, now)
        log.warning("dashboard: failed login for %r from %s", name, req.client)
        return _html(dash, req, "login.html", context, 403, "wrong account name or key")
    _session, token = dash.sessions.issue(name, now)
    log.info("dashboard: %s logged in from %s", name, req.client)
    return redirect(context["next"], {"Set-Cookie": cookie(token, req.secure)})


def logout(dash: Dashboard, req: PageRequest) -> Reply:
    """POST /ui/logout: forget the session, clear the cookie."""
    if req.session is not None:
        dash.sessions.revoke(req.session, time.time())
    return redirect("/ui/login", {"Set-Cookie": cookie("", req.secure, max_age=0)})


def static(_dash: Dashboard, req: PageRequest) -> Reply:
    """GET /ui/static/{name}: the live script and the style sheet."""
    name = req.params["name"]
    if name not in STATIC:
        return Reply(404, "not found", media_type="text/plain; charset=utf-8")
    text = resources.files("fleet.api").joinpath("static", name).read_text(encoding="utf-8")
    return Reply(200, text, {"Cache-Control": "max-age=300"}, media_type=STATIC[name])


# -- pools and nodes


def pools_page(
    dash: Dashboard, req: PageRequest, error: str | None = None, status: int = 200
) -> Reply:
    """GET /: every pool with its nodes as a grid of cells coloured by state."""
    pools = []
    for row, _nodes in reads.list_pools(dash.api.reader):
        nodes = sorted(reads.list_nodes(dash.api.reader, row.id), key=lambda n: n[0].id)
        pools.append(
            {
                "pool": views.pool(row, [n for n, _ in nodes]),
                "nodes": [views.node(*n) for n in nodes],
            }
        )
    context = {"title": "Pools", "pools": pools, "states": [s.value for s in NodeState]}
    return _html(dash, req, "pools.html", context, status, error)


def node_scheduling(dash: Dashboard, req: PageRequest) -> Reply:
    """POST /ui/pools/{poolId}/nodes/{nodeId}/scheduling: ``enable`` = 1 or 0."""
    pool_id, node_id = req.params["poolId"], req.params["nodeId"]
    change: Callable[[], object]
    if req.form.get("enable") == "1":
        change = partial(node_service.enable_scheduling, dash.api.store, pool_id, [node_id])
    else:
        change = partial(
            node_service.request,
            dash.api.store,
            pool_id,
            [node_id],
            NodeOperation.DISABLE_SCHEDULING,
            "requeue",
        )
    return _act(dash, req, change, "/", pools_page)


# -- jobs


def progress(counts: dict[str, int]) -> list[dict[str, Any]]:
    """Return the segments of a job's progress bar: succeeded, failed, running, then
    active tasks, each with its count and its share of the bar (x and width in %)."""
    total = counts["active"] + counts["running"] + counts["completed"]
    segments, x = [], 0.0
    for kind in ("succeeded", "failed", "running", "active"):
        width = 100.0 * counts[kind] / total if total else 0.0
        segments.append({"kind": kind, "count": counts[kind], "x": x, "width": width})
        x += width
    return segments


def jobs_page(dash: Dashboard, req: PageRequest) -> Reply:
    """GET /ui/jobs: the newest jobs with their progress bars."""
    rows = reads.list_jobs(dash.api.reader)[-JOB_LIMIT:][::-1]
    jobs = []
    for row in rows:
        job, counts = reads.show_job_with_counts(dash.api.reader, row.id)
        jobs.append({"job": views.job(job, counts), "counts": counts, "bar": progress(counts)})
    return _html(dash, req, "jobs.html", {"title": "Jobs", "jobs": jobs})


def _task_page(
    dash: Dashboard, job_id: str, state: str, result: str, after: int
) -> tuple[list[dict[str, Any]], int | None]:
    """Return up to TASK_PAGE tasks of the job after primary key ``after`` that match the
    filters, and the key the next page starts after (None: no more)."""
    found: list[dict[str, Any]] = []
    for row in reads.iter_tasks(dash.api.reader, job_id, after=after):
        if (state and row.state != state) or (result and row.result != result):
            continue
        if len(found) == TASK_PAGE:
            return found, found[-1]["pk"]
        found.append({"pk": row.pk, "task": views.task(row)})
    return found, None


def job_page(
    dash: Dashboard, req: PageRequest, error: str | None = None, status: int = 200
) -> Reply:
    """GET /ui/jobs/{jobId}: the job, its progress and its tasks (filtered by
    ``state`` and ``result``, TASK_PAGE at a time from ``after``)."""
    job_id = req.params["jobId"]
    row, counts = reads.show_job_with_counts(dash.api.reader, job_id)
    state = req.query.get("state", "") if req.query.get("state") in TASK_STATES else ""
    result = req.query.get("result", "") if req.query.get("result") in TASK_RESULTS else ""
    after = req.query.get("after", "")
    tasks, next_after = _task_page(
        dash, job_id, state, result, int(after) if after.isdigit() else -1
    )
    filters = {k: v for k, v in (("state", state), ("result", result)) if v}
    context = {
        "title": f"Job {job_id}",
        "job": views.job(row, counts),
        "counts": counts,
        "bar": progress(counts),
        "tasks": tasks,
        "filters": filters,
        "states": TASK_STATES,
        "results": TASK_RESULTS,
        "first_url": f"{req.path}?{urlencode(filters)}" if after else None,
        "next_url": f"{req.path}?{urlencode(filters | {'after': next_after})}"
        if next_after is not None
        else None,
        "url": _url,
    }
    return _html(dash, req, "job.html", context, status, error)


def terminate_job(dash: Dashboard, req: PageRequest) -> Reply:
    """POST /ui/jobs/{jobId}/terminate."""
    job_id = req.params["jobId"]
    change = partial(job_service.terminate_job, dash.api.store, job_id)
    return _act(dash, req, change, _url("jobs", job_id), job_page)


# -- tasks


def _tail(dash: Dashboard, job_id: str, task_id: str) -> dict[str, str | None]:
    """Return the last TAIL_BYTES of the task's stdout.txt and stderr.txt (None: no such
    file yet), read from its node or from the collected copies."""
    out: dict[str, str | None] = {"stdout.txt": None, "stderr.txt": None}
    settings, reader = dash.api.settings, dash.api.reader
    try:
        files = task_files.list_files(settings, reader, job_id, task_id)
    except FleetError:
        return out  # not placed yet, or nothing kept
    sizes = {f["name"]: (f.get("properties") or {}).get("contentLength", 0) for f in files}
    for name in out:
        if name not in sizes:
            continue
        sink = io.BytesIO()
        try:
            task_files.download(
                settings, reader, job_id, task_id, name, sink, max(0, sizes[name] - TAIL_BYTES)
            )
        except FleetError as exc:
            out[name] = f"({exc})"
            continue
        out[name] = sink.getvalue().decode("utf-8", errors="replace")
    return out


def task_page(
    dash: Dashboard, req: PageRequest, error: str | None = None, status: int = 200
) -> Reply:
    """GET /ui/jobs/{jobId}/tasks/{taskId}: the task's execution, statistics and the live
    tail of its stdout and stderr."""
    job_id, task_id = req.params["jobId"], req.params["taskId"]
    task = views.task(reads.show_task(dash.api.reader, job_id, task_id))
    context = {
        "title": f"Task {task_id}",
        "task": task,
        "tail": _tail(dash, job_id, task_id),
        "tail_bytes": TAIL_BYTES,
        "url": _url,
    }
    return _html(dash, req, "task.html", context, status, error)


def reactivate_task(dash: Dashboard, req: PageRequest) -> Reply:
    """POST /ui/jobs/{jobId}/tasks/{taskId}/reactivate."""
    job_id, task_id = req.params["jobId"], req.params["taskId"]
    change = partial(task_service.reactivate_task, dash.api.store, job_id, task_id)
    return _act(dash, req, change, _url("jobs", job_id, "tasks", task_id), task_page)


# -- job schedules


def schedules_page(dash: Dashboard, req: PageRequest) -> Reply:
    """GET /ui/schedules: every job schedule with its next run."""
    schedules = [views.job_schedule(row) for row in reads.list_schedules(dash.api.reader)]
    context = {"title": "Job schedules", "schedules": schedules, "url": _url}
    return _html(dash, req, "schedules.html", context)


_JOB = "/ui/jobs/{jobId}"
#: The dashboard's routes; app.py mounts them beside the REST API's.
PAGES: tuple[Page, ...] = (
    Page("GET", "/", pools_page),
    Page("GET", "/ui/login", login_form, public=True),
    Page("POST", "/ui/login", login, public=True),
    Page("POST", "/ui/logout", logout),
    Page("GET", "/ui/static/{name}", static, public=True),
    Page("POST", "/ui/pools/{poolId}/nodes/{nodeId}/scheduling", node_scheduling),
    Page("GET", "/ui/jobs", jobs_page),
    Page("GET", _JOB, job_page),
    Page("POST", _JOB + "/terminate", terminate_job),
    Page("GET", _JOB + "/tasks/{taskId}", task_page),
    Page("POST", _JOB + "/tasks/{taskId}/reactivate", reactivate_task),
    Page("GET", "/ui/schedules", schedules_page),
)
