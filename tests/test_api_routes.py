"""The REST API's node, pool, job schedule, application and certificate routes over real
HTTP from a real ``fleet controller run --listen``: each route's success status and body,
its not-found envelope and bad bodies (400 naming the property)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import pkcs12

from tests import test_api
from tests.api_client import Answer
from tests.cert_files import make_cert, sha1
from tests.conftest import make_pool, wait_for, wait_for_idle_nodes

api = test_api.api  # the fixture: a controller serving the API, and a signed client
FAR = "2099-01-01T00:00:00Z"


def values(answer: Answer) -> dict[str, str]:
    """Return the ``values`` of an error envelope as a dict."""
    return {v["key"]: v["value"] for v in answer.json()["values"]}


def refused(answer: Answer, status: int, code: str | None = None, field: str | None = None):
    """Assert ``answer`` is Azure's error envelope with this status, code and property."""
    assert answer.status == status, (answer.status, answer.body)
    if code is not None:
        assert answer.code == code, answer.body
    if field is not None:
        assert values(answer)["PropertyName"] == field


def loop_pool(fleet, api, pool="p"):
    """A pool of one host on this machine's port 1 (never reachable): node id ``loop``."""
    inventory = Path(fleet.home).parent / "loop.ini"
    inventory.write_text("[x]\nloop ansible_host=127.0.0.1 ansible_port=1\n")
    fleet("host", "import", str(inventory))
    assert api.call("POST", "/pools", body={"id": pool, "hosts": ["loop"]}).status == 201


def sized_pool(api, pool="s"):
    body = {"id": pool, "hostSelector": {"labels": {"none": "such"}}, "targetDedicatedNodes": 0}
    assert api.call("POST", "/pools", body=body).status == 201


# -- pools


def test_pool_patch_changes_only_what_it_names_and_update_properties_replaces(api):
    sized_pool(api)
    start = {"commandLine": "echo hi", "waitForSuccess": True}
    patched = api.call("PATCH", "/pools/s", body={"startTask": start})
    assert patched.status == 200, patched.body
    meta = [{"name": "team", "value": "a"}]
    assert api.call("PATCH", "/pools/s", body={"metadata": meta}).status == 200
    pool = api.call("GET", "/pools/s").json()
    assert pool["startTask"]["commandLine"] == "echo hi" and pool["metadata"] == meta
    everything = {"certificateReferences": [], "applicationPackageReferences": [], "metadata": []}
    replaced = api.call("POST", "/pools/s/updateproperties", body=everything)
    assert replaced.status == 204, replaced.body
    pool = api.call("GET", "/pools/s").json()
    assert "startTask" not in pool and "metadata" not in pool
    assert pool["hostSelector"] == {"labels": {"none": "such"}}  # the rest is kept


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "field"),
    [
        ("PATCH", "/pools/s", {"taskSlotsPerNode": 4}, "UnsupportedProperty", "taskSlotsPerNode"),
        ("PATCH", "/pools/s", {"startTask": {"commandLine": 5}}, None, "startTask.commandLine"),
        (
            "POST",
            "/pools/s/updateproperties",
            {"certificateReferences": [], "applicationPackageReferences": []},
            "MissingRequiredProperty",
            "metadata",
        ),
        (
            "POST",
            "/pools/s/updateproperties",
            {"metadata": []},
            "MissingRequiredProperty",
            "applicationPackageReferences",
        ),
        ("POST", "/pools/s/removenodes", {"nodeList": []}, "InvalidPropertyValue", "nodeList"),
        ("POST", "/pools/s/removenodes", {"nodeList": "n1"}, "InvalidPropertyValue", "nodeList"),
        ("POST", "/pools/s/evaluateautoscale", {}, "MissingRequiredProperty", "autoScaleFormula"),
        ("POST", "/pools/s/enableautoscale", {"autoScaleFormula": ""}, None, "autoScaleFormula"),
    ],
)
def test_bad_pool_bodies_are_refused_naming_the_property(api, method, path, body, code, field):
    sized_pool(api)
    before = api.call("GET", "/pools/s").json()
    refused(api.call(method, path, body=body), 400, code, field)
    assert api.call("GET", "/pools/s").json()["eTag"] == before["eTag"]  # nothing changed


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", "/pools/nope", {"metadata": []}),
        (
            "POST",
            "/pools/nope/updateproperties",
            {"certificateReferences": [], "applicationPackageReferences": [], "metadata": []},
        ),
        ("POST", "/pools/nope/removenodes", {"nodeList": ["n"]}),
        ("POST", "/pools/nope/enableautoscale", {"autoScaleFormula": "$TargetDedicatedNodes=0;"}),
        ("POST", "/pools/nope/disableautoscale", None),
        ("POST", "/pools/nope/evaluateautoscale", {"autoScaleFormula": "$TargetDedicatedNodes=0;"}),
    ],
)
def test_pool_routes_answer_pool_not_found(api, method, path, body):
    refused(api.call(method, path, body=body), 404, "PoolNotFound")


