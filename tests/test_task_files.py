"""Task files on the real lab: listing, byte ranges, escapes refused, collected fallback."""

from __future__ import annotations

import json

import pytest

from fleet import lab as lab_mod
from tests.conftest import make_pool

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
