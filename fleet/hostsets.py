"""Host id rules, node-set ranges such as ``node[01:16]`` and host selection patterns."""

from __future__ import annotations

import fnmatch
import itertools
import re
from collections.abc import Sequence

from fleet.errors import BadInput, NotFound

HOST_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

#: Most names one pattern may expand to; more is almost certainly a typo.
MAX_EXPANSION = 10_000

# Bracket content made only of these characters is a numeric range, not a glob class.
_RANGE_CONTENT_RE = re.compile(r"[0-9,:-]+")
_SLURM_RE = re.compile(r"([0-9]+)-([0-9]+)")
_ANSIBLE_RE = re.compile(r"([0-9]+):([0-9]+)(?::([0-9]+))?")
_GLOB_CHARS = frozenset("*?")


class _Group:
    """The text between one pair of brackets."""

    __slots__ = ("content",)

    def __init__(self, content: str) -> None:
        self.content = content

    @property
    def is_range(self) -> bool:
        return bool(_RANGE_CONTENT_RE.fullmatch(self.content))


def validate_host_id(host_id: str) -> str:
    """Return ``host_id`` unchanged if it is a valid host id.

    Raises BadInput(code="InvalidHostId") unless it matches ``HOST_ID_RE``: a letter or
    digit, then up to 63 letters, digits, ``_``, ``.`` or ``-``.
    """
    if not isinstance(host_id, str) or not HOST_ID_RE.fullmatch(host_id):
        raise BadInput(
            f"invalid host id {host_id!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
            code="InvalidHostId",
            target=str(host_id),
        )
    return host_id


def _bad(pattern: str, reason: str) -> BadInput:
    return BadInput(
        f"invalid host pattern {pattern!r}: {reason}",
        code="InvalidHostPattern",
        target=pattern,
        details={"reason": reason},
    )


def _segments(pattern: str) -> list[str | _Group]:
    """Split ``pattern`` into literal text and bracket groups; raise on unbalanced brackets."""
    out: list[str | _Group] = []
    pos = 0
    while pos < len(pattern):
        opening = pattern.find("[", pos)
        closing = pattern.find("]", pos)
        if opening < 0:
            if closing >= 0:
                raise _bad(pattern, f"unbalanced ']' at position {closing + 1}")
            out.append(pattern[pos:])
            break
        if 0 <= closing < opening:
            raise _bad(pattern, f"unbalanced ']' at position {closing + 1}")
        if opening > pos:
            out.append(pattern[pos:opening])
        end = pattern.find("]", opening + 1)
        if end < 0:
            raise _bad(pattern, f"unbalanced '[' at position {opening + 1}")
        content = pattern[opening + 1 : end]
        if "[" in content:
            raise _bad(pattern, "nested '[' inside a bracket group")
        if not content:
            raise _bad(pattern, "empty brackets '[]'")
        out.append(_Group(content))
        pos = end + 1
    return out


def _range_values(content: str, pattern: str) -> list[str]:
    """Return the names one numeric bracket group stands for, in order, without repeats."""
    spans: list[tuple[int, int, int, int]] = []  # start, end, step, width
    total = 0
    for item in content.split(","):
        if not item:
            raise _bad(pattern, f"empty item in [{content}]")
        if item.isdigit():
            start, end, step, first = int(item), int(item), 1, item
        elif m := _SLURM_RE.fullmatch(item):
            first, last = m.group(1), m.group(2)
            start, end, step = int(first), int(last), 1
        elif m := _ANSIBLE_RE.fullmatch(item):
            first, last = m.group(1), m.group(2)
            start, end, step = int(first), int(last), int(m.group(3) or 1)
            if step < 1:
                raise _bad(pattern, f"stride must be at least 1 in {item!r}")
        else:
            raise _bad(pattern, f"{item!r} is not a number, 'a-b', 'a:b' or 'a:b:step'")
        if end < start:
            raise _bad(pattern, f"range end is below its start in {item!r}")
        width = len(first) if first.startswith("0") and len(first) > 1 else 0
        spans.append((start, end, step, width))
        total += (end - start) // step + 1
        if total > MAX_EXPANSION:
            raise _bad(pattern, f"expands to more than {MAX_EXPANSION} names")
    values = (str(n).zfill(w) for s, e, st, w in spans for n in range(s, e + 1, st))
    return list(dict.fromkeys(values))


