"""The formula's built-in functions: avg, ceil, floor, histogram, len, lg, ln, log, max, min,
norm, percentile, rand, range, round, std, stop, sum, time, val.

A ``doubleVecList`` argument is any comma-separated mix of doubles and doubleVecs, flattened
into one vector before the function runs: ``avg(v, 7)`` is ``avg(1, 2, 3, 7)`` when
``v = [1, 2, 3]``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from fleet.formula.operators import plain
from fleet.formula.values import (
    DoubleVec,
    FormulaFault,
    TimeInterval,
    Timestamp,
    Value,
    shift,
    type_name,
)

#: Most bins histogram() may be asked for.
MAX_BINS = 10_000


Function = Callable[[list[Value], str, "CallContext"], Value]


class Stop(Exception):
    """Raised by ``stop()``: evaluation ends here and keeps what it has assigned so far."""


@dataclass(frozen=True)
class CallContext:
    """What a function may read besides its arguments: the evaluation time and a random source."""

    now: Timestamp
    rng: random.Random


def flatten(args: list[Value], function: str) -> list[float]:
    """Return a doubleVecList's values as one list; raise FormulaFault for other types."""
    out: list[float] = []
    for arg in args:
        arg = plain(arg)
        if isinstance(arg, float):
            out.append(arg)
        elif isinstance(arg, DoubleVec):
            out.extend(arg.items)
        else:
            raise FormulaFault(f"{function}() takes doubles and doubleVecs, not a {type_name(arg)}")
    return out


def _nonempty(values: list[float], function: str) -> list[float]:
    if not values:
        raise FormulaFault(f"{function}() of an empty list")
    return values


def _whole(number: float, function: str, what: str) -> int:
    if not math.isfinite(number) or number != int(number):
        raise FormulaFault(f"{function}()'s {what} must be a whole number, not {number!r}")
    return int(number)


def _aggregate(reduce: Callable[[list[float]], float], empty_ok: bool = False) -> Function:
    """A function from a doubleVecList to one double."""

    def run(args: list[Value], name: str, _context: CallContext) -> Value:
        values = flatten(args, name)
        return float(reduce(values if empty_ok else _nonempty(values, name)))

    return run


def _elementwise(apply: Callable[[float], float]) -> Function:
    """A function that maps one double to a double, or a doubleVecList to a doubleVec."""

    def run(args: list[Value], name: str, _context: CallContext) -> Value:
        if not args:
            raise FormulaFault(f"{name}() needs an argument")
        if len(args) == 1 and isinstance(plain(args[0]), float):
            return apply(flatten(args, name)[0])
        return DoubleVec(tuple(apply(x) for x in flatten(args, name)))

    return run


def _logarithm(base: float | None, label: str) -> Callable[[float], float]:
    def apply(x: float) -> float:
        if math.isnan(x):
            return x
        if x <= 0:
            raise FormulaFault(f"{label} of {x!r}: the logarithm needs a number above zero")
        if math.isinf(x):
            return x
        return math.log(x) if base is None else math.log2(x) if base == 2 else math.log10(x)

    return apply


def _rounding(rule: Callable[[float], float]) -> Callable[[float], float]:
    return lambda x: x if not math.isfinite(x) else float(rule(x))


def _round_half_away(x: float) -> float:
    """Round to the nearest whole number, halves away from zero (as C's round)."""
    whole = math.floor(abs(x))
    return math.copysign(whole + 1 if abs(x) - whole >= 0.5 else whole, x)


def _total(values: Iterable[float]) -> float:
    """The exactly rounded sum, or the plain sum where infinities make fsum refuse."""
    values = list(values)
    try:
        return math.fsum(values)
    except (ValueError, OverflowError):
        return sum(values)


def _std(values: list[float]) -> float:
    """The sample standard deviation (n - 1); one value has no spread, so 0."""
    if len(values) < 2:
        return 0.0
    mean = _total(values) / len(values)
    return math.sqrt(_total((x - mean) * (x - mean) for x in values) / (len(values) - 1))


def _percentile(args: list[Value], name: str, _context: CallContext) -> Value:
    if len(args) != 2:
        raise FormulaFault("percentile() takes (doubleVec v, double p)")
    values = sorted(_nonempty(flatten([args[0]], name), name))
    p = plain(args[1])
    if not isinstance(p, float) or not 0 <= p <= 100:
        raise FormulaFault(f"percentile()'s p must be a double from 0 to 100, not {p!r}")
    rank = max(1, math.ceil(p / 100 * len(values)))
    return values[rank - 1]


