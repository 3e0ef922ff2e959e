"""The ASGI application: Azure Batch's REST API, authenticated with SharedKey, and the web
dashboard, authenticated with a session cookie. The only module that uses Starlette.

Every request is authenticated (fleet/api/shared_key.py) before anything else is read;
handlers (fleet/api/routes.py) run in worker threads, since the store is synchronous,
and their errors become Azure's OData envelope with the status Azure uses. Every answer
carries ``request-id`` and, when the client sent one, its ``client-request-id``.

Dashboard pages (fleet/api/dashboard.py) get the session of their cookie; a page that
needs one sends a browser without it to the login page. A POST is refused when its
``Origin`` (or ``Referer``) is another site, or, once logged in, when its form lacks the
session's CSRF token. Pages carry a Content-Security-Policy that allows no inline script.

``GET /metrics`` (fleet/metrics.py) is served without SharedKey, since Prometheus
scrapes without it: it says how much work there is, not what the work is, and it is
served on loopback unless the API has TLS (fleet/api/server.py).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fleet import metrics
from fleet.api import dashboard, shared_key
from fleet.api.context import Api
from fleet.api.dashboard import Dashboard, PageHandler, PageRequest
from fleet.api.routes import OPERATIONS, Handler, openapi
from fleet.api.sessions import COOKIE, Session
from fleet.api.wire import JSON_TYPE, ApiRequest, Reply, error_body, new_request_id, status_of
from fleet.errors import BadInput, FleetError

log = logging.getLogger(__name__)

#: The largest request body read (Azure's limit for a task collection is 1 MB).
MAX_BODY = 4 << 20
#: The largest form a dashboard page takes.
MAX_FORM = 16 << 10
#: Headers on every dashboard answer.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

KeyLookup = Callable[[str], list[str] | None]


def build(api: Api, keys: KeyLookup) -> Starlette:
    """Return the app serving ``api`` to clients whose accounts ``keys`` knows."""
    routes = [
        Route(op.path, _endpoint(api, keys, op.handler, op.operation_id), methods=[op.method])
        for op in OPERATIONS
    ]
    routes.append(Route("/openapi.json", _openapi, methods=["GET"]))
    board = Dashboard(api)
    routes.extend(
        Route(page.path, _page(board, page.handler, page.public), methods=[page.method])
        for page in dashboard.PAGES
    )
    routes.append(Route("/metrics", _metrics, methods=["GET"]))
    metrics.count_from(api.reader)
    return Starlette(routes=routes)


async def _openapi(_request: Request) -> Response:
    return JSONResponse(openapi())


async def _metrics(_request: Request) -> Response:
    """Every metric in Prometheus' text format (the counts read the database: a thread)."""
    body, content_type = await run_in_threadpool(metrics.exposition)
    return Response(body, headers={"Cache-Control": "no-store"}, media_type=content_type)


def _endpoint(
    api: Api, keys: KeyLookup, handler: Handler, operation_id: str
) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        response = await answer(request)
        metrics.api_request(operation_id, response.status_code, time.perf_counter() - started)
        return response

    async def answer(request: Request) -> Response:
        request_id = new_request_id()
        headers = {"request-id": request_id}
        if client_id := request.headers.get("client-request-id"):
            headers["client-request-id"] = client_id
        try:
            req = await _request(request, keys)
            reply = await run_in_threadpool(handler, api, req)
        except FleetError as exc:
            return _error(request, exc, request_id, headers, operation_id)
        except Exception:
            log.exception("api: %s %s failed", request.method, request.url.path)
            failed = FleetError("the server failed on this request", code="InternalError")
            return _error(request, failed, request_id, headers, operation_id)
        return _response(reply, headers)

    endpoint.__name__ = operation_id
    return endpoint


