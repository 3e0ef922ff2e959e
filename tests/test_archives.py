"""The application package checker: data-driven zip and tar.gz cases built in the test, run
against both the controller's checker (fleet/archives.py) and the node-side unpacker.

FLEET_TEST_AGENT_PYTHON selects the interpreter that runs the unpacker (for example a
Python 3.8, the oldest supported node Python), as in tests/test_agent.py."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest

from agent_bootstrap import unpacker_source
from fleet import archives
from fleet.errors import BadInput

# An entry: (name, kind, data-or-link-target). kind: file | dir | symlink | hardlink | fifo | dev
Entry = tuple[str, str, str]


def build_tar(path: Path, entries: list[Entry]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            payload = None
            if kind == "file":
                payload = data.encode()
                info.size, info.mode = len(payload), 0o644
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, data
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "dev":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tf.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def build_zip(path: Path, entries: list[Entry]) -> Path:
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as zf:
        warnings.simplefilter("ignore")  # a duplicate name is one of the bad cases
        for name, kind, data in entries:
            info = zipfile.ZipInfo(name + ("/" if kind == "dir" else ""))
            mode = {
                "file": stat.S_IFREG | 0o644,
                "dir": stat.S_IFDIR | 0o755,
                "symlink": stat.S_IFLNK | 0o777,
                "fifo": stat.S_IFIFO | 0o644,
                "dev": stat.S_IFCHR | 0o644,
            }[kind]
            info.external_attr = mode << 16
            zf.writestr(info, "" if kind == "dir" else data)
    return path


GOOD: list[tuple[str, list[Entry]]] = [
    ("plain files", [("bin/run.sh", "file", "echo hi"), ("README", "file", "x")]),
    ("a dot root and dirs", [("./", "dir", ""), ("./lib", "dir", ""), ("./lib/a.py", "file", "")]),
    ("a symlink inside", [("lib/a", "file", "x"), ("lib/b", "symlink", "a")]),
    ("a symlink to a sibling dir", [("d/x", "file", ""), ("e/l", "symlink", "../d")]),
]

BAD: list[tuple[str, list[Entry], str]] = [
    ("zip slip", [("ok", "file", ""), ("../evil.sh", "file", "x")], "parent-dir"),
    ("deep slip", [("a/b/../../../evil", "file", "x")], "parent-dir"),
    ("absolute path", [("/etc/evil", "file", "x")], "absolute-path"),
    ("symlink escape", [("lib/l", "symlink", "../../etc/passwd")], "link-escape"),
    ("absolute symlink", [("l", "symlink", "/etc")], "link-escape"),
    ("write through a symlink", [("l", "symlink", "d"), ("l/x", "file", "")], "through-link"),
    ("chained symlinks", [("x", "symlink", "."), ("y", "symlink", "x/..")], "link-escape"),
    ("fifo", [("p", "fifo", "")], "special-file"),
    ("device", [("null", "dev", "")], "special-file"),
    ("duplicate", [("a", "file", "1"), ("a", "file", "2")], "duplicate"),
]
TAR_ONLY_BAD: list[tuple[str, list[Entry], str]] = [
    ("hard link out", [("h", "hardlink", "../../etc/shadow")], "parent-dir"),
    ("hard link to nothing", [("h", "hardlink", "missing")], "link-escape"),
]

BUILDERS = {"tar.gz": build_tar, "zip": build_zip}
NODE_PYTHON = os.environ.get("FLEET_TEST_AGENT_PYTHON", sys.executable)


def _unpack_on_node(tmp: Path, archive: Path, max_members: int = 1000, max_bytes: int = 1 << 20):
    """Run the node-side unpacker on ``archive`` as the controller does; return its JSON."""
    import hashlib

    script = tmp / "fleet_unpack.py"
    script.write_bytes(unpacker_source())
    apps = tmp / "applications"
    apps.mkdir(exist_ok=True)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    proc = subprocess.run(
        [NODE_PYTHON, str(script), str(apps), "app#1", sha, str(archive)]
        + [str(max_members), str(max_bytes)],
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout), apps


@pytest.mark.parametrize("fmt", list(BUILDERS))
@pytest.mark.parametrize(("case", "entries"), GOOD, ids=[c[0] for c in GOOD])
def test_safe_archive_is_accepted_and_unpacked(
    tmp_path: Path, fmt: str, case: str, entries: list[Entry]
) -> None:
    archive = BUILDERS[fmt](tmp_path / f"a.{fmt}", entries)
    got_fmt, members = archives.check(archive)
    assert got_fmt == fmt
    assert {m.name for m in members} == {e[0].strip("./") or "." for e in entries} - {"."}
    result, apps = _unpack_on_node(tmp_path, archive)
    assert result == {"result": "unpacked"}
    for name, kind, data in entries:
        path = apps / "app#1" / name
        if kind == "file":
            assert path.read_text() == data
        if kind == "symlink":
            assert os.readlink(path) == data
    assert not archive.exists()  # the node deletes what it was sent
    assert [p.name for p in apps.iterdir() if p.name.startswith(".tmp")] == []


@pytest.mark.parametrize("fmt", list(BUILDERS))
@pytest.mark.parametrize(("case", "entries", "rule"), BAD, ids=[c[0] for c in BAD])
def test_unsafe_archive_is_refused_naming_member_and_rule(
    tmp_path: Path, fmt: str, case: str, entries: list[Entry], rule: str
) -> None:
    archive = BUILDERS[fmt](tmp_path / f"a.{fmt}", entries)
    with pytest.raises(BadInput) as err:
        archives.check(archive)
    assert err.value.code == "UnsafeArchiveMember"
    assert err.value.exit_status == 2
    assert err.value.details["rule"] == rule
    assert err.value.details["member"] in err.value.message
    # defence in depth: the node-side unpacker refuses it too, and leaves nothing behind
    result, apps = _unpack_on_node(tmp_path, archive)
    assert result["error"]["code"] == "UnsafeArchiveMember"
    assert sorted(p.name for p in apps.iterdir()) == [".fleet"]


@pytest.mark.parametrize(
    ("case", "entries", "rule"), TAR_ONLY_BAD, ids=[c[0] for c in TAR_ONLY_BAD]
)
def test_unsafe_hard_link_is_refused(
    tmp_path: Path, case: str, entries: list[Entry], rule: str
) -> None:
    archive = build_tar(tmp_path / "a.tar.gz", entries)
    with pytest.raises(BadInput) as err:
        archives.check(archive)
    assert err.value.details["rule"] == rule
    result, _apps = _unpack_on_node(tmp_path, archive)
    assert result["error"]["code"] == "UnsafeArchiveMember"


def test_hard_link_to_an_earlier_file_is_unpacked_as_a_link(tmp_path: Path) -> None:
    archive = build_tar(tmp_path / "a.tar.gz", [("d/f", "file", "ok"), ("d/h", "hardlink", "d/f")])
    assert [m.kind for m in archives.check(archive)[1]] == ["file", "hardlink"]
    result, apps = _unpack_on_node(tmp_path, archive)
    assert result == {"result": "unpacked"}
    assert (apps / "app#1" / "d" / "h").read_text() == "ok"


@pytest.mark.parametrize("fmt", list(BUILDERS))
def test_member_count_and_unpacked_size_are_capped(tmp_path: Path, fmt: str) -> None:
    many = BUILDERS[fmt](tmp_path / f"m.{fmt}", [(f"f{i}", "file", "") for i in range(20)])
    with pytest.raises(BadInput) as err:
        archives.check(many, max_members=10)
    assert err.value.code == "ArchiveTooLarge"
    big = BUILDERS[fmt](tmp_path / f"b.{fmt}", [("a", "file", "x" * 600), ("b", "file", "y" * 600)])
    with pytest.raises(BadInput) as err:
        archives.check(big, max_bytes=1000)
    assert (err.value.code, err.value.details["member"]) == ("ArchiveTooLarge", "b")
    assert _unpack_on_node(tmp_path, many, max_members=10)[0]["error"]["code"] == "ArchiveTooLarge"
    assert _unpack_on_node(tmp_path, big, max_bytes=1000)[0]["error"]["code"] == "ArchiveTooLarge"


def test_file_that_is_no_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(BadInput) as err:
        archives.check(path)
    assert err.value.code == "InvalidArchive"


def test_node_unpacker_refuses_an_archive_whose_hash_differs(tmp_path: Path) -> None:
    archive = build_zip(tmp_path / "a.zip", [("x", "file", "1")])
    script = tmp_path / "fleet_unpack.py"
    script.write_bytes(unpacker_source())
    apps = tmp_path / "applications"
    argv: list[Any] = [NODE_PYTHON, script, apps, "app#1", "0" * 64, archive, 10, 1000]
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    assert json.loads(proc.stdout)["error"]["code"] == "ApplicationPackageCorrupt"
    assert not (apps / "app#1").exists()


@pytest.mark.parametrize("attr", [0, 0o600 << 16, 0o755 << 16])
def test_zip_members_without_file_type_bits_are_files(tmp_path: Path, attr: int) -> None:
    """`zipfile.writestr(name, data)` and DOS-made zips set no file type: such a member
    is a regular file, on the controller and on the node."""
    archive = tmp_path / "plain.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("run.sh")
        info.external_attr = attr
        zf.writestr(info, "echo hi\n")
    fmt, members = archives.check(archive)
    assert fmt == "zip" and [(m.name, m.kind) for m in members] == [("run.sh", "file")]
    result, apps = _unpack_on_node(tmp_path, archive)
    assert result == {"result": "unpacked"}
    assert (apps / "app#1" / "run.sh").read_text() == "echo hi\n"
