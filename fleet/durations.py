"""ISO 8601 durations (``PT1H30M``, ``P7D``) as Azure Batch JSON writes them, to and from seconds."""

from __future__ import annotations

import re

from fleet.errors import BadInput

_NUMBER = r"\d+(?:\.\d+)?"
_DURATION = re.compile(
    rf"P(?!\Z)(?:(?P<days>{_NUMBER})D)?"
    rf"(?:T(?=\d)(?:(?P<hours>{_NUMBER})H)?(?:(?P<minutes>{_NUMBER})M)?"
    rf"(?:(?P<seconds>{_NUMBER})S)?)?"
)
#: Azure's "unlimited" (TimeSpan.MaxValue) as it appears in REST JSON.
UNLIMITED = "P10675199DT2H48M5.4775807S"
#: Finite durations must be shorter than this (about 31 years): the node agent refuses
#: longer wall-clock limits, so a longer one would be a task that can never start.
MAX_SECONDS = 1e9


def parse(text: str, *, field: str = "duration", target: str | None = None) -> float | None:
    """Return the duration in seconds, or None for Azure's unlimited value.

    Raises BadInput (code ``InvalidDuration``) for anything else than ``PnDTnHnMnS``, and
    for a finite duration of ``MAX_SECONDS`` or more.
    """
    if not isinstance(text, str):
        raise BadInput(
            f"expected an ISO 8601 duration such as PT1H30M, got {text!r}",
            code="InvalidDuration",
            field=field,
            target=target,
        )
    if text == UNLIMITED:
        return None
    match = _DURATION.fullmatch(text.strip().upper())
    if not match:
        raise BadInput(
            f"{text!r} is not an ISO 8601 duration such as PT1H30M or P7D",
            code="InvalidDuration",
            field=field,
            target=target,
        )
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    seconds = (
        parts.get("days", 0) * 86400
        + parts.get("hours", 0) * 3600
        + parts.get("minutes", 0) * 60
        + parts.get("seconds", 0)
    )
    if not seconds < MAX_SECONDS:
        raise BadInput(
            f"{text!r} is too long: a duration must be shorter than {MAX_SECONDS:.0f} seconds "
            f"(about 31 years); write {UNLIMITED} for no limit",
            code="InvalidDuration",
            field=field,
            target=target,
        )
    return seconds


def format_seconds(seconds: float) -> str:
    """Return ``seconds`` as an ISO 8601 duration, e.g. 5400 -> ``PT1H30M``; fractions of a
    second keep Azure's precision (7 digits, 100 ns), never in exponent notation."""
    days, rest = divmod(round(seconds, 7), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    out = "P" + (f"{int(days)}D" if days else "")
    time = (f"{int(hours)}H" if hours else "") + (f"{int(minutes)}M" if minutes else "")
    text = f"{secs:.7f}".rstrip("0").rstrip(".")
    if text != "0":
        time += f"{text}S"
    if time:
        out += "T" + time
    return out if out != "P" else "PT0S"
