"""The controller's file store: named files under FLEET_HOME/files, like a storage container.

Names are relative '/'-separated paths normalized by ``file_patterns.safe_relpath``;
the first segment plays the part of a container. Segments starting with ``.fleet``
are reserved (temp files, the sha256 cache). Writes land in a temp file beside the
target and are renamed into place; files are streamed, never read whole; every
path is resolved inside the store and a symlink leading out of it is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from fleet import file_patterns
from fleet.errors import BadInput, Conflict, NotFound
from fleet.settings import Settings

RESERVED = ".fleet"
_SUMS = ".fleet-sums"  # <root>/.fleet-sums/<h[:2]>/<h>.json, h = sha256 of the name
_TMP = ".fleet-tmp-"
CHUNK = 1 << 20
#: Files up to this size get no cached sha256: reading one costs about what reading its
#: cache entry would, and storing many small files is spared a second file each.
SMALL = 64 << 10

Progress = Callable[[int], None]
"""Called with the number of bytes just copied."""


def _root(settings: Settings) -> Path:
    settings.files.mkdir(parents=True, exist_ok=True)
    return settings.files


def _name(remote: str, field: str = "name") -> str:
    rel = file_patterns.safe_relpath(remote, field=field)
    if any(seg.startswith(RESERVED) for seg in rel.split("/")):
        raise BadInput(
            f"path {remote!r} uses a name reserved by the file store ({RESERVED}...)",
            code="InvalidFilePath",
            field=field,
        )
    return rel


def _inside(root: Path, path: Path, rel: str) -> str:
    """Return the real path of ``path``; raise BadInput if it leaves the store or
    lands on its reserved names."""
    real = os.path.realpath(path)
    inner = os.path.relpath(real, os.path.realpath(root)).replace(os.sep, "/")
    if inner.split("/")[0] == ".." or any(s.startswith(RESERVED) for s in inner.split("/")):
        raise BadInput(
            f"{rel!r} resolves outside the file store", code="InvalidFilePath", target=f"file {rel}"
        )
    return real


def _not_found(rel: str) -> NotFound:
    return NotFound(f"no file {rel!r} in the file store", code="FileNotFound", target=f"file {rel}")


def _sum_path(root: Path, rel: str) -> Path:
    h = hashlib.sha256(rel.encode()).hexdigest()
    return root / _SUMS / h[:2] / f"{h}.json"


def _record_sum(root: Path, rel: str, st: os.stat_result, sha: str) -> None:
    if st.st_size <= SMALL:
        return  # hashed when listed
    path = _sum_path(root, rel)
    tmp = path.with_name(f"{_TMP}{uuid.uuid4().hex}")
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"name": rel, "sha256": sha, "stamp": stamp}))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # the cache is only a cache


def _cached_sum(root: Path, rel: str, st: os.stat_result) -> str:
    """Return the recorded sha256 of a file that is still as it was recorded, else ""."""
    if st.st_size <= SMALL:
        return ""
    try:
        cached = json.loads(_sum_path(root, rel).read_text())
        ok = cached["name"] == rel and cached["stamp"] == [st.st_size, st.st_mtime_ns, st.st_ino]
        return str(cached["sha256"]) if ok else ""
    except (OSError, ValueError, TypeError, KeyError):
        return ""


def _entry(root: Path, rel: str, real: str) -> dict[str, Any]:
    st = os.stat(real)
    sha = _cached_sum(root, rel, st)
    if not sha:  # small, never stored through us, or changed behind our back
        with open(real, "rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()
        _record_sum(root, rel, st, sha)
    modified = datetime.fromtimestamp(st.st_mtime, UTC).isoformat(timespec="milliseconds")
    return {
        "name": rel,
        "properties": {
            "contentLength": st.st_size,
            "lastModified": modified.replace("+00:00", "Z"),
            "sha256": sha,
        },
    }


def _parent(root: Path, rel: str) -> Path:
    cur = root
    for seg in rel.split("/")[:-1]:
        cur = cur / seg
        try:
            cur.mkdir()
        except FileExistsError:
            if cur.is_symlink():
                _inside(root, cur, rel)
            if not cur.is_dir():
                where = cur.relative_to(root).as_posix()
                raise Conflict(
                    f"cannot store {rel!r}: {where!r} is a file", code="PathConflict"
                ) from None
    return cur


def _exists(rel: str) -> Conflict:
    return Conflict(f"{rel!r} exists already", code="FileExists", target=f"file {rel}")


class Staged:
    """A file being written into the store under a temporary name beside its place,
    hashed on the way; nothing shows under its name until it is put in place
    (:func:`put_many`). ``dirs`` caches the parent directories a batch has made.

    Raises on creation as :func:`put_file` does for the name (Conflict ``PathConflict``,
    ``FileExists``), or OSError."""

    def __init__(
        self,
        root: Path,
        rel: str,
        overwrite: bool = True,
        progress: Progress | None = None,
        dirs: dict[str, Path] | None = None,
    ) -> None:
        self.root, self.name, self.overwrite, self.progress = root, rel, overwrite, progress
        folder, _, base = rel.rpartition("/")
        parent = dirs.get(folder) if dirs is not None else None
        if parent is None:
            parent = _parent(root, rel)
            if dirs is not None:
                dirs[folder] = parent
        self.dest = os.path.join(parent, base)
        if os.path.isdir(self.dest) and not os.path.islink(self.dest):
            raise Conflict(f"{rel!r} is a directory", code="PathConflict", target=f"file {rel}")
        if not overwrite and os.path.lexists(self.dest):
            raise _exists(rel)
        self.tmp = os.path.join(parent, f"{_TMP}{uuid.uuid4().hex}")
        self.hasher = hashlib.sha256()
        self.placed = False
        self._file = open(self.tmp, "xb")  # noqa: SIM115 (closed by close or discard)

    def write(self, data: bytes | bytearray) -> int:
        self.hasher.update(data)
        if self.progress is not None:
            self.progress(len(data))
        return self._file.write(data)

    def close(self) -> None:
        """Close the temporary file (it stays until put in place or discarded)."""
        self._file.close()

    def discard(self) -> None:
        """Close and remove the temporary file, unless it was put in place."""
        self._file.close()
        if not self.placed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)

    def _place(self) -> None:
        if self.overwrite:
            os.replace(self.tmp, self.dest)
        else:
            try:
                os.link(self.tmp, self.dest)  # atomic: fails if the name was taken meanwhile
            except FileExistsError:
                raise _exists(self.name) from None
            os.unlink(self.tmp)
        self.placed = True
        _record_sum(self.root, self.name, os.stat(self.dest), self.hasher.hexdigest())


def stage(settings: Settings, remote: str) -> Staged:
    """Return a new :class:`Staged` file to stream ``remote``'s bytes into, for
    :func:`put_many`. Raises BadInput ``InvalidFilePath``, Conflict ``PathConflict``,
    OSError."""
    return Staged(_root(settings), _name(remote))


def put_many(
    settings: Settings, files: Sequence[tuple[str, bytes | bytearray | Staged]]
) -> list[str]:
    """Store files together, each given as its bytes or as a :class:`Staged` file of
    that name, replacing files of the same names; return the names, in order (of two
    with one name, the later wins). The data reaches the disk first, with one
    ``os.sync()`` for them all (an fsync each would cost a journal commit each), then
    each is renamed into place. Blocks on the disk: call it off the event loop. Raises
    as :func:`stage` for a bytes item's name, and OSError; nothing of a failed call
    shows, and its staged files are removed."""
    root, dirs = _root(settings), dict[str, Path]()
    staged: list[Staged] = []
    try:
        for name, data in files:
            if isinstance(data, Staged):
                staged.append(data)
            else:
                staged.append(Staged(root, _name(name), dirs=dirs))
                staged[-1].write(data)
                staged[-1].close()  # its buffer goes now, not after the whole batch
        _commit(staged)
    except BaseException:
        for s in staged:
            s.discard()
        raise
    return [s.name for s in staged]


def _commit(staged: list[Staged]) -> None:
    """Flush staged files to disk (fsync for one, ``os.sync()`` for more), then put each
    in place; remove whatever was not placed."""
    try:
        for s in staged:
            s.close()
        if len(staged) == 1:
            fd = os.open(staged[0].tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif staged:
            os.sync()
        for s in staged:
            s._place()
    finally:
        for s in staged:
            s.discard()


def _store(
    root: Path, rel: str, src: BinaryIO, overwrite: bool, progress: Progress | None
) -> dict[str, Any]:
    staged = Staged(root, rel, overwrite, progress)
    try:
        shutil.copyfileobj(src, staged, CHUNK)
    except BaseException:
        staged.discard()
        raise
    _commit([staged])
    return _entry(root, rel, os.path.realpath(staged.dest))


def _open_local(path: Path, flags: int = 0) -> BinaryIO:
    try:  # O_NONBLOCK: a FIFO must not hang us; it is refused below as not regular
        src = os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | flags), "rb")
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}", code="FileUnreadable") from exc
    if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
        src.close()
        raise BadInput(f"{path} is not a regular file", code="FileUnreadable")
    return src


def put_file(
    settings: Settings,
    local: Path,
    remote: str,
    *,
    overwrite: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Copy the local file ``local`` into the store as ``remote``; return its entry.

    Raises BadInput ``InvalidFilePath`` for a bad name, BadInput ``FileUnreadable``
    if ``local`` is not a readable regular file, Conflict ``FileExists`` when
    ``overwrite`` is false and the name is taken, Conflict ``PathConflict`` when the
    name or one of its directories collides with a directory or file."""
    rel = _name(remote)
    with _open_local(local) as src:
        return _store(_root(settings), rel, src, overwrite, progress)