def test_autoscale_enable_evaluate_disable(api):
    sized_pool(api)
    formula = "$TargetDedicatedNodes = 0;"
    run = api.call("POST", "/pools/s/evaluateautoscale", body={"autoScaleFormula": formula})
    assert run.status == 200, run.body
    assert "$TargetDedicatedNodes=0" in run.json()["results"] and run.json()["timestamp"]
    bad = api.call("POST", "/pools/s/evaluateautoscale", body={"autoScaleFormula": "$x = ;"})
    refused(bad, 400, field="autoScaleFormula")
    enabled = api.call(
        "POST",
        "/pools/s/enableautoscale",
        body={"autoScaleFormula": formula, "autoScaleEvaluationInterval": "PT5M"},
    )
    assert enabled.status == 200, enabled.body
    pool = api.call("GET", "/pools/s").json()
    assert pool["enableAutoScale"] is True and pool["autoScaleEvaluationInterval"] == "PT5M"
    again = api.call("POST", "/pools/s/enableautoscale", body={})  # keeps its formula
    assert again.status == 200 and api.call("GET", "/pools/s").json()["autoScaleFormula"] == formula
    resize = api.call("POST", "/pools/s/resize", body={"targetDedicatedNodes": 1})
    refused(resize, 409, "AutoScaleEnabled")
    assert api.call("POST", "/pools/s/disableautoscale").status == 200
    assert not api.call("GET", "/pools/s").json().get("enableAutoScale")


def test_node_counts_list_every_pool(api):
    sized_pool(api, "a")
    sized_pool(api, "b")
    answer = api.call("GET", "/nodecounts")
    assert answer.status == 200, answer.body
    counts = answer.json()["value"]
    assert [c["poolId"] for c in counts] == ["a", "b"]
    assert counts[0]["dedicated"]["total"] == 0 and counts[0]["lowPriority"]["idle"] == 0
    assert "url" not in counts[0]
    first = api.call("GET", "/nodecounts", {"maxresults": "1"}).json()
    assert [c["poolId"] for c in first["value"]] == ["a"] and "odata.nextLink" in first
    filtered = api.call("GET", "/nodecounts", {"$filter": "poolId eq 'b'"}).json()
    assert [c["poolId"] for c in filtered["value"]] == ["b"]


# -- nodes (no lab: a host on port 1 that never answers)


