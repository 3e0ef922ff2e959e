"""A minimal Azure Batch REST client for the API tests: stdlib HTTP, signed with fleet's
own SharedKey signer (the SDK tests check that signer against the real SDKs)."""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
from dataclasses import dataclass
from email.utils import formatdate
from http.client import HTTPConnection
from typing import Any

from fleet.api import shared_key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        return self.json().get("code") if self.body else None


class ApiClient:
    """Signs and sends requests to ``http://127.0.0.1:PORT`` as ``account``."""

    def __init__(self, port: int, account: str, key: str) -> None:
        self.port, self.account, self.key = port, account, key

    def call(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        date: float | None = None,
        sign: bool = True,
        key: str | None = None,
    ) -> Answer:
        query = {"api-version": "2025-06-01", **(query or {})}
        data = b"" if body is None else json.dumps(body).encode()
        sent = {
            "ocp-date": formatdate(time.time() if date is None else date, usegmt=True),
            "client-request-id": "test-request",
            **({"content-type": "application/json; odata=minimalmetadata"} if data else {}),
            **(headers or {}),
        }
        if method in ("POST", "PUT", "PATCH"):
            sent["content-length"] = str(len(data))
        raw_path = urllib.parse.quote(path)
        if sign:
            text = shared_key.string_to_sign(
                method, raw_path, list(query.items()), sent, self.account
            )
            signature = shared_key.sign(key or self.key, text)
            sent["authorization"] = f"SharedKey {self.account}:{signature}"
        return self.raw(method, raw_path + "?" + urllib.parse.urlencode(query), data, sent)

    def raw(self, method: str, target: str, data: bytes, headers: dict[str, str]) -> Answer:
        conn = HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, target, body=data or None, headers=headers)
            resp = conn.getresponse()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def follow(self, url: str) -> Answer:
        """GET an absolute ``odata.nextLink``, signed."""
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        return self.call("GET", urllib.parse.unquote(parts.path), query)
