"""Evaluate a parsed formula against the service variables' values at a given time."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleet.errors import BadInput
from fleet.formula import syntax as ast
from fleet.formula.functions import CallContext, Stop, call_function
from fleet.formula.lexer import FIELD
from fleet.formula.operators import binary, plain, truth, unary
from fleet.formula.samples import call_method, sampled
from fleet.formula.values import (
    FormulaFault,
    SampledVariable,
    Timestamp,
    Value,
    format_value,
    type_name,
)
from fleet.formula.variables import (
    CONSTANTS,
    DEALLOCATION,
    DEALLOCATION_OPTIONS,
    PLAIN,
    PLAIN_ALIASES,
    SAMPLED,
    SERVICE,
    TARGET_DEDICATED,
    TARGET_LOW_PRIORITY,
    WRITABLE,
    WRITABLE_ALIASES,
)

EVALUATION_ERROR = "AutoScaleFormulaEvaluationError"

#: What a caller may give for a service variable: a number, a deallocation option, or a
#: sample history of (time, value) pairs.
Input = float | int | str | Sequence[tuple[datetime, float]]


@dataclass(frozen=True)
class Evaluation:
    """The outcome of one evaluation.

    ``variables`` holds every variable's final value, service and user-defined.
    ``target_dedicated_nodes`` and ``target_low_priority_nodes`` are the targets truncated
    to whole nodes and clamped at 0. ``node_deallocation_option`` is None when neither the
    formula nor the inputs set it (Azure then uses ``requeue``). ``results`` is the text
    Azure shows as ``autoScaleRun.results``. ``stopped`` says whether ``stop()`` ended it.
    """

    variables: dict[str, Value]
    target_dedicated_nodes: int
    target_low_priority_nodes: int
    node_deallocation_option: str | None
    results: str
    stopped: bool = False


def evaluation_error(message: str, node: ast.Node | None) -> BadInput:
    """Return the BadInput for a formula that fails while it runs, naming where."""
    line, column = (node.line, node.column) if node else (1, 1)
    return BadInput(
        f"line {line}, column {column}: {message}",
        code=EVALUATION_ERROR,
        field=FIELD,
        details={"line": line, "column": column},
    )


def evaluate(
    formula: ast.Formula,
    inputs: Mapping[str, Input],
    now: datetime,
    rng: random.Random | None = None,
) -> Evaluation:
    """Run ``formula`` at time ``now`` (naive means UTC) with the service variables in
    ``inputs`` and return its Evaluation. ``rng`` feeds ``rand()``.

    Raises BadInput with code AutoScaleFormulaEvaluationError naming the line and column
    of the failing expression, or code InvalidInput for inputs that do not fit.
    """
    moment = Timestamp.from_datetime(now)
    run = _Run(_service_values(inputs, moment), CallContext(moment, rng or random.Random()))
    stopped = False
    try:
        for statement in formula.statements:
            run.statement(statement)
    except Stop:
        stopped = True
    return _outcome(run, stopped)


def _service_values(inputs: Mapping[str, Input], now: Timestamp) -> dict[str, Value]:
    """The service variables' starting values: the inputs, and defaults for the rest."""
    values: dict[str, Value] = {name: SampledVariable(name, ()) for name in SAMPLED}
    values.update(PLAIN)
    for name, given in inputs.items():
        if name not in SERVICE or name in PLAIN_ALIASES or name in WRITABLE_ALIASES:
            raise BadInput(f"{name} is not a service variable fleet knows", field="inputs")
        values[name] = _input_value(name, given, now)
    values.setdefault(TARGET_DEDICATED, values["$CurrentDedicatedNodes"])
    values.setdefault(TARGET_LOW_PRIORITY, values["$CurrentLowPriorityNodes"])
    for alias, name in PLAIN_ALIASES.items():
        values[alias] = values[name]
    for alias, name in WRITABLE_ALIASES.items():
        values[alias] = values[name]
    return values


def _input_value(name: str, given: Any, now: Timestamp) -> Value:
    if name == DEALLOCATION:
        if given not in DEALLOCATION_OPTIONS:
            raise BadInput(
                f"{name} must be one of {', '.join(DEALLOCATION_OPTIONS)}", field="inputs"
            )
        return str(given)
    if isinstance(given, int | float) and not isinstance(given, bool):
        if not math.isfinite(given):
            raise BadInput(f"{name} must be a finite number, not {given!r}", field="inputs")
        return float(given)
    if name in SAMPLED and isinstance(given, Sequence) and not isinstance(given, str):
        try:
            return sampled(name, given, now)
        except (FormulaFault, TypeError, ValueError, AttributeError) as exc:
            raise BadInput(
                f"{name}: not a list of (time, value) samples: {exc}", field="inputs"
            ) from exc
    raise BadInput(f"{name}: {given!r} is not a value fleet can give this variable", field="inputs")


