"""SharedKey authentication: the string-to-sign, rejected requests case by case, and real
requests signed by both azure-batch SDKs (14.2 and 15.x) checked as the server will."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pytest

from fleet.api.shared_key import AuthenticationFailed, authenticate, sign, string_to_sign
from tests.azure_sdk import VERSIONS, run_sdk

ACCOUNT = "acct1"
KEY = base64.b64encode(bytes(range(64))).decode()
OTHER_KEY = base64.b64encode(bytes([7] * 64)).decode()
NOW = 1_790_000_000.0
DATE = formatdate(NOW, usegmt=True)  # RFC 1123


@dataclass(frozen=True)
class Request:
    """One HTTP request as the server sees it: raw path, decoded query pairs, headers."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    headers: dict[str, str] = field(default_factory=dict)

    def check(self, keys: dict[str, list[str]], now: float = NOW) -> str:
        return authenticate(self.method, self.path, self.query, self.headers, keys.get, now)

    def with_headers(self, **changes: str | None) -> Request:
        """A copy with headers (``_`` for ``-`` in names) set, or dropped when None."""
        headers = dict(self.headers)
        for name, value in changes.items():
            headers.pop(name.replace("_", "-"), None)
            if value is not None:
                headers[name.replace("_", "-")] = value
        return replace(self, headers=headers)


def signed(
    req: Request,
    key: str = KEY,
    account: str = ACCOUNT,
    date: str | None = DATE,
    date_header: str = "ocp-date",
) -> Request:
    """``req`` with a date and the Authorization header a client with ``key`` sends."""
    if date is not None:
        req = req.with_headers(**{date_header: date})
    text = string_to_sign(req.method, req.path, req.query, req.headers, account)
    return req.with_headers(Authorization=f"SharedKey {account}:{sign(key, text)}")


def test_sign_is_base64_hmac_sha256_of_the_decoded_key() -> None:
    # RFC 4231 test case 2: key "Jefe"
    digest = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert (
        sign("SmVmZQ==", "what do ya want for nothing?")
        == base64.b64encode(bytes.fromhex(digest)).decode()
    )


EMPTY_HEADERS = "\n" * 11  # the eleven standard headers, none sent

STRINGS_TO_SIGN = [
    pytest.param(
        Request(
            "GET",
            "/jobs/job%201/tasks",
            (("api-version", "2025-06-01"), ("maxresults", "5"), ("$filter", "state eq 'active'")),
            {"ocp-date": DATE, "Accept": "application/json", "client-request-id": "c1"},
        ),
        f"GET{EMPTY_HEADERS}\nocp-date:{DATE}\n/acct1/jobs/job%201/tasks"
        "\n$filter:state eq 'active'\napi-version:2025-06-01\nmaxresults:5",
        id="query sorted by name, raw path, only ocp- headers besides the eleven",
    ),
    pytest.param(
        Request(
            "post",
            "/pools",
            (("api-version", "2025-06-01"),),
            {
                "Content-Type": "application/json; odata=minimalmetadata",
                "Content-Length": "31",
                "If-Match": '"0x1"',
                "Range": "bytes=1-2",
                "Date": DATE,
                "OCP-Range": "bytes=0-9",
                "ocp-date": DATE,
                "Content-MD5": "",
            },
        ),
        "POST\n\n\n31\n\napplication/json; odata=minimalmetadata\n"
        f'{DATE}\n\n"0x1"\n\n\nbytes=1-2\nocp-date:{DATE}\nocp-range:bytes=0-9\n'
        "/acct1/pools\napi-version:2025-06-01",
        id="the eleven headers in order, names in any case, empty values unsigned",
    ),
    pytest.param(
        Request(
            "DELETE",
            "/jobs/j1",
            (("b", ""), ("a", "2"), ("a", "1"), ("c", ""), ("c", "3"), ("B", "x")),
            {"Content-Length": "0"},
        ),
        "DELETE\n\n\n0" + "\n" * 9 + "/acct1/jobs/j1\nB:x\na:2\nc:3",
        id="repeated names sign their first non-empty value; names keep their case",
    ),
]


@pytest.mark.parametrize(("request_", "expected"), STRINGS_TO_SIGN)
def test_string_to_sign(request_: Request, expected: str) -> None:
    got = string_to_sign(request_.method, request_.path, request_.query, request_.headers, ACCOUNT)
    assert got == expected


