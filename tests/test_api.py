"""The REST API over real HTTP from a real ``fleet controller run --listen``: SharedKey,
Azure's envelope and status codes, paging, $filter/$select, entity tags, collections."""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from tests.api_client import ApiClient, free_port
from tests.conftest import wait_for

ACCOUNT = "apitest"


@pytest.fixture
def api(fleet, controller):
    """A controller serving the API on a free loopback port, and a client of it."""
    key = fleet.json("account", "create", ACCOUNT)["key"]
    port = free_port()
    proc = controller("--listen", f"127.0.0.1:{port}")
    client = ApiClient(port, ACCOUNT, key)
    wait_for(lambda: _listening(client), 30, message="the API to listen")
    client.controller = proc
    return client


def make_job(api, job="j", pool="p"):
    body = {"id": pool, "hostSelector": {"labels": {"none": "such"}}, "targetDedicatedNodes": 0}
    assert api.call("POST", "/pools", body=body).status == 201
    assert api.call("POST", "/jobs", body={"id": job, "poolInfo": {"poolId": pool}}).status == 201


def add_collection(api, job, tasks):
    answer = api.call("POST", f"/jobs/{job}/addtaskcollection", body={"value": tasks})
    assert answer.status == 200, answer.body
    return answer.json()["value"]


@pytest.mark.parametrize(
    "change",
    [
        "wrong key",
        "stale date",
        "future date",
        "no date",
        "no authorization",
        "unknown account",
        "malformed authorization",
        "query changed after signing",
        "length changed after signing",
    ],
)
def test_requests_that_fail_shared_key_get_azure_403(api, change):
    wrong = "d3JvbmcK" * 11
    kwargs: dict = {}
    path, query, body = "/jobs", {}, None
    if change == "wrong key":
        kwargs["key"] = wrong
    elif change == "stale date":
        kwargs["date"] = time.time() - 20 * 60
    elif change == "future date":
        kwargs["date"] = time.time() + 20 * 60
    elif change == "no date":
        kwargs["headers"] = {"ocp-date": ""}
    if change in (
        "no authorization",
        "malformed authorization",
        "unknown account",
        "query changed after signing",
        "length changed after signing",
    ):
        signed = ApiClient(
            api.port, "nosuchacct" if change == "unknown account" else api.account, api.key
        )
        if change == "length changed after signing":
            path, body = "/jobs", {"id": "x", "poolInfo": {"poolId": "p"}}
            answer = _tampered_body(signed, body)
        elif change == "query changed after signing":
            answer = _tampered_query(signed)
        else:
            answer = signed.call(
                "GET",
                path,
                query,
                sign=change == "unknown account",
                headers={"authorization": "SharedKey nocolon"}
                if change == "malformed authorization"
                else None,
            )
    else:
        answer = api.call("GET", path, query, body, **kwargs)
    assert answer.status == 403, answer.body
    error = answer.json()
    assert error["code"] == "AuthenticationFailed"
    assert error["message"]["lang"] == "en-US" and "RequestId:" in error["message"]["value"]
    detail = {v["key"]: v["value"] for v in error["values"]}
    assert "AuthenticationErrorDetail" in detail
    assert answer.headers["request-id"] and answer.headers["client-request-id"] == "test-request"
    assert api.call("GET", "/jobs").status == 200  # the right request still works
    if change == "wrong key":
        log = api.controller.log_text()
        assert "refused" in log and "SharedKey" not in log


def _tampered_query(client):
    """Sign maxresults=5, send maxresults=6."""
    from email.utils import formatdate

    from fleet.api import shared_key

    headers = {
        "ocp-date": formatdate(time.time(), usegmt=True),
        "client-request-id": "test-request",
    }
    signed = [("api-version", "2025-06-01"), ("maxresults", "5")]
    sig = shared_key.sign(
        client.key, shared_key.string_to_sign("GET", "/jobs", signed, headers, client.account)
    )
    headers["authorization"] = f"SharedKey {client.account}:{sig}"
    return client.raw("GET", "/jobs?api-version=2025-06-01&maxresults=6", b"", headers)