def test_node_operations_on_an_unreachable_node(api, fleet):
    loop_pool(fleet, api)
    node = "/pools/p/nodes/loop"
    login = api.call("GET", node + "/remoteloginsettings")
    assert login.status == 200
    assert login.json() == {"remoteLoginIPAddress": "127.0.0.1", "remoteLoginPort": 1}
    disabled = api.call(
        "POST", node + "/disablescheduling", body={"nodeDisableSchedulingOption": "terminate"}
    )
    assert disabled.status == 200, disabled.body
    assert api.call("GET", node).json()["schedulingState"] == "disabled"
    assert api.call("POST", node + "/enablescheduling").status == 200
    assert api.call("GET", node).json()["schedulingState"] == "enabled"
    reboot = api.call("POST", node + "/reboot", body={"nodeRebootOption": "requeue"})
    refused(reboot, 409, "NodeRebootRefused", "rebootCommand")
    removed = api.call(
        "POST",
        "/pools/p/removenodes",
        body={"nodeList": ["loop"], "nodeDeallocationOption": "terminate"},
    )
    assert removed.status == 202, removed.body
    wait_for(lambda: api.call("GET", node).status == 404, 30, message="the node removed")


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("reboot", {"nodeRebootOption": "later"}, "nodeRebootOption"),
        ("reimage", {"nodeReimageOption": "later"}, "nodeReimageOption"),
        ("disablescheduling", {"nodeDisableSchedulingOption": "retaineddata"}, None),
    ],
)
def test_bad_node_options_are_refused_naming_the_property(api, fleet, action, body, field):
    loop_pool(fleet, api)
    answer = api.call("POST", f"/pools/p/nodes/loop/{action}", body=body)
    refused(answer, 400, "InvalidPropertyValue", field or "nodeDisableSchedulingOption")
    assert api.call("GET", "/pools/p/nodes/loop").json()["schedulingState"] == "enabled"


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("POST", "/reboot", None),
        ("POST", "/reimage", {}),
        ("POST", "/disablescheduling", None),
        ("POST", "/enablescheduling", None),
        ("GET", "/remoteloginsettings", None),
        ("POST", "/users", {"name": "someone", "sshPublicKey": "ssh-ed25519 AAAA x"}),
        ("PUT", "/users/someone", {"sshPublicKey": "ssh-ed25519 AAAA x"}),
        ("DELETE", "/users/someone", None),
        ("GET", "/files", None),
        ("GET", "/files/startup/stdout.txt", None),
    ],
)
def test_node_routes_answer_node_not_found(api, fleet, method, suffix, body):
    loop_pool(fleet, api)
    refused(api.call(method, f"/pools/p/nodes/nope{suffix}", body=body), 404, "NodeNotFound")
    assert api.call("HEAD", "/pools/p/nodes/nope/files/x").status == 404


# -- job schedules


def schedule_body(schedule_id="s", pool="s"):
    return {
        "id": schedule_id,
        "schedule": {"doNotRunUntil": FAR, "recurrenceInterval": "PT1H"},
        "jobSpecification": {"poolInfo": {"poolId": pool}},
    }


