"""The CLI as a client of a remote controller: Azure Batch REST calls signed with SharedKey.

``fleet --url URL --account NAME`` (or ``FLEET_URL``, ``FLEET_ACCOUNT``, and the key in
``FLEET_KEY`` or ``--key-file``) sends commands to ``fleet controller run --listen``
instead of opening the local database. Answers are the JSON the local commands print
(the API's own ``url``, ``eTag`` and ``lastModified`` taken off), and errors come back as
the same fleet errors, with the same codes and exit statuses. Stdlib only: no HTTP
library loads for a CLI command.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any, BinaryIO

from fleet.api import shared_key
from fleet.api.wire import unstamped
from fleet.errors import BadInput, Conflict, FleetError, NotFound, TimedOut, Unreachable

API_VERSION = "2025-06-01"
_ERROR_OF_STATUS: dict[int, type[FleetError]] = {
    400: BadInput,
    404: NotFound,
    409: Conflict,
    412: Conflict,
    408: TimedOut,
}


class Remote:
    """A controller's REST API, called as one account."""

    def __init__(
        self, url: str, account: str, key: str, ca_file: str | None = None, timeout: float = 120
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            port_ok = False
        if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
            raise BadInput(
                f"--url must be http(s)://HOST[:PORT], got {url!r}",
                code="InvalidUrl",
                field="--url",
            )
        try:
            base64.b64decode(key, validate=True)
        except ValueError:
            raise BadInput(
                "the account key is not base64 (copy it as `fleet account create` printed it)",
                code="InvalidKey",
                field="FLEET_KEY",
            ) from None
        self.base = f"{parts.scheme}://{parts.netloc}"
        self._parts = parts
        self.account, self.key = account, key
        self._ssl = _tls(ca_file) if parts.scheme == "https" else None
        self.timeout = timeout

    def _connection(self) -> http.client.HTTPConnection:
        host, port = self._parts.hostname or "", self._parts.port
        if self._ssl is not None:
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._ssl)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        """Send one signed request; return the response with its body unread, or raise the
        fleet error its envelope names."""
        pairs = [("api-version", API_VERSION), *(query or {}).items()]
        data = b"" if body is None else json.dumps(body).encode()
        sent = {"ocp-date": formatdate(time.time(), usegmt=True), **(headers or {})}
        if data:
            sent["content-type"] = "application/json; odata=minimalmetadata"
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            sent["content-length"] = str(len(data))
        raw_path = urllib.parse.quote(path)
        text = shared_key.string_to_sign(method, raw_path, pairs, sent, self.account)
        sent["authorization"] = f"SharedKey {self.account}:{shared_key.sign(self.key, text)}"
        conn = self._connection()
        try:
            conn.request(method, f"{raw_path}?{urllib.parse.urlencode(pairs)}", data or None, sent)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise Unreachable(f"cannot reach the controller at {self.base}: {exc}") from None
        if response.status >= 400:
            try:
                raise _error(response.status, response.read())
            finally:
                conn.close()
        return response

    def call(
        self, method: str, path: str, query: dict[str, str] | None = None, body: Any = None
    ) -> Any:
        """Send one request; return its JSON answer (None when it has no body)."""
        response = self.request(method, path, query, body)
        with response:
            data = response.read()
        return json.loads(data) if data else None

    def get(self, path: str, query: dict[str, str] | None = None) -> dict[str, Any]:
        """Return the object at ``path`` as the CLI prints it."""
        return local(self.call("GET", path, query))

    def list(self, path: str, query: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """Yield every object of a list, page after page (``odata.nextLink``)."""
        page = self.call("GET", path, query)
        while True:
            yield from (local(obj) for obj in page.get("value", []))
            link = page.get("odata.nextLink")
            if not link:
                return
            parts = urllib.parse.urlsplit(link)
            follow = {k: v for k, v in urllib.parse.parse_qsl(parts.query) if k != "api-version"}
            page = self.call("GET", urllib.parse.unquote(parts.path), follow)

    def download(
        self, path: str, sink: BinaryIO, start: int | None = None, end: int | None = None
    ) -> int:
        """Stream a file's bytes (``start``..``end`` inclusive) into ``sink``; return how
        many were written."""
        headers = {}
        if start is not None or end is not None:
            headers["ocp-range"] = f"bytes={start or 0}-{'' if end is None else end}"
        response = self.request("GET", path, headers=headers)
        written = 0
        with response:
            while chunk := response.read(1 << 20):
                sink.write(chunk)
                written += len(chunk)
        return written


def _tls(ca_file: str | None) -> ssl.SSLContext:
    """Return the TLS context that verifies the controller: the system's CAs, or those
    of ``ca_file``."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise BadInput(
            f"cannot use {ca_file} as CA certificates: {exc}",
            code="InvalidCaFile",
            field="--ca-file",
        ) from None


def local(obj: Any) -> Any:
    """Return an API object as the local CLI prints it."""
    return unstamped(obj) if isinstance(obj, dict) else obj


def _error(status: int, data: bytes) -> FleetError:
    """Return the fleet error an Azure error envelope describes."""
    try:
        body = json.loads(data)
        code = str(body["code"])
        message = str(body["message"]["value"]).split("\nRequestId:", 1)[0]
        values = {v["key"]: v["value"] for v in body.get("values", [])}
    except (ValueError, KeyError, TypeError):  # no envelope (an answer to HEAD): the status
        cls = _ERROR_OF_STATUS.get(status, FleetError)
        return cls(f"the controller answered HTTP {status}")
    target, field = values.get("Target"), values.get("PropertyName")
    where = " ".join(p for p in (target, field and f"field {field}") if p)
    if where:  # the envelope's message is the error's str(): "target field F: message"
        message = message.removeprefix(f"{where}: ")
    cls = _ERROR_OF_STATUS.get(status, FleetError)
    return cls(message, code=code, target=target, field=field)
