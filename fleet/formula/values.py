"""The autoscale formula's value types: double, doubleVec, string, timestamp, timeinterval."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

#: 100-nanosecond ticks (.NET's unit, the finest TimeInterval_* constant) in one second.
TICKS_PER_SECOND = 10_000_000
_EPOCH = datetime(1, 1, 1, tzinfo=UTC)
_MIN_TICKS = 0
_MAX_TICKS = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - _EPOCH) // timedelta(
    microseconds=1
) * 10 + 9


class FormulaFault(Exception):
    """A failure inside evaluation, not yet placed at a line and column.

    The evaluator catches it at the node being evaluated and raises the public
    ``BadInput`` (code ``AutoScaleFormulaEvaluationError``) naming that node's position.
    """


@dataclass(frozen=True)
class DoubleVec:
    """A vector of doubles (what GetSample returns), kept as an immutable tuple."""

    items: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, order=True)
class TimeInterval:
    """A span of time in 100 ns ticks (a float, since ``TimeInterval_Second * 1.5`` is allowed)."""

    ticks: float

    @property
    def seconds(self) -> float:
        return self.ticks / TICKS_PER_SECOND


@dataclass(frozen=True, order=True)
class Timestamp:
    """A UTC point in time, in whole 100 ns ticks since 0001-01-01T00:00:00Z (as .NET counts)."""

    ticks: int

    @classmethod
    def from_datetime(cls, moment: datetime) -> Timestamp:
        """Return the timestamp of ``moment``; a naive datetime is taken to be UTC."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return cls((moment - _EPOCH) // timedelta(microseconds=1) * 10)

    def to_datetime(self) -> datetime:
        """Return this timestamp as an aware UTC datetime (rounded down to the microsecond)."""
        return _EPOCH + timedelta(microseconds=self.ticks // 10)

    def member(self, name: str) -> float:
        """Return the member ``year``, ``month``, ``day``, ``weekday`` (0 Sunday .. 6 Saturday,
        as .NET's DayOfWeek), ``hour``, ``minute`` or ``second``; raise FormulaFault otherwise."""
        moment = self.to_datetime()
        members = {
            "year": moment.year,
            "month": moment.month,
            "day": moment.day,
            "weekday": moment.isoweekday() % 7,
            "hour": moment.hour,
            "minute": moment.minute,
            "second": moment.second,
        }
        if name not in members:
            raise FormulaFault(f"a timestamp has no member {name!r} (it has {', '.join(members)})")
        return float(members[name])


def shift(moment: Timestamp, span: TimeInterval, sign: int = 1) -> Timestamp:
    """Return ``moment + sign * span``; raise FormulaFault if it leaves years 1 to 9999."""
    if not math.isfinite(span.ticks):
        raise FormulaFault("a timestamp plus an infinite or undefined time interval")
    ticks = moment.ticks + sign * round(span.ticks)
    if not _MIN_TICKS <= ticks <= _MAX_TICKS:
        raise FormulaFault("the timestamp falls outside the years 1 to 9999")
    return Timestamp(ticks)


@dataclass(frozen=True)
class SampledVariable:
    """A sampled service variable such as ``$CPUPercent``: its name and its timestamped sample
    history, oldest first. Its methods (GetSample, ...) live in samples.py; used as a plain
    value it stands for its most recent sample."""

    name: str
    history: tuple[tuple[Timestamp, float], ...]


#: Every value a formula computes.
Value = float | DoubleVec | str | Timestamp | TimeInterval | SampledVariable


def type_name(value: object) -> str:
    """Return the formula-language name of ``value``'s type, for error messages."""
    if isinstance(value, float):
        return "double"
    if isinstance(value, DoubleVec):
        return "doubleVec"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Timestamp):
        return "timestamp"
    if isinstance(value, TimeInterval):
        return "timeinterval"
    if isinstance(value, SampledVariable):
        return f"sampled variable {value.name}"
    return type(value).__name__


def format_double(number: float) -> str:
    """Return ``number`` as the results text shows it: ``3``, ``2.5``, ``NaN``, ``Infinity``."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == int(number) and abs(number) < 1e15:
        return str(int(number))
    return repr(number)


def format_interval(span: TimeInterval) -> str:
    """Return ``span`` as .NET prints a TimeSpan: ``[-][d.]hh:mm:ss[.fffffff]``."""
    if not math.isfinite(span.ticks):
        return format_double(span.ticks)
    ticks = round(span.ticks)
    sign = "-" if ticks < 0 else ""
    ticks = abs(ticks)
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    text = f"{sign}{f'{days}.' if days else ''}{hour:02d}:{minute:02d}:{second:02d}"
    return f"{text}.{fraction:07d}" if fraction else text


def format_timestamp(moment: Timestamp) -> str:
    """Return ``moment`` in the W3C form the results use: ``2016-10-13T19:18:47.805Z``."""
    text = moment.to_datetime().isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def format_value(value: object) -> str:
    """Return ``value`` as Azure's ``autoScaleRun.results`` text shows it."""
    if isinstance(value, float):
        return format_double(value)
    if isinstance(value, DoubleVec):
        return "[" + ",".join(format_double(x) for x in value.items) + "]"
    if isinstance(value, str):
        return value
    if isinstance(value, Timestamp):
        return format_timestamp(value)
    if isinstance(value, TimeInterval):
        return format_interval(value)
    if isinstance(value, SampledVariable):
        return "[" + ",".join(format_double(v) for _, v in reversed(value.history)) + "]"
    return str(value)