def test_job_schedule_lifecycle_status_codes(api):
    sized_pool(api)
    added = api.call("POST", "/jobschedules", body=schedule_body())
    assert added.status == 201, added.body
    assert added.headers["location"].endswith("/jobschedules/s")
    refused(api.call("POST", "/jobschedules", body=schedule_body()), 409, "JobScheduleExists")
    got = api.call("GET", "/jobschedules/s")
    assert got.status == 200 and got.json()["state"] == "active"
    assert got.json()["eTag"] == got.headers["etag"]
    assert api.call("HEAD", "/jobschedules/s").status == 200
    assert [s["id"] for s in api.call("GET", "/jobschedules").json()["value"]] == ["s"]
    meta = [{"name": "k", "value": "v"}]
    stale = api.call(
        "PATCH", "/jobschedules/s", body={"metadata": meta}, headers={"if-match": '"0x0"'}
    )
    refused(stale, 412, "ConditionNotMet")
    assert api.call("PATCH", "/jobschedules/s", body={"metadata": meta}).status == 200
    assert api.call("GET", "/jobschedules/s").json()["metadata"] == meta
    body = schedule_body()
    body["schedule"]["recurrenceInterval"] = "PT2H"
    del body["id"]
    assert api.call("PUT", "/jobschedules/s", body=body).status == 200
    updated = api.call("GET", "/jobschedules/s").json()
    assert updated["schedule"]["recurrenceInterval"] == "PT2H" and "metadata" not in updated
    jobs = api.call("GET", "/jobschedules/s/jobs")
    assert jobs.status == 200 and jobs.json()["value"] == []
    assert api.call("POST", "/jobschedules/s/disable").status == 204
    assert api.call("GET", "/jobschedules/s").json()["state"] == "disabled"
    refused(api.call("POST", "/jobschedules/s/disable"), 409, "JobScheduleStateConflict")
    assert api.call("POST", "/jobschedules/s/enable").status == 204
    assert api.call("POST", "/jobschedules/s/terminate").status == 202
    wait_for(
        lambda: api.call("GET", "/jobschedules/s").json()["state"] == "completed",
        30,
        message="the schedule completed",
    )
    assert api.call("DELETE", "/jobschedules/s").status == 202
    wait_for(lambda: api.call("GET", "/jobschedules/s").status == 404, 30, message="it gone")


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"metadata": []}),
        ("PUT", "", {"schedule": {}, "jobSpecification": {"poolInfo": {"poolId": "s"}}}),
        ("DELETE", "", None),
        ("POST", "/disable", None),
        ("POST", "/enable", None),
        ("POST", "/terminate", None),
        ("GET", "/jobs", None),
    ],
)
def test_job_schedule_routes_answer_not_found(api, method, suffix, body):
    answer = api.call(method, f"/jobschedules/nope{suffix}", body=body)
    refused(answer, 404, "JobScheduleNotFound")
    assert api.call("HEAD", "/jobschedules/nope").status == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"schedule": {"recurrenceInterval": "often"}}, "schedule.recurrenceInterval"),
        ({"jobSpecification": None}, "jobSpecification"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_job_schedules_are_refused_naming_the_property(api, change, field):
    sized_pool(api)
    refused(api.call("POST", "/jobschedules", body=schedule_body() | change), 400, field=field)
    assert api.call("POST", "/jobschedules", body=schedule_body()).status == 201
    put = {"schedule": {"doNotRunUntil": FAR}}
    refused(api.call("PUT", "/jobschedules/s", body=put), 400, "MissingRequiredProperty")
    refused(api.call("PATCH", "/jobschedules/s", body={"id": "t"}), 400, field="id")


# -- applications


def test_applications_list_and_get(api, fleet, tmp_path):
    archive = tmp_path / "app.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        member = zipfile.ZipInfo("bin/hello.sh")
        member.external_attr = 0o100755 << 16  # a regular file
        zf.writestr(member, "echo hello\n")
    fleet("application", "package", "create", "app", "1.0", str(archive))
    fleet("application", "package", "create", "app", "2.0", str(archive))
    listed = api.call("GET", "/applications")
    assert listed.status == 200, listed.body
    [summary] = listed.json()["value"]
    assert summary["id"] == "app" and summary["versions"] == ["1.0", "2.0"]
    assert summary["displayName"] and "url" not in summary
    got = api.call("GET", "/applications/app")
    assert got.status == 200 and got.json()["versions"] == ["1.0", "2.0"]
    refused(api.call("GET", "/applications/nope"), 404, "ApplicationNotFound")


# -- certificates


def cert_path(thumbprint: str, algorithm: str = "sha1") -> str:
    return f"/certificates(thumbprintAlgorithm={algorithm},thumbprint={thumbprint})"


def test_certificates_add_list_get_delete(api):
    cert, key = make_cert()
    der = cert.public_bytes(serialization.Encoding.DER)
    thumbprint = sha1(cert)
    body = {
        "thumbprint": thumbprint.upper(),
        "thumbprintAlgorithm": "sha1",
        "data": base64.b64encode(der).decode(),
        "certificateFormat": "cer",
    }
    added = api.call("POST", "/certificates", body=body)
    assert added.status == 201, added.body
    assert added.headers["location"].endswith(cert_path(thumbprint))
    refused(api.call("POST", "/certificates", body=body), 409, "CertificateExists")
    listed = api.call("GET", "/certificates").json()["value"]
    assert [c["thumbprint"] for c in listed] == [thumbprint]
    got = api.call("GET", cert_path(thumbprint))
    assert got.status == 200, got.body
    assert got.json()["thumbprintAlgorithm"] == "sha1" and got.json()["state"] == "active"
    assert got.json()["hasPrivateKey"] is False
    refused(api.call("GET", cert_path(thumbprint, "md5")), 400, field="thumbprintAlgorithm")
    assert api.call("DELETE", cert_path(thumbprint)).status == 202
    refused(api.call("GET", cert_path(thumbprint)), 404, "CertificateNotFound")
    refused(api.call("DELETE", cert_path(thumbprint)), 404, "CertificateNotFound")

    other, other_key = make_cert("with-key")
    pfx = pkcs12.serialize_key_and_certificates(
        b"t", other_key, other, None, serialization.BestAvailableEncryption(b"pw")
    )
    with_key = {
        "thumbprint": sha1(other),
        "thumbprintAlgorithm": "sha1",
        "data": base64.b64encode(pfx).decode(),
        "certificateFormat": "pfx",
        "password": "pw",
    }
    assert api.call("POST", "/certificates", body=with_key).status == 201
    assert api.call("GET", cert_path(sha1(other))).json()["hasPrivateKey"] is True


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"thumbprint": "00" * 20}, "thumbprint"),
        ({"thumbprint": None}, "thumbprint"),
        ({"thumbprintAlgorithm": "md5"}, "thumbprintAlgorithm"),
        ({"data": "not base64!"}, "data"),
        ({"certificateFormat": "pem"}, "certificateFormat"),
    ],
)
def test_bad_certificates_are_refused_naming_the_property(api, change, field):
    cert, _ = make_cert()
    body = {
        "thumbprint": sha1(cert),
        "thumbprintAlgorithm": "sha1",
        "data": base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode(),
        "certificateFormat": "cer",
    }
    refused(api.call("POST", "/certificates", body=body | change), 400, field=field)
    assert api.call("GET", "/certificates").json()["value"] == []


