"""ISO 8601 durations (``PT1H30M``, ``P7D``) as Azure Batch JSON writes them, to and from seconds."""

from __future__ import annotations

import re

from fleet.errors import BadInput

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)
#: Azure's "unlimited" (TimeSpan.MaxValue) as it appears in REST JSON.
UNLIMITED = "P10675199DT2H48M5.4775807S"


def parse(text: str, *, field: str = "duration", target: str | None = None) -> float | None:
    """Return the duration in seconds, or None for Azure's unlimited value.

    Raises BadInput (code ``InvalidDuration``) for anything else than ``PnDTnHnMnS``.
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
    match = _DURATION.match(text.strip().upper())
    if not match:
        raise BadInput(
            f"{text!r} is not an ISO 8601 duration such as PT1H30M or P7D",
            code="InvalidDuration",
            field=field,
            target=target,
        )
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return (
        parts.get("days", 0) * 86400
        + parts.get("hours", 0) * 3600
        + parts.get("minutes", 0) * 60
        + parts.get("seconds", 0)
    )


def format_seconds(seconds: float) -> str:
    """Return ``seconds`` as an ISO 8601 duration, e.g. 5400 -> ``PT1H30M``."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    out = "P" + (f"{int(days)}D" if days else "")
    time = (f"{int(hours)}H" if hours else "") + (f"{int(minutes)}M" if minutes else "")
    if secs:
        time += f"{secs:g}S"
    if time:
        out += "T" + time
    return out if out != "P" else "PT0S"