def _product(parts: list[list[str]], pattern: str) -> list[str]:
    count = 1
    for options in parts:
        count *= len(options)
    if count > MAX_EXPANSION:
        raise _bad(pattern, f"expands to {count} names, more than {MAX_EXPANSION}")
    return list(dict.fromkeys("".join(combo) for combo in itertools.product(*parts)))


def expand(pattern: str) -> list[str]:
    """Return every name a node-set pattern stands for, in order and without repeats.

    Accepts Ansible ranges ``node[01:16]`` (with optional stride ``[1:10:2]``), Slurm/pdsh
    ranges ``node[1-8]``, lists ``node[1,3,5-7]`` and several groups (``r[1-2]n[1-3]``, the
    cartesian product, leftmost group slowest). Zero padding follows the start bound. A
    name without brackets returns ``[name]``.

    Raises BadInput(code="InvalidHostPattern") for unbalanced brackets, non-numeric
    content, an end below its start, or more than ``MAX_EXPANSION`` names.
    """
    parts: list[list[str]] = []
    for seg in _segments(pattern):
        if isinstance(seg, str):
            parts.append([seg])
        elif not seg.is_range:
            raise _bad(pattern, f"[{seg.content}] is not a numeric range")
        else:
            parts.append(_range_values(seg.content, pattern))
    if not parts:
        raise _bad(pattern, "empty pattern")
    return _product(parts, pattern)


def split_items(pattern: str) -> list[str]:
    """Return the comma-separated items of ``pattern``; commas inside brackets stay put.

    Whitespace around items is dropped and empty items are skipped.
    """
    items: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in pattern:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(depth - 1, 0)
        if ch == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def _item_candidates(item: str) -> tuple[list[str], bool]:
    """Return the names (or glob patterns) an item stands for and whether they are globs."""
    parts: list[list[str]] = []
    is_glob = False
    for seg in _segments(item):
        if isinstance(seg, str):
            is_glob = is_glob or not _GLOB_CHARS.isdisjoint(seg)
            parts.append([seg])
        elif seg.is_range:
            parts.append(_range_values(seg.content, item))
        else:
            is_glob = True
            parts.append([f"[{seg.content}]"])
    return _product(parts, item), is_glob


def select(pattern: str, host_ids: Sequence[str]) -> list[str]:
    """Return the ids in ``host_ids`` that ``pattern`` selects, in inventory order, once each.

    ``pattern`` is a comma-separated list of items. Each item is a literal id, a range
    (``web[1-3]``, ``node[01:16]``: bracket content made only of digits, ``,``, ``-`` and
    ``:``) or an fnmatch glob (``web*``, ``db?``, ``web[ab]``), matched case-sensitively.
    A range may be combined with a glob (``rack[1-2]-*``).

    Raises BadInput(code="InvalidHostPattern") for an empty or malformed pattern, and
    NotFound(code="HostNotFound") when a literal id or range member is not in
    ``host_ids`` or a glob item matches no host.
    """
    items = split_items(pattern)
    if not items:
        raise _bad(pattern, "empty pattern")
    known = set(host_ids)
    chosen: set[str] = set()
    for item in items:
        candidates, is_glob = _item_candidates(item)
        if is_glob:
            regex = re.compile("|".join(f"(?:{fnmatch.translate(c)})" for c in candidates))
            hits = {h for h in host_ids if regex.match(h)}
            if not hits:
                raise NotFound(
                    f"pattern item {item!r} matches no host",
                    code="HostNotFound",
                    target=item,
                    details={"item": item},
                )
            chosen |= hits
            continue
        missing = [c for c in candidates if c not in known]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            origin = f" (from {item!r})" if missing != [item] else ""
            raise NotFound(
                f"no such host: {', '.join(missing[:5])}{more}{origin}",
                code="HostNotFound",
                target=missing[0],
                details={"item": item, "missing": missing},
            )
        chosen.update(candidates)
    return list(dict.fromkeys(h for h in host_ids if h in chosen))