def _tampered_body(client, body):
    """Sign a body of one length, send one of another."""
    import json
    from email.utils import formatdate

    from fleet.api import shared_key

    data = json.dumps(body).encode()
    headers = {
        "ocp-date": formatdate(time.time(), usegmt=True),
        "content-type": "application/json",
        "content-length": str(len(data)),
        "client-request-id": "test-request",
    }
    query = [("api-version", "2025-06-01")]
    sig = shared_key.sign(
        client.key, shared_key.string_to_sign("POST", "/jobs", query, headers, client.account)
    )
    longer = data[:-1] + b', "displayName": "changed"}'
    headers.update(
        {"authorization": f"SharedKey {client.account}:{sig}", "content-length": str(len(longer))}
    )
    return client.raw("POST", "/jobs?api-version=2025-06-01", longer, headers)


def test_errors_come_in_azure_envelope_with_azure_status(api):
    make_job(api)
    missing = api.call("GET", "/jobs/nope")
    assert missing.status == 404 and missing.code == "JobNotFound"
    assert api.call("GET", "/jobs/j/tasks/nope").code == "TaskNotFound"
    assert api.call("GET", "/pools/nope").status == 404
    assert api.call("HEAD", "/pools/nope").status == 404
    assert api.call("HEAD", "/pools/p").status == 200
    again = api.call("POST", "/jobs", body={"id": "j", "poolInfo": {"poolId": "p"}})
    assert again.status == 409 and again.code == "JobExists"
    bad = api.call("POST", "/jobs", body={"id": "k", "poolInfo": {"poolId": "p"}, "priority": 5000})
    assert bad.status == 400
    values = {v["key"]: v["value"] for v in bad.json()["values"]}
    assert values["PropertyName"] == "priority"
    not_json = api.raw("POST", "/jobs?api-version=1", b"{", {})  # unsigned: 403 first
    assert not_json.status == 403
    assert api.call("POST", "/jobs", body=[1]).code == "InvalidRequestBody"
    bad_filter = api.call("GET", "/jobs", {"$filter": "state eq"})
    assert bad_filter.status == 400 and bad_filter.code == "InvalidQueryParameterValue"


def test_add_collection_reports_each_task_and_is_idempotent(api):
    make_job(api)
    tasks = [{"id": f"t{i}", "commandLine": f"echo {i}"} for i in range(100)]
    first = add_collection(api, "j", tasks)
    assert [r["status"] for r in first] == ["success"] * 100
    assert [r["taskId"] for r in first] == [t["id"] for t in tasks]
    again = add_collection(
        api,
        "j",
        tasks[:50]
        + [{"id": "new", "commandLine": "true"}, {"id": "bad id!", "commandLine": "true"}],
    )
    assert {r["error"]["code"] for r in again[:50]} == {"TaskExists"}
    assert again[50]["status"] == "success" and again[50]["taskId"] == "new"
    assert again[51]["status"] == "clienterror"
    too_many = api.call(
        "POST",
        "/jobs/j/addtaskcollection",
        body={"value": [{"id": f"x{i}", "commandLine": "true"} for i in range(101)]},
    )
    assert too_many.status == 413 and too_many.code == "RequestBodyTooLarge"
    counts = api.call("GET", "/jobs/j/taskcounts").json()["taskCounts"]
    assert counts["active"] == 101


def test_listing_pages_follow_next_links_over_a_thousand_tasks(api):
    make_job(api)
    for start in range(0, 1050, 100):
        add_collection(
            api,
            "j",
            [
                {"id": f"t{i:04d}", "commandLine": "true"}
                for i in range(start, min(start + 100, 1050))
            ],
        )
    seen, pages = [], 0
    answer = api.call("GET", "/jobs/j/tasks", {"maxresults": "400", "$select": "id,state"})
    while True:
        assert answer.status == 200, answer.body
        page = answer.json()
        pages += 1
        assert all(set(t) == {"id", "state"} for t in page["value"])
        seen += [t["id"] for t in page["value"]]
        link = page.get("odata.nextLink")
        if not link:
            break
        parts = urllib.parse.urlsplit(link)
        assert parts.netloc == f"127.0.0.1:{api.port}" and parts.scheme == "http"
        answer = api.follow(link)
    assert pages == 3 and seen == [f"t{i:04d}" for i in range(1050)]
    default = api.call("GET", "/jobs/j/tasks").json()
    assert len(default["value"]) == 1000 and "odata.nextLink" in default
    assert api.call("GET", "/jobs/j/tasks", {"maxresults": "1001"}).status == 400


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ("id eq 't3'", ["t3"]),
        ("id ne 't3' and state eq 'active'", ["t1", "t2", "t4"]),
        ("id eq 't1' or id eq 't4'", ["t1", "t4"]),
        ("startswith(id, 't')", ["t1", "t2", "t3", "t4"]),
        ("state eq 'completed'", []),
        ("executionInfo/result eq 'failure'", []),
    ],
)
def test_filter_selects_tasks(api, flt, expected):
    make_job(api)
    add_collection(api, "j", [{"id": f"t{i}", "commandLine": "true"} for i in range(1, 5)])
    answer = api.call("GET", "/jobs/j/tasks", {"$filter": flt})
    assert [t["id"] for t in answer.json()["value"]] == expected