def test_openapi_document_names_the_new_operations_and_their_parameters(api):
    doc = api.raw("GET", "/openapi.json", b"", {}).json()
    ops = {op["operationId"]: op for path in doc["paths"].values() for op in path.values()}
    assert {
        "ComputeNode_Reboot",
        "ComputeNode_AddUser",
        "File_GetFromComputeNode",
        "Pool_Patch",
        "Pool_EvaluateAutoScale",
        "Account_ListPoolNodeCounts",
        "JobSchedule_Add",
        "Job_ListFromJobSchedule",
        "Application_Get",
        "Certificate_Get",
    } <= set(ops)
    names = [p["name"] for p in ops["Certificate_Get"]["parameters"] if p["in"] == "path"]
    assert names == ["thumbprintAlgorithm", "thumbprint"]


# -- on the lab: node files and node users


@pytest.mark.lab
def test_node_files_list_get_range_and_properties(api, fleet, lab_inventory):
    (host,) = make_pool(fleet, lab_inventory, "p", 1, "--start-task", "echo hello-node")
    wait_for_idle_nodes(fleet, "p")
    base = f"/pools/p/nodes/{host}/files"
    top = api.call("GET", base)
    assert top.status == 200, top.body
    assert "startup" in [f["name"] for f in top.json()["value"]]
    deep = api.call("GET", base, {"recursive": "true"}).json()["value"]
    entry = next(f for f in deep if f["name"] == "startup/stdout.txt")
    assert entry["url"].endswith(f"{base}/startup/stdout.txt")
    assert entry["properties"]["contentLength"] == len("hello-node\n")
    whole = api.call("GET", base + "/startup/stdout.txt")
    assert whole.status == 200 and whole.body == b"hello-node\n"
    part = api.call("GET", base + "/startup/stdout.txt", headers={"ocp-range": "bytes=1-4"})
    assert part.body == b"ello" and part.headers["content-length"] == "4"
    tail = api.call("GET", base + "/startup/stdout.txt", headers={"ocp-range": "bytes=6-"})
    assert tail.body == b"node\n"
    head = api.call("HEAD", base + "/startup/stdout.txt")
    assert head.status == 200 and head.headers["content-length"] == str(len("hello-node\n"))
    assert head.headers["ocp-batch-file-isdirectory"] == "false"
    refused(api.call("GET", base + "/startup/nope.txt"), 404, "FileNotFound")
    assert api.call("HEAD", base + "/startup/nope.txt").status == 404
    refused(api.call("GET", base + "/startup/../../etc/passwd"), 400, "InvalidPath")
    bad_range = api.call("GET", base + "/startup/stdout.txt", headers={"ocp-range": "lines=1"})
    refused(bad_range, 400, "InvalidRange")