def put_bytes(
    settings: Settings, data: bytes, remote: str, *, overwrite: bool = True
) -> dict[str, Any]:
    """Store ``data`` as ``remote``; return its entry. Raises as :func:`put_file`."""
    return _store(_root(settings), _name(remote), io.BytesIO(data), overwrite, None)


def tree_files(local_dir: Path) -> list[tuple[Path, str]]:
    """Return ``(source, relative name)`` for every regular file under ``local_dir``,
    sorted by name. Symlinked directories are not followed; a symlink to a file in
    the tree is kept (``source`` is its target); dangling links and special files
    are skipped. Raises BadInput ``InvalidFilePath`` for a symlink leading out of
    the tree or a reserved name, ``FileUnreadable`` if the directory cannot be read."""
    if not local_dir.is_dir():
        raise BadInput(f"{local_dir} is not a directory", code="FileUnreadable")
    base = os.path.realpath(local_dir)
    out: list[tuple[Path, str]] = []

    def fail(exc: OSError) -> None:
        raise BadInput(f"cannot read {exc.filename}: {exc.strerror}", code="FileUnreadable")

    for dirpath, dirnames, filenames in os.walk(base, onerror=fail):
        for name in dirnames + filenames:
            source = os.path.join(dirpath, name)
            rel = os.path.relpath(source, base).replace(os.sep, "/")
            if os.path.islink(source):
                source = os.path.realpath(source)
                if os.path.commonpath([base, source]) != base:
                    raise BadInput(
                        f"{local_dir / rel} is a symlink leading out of {local_dir}",
                        code="InvalidFilePath",
                    )
            if name in filenames and os.path.isfile(source):
                out.append((Path(source), _name(rel)))
    return sorted(out, key=lambda item: item[1])


