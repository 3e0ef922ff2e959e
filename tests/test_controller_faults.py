"""Faults inside the controller: refused spawns, broken downloads, its own disk full."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import Fleet, make_pool, wait_for, wait_for_idle_nodes

pytestmark = pytest.mark.lab


def _task(fleet: Fleet, job: str, task: str) -> dict:
    return fleet.json("task", "show", "--job", job, "--id", task)


def test_a_spawn_the_node_refuses_completes_the_task_instead_of_looping(
    fleet, lab_inventory, controller
):
    # A stored spec the agent refuses (as one stored by an older fleet could be): the
    # parser refuses NUL today, so it is written into the database directly.
    make_pool(fleet, lab_inventory, "p", 2)
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet("task", "create", "--job", "j", "--id", "bad", "--command-line", "echo x")
    fleet("task", "create", "--job", "j", "--id", "good", "--command-line", "echo fine")
    with sqlite3.connect(fleet.home / "fleet.db") as db:
        db.execute("UPDATE tasks SET command_line = ? WHERE id = 'bad'", ("echo a\x00b",))
    ctl = controller()
    assert fleet("job", "wait", "j", "--timeout", "60", check=False).code == 1
    bad = _task(fleet, "j", "bad")
    assert bad["state"] == "completed"
    assert bad["executionInfo"]["failureInfo"]["code"] == "TaskRejectedByNode"
    assert bad["executionInfo"]["retryCount"] == 0
    assert bad["executionInfo"]["requeueCount"] == 0
    assert _task(fleet, "j", "good")["executionInfo"]["exitCode"] == 0
    time.sleep(1)
    assert ctl.log_text().count("j/bad") < 10  # completed once, not retried in a loop


@pytest.fixture
def not_http():
    """A TCP server on 127.0.0.1 that answers every connection with a line that is not HTTP."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = server.accept()
                with conn:
                    conn.sendall(b"SSH-2.0-not-a-web-server\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/tool.sh"
    stop.set()
    thread.join()
    server.close()


def test_a_resource_url_that_does_not_speak_http_fails_the_task_and_frees_the_node(
    fleet, lab_inventory, controller, not_http
):
    make_pool(fleet, lab_inventory, "p", 1)
    ctl = controller()
    fleet("job", "create", "--id", "j", "--pool", "p")
    task = {
        "id": "t",
        "commandLine": "true",
        "resourceFiles": [{"httpUrl": not_http, "filePath": "tool.sh"}],
    }
    fleet.add_tasks("j", task)
    assert fleet("job", "wait", "j", "--timeout", "60", check=False).code == 1
    failure = _task(fleet, "j", "t")["executionInfo"]["failureInfo"]
    assert failure["code"] == "ResourceFileDownloadError"
    assert "BadStatusLine" in failure["message"] or "download failed" in failure["message"]
    wait_for_idle_nodes(fleet, "p")
    fleet.add_tasks("j", {"id": "after", "commandLine": "true"})
    wait_for(lambda: _task(fleet, "j", "after")["state"] == "completed", 60, message="next task")
    assert "never retrieved" not in ctl.log_text()


@pytest.fixture
def small_home(tmp_path: Path):
    """A FLEET_HOME on its own 48 MiB tmpfs, so that the controller's disk can fill up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    home = tmp_path / "small-home"
    home.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(home)])
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield home
    subprocess.run(["umount", "-l", str(home)], check=False)


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until the disk is full."""
    with path.open("wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        with contextlib.suppress(OSError):
            os.fsync(f.fileno())


def test_a_full_controller_disk_delays_collection_until_space_returns(
    small_home, lab_inventory, tmp_path
):
    from tests.conftest import ControllerProcess

    fleet = Fleet(small_home)
    make_pool(fleet, lab_inventory, "p", 1, "--task-slots-per-node", "3")
    fleet("job", "create", "--id", "j", "--pool", "p")
    size = 3_000_000
    tasks = [
        {"id": f"t{i}", "commandLine": f"/bin/sh -c 'sleep 4; head -c {size} /dev/zero'"}
        for i in range(3)
    ]
    fleet.add_tasks("j", tasks)
    ctl = ControllerProcess(fleet, tmp_path / "controller.log").start()
    try:
        wait_for(
            lambda: all(t["state"] == "running" for t in fleet.json("task", "list", "--job", "j")),
            60,
            message="tasks running",
        )
        filler = small_home / "filler"
        _fill(filler)
        wait_for(
            lambda: "ControllerDiskFull" in ctl.log_text(),
            60,
            message=f"disk full seen in\n{ctl.log_text()[-3000:]}",
        )
        # Reads still work; writes fail clearly, as the controller's problem.
        assert len(fleet.json("task", "list", "--job", "j")) == 3
        refused = fleet("job", "create", "--id", "j2", "--pool", "p", "-o", "json", check=False)
        assert refused.code == 1
        assert '"ControllerDiskFull"' in refused.stderr
        assert "another version" not in refused.stderr
        node = fleet.json("node", "list", "--pool", "p")[0]
        assert node["state"] != "unknown" and not node["errors"]
        filler.unlink()
        assert fleet("job", "wait", "j", "--timeout", "90", check=False).code == 0
        for i in range(3):
            out = fleet("task", "file", "download", "stdout.txt", "--job", "j", "--id", f"t{i}")
            assert len(out.stdout) == size
    finally:
        ctl.stop()
