"""Properties of the autoscale formula language, checked with Hypothesis: printing and
parsing round-trip, arithmetic matches Python, and no text makes it fail any other way
than BadInput or take long."""

from __future__ import annotations

import contextlib
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.errors import BadInput
from fleet.formula import DoubleVec, evaluate, format_formula, parse
from fleet.formula import syntax as ast
from fleet.formula.parser import LEVELS

NOW = datetime(2024, 3, 4, 12, 34, 56, tzinfo=UTC)
INPUTS: dict[str, Any] = {
    "$PendingTasks": [(NOW - timedelta(seconds=30 * i), float(i % 5)) for i in range(12)],
    "$CPUPercent": [(NOW - timedelta(seconds=30 * i), 0.25 * i) for i in range(3)],
    "$CurrentDedicatedNodes": 3,
}
FAST = settings(max_examples=200, deadline=timedelta(seconds=2))

# syntax trees

names = st.sampled_from(["a", "b", "$x", "$CPUPercent", "TimeInterval_Minute", "requeue"])
numbers = st.floats(min_value=0, allow_nan=False, allow_infinity=False)
strings = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=8)
binary_ops = st.sampled_from([op for level in LEVELS for op in level])
atoms = st.one_of(
    numbers.map(ast.Number),
    strings.map(ast.String),
    names.map(ast.Name),
)


def _compound(children: st.SearchStrategy[ast.Expr]) -> st.SearchStrategy[ast.Expr]:
    args = st.lists(children, max_size=3).map(tuple)
    return st.one_of(
        st.builds(ast.Unary, st.sampled_from(["-", "!"]), children),
        st.builds(ast.Binary, binary_ops, children, children),
        st.builds(ast.Conditional, children, children, children),
        st.builds(ast.Call, st.sampled_from(["avg", "max", "time", "f"]), args),
        st.builds(ast.Member, children, st.sampled_from(["hour", "weekday", "e5"])),
        st.builds(ast.MethodCall, children, st.sampled_from(["GetSample", "Count"]), args),
    )


expressions = st.recursive(atoms, _compound, max_leaves=12)
statements = st.one_of(
    st.builds(ast.Assignment, st.sampled_from(["a", "$b", "$TargetDedicatedNodes"]), expressions),
    st.builds(ast.ExprStatement, expressions),
)
formulas = st.lists(statements, min_size=1, max_size=4).map(lambda s: ast.Formula(tuple(s)))


@FAST
@given(formulas)
def test_printing_a_tree_and_parsing_the_text_gives_the_tree_back(tree: ast.Formula) -> None:
    assert parse(format_formula(tree)) == tree


@FAST
@given(formulas)
def test_printed_text_prints_the_same_again(tree: ast.Formula) -> None:
    text = format_formula(tree)
    assert format_formula(parse(text)) == text


# arithmetic against Python

finite = st.floats(allow_nan=False, allow_infinity=False)


def _literal(number: float) -> str:
    return f"({number!r})"


def _x(text: str) -> Any:
    return evaluate(parse(text), {}, NOW).variables["x"]


@FAST
@given(finite, finite, st.sampled_from(["+", "-", "*", "/"]))
def test_arithmetic_on_doubles_matches_python(left: float, right: float, op: str) -> None:
    text = f"x = {_literal(left)} {op} {_literal(right)};"
    if op == "/" and right == 0:
        try:
            _x(text)
        except BadInput as error:
            assert error.code == "AutoScaleFormulaEvaluationError"
            return
        raise AssertionError("dividing by zero must fail")
    expected = {"+": left + right, "-": left - right, "*": left * right, "/": 0.0}[op]
    if op == "/":
        expected = left / right
    got = _x(text)
    assert got == expected or (math.isnan(got) and math.isnan(expected))


@FAST
@given(finite, finite, st.sampled_from(["<", "<=", "==", ">=", ">", "!="]))
def test_comparisons_on_doubles_match_python(left: float, right: float, op: str) -> None:
    expected = {
        "<": left < right,
        "<=": left <= right,
        "==": left == right,
        ">=": left >= right,
        ">": left > right,
        "!=": left != right,
    }[op]
    assert _x(f"x = {_literal(left)} {op} {_literal(right)};") == float(expected)


