"""Task files on the real lab: listing, byte ranges, escapes and link races refused,
streaming in bounded memory, collected fallback."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fleet import lab as lab_mod
from fleet import reads, task_files
from fleet.errors import BadInput
from fleet.settings import Settings
from tests.conftest import make_pool, wait_for

pytestmark = pytest.mark.lab

WRITER = (
    "/bin/sh -c 'mkdir -p out && printf 0123456789 > out/data.txt && "
    "ln -s /etc/passwd escape && echo hello'"
)


@pytest.fixture
def done(fleet, lab_inventory, controller):
    make_pool(fleet, lab_inventory, "p", 1)
    controller()
    fleet("job", "create", "--id", "j", "--pool", "p")
    fleet("task", "create", "--job", "j", "--id", "t", "--command-line", WRITER)
    fleet("job", "wait", "j", "--timeout", "60")
    return fleet


def _download(fleet, name, *extra, check=True):
    return fleet("task", "file", "download", name, "--job", "j", "--id", "t", *extra, check=check)


def test_file_list_shows_the_task_directory(done):
    top = {f["name"]: f for f in done.json("task", "file", "list", "--job", "j", "--id", "t")}
    assert {"stdout.txt", "stderr.txt", "exit.json", "wd"} <= set(top)
    assert top["wd"]["isDirectory"] is True
    assert top["stdout.txt"]["properties"]["contentLength"] == len("hello\n")
    deep = done(
        "task", "file", "list", "--job", "j", "--id", "t", "--recursive", "-o", "json"
    ).json()
    names = {f["name"] for f in deep}
    assert "wd/out/data.txt" in names and "wd/out" in names


def test_byte_ranges_are_inclusive(done):
    assert _download(done, "wd/out/data.txt").stdout == "0123456789"
    assert _download(done, "wd/out/data.txt", "--start", "2", "--end", "5").stdout == "2345"
    assert _download(done, "wd/out/data.txt", "--start", "7").stdout == "789"
    assert _download(done, "wd/out/data.txt", "--start", "5", "--end", "2", check=False).code == 2


def test_paths_that_escape_the_task_directory_are_refused(done):
    for name in ("../../../../etc/passwd", "/etc/passwd", "wd/../../t2"):
        result = _download(done, name, "-o", "json", check=False)
        assert result.code == 2, name
    link = _download(done, "wd/escape", "-o", "json", check=False)
    assert link.code == 2
    assert json.loads(link.stderr)["error"]["code"] == "PathEscapesTaskDir"


def test_collected_output_is_served_when_the_node_is_gone(done, lab):
    node = done.json("task", "show", "--job", "j", "--id", "t")["nodeInfo"]["nodeId"]
    lab_mod.stop_node(lab, node)
    try:
        assert _download(done, "stdout.txt").stdout == "hello\n"
        assert _download(done, "stdout.txt", "--start", "1", "--end", "3").stdout == "ell"
        assert _download(done, "wd/out/data.txt", check=False).code == 3
        listed = {f["name"] for f in done.json("task", "file", "list", "--job", "j", "--id", "t")}
        assert listed == {"stdout.txt", "stderr.txt", "exit.json"}
    finally:
        lab_mod.start_node(lab, node)


RETRIED_BIG = (
    '/bin/sh -c \'if [ -e seen ]; then head -c 100000 /dev/zero | tr "\\000" x; '
    "else touch seen; echo first; exit 1; fi'"
)


def test_collected_output_of_the_last_attempt_small_or_large(fleet, lab_inventory, controller, lab):
    """Attempt 1's small stdout came inline (kept in the database); attempt 2's is over
    the inline limit (fetched to a file): with the node gone, attempt 2's is served."""
    make_pool(fleet, lab_inventory, "p", 1)
    controller()
    fleet("job", "create", "--id", "j", "--pool", "p")
    spec = {"id": "t", "commandLine": RETRIED_BIG, "constraints": {"maxTaskRetryCount": 1}}
    fleet.add_tasks("j", [spec])
    fleet("job", "wait", "j", "--timeout", "60")
    shown = fleet.json("task", "show", "--job", "j", "--id", "t")
    assert shown["executionInfo"]["retryCount"] == 1
    lab_mod.stop_node(lab, shown["nodeInfo"]["nodeId"])
    try:
        assert _download(fleet, "stdout.txt").stdout == "x" * 100000
        listed = {
            f["name"]: f for f in fleet.json("task", "file", "list", "--job", "j", "--id", "t")
        }
        assert listed["stdout.txt"]["properties"]["contentLength"] == 100000
        assert listed["stderr.txt"]["properties"]["contentLength"] == 0
    finally:
        lab_mod.start_node(lab, shown["nodeInfo"]["nodeId"])


# A task that swaps wd/dir (a real directory holding a harmless passwd) with wd/link (a
# symlink to /etc) as fast as it can, with renameat2(RENAME_EXCHANGE), until told to stop.
SWAPPER = """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
os.mkdir("dir")
with open("dir/passwd", "w") as f:
    f.write("harmless\\n")
os.symlink("/etc", "link")
open("ready", "w").close()
deadline = time.monotonic() + 120
while not os.path.exists("stop") and time.monotonic() < deadline:
    for _ in range(1000):
        if libc.renameat2(-100, b"dir", -100, b"link", 2) != 0:
            raise OSError(ctypes.get_errno(), "renameat2")
"""