class _Run:
    """The state of one evaluation: the variables so far, and what was assigned."""

    def __init__(self, service: dict[str, Value], context: CallContext) -> None:
        self.variables: dict[str, Value] = dict(service)
        self.assigned: set[str] = set()
        self.user: list[str] = []
        self.context = context

    def statement(self, statement: ast.Statement) -> None:
        value = self.expr(statement.value)
        if isinstance(statement, ast.ExprStatement):
            return
        name = statement.name
        value = self._checked(name, value, statement)
        if name not in SERVICE and name not in self.variables:
            self.user.append(name)
        self.variables[name] = value
        self.assigned.add(name)

    def _checked(self, name: str, value: Value, where: ast.Node) -> Value:
        """Check what a writable service variable receives."""
        if name == DEALLOCATION:
            if value not in DEALLOCATION_OPTIONS:
                raise evaluation_error(
                    f"{name} must be one of {', '.join(DEALLOCATION_OPTIONS)}, not "
                    f"{format_value(value) if isinstance(value, str) else type_name(value)}",
                    where,
                )
        elif name in WRITABLE or name in WRITABLE_ALIASES:
            value = self._plain(value, where)
            if not isinstance(value, float):
                raise evaluation_error(f"{name} must be a double, not {type_name(value)}", where)
            if not math.isfinite(value):
                raise evaluation_error(f"{name} must be a finite number, not {value!r}", where)
        return value

    def _plain(self, value: Value, where: ast.Node) -> Value:
        try:
            return plain(value)
        except FormulaFault as fault:
            raise evaluation_error(str(fault), where) from None

    def expr(self, node: ast.Expr) -> Value:
        try:
            return self._expr(node)
        except FormulaFault as fault:
            raise evaluation_error(str(fault), node) from None

    def _expr(self, node: ast.Expr) -> Value:
        if isinstance(node, ast.Number):
            return node.value
        if isinstance(node, ast.String):
            return node.value
        if isinstance(node, ast.Name):
            return self._lookup(node.name)
        if isinstance(node, ast.Unary):
            return unary(node.op, self.expr(node.operand))
        if isinstance(node, ast.Binary):
            return self._binary(node)
        if isinstance(node, ast.Conditional):
            chosen = truth(self.expr(node.condition), "the condition of ?:")
            return self.expr(node.then if chosen else node.otherwise)
        if isinstance(node, ast.Call):
            args = [self.expr(arg) for arg in node.args]
            return call_function(node.function, args, self.context)
        if isinstance(node, ast.Member):
            target = plain(self.expr(node.target))
            if not isinstance(target, Timestamp):
                raise FormulaFault(f"a {type_name(target)} has no member {node.member!r}")
            return target.member(node.member)
        target = self.expr(node.target)
        args = [self.expr(arg) for arg in node.args]
        if not isinstance(target, SampledVariable):
            raise FormulaFault(
                f"{node.method}() is a method of sampled variables, not of a {type_name(target)}"
            )
        return call_method(target, node.method, args, self.context.now)

    def _binary(self, node: ast.Binary) -> Value:
        if node.op in ("&&", "||"):
            left = truth(self.expr(node.left), f"the left side of {node.op}")
            if left == (node.op == "||"):
                return float(left)
            return float(truth(self.expr(node.right), f"the right side of {node.op}"))
        return binary(node.op, self.expr(node.left), self.expr(node.right))

    def _lookup(self, name: str) -> Value:
        if name in self.variables:
            return self.variables[name]
        if name in CONSTANTS:
            return CONSTANTS[name]
        raise FormulaFault(f"unknown variable {name}")


def _outcome(run: _Run, stopped: bool) -> Evaluation:
    variables = run.variables
    dedicated = _target(run, TARGET_DEDICATED)
    low_priority = _target(run, TARGET_LOW_PRIORITY)
    option = variables.get(DEALLOCATION)
    deallocation = option if isinstance(option, str) else None
    shown: list[tuple[str, Value]] = [
        (TARGET_DEDICATED, float(dedicated)),
        (TARGET_LOW_PRIORITY, float(low_priority)),
        (DEALLOCATION, deallocation or "requeue"),
    ]
    shown += [(name, variables[name]) for name in sorted(run.user)]
    results = ";".join(f"{name}={format_value(value)}" for name, value in shown)
    return Evaluation(variables, dedicated, low_priority, deallocation, results, stopped)


def _target(run: _Run, name: str) -> int:
    """A target's final value: the full name's if the formula set it, else its alias's;
    truncated to whole nodes (as Azure does: 2.9 nodes is 2) and clamped at 0."""
    alias = next(a for a, full in WRITABLE_ALIASES.items() if full == name)
    chosen = alias if alias in run.assigned and name not in run.assigned else name
    value = run.variables[chosen]
    number = value if isinstance(value, float) else 0.0
    return max(0, math.trunc(number))
