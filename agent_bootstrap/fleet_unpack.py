"""fleet's node-side unpacker of application packages (stdlib only, Python 3.8+).

Run by the controller over SSH with a fixed argv:

    python3 fleet_unpack.py APPS_DIR NAME SHA256
        says whether APPS_DIR/NAME holds the package with that sha256 already
    python3 fleet_unpack.py APPS_DIR NAME SHA256 ARCHIVE MAX_MEMBERS MAX_BYTES
        verifies ARCHIVE's sha256, checks every member again (no absolute paths, no
        '..', no links leading outside or through another link, no devices or FIFOs,
        caps on members and unpacked bytes), extracts it into APPS_DIR/.tmp-..., then
        renames that to APPS_DIR/NAME and records the sha256 in APPS_DIR/.fleet/NAME.json.
        ARCHIVE is deleted afterwards, whatever happens.

It prints one JSON object: {"result": "reused" | "missing" | "unpacked"}, or
{"error": {"code", "message"}} and exits 1.
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import uuid
import zipfile

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}#[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SHA_RE = re.compile(r"[0-9a-f]{64}")
CHUNK = 1 << 20
META = ".fleet"


class Refused(Exception):
    """A package that cannot be installed: code and message go back to the controller."""

    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code
        self.message = message


def normalized(raw):
    if "\x00" in raw or raw.startswith("/"):
        raise Refused("UnsafeArchiveMember", "member %r has an absolute path" % raw)
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Refused("UnsafeArchiveMember", "member %r has a '..' path segment" % raw)
    return "/".join(parts)


def zip_members(zf, max_members):
    """Yield (name, kind, size, link, info) for each member of a zip."""
    infos = zf.infolist()
    if len(infos) > max_members:
        raise Refused("ArchiveTooLarge", "more than %d members" % max_members)
    out = []
    for info in infos:
        name = normalized(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            if info.file_size > 4096:
                raise Refused("UnsafeArchiveMember", "member %r: symlink too long" % name)
            out.append((name, "symlink", 0, zf.read(info).decode("utf-8"), info))
        elif info.is_dir() or stat.S_ISDIR(mode):
            out.append((name, "dir", 0, "", info))
        elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # no type bits: a file
            raise Refused("UnsafeArchiveMember", "member %r is a device, FIFO or socket" % name)
        else:
            out.append((name, "file", info.file_size, "", info))
    return out


def tar_members(tf, max_members):
    out = []
    for info in tf:
        if len(out) >= max_members:
            raise Refused("ArchiveTooLarge", "more than %d members" % max_members)
        name = normalized(info.name)
        if info.issym():
            out.append((name, "symlink", 0, info.linkname, info))
        elif info.islnk():
            out.append((name, "hardlink", 0, normalized(info.linkname), info))
        elif info.isdir():
            out.append((name, "dir", 0, "", info))
        elif info.isreg():
            out.append((name, "file", info.size, "", info))
        else:
            raise Refused("UnsafeArchiveMember", "member %r is a device, FIFO or socket" % name)
    return out


def leaves(name, link, links):
    """Whether the symlink, followed step by step, leaves the root or passes a symlink."""
    here = name.split("/")[:-1]
    for seg in link.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if not here:
                return True
            here.pop()
        else:
            here.append(seg)
            if "/".join(here) in links:
                return True
    return False


def check(members, max_bytes):
    """Apply fleet/archives.py's rules again; return the members without the root entry."""
    members = [m for m in members if m[0] or m[1] != "dir"]
    links = set(m[0] for m in members if m[1] == "symlink")
    files, seen, total = set(), set(), 0
    for name, kind, size, link, _info in members:
        if not name:
            raise Refused("UnsafeArchiveMember", "a member has an empty name")
        if name in seen and kind != "dir":
            raise Refused("UnsafeArchiveMember", "member %r appears twice" % name)
        seen.add(name)
        total += size
        if total > max_bytes:
            raise Refused("ArchiveTooLarge", "unpacks to more than %d bytes" % max_bytes)
        parts = name.split("/")[:-1]
        if any("/".join(parts[: i + 1]) in links for i in range(len(parts))):
            raise Refused("UnsafeArchiveMember", "member %r lies under a symlink" % name)
        if kind == "symlink":
            if not link or link.startswith("/") or "\x00" in link or leaves(name, link, links):
                raise Refused("UnsafeArchiveMember", "member %r links outside" % name)
        elif kind == "hardlink" and link not in files:
            raise Refused("UnsafeArchiveMember", "member %r is a hard link outside" % name)
        if kind == "file":
            files.add(name)
    return members


