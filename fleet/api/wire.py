"""Azure Batch's wire conventions, free of any web framework: the request a route handler
gets, the reply it returns, entity tags, conditional requests and the OData error envelope.

Route modules (``fleet/api/pools.py`` ...) take an :class:`ApiRequest` and return a
:class:`Reply`; ``fleet/api/app.py`` turns them into HTTP. Errors are fleet's own
(:mod:`fleet.errors`), mapped to Azure's status codes and envelope here.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from typing import Any, BinaryIO

from fleet.errors import BadInput, Conflict, FleetError, NotFound, TimedOut

JSON_TYPE = "application/json;odata=minimalmetadata"
#: What :func:`stamp` adds to the objects fleet prints.
STAMP_FIELDS = ("url", "eTag", "lastModified")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
#: Azure's status for an error class; a code in STATUS_OF_CODE wins over its class.
_STATUS_OF_CLASS: tuple[tuple[type[FleetError], int], ...] = (
    (BadInput, 400),
    (NotFound, 404),
    (Conflict, 409),
    (TimedOut, 408),
)
STATUS_OF_CODE = {
    "AuthenticationFailed": 403,
    "ConditionNotMet": 412,
    "RequestBodyTooLarge": 413,
    "UnsupportedOperation": 405,
    "InternalError": 500,
}


@dataclass
class ApiRequest:
    """One authenticated request, as route handlers see it."""

    method: str
    path: str
    params: dict[str, str]  # path parameters, e.g. {"jobId": "J"}
    query: dict[str, str]  # query options (a repeated one: its last value)
    headers: Mapping[str, str]  # names in lower case
    body: bytes
    base_url: str  # scheme://host[:port], for absolute links
    account: str
    query_pairs: list[tuple[str, str]] = field(default_factory=list)

    def json(self, what: str) -> dict[str, Any]:
        """Return the body as a JSON object; BadInput ``InvalidRequestBody`` otherwise."""
        try:
            data = json.loads(self.body or b"null")
        except ValueError as exc:
            raise BadInput(
                f"the request body is not JSON: {exc}", code="InvalidRequestBody", target=what
            ) from None
        if not isinstance(data, dict):
            raise BadInput(
                "the request body must be a JSON object", code="InvalidRequestBody", target=what
            )
        return data

    def url(self, *parts: str) -> str:
        """Return the absolute URL of a resource below the service root."""
        from urllib.parse import quote

        return self.base_url + "".join("/" + quote(p, safe="") for p in parts)


@dataclass
class Reply:
    """What a handler answers: a status, a JSON body or a byte stream, and headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterator[bytes] | None = None
    media_type: str = JSON_TYPE


def etag_of(obj: Any) -> str:
    """Return an entity tag for a JSON object: it changes whenever the object does."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
    return f'"0x{digest[:16].upper()}"'


def http_date(ts: float) -> str:
    """Return ``ts`` as an RFC 1123 date, as Azure sends Last-Modified."""
    return formatdate(ts, usegmt=True)


def iso_to_epoch(value: str | None) -> float | None:
    """Return the epoch seconds of an ISO 8601 time fleet printed, or None."""
    if not value:
        return None
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def entity(
    req: ApiRequest, obj: dict[str, Any], url: str, status: int = 200, body: bool = True
) -> Reply:
    """Reply with one entity: its body gains Azure's ``url``, ``eTag`` and
    ``lastModified``, its headers ``ETag``, ``Last-Modified`` and ``DataServiceId``.
    Answers 304 to a GET whose If-None-Match names the current tag."""
    stamped = stamp(obj, url)
    headers = {
        "ETag": stamped["eTag"],
        "Last-Modified": http_date(iso_to_epoch(stamped["lastModified"]) or time.time()),
        "DataServiceId": url,
    }
    if req.method in ("GET", "HEAD") and _matches(req.headers.get("if-none-match"), stamped):
        return Reply(304, headers=headers)
    return Reply(status, stamped if body else None, headers)


def stamp(obj: dict[str, Any], url: str) -> dict[str, Any]:
    """Return ``obj`` with ``url``, ``eTag`` and ``lastModified`` (the latest of its
    times) added."""
    times = [
        v
        for k, v in obj.items()
        if k in ("creationTime", "stateTransitionTime", "lastModified") and isinstance(v, str)
    ]
    out = {"url": url, **obj}
    out["lastModified"] = max(times, key=lambda t: iso_to_epoch(t) or 0.0) if times else None
    out.pop("eTag", None)
    out["eTag"] = etag_of(out)
    return out


#: Bytes a file answer holds in memory before it spools to disk, and sends at a time.
FILE_CHUNK = 1 << 20


def file_reply(fill: Callable[[BinaryIO], object], url: str) -> Reply:
    """Reply with the bytes ``fill`` writes to the file it is given: spooled (memory
    bounded), then streamed, with Azure's file headers."""
    spool: Any = tempfile.SpooledTemporaryFile(max_size=FILE_CHUNK)  # noqa: SIM115
    try:
        fill(spool)
    except BaseException:
        spool.close()
        raise
    size = spool.tell()
    spool.seek(0)
    headers = {
        "Content-Length": str(size),
        "ocp-batch-file-isdirectory": "false",
        "ocp-batch-file-url": url,
    }
    return Reply(200, headers=headers, stream=_chunks(spool), media_type="application/octet-stream")


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    with f:
        while chunk := f.read(FILE_CHUNK):
            yield chunk