@pytest.mark.lab
def test_node_users_add_update_delete(api, fleet, lab_inventory):
    if os.geteuid() != 0:
        pytest.skip("creating OS user accounts on the lab host needs root")
    (host,) = make_pool(fleet, lab_inventory, "p", 1)
    wait_for_idle_nodes(fleet, "p")
    name = f"fnu{uuid.uuid4().hex[:8]}"
    users = f"/pools/p/nodes/{host}/users"
    try:
        bad = api.call("POST", users, body={"name": name, "isAdmin": "yes"})
        refused(bad, 400, field="isAdmin")
        added = api.call("POST", users, body={"name": name, "password": "s3cret-Pass"})
        assert added.status == 201, added.body
        assert added.headers["location"].endswith(f"{users}/{name}")
        refused(api.call("POST", users, body={"name": name}), 409, "NodeUserExists")
        key = (
            Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        updated = api.call("PUT", f"{users}/{name}", body={"sshPublicKey": key})
        assert updated.status == 200, updated.body
        listed = fleet.json("node", "user", "list", "--pool", "p", "--node", host)
        assert [u["hasPassword"] for u in listed] == [False]
        assert api.call("DELETE", f"{users}/{name}").status == 200
        assert fleet.json("node", "user", "list", "--pool", "p", "--node", host) == []
    finally:
        subprocess.run(["userdel", "--force", "--remove", name], capture_output=True)


# -- the legacy SDK drives the odd paths

SDK14 = """
import base64, json, sys
import azure.batch.models as m
from azure.batch import BatchServiceClient
from azure.batch.batch_auth import SharedKeyCredentials

url, account, key, thumbprint, der = sys.argv[1:6]
client = BatchServiceClient(SharedKeyCredentials(account, key), batch_url=url)
client.certificate.add(
    m.CertificateAddParameter(
        thumbprint=thumbprint, thumbprint_algorithm="sha1", data=der, certificate_format="cer"
    )
)
cert = client.certificate.get("sha1", thumbprint)
listed = [c.thumbprint for c in client.certificate.list()]
client.pool.patch("s", m.PoolPatchParameter(metadata=[m.MetadataItem(name="k", value="v")]))
meta = [(i.name, i.value) for i in client.pool.get("s").metadata]
run = client.pool.evaluate_auto_scale("s", "$TargetDedicatedNodes = 0;")
counts = [c.pool_id for c in client.account.list_pool_node_counts()]
client.job_schedule.add(
    m.JobScheduleAddParameter(
        id="js",
        schedule=m.Schedule(recurrence_interval="PT1H", do_not_run_until="2099-01-01T00:00:00Z"),
        job_specification=m.JobSpecification(pool_info=m.PoolInformation(pool_id="s")),
    )
)
exists = client.job_schedule.exists("js")
client.job_schedule.disable("js")
state = client.job_schedule.get("js").state
jobs = list(client.job.list_from_job_schedule("js"))
apps = [a.id for a in client.application.list()]
client.certificate.delete("sha1", thumbprint)
print(json.dumps({
    "cert": cert.thumbprint, "listed": listed, "meta": meta, "results": run.results,
    "counts": counts, "exists": exists, "state": str(state.value if hasattr(state, "value") else state),
    "jobs": len(jobs), "apps": apps,
}))
"""


def test_the_legacy_sdk_drives_certificates_schedules_and_pool_routes(api):
    from tests.azure_sdk import run_sdk

    sized_pool(api)
    cert, _ = make_cert()
    der = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    url = f"http://127.0.0.1:{api.port}"
    out = run_sdk("14.2.0", SDK14, [url, api.account, api.key, sha1(cert), der]).splitlines()
    seen = json.loads(out[-1])
    assert seen["cert"] == sha1(cert) and seen["listed"] == [sha1(cert)]
    assert seen["meta"] == [["k", "v"]] and "$TargetDedicatedNodes=0" in seen["results"]
    assert seen["counts"] == ["s"] and seen["exists"] is True
    assert seen["state"] == "disabled" and seen["jobs"] == 0 and seen["apps"] == []
    refused(api.call("GET", cert_path(sha1(cert))), 404, "CertificateNotFound")


SDK15 = """
import json, sys
from azure.batch import BatchClient, models as m
from azure.core.credentials import AzureNamedKeyCredential

url, account, key = sys.argv[1:4]
client = BatchClient(endpoint=url, credential=AzureNamedKeyCredential(account, key))
client.update_pool("s", m.BatchPoolUpdateOptions(metadata=[m.BatchMetadataItem(name="k", value="v")]))
patched = [(i.name, i.value) for i in client.get_pool("s").metadata]
client.replace_pool_properties(
    "s",
    m.BatchPoolReplaceOptions(application_package_references=[], metadata=[]),
)
replaced = client.get_pool("s").metadata
formula = "$TargetDedicatedNodes = 0;"
client.enable_pool_auto_scale("s", m.BatchPoolEnableAutoScaleOptions(auto_scale_formula=formula))
enabled = client.get_pool("s").enable_auto_scale
run = client.evaluate_pool_auto_scale("s", m.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula=formula))
client.disable_pool_auto_scale("s")
counts = [c.pool_id for c in client.list_pool_node_counts()]
client.create_job_schedule(
    m.BatchJobScheduleCreateOptions(
        id="js",
        schedule=m.BatchJobScheduleConfiguration(
            recurrence_interval="PT1H", do_not_run_until="2099-01-01T00:00:00Z"
        ),
        job_specification=m.BatchJobSpecification(pool_info=m.BatchPoolInfo(pool_id="s")),
    )
)
exists = client.job_schedule_exists("js")
client.disable_job_schedule("js")
disabled = str(client.get_job_schedule("js").state)
client.enable_job_schedule("js")
client.update_job_schedule("js", m.BatchJobScheduleUpdateOptions(metadata=[m.BatchMetadataItem(name="a", value="b")]))
meta = [(i.name, i.value) for i in client.get_job_schedule("js").metadata]
jobs = list(client.list_jobs_from_schedule("js"))
schedules = [s.id for s in client.list_job_schedules()]
apps = list(client.list_applications())
print(json.dumps({
    "patched": patched, "replaced": replaced, "enabled": enabled, "results": run.results,
    "counts": counts, "exists": exists, "disabled": disabled, "meta": meta, "jobs": len(jobs),
    "schedules": schedules, "apps": len(apps),
}))
"""


def test_the_current_sdk_drives_pool_schedule_and_application_routes(api):
    from tests.azure_sdk import run_sdk

    sized_pool(api)
    url = f"http://127.0.0.1:{api.port}"
    seen = json.loads(run_sdk("15.1.0", SDK15, [url, api.account, api.key]).splitlines()[-1])
    assert seen["patched"] == [["k", "v"]] and not seen["replaced"]
    assert seen["enabled"] is True and "$TargetDedicatedNodes=0" in seen["results"]
    assert seen["counts"] == ["s"] and seen["exists"] is True
    assert seen["disabled"].lower().endswith("disabled") and seen["meta"] == [["a", "b"]]
    assert seen["jobs"] == 0 and seen["schedules"] == ["js"] and seen["apps"] == 0


def test_pool_certificate_references_are_patched_kept_and_guard_the_certificate(api):
    sized_pool(api)
    cert, _ = make_cert()
    body = {
        "thumbprint": sha1(cert),
        "thumbprintAlgorithm": "sha1",
        "data": base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode(),
        "certificateFormat": "cer",
    }
    assert api.call("POST", "/certificates", body=body).status == 201
    refs = [{"thumbprint": sha1(cert), "thumbprintAlgorithm": "sha1"}]
    missing = [{"thumbprint": "00" * 20, "thumbprintAlgorithm": "sha1"}]
    refused(api.call("PATCH", "/pools/s", body={"certificateReferences": missing}), 404)
    assert api.call("PATCH", "/pools/s", body={"certificateReferences": refs}).status == 200
    in_use = api.call("DELETE", cert_path(sha1(cert)))
    refused(in_use, 409, "CertificateInUse")
    assert api.call("GET", cert_path(sha1(cert))).json()["state"] == "deletefailed"
    assert api.call("POST", cert_path(sha1(cert)) + "/canceldelete").status == 204
    assert api.call("GET", cert_path(sha1(cert))).json()["state"] == "active"
    again = api.call("POST", cert_path(sha1(cert)) + "/canceldelete")
    refused(again, 409, "CertificateNotDeleteFailed")
    rest = {"applicationPackageReferences": [], "metadata": []}
    assert api.call("POST", "/pools/s/updateproperties", body=rest).status == 204
    kept = api.call("GET", "/pools/s").json()["certificateReferences"]
    assert [r["thumbprint"] for r in kept] == [sha1(cert)]  # absent: kept (API 2025-06-01)
    gone = rest | {"certificateReferences": []}
    assert api.call("POST", "/pools/s/updateproperties", body=gone).status == 204
    assert "certificateReferences" not in api.call("GET", "/pools/s").json()
    assert api.call("DELETE", cert_path(sha1(cert))).status == 202
