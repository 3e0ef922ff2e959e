"""Tests for fleet.exit_conditions: data-driven cases (tests/cases/exit_conditions/*.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.errors import BadInput
from fleet.exit_conditions import (
    DEPENDENCY_ACTIONS,
    JOB_ACTIONS,
    PRE_PROCESSING_CODES,
    parse_exit_conditions,
    resolve,
    specifies_job_action,
)

CASES = sorted((Path(__file__).parent / "cases" / "exit_conditions").glob("*.json"))
TARGET = "task j/t"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_exit_conditions_case(path: Path) -> None:
    case = json.loads(path.read_text())
    conditions = parse_exit_conditions(case["exitConditions"], TARGET)
    for outcome in case["outcomes"]:
        got = resolve(
            conditions, exit_code=outcome["exitCode"], failure_code=outcome["failureCode"]
        )
        assert got == outcome["expect"], (case["description"], outcome)


def test_parse_normalizes_and_leaves_absent_parts_out():
    value = {
        "exitCodes": [{"code": 1, "exitOptions": {"jobAction": "TERMINATE"}}],
        "exitCodeRanges": [],
        "default": {"dependencyAction": "Satisfy"},
        "fileUploadError": None,
    }
    assert parse_exit_conditions(value, TARGET) == {
        "exitCodes": [{"code": 1, "exitOptions": {"jobAction": "terminate"}}],
        "default": {"dependencyAction": "satisfy"},
    }
    assert parse_exit_conditions(None, TARGET) is None
    assert parse_exit_conditions({}, TARGET) == {}


@pytest.mark.parametrize(
    ("value", "code", "field"),
    [
        ([], "InvalidPropertyValue", "exitConditions"),
        ({"onExit": {}}, "UnknownProperty", "exitConditions.onExit"),
        ({"exitCodes": {}}, "InvalidPropertyValue", "exitConditions.exitCodes"),
        ({"exitCodes": [3]}, "InvalidPropertyValue", "exitConditions.exitCodes[0]"),
        (
            {"exitCodes": [{"exitOptions": {}}]},
            "MissingRequiredProperty",
            "exitConditions.exitCodes[0].code",
        ),
        (
            {"exitCodes": [{"code": "1", "exitOptions": {}}]},
            "InvalidPropertyValue",
            "exitConditions.exitCodes[0].code",
        ),
        (
            {"exitCodes": [{"code": True, "exitOptions": {}}]},
            "InvalidPropertyValue",
            "exitConditions.exitCodes[0].code",
        ),
        (
            {"exitCodes": [{"code": 1}]},
            "MissingRequiredProperty",
            "exitConditions.exitCodes[0].exitOptions",
        ),
        (
            {"exitCodes": [{"code": 1, "start": 2, "exitOptions": {}}]},
            "UnknownProperty",
            "exitConditions.exitCodes[0].start",
        ),
        (
            {"exitCodes": [{"code": 1, "exitOptions": {"jobAction": "stop"}}]},
            "InvalidPropertyValue",
            "exitConditions.exitCodes[0].exitOptions.jobAction",
        ),
        (
            {"exitCodes": [{"code": 1, "exitOptions": {"onFailure": "x"}}]},
            "UnknownProperty",
            "exitConditions.exitCodes[0].exitOptions.onFailure",
        ),
        (
            {"exitCodeRanges": [{"start": 5, "end": 4, "exitOptions": {}}]},
            "InvalidPropertyValue",
            "exitConditions.exitCodeRanges[0].end",
        ),
        (
            {"exitCodeRanges": [{"start": 5, "exitOptions": {}}]},
            "MissingRequiredProperty",
            "exitConditions.exitCodeRanges[0].end",
        ),
        (
            {"default": {"dependencyAction": "cancel"}},
            "InvalidPropertyValue",
            "exitConditions.default.dependencyAction",
        ),
        (
            {"preProcessingError": {"dependencyAction": 1}},
            "InvalidPropertyValue",
            "exitConditions.preProcessingError.dependencyAction",
        ),
        ({"fileUploadError": "block"}, "InvalidPropertyValue", "exitConditions.fileUploadError"),
        (
            {"exitCodes": [{"code": i, "exitOptions": {}} for i in range(1001)]},
            "InvalidPropertyValue",
            "exitConditions",
        ),
    ],
)
def test_bad_exit_conditions_are_rejected_naming_the_field(value: Any, code: str, field: str):
    with pytest.raises(BadInput) as err:
        parse_exit_conditions(value, TARGET)
    assert (err.value.code, err.value.field, err.value.target) == (code, field, TARGET)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        ({}, False),
        ({"default": {"dependencyAction": "block"}}, False),
        ({"default": {"jobAction": "none"}}, True),
        ({"exitCodes": [{"code": 1, "exitOptions": {"jobAction": "disable"}}]}, True),
        ({"exitCodeRanges": [{"start": 1, "end": 2, "exitOptions": {"jobAction": "none"}}]}, True),
    ],
)
def test_specifies_job_action_finds_any_job_action(value: Any, expected: bool):
    assert specifies_job_action(parse_exit_conditions(value, TARGET)) is expected


options_st = st.fixed_dictionaries(
    {},
    optional={
        "jobAction": st.sampled_from(JOB_ACTIONS).map(str.upper),
        "dependencyAction": st.sampled_from(DEPENDENCY_ACTIONS),
    },
)
conditions_st = st.fixed_dictionaries(
    {},
    optional={
        "exitCodes": st.lists(
            st.builds(lambda c, o: {"code": c, "exitOptions": o}, st.integers(-3, 3), options_st),
            max_size=3,
        ),
        "exitCodeRanges": st.lists(
            st.builds(
                lambda a, b, o: {"start": min(a, b), "end": max(a, b), "exitOptions": o},
                st.integers(-5, 5),
                st.integers(-5, 5),
                options_st,
            ),
            max_size=3,
        ),
        "preProcessingError": options_st,
        "fileUploadError": options_st,
        "default": options_st,
    },
)
failure_st = st.one_of(
    st.none(), st.sampled_from([*sorted(PRE_PROCESSING_CODES), "FileUploadError", "TaskEnded"])
)


@settings(max_examples=200)
@given(conditions_st, st.one_of(st.none(), st.integers(-6, 6)), failure_st)
def test_resolve_always_returns_known_actions(value, exit_code, failure_code):
    conditions = parse_exit_conditions(value, TARGET)
    assert parse_exit_conditions(conditions, TARGET) == conditions
    got = resolve(conditions, exit_code=exit_code, failure_code=failure_code)
    assert set(got) == {"jobAction", "dependencyAction"}
    assert got["jobAction"] in JOB_ACTIONS
    assert got["dependencyAction"] in DEPENDENCY_ACTIONS
    clean_exit = exit_code == 0 and failure_code is None
    listed = (conditions or {}).get("exitCodes") or (conditions or {}).get("exitCodeRanges")
    if clean_exit and not listed:
        assert got == {"jobAction": "none", "dependencyAction": "satisfy"}
    if not conditions:
        assert got["dependencyAction"] == ("satisfy" if clean_exit else "block")