GET_FILE = Request(
    "GET",
    "/jobs/j1/tasks/t1/files/wd%2Fout.txt",
    (("api-version", "2025-06-01"), ("timeout", "30")),
    {"ocp-range": "bytes=0-9", "if-none-match": '"0x1"', "accept": "application/octet-stream"},
)
ADD_TASK = Request(
    "POST",
    "/jobs/j1/tasks",
    (("api-version", "2025-06-01"),),
    {"content-type": "application/json; odata=minimalmetadata", "content-length": "42"},
)
ENABLE_JOB = Request("POST", "/jobs/j1/enable", (("api-version", "2025-06-01"),))
KEYS = {ACCOUNT: [KEY]}
MINUTE = 60.0

#: (request, the account's keys, server time): accepted
ACCEPTED = [
    pytest.param(signed(GET_FILE), KEYS, NOW, id="get"),
    pytest.param(signed(ADD_TASK), KEYS, NOW, id="post"),
    pytest.param(signed(GET_FILE, date_header="date"), KEYS, NOW, id="Date, not ocp-date"),
    pytest.param(signed(GET_FILE), {ACCOUNT: [OTHER_KEY, KEY]}, NOW, id="second key"),
    pytest.param(signed(GET_FILE), KEYS, NOW + 14 * MINUTE, id="14 minutes behind"),
    pytest.param(signed(GET_FILE), KEYS, NOW - 14 * MINUTE, id="14 minutes ahead"),
    pytest.param(
        signed(GET_FILE).with_headers(ocp_range=None, OCP_Range="bytes=0-9"),
        KEYS,
        NOW,
        id="header names in another case",
    ),
    pytest.param(
        signed(ENABLE_JOB.with_headers(content_length="0")).with_headers(content_length=None),
        KEYS,
        NOW,
        id="signed with Content-Length 0 that was not sent (15.x)",
    ),
    pytest.param(signed(ENABLE_JOB), KEYS, NOW, id="signed without Content-Length"),
    pytest.param(
        replace(signed(GET_FILE), query=(*GET_FILE.query, ("extra", ""))),
        KEYS,
        NOW,
        id="an added empty query parameter is not signed",
    ),
    pytest.param(
        signed(GET_FILE).with_headers(
            Authorization=signed(GET_FILE)
            .headers["Authorization"]
            .replace("SharedKey", "sharedkey")
        ),
        KEYS,
        NOW,
        id="scheme in lowercase",
    ),
]


@pytest.mark.parametrize(("request_", "keys", "now"), ACCEPTED)
def test_accepted(request_: Request, keys: dict[str, list[str]], now: float) -> None:
    assert request_.check(keys, now) == ACCOUNT


SIGNATURE = signed(GET_FILE).headers["Authorization"].split(":", 1)[1]

#: (request, server time, reason)
REFUSED = [
    pytest.param(signed(GET_FILE, key=OTHER_KEY), NOW, "SignatureMismatch", id="wrong key"),
    pytest.param(signed(GET_FILE), NOW + 16 * MINUTE, "StaleDate", id="16 minutes behind"),
    pytest.param(signed(GET_FILE), NOW - 16 * MINUTE, "StaleDate", id="16 minutes ahead"),
    pytest.param(signed(GET_FILE, date=None), NOW, "MissingDate", id="no date"),
    pytest.param(signed(GET_FILE, date="yesterday"), NOW, "MalformedDate", id="not a date"),
    pytest.param(
        signed(GET_FILE).with_headers(Authorization=None),
        NOW,
        "MissingAuthorization",
        id="no Authorization",
    ),
    *(
        pytest.param(
            signed(GET_FILE).with_headers(Authorization=value),
            NOW,
            "MalformedAuthorization",
            id=f"Authorization {value[:24]!r}",
        )
        for value in (
            f"Bearer {SIGNATURE}",
            f"SharedKey {ACCOUNT}",
            f"SharedKey {ACCOUNT}:",
            f"SharedKey {ACCOUNT}:{SIGNATURE} extra",
            f"SharedKey {ACCOUNT}:not*base64",
            f"SharedKey {ACCOUNT}:{base64.b64encode(bytes(16)).decode()}",
            f"SharedKey {ACCOUNT}:{SIGNATURE[:-2]}",
        )
    ),
    pytest.param(signed(GET_FILE, account="nobody1"), NOW, "UnknownAccount", id="unknown"),
    pytest.param(
        signed(GET_FILE, account="Not.An-Account"), NOW, "UnknownAccount", id="not a name"
    ),
    pytest.param(
        replace(signed(GET_FILE), path="/jobs/j1/tasks/t1/files/wd%2Fsecret.txt"),
        NOW,
        "SignatureMismatch",
        id="tampered path",
    ),
    pytest.param(
        replace(signed(GET_FILE), path=GET_FILE.path.replace("%2F", "/")),
        NOW,
        "SignatureMismatch",
        id="path decoded",
    ),
    pytest.param(replace(signed(GET_FILE), method="HEAD"), NOW, "SignatureMismatch", id="method"),
    pytest.param(
        replace(signed(GET_FILE), query=(("api-version", "2025-06-01"), ("timeout", "31"))),
        NOW,
        "SignatureMismatch",
        id="tampered query value",
    ),
    pytest.param(
        replace(signed(GET_FILE), query=(*GET_FILE.query, ("$filter", "id eq 'x'"))),
        NOW,
        "SignatureMismatch",
        id="added query parameter",
    ),
    pytest.param(
        signed(GET_FILE).with_headers(ocp_range="bytes=0-99"),
        NOW,
        "SignatureMismatch",
        id="tampered ocp-range",
    ),
    pytest.param(
        signed(GET_FILE).with_headers(if_none_match='"0x2"'),
        NOW,
        "SignatureMismatch",
        id="tampered If-None-Match",
    ),
    pytest.param(
        signed(GET_FILE).with_headers(ocp_custom="1"),
        NOW,
        "SignatureMismatch",
        id="added ocp- header",
    ),
    pytest.param(
        signed(ADD_TASK).with_headers(content_length="43"),
        NOW,
        "SignatureMismatch",
        id="changed Content-Length",
    ),
    pytest.param(
        signed(ADD_TASK).with_headers(content_type=None),
        NOW,
        "SignatureMismatch",
        id="dropped Content-Type",
    ),
    pytest.param(
        signed(GET_FILE).with_headers(ocp_date=formatdate(NOW + 1, usegmt=True)),
        NOW,
        "SignatureMismatch",
        id="changed ocp-date",
    ),
]