@FAST
@given(st.lists(finite, min_size=1, max_size=20))
def test_aggregates_match_python(values: list[float]) -> None:
    listed = ", ".join(_literal(v) for v in values)
    assert _x(f"x = max({listed});") == max(values)
    assert _x(f"x = min({listed});") == min(values)
    assert _x(f"x = len({listed});") == len(values)
    total = math.fsum(values) if all(abs(v) < 1e300 for v in values) else None
    if total is not None and math.isfinite(total):
        assert _x(f"x = sum({listed});") == total


@FAST
@given(finite)
def test_a_target_is_truncated_and_clamped_at_zero(number: float) -> None:
    outcome = evaluate(parse(f"$TargetDedicatedNodes = {_literal(number)};"), {}, NOW)
    assert outcome.target_dedicated_nodes == max(0, math.trunc(number))


@FAST
@given(
    st.lists(st.floats(min_value=-1e6, max_value=1e6), max_size=40),
    st.integers(min_value=0, max_value=50),
    st.integers(min_value=0, max_value=30),
)
def test_get_sample_returns_the_newest_samples_and_a_percent_within_bounds(
    values: list[float], count: int, minutes: int
) -> None:
    samples = [(NOW - timedelta(seconds=30 * i), v) for i, v in enumerate(values)]
    outcome = evaluate(
        parse(
            f"x = $PendingTasks.GetSample({count});"
            f"p = $PendingTasks.GetSamplePercent(TimeInterval_Minute * {minutes});"
        ),
        {"$PendingTasks": samples},
        NOW,
    )
    assert outcome.variables["x"] == DoubleVec(tuple(values[:count]))
    assert 0 <= outcome.variables["p"] <= 100


# robustness: anything else than BadInput, or a slow answer, is a bug

TOKENS = [
    "a", "$b", "$PendingTasks", "$CPUPercent", "$TargetDedicatedNodes", "$NodeDeallocationOption",
    "TimeInterval_Second", "TimeInterval_Year", "requeue", "time", "avg", "max", "min", "std",
    "percentile", "val", "histogram", "lg", "ceil", "round", "len", "stop", "rand", "range",
    "norm", "sum", "GetSample", "GetSamplePercent", "Count", "HistoryBeginTime", "hour",
    "0", "1", "2.5", "1e308", "100", "\"2024-01-01\"", "\"\"", "+", "-", "*", "/", "<", "<=",
    "==", "!=", ">", ">=", "&&", "||", "!", "?", ":", "(", ")", ",", ".", ";", "=", "\n", " ",
    "//", "/*", "*/", "\"",
]  # fmt: skip
token_soup = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)


def _parse_and_run(text: str) -> None:
    try:
        formula = parse(text)
    except BadInput as error:
        assert error.code == "InvalidAutoScaleFormula"
        return
    try:
        evaluate(formula, INPUTS, NOW)
    except BadInput as error:
        assert error.code == "AutoScaleFormulaEvaluationError"


@settings(max_examples=500, deadline=timedelta(seconds=2))
@given(st.text(max_size=200))
def test_random_text_fails_only_with_bad_input(text: str) -> None:
    _parse_and_run(text)


@settings(
    max_examples=1000,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
)
@given(token_soup)
def test_formula_like_text_parses_and_runs_or_fails_with_bad_input(text: str) -> None:
    _parse_and_run(text)


def test_the_largest_formulas_parse_quickly() -> None:
    worst = [
        "a=1;" * 100,
        "a=" + "1+" * 4000 + "1",
        "a=" + "(" * 64 + "1" + ")" * 64 + ";" + "b=" + "-" * 8000,
        "a=" + "avg(" * 60 + ")" * 60,
        "a=" + "1?" * 2000 + "1" + ":1" * 2000,
        "// " + "x" * 8180,
    ]
    for text in worst:
        started = time.perf_counter()
        with contextlib.suppress(BadInput):
            evaluate(parse(text), INPUTS, NOW)
        assert time.perf_counter() - started < 1.0, text[:40]