def put_tree(
    settings: Settings, local_dir: Path, prefix: str, *, progress: Progress | None = None
) -> list[dict[str, Any]]:
    """Upload every file :func:`tree_files` finds under ``local_dir`` as
    ``prefix/<relative path>`` ("" for the top level); return the entries, sorted.
    The whole tree is checked before anything is copied. Raises as :func:`tree_files`
    and :func:`put_file`."""
    base = _name(prefix, "prefix") + "/" if prefix else ""
    root = _root(settings)
    entries = []
    for source, rel in tree_files(local_dir):
        with _open_local(source, os.O_NOFOLLOW) as src:
            entries.append(_store(root, base + rel, src, True, progress))
    return entries


def _walk(root: Path, top: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if not d.startswith(RESERVED)]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not name.startswith(RESERVED) and stat.S_ISREG(os.lstat(path).st_mode):
                yield os.path.relpath(path, root).replace(os.sep, "/")


def list_files(
    settings: Settings, prefix: str = "", pattern: str | None = None
) -> list[dict[str, Any]]:
    """Return the entries of the files under directory ``prefix`` ("" for all), sorted
    by name: ``{"name", "properties": {"contentLength", "lastModified", "sha256"}}``.
    ``pattern``, a file_patterns glob, filters on the path relative to ``prefix``. A
    prefix naming a file lists it; a missing one lists nothing; symlinks are skipped.

    Raises BadInput (``InvalidFilePath``, ``InvalidFilePattern``) for a bad prefix
    or pattern, or a prefix resolving outside the store."""
    root = _root(settings)
    base = _name(prefix, "prefix") if prefix else ""
    regex = file_patterns.compile_pattern(pattern, field="pattern") if pattern else None
    top = root / base
    _inside(root, top, base or ".")
    if top.is_dir():
        names, cut = list(_walk(root, top)), len(base) + 1 if base else 0
    else:
        names = [base] if base and top.is_file() and not top.is_symlink() else []
        cut = base.rfind("/") + 1
    if regex is not None:
        names = [n for n in names if regex.fullmatch(n[cut:])]
    return [_entry(root, n, os.path.realpath(root / n)) for n in sorted(names)]


