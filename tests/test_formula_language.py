"""The autoscale formula language, case by case: values, precedence, functions, samples,
whole formulas with their results text, and every error with its line and column."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fleet.errors import BadInput
from fleet.formula import DoubleVec, Timestamp, evaluate, parse

#: A Monday.
NOW = datetime(2024, 3, 4, 12, 34, 56, tzinfo=UTC)


def history(*values: float, start: datetime = NOW) -> list[tuple[datetime, float]]:
    """Samples every 30 s counting back from ``start``, the first value the newest."""
    return [(start - timedelta(seconds=30 * i), v) for i, v in enumerate(values)]


INPUTS: dict[str, Any] = {
    "$PendingTasks": history(4, 6, 8, 2),  # at now, -30 s, -60 s, -90 s
    "$CPUPercent": history(*[0.5] * 20),  # a full 10 minutes
    "$ActiveTasks": history(3, 1),
    "$CurrentDedicatedNodes": 5,
    "$CurrentLowPriorityNodes": 2,
    "$TaskSlotsPerNode": 4,
}
V4 = "$PendingTasks.GetSample(4)"  # [4, 6, 8, 2]
V2 = "$PendingTasks.GetSample(2)"  # [4, 6]
EMPTY = "$RunningTasks.GetSample(3)"  # no samples: []


def value_of(expression: str, inputs: dict[str, Any] | None = None) -> Any:
    """Evaluate ``x = expression;`` and return x, doubleVecs as lists."""
    outcome = evaluate(parse(f"x = {expression};"), INPUTS if inputs is None else inputs, NOW)
    x = outcome.variables["x"]
    return list(x.items) if isinstance(x, DoubleVec) else x


VALUES: list[tuple[str, Any]] = [
    # arithmetic, precedence and associativity
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("10 - 4 - 3", 3),
    ("48 / 4 / 2", 6),
    ("2 * 3 / 4", 1.5),
    ("-2 * 3", -6),
    ("- -2", 2),
    ("-2 - -3", 1),
    ("-(2 + 3)", -5),
    ("1.5e2 + 0.25", 150.25),
    ("!0", 1),
    ("!5", 0),
    ("!!7", 1),
    ("!0 + 1", 2),
    ("1 < 2", 1),
    ("2 <= 2", 1),
    ("3 > 4", 0),
    ("3 >= 4", 0),
    ("1 == 1", 1),
    ("1 != 1", 0),
    ("1 + 1 == 2", 1),
    ("1 < 2 == 1", 1),
    ("2 == 2 < 1", 0),
    ("1 || 0 && 0", 1),
    ("0 && 1 || 1", 1),
    ("1 && 2", 1),
    ("0 || 0", 0),
    ("3 || 0", 1),
    ("1 ? 2 : 3", 2),
    ("0 ? 2 : 3", 3),
    ("0 ? 1 : 0 ? 2 : 3", 3),
    ("1 ? 0 ? 4 : 5 : 6", 5),
    ("1 + 1 > 1 ? 10 : 20", 10),
    ("0 && 1 / 0", 0),
    ("1 || 1 / 0", 1),
    ("1 ? 2 : 1 / 0", 2),
    # strings and bare words
    ('"abc"', "abc"),
    ('"say \\"hi\\"\\n"', 'say "hi"\n'),
    ('"abc" < "abd"', 1),
    ('"a" == "a"', 1),
    ('"a" != "b"', 1),
    ("taskcompletion", "taskcompletion"),
    ('requeue == "requeue"', 1),
    # timeintervals
    ("TimeInterval_Minute == 60 * TimeInterval_Second", 1),
    ("TimeInterval_Hour / 60 == TimeInterval_Minute", 1),
    ("TimeInterval_Second * 2 + TimeInterval_Second == 3 * TimeInterval_Second", 1),
    ("TimeInterval_Day - TimeInterval_Hour > TimeInterval_Hour", 1),
    ("-TimeInterval_Second < TimeInterval_Zero", 1),
    ("TimeInterval_Week == 7 * TimeInterval_Day", 1),
    ("TimeInterval_Year == 365 * TimeInterval_Day", 1),
    ("TimeInterval_Second == 1000 * TimeInterval_Millisecond", 1),
    ("TimeInterval_Millisecond == TimeInterval_Microsecond * 1000", 1),
    ("TimeInterval_Microsecond == 10 * TimeInterval_100ns", 1),
    ("TimeInterval_Zero == 0 * TimeInterval_Hour", 1),
    ("TimeInterval_Minute >= TimeInterval_Minute", 1),
    ("TimeInterval_Minute != TimeInterval_Hour", 1),
    # timestamps
    ("time().year", 2024),
    ("time().month", 3),
    ("time().day", 4),
    ("time().weekday", 1),
    ("time().hour", 12),
    ("time().minute", 34),
    ("time().second", 56),
    ("(time() + TimeInterval_Day).weekday", 2),
    ("(TimeInterval_Day + time()).day", 5),
    ("(time() - TimeInterval_Hour).hour", 11),
    ('time() - time("2024-03-04T11:34:56Z") == TimeInterval_Hour', 1),
    ('time("Sun, 03 Mar 2024 10:00:00 GMT").weekday', 0),
    ('time("2024-03-04T12:00:00+02:00").hour', 10),
    ('time("2024-03-04") < time()', 1),
    ('time("2024").month', 1),
    ('time("2024-07").month', 7),
    ('time("") == time()', 1),
    ("time() == time()", 1),
    ('time() > time("2024-03-04T12:34:55.9Z")', 1),
    # doubleVec arithmetic
    (f"{V4} + 1", [5, 7, 9, 3]),
    (f"1 + {V2}", [5, 7]),
    (f"{V2} - 1", [3, 5]),
    (f"10 - {V2}", [6, 4]),
    (f"{V2} * {V2}", [16, 36]),
    (f"{V2} / 2", [2, 3]),
    (f"12 / {V2}", [3, 2]),
    (f"{V2} - {V2}", [0, 0]),
    (f"{V2} + {V2}", [8, 12]),
    (f"{V2} / {V2}", [1, 1]),
    # sampled variables used as plain values are their latest sample
    ("$PendingTasks + 1", 5),
    ("$PendingTasks / $TaskSlotsPerNode", 1),
    ("$PendingTasks > 3", 1),
    # the functions
    (f"avg({V4})", 5),
    (f"avg({V4}, 10)", 6),
    ("avg(1)", 1),
    (f"len({V4})", 4),
    (f"len({V4}, 1, 2)", 6),
    (f"len({EMPTY})", 0),
    ("lg(8)", 3),
    ("lg($PendingTasks.GetSample(1))", [2]),
    ("ln(1)", 0),
    ("log(1000)", 3),
    ("log(10, 100)", [1, 2]),
    (f"max({V4})", 8),
    (f"max({V4}, 9)", 9),
    (f"max(0, {EMPTY})", 0),
    (f"min({V4})", 2),
    (f"min({V4}, 1)", 1),
    ("norm(3, 4)", 5),
    (f"norm({EMPTY})", 0),
    (f"percentile({V4}, 0)", 2),
    (f"percentile({V4}, 50)", 4),
    (f"percentile({V4}, 75)", 6),
    (f"percentile({V4}, 100)", 8),
    (f"range({V4})", 6),
    ("std(2, 4, 4, 4, 5, 5, 7, 9)", math.sqrt(32 / 7)),
    ("std(5)", 0),
    (f"sum({V4})", 20),
    (f"sum({V4}, 1)", 21),
    (f"sum({EMPTY})", 0),
    ("ceil(1.2)", 2),
    ("ceil(-1.2)", -1),
    (f"ceil({V2} / 4)", [1, 2]),
    ("floor(1.8)", 1),
    ("floor(-1.2)", -2),
    ("floor(1.5, 2.5)", [1, 2]),
    ("round(2.5)", 3),
    ("round(-2.5)", -3),
    ("round(2.4)", 2),
    ("round(0.5, 1.5)", [1, 2]),
    (f"val({V4}, 0)", 4),
    (f"val({V4}, 3)", 2),
    (f"histogram({V4}, 2)", [2, 2]),
    (f"histogram({V4}, 3)", [1, 1, 2]),
    (f"histogram({EMPTY}, 2)", [0, 0]),
    # the sample methods
    ("$PendingTasks.Count()", 4),
    ("$RunningTasks.Count()", 0),
    ("$PendingTasks.GetSamplePeriod() == 30 * TimeInterval_Second", 1),
    ("$PendingTasks.HistoryBeginTime() == time() - 90 * TimeInterval_Second", 1),
    ("$PendingTasks.GetSample(1)", [4]),
    ("$PendingTasks.GetSample(2)", [4, 6]),
    ("$PendingTasks.GetSample(10)", [4, 6, 8, 2]),
    ("$PendingTasks.GetSample(0)", []),
    ("$PendingTasks.GetSample(TimeInterval_Minute)", [4, 6]),
    ("$PendingTasks.GetSample(TimeInterval_Minute * 2, TimeInterval_Second * 30)", [6, 8, 2]),
    ("$PendingTasks.GetSample(TimeInterval_Second * 30, TimeInterval_Minute * 2)", [6, 8, 2]),
    ("$PendingTasks.GetSample(time() - TimeInterval_Minute, time())", [4, 6]),
    ("$PendingTasks.GetSample(time() - TimeInterval_Minute)", [4, 6]),
    ("$PendingTasks.GetSample(TimeInterval_Minute * 4, 50)", [4, 6, 8, 2]),
    ("$PendingTasks.GetSample(TimeInterval_Minute * 2, TimeInterval_Zero, 100)", [4, 6, 8, 2]),
    ("$PendingTasks.GetSamplePercent(TimeInterval_Minute * 2)", 100),
    ("$PendingTasks.GetSamplePercent(TimeInterval_Minute * 4)", 50),
    ("$PendingTasks.GetSamplePercent(TimeInterval_Minute * 4, TimeInterval_Minute * 2)", 0),
    ("$PendingTasks.GetSamplePercent(TimeInterval_Zero)", 100),
    ("$CPUPercent.GetSamplePercent(TimeInterval_Minute * 10)", 100),
    ("$ActiveTasks.GetSample(TimeInterval_Minute * 10)", [3, 1]),
    # plain service variables, aliases and defaults
    ("$CurrentDedicatedNodes", 5),
    ("$CurrentDedicated", 5),
    ("$CurrentLowPriority", 2),
    ("$UsableNodeCount", 0),
    ("$TaskSlotsPerNode", 4),
    ("$TargetDedicatedNodes", 5),
    ("$TargetDedicated", 5),
    ("$TargetLowPriorityNodes", 2),
]


@pytest.mark.parametrize(("expression", "expected"), VALUES, ids=[v[0] for v in VALUES])
def test_expression_has_its_value(expression: str, expected: Any) -> None:
    got = value_of(expression)
    if isinstance(expected, list):
        assert got == pytest.approx(expected)
    elif isinstance(expected, str):
        assert got == expected
    else:
        assert isinstance(got, float)
        assert got == pytest.approx(expected)


PENDING_EXAMPLE = """startingNumberOfVMs = 1;
maxNumberofVMs = 25;
pendingTaskSamplePercent = $PendingTasks.GetSamplePercent(180 * TimeInterval_Second);
pendingTaskSamples = pendingTaskSamplePercent < 70 ? startingNumberOfVMs : avg($PendingTasks.GetSample(180 * TimeInterval_Second));
$TargetDedicatedNodes=min(maxNumberofVMs, pendingTaskSamples);
$NodeDeallocationOption = taskcompletion;
"""
WORKING_HOURS = """
    $curTime = time();
    $workHours = $curTime.hour >= 8 && $curTime.hour < 18;
    $isWeekday = $curTime.weekday >= 1 && $curTime.weekday <= 5;
    $isWorkingWeekdayHour = $workHours && $isWeekday;
    $TargetDedicatedNodes = $isWorkingWeekdayHour ? 20:10;