def test_entity_tags_and_conditional_requests(api):
    make_job(api)
    got = api.call("GET", "/jobs/j")
    etag = got.headers["etag"]
    assert got.json()["eTag"] == etag and got.headers["last-modified"]
    assert got.json()["url"] == f"http://127.0.0.1:{api.port}/jobs/j"
    assert api.call("GET", "/jobs/j", headers={"if-none-match": etag}).status == 304
    stale = api.call("PATCH", "/jobs/j", body={"priority": 10}, headers={"if-match": '"0xOLD"'})
    assert stale.status == 412 and stale.code == "ConditionNotMet"
    ok = api.call("PATCH", "/jobs/j", body={"priority": 10}, headers={"if-match": etag})
    assert ok.status == 200
    after = api.call("GET", "/jobs/j")
    assert after.json()["priority"] == 10 and after.headers["etag"] != etag


def test_job_lifecycle_status_codes(api):
    make_job(api)
    add_collection(api, "j", [{"id": "t1", "commandLine": "true"}])
    assert api.call("POST", "/jobs/j/tasks/t1/terminate").status == 204
    task = api.call("GET", "/jobs/j/tasks/t1").json()
    assert task["state"] == "completed" and task["executionInfo"]["result"] == "failure"
    assert api.call("POST", "/jobs/j/tasks/t1/reactivate").status == 204
    assert api.call("GET", "/jobs/j/tasks/t1").json()["state"] == "active"
    assert api.call("POST", "/jobs/j/disable", body={"disableTasks": "requeue"}).status == 202
    assert api.call("GET", "/jobs/j").json()["state"] in ("disabling", "disabled")
    assert api.call("POST", "/jobs/j/enable").status == 202
    assert api.call("POST", "/jobs/j/terminate", body={"terminateReason": "done"}).status == 202
    wait_for(lambda: api.call("GET", "/jobs/j").json()["state"] == "completed", 30)
    assert api.call("DELETE", "/jobs/j").status == 202
    wait_for(lambda: api.call("GET", "/jobs/j").status == 404, 30)
    assert api.call("DELETE", "/pools/p").status == 202


def test_a_repeated_query_option_is_refused(api):
    """SharedKey signs one value per name: a second one appended on the way is refused."""
    answer = api.call("GET", "/jobs", {"maxresults": "5"})
    assert answer.status == 200
    from email.utils import formatdate

    from fleet.api import shared_key

    headers = {"ocp-date": formatdate(time.time(), usegmt=True)}
    query = [("api-version", "1"), ("maxresults", "5")]
    sig = shared_key.sign(
        api.key, shared_key.string_to_sign("GET", "/jobs", query, headers, api.account)
    )
    headers["authorization"] = f"SharedKey {api.account}:{sig}"
    twice = api.raw("GET", "/jobs?api-version=1&maxresults=5&maxresults=1000", b"", headers)
    assert twice.status == 400 and twice.json()["code"] == "InvalidQueryParameterValue"


def test_openapi_document_lists_the_operations(api):
    doc = api.raw("GET", "/openapi.json", b"", {}).json()
    ops = {op["operationId"] for path in doc["paths"].values() for op in path.values()}
    assert {"Pool_Add", "Job_Add", "Task_AddCollection", "Task_List", "File_GetFromTask"} <= ops


