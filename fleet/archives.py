"""The archive checker for application packages: every member of a zip or tar.gz, checked.

Pure logic: :func:`check` reads an archive's table of contents (never its data,
except a zip symlink's few bytes of target) and returns its members, or raises
BadInput naming the member and the rule it breaks. The node-side unpacker
(``agent_bootstrap/fleet_unpack.py``) applies the same rules again before it
extracts anything.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from agent_bootstrap.fleet_unpack import leaves  # one rule for both checkers
from fleet.errors import BadInput

#: Caps on what one package may unpack to (the node-side unpacker gets the same).
MAX_MEMBERS = int(os.environ.get("FLEET_ARCHIVE_MAX_MEMBERS", 100_000))
MAX_UNPACKED_BYTES = int(os.environ.get("FLEET_ARCHIVE_MAX_BYTES", 4 << 30))
#: A symlink's target in a zip is its content: longer ones are refused unread.
MAX_LINK_TARGET = 4096

ZIP, TAR_GZ = "zip", "tar.gz"


@dataclass(frozen=True)
class Member:
    """One entry of an archive: its normalized name, kind, size, and link target."""

    name: str
    kind: str  # file | dir | symlink | hardlink
    size: int = 0
    link: str = ""


def detect_format(path: Path) -> str:
    """Return ``zip`` or ``tar.gz`` from the file's first bytes; raise BadInput otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}", code="FileUnreadable") from exc
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return ZIP
    if head.startswith(b"\x1f\x8b"):
        return TAR_GZ
    raise BadInput(
        f"{path} is neither a zip nor a tar.gz archive",
        code="InvalidArchive",
        target=f"archive {path.name}",
    )


def _bad(archive: str, member: str, rule: str, reason: str) -> BadInput:
    return BadInput(
        f"member {member!r} {reason}",
        code="UnsafeArchiveMember",
        target=f"archive {archive}",
        field=member,
        details={"member": member, "rule": rule},
    )


def _normalized(archive: str, raw: str) -> str:
    """Return the member name without './' or a trailing '/', refusing escapes."""
    if "\x00" in raw:
        raise _bad(archive, raw, "nul", "has a NUL byte in its name")
    if raw.startswith("/"):
        raise _bad(archive, raw, "absolute-path", "has an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _bad(archive, raw, "parent-dir", "has a '..' path segment")
    return "/".join(parts)


def _read_zip(path: Path, archive: str, max_members: int) -> list[Member]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BadInput(f"not a readable zip: {exc}", code="InvalidArchive", target=archive) from exc
    members: list[Member] = []
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise _too_many(archive, len(infos), max_members)
        for info in infos:
            name = _normalized(archive, info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                if info.file_size > MAX_LINK_TARGET:
                    raise _bad(archive, info.filename, "link-escape", "is a symlink too long")
                try:
                    target = zf.read(info).decode("utf-8")
                except (zipfile.BadZipFile, UnicodeDecodeError, RuntimeError) as exc:
                    reason = f"cannot be read: {exc}"
                    raise _bad(archive, info.filename, "unreadable", reason) from exc
                members.append(Member(name, "symlink", 0, target))
            elif info.is_dir() or stat.S_ISDIR(mode):
                members.append(Member(name, "dir"))
            elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # no type bits: a file
                raise _bad(archive, info.filename, "special-file", "is a device, FIFO or socket")
            else:
                members.append(Member(name, "file", info.file_size))
    return _named(archive, members)


def _read_tar(path: Path, archive: str, max_members: int) -> list[Member]:
    members: list[Member] = []
    try:
        with tarfile.open(path, "r:gz") as tf:
            for info in tf:  # streamed: a huge member count stops at the cap
                if len(members) >= max_members:
                    raise _too_many(archive, len(members) + 1, max_members)
                name = _normalized(archive, info.name)
                if info.issym():
                    members.append(Member(name, "symlink", 0, info.linkname))
                elif info.islnk():
                    members.append(Member(name, "hardlink", 0, info.linkname))
                elif info.isdir():
                    members.append(Member(name, "dir"))
                elif info.isreg():
                    members.append(Member(name, "file", info.size))
                else:
                    raise _bad(archive, info.name, "special-file", "is a device, FIFO or socket")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BadInput(
            f"not a readable tar.gz: {exc}", code="InvalidArchive", target=archive
        ) from exc
    return _named(archive, members)


def _named(archive: str, members: list[Member]) -> list[Member]:
    """Drop the root directory entry ('./'); refuse other empty names."""
    for m in members:
        if not m.name and m.kind != "dir":
            raise _bad(archive, m.name, "empty-name", "has an empty name")
    return [m for m in members if m.name]


def _too_many(archive: str, count: int, cap: int) -> BadInput:
    return BadInput(
        f"has more than {cap} members ({count} at least)",
        code="ArchiveTooLarge",
        target=f"archive {archive}",
        details={"rule": "member-count"},
    )


def _check_links(archive: str, members: list[Member]) -> None:
    """Refuse links that lead outside the archive's root, hard links to anything but an
    earlier file, and any path that passes through a symlink (so no chain can escape)."""
    links = {m.name for m in members if m.kind == "symlink"}
    files: set[str] = set()
    seen: set[str] = set()
    for m in members:
        if m.name in seen and m.kind != "dir":
            raise _bad(archive, m.name, "duplicate", "appears twice in the archive")
        seen.add(m.name)
        parents = m.name.split("/")[:-1]
        if any("/".join(parents[: i + 1]) in links for i in range(len(parents))):
            raise _bad(archive, m.name, "through-link", "lies under a symlink of the archive")
        if m.kind == "symlink":
            if not m.link or m.link.startswith("/") or "\x00" in m.link:
                raise _bad(archive, m.name, "link-escape", f"links to {m.link!r}, outside")
            if leaves(m.name, m.link, links):
                raise _bad(archive, m.name, "link-escape", f"links to {m.link!r}, outside")
        elif m.kind == "hardlink":
            target = _normalized(archive, m.link)
            if target not in files:
                raise _bad(archive, m.name, "link-escape", f"is a hard link to {m.link!r}")
        if m.kind == "file":
            files.add(m.name)


def check(
    path: Path,
    *,
    max_members: int = MAX_MEMBERS,
    max_bytes: int = MAX_UNPACKED_BYTES,
    name: str | None = None,
) -> tuple[str, list[Member]]:
    """Return the archive's format (``zip`` or ``tar.gz``) and its members, checked.

    Raises BadInput: ``InvalidArchive`` (not a zip or tar.gz, or unreadable),
    ``UnsafeArchiveMember`` (an absolute path, a '..' segment, a link leading
    outside or through another link, a device, FIFO or socket; ``field`` and
    ``details`` name the member and the rule), ``ArchiveTooLarge`` (more than
    ``max_members`` members or ``max_bytes`` unpacked)."""
    archive = name or path.name
    fmt = detect_format(path)
    reader = _read_zip if fmt == ZIP else _read_tar
    members = reader(path, archive, max_members)
    total = 0
    for m in members:
        total += m.size
        if total > max_bytes:
            raise BadInput(
                f"unpacks to more than {max_bytes} bytes (member {m.name!r} passes it)",
                code="ArchiveTooLarge",
                target=f"archive {archive}",
                field=m.name,
                details={"member": m.name, "rule": "unpacked-size"},
            )
    _check_links(archive, members)
    return fmt, members
