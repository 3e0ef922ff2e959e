"""The controller's file store: round trips, sha256, listing, ranges, escapes refused, the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest

from fleet import file_store as fs
from fleet.errors import BadInput, Conflict, NotFound
from fleet.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.resolve(tmp_path / "home")


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_round_trip_is_byte_for_byte_with_sha256(settings, tmp_path):
    big = os.urandom(5 * 1024 * 1024 + 3)
    binary = bytes(range(256)) * 4 + b"\0\r\n\xff"
    for name, data in (("c/big.bin", big), ("c/bin/all.bytes", binary), ("c/empty", b"")):
        local = _write(tmp_path / "src" / name, data)
        entry = fs.put_file(settings, local, name)
        assert entry["name"] == name
        assert entry["properties"]["contentLength"] == len(data)
        assert entry["properties"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["properties"]["lastModified"].endswith("Z")
        assert fs.read_range(settings, name) == data
        assert fs.open_file(settings, name).read_bytes() == data
    listed = {e["name"]: e for e in fs.list_files(settings)}
    assert listed["c/big.bin"]["properties"]["sha256"] == hashlib.sha256(big).hexdigest()
    assert not [p for p in settings.files.rglob("*") if ".fleet-tmp-" in p.name]


def test_put_bytes_normalizes_names_and_overwrites(settings):
    entry = fs.put_bytes(settings, b"one", "out/./x/../a.txt")
    assert entry["name"] == "out/a.txt"
    fs.put_bytes(settings, b"two!", "out/a.txt")
    assert fs.read_range(settings, "out/a.txt") == b"two!"
    with pytest.raises(Conflict) as exc:
        fs.put_bytes(settings, b"three", "out/a.txt", overwrite=False)
    assert exc.value.code == "FileExists"
    with pytest.raises(Conflict):
        fs.put_bytes(settings, b"x", "out/a.txt/below")
    with pytest.raises(Conflict):
        fs.put_bytes(settings, b"x", "out")


@pytest.mark.parametrize("size", [6, fs.SMALL + 1])  # hashed when listed; cached
def test_the_sha256_cache_notices_a_changed_file(settings, size):
    fs.put_bytes(settings, b"b" * size, "c/f")
    path = fs.open_file(settings, "c/f")
    path.write_bytes(b"after, longer" * size)
    [entry] = fs.list_files(settings, "c")
    assert entry["properties"]["sha256"] == hashlib.sha256(b"after, longer" * size).hexdigest()


def test_list_with_prefix_and_patterns(settings):
    for name in ("a/x.txt", "a/d/y.txt", "a/d/e/z.csv", "b/x.txt", "ab/w.txt"):
        fs.put_bytes(settings, name.encode(), name)
    names = lambda *args: [e["name"] for e in fs.list_files(settings, *args)]  # noqa: E731
    assert names() == ["a/d/e/z.csv", "a/d/y.txt", "a/x.txt", "ab/w.txt", "b/x.txt"]
    assert names("a") == ["a/d/e/z.csv", "a/d/y.txt", "a/x.txt"]
    assert names("a/") == names("a")
    assert names("a", "**/*.txt") == ["a/d/y.txt", "a/x.txt"]
    assert names("a", "*.txt") == ["a/x.txt"]
    assert names("a", "d/**") == ["a/d/e/z.csv", "a/d/y.txt"]
    assert names("", "*/x.txt") == ["a/x.txt", "b/x.txt"]
    assert names("a/d/y.txt") == ["a/d/y.txt"]
    assert names("nothing") == []
    with pytest.raises(BadInput) as exc:
        fs.list_files(settings, "a", "/abs")
    assert exc.value.code == "InvalidFilePattern"


def test_byte_ranges_are_inclusive(settings):
    fs.put_bytes(settings, b"0123456789", "r/data")
    assert fs.read_range(settings, "r/data", 2, 5) == b"2345"
    assert fs.read_range(settings, "r/data", 7) == b"789"
    assert fs.read_range(settings, "r/data", None, 3) == b"0123"
    assert fs.read_range(settings, "r/data", 8, 100) == b"89"
    sink = io.BytesIO()
    assert fs.stream_range(settings, "r/data", sink, 1, 1) == 1 and sink.getvalue() == b"1"
    for start, end in ((5, 2), (-1, None), (None, -2), (10, None)):
        with pytest.raises(BadInput) as exc:
            fs.read_range(settings, "r/data", start, end)
        assert exc.value.code == "InvalidRange"
    fs.put_bytes(settings, b"", "r/empty")
    assert fs.read_range(settings, "r/empty") == b""
    assert fs.read_range(settings, "r/empty", 0, 10) == b""
    with pytest.raises(BadInput):
        fs.read_range(settings, "r/empty", 1)


def test_progress_reports_every_byte(settings, tmp_path):
    local = _write(tmp_path / "f", os.urandom(3 * 1024 * 1024 + 5))
    seen: list[int] = []
    fs.put_file(settings, local, "p/f", progress=seen.append)
    assert sum(seen) == local.stat().st_size
    assert fs.stat_file(settings, "p/./f")["name"] == "p/f"


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../x", "", "a\0b", ".fleet-sums/x"])
def test_bad_names_are_refused(settings, tmp_path, name):
    local = _write(tmp_path / "f", b"x")
    for call in (
        lambda: fs.put_file(settings, local, name),
        lambda: fs.put_bytes(settings, b"x", name),
        lambda: fs.open_file(settings, name),
        lambda: fs.read_range(settings, name),
        lambda: fs.delete(settings, name),
    ):
        with pytest.raises(BadInput) as exc:
            call()
        assert exc.value.code == "InvalidFilePath"


def test_symlinks_planted_in_the_store_do_not_escape(settings, tmp_path):
    secret = _write(tmp_path / "outside" / "secret", b"secret")
    fs.put_bytes(settings, b"ok", "c/ok")
    (settings.files / "c" / "link").symlink_to(secret)
    (settings.files / "c" / "dirlink").symlink_to(secret.parent, target_is_directory=True)
    for name in ("c/link", "c/dirlink/secret"):
        with pytest.raises(BadInput) as exc:
            fs.open_file(settings, name)
        assert exc.value.code == "InvalidFilePath"
    with pytest.raises(BadInput):
        fs.put_bytes(settings, b"x", "c/dirlink/new")
    with pytest.raises(BadInput):
        fs.list_files(settings, "c/dirlink")
    assert [e["name"] for e in fs.list_files(settings)] == ["c/ok"]
    assert fs.delete(settings, "c/link") == 1
    assert secret.read_bytes() == b"secret"
    assert not (secret.parent / "new").exists()


def test_put_tree_keeps_relative_paths(settings, tmp_path):
    src = tmp_path / "tree"
    _write(src / "a.txt", b"a")
    _write(src / "sub" / "deep" / "b.bin", b"\0b")
    (src / "alias").symlink_to(src / "a.txt")
    (src / "subalias").symlink_to(src / "sub", target_is_directory=True)
    os.mkfifo(src / "pipe")
    entries = fs.put_tree(settings, src, "up/load")
    assert [e["name"] for e in entries] == [
        "up/load/a.txt",
        "up/load/alias",
        "up/load/sub/deep/b.bin",
    ]
    assert fs.read_range(settings, "up/load/sub/deep/b.bin") == b"\0b"
    assert fs.read_range(settings, "up/load/alias") == b"a"


def test_put_tree_refuses_an_escaping_symlink_before_copying(settings, tmp_path):
    src = tmp_path / "tree"
    _write(src / "a.txt", b"a")
    (src / "z").symlink_to(_write(tmp_path / "secret", b"s"))
    with pytest.raises(BadInput) as exc:
        fs.put_tree(settings, src, "up")
    assert exc.value.code == "InvalidFilePath"
    assert fs.list_files(settings) == []
    with pytest.raises(BadInput):
        fs.put_tree(settings, tmp_path / "missing", "up")


def test_files_put_together_appear_only_at_the_end(settings):
    fs.put_bytes(settings, b"old", "c/a")
    streamed = fs.stage(settings, "c/sub/b")
    streamed.write(b"tw")
    streamed.write(b"o")
    streamed.close()
    dropped = fs.stage(settings, "c/dropped")
    dropped.write(b"x")
    dropped.discard()
    assert [e["name"] for e in fs.list_files(settings)] == ["c/a"]
    big = os.urandom(fs.SMALL + 1)
    names = fs.put_many(
        settings, [("c/a", b"new"), ("c/sub/b", streamed), ("c/big", big), ("c/a", b"newer")]
    )
    assert names == ["c/a", "c/sub/b", "c/big", "c/a"]
    sums = {e["name"]: e["properties"]["sha256"] for e in fs.list_files(settings)}
    assert sums == {
        "c/a": hashlib.sha256(b"newer").hexdigest(),
        "c/big": hashlib.sha256(big).hexdigest(),
        "c/sub/b": hashlib.sha256(b"two").hexdigest(),
    }
    assert not [p for p in settings.files.rglob("*") if ".fleet-tmp-" in p.name]


def test_a_failed_put_many_shows_nothing(settings):
    streamed = fs.stage(settings, "c/streamed")
    streamed.write(b"s")
    fs.put_bytes(settings, b"file", "c/taken")
    with pytest.raises(Conflict) as exc:
        fs.put_many(settings, [("c/streamed", streamed), ("c/taken/below", b"x")])
    assert exc.value.code == "PathConflict"
    assert [e["name"] for e in fs.list_files(settings)] == ["c/taken"]
    assert not [p for p in settings.files.rglob("*") if ".fleet-tmp-" in p.name]


def test_delete_counts_and_prunes(settings):
    for name in ("d/a", "d/s/b", "d/s/t/c", "e/x"):
        fs.put_bytes(settings, b"x", name)
    assert fs.delete(settings, "d/s/t/c") == 1
    assert not (settings.files / "d" / "s" / "t").exists()
    assert fs.delete(settings, "d") == 2
    assert not (settings.files / "d").exists()
    with pytest.raises(NotFound) as exc:
        fs.delete(settings, "d")
    assert exc.value.code == "FileNotFound"
    with pytest.raises(NotFound):
        fs.open_file(settings, "d/a")
    assert [e["name"] for e in fs.list_files(settings)] == ["e/x"]


# --- the real CLI --------------------------------------------------------------------


def test_cli_upload_list_download_delete(fleet, tmp_path):
    text = _write(tmp_path / "hello.txt", b"hello, store\n")
    data = os.urandom(100_000)
    binary = _write(tmp_path / "tree" / "sub" / "blob.bin", data)
    _write(tmp_path / "tree" / "top.txt", b"top")

    [entry] = fleet.json("file", "upload", str(text), "c/hello.txt")
    assert entry["name"] == "c/hello.txt"
    assert entry["properties"]["sha256"] == hashlib.sha256(b"hello, store\n").hexdigest()
    up = fleet("file", "upload", str(tmp_path / "tree"), "c/tree", "--recursive", "-o", "json")
    assert [e["name"] for e in up.json()] == ["c/tree/sub/blob.bin", "c/tree/top.txt"]
    assert up.stderr == ""

    listed = fleet.json("file", "list", "c", "--pattern", "**/*.bin")
    assert [e["name"] for e in listed] == ["c/tree/sub/blob.bin"]
    table = fleet("file", "list")
    assert "NAME" in table.stdout and "c/tree/top.txt" in table.stdout

    assert fleet("file", "download", "c/hello.txt").stdout == "hello, store\n"
    assert fleet("file", "download", "c/hello.txt", "--start", "7", "--end", "11").stdout == "store"
    out = tmp_path / "got.bin"
    fleet("file", "download", "c/tree/sub/blob.bin", "--destination", str(out))
    assert out.read_bytes() == data
    (tmp_path / "dir").mkdir()
    fleet("file", "download", "c/tree/sub/blob.bin", "--destination", str(tmp_path / "dir"))
    assert (tmp_path / "dir" / "blob.bin").read_bytes() == binary.read_bytes()

    assert fleet.json("file", "delete", "c/tree") == {"name": "c/tree", "deleted": 2}
    assert [e["name"] for e in fleet.json("file", "list")] == ["c/hello.txt"]


def test_cli_errors_have_codes_and_exit_statuses(fleet, tmp_path):
    local = _write(tmp_path / "f", b"x")
    bad = fleet("file", "upload", str(local), "../escape", "-o", "json", check=False)
    assert bad.code == 2
    assert json.loads(bad.stderr)["error"]["code"] == "InvalidFilePath"
    assert fleet("file", "download", "/etc/passwd", check=False).code == 2
    missing = fleet("file", "download", "c/missing", "-o", "json", check=False)
    assert missing.code == 3
    assert json.loads(missing.stderr)["error"]["code"] == "FileNotFound"
    assert fleet("file", "delete", "c", check=False).code == 3
    assert fleet("file", "upload", str(tmp_path), "c/x", check=False).code == 2
    fleet("file", "upload", str(local), "c/f")
    assert fleet("file", "download", "c/f", "--start", "5", check=False).code == 2
    assert not (tmp_path / "never").exists()
    assert (
        fleet(
            "file", "download", "c/nope", "--destination", str(tmp_path / "never"), check=False
        ).code
        == 3
    )
    assert not (tmp_path / "never").exists()
