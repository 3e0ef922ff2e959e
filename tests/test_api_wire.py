"""Pure parts of the REST API: status codes and the error envelope, entity tags and
conditional requests, and which addresses ``--listen`` accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.api.server import parse_listen
from fleet.api.wire import ApiRequest, check_conditions, entity, error_body, stamp, status_of
from fleet.errors import (
    AgentError,
    BadInput,
    Conflict,
    FleetError,
    NotFound,
    TimedOut,
    Unreachable,
)

JOB = {
    "id": "j",
    "state": "active",
    "creationTime": "2026-11-30T10:00:00.000Z",
    "stateTransitionTime": "2026-11-30T11:00:00.000Z",
}
URL = "http://127.0.0.1:8443/jobs/j"


def request(method="GET", **headers):
    return ApiRequest(method, "/jobs/j", {"jobId": "j"}, {}, headers, b"", "http://x", "acct")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BadInput("bad", code="InvalidPropertyValue"), 400),
        (NotFound("gone", code="JobNotFound"), 404),
        (Conflict("taken", code="TaskExists"), 409),
        (Conflict("not now", code="JobNotActive"), 409),
        (TimedOut("slow"), 408),
        (FleetError("no", code="AuthenticationFailed"), 403),
        (FleetError("changed", code="ConditionNotMet"), 412),
        (FleetError("big", code="RequestBodyTooLarge"), 413),
        (FleetError("bug", code="InternalError"), 500),
        (Unreachable("node down"), 500),
        (AgentError("agent"), 500),
    ],
)
def test_each_error_has_azures_status(error, status):
    assert status_of(error) == status


def test_the_error_envelope_is_azures():
    exc = BadInput("must be 1..1000", code="InvalidPropertyValue", target="job j", field="priority")
    body = error_body(exc, "rid-1")
    assert body["code"] == "InvalidPropertyValue"
    assert body["message"]["lang"] == "en-US"
    assert body["message"]["value"].startswith(
        "job j field priority: must be 1..1000\nRequestId:rid-1\n"
    )
    values = {v["key"]: v["value"] for v in body["values"]}
    assert values == {"RequestId": "rid-1", "PropertyName": "priority", "Target": "job j"}


def test_stamp_adds_url_latest_time_and_a_tag_that_follows_the_content():
    stamped = stamp(JOB, URL)
    assert stamped["url"] == URL and stamped["lastModified"] == JOB["stateTransitionTime"]
    assert stamped["eTag"] == stamp(dict(JOB), URL)["eTag"]  # stable
    assert stamp({**JOB, "state": "completed"}, URL)["eTag"] != stamped["eTag"]
    assert stamp({**stamped}, URL)["eTag"] == stamped["eTag"]  # its own tag is not hashed


def test_get_with_the_current_tag_is_not_modified():
    tag = stamp(JOB, URL)["eTag"]
    assert entity(request(**{"if-none-match": tag}), JOB, URL).status == 304
    assert entity(request(**{"if-none-match": '"0xOTHER"'}), JOB, URL).status == 200
    reply = entity(request(), JOB, URL)
    assert reply.headers["ETag"] == tag and reply.headers["Last-Modified"].endswith("GMT")


@pytest.mark.parametrize(
    ("headers", "holds"),
    [
        ({}, True),
        ({"if-match": "*"}, True),
        ({"if-match": "CURRENT"}, True),
        ({"if-match": '"0xOLD", CURRENT'}, True),
        ({"if-match": '"0xOLD"'}, False),
        ({"if-none-match": "CURRENT"}, False),
        ({"if-none-match": "*"}, False),
        ({"if-none-match": '"0xOLD"'}, True),
        ({"if-unmodified-since": "Mon, 30 Nov 2026 12:00:00 GMT"}, True),
        ({"if-unmodified-since": "Mon, 30 Nov 2026 10:30:00 GMT"}, False),
        ({"if-modified-since": "Mon, 30 Nov 2026 10:30:00 GMT"}, True),
        ({"if-modified-since": "Mon, 30 Nov 2026 12:00:00 GMT"}, False),
        ({"if-modified-since": "not a date"}, True),
    ],
)
def test_conditional_changes(headers, holds):
    tag = stamp(JOB, URL)["eTag"]
    headers = {k: v.replace("CURRENT", tag) for k, v in headers.items()}
    if holds:
        check_conditions(request("PATCH", **headers), JOB, URL)
    else:
        with pytest.raises(FleetError) as caught:
            check_conditions(request("PATCH", **headers), JOB, URL)
        assert caught.value.code == "ConditionNotMet" and status_of(caught.value) == 412


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:8443", "127.0.0.1", 8443),
        ("127.0.0.2:0", "127.0.0.2", 0),
        ("localhost:9000", "localhost", 9000),
        ("[::1]:8443", "::1", 8443),
        (":7000", "127.0.0.1", 7000),
        ("127.0.0.1", "127.0.0.1", 8443),
    ],
)
def test_loopback_addresses_need_nothing_more(text, host, port):
    listen = parse_listen(text, None, None, False)
    assert (listen.host, listen.port, listen.scheme) == (host, port, "http")


@pytest.mark.parametrize(
    ("text", "cert", "key", "insecure", "code"),
    [
        ("0.0.0.0:8443", None, None, False, "InsecureListenAddress"),
        ("192.0.2.7:8443", None, None, False, "InsecureListenAddress"),
        ("example.org:8443", None, None, False, "InsecureListenAddress"),
        ("127.0.0.1:http", None, None, False, "InvalidListenAddress"),
        ("127.0.0.1:70000", None, None, False, "InvalidListenAddress"),
        ("127.0.0.1:8443", Path("c.pem"), None, False, "InvalidListenAddress"),
        ("127.0.0.1:8443", None, Path("k.pem"), False, "InvalidListenAddress"),
    ],
)
def test_bad_or_unprotected_addresses_are_refused(text, cert, key, insecure, code):
    with pytest.raises(BadInput) as caught:
        parse_listen(text, cert, key, insecure)
    assert caught.value.code == code


def test_public_addresses_with_tls_or_said_insecure():
    assert parse_listen("0.0.0.0:8443", Path("c"), Path("k"), False).scheme == "https"
    assert parse_listen("0.0.0.0:8443", None, None, True).scheme == "http"
