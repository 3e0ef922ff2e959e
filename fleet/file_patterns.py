"""Output file patterns (``filePattern`` globs) and safe relative paths for uploads and downloads.

Pattern rules (paths and patterns are relative and use '/'):

- ``*`` matches any run of characters within one path segment, dot files included;
  ``a**b`` inside a segment is the same as ``a*b``.
- ``**`` as a whole segment matches any number of segments: ``**/*.txt`` matches
  ``a.txt`` and ``x/y/a.txt``. At the end it matches everything beneath:
  ``out/**`` matches ``out/a`` and ``out/a/b`` but not ``out`` itself; ``**``
  alone matches every path.
- ``?`` matches one character other than '/'.
- ``[abc]``, ``[a-z]`` and ``[!a]`` are character classes, never matching '/';
  ``]`` first in a class is literal. A class cannot contain '/'.
- Everything else, backslash included, is literal.

Matching is linear-ish: interior ``*`` and ``**`` pieces compile to atomic groups,
so no pattern makes the regex engine backtrack exponentially.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from fleet.errors import BadInput

MAX_PATTERN_LENGTH = 4096
MAX_PATH_LENGTH = 4096

_ANY_SEGMENTS = "(?:[^/]+/)*"
_STAR = object()
_STARSTAR = "**"


def _bad_pattern(pattern: str, reason: str, target: str | None, field: str | None) -> BadInput:
    return BadInput(
        f"file pattern {pattern!r} {reason}", code="InvalidFilePattern", target=target, field=field
    )


def _class_regex(body: str) -> str:
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    body = body.replace("\\", "\\\\")
    body = re.sub(r"([&~|\[\]])", r"\\\1", body)
    if negate:
        return f"[^{body}/]"
    if body.startswith("^"):
        body = "\\" + body
    return f"(?!/)[{body}]"


def _segment_atoms(seg: str, pattern: str, target: str | None, field: str | None) -> list[object]:
    """Split one segment into atoms: _STAR, or a regex matching exactly one character."""
    atoms: list[object] = []
    i, n = 0, len(seg)
    while i < n:
        c = seg[i]
        i += 1
        if c == "*":
            if not atoms or atoms[-1] is not _STAR:
                atoms.append(_STAR)
        elif c == "?":
            atoms.append("[^/]")
        elif c == "[":
            j = i + 1 if i < n and seg[i] == "!" else i
            if j < n and seg[j] == "]":
                j += 1
            j = seg.find("]", j)
            if j < 0:
                raise _bad_pattern(pattern, "has a '[' without its ']'", target, field)
            atoms.append(_class_regex(seg[i:j]))
            i = j + 1
        else:
            atoms.append(re.escape(c))
    return atoms


def _segment_regex(seg: str, pattern: str, target: str | None, field: str | None) -> str:
    """Return a regex matching exactly one path segment that ``seg`` matches."""
    pieces: list[list[str]] = [[]]
    for atom in _segment_atoms(seg, pattern, target, field):
        if atom is _STAR:
            pieces.append([])
        else:
            pieces[-1].append(str(atom))
    out = "".join(pieces[0])
    for k, piece in enumerate(pieces[1:], start=1):
        fixed = "".join(piece)
        if k == len(pieces) - 1:
            out += "[^/]*" + fixed
        else:
            out += f"(?>[^/]*?{fixed})"
    return out


def _segments(pattern: str, target: str | None, field: str | None) -> list[str]:
    if not isinstance(pattern, str) or not pattern:
        raise BadInput(
            "file pattern must be a non-empty string",
            code="InvalidFilePattern",
            target=target,
            field=field,
        )
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise _bad_pattern(
            pattern[:40] + "...", f"is longer than {MAX_PATTERN_LENGTH}", target, field
        )
    if "\0" in pattern:
        raise _bad_pattern(pattern, "contains NUL", target, field)
    if pattern.startswith("/"):
        raise _bad_pattern(
            pattern, "is absolute: patterns are relative to the task directory", target, field
        )
    if pattern.endswith("/"):
        raise _bad_pattern(
            pattern, "ends with '/': write dir/** for the files under a directory", target, field
        )
    segs: list[str] = []
    for seg in pattern.split("/"):
        if seg == "..":
            raise _bad_pattern(pattern, "has a '..' segment", target, field)
        if seg == "":
            raise _bad_pattern(pattern, "has an empty segment ('//')", target, field)
        if seg == ".":
            continue
        if seg == _STARSTAR and segs and segs[-1] == _STARSTAR:
            continue
        segs.append(seg)
    if not segs:
        raise _bad_pattern(pattern, "matches no file", target, field)
    return segs


def _build(pattern: str, target: str | None, field: str | None) -> str:
    # Blocks of ordinary segments separated by '**'. The first block is anchored at
    # the start, the last at the end; interior blocks match at their leftmost place
    # (an atomic group), which is always safe because a '**' follows them.
    blocks: list[list[str]] = [[]]
    for seg in _segments(pattern, target, field):
        if seg == _STARSTAR:
            blocks.append([])
        else:
            blocks[-1].append(_segment_regex(seg, pattern, target, field))
    last = len(blocks) - 1
    if last == 0:
        return "/".join(blocks[0])
    out = "".join(s + "/" for s in blocks[0])
    for k in range(1, last):
        out += f"(?>{_ANY_SEGMENTS}?{''.join(s + '/' for s in blocks[k])})"
    if blocks[last]:
        return out + _ANY_SEGMENTS + "/".join(blocks[last])
    return out + "[^/]+(?:/[^/]+)*"


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(_build(pattern, None, None))


def compile_pattern(
    pattern: str, *, target: str | None = None, field: str | None = None
) -> re.Pattern[str]:
    """Return a regex whose ``fullmatch`` tells whether a relative path matches ``pattern``.

    Raises :class:`BadInput` (code ``InvalidFilePattern``, with ``target`` and
    ``field`` as given) for an empty, absolute, over-long or malformed pattern
    or one with a ``..`` segment.
    """
    if not isinstance(pattern, str):
        raise _bad_pattern(str(pattern), "is not a string", target, field)
    try:
        return _compile(pattern)
    except BadInput as exc:
        exc.target, exc.field = target, field
        raise
    except re.error as exc:
        raise _bad_pattern(pattern, f"is malformed: {exc}", target, field) from exc


def match(pattern: str, relpath: str) -> bool:
    """Return True if ``relpath`` (a normalized 'a/b/c' path) matches ``pattern``.

    Raises :class:`BadInput` as :func:`compile_pattern` does.
    """
    return compile_pattern(pattern).fullmatch(relpath) is not None


def select(pattern: str, relpaths: Iterable[str]) -> list[str]:
    """Return the distinct paths of ``relpaths`` that match ``pattern``, sorted.

    Raises :class:`BadInput` as :func:`compile_pattern` does.
    """
    regex = compile_pattern(pattern)
    return sorted({p for p in relpaths if regex.fullmatch(p)})


def safe_relpath(path: str, *, target: str | None = None, field: str | None = None) -> str:
    """Return ``path`` normalized to 'a/b/c': no '.', no empty segment, no '..' left.

    ``a/../b`` becomes ``b``. Raises :class:`BadInput` (code ``InvalidFilePath``)
    for a non-string, empty, over-long or absolute path, one containing NUL, one
    whose '..' climbs above its start, or one that names the base directory itself.
    """

    def bad(reason: str) -> BadInput:
        return BadInput(
            f"path {path!r} {reason}", code="InvalidFilePath", target=target, field=field
        )

    if not isinstance(path, str) or not path:
        raise BadInput(
            "path must be a non-empty string", code="InvalidFilePath", target=target, field=field
        )
    if len(path) > MAX_PATH_LENGTH:
        raise bad(f"is longer than {MAX_PATH_LENGTH} characters")
    if "\0" in path:
        raise bad("contains NUL")
    if path.startswith("/"):
        raise bad("is absolute: give a path relative to the task directory")
    parts: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if not parts:
                raise bad("climbs out of its base directory with '..'")
            parts.pop()
        else:
            parts.append(seg)
    if not parts:
        raise bad("names the base directory itself, not a file under it")
    return "/".join(parts)
