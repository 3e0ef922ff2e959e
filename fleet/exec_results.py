"""What ``fleet exec`` got from each host, grouped by identical outcome, and printed.

Stdlib only: a warm ``fleet exec`` prints the controller's results with this module
alone, a cold one the results it got itself, so both print the same bytes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import IO, Any, NamedTuple


class HostResult(NamedTuple):
    """What one host did with the command (a NamedTuple: see fleet/settings.py)."""

    host: str
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    error: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "exitCode": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostResult:
        """Return the result that ``to_dict`` gave ``data``."""
        return cls(data["host"], data["exitCode"], data["stdout"], data["stderr"], data["error"])


class Group(NamedTuple):
    """Hosts that produced the same outcome, and that outcome as text."""

    hosts: list[str]
    label: str
    text: str


def group_identical(results: Sequence[HostResult]) -> list[Group]:
    """Return results grouped by identical outcome (exit code, output, error), largest first."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for r in results:
        err = r.error["message"] if r.error else None
        groups.setdefault((r.exit_code, r.stdout, r.stderr, err), []).append(r.host)
    out = []
    for (code, out_text, err_text, err), hosts in groups.items():
        status = f"error: {err}" if err else f"exit {code}"
        text = out_text + (f"[stderr]\n{err_text}" if err_text else "")
        out.append(Group(hosts, f"{fold(hosts)} ({len(hosts)}) {status}", text))
    return sorted(out, key=lambda g: -len(g.hosts))


def write(results: Sequence[HostResult], as_json: bool, out: IO[str]) -> None:
    """Write ``results`` to ``out``: a JSON array of ``to_dict`` objects, or each group of
    identical outcomes under a ``---- hosts (count) status ----`` line (bold on a
    terminal), with the hosts' output exactly as they wrote it."""
    if as_json:
        out.write(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
        return
    bold = out.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
    for group in group_identical(results):
        header = f"---- {group.label} ----"
        out.write(f"\x1b[1m{header}\x1b[0m\n" if bold else header + "\n")
        out.write(group.text if group.text.endswith("\n") or not group.text else group.text + "\n")


_NUMBERED = re.compile(r"(.*?)(\d+)")


def fold(names: Sequence[str]) -> str:
    """Return host names folded into ranges: node01,node02,node03,web -> node[01-03],web."""
    by_prefix: dict[tuple[str, int], list[int]] = {}
    plain: list[str] = []
    for name in names:
        m = _NUMBERED.fullmatch(name)
        if m:
            by_prefix.setdefault((m.group(1), len(m.group(2))), []).append(int(m.group(2)))
        else:
            plain.append(name)
    parts = []
    for (prefix, width), nums in by_prefix.items():
        nums.sort()
        spans, start, prev = [], nums[0], nums[0]
        for n in nums[1:] + [None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            spans.append(
                f"{start:0{width}d}" if start == prev else f"{start:0{width}d}-{prev:0{width}d}"
            )
            if n is not None:
                start = prev = n
        parts.append(f"{prefix}{spans[0]}" if len(nums) == 1 else f"{prefix}[{','.join(spans)}]")
    return ",".join(parts + plain)