def test_listen_on_a_public_address_needs_tls_or_insecure_http(fleet):
    result = fleet("controller", "run", "--listen", "0.0.0.0:8443", check=False)
    assert result.code == 2 and "InsecureListenAddress" in result.stderr
    half = fleet("controller", "run", "--listen", "127.0.0.1:8443", "--tls-cert", "/x", check=False)
    assert half.code == 2


def test_the_api_serves_a_postgresql_store(pg_server, tmp_path):
    from tests.conftest import ControllerProcess, Fleet, pg_database

    for url in pg_database(pg_server):
        pg_fleet = Fleet(tmp_path / "pg-home", {"FLEET_DB_URL": url})
        key = pg_fleet.json("account", "create", ACCOUNT)["key"]
        port = free_port()
        proc = ControllerProcess(pg_fleet, tmp_path / "pg.log", ("--listen", f"127.0.0.1:{port}"))
        proc.start()
        try:
            client = ApiClient(port, ACCOUNT, key)
            wait_for(lambda c=client: _listening(c), 30, message="the API to listen")
            make_job(client)
            add_collection(client, "j", [{"id": f"t{i}", "commandLine": "true"} for i in range(5)])
            page = client.call("GET", "/jobs/j/tasks", {"maxresults": "2"}).json()
            assert [t["id"] for t in page["value"]] == ["t0", "t1"]
            rest = client.follow(page["odata.nextLink"]).json()
            assert [t["id"] for t in rest["value"]] == ["t2", "t3"]
            assert not (tmp_path / "pg-home" / "fleet.db").exists()
        finally:
            assert proc.stop() == 0


def _listening(client):
    try:
        return client.raw("GET", "/openapi.json", b"", {}).status == 200
    except OSError:
        return False


def _self_signed(tmp_path):
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def test_tls_serves_the_api_and_the_remote_cli_verifies_it(fleet, controller, tmp_path):
    from tests.conftest import Fleet

    cert, key_file = _self_signed(tmp_path)
    key = fleet.json("account", "create", ACCOUNT)["key"]
    port = free_port()
    controller("--listen", f"127.0.0.1:{port}", "--tls-cert", str(cert), "--tls-key", str(key_file))
    env = {"FLEET_URL": f"https://127.0.0.1:{port}", "FLEET_ACCOUNT": ACCOUNT, "FLEET_KEY": key}
    remote = Fleet(tmp_path / "elsewhere", env)
    wait_for(
        lambda: remote("--ca-file", str(cert), "pool", "list", check=False).code == 0,
        30,
        message="the API to listen over TLS",
    )
    assert remote.json("--ca-file", str(cert), "pool", "list") == []
    untrusted = remote("pool", "list", check=False)  # the system CAs do not know this one
    assert untrusted.code == 1 and "Unreachable" in untrusted.stderr


@pytest.mark.parametrize(
    ("args", "env", "code"),
    [
        (("--url", "ftp://x"), {}, "InvalidUrl"),
        (("--url", "http://h:port"), {}, "InvalidUrl"),
        (("--url", "https://127.0.0.1:1", "--ca-file", "/no/such/ca.pem"), {}, "InvalidCaFile"),
        (("--url", "http://127.0.0.1:1"), {"FLEET_KEY": "not base64!"}, "InvalidKey"),
        (("--url", "http://127.0.0.1:1"), {"FLEET_ACCOUNT": ""}, "MissingRequiredProperty"),
        (("--url", "http://127.0.0.1:1", "--key-file", "/no/such/key"), {}, "InvalidKeyFile"),
    ],
)
def test_bad_remote_settings_are_refused_before_any_request(tmp_path, args, env, code):
    from tests.conftest import Fleet

    base = {"FLEET_ACCOUNT": "acct", "FLEET_KEY": "a2V5"}
    result = Fleet(tmp_path / "home", base | env)(*args, "pool", "list", "-o", "json", check=False)
    assert result.code == 2 and json.loads(result.stderr)["error"]["code"] == code


def test_an_unreachable_controller_is_a_clear_error(tmp_path):
    from tests.conftest import Fleet

    env = {
        "FLEET_URL": f"http://127.0.0.1:{free_port()}",
        "FLEET_ACCOUNT": "a",
        "FLEET_KEY": "a2V5",
    }
    result = Fleet(tmp_path / "home", env)("job", "list", check=False)
    assert result.code == 1 and "Unreachable" in result.stderr and "Traceback" not in result.stderr