"""
TASK_EXAMPLE = """// Get pending tasks for the past 15 minutes.
$samples = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 15);
// If we have fewer than 70 percent data points, we use the last sample point,
$tasks = $samples < 70 ? max(0,$PendingTasks.GetSample(1)) : max( $PendingTasks.GetSample(1), avg($PendingTasks.GetSample(TimeInterval_Minute * 15)));
$targetVMs = $tasks > 0? $tasks:max(0, $TargetDedicatedNodes/2);
$TargetDedicatedNodes = max(0, min($targetVMs, 20));
$NodeDeallocationOption = taskcompletion;
"""
RESULTS_HEAD = "$TargetDedicatedNodes={};$TargetLowPriorityNodes={};$NodeDeallocationOption={}"

#: (formula, extra inputs, target dedicated, target low priority, deallocation option, results)
FORMULAS: list[tuple[str, dict[str, Any], int, int, str | None, str]] = [
    (
        PENDING_EXAMPLE,
        {"$PendingTasks": history(9, 7, 5, 3, 1, 3)},
        4,
        2,
        "taskcompletion",
        RESULTS_HEAD.format(4, 2, "taskcompletion")
        + ";maxNumberofVMs=25;pendingTaskSamplePercent=100;pendingTaskSamples=4.666666666666667"
        + ";startingNumberOfVMs=1",
    ),
    (
        PENDING_EXAMPLE,
        {"$PendingTasks": history(9)},
        1,
        2,
        "taskcompletion",
        RESULTS_HEAD.format(1, 2, "taskcompletion")
        + ";maxNumberofVMs=25;pendingTaskSamplePercent=16.666666666666668;pendingTaskSamples=1"
        + ";startingNumberOfVMs=1",
    ),
    (
        WORKING_HOURS,
        {},
        20,
        2,
        None,
        RESULTS_HEAD.format(20, 2, "requeue")
        + ";$curTime=2024-03-04T12:34:56.000Z;$isWeekday=1;$isWorkingWeekdayHour=1;$workHours=1",
    ),
    (TASK_EXAMPLE, {"$PendingTasks": []}, 2, 2, "taskcompletion", ""),
    ("$TargetDedicated = 3;", {}, 3, 2, None, ""),
    ("$TargetDedicated = 3; $TargetDedicatedNodes = 6;", {}, 6, 2, None, ""),
    ("$TargetDedicatedNodes = 6; $TargetDedicated = 3;", {}, 6, 2, None, ""),
    ("$TargetLowPriority = 7;", {}, 5, 7, None, ""),
    ("$TargetDedicatedNodes = 2.9; $TargetLowPriorityNodes = 0.5;", {}, 2, 0, None, ""),
    ("$TargetDedicatedNodes = -3;", {}, 0, 2, None, RESULTS_HEAD.format(0, 2, "requeue")),
    ("$TargetDedicatedNodes = $PendingTasks * 2.5;", {}, 10, 2, None, ""),
    ("x = 1;", {"$TargetDedicatedNodes": 7, "$TargetLowPriorityNodes": 1}, 7, 1, None, ""),
    ("x = 1;", {"$NodeDeallocationOption": "retaineddata"}, 5, 2, "retaineddata", ""),
    ("$NodeDeallocationOption = terminate;", {}, 5, 2, "terminate", ""),
    ('$NodeDeallocationOption = "requeue";', {}, 5, 2, "requeue", ""),
    (
        "$TargetDedicatedNodes = 4; stop(); $TargetDedicatedNodes = 9; late = 1;",
        {},
        4,
        2,
        None,
        RESULTS_HEAD.format(4, 2, "requeue"),
    ),
    ("$TargetDedicatedNodes = 0 ? 1 : stop();", {}, 5, 2, None, ""),
    (
        "// a comment\n$TargetDedicatedNodes = 1; /* a block\ncomment */ $TargetLowPriorityNodes = 3;",
        {},
        1,
        3,
        None,
        "",
    ),
    ("a = 1\nb = 2\n$TargetDedicatedNodes = a + b", {}, 3, 2, None, ""),
    ("a = 1\n- 2;\n$TargetDedicatedNodes = a + 9", {}, 8, 2, None, ""),
    ("$TargetDedicatedNodes =\n  (1 > 0) ?\n  4 : 5;;;", {}, 4, 2, None, ""),
    (
        "b = 1; $a = 2; A = 3;",
        {},
        5,
        2,
        None,
        RESULTS_HEAD.format(5, 2, "requeue") + ";$a=2;A=3;b=1",
    ),
    (
        "t = TimeInterval_Minute * 90; d = TimeInterval_Day * 2 + TimeInterval_Millisecond;"
        ' n = -TimeInterval_Second; v = $PendingTasks.GetSample(2); h = 2.5; s = "x y";',
        {},
        5,
        2,
        None,
        RESULTS_HEAD.format(5, 2, "requeue")
        + ";d=2.00:00:00.0010000;h=2.5;n=-00:00:01;s=x y;t=01:30:00;v=[4,6]",
    ),
    (
        "$TargetDedicatedNodes = $PendingTasks.Count() * 10 + $PendingTasks;",
        {
            "$PendingTasks": [
                (NOW + timedelta(hours=1), 100),
                (NOW, 3),
                (NOW - timedelta(hours=1), 2),
            ]
        },
        23,
        2,
        None,
        "",
    ),
]


@pytest.mark.parametrize(
    ("text", "extra", "dedicated", "low", "option", "results"),
    FORMULAS,
    ids=[f"formula{i}" for i in range(len(FORMULAS))],
)
def test_formula_evaluates_to_its_targets_and_results(
    text: str, extra: dict[str, Any], dedicated: int, low: int, option: str | None, results: str
) -> None:
    outcome = evaluate(parse(text), {**INPUTS, **extra}, NOW)
    assert outcome.target_dedicated_nodes == dedicated
    assert outcome.target_low_priority_nodes == low
    assert outcome.node_deallocation_option == option
    assert outcome.results.startswith(RESULTS_HEAD.format(dedicated, low, option or "requeue"))
    if results:
        assert outcome.results == results


def test_stop_ends_the_evaluation_and_keeps_what_was_assigned() -> None:
    outcome = evaluate(parse("a = 1; stop(); b = 2;"), {}, NOW)
    assert outcome.stopped
    assert outcome.variables["a"] == 1.0
    assert "b" not in outcome.variables


def test_variables_hold_service_and_user_values() -> None:
    outcome = evaluate(parse("x = $CurrentDedicatedNodes + 1;"), INPUTS, NOW)
    assert outcome.variables["x"] == 6.0
    assert outcome.variables["$CurrentDedicatedNodes"] == 5.0
    assert outcome.variables["$TargetDedicatedNodes"] == 5.0
    assert outcome.variables["$UsableNodeCount"] == 0.0


def test_variables_keep_a_fractional_target_while_the_target_is_truncated() -> None:
    outcome = evaluate(parse("$TargetDedicatedNodes = 2.9;"), {}, NOW)
    assert outcome.variables["$TargetDedicatedNodes"] == 2.9
    assert outcome.target_dedicated_nodes == 2
    assert outcome.results.startswith("$TargetDedicatedNodes=2;")


def test_rand_draws_from_the_given_random_source() -> None:
    formula = parse("a = rand(); b = rand();")
    first = evaluate(formula, {}, NOW, rng=random.Random(7)).variables
    second = evaluate(formula, {}, NOW, rng=random.Random(7)).variables
    assert first == second
    assert 0 <= first["a"] < 1 and first["a"] != first["b"]


def test_time_without_a_zone_is_utc_and_naive_now_is_utc() -> None:
    outcome = evaluate(parse('t = time("2024-03-04T10:00:00");'), {}, NOW.replace(tzinfo=None))
    assert outcome.variables["t"] == Timestamp.from_datetime(datetime(2024, 3, 4, 10, tzinfo=UTC))


def test_parsed_formulas_compare_equal_whatever_their_layout() -> None:
    assert parse("a=1+2*b;") == parse("a = 1 + (2 * b)\n")
    assert parse("a = (1 + 2) * b;") != parse("a = 1 + 2 * b;")


#: (formula, error code, line, column, part of the message)
PARSE = "InvalidAutoScaleFormula"
EVAL = "AutoScaleFormulaEvaluationError"
ERRORS: list[tuple[str, str, int, int, str]] = [
    ("a = (1 + 2;", PARSE, 1, 11, "expected ')' but found ';'"),
    ("a = 1 +;", PARSE, 1, 8, "expected a value but found ';'"),
    ("a = 1 b = 2", PARSE, 1, 7, "expected ';' but found 'b'"),
    ("a = 1 = 2", PARSE, 1, 7, "expected ';' but found '='"),
    ("a = 1;\n\n  b = 2 @ 3;", PARSE, 3, 9, "unexpected character '@'"),
    ('a = "abc', PARSE, 1, 5, "a string is never closed"),
    ('a = "a\\q";', PARSE, 1, 7, "unknown escape"),
    ("a = 1; /* x", PARSE, 1, 8, "comment is never closed"),
    ("$CPUPercent = 1;", PARSE, 1, 1, "$CPUPercent is a read-only service variable"),
    ("x = 1;\n$CurrentDedicatedNodes = 1;", PARSE, 2, 1, "read-only"),
    ("TimeInterval_Second = 2;", PARSE, 1, 1, "is a constant"),
    ("requeue = 2;", PARSE, 1, 1, "is a constant"),
    ("", PARSE, 1, 1, "the formula has no statements"),
    (" ;; // nothing", PARSE, 1, 15, "the formula has no statements"),
    ("a = 3x;", PARSE, 1, 5, "a number runs into 'x'"),
    ("a = $b(1);", PARSE, 1, 5, "$b is a variable, not a function"),
    ("a = b.;", PARSE, 1, 7, "expected a member or method name"),
    ("a = b.$c;", PARSE, 1, 7, "expected a member or method name"),
    ("a = 1 ? 2;", PARSE, 1, 10, "expected ':' but found ';'"),
    ("a = f(1, );", PARSE, 1, 10, "expected a value"),
    ("a = 1e999;", PARSE, 1, 5, "too large"),
    ("a=1;" * 2049, PARSE, 1, 1, "longer than 8192 bytes"),
    ("a=1;" * 101, PARSE, 1, 401, "at most 100 statements"),
    ("a = " + "(" * 70 + "1" + ")" * 70 + ";", PARSE, 1, 69, "nest more than 64 deep"),
    ("a = " + "-" * 70 + "1;", PARSE, 1, 68, "nest more than 64 deep"),
    ("a = " + "1 + " * 200 + "1;", PARSE, 1, 5, "more than 150 operations deep"),
    ("a = 1;\nb = a / 0;", EVAL, 2, 7, "division by zero"),
    ("a = 1 / (1 - 1);", EVAL, 1, 7, "division by zero"),
    (f"a = {V2} / 0;", EVAL, 1, 32, "division by zero"),
    ("a = TimeInterval_Second / 0;", EVAL, 1, 25, "division by zero"),
    ("a = unknown + 1;", EVAL, 1, 5, "unknown variable unknown"),
    ("a = $Unknown;", EVAL, 1, 5, "unknown variable $Unknown"),
    ("a = nosuch(1);", EVAL, 1, 5, "unknown function 'nosuch'"),
    ('a = 1 + "x";', EVAL, 1, 7, "operator + does not apply to a double and a string"),
    ("a = TimeInterval_Second + 1;", EVAL, 1, 25, "a timeinterval and a double"),
    ("a = 1 - TimeInterval_Second;", EVAL, 1, 7, "a double and a timeinterval"),
    ("a = TimeInterval_Second * TimeInterval_Second;", EVAL, 1, 25, "operator *"),
    ("a = time() + time();", EVAL, 1, 12, "a timestamp and a timestamp"),
    ("a = time() * 2;", EVAL, 1, 12, "a timestamp and a double"),
    (f"a = {V2} + time();", EVAL, 1, 32, "a doubleVec and a timestamp"),
    ('a = "x" - "y";', EVAL, 1, 9, "a string and a string"),
    ('a = 1 < "x";', EVAL, 1, 7, "cannot compare a double with a string"),
    ("a = time() == TimeInterval_Zero;", EVAL, 1, 12, "cannot compare a timestamp"),
    (f"a = {V2} < 1;", EVAL, 1, 32, "cannot compare a doubleVec"),
    ('a = -"x";', EVAL, 1, 5, "operator - does not apply to a string"),
    ("a = !TimeInterval_Second;", EVAL, 1, 5, "operator ! does not apply to a timeinterval"),
    (f"a = -{V2};", EVAL, 1, 5, "does not apply to a doubleVec"),
    ('a = "x" ? 1 : 2;', EVAL, 1, 5, "the condition of ?: must be a double, not string"),
    ('a = "x" && 1;', EVAL, 1, 9, "the left side of && must be a double"),
    ("a = 0 || time();", EVAL, 1, 7, "the right side of || must be a double"),
    (f"a = {V2} + {V4};", EVAL, 1, 32, "doubleVecs of one length, not 2 and 4"),
    (
        "a = $PendingTasks.GetSample(TimeInterval_Minute * 4, 75);",
        EVAL,
        1,
        18,
        "insufficient data from data set: $PendingTasks wanted 75%, received 50%",
    ),
    (
        "x = 1;\ny = $CPUPercent.GetSample(TimeInterval_Minute * 20, TimeInterval_Minute, 96);",
        EVAL,
        2,
        16,
        "$CPUPercent wanted 96%, received 47.4%",
    ),
    ("a = $RunningTasks + 1;", EVAL, 1, 19, "$RunningTasks has no samples yet"),
    ("a = $RunningTasks.HistoryBeginTime();", EVAL, 1, 18, "has no samples yet"),
    ("a = $CurrentDedicatedNodes.GetSample(1);", EVAL, 1, 27, "a method of sampled variables"),
    ("a = $PendingTasks.Foo();", EVAL, 1, 18, "has no method 'Foo'"),
    ("a = $PendingTasks.GetSample();", EVAL, 1, 18, "GetSample takes"),
    ("a = $PendingTasks.GetSample(1, 2);", EVAL, 1, 18, "GetSample(count) takes one argument"),
    ("a = $PendingTasks.GetSample(-1);", EVAL, 1, 18, "whole number >= 0"),
    ("a = $PendingTasks.GetSample(1.5);", EVAL, 1, 18, "whole number >= 0"),
    ('a = $PendingTasks.GetSample("x");', EVAL, 1, 18, "window's start must be"),
    (
        "a = $PendingTasks.GetSample(TimeInterval_Minute, time(), time());",
        EVAL,
        1,
        18,
        "percent must be a double",
    ),
    ("a = $PendingTasks.GetSamplePercent();", EVAL, 1, 18, "GetSamplePercent takes"),
    ("a = $PendingTasks.Count(1);", EVAL, 1, 18, "Count takes no arguments"),
    ("a = time().fortnight;", EVAL, 1, 11, "a timestamp has no member 'fortnight'"),
    ("a = (1).hour;", EVAL, 1, 8, "a double has no member 'hour'"),
    (f"a = avg({EMPTY});", EVAL, 1, 5, "avg() of an empty list"),
    (f"a = min({EMPTY});", EVAL, 1, 5, "min() of an empty list"),
    (f"a = range({EMPTY});", EVAL, 1, 5, "range() of an empty list"),
    (f"a = percentile({EMPTY}, 5);", EVAL, 1, 5, "percentile() of an empty list"),
    ("a = avg(time());", EVAL, 1, 5, "avg() takes doubles and doubleVecs, not a timestamp"),
    ("a = ceil();", EVAL, 1, 5, "ceil() needs an argument"),
    (f"a = val({V2}, 2);", EVAL, 1, 5, "index 2 is outside a vector of length 2"),
    (f"a = val({V2}, 0.5);", EVAL, 1, 5, "whole number"),
    (f"a = val({V2});", EVAL, 1, 5, "val() takes"),
    (f"a = percentile({V2}, 101);", EVAL, 1, 5, "from 0 to 100"),
    (f"a = percentile({V2});", EVAL, 1, 5, "percentile() takes"),
    ("a = lg(0);", EVAL, 1, 5, "the logarithm needs a number above zero"),
    ("a = ln(-1);", EVAL, 1, 5, "above zero"),
    ("a = log(10, 0);", EVAL, 1, 5, "above zero"),
    ('a = time("not a date");', EVAL, 1, 5, "not a W3C-DTF or RFC 1123"),
    ("a = time(1);", EVAL, 1, 5, "time() takes"),
    (f"a = histogram({V2}, 0);", EVAL, 1, 5, "bins must be from 1 to 10000"),
    (f"a = histogram({V2}, 1e9);", EVAL, 1, 5, "bins must be from 1 to 10000"),
    (f"a = histogram({V2}, 2.5);", EVAL, 1, 5, "whole number"),
    ("a = rand(1);", EVAL, 1, 5, "rand() takes no arguments"),
    ("stop(1);", EVAL, 1, 1, "stop() takes no arguments"),
    ("a = time() + TimeInterval_Year * 10000;", EVAL, 1, 12, "outside the years 1 to 9999"),
    ('$TargetDedicatedNodes = "x";', EVAL, 1, 1, "must be a double, not string"),
    (f"$TargetDedicatedNodes = {V2};", EVAL, 1, 1, "must be a double, not doubleVec"),
    ("$TargetLowPriority = time();", EVAL, 1, 1, "$TargetLowPriority must be a double"),
    ("$TargetDedicatedNodes = 1e308 * 10;", EVAL, 1, 1, "must be a finite number"),
    ("$TargetDedicatedNodes = $RunningTasks;", EVAL, 1, 1, "has no samples yet"),
    ("$NodeDeallocationOption = 3;", EVAL, 1, 1, "must be one of requeue, terminate"),
    ('$NodeDeallocationOption = "sometimes";', EVAL, 1, 1, "not sometimes"),
]


@pytest.mark.parametrize(
    ("text", "code", "line", "column", "message"),
    ERRORS,
    ids=[f"{e[1][:5]}-{e[4][:40]}" for e in ERRORS],
)
def test_error_names_its_code_line_and_column(
    text: str, code: str, line: int, column: int, message: str
) -> None:
    with pytest.raises(BadInput) as caught:
        evaluate(parse(text), INPUTS, NOW)
    error = caught.value
    assert error.code == code
    assert error.field == "autoScaleFormula"
    assert error.exit_status == 2
    assert error.details == {"line": line, "column": column}
    assert error.message.startswith(f"line {line}, column {column}: ")
    assert message in error.message


@pytest.mark.parametrize(
    "inputs",
    [
        {"$Nope": 1},
        {"$CurrentDedicated": 1},
        {"$PendingTasks": "many"},
        {"$PendingTasks": [(NOW, "a")]},
        {"$PendingTasks": [("yesterday", 1.0)]},
        {"$CurrentDedicatedNodes": [(NOW, 1.0)]},
        {"$CurrentDedicatedNodes": float("nan")},
        {"$TargetDedicatedNodes": float("inf")},
        {"$NodeDeallocationOption": "sometimes"},
        {"$TaskSlotsPerNode": True},
    ],
)
def test_inputs_that_do_not_fit_are_refused(inputs: dict[str, Any]) -> None:
    with pytest.raises(BadInput) as caught:
        evaluate(parse("x = 1;"), inputs, NOW)
    assert caught.value.code == "InvalidInput"
    assert caught.value.field == "inputs"