def unstamped(obj: dict[str, Any]) -> dict[str, Any]:
    """Return ``obj`` without what :func:`stamp` added: as the CLI prints it."""
    return {k: v for k, v in obj.items() if k not in STAMP_FIELDS}


def byte_range(header: str | None) -> tuple[int | None, int | None]:
    """Return (start, end) of an ``ocp-range: bytes=START-[END]`` header (end inclusive,
    None: to the end), or (None, None) without one; BadInput ``InvalidRange`` otherwise."""
    if not header:
        return None, None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        raise BadInput(
            f"ocp-range must be bytes=START-END or bytes=START-, got {header!r}",
            code="InvalidRange",
            field="ocp-range",
        )
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


def check_conditions(req: ApiRequest, current: dict[str, Any], url: str) -> None:
    """Refuse (412 ``ConditionNotMet``) a change whose If-Match or If-None-Match, or
    If-Unmodified-Since / If-Modified-Since, does not hold for the ``current`` entity."""
    stamped = stamp(current, url)
    if_match, if_none = req.headers.get("if-match"), req.headers.get("if-none-match")
    modified = iso_to_epoch(stamped["lastModified"]) or 0.0
    failed = (
        (if_match is not None and not _matches(if_match, stamped))
        or (if_none is not None and _matches(if_none, stamped))
        or _after(req.headers.get("if-unmodified-since"), modified)
        or _before_or_at(req.headers.get("if-modified-since"), modified)
    )
    if failed:
        raise FleetError(
            "the condition specified using HTTP conditional header(s) is not met",
            code="ConditionNotMet",
            target=url,
        )


def _matches(header: str | None, stamped: dict[str, Any]) -> bool:
    if header is None:
        return False
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or stamped["eTag"] in tags


def _http_time(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return None


def _after(header: str | None, modified: float) -> bool:
    since = _http_time(header)
    return since is not None and int(modified) > since


def _before_or_at(header: str | None, modified: float) -> bool:
    since = _http_time(header)
    return since is not None and int(modified) <= since


def status_of(exc: FleetError) -> int:
    """Return the HTTP status Azure uses for an error like ``exc``."""
    if exc.code in STATUS_OF_CODE:
        return STATUS_OF_CODE[exc.code]
    for cls, status in _STATUS_OF_CLASS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(exc: FleetError, request_id: str) -> dict[str, Any]:
    """Return Azure's OData error envelope for ``exc``: ``code``, ``message {lang,
    value}`` and ``values`` naming the field, the object and fleet's own details."""
    when = time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime())
    values = [{"key": "RequestId", "value": request_id}]
    if exc.field:
        values.append({"key": "PropertyName", "value": exc.field})
    if exc.target:
        values.append({"key": "Target", "value": exc.target})
    values.extend({"key": str(k), "value": str(v)} for k, v in exc.details.items())
    return {
        "odata.metadata": "$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
        "code": exc.code,
        "message": {
            "lang": "en-US",
            "value": f"{exc}\nRequestId:{request_id}\nTime:{when}",
        },
        "values": values,
    }


def new_request_id() -> str:
    """Return a fresh ``request-id``."""
    return str(uuid.uuid4())