@pytest.mark.parametrize(("request_", "now", "reason"), REFUSED)
def test_refused(request_: Request, now: float, reason: str) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        request_.check(KEYS, now)
    error = caught.value
    assert (error.reason, error.code) == (reason, "AuthenticationFailed")
    signature = request_.headers.get("Authorization", "").partition(":")[2]
    for secret in (KEY, OTHER_KEY, SIGNATURE, signature):
        assert not secret or secret not in str(error.to_dict())


# --- requests signed by the real SDKs -------------------------------------------------


@dataclass
class Recorder:
    """A throwaway HTTP server on 127.0.0.1 that records each request and answers 500."""

    requests: list[Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                path, _, query = self.path.partition("?")
                recorder.requests.append(
                    Request(
                        self.command,
                        path,
                        tuple(parse_qsl(query, keep_blank_values=True)),
                        dict(self.headers.items()),
                    )
                )
                recorder.bodies.append(body)
                error = {"code": "Recorded", "message": {"lang": "en-US", "value": "recorded"}}
                reply = b"" if self.command == "HEAD" else json.dumps(error).encode()
                self.send_response(500)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


CALLS_15 = """
from azure.core.credentials import AzureNamedKeyCredential
from azure.batch import BatchClient, models
client = BatchClient(URL, AzureNamedKeyCredential(ACCOUNT, KEY), retry_total=0)
calls = [
    lambda: client.create_pool(models.BatchPoolCreateOptions(
        id="p1", vm_size="standard_d2s_v3", target_dedicated_nodes=2)),
    lambda: list(client.list_tasks(
        "job 1", filter=FILTER, max_results=5, select=["id", "state"], expand=["stats"])),
    lambda: b"".join(client.download_task_file("j1", "t1", FILE, ocp_range="bytes=0-99")),
    lambda: client.delete_task("j1", "t1"),
    lambda: client.job_schedule_exists("s1"),
    lambda: client.begin_enable_job("j1").result(),
    lambda: client.update_job("j1", models.BatchJobUpdateOptions(priority=1)),
]
"""

CALLS_14 = """
from azure.batch import BatchServiceClient, batch_auth, models
client = BatchServiceClient(batch_auth.SharedKeyCredentials(ACCOUNT, KEY), batch_url=URL)
client.config.retry_policy.retries = 0
calls = [
    lambda: client.pool.add(models.PoolAddParameter(
        id="p1", vm_size="standard_d2s_v3", target_dedicated_nodes=2)),
    lambda: list(client.task.list("job 1", task_list_options=models.TaskListOptions(
        filter=FILTER, max_results=5, select="id,state", expand="stats"))),
    lambda: client.file.get_from_task("j1", "t1", FILE,
        file_get_from_task_options=models.FileGetFromTaskOptions(ocp_range="bytes=0-99")),
    lambda: client.task.delete("j1", "t1"),
    lambda: client.job_schedule.exists("s1"),
    lambda: client.job.enable("j1"),
    lambda: client.job.patch("j1", models.JobPatchParameter(priority=1)),
]
"""

RUN_CALLS = """
for call in calls:
    try:
        call()
    except Exception as exc:  # the recorder answers 500: only the request matters
        print(type(exc).__name__)
"""

FILTER = "state eq 'completed' and executionInfo/result eq 'failure'"
FILE = "wd/out put+1.txt"
#: What each SDK's calls send, in order: method and raw path.
SENT = [
    ("POST", "/pools"),
    ("GET", "/jobs/job%201/tasks"),
    ("GET", "/jobs/j1/tasks/t1/files/wd%2Fout%20put%2B1.txt"),
    ("DELETE", "/jobs/j1/tasks/t1"),
    ("HEAD", "/jobschedules/s1"),
    ("POST", "/jobs/j1/enable"),
    ("PATCH", "/jobs/j1"),
]


@pytest.fixture(scope="module", params=VERSIONS)
def sdk_requests(request: pytest.FixtureRequest) -> Iterator[Recorder]:
    """The requests one SDK version sent for the calls above, signed with KEY."""
    version: str = request.param
    recorder = Recorder()
    server = ThreadingHTTPServer(("127.0.0.1", 0), recorder.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        constants = {
            "URL": f"http://{host!s}:{port}",
            "ACCOUNT": ACCOUNT,
            "KEY": KEY,
            "FILTER": FILTER,
            "FILE": FILE,
        }
        prelude = "".join(f"{name} = {value!r}\n" for name, value in constants.items())
        calls = CALLS_14 if version.startswith("14.") else CALLS_15
        run_sdk(version, prelude + calls + RUN_CALLS)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    yield recorder


def test_the_sdk_sent_each_call_once(sdk_requests: Recorder) -> None:
    assert [(r.method, r.path) for r in sdk_requests.requests] == SENT
    pool_add, list_tasks, get_file = sdk_requests.requests[:3]
    assert json.loads(sdk_requests.bodies[0])["id"] == "p1"
    assert pool_add.headers["Content-Length"] == str(len(sdk_requests.bodies[0]))
    query = dict(list_tasks.query)
    assert (query["$filter"], query["maxresults"]) == (FILTER, "5")
    assert (query["$select"], query["$expand"]) == ("id,state", "stats")
    assert get_file.headers["ocp-range"] == "bytes=0-99"
    assert json.loads(sdk_requests.bodies[-1]) == {"priority": 1}


def test_every_sdk_request_is_accepted_with_the_accounts_key(sdk_requests: Recorder) -> None:
    for req in sdk_requests.requests:
        assert req.check(KEYS, time.time()) == ACCOUNT, req


def test_every_sdk_request_is_refused_with_another_key(sdk_requests: Recorder) -> None:
    for req in sdk_requests.requests:
        with pytest.raises(AuthenticationFailed) as caught:
            req.check({ACCOUNT: [OTHER_KEY]}, time.time())
        assert caught.value.reason == "SignatureMismatch"
        assert req.headers["Authorization"].split(":")[1] not in str(caught.value)


def test_an_sdk_request_changed_on_the_way_is_refused(sdk_requests: Recorder) -> None:
    _, list_tasks, get_file, delete = sdk_requests.requests[:4]
    changed = [
        replace(
            list_tasks, query=tuple((n, "" if n == "$filter" else v) for n, v in list_tasks.query)
        ),
        replace(list_tasks, path="/jobs/job%202/tasks"),
        get_file.with_headers(**{"ocp-range": "bytes=0-1000000"}),
        replace(delete, path="/jobs/j1/tasks/t2"),
    ]
    for req in changed:
        with pytest.raises(AuthenticationFailed, match="does not match"):
            req.check(KEYS, time.time())


def test_an_sdk_request_without_its_content_length_0_is_accepted(sdk_requests: Recorder) -> None:
    # a transport may send a bodiless DELETE or POST without Content-Length
    bodiless = [r for r in sdk_requests.requests if r.headers.get("Content-Length") == "0"]
    assert [(r.method, r.path) for r in bodiless] == [SENT[3], SENT[5]]
    for req in bodiless:
        stripped = req.with_headers(**{"Content-Length": None})
        assert stripped.check(KEYS, time.time()) == ACCOUNT