def open_file(settings: Settings, remote: str) -> Path:
    """Return the resolved local path of the stored file ``remote``.

    Raises BadInput ``InvalidFilePath`` for a bad name or one resolving outside the
    store (a symlink escape), NotFound ``FileNotFound`` if no file has that name."""
    root = _root(settings)
    rel = _name(remote)
    real = _inside(root, root / rel, rel)
    if not os.path.isfile(real):
        raise _not_found(rel)
    return Path(real)


def stat_file(settings: Settings, remote: str) -> dict[str, Any]:
    """Return the entry of the stored file ``remote``. Raises as :func:`open_file`."""
    path = open_file(settings, remote)
    return _entry(_root(settings), _name(remote), str(path))


def stream_range(
    settings: Settings,
    remote: str,
    dest: BinaryIO,
    start: int | None = None,
    end: int | None = None,
) -> int:
    """Write bytes ``start``..``end`` of ``remote`` to ``dest`` in chunks and return how
    many were written. Like HTTP ranges, ``end`` is inclusive and clamped to the size.

    Raises as :func:`open_file`, and BadInput ``InvalidRange`` for a negative bound,
    ``end < start`` or a nonzero ``start`` at or past the end of the file."""
    path = open_file(settings, remote)
    with open(path, "rb") as f:
        size, first = os.fstat(f.fileno()).st_size, start or 0
        if first < 0 or (end is not None and (end < 0 or end < first)) or first >= max(size, 1):
            raise BadInput(
                f"bad byte range {start}-{end} for a file of {size} bytes",
                code="InvalidRange",
                target=f"file {_name(remote)}",
            )
        count = (size if end is None else min(end + 1, size)) - first
        f.seek(first)
        written = 0
        while written < count and (chunk := f.read(min(CHUNK, count - written))):
            dest.write(chunk)
            written += len(chunk)
    return written


def read_range(
    settings: Settings, remote: str, start: int | None = None, end: int | None = None
) -> bytes:
    """Return bytes ``start``..``end`` (inclusive) of ``remote``. Raises as :func:`stream_range`."""
    buf = io.BytesIO()
    stream_range(settings, remote, buf, start, end)
    return buf.getvalue()


def delete(settings: Settings, remote_or_prefix: str) -> int:
    """Delete the file ``remote_or_prefix``, or every file under that directory, and
    return how many went. A symlink in the store is removed, never followed.

    Raises BadInput ``InvalidFilePath`` for a bad name or one whose directory resolves
    outside the store, NotFound ``FileNotFound`` if nothing matched."""
    root = _root(settings)
    rel = _name(remote_or_prefix)
    path = root / rel
    _inside(root, path.parent, rel)
    if path.is_symlink() or path.is_file():
        names = [rel]
        path.unlink()
    elif path.is_dir() and (names := list(_walk(root, path))):
        shutil.rmtree(path)
    else:
        raise _not_found(rel)
    for name in names:
        _sum_path(root, name).unlink(missing_ok=True)
    for parent in path.parents:  # prune directories left empty, up to the root
        if parent == root or not parent.is_relative_to(root):
            break
        try:
            parent.rmdir()
        except OSError:
            break
    return len(names)