def _histogram(args: list[Value], name: str, _context: CallContext) -> Value:
    if len(args) != 2:
        raise FormulaFault("histogram() takes (doubleVec v, double bins)")
    values = flatten([args[0]], name)
    bins_arg = plain(args[1])
    if not isinstance(bins_arg, float):
        raise FormulaFault(f"histogram()'s bins must be a double, not {type_name(bins_arg)}")
    bins = _whole(bins_arg, name, "bins")
    if not 1 <= bins <= MAX_BINS:
        raise FormulaFault(f"histogram()'s bins must be from 1 to {MAX_BINS}, not {bins}")
    counts = [0.0] * bins
    finite = [x for x in values if math.isfinite(x)]
    if finite:
        low, high = min(finite), max(finite)
        width = (high - low) / bins
        for x in finite:
            index = bins - 1 if width == 0 or x == high else int((x - low) / width)
            counts[min(index, bins - 1)] += 1
    return DoubleVec(tuple(counts))


def _val(args: list[Value], name: str, _context: CallContext) -> Value:
    if len(args) != 2:
        raise FormulaFault("val() takes (doubleVec v, double i)")
    values = flatten([args[0]], name)
    index_arg = plain(args[1])
    if not isinstance(index_arg, float):
        raise FormulaFault(f"val()'s index must be a double, not {type_name(index_arg)}")
    index = _whole(index_arg, name, "index")
    if not 0 <= index < len(values):
        raise FormulaFault(f"val() index {index} is outside a vector of length {len(values)}")
    return values[index]


def _rand(args: list[Value], _name: str, context: CallContext) -> Value:
    if args:
        raise FormulaFault("rand() takes no arguments")
    return context.rng.random()


def _stop(args: list[Value], _name: str, _context: CallContext) -> Value:
    if args:
        raise FormulaFault("stop() takes no arguments")
    raise Stop


def _time(args: list[Value], _name: str, context: CallContext) -> Value:
    if not args:
        return context.now
    if len(args) != 1 or not isinstance(args[0], str):
        raise FormulaFault("time() takes no argument or one string (W3C-DTF or RFC 1123)")
    return parse_time(args[0], context.now)


def parse_time(text: str, now: Timestamp) -> Timestamp:
    """Return the timestamp a W3C-DTF or RFC 1123 string names; ``""`` means ``now``.
    A W3C-DTF string without a zone is taken to be UTC."""
    text = text.strip()
    if not text:
        return now
    moment: datetime | None = None
    if text[:4].isdigit():
        iso = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
        if len(iso) == 4:
            iso += "-01-01"
        elif len(iso) == 7:
            iso += "-01"
        try:
            moment = datetime.fromisoformat(iso)
        except ValueError:
            moment = None
    else:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            moment = None
    if moment is None:
        raise FormulaFault(f"time({text!r}): not a W3C-DTF or RFC 1123 date and time")
    stamp = Timestamp.from_datetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return shift(stamp, TimeInterval(0.0))


FUNCTIONS: dict[str, Function] = {
    "avg": _aggregate(lambda v: _total(v) / len(v)),
    "ceil": _elementwise(_rounding(math.ceil)),
    "floor": _elementwise(_rounding(math.floor)),
    "histogram": _histogram,
    "len": _aggregate(len, empty_ok=True),
    "lg": _elementwise(_logarithm(2, "lg")),
    "ln": _elementwise(_logarithm(None, "ln")),
    "log": _elementwise(_logarithm(10, "log")),
    "max": _aggregate(max),
    "min": _aggregate(min),
    "norm": _aggregate(lambda v: math.sqrt(_total(x * x for x in v)), empty_ok=True),
    "percentile": _percentile,
    "rand": _rand,
    "range": _aggregate(lambda v: max(v) - min(v)),
    "round": _elementwise(_rounding(_round_half_away)),
    "std": _aggregate(_std),
    "stop": _stop,
    "sum": _aggregate(_total, empty_ok=True),
    "time": _time,
    "val": _val,
}


def call_function(name: str, args: list[Value], context: CallContext) -> Value:
    """Run built-in function ``name``; raise FormulaFault if there is none or the arguments
    do not fit, and Stop for ``stop()``."""
    function = FUNCTIONS.get(name)
    if function is None:
        raise FormulaFault(f"unknown function {name!r}")
    return function(args, name, context)