async def _request(request: Request, keys: KeyLookup) -> ApiRequest:
    """Authenticate ``request`` and return it as handlers see it."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    pairs = list(request.query_params.multi_items())
    account = shared_key.authenticate(
        request.method, raw_path.decode("latin-1"), pairs, headers, keys, time.time()
    )
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):  # SharedKey signs one value of a name: refuse more
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise BadInput(
            f"query option {repeated[0]} is given more than once",
            code="InvalidQueryParameterValue",
            field=repeated[0],
        )
    body = await _body(request) if request.method in ("POST", "PUT", "PATCH") else b""
    base = f"{request.url.scheme}://{request.url.netloc}"
    return ApiRequest(
        method=request.method,
        path=request.url.path,
        params={k: str(v) for k, v in request.path_params.items()},
        query=dict(pairs),
        headers=headers,
        body=body,
        base_url=base,
        account=account,
        query_pairs=pairs,
    )


async def _body(request: Request) -> bytes:
    """Return the request's body, refusing (413) one larger than MAX_BODY however it is
    sent (Content-Length or chunked)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise FleetError(
                f"the request body is larger than {MAX_BODY} bytes", code="RequestBodyTooLarge"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _error(
    request: Request, exc: FleetError, request_id: str, headers: dict[str, str], operation: str
) -> Response:
    status = status_of(exc)
    if exc.code == "AuthenticationFailed":
        reason = getattr(exc, "reason", "")
        log.warning(
            "api: %s %s refused: %s (%s) from %s",
            request.method,
            request.url.path,
            exc.message,
            reason,
            request.client.host if request.client else "?",
        )
        body = error_body(exc, request_id)
        body["values"].append({"key": "AuthenticationErrorDetail", "value": exc.message})
    else:
        log.info("api: %s: %s %s (%s)", operation, status, exc.code, exc)
        body = error_body(exc, request_id)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    return Response(json.dumps(body), status, headers, media_type=JSON_TYPE)


def _response(reply: Reply, headers: dict[str, str]) -> Response:
    headers = {**reply.headers, **headers}
    if reply.stream is not None:
        return StreamingResponse(
            iterate_in_threadpool(reply.stream), reply.status, headers, reply.media_type
        )
    if reply.body is None:
        return Response(status_code=reply.status, headers=headers, media_type=reply.media_type)
    body = json.dumps(reply.body, separators=(",", ":"))
    return Response(body, reply.status, headers, media_type=reply.media_type)


def _page(board: Dashboard, handler: PageHandler, public: bool) -> Callable[[Request], Any]:
    """Return the endpoint of a dashboard page: session, origin and CSRF checks, then
    ``handler`` in a worker thread."""

    async def endpoint(request: Request) -> Response:
        query = dict(request.query_params)
        live_only = query.pop("live", None) == "1"
        req = PageRequest(
            method=request.method,
            path=request.url.path,
            params={k: str(v) for k, v in request.path_params.items()},
            query=query,
            form={},
            client=request.client.host if request.client else "?",
            secure=request.url.scheme == "https",
            live_only=live_only,
        )
        try:
            req.session = await run_in_threadpool(_session, board, request.cookies.get(COOKIE))
            if req.method == "POST":
                if not _same_origin(request):
                    log.warning("dashboard: POST %s from another site refused", req.path)
                    return _page_response(_refused("this form was sent from another site"))
                req.form = await _form(request)
                if req.session is not None and not board.sessions.csrf_ok(
                    req.session, req.form.get("csrf")
                ):
                    log.warning("dashboard: POST %s without its CSRF token refused", req.path)
                    return _page_response(_refused("the form's CSRF token is missing or wrong"))
            if req.session is None and not public:
                if req.method == "GET" and not live_only:
                    return _page_response(dashboard.redirect(_login_url(request)))
                return _page_response(_refused("log in first", 401))
            reply = await run_in_threadpool(handler, board, req)
        except FleetError as exc:
            reply = await run_in_threadpool(dashboard.error_page, board, req, exc)
        except Exception:
            log.exception("dashboard: %s %s failed", request.method, request.url.path)
            failed = FleetError("the server failed on this request", code="InternalError")
            reply = await run_in_threadpool(dashboard.error_page, board, req, failed)
        return _page_response(reply)

    endpoint.__name__ = getattr(handler, "__name__", "page")
    return endpoint


def _session(board: Dashboard, token: str | None) -> Session | None:
    """Return the cookie's session while its account still exists."""
    session = board.sessions.check(token, time.time())
    if session is None or not board.api.keys(session.account):
        return None
    return session


def _same_origin(request: Request) -> bool:
    """Return whether a POST comes from this site: its Origin, or else its Referer, names
    this server; a request with neither (not a browser's form) passes."""
    own = f"{request.url.scheme}://{request.url.netloc}"
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == own
    referer = request.headers.get("referer")
    if referer is not None:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}" == own
    return True


async def _form(request: Request) -> dict[str, str]:
    """Return the POST's urlencoded form, refusing (413) one larger than MAX_FORM."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM:
            raise FleetError(
                f"the form is larger than {MAX_FORM} bytes", code="RequestBodyTooLarge"
            )
        chunks.append(chunk)
    pairs = parse_qsl(b"".join(chunks).decode("utf-8", errors="replace"), keep_blank_values=True)
    return dict(pairs)


def _login_url(request: Request) -> str:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/ui/login?" + urlencode({"next": here})


def _refused(message: str, status: int = 403) -> Reply:
    return Reply(status, message, media_type="text/plain; charset=utf-8")


def _page_response(reply: Reply) -> Response:
    headers = {**PAGE_HEADERS, **reply.headers}
    return Response(reply.body or "", reply.status, headers, media_type=reply.media_type)
