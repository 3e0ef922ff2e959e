"""Node files: paths checked before anything is read, and on the real lab the node root
listed and files downloaded without ever following a link out of it."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fleet as fleet_pkg
from fleet import node_files
from fleet.errors import BadInput
from fleet.store import Store
from fleet.tables import Node
from tests.conftest import Fleet, Result, make_pool, wait_for_idle_nodes
from tests.test_cli_imports import _orm_modules
from tests.test_task_files import PEAK_RSS

# --------------------------------------------------------------- path checks (no lab)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, ""),
        ("", ""),
        (".", ""),
        ("./", ""),
        ("startup", "startup"),
        ("startup/wd/out.txt", "startup/wd/out.txt"),
        ("startup//wd/./out.txt/", "startup/wd/out.txt"),
        ("a..b/..c/d..", "a..b/..c/d.."),
    ],
)
def test_paths_under_the_root_are_normalized(given: str | None, expected: str) -> None:
    assert node_files.node_path(given) == expected


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("..", "'..'"),
        ("../x", "'..'"),
        ("startup/../../x", "'..'"),
        ("startup/../shared", "'..'"),  # stays inside, but no '..' is taken at all
        ("/etc/passwd", "absolute"),
        ("/", "absolute"),
        ("a\0b", "NUL"),
        ("a/" * 2049, "longer"),
    ],
)
def test_paths_that_could_leave_the_root_are_refused(given: str, reason: str) -> None:
    with pytest.raises(BadInput) as caught:
        node_files.node_path(given, target="node n1")
    assert caught.value.code == "InvalidPath"
    assert caught.value.field == "path"
    assert caught.value.target == "node n1"
    assert reason in caught.value.message


def test_node_files_reads_the_database_without_the_orm() -> None:
    source = Path(fleet_pkg.__file__).resolve().parent / "node_files.py"
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    banned = ("fleet.store", "fleet.tables", "fleet.service", "sqlmodel", "sqlalchemy")
    assert not {n for n in imported for b in banned if n == b or n.startswith(b + ".")}


@pytest.fixture
def offline_pool(fleet: Fleet, tmp_path: Path) -> Fleet:
    """A pool p of host h1 on a port where nothing listens (no lab needed)."""
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[all]\nh1 ansible_host=127.0.0.1 ansible_port=1\n")
    fleet("host", "import", str(inventory))
    fleet("pool", "create", "--id", "p", "--hosts", "h1")
    return fleet


def _error(result: Result) -> dict[str, str]:
    """Return the error object a command wrote to stderr with -o json."""
    return json.loads(result.stderr)["error"]


def test_a_bad_path_is_refused_before_the_pool_is_even_looked_up(fleet: Fleet) -> None:
    for args in (
        ("list", "../x"),
        ("list", "/etc"),
        ("download", "/etc/passwd"),
        ("download", "shared/../../x"),
        ("download", "."),
    ):
        result = fleet(
            "node", "file", *args, "--pool", "nope", "--node", "n", "-o", "json", check=False
        )
        assert result.code == 2, args
        assert _error(result)["code"] == "InvalidPath", args
    assert not (fleet.home / "fleet.db").exists()  # nothing was read, nothing made


def test_unknown_pools_and_nodes_are_not_found(offline_pool: Fleet) -> None:
    fleet = offline_pool
    for pool, node, code in (("nope", "h1", "PoolNotFound"), ("p", "h9", "NodeNotFound")):
        for args in (("list",), ("download", "startup/stdout.txt")):
            result = fleet(
                "node", "file", *args, "--pool", pool, "--node", node, "-o", "json", check=False
            )
            assert result.code == 3, (args, result.stderr)
            assert _error(result)["code"] == code


def test_a_node_that_never_reported_its_root_says_so(offline_pool: Fleet) -> None:
    result = offline_pool("node", "file", "list", "--pool", "p", "--node", "h1", check=False)
    assert result.code == 4
    assert "NodeRootUnknown" in result.stderr


def test_an_unreachable_node_is_a_remote_error_with_its_code(
    offline_pool: Fleet, tmp_path: Path
) -> None:
    store = Store(f"sqlite:///{offline_pool.home / 'fleet.db'}")
    try:
        with store.session() as s:
            node = s.get(Node, "h1")
            assert node is not None
            node.root = str(tmp_path / "root")
    finally:
        store.close()
    for args in (("list",), ("download", "startup/stdout.txt")):
        result = offline_pool(
            "node", "file", *args, "--pool", "p", "--node", "h1", "-o", "json", check=False
        )
        assert result.code == 1, result.stderr
        assert _error(result)["code"] == "NodeUnreachable"
    loaded, _ = _orm_modules(
        offline_pool, tmp_path, "node", "file", "list", "--pool", "p", "--node", "h1"
    )
    assert loaded == []  # a read command: the database is read without the ORM


# --------------------------------------------------------------- on the real lab

START_TASK = (
    "/bin/sh -c 'mkdir -p out && printf 0123456789 > out/data.txt && "
    'printf shared-note > "$FLEET_NODE_SHARED_DIR/note.txt" && '
    'ln -s /etc "$FLEET_NODE_ROOT_DIR/outside" && '
    'ln -s /etc/passwd "$FLEET_NODE_ROOT_DIR/passwd" && '
    'ln -s "$FLEET_NODE_SHARED_DIR" "$FLEET_NODE_ROOT_DIR/inside" && echo started\''
)


@pytest.fixture
def ready(fleet: Fleet, lab_inventory: Path, controller) -> tuple[Fleet, Path]:
    """A one-node pool on the lab whose start task wrote files and planted symlinks
    (two pointing outside the root, one inside); returns the CLI and the node root."""
    make_pool(fleet, lab_inventory, "p", 1, "--start-task", START_TASK)
    controller()
    wait_for_idle_nodes(fleet, "p")
    node = fleet.json("node", "show", "--pool", "p", "--node", "node01")
    return fleet, Path(node["nodeRootDirectory"])


def _node_file(fleet: Fleet, *args: str, check: bool = True) -> Result:
    return fleet("node", "file", *args, "--pool", "p", "--node", "node01", check=check)


on_lab = pytest.mark.lab


@on_lab
def test_the_root_is_listed_with_names_relative_to_it(ready) -> None:
    fleet, root = ready
    top = {f["name"]: f for f in _node_file(fleet, "list", "-o", "json").json()}
    assert {"startup", "shared", "workitems", "volatile", "applications", "certs"} <= set(top)
    assert top["startup"]["isDirectory"] is True
    assert top["startup"]["properties"]["contentLength"] == 0
    assert top["startup"]["properties"]["lastModified"].endswith("Z")
    assert top["outside"]["isDirectory"] is False  # a link is listed, as a link
    assert set(top) == set(os.listdir(root))
    table = _node_file(fleet, "list").stdout
    assert "startup" in table and "NAME" in table


@on_lab
def test_a_directory_is_listed_recursively_without_descending_into_links(ready) -> None:
    fleet, _ = ready
    deep = {f["name"]: f for f in _node_file(fleet, "list", "--recursive", "-o", "json").json()}
    assert deep["startup/wd/out/data.txt"]["properties"]["contentLength"] == 10
    assert deep["startup/stdout.txt"]["isDirectory"] is False
    assert deep["shared/note.txt"]["properties"]["fileMode"].startswith("0o")
    assert not any(n.startswith(("outside/", "inside/")) for n in deep)
    under = _node_file(fleet, "list", "startup", "--recursive", "-o", "json").json()
    assert {f["name"] for f in under} >= {"startup/wd", "startup/wd/out/data.txt"}
    assert all(f["name"].startswith("startup/") for f in under)
    flat = {f["name"] for f in _node_file(fleet, "list", "startup/wd/out", "-o", "json").json()}
    assert flat == {"startup/wd/out/data.txt"}


@on_lab
def test_files_written_by_the_start_task_are_downloaded(ready, tmp_path: Path) -> None:
    fleet, _ = ready
    assert _node_file(fleet, "download", "startup/wd/out/data.txt").stdout == "0123456789"
    assert _node_file(fleet, "download", "shared/note.txt").stdout == "shared-note"
    assert _node_file(fleet, "download", "startup/stdout.txt").stdout == "started\n"
    destination = tmp_path / "data.txt"
    result = _node_file(
        fleet,
        "download",
        "startup/wd/out/data.txt",
        "--destination",
        str(destination),
        "-o",
        "json",
    )
    assert result.json() == {
        "name": "startup/wd/out/data.txt",
        "destination": str(destination),
        "bytes": 10,
    }
    assert destination.read_text() == "0123456789"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    quiet = _node_file(fleet, "download", "shared/note.txt", "--destination", str(destination))
    assert quiet.stdout == "" and quiet.stderr == ""  # no terminal: no progress drawn
    assert destination.read_text() == "shared-note"


@on_lab
def test_paths_out_of_the_root_and_links_are_refused(ready, tmp_path: Path) -> None:
    fleet, _ = ready
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    destination = downloads / "got"
    for args in (
        ("download", "../x"),
        ("download", "/etc/passwd"),
        ("download", "passwd"),  # a link to /etc/passwd planted in the root
        ("download", "outside/passwd"),  # through a link to /etc
        ("download", "inside/note.txt"),  # a link inside the root is not followed either
        ("list", "outside"),
        ("list", "../"),
        ("list", "/etc"),
    ):
        extra = ("--destination", str(destination)) if args[0] == "download" else ()
        result = _node_file(fleet, *args, *extra, "-o", "json", check=False)
        assert result.code == 2, (args, result.stdout, result.stderr)
        assert _error(result)["code"] == "InvalidPath", args
        assert "root:" not in result.stdout  # nothing of /etc/passwd came out
    assert not destination.exists()
    assert list(downloads.iterdir()) == []  # no partial file left behind


@on_lab
def test_missing_files_and_directories_are_not_found_or_not_regular(ready) -> None:
    fleet, _ = ready
    missing = _node_file(fleet, "download", "shared/nope.txt", "-o", "json", check=False)
    assert missing.code == 3 and _error(missing)["code"] == "FileNotFound"
    gone = _node_file(fleet, "list", "nope", "-o", "json", check=False)
    assert gone.code == 3 and _error(gone)["code"] == "FileNotFound"
    directory = _node_file(fleet, "download", "startup", "-o", "json", check=False)
    assert directory.code == 2 and _error(directory)["code"] == "NotARegularFile"


@on_lab
def test_a_large_node_file_streams_in_bounded_memory(ready, tmp_path: Path) -> None:
    fleet, root = ready
    big = root / "shared" / "big.bin"
    with big.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    expected = hashlib.sha256(big.read_bytes()).hexdigest()

    def peak_kib(name: str, destination: Path) -> int:
        out = tmp_path / "peak"
        args = ["node", "file", "download", name, "--pool", "p", "--node", "node01"]
        subprocess.run(
            [sys.executable, "-c", PEAK_RSS, str(out), *args, "--destination", str(destination)],
            env=fleet.env,
            check=True,
            timeout=300,
        )
        return int(out.read_text())

    small = peak_kib("shared/note.txt", tmp_path / "small.txt")
    large = peak_kib("shared/big.bin", tmp_path / "big.bin")
    assert hashlib.sha256((tmp_path / "big.bin").read_bytes()).hexdigest() == expected
    assert large - small < 24 << 10, f"peak RSS grew by {(large - small) >> 10} MiB"


def _stderr_on_a_terminal(fleet: Fleet, *args: str) -> bytes:
    """Run ``fleet ARGS`` with its stderr on a pseudo-terminal; return what it drew there."""
    leader, follower = os.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fleet", *args],
            env={**fleet.env, "TERM": "xterm", "COLUMNS": "100"},
            stdout=subprocess.DEVNULL,
            stderr=follower,
            timeout=300,
            check=True,
        )
        assert proc.returncode == 0
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 1 << 16)
            except OSError:  # EIO: the terminal has no writer left
                break
            if not chunk:
                break
            drawn += chunk
        return drawn
    finally:
        os.close(leader)


@on_lab
def test_progress_is_drawn_on_a_terminal_and_never_with_json(ready, tmp_path: Path) -> None:
    fleet, root = ready
    with (root / "shared" / "big.bin").open("wb") as f:
        f.write(os.urandom(16 << 20))
    args = ["node", "file", "download", "shared/big.bin", "--pool", "p", "--node", "node01"]
    drawn = _stderr_on_a_terminal(fleet, *args, "--destination", str(tmp_path / "a.bin"))
    assert b"shared/big.bin" in drawn, f"no progress bar drawn on a terminal: {drawn!r}"
    quiet = _stderr_on_a_terminal(
        fleet, *args, "--destination", str(tmp_path / "b.bin"), "-o", "json"
    )
    assert quiet == b""
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