def copy_capped(src, path, mode, budget):
    """Write ``src`` to the new file ``path`` (never through a link); return bytes left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as out:
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                break
            budget -= len(chunk)
            if budget < 0:
                raise Refused("ArchiveTooLarge", "unpacks to more bytes than it declares")
            out.write(chunk)
    os.chmod(path, mode)
    return budget


def file_mode(mode):
    return (mode & 0o755) | 0o644


def extract(members, opener, tmp, max_bytes):
    """Create directories and files first, then hard links, then symlinks (so nothing is
    ever written through a link)."""
    budget = max_bytes
    for name, kind, _size, _link, info in members:
        path = os.path.join(tmp, name)
        if kind == "dir":
            os.makedirs(path, 0o755, exist_ok=True)
        elif kind == "file":
            os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
            mode = file_mode(
                info.mode if isinstance(info, tarfile.TarInfo) else info.external_attr >> 16
            )
            src = opener(info)
            try:
                budget = copy_capped(src, path, mode, budget)
            finally:
                src.close()
    for name, kind, _size, link, _info in members:
        if kind == "hardlink":
            os.makedirs(os.path.dirname(os.path.join(tmp, name)), 0o755, exist_ok=True)
            os.link(os.path.join(tmp, link), os.path.join(tmp, name))
    for name, kind, _size, link, _info in members:
        if kind == "symlink":
            os.makedirs(os.path.dirname(os.path.join(tmp, name)), 0o755, exist_ok=True)
            os.symlink(link, os.path.join(tmp, name))


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)


def installed(apps, name, sha):
    try:
        with open(os.path.join(apps, META, name + ".json")) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return False
    dest = os.path.join(apps, name)
    return marker.get("sha256") == sha and os.path.isdir(dest) and not os.path.islink(dest)


def unpack(apps, name, sha, archive, max_members, max_bytes):
    if sha256_of(archive) != sha:
        raise Refused(
            "ApplicationPackageCorrupt",
            "the archive that reached the node does not have sha256 %s" % sha,
        )
    with open(archive, "rb") as f:
        head = f.read(4)
    tmp = os.path.join(apps, ".tmp-%s-%s" % (name, uuid.uuid4().hex[:12]))
    os.mkdir(tmp, 0o755)
    try:
        if head.startswith(b"PK"):
            with zipfile.ZipFile(archive) as zf:
                members = check(zip_members(zf, max_members), max_bytes)
                extract(members, zf.open, tmp, max_bytes)
        elif head.startswith(b"\x1f\x8b"):
            with tarfile.open(archive, "r:gz") as tf:
                members = check(tar_members(tf, max_members), max_bytes)
                extract(members, tf.extractfile, tmp, max_bytes)
        else:
            raise Refused("InvalidArchive", "neither a zip nor a tar.gz")
        for dirpath, _dirs, _files in os.walk(tmp):  # whatever the umask: every task reads
            os.chmod(dirpath, 0o755)
        marker = os.path.join(apps, META, name + ".json")
        if os.path.lexists(marker):
            os.unlink(marker)
        dest = os.path.join(apps, name)
        old = None
        if os.path.lexists(dest):
            old = os.path.join(apps, ".old-%s-%s" % (name, uuid.uuid4().hex[:12]))
            os.rename(dest, old)
        os.rename(tmp, dest)
        if old is not None:
            remove(old)
        part = marker + ".part"
        with open(part, "w") as f:
            json.dump({"sha256": sha}, f)
        os.replace(part, marker)
    finally:
        if os.path.lexists(tmp):
            remove(tmp)


def remove(path):
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
    else:
        shutil.rmtree(path)


def main(argv):
    if len(argv) not in (3, 6):
        raise Refused("BadRequest", "usage: APPS_DIR NAME SHA256 [ARCHIVE MAX_MEMBERS MAX_BYTES]")
    apps, name, sha = argv[0], argv[1], argv[2]
    if not NAME_RE.fullmatch(name) or not SHA_RE.fullmatch(sha):
        raise Refused("BadRequest", "bad package name or sha256")
    archive = argv[3] if len(argv) == 6 else None
    try:
        os.makedirs(os.path.join(apps, META), 0o700, exist_ok=True)  # apps: the agent's 0711
        if archive is None:
            return "reused" if installed(apps, name, sha) else "missing"
        with open(os.path.join(apps, META, "lock"), "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            if installed(apps, name, sha):
                return "reused"
            unpack(apps, name, sha, archive, int(argv[4]), int(argv[5]))
            return "unpacked"
    finally:
        if archive is not None and os.path.lexists(archive):
            os.unlink(archive)


if __name__ == "__main__":
    try:
        result = {"result": main(sys.argv[1:])}
        code = 0
    except Refused as exc:
        result, code = {"error": {"code": exc.code, "message": exc.message}}, 1
    except (
        OSError,
        zipfile.BadZipFile,
        tarfile.TarError,
        EOFError,
        UnicodeError,
        RuntimeError,
    ) as exc:
        result, code = {"error": {"code": "UnpackFailed", "message": repr(exc)}}, 1
    sys.stdout.write(json.dumps(result) + "\n")
    sys.exit(code)
