"""Application packages end to end: the CLI, add-time checks, and packages on real lab nodes."""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import pytest

from tests.conftest import Fleet, make_pool, wait_for, wait_for_idle_nodes
from tests.test_archives import build_tar, build_zip


def _zip(tmp_path: Path, name: str = "app.zip") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("bin/hello.sh")
        info.external_attr = (0o100755) << 16
        zf.writestr(info, "#!/bin/sh\necho hello from the package\n")
    return path


def _stored_archives(fleet: Fleet) -> list[str]:
    base = fleet.home / "files" / ".fleet-applications"
    return (
        sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())
        if base.exists()
        else []
    )


def _fake_inventory(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.ini"
    path.write_text(
        "[x]\nh1 ansible_host=127.0.0.1 ansible_port=1 ansible_user=nobody\n"
        "h2 ansible_host=127.0.0.1 ansible_port=2 ansible_user=nobody\n"
    )
    return path


def _node_roots(inventory: Path) -> dict[str, Path]:
    text = inventory.read_text()
    return {
        line.split()[0]: Path(re.search(r"fleet_node_root=(\S+)", line).group(1))  # type: ignore[union-attr]
        for line in text.splitlines()
        if "fleet_node_root=" in line
    }


@pytest.mark.parametrize(
    ("entries", "member", "rule"),
    [
        ([("ok.txt", "file", "x"), ("../../evil.sh", "file", "x")], "../../evil.sh", "parent-dir"),
        ([("lib/escape", "symlink", "../../../etc/passwd")], "lib/escape", "link-escape"),
    ],
    ids=["zip-slip", "symlink-escape"],
)
@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_unsafe_archive_is_refused_at_upload_and_nothing_is_stored(
    fleet, tmp_path, entries, member, rule, fmt
):
    build = build_zip if fmt == "zip" else build_tar
    archive = build(tmp_path / f"bad.{fmt}", entries)
    result = fleet("application", "package", "create", "app", "1.0", str(archive), check=False)
    assert result.code == 2
    assert "UnsafeArchiveMember" in result.stderr and member in result.stderr
    err = fleet(
        "application", "package", "create", "app", "1.0", str(archive), "-o", "json", check=False
    )
    assert json.loads(err.stderr)["error"]["details"] == {"member": member, "rule": rule}
    assert fleet.json("application", "list") == []
    assert _stored_archives(fleet) == []


def test_packages_are_created_listed_shown_defaulted_and_deleted(fleet, tmp_path):
    archive = _zip(tmp_path)
    created = fleet.json("application", "package", "create", "app", "1.0", str(archive))
    assert created["version"] == "1.0" and created["state"] == "active"
    assert created["format"] == "zip" and created["size"] == archive.stat().st_size
    import hashlib

    assert created["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    tgz = build_tar(tmp_path / "t.tar.gz", [("a.txt", "file", "a")])
    fleet("application", "package", "create", "app", "2.0", str(tgz))
    again = fleet("application", "package", "create", "app", "2.0", str(tgz), check=False)
    assert again.code == 4 and "ApplicationPackageExists" in again.stderr
    shown = fleet.json("application", "show", "app")
    assert shown["id"] == "app" and shown["versions"] == ["1.0", "2.0"]
    assert shown["defaultVersion"] is None
    assert [p["format"] for p in shown["packages"]] == ["zip", "tar.gz"]
    assert set(shown["packages"][0]) >= {"version", "state", "lastActivationTime", "format"}
    missing = fleet("application", "set", "app", "--default-version", "9", check=False)
    assert missing.code == 2 and "ApplicationPackageNotFound" in missing.stderr
    fleet("application", "set", "app", "--default-version", "2.0")
    assert fleet.json("application", "list")[0]["defaultVersion"] == "2.0"
    fleet("application", "package", "delete", "app", "2.0")
    shown = fleet.json("application", "show", "app")
    assert shown["versions"] == ["1.0"] and shown["defaultVersion"] is None
    assert len(_stored_archives(fleet)) == 1
    assert fleet("application", "package", "delete", "app", "2.0", check=False).code == 3
    assert fleet.json("file", "list") == []  # package archives stay out of the user's files


def test_reference_to_a_missing_application_or_version_is_refused_when_added(fleet, tmp_path):
    fleet("host", "import", str(_fake_inventory(tmp_path)))
    fleet("application", "package", "create", "app", "1.0", str(_zip(tmp_path)))
    for refs, why in (
        ([{"applicationId": "app", "version": "2.0"}], "no version '2.0'"),
        ([{"applicationId": "app"}], "no default version"),
        ([{"applicationId": "nope", "version": "1"}], "no application 'nope'"),
    ):
        pool = {"id": "p", "hosts": ["h1"], "applicationPackageReferences": refs}
        result = fleet(
            "pool", "create", "--json-file", "-", "-o", "json", input=json.dumps(pool), check=False
        )
        assert result.code == 2, result.stderr
        error = json.loads(result.stderr)["error"]
        assert error["code"] == "ApplicationPackageNotFound" and why in error["message"]
        assert error["field"] == "applicationPackageReferences[0]"
    assert fleet.json("pool", "list") == []
    fleet("pool", "create", "--id", "p", "--hosts", "h1")
    fleet("job", "create", "--id", "j", "--pool", "p")
    task = {
        "id": "t",
        "commandLine": "true",
        "applicationPackageReferences": [{"applicationId": "app", "version": "1.1"}],
    }
    result = fleet.add_tasks("j", task, check=False)
    assert result.code == 2 and "ApplicationPackageNotFound" in result.stderr
    multi = {**task, "multiInstanceSettings": {"numberOfInstances": 1}}
    multi["applicationPackageReferences"] = [{"applicationId": "app", "version": "1.0"}]
    result = fleet.add_tasks("j", multi, check=False)
    assert result.code == 2 and "UnsupportedProperty" in result.stderr
    assert fleet.json("task", "list", "--job", "j") == []


@pytest.mark.lab
def test_pool_and_task_packages_reach_tasks_and_are_sent_once_per_host(
    fleet, lab_inventory, controller, tmp_path
):
    fleet("host", "import", str(lab_inventory))
    host = fleet.json("host", "list")[0]["id"]
    root = _node_roots(lab_inventory)[host]
    fleet("application", "package", "create", "my-App", "1.0", str(_zip(tmp_path)))
    fleet("application", "set", "my-App", "--default-version", "1.0")
    tool = build_tar(tmp_path / "tool.tar.gz", [("data.txt", "file", "tool data\n")])
    fleet("application", "package", "create", "tool", "2.0-beta", str(tool))
    start = "/bin/sh -c 'env | grep APP_PACKAGE | sort > \"$FLEET_NODE_SHARED_DIR/start.env\"'"
    pool = {
        "id": "p1",
        "hosts": [host],
        "startTask": {"commandLine": start, "waitForSuccess": True},
        "applicationPackageReferences": [{"applicationId": "my-App"}],
    }
    fleet("pool", "create", "--json-file", "-", input=json.dumps(pool))
    ctl = controller()
    wait_for_idle_nodes(fleet, "p1")
    prep = "/bin/sh -c 'env | grep APP_PACKAGE > \"$FLEET_NODE_SHARED_DIR/prep.env\"'"
    job = {"id": "j", "poolInfo": {"poolId": "p1"}, "jobPreparationTask": {"commandLine": prep}}
    fleet("job", "create", "--json-file", "-", input=json.dumps(job))
    script = (
        'env | grep APP_PACKAGE | sort; "$FLEET_APP_PACKAGE_my_App_1_0/bin/hello.sh"; '
        'cat "$AZ_BATCH_APP_PACKAGE_tool_2_0_beta/data.txt"'
    )
    fleet.add_tasks(
        "j",
        {
            "id": "t",
            "commandLine": f"/bin/sh -c '{script}'",
            "applicationPackageReferences": [{"applicationId": "tool", "version": "2.0-beta"}],
        },
    )
    assert fleet("job", "wait", "j", "--timeout", "60").code == 0
    out = fleet("task", "file", "download", "stdout.txt", "--job", "j", "--id", "t").stdout
    app_dir = f"{root}/applications/my-App#1.0"
    tool_dir = f"{root}/applications/tool#2.0-beta"
    for line in (
        f"FLEET_APP_PACKAGE_my_App_1_0={app_dir}",
        f"AZ_BATCH_APP_PACKAGE_my_App_1_0={app_dir}",
        f"FLEET_APP_PACKAGE_my_App={app_dir}",  # the default version, also without it
        f"AZ_BATCH_APP_PACKAGE_my_App={app_dir}",
        f"FLEET_APP_PACKAGE_tool_2_0_beta={tool_dir}",
        f"AZ_BATCH_APP_PACKAGE_tool_2_0_beta={tool_dir}",
        "hello from the package",
        "tool data",
    ):
        assert line in out.splitlines(), (line, out)
    assert "APP_PACKAGE_tool=" not in out  # no default version for tool
    start_env = (root / "shared" / "start.env").read_text().splitlines()
    assert f"FLEET_APP_PACKAGE_my_App_1_0={app_dir}" in start_env
    assert f"AZ_BATCH_APP_PACKAGE_my_App={app_dir}" in start_env
    assert not any("tool" in line for line in start_env)  # task packages stay on their task
    prep_env = (root / "shared" / "prep.env").read_text().splitlines()
    assert f"FLEET_APP_PACKAGE_my_App={app_dir}" in prep_env

    before = os.stat(app_dir)
    marker = root / "applications" / ".fleet" / "my-App#1.0.json"
    marker_before = marker.stat()
    fleet("job", "terminate", "j")
    wait_for(lambda: fleet.json("job", "show", "j")["state"] == "completed", 30)
    fleet("pool", "delete", "p1")
    pool2 = {**pool, "id": "p2", "startTask": {"commandLine": "true"}}
    fleet("pool", "create", "--json-file", "-", input=json.dumps(pool2))
    wait_for_idle_nodes(fleet, "p2")
    after = os.stat(app_dir)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert marker.stat().st_mtime_ns == marker_before.st_mtime_ns
    log = ctl.log_text()
    assert log.count("application package my-App#1.0 sent") == 1, log
    assert "application package my-App#1.0 reused" in log


@pytest.mark.lab
def test_package_failing_on_the_node_completes_task_with_application_package_error(
    fleet, lab_inventory, controller, tmp_path
):
    make_pool(fleet, lab_inventory, "p", 1)
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet("application", "package", "create", "bad", "1", str(_zip(tmp_path)))
    fleet("application", "package", "create", "gone", "1", str(_zip(tmp_path, "g.zip")))
    for tid, app in (("corrupt", "bad"), ("deleted", "gone")):
        fleet.add_tasks(
            "j",
            {
                "id": tid,
                "commandLine": "true",
                "constraints": {"maxTaskRetryCount": 3},
                "applicationPackageReferences": [{"applicationId": app, "version": "1"}],
            },
        )
    # After the references were accepted: one archive is corrupted, the other deleted.
    stored = fleet.home / "files" / ".fleet-applications" / "bad" / "1"
    (archive,) = stored.iterdir()
    archive.write_bytes(archive.read_bytes()[:-10] + b"0123456789")
    fleet("application", "package", "delete", "gone", "1")
    controller()
    assert fleet("job", "wait", "j", "--timeout", "60", check=False).code == 1
    for tid, why in (("corrupt", "ApplicationPackageCorrupt"), ("deleted", "has no version")):
        info = fleet.json("task", "show", "--job", "j", "--id", tid)["executionInfo"]
        assert info["failureInfo"]["code"] == "ApplicationPackageError", info
        assert why in info["failureInfo"]["message"]
        assert info["retryCount"] == 0 and "exitCode" not in info


@pytest.mark.lab
def test_pool_package_that_fails_on_the_node_keeps_the_node_out_with_the_error(
    fleet, lab_inventory, controller, tmp_path
):
    fleet("host", "import", str(lab_inventory))
    host = fleet.json("host", "list")[0]["id"]
    fleet("application", "package", "create", "app", "1", str(_zip(tmp_path)))
    pool = {
        "id": "p",
        "hosts": [host],
        "applicationPackageReferences": [{"applicationId": "app", "version": "1"}],
    }
    fleet("pool", "create", "--json-file", "-", input=json.dumps(pool))
    (archive,) = (fleet.home / "files" / ".fleet-applications" / "app" / "1").iterdir()
    archive.write_bytes(b"PK\x03\x04 not what was checked")
    controller()

    def errors():
        node = fleet.json("node", "show", "--pool", "p", "--node", host)
        return node["state"] != "idle" and node.get("errors")

    (error,) = wait_for(errors, 30, message="the node's package error")
    assert error["code"] == "ApplicationPackageError"
    assert "ApplicationPackageCorrupt" in error["message"]


def test_pool_with_package_references_shows_what_create_accepts(fleet, tmp_path):
    fleet("host", "import", str(_fake_inventory(tmp_path)))
    fleet("application", "package", "create", "app", "1.0", str(_zip(tmp_path)))
    fleet("application", "set", "app", "--default-version", "1.0")
    refs = [{"applicationId": "app"}]
    pool = {"id": "p", "hosts": ["h1"], "applicationPackageReferences": refs}
    fleet("pool", "create", "--json-file", "-", input=json.dumps(pool))
    shown = fleet.json("pool", "show", "p")
    assert shown["applicationPackageReferences"] == refs
    again = {**shown, "id": "p2", "hosts": ["h2"]}
    fleet("pool", "create", "--json-file", "-", input=json.dumps(again))
    assert fleet.json("pool", "show", "p2")["applicationPackageReferences"] == refs
    fleet("job", "create", "--id", "j", "--pool", "p")
    task = {"id": "t", "commandLine": "true", "applicationPackageReferences": refs}
    fleet.add_tasks("j", task)
    shown_task = fleet.json("task", "show", "--job", "j", "--id", "t")
    assert shown_task["applicationPackageReferences"] == refs
    fleet.add_tasks("j", {**shown_task, "id": "t2"})
