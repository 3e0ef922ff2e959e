"""A sampled service variable's methods: GetSample, GetSamplePercent, GetSamplePeriod,
Count and HistoryBeginTime, over its timestamped sample history."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

from fleet.formula.values import (
    TICKS_PER_SECOND,
    DoubleVec,
    FormulaFault,
    SampledVariable,
    TimeInterval,
    Timestamp,
    Value,
    format_double,
    shift,
    type_name,
)

#: Azure takes a sample every 30 seconds.
SAMPLE_PERIOD = TimeInterval(30.0 * TICKS_PER_SECOND)


def sampled(
    name: str, history: Iterable[tuple[datetime, float]], now: Timestamp
) -> SampledVariable:
    """Return ``name``'s variable from ``history`` (any order): the samples taken at or before
    ``now``, oldest first. Raises FormulaFault for a value that is not a number."""
    points: list[tuple[Timestamp, float]] = []
    for moment, value in history:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FormulaFault(f"{name}: a sample value must be a number, not {value!r}")
        stamp = Timestamp.from_datetime(moment)
        if stamp <= now:
            points.append((stamp, float(value)))
    points.sort(key=lambda point: point[0])
    return SampledVariable(name, tuple(points))


def latest(variable: SampledVariable) -> float:
    """Return the most recent sample: what the variable means used as a plain value."""
    if not variable.history:
        raise FormulaFault(f"{variable.name} has no samples yet")
    return variable.history[-1][1]


def call_method(variable: SampledVariable, method: str, args: list[Value], now: Timestamp) -> Value:
    """Run ``variable.method(args)``; raise FormulaFault for an unknown method or bad arguments."""
    if method == "GetSample":
        return _get_sample(variable, args, now)
    if method == "GetSamplePercent":
        if len(args) not in (1, 2):
            raise FormulaFault("GetSamplePercent takes (start) or (start, end)")
        start, end = _window(args[0], args[1] if len(args) == 2 else None, now)
        return _percent(variable, start, end)
    if method in ("GetSamplePeriod", "Count", "HistoryBeginTime"):
        if args:
            raise FormulaFault(f"{method} takes no arguments")
        if method == "GetSamplePeriod":
            return SAMPLE_PERIOD
        if method == "Count":
            return float(len(variable.history))
        if not variable.history:
            raise FormulaFault(f"{variable.name} has no samples yet")
        return variable.history[0][0]
    raise FormulaFault(
        f"{variable.name} has no method {method!r} (it has GetSample, GetSamplePercent, "
        "GetSamplePeriod, Count, HistoryBeginTime)"
    )


def _get_sample(variable: SampledVariable, args: list[Value], now: Timestamp) -> DoubleVec:
    if not args or len(args) > 3:
        raise FormulaFault("GetSample takes (count), (start[, percent]) or (start, end[, percent])")
    if isinstance(args[0], float):
        if len(args) != 1:
            raise FormulaFault("GetSample(count) takes one argument")
        return _last(variable, args[0])
    end: Value | None = None
    percent: Value | None = None
    if len(args) == 2:
        if isinstance(args[1], float):
            percent = args[1]
        else:
            end = args[1]
    elif len(args) == 3:
        end, percent = args[1], args[2]
    start_at, end_at = _window(args[0], end, now)
    values = _between(variable, start_at, end_at)
    if percent is not None:
        if not isinstance(percent, float):
            raise FormulaFault(f"GetSample's percent must be a double, not {type_name(percent)}")
        have = _percent(variable, start_at, end_at)
        if have < percent:
            raise FormulaFault(
                f"insufficient data from data set: {variable.name} wanted "
                f"{_pct(percent)}%, received {_pct(have)}%"
            )
    return DoubleVec(tuple(values))


def _last(variable: SampledVariable, count: float) -> DoubleVec:
    """The ``count`` most recent samples, newest first (fewer if the history is shorter)."""
    if not math.isfinite(count) or count < 0 or count != int(count):
        raise FormulaFault(f"GetSample's count must be a whole number >= 0, not {count!r}")
    newest = variable.history[::-1][: int(count)]
    return DoubleVec(tuple(value for _, value in newest))


def _window(start: Value, end: Value | None, now: Timestamp) -> tuple[Timestamp, Timestamp]:
    """Turn GetSample's bounds into (earliest, latest) timestamps. A timeinterval counts back
    from ``now``; a missing end means ``now``; the two bounds may come in either order."""
    first = _moment(start, now, "start")
    second = now if end is None else _moment(end, now, "end")
    return (first, second) if first <= second else (second, first)


def _moment(bound: Value, now: Timestamp, which: str) -> Timestamp:
    if isinstance(bound, Timestamp):
        return bound
    if isinstance(bound, TimeInterval):
        return shift(now, bound, -1)
    raise FormulaFault(
        f"a sample window's {which} must be a timeinterval or a timestamp, not {type_name(bound)}"
    )


def _between(variable: SampledVariable, start: Timestamp, end: Timestamp) -> list[float]:
    """Samples taken after ``start`` and up to ``end``, newest first."""
    return [value for stamp, value in reversed(variable.history) if start < stamp <= end]


def _percent(variable: SampledVariable, start: Timestamp, end: Timestamp) -> float:
    """The share (0-100) of the samples expected in the window, one per period, that exist."""
    span = end.ticks - start.ticks
    if span <= 0:
        return 100.0
    expected = max(1, math.floor(span / SAMPLE_PERIOD.ticks))
    have = len(_between(variable, start, end))
    return min(100.0, 100.0 * have / expected)


def _pct(number: float) -> str:
    return format_double(round(number, 1)) if math.isfinite(number) else format_double(number)