def test_a_task_swapping_a_directory_for_a_link_never_gets_a_file_outside(done, tmp_path):
    (tmp_path / "swapper.py").write_text(SWAPPER)
    done("file", "upload", str(tmp_path / "swapper.py"), "scripts/swapper.py")
    done.add_tasks(
        "j",
        {
            "id": "swapper",
            "commandLine": "python3 swapper.py",
            "resourceFiles": [{"autoStorageContainerName": "scripts"}],
        },
    )
    task = wait_for(
        lambda: (
            (t := done.json("task", "show", "--job", "j", "--id", "swapper"))["state"] == "running"
            and t
        ),
        message="the swapper to run",
    )
    wd = Path(task["nodeInfo"]["taskRootDirectory"]) / "wd"
    wait_for((wd / "ready").exists, message="the swapper to start swapping")
    settings = Settings.resolve(done.home)
    db = reads.Reader(settings.db_url)
    outcomes = {"harmless": 0, "refused": 0}
    secret = Path("/etc/passwd").read_bytes()
    try:
        for _ in range(40):
            sink = io.BytesIO()
            try:
                task_files.download(settings, db, "j", "swapper", "wd/dir/passwd", sink)
            except BadInput as exc:
                assert exc.code == "PathEscapesTaskDir", exc
                outcomes["refused"] += 1
                continue
            assert sink.getvalue() != secret
            assert sink.getvalue() == b"harmless\n"
            outcomes["harmless"] += 1
    finally:
        (wd / "stop").touch()
    assert outcomes["harmless"] + outcomes["refused"] == 40
    # Through the CLI a link is refused with exit 2, and the task's real file still reads.
    link = _download_from(done, "swapper", "wd/link/passwd", "-o", "json", check=False)
    assert link.code == 2 and json.loads(link.stderr)["error"]["code"] == "PathEscapesTaskDir"
    done("job", "wait", "j", "--timeout", "60")
    assert _download_from(done, "swapper", "wd/dir/passwd").stdout == "harmless\n"


MANY = (
    "/bin/sh -c 'mkdir d && head -c 3000000 /dev/urandom > d/big && : > d/empty && "
    "mkfifo d/fifo && ln -s /etc/passwd d/link && echo x > d/x'"
)


class _Sink(io.BytesIO):
    def close(self) -> None:
        self.ended = True


def test_many_files_stream_in_one_command_with_refusals_per_file(done):
    done.add_tasks("j", {"id": "many", "commandLine": MANY})
    done("job", "wait", "j", "--timeout", "60")
    shown = done.json("task", "show", "--job", "j", "--id", "many")
    root_dir = Path(shown["nodeInfo"]["taskRootDirectory"])
    db = reads.Reader(Settings.resolve(done.home).db_url)
    task = reads.show_task(db, "j", "many")
    root, task_dir = task_files._on_node(task)
    rels = ["wd/d/big", "wd/d/empty", "wd/d/fifo", "wd/d/link", "wd/d/gone", "wd/d/x", "wd/d/big"]
    sinks: dict[int, _Sink] = {}

    def sink_for(i: int) -> _Sink:
        sinks[i] = _Sink()
        return sinks[i]

    async def read() -> dict:
        conn = await task_files._connect(db, task.node_id)
        try:
            return await task_files.read_many_from_node(conn, root, task_dir, rels, sink_for)
        finally:
            await conn.close()

    refused = asyncio.run(read())
    codes = {i: exc.code for i, exc in refused.items()}
    assert codes == {2: "NotARegularFile", 3: "PathEscapesTaskDir", 4: "FileNotFound"}
    big = (root_dir / "wd/d/big").read_bytes()
    assert sinks[0].getvalue() == big and sinks[6].getvalue() == big
    assert sinks[1].getvalue() == b"" and sinks[5].getvalue() == b"x\n"
    assert sorted(sinks) == [0, 1, 5, 6] and all(s.ended for s in sinks.values())


def _download_from(fleet, task, name, *extra, check=True):
    return fleet("task", "file", "download", name, "--job", "j", "--id", task, *extra, check=check)


# Runs the fleet CLI and writes its peak resident set (KiB) to the file named first.
PEAK_RSS = """
import resource, runpy, sys
out = sys.argv.pop(1)
sys.argv[0] = "fleet"
try:
    runpy.run_module("fleet", run_name="__main__", alter_sys=True)
finally:
    with open(out, "w") as f:
        f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def test_a_large_download_streams_in_bounded_memory(done, tmp_path):
    big = 64 << 20
    make_big = f"/bin/sh -c 'head -c {big} /dev/urandom > big.bin'"
    done.add_tasks("j", {"id": "big", "commandLine": make_big})
    done("job", "wait", "j", "--timeout", "60")
    shown = done.json("task", "show", "--job", "j", "--id", "big")
    node_file = Path(shown["nodeInfo"]["taskRootDirectory"])
    expected = hashlib.sha256((node_file / "wd/big.bin").read_bytes()).hexdigest()

    def peak_kib(name, destination):
        out = tmp_path / "peak"
        args = ["task", "file", "download", name, "--job", "j", "--id", "big"]
        subprocess.run(
            [sys.executable, "-c", PEAK_RSS, str(out), *args, "--destination", str(destination)],
            env=done.env,
            check=True,
            timeout=300,
        )
        return int(out.read_text())

    small = peak_kib("stdout.txt", tmp_path / "small.txt")
    large = peak_kib("wd/big.bin", tmp_path / "big.bin")
    assert hashlib.sha256((tmp_path / "big.bin").read_bytes()).hexdigest() == expected
    assert large - small < 24 << 10, f"peak RSS grew by {(large - small) >> 10} MiB"
