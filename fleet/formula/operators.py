"""The formula operators over its types, following Azure's operation table.

    double       + - * /   double        -> double
    double       *         timeinterval  -> timeinterval
    doubleVec    + - * /   double        -> doubleVec   (and double op doubleVec: fleet's choice)
    doubleVec    + - * /   doubleVec     -> doubleVec   (element by element, equal lengths)
    timeinterval * /       double        -> timeinterval
    timeinterval + -       timeinterval  -> timeinterval
    timeinterval +         timestamp     -> timestamp   (and timestamp + timeinterval)
    timestamp    -         timestamp     -> timeinterval
    timestamp    -         timeinterval  -> timestamp   (fleet's choice: Azure lists only +)
    - double, ! double -> double;  - timeinterval -> timeinterval
    double, string, timestamp, timeinterval: < <= == >= > != between two of the same type
    double && || double -> double (1 or 0)

A sampled variable used as an operand stands for its latest sample (a double).
Anything else is a type error; dividing by zero is an error, never infinity.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from fleet.formula.samples import latest
from fleet.formula.values import (
    DoubleVec,
    FormulaFault,
    SampledVariable,
    TimeInterval,
    Timestamp,
    Value,
    shift,
    type_name,
)

_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}
_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    ">=": operator.ge,
    ">": operator.gt,
    "!=": operator.ne,
}


def plain(value: Value) -> Value:
    """Return ``value``, with a sampled variable replaced by its latest sample."""
    return latest(value) if isinstance(value, SampledVariable) else value


def truth(value: Value, role: str) -> bool:
    """Return whether a double is true (nonzero); raise FormulaFault for any other type."""
    value = plain(value)
    if not isinstance(value, float):
        raise FormulaFault(f"{role} must be a double, not {type_name(value)}")
    return value != 0.0


def unary(op: str, value: Value) -> Value:
    """Return ``op value`` for ``-`` and ``!``."""
    value = plain(value)
    if isinstance(value, float):
        return -value if op == "-" else float(value == 0.0)
    if op == "-" and isinstance(value, TimeInterval):
        return TimeInterval(-value.ticks)
    raise FormulaFault(f"operator {op} does not apply to a {type_name(value)}")


def binary(op: str, left: Value, right: Value) -> Value:
    """Return ``left op right`` for the arithmetic and comparison operators."""
    left, right = plain(left), plain(right)
    if op in _COMPARISONS:
        return _compare(op, left, right)
    result = _arithmetic(op, left, right)
    if result is None:
        raise FormulaFault(
            f"operator {op} does not apply to a {type_name(left)} and a {type_name(right)}"
        )
    return result


def _compare(op: str, left: Value, right: Value) -> float:
    comparable = (float, str, Timestamp, TimeInterval)
    for kind in comparable:
        if isinstance(left, kind) and isinstance(right, kind):
            return float(_COMPARISONS[op](left, right))
    raise FormulaFault(f"cannot compare a {type_name(left)} with a {type_name(right)}")


def _divide(left: float, right: float) -> float:
    if right == 0.0:
        raise FormulaFault("division by zero")
    return left / right


def _numbers(op: str, left: float, right: float) -> float:
    return _divide(left, right) if op == "/" else _ARITHMETIC[op](left, right)


def _arithmetic(op: str, left: Value, right: Value) -> Value | None:
    if isinstance(left, float) and isinstance(right, float):
        return _numbers(op, left, right)
    if isinstance(left, DoubleVec) or isinstance(right, DoubleVec):
        return _vector(op, left, right)
    if isinstance(left, TimeInterval) or isinstance(right, TimeInterval):
        return _time(op, left, right)
    if isinstance(left, Timestamp) and isinstance(right, Timestamp) and op == "-":
        return TimeInterval(float(left.ticks - right.ticks))
    return None


def _vector(op: str, left: Value, right: Value) -> DoubleVec | None:
    if isinstance(left, DoubleVec) and isinstance(right, DoubleVec):
        if len(left) != len(right):
            raise FormulaFault(
                f"operator {op} needs doubleVecs of one length, not {len(left)} and {len(right)}"
            )
        pairs = zip(left.items, right.items, strict=True)
        return DoubleVec(tuple(_numbers(op, a, b) for a, b in pairs))
    if isinstance(left, DoubleVec) and isinstance(right, float):
        return DoubleVec(tuple(_numbers(op, a, right) for a in left.items))
    if isinstance(left, float) and isinstance(right, DoubleVec):
        return DoubleVec(tuple(_numbers(op, left, b) for b in right.items))
    return None


def _time(op: str, left: Value, right: Value) -> Value | None:
    if isinstance(left, TimeInterval) and isinstance(right, TimeInterval) and op in "+-":
        return TimeInterval(_ARITHMETIC[op](left.ticks, right.ticks))
    if isinstance(left, TimeInterval) and isinstance(right, float) and op in "*/":
        return TimeInterval(_numbers(op, left.ticks, right))
    if isinstance(left, float) and isinstance(right, TimeInterval) and op == "*":
        return TimeInterval(left * right.ticks)
    if isinstance(left, Timestamp) and isinstance(right, TimeInterval) and op in "+-":
        return shift(left, right, 1 if op == "+" else -1)
    if isinstance(left, TimeInterval) and isinstance(right, Timestamp) and op == "+":
        return shift(right, left)
    return None
