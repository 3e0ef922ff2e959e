"""Resource and output files on the real lab, byte for byte, with each upload condition."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import threading
from pathlib import Path

import pytest

from tests.conftest import make_pool

pytestmark = pytest.mark.lab


@pytest.fixture
def web(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def job(fleet, lab_inventory, controller):
    make_pool(fleet, lab_inventory, "p", 1)
    controller()
    fleet("job", "create", "--id", "j", "--pool", "p")
    return fleet


def _add(fleet, task: dict) -> None:
    fleet.add_tasks("j", task)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_resource_and_output_files_round_trip_byte_for_byte(job, web, tmp_path):
    blob = os.urandom(300_000)
    (tmp_path / "blob.bin").write_bytes(blob)
    (tmp_path / "b.txt").write_text("bee\n")
    job("file", "upload", str(tmp_path / "blob.bin"), "inputs/blob.bin")
    job("file", "upload", str(tmp_path / "b.txt"), "inputs/sub/b.txt")
    www, base = web
    (www / "tool.sh").write_text("#!/bin/sh\necho tool ran\n")
    _add(
        job,
        {
            "id": "t",
            "commandLine": "/bin/sh -c 'web/tool.sh && cat in/sub/b.txt && mkdir -p out/deep && "
            "cp in/blob.bin out/deep/copy.bin && echo never > fail.log'",
            "resourceFiles": [
                {"autoStorageContainerName": "inputs", "filePath": "in"},
                {"httpUrl": f"{base}/tool.sh", "filePath": "web/tool.sh", "fileMode": "0755"},
            ],
            "outputFiles": [
                {
                    "filePattern": "out/**",
                    "destination": {"container": {"path": "results/t"}},
                    "uploadOptions": {"uploadCondition": "tasksuccess"},
                },
                {
                    "filePattern": "../stdout.txt",
                    "destination": {"container": {"path": "logs/t.txt"}},
                    "uploadOptions": {"uploadCondition": "taskcompletion"},
                },
                {
                    "filePattern": "*.log",
                    "destination": {"container": {"path": "failures/t"}},
                    "uploadOptions": {"uploadCondition": "taskfailure"},
                },
            ],
        },
    )
    assert job("job", "wait", "j", "--timeout", "60").code == 0
    assert (
        job("task", "file", "download", "stdout.txt", "--job", "j", "--id", "t").stdout
        == "tool ran\nbee\n"
    )
    copy = tmp_path / "copy.bin"
    job("file", "download", "results/t/out/deep/copy.bin", "--destination", str(copy))
    assert _sha(copy.read_bytes()) == _sha(blob)
    assert job("file", "download", "logs/t.txt").stdout == "tool ran\nbee\n"
    names = {f["name"] for f in job.json("file", "list")}
    assert not any(n.startswith("failures/") for n in names)  # the task succeeded


def test_output_files_for_a_failed_task_follow_their_condition(job):
    _add(
        job,
        {
            "id": "t",
            "commandLine": "/bin/sh -c 'echo broken > why.log; exit 5'",
            "outputFiles": [
                {
                    "filePattern": "*.log",
                    "destination": {"container": {"path": "failures/t"}},
                    "uploadOptions": {"uploadCondition": "taskfailure"},
                },
                {
                    "filePattern": "*.log",
                    "destination": {"container": {"path": "ok/t"}},
                    "uploadOptions": {"uploadCondition": "tasksuccess"},
                },
            ],
        },
    )
    assert job("job", "wait", "j", "--timeout", "60", check=False).code == 1
    assert job("file", "download", "failures/t/why.log").stdout == "broken\n"
    assert job("file", "download", "ok/t/why.log", check=False).code == 3
    assert job.json("task", "show", "--job", "j", "--id", "t")["executionInfo"]["exitCode"] == 5


MANY_OUTPUTS = (
    "/bin/sh -c 'mkdir -p out/sub && for i in $(seq 300); do head -c $i /dev/urandom > out/f$i; "
    "done && head -c 3000000 /dev/urandom > out/sub/big && ln -s /etc/passwd out/link && "
    "mkfifo out/pipe'"
)


def test_many_output_files_are_saved_byte_for_byte_and_links_skipped(job):
    _add(
        job,
        {
            "id": "t",
            "commandLine": MANY_OUTPUTS,
            "outputFiles": [{"filePattern": "out/**", "destination": {"container": {"path": "m"}}}],
        },
    )
    assert job("job", "wait", "j", "--timeout", "60").code == 0
    shown = job.json("task", "show", "--job", "j", "--id", "t")
    assert shown["executionInfo"]["result"] == "success"
    wd = Path(shown["nodeInfo"]["taskRootDirectory"]) / "wd"
    regular = [p for p in (wd / "out").rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(regular) == 301
    expected = {f"m/{p.relative_to(wd)}": _sha(p.read_bytes()) for p in regular}
    stored = {f["name"]: f["properties"]["sha256"] for f in job.json("file", "list", "m")}
    assert stored == expected


def test_a_missing_resource_file_fails_the_task_without_retry(job):
    _add(
        job,
        {
            "id": "t",
            "commandLine": "true",
            "constraints": {"maxTaskRetryCount": 3},
            "resourceFiles": [{"autoStorageContainerName": "nothing-here"}],
        },
    )
    assert job("job", "wait", "j", "--timeout", "60", check=False).code == 1
    info = job.json("task", "show", "--job", "j", "--id", "t")["executionInfo"]
    assert info["failureInfo"]["code"] == "ResourceFileDownloadError"
    assert info["failureInfo"]["category"] == "usererror"
    assert info["retryCount"] == 0 and "exitCode" not in info


def test_an_output_upload_failure_is_file_upload_error(job, tmp_path):
    (tmp_path / "x").write_text("x")
    job("file", "upload", str(tmp_path / "x"), "taken/file")
    _add(
        job,
        {
            "id": "t",
            "commandLine": "/bin/sh -c 'echo data > r.txt'",
            "constraints": {"maxTaskRetryCount": 2},
            "outputFiles": [
                {"filePattern": "r.txt", "destination": {"container": {"path": "taken/file/r.txt"}}}
            ],
        },
    )
    assert job("job", "wait", "j", "--timeout", "60", check=False).code == 1
    info = job.json("task", "show", "--job", "j", "--id", "t")["executionInfo"]
    assert info["failureInfo"]["code"] == "FileUploadError"
    assert info["exitCode"] == 0 and info["retryCount"] == 0


def test_azure_storage_urls_are_refused_by_name(job):
    result = job.add_tasks(
        "j",
        {
            "id": "t",
            "commandLine": "true",
            "resourceFiles": [{"storageContainerUrl": "https://acct.blob.core.windows.net/c?sas"}],
        },
        check=False,
    )
    assert result.code == 2
    err = json.loads(result.stderr)["error"]
    assert err["code"] == "UnsupportedProperty" and "storageContainerUrl" in err["field"]
