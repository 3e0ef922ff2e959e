"""Tests for fleet.api.odata: $filter, $select, $expand, maxresults and odata.nextLink."""

from __future__ import annotations

import string
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.api.odata import (
    MAX_DEPTH,
    MAX_LENGTH,
    next_link,
    parse_expand,
    parse_filter,
    parse_maxresults,
    parse_select,
    select,
    wants_stats,
)
from fleet.errors import BadInput

#: Tasks as fleet.views.task renders them (trimmed to what the cases look at).
FAILED = {
    "id": "render-007",
    "jobId": "job-1",
    "state": "completed",
    "creationTime": "2025-06-01T10:00:00.000Z",
    "stateTransitionTime": "2025-06-01T10:05:30.250Z",
    "executionInfo": {"exitCode": 3, "result": "failure", "retryCount": 0},
    "nodeInfo": {"poolId": "pool-a", "nodeId": "node-1"},
    "requiredSlots": 1,
    "multiInstance": False,
}
SUCCEEDED = FAILED | {
    "id": "Render-010",
    "executionInfo": {"exitCode": 0, "result": "success", "retryCount": 2},
}
ACTIVE = {
    "id": "post-1",
    "state": "active",
    "creationTime": "2025-06-01T09:59:59.999Z",
    "executionInfo": {"retryCount": 0},
    "displayName": "it's late",
    "ratio": 0.5,
}


@pytest.mark.parametrize(
    ("text", "obj", "expected"),
    [
        # comparisons on strings, paths and numbers
        ("state eq 'completed'", FAILED, True),
        ("state eq 'completed'", ACTIVE, False),
        ("state ne 'completed'", ACTIVE, True),
        ("executionInfo/result eq 'failure'", FAILED, True),
        ("executionInfo/result eq 'failure'", SUCCEEDED, False),
        ("nodeInfo/nodeId eq 'node-1'", FAILED, True),
        ("executionInfo/exitCode gt 0", FAILED, True),
        ("executionInfo/exitCode gt 0", SUCCEEDED, False),
        ("executionInfo/exitCode ge 3", FAILED, True),
        ("executionInfo/exitCode lt 3", FAILED, False),
        ("executionInfo/exitCode le 3", FAILED, True),
        ("executionInfo/exitCode eq 3.0", FAILED, True),
        ("executionInfo/exitCode gt -1", SUCCEEDED, True),
        ("ratio lt 0.75", ACTIVE, True),
        ("ratio gt 0.25 and ratio lt 0.5", ACTIVE, False),
        ("3 eq executionInfo/exitCode", FAILED, True),
        ("(executionInfo/exitCode lt 0) or (executionInfo/exitCode gt 0)", FAILED, True),
        ("(executionInfo/exitCode lt 0) or (executionInfo/exitCode gt 0)", SUCCEEDED, False),
        # numbers and strings never compare, whichever way round
        ("executionInfo/exitCode eq '3'", FAILED, False),
        ("executionInfo/exitCode ne '3'", FAILED, True),
        ("executionInfo/exitCode gt '0'", FAILED, False),
        ("id eq 7", FAILED, False),
        ("requiredSlots eq true", FAILED, False),
        ("multiInstance eq 0", FAILED, False),
        ("multiInstance eq false", FAILED, True),
        ("multiInstance ne true", FAILED, True),
        ("nodeInfo eq 'node-1'", FAILED, False),
        # string values compare without regard to case (Azure: values are case-insensitive)
        ("state eq 'Completed'", FAILED, True),
        ("id eq 'RENDER-007'", FAILED, True),
        ("id gt 'render-008'", SUCCEEDED, True),
        ("id lt 'render-008'", FAILED, True),
        # property names do not (Azure: names are case-sensitive): State is missing, null
        ("State eq 'completed'", FAILED, False),
        ("State eq null", FAILED, True),
        # escaped quotes
        ("displayName eq 'it''s late'", ACTIVE, True),
        ("displayName eq 'its late'", ACTIVE, False),
        ("startswith(displayName, 'it''')", ACTIVE, True),
        ("'''' eq ''''", ACTIVE, True),
        # startswith
        ("startswith(id, 'render')", FAILED, True),
        ("startswith(id, 'render')", SUCCEEDED, True),
        ("startswith(id, 'render')", ACTIVE, False),
        ("startswith(id, '')", ACTIVE, True),
        ("StartsWith(id, 'post')", ACTIVE, True),
        ("startswith(executionInfo/result, 'fail')", FAILED, True),
        ("startswith(executionInfo/exitCode, '3')", FAILED, False),
        ("startswith(executionInfo/result, 'fail')", ACTIVE, False),
        ("not startswith(executionInfo/result, 'fail')", ACTIVE, False),
        ("startswith(id, 'render') eq true", FAILED, True),
        ("(state eq 'completed') and startswith(id, 'render')", FAILED, True),
        # datetimes compare as instants against the object's ISO 8601 strings
        ("creationTime eq datetime'2025-06-01T10:00:00Z'", FAILED, True),
        ("creationTime ge datetime'2025-06-01T10:00:00Z'", ACTIVE, False),
        ("creationTime lt datetime'2025-06-01T10:00:00Z'", ACTIVE, True),
        ("creationTime eq datetime'2025-06-01T12:00:00+02:00'", FAILED, True),
        ("creationTime eq datetime'2025-06-01T10:00:00'", FAILED, True),
        ("creationTime eq datetime'2025-06-01T10:00:00.000000Z'", FAILED, True),
        ("stateTransitionTime gt datetime'2025-06-01T10:05:30.2Z'", FAILED, True),
        ("stateTransitionTime gt datetime'2025-06-01T10:05:30.3Z'", FAILED, False),
        ("creationTime gt DateTime'Sun, 01 Jun 2025 09:59:59 GMT'", FAILED, True),
        ("creationTime gt DATETIME'Sun, 01 Jun 2025 10:00:00 GMT'", FAILED, False),
        ("creationTime ge datetime'2025-06-01'", ACTIVE, True),
        ("datetime'2025-06-01T10:00:00Z' le creationTime", FAILED, True),
        ("state gt datetime'2025-06-01T10:00:00Z'", FAILED, False),
        ("state ne datetime'2025-06-01T10:00:00Z'", FAILED, True),
        ("executionInfo/exitCode lt datetime'2025-06-01T10:00:00Z'", FAILED, False),
        ("endTime lt datetime'2025-06-01T10:00:00Z'", FAILED, False),
        # null and missing paths: null equals only null; orderings with null are false
        ("executionInfo/exitCode eq null", ACTIVE, True),
        ("executionInfo/exitCode ne null", ACTIVE, False),
        ("executionInfo/exitCode ne null", FAILED, True),
        ("executionInfo/exitCode lt 0", ACTIVE, False),
        ("executionInfo/exitCode ge 0", ACTIVE, False),
        ("executionInfo/exitCode ne 0", ACTIVE, True),
        ("nodeInfo/nodeId eq null", ACTIVE, True),
        ("id/deeper eq null", FAILED, True),
        ("executionInfo/result/x eq 'failure'", FAILED, False),
        ("null eq null", ACTIVE, True),
        ("null ge null", ACTIVE, True),
        ("null gt null", ACTIVE, False),
        # three-valued logic: null (unknown) is neither true nor false
        ("not (executionInfo/exitCode gt 0)", ACTIVE, True),
        ("not startswith(nodeInfo/nodeId, 'node')", ACTIVE, False),
        ("not startswith(nodeInfo/nodeId, 'node') or true", ACTIVE, True),
        ("startswith(nodeInfo/nodeId, 'node') and false", ACTIVE, False),
        ("not multiInstance", FAILED, True),
        ("not missing", FAILED, False),
        ("multiInstance", FAILED, False),
        ("not not (state eq 'completed')", FAILED, True),
        # precedence: not > comparisons > and > or
        (
            "state eq 'active' or state eq 'completed' and executionInfo/exitCode eq 0",
            FAILED,
            False,
        ),
        ("state eq 'active' or state eq 'completed' and executionInfo/exitCode eq 0", ACTIVE, True),
        (
            "(state eq 'active' or state eq 'completed') and executionInfo/exitCode eq 0",
            ACTIVE,
            False,
        ),
        ("state eq 'completed' and executionInfo/exitCode eq 0 or state eq 'active'", ACTIVE, True),
        ("not (state eq 'active') and not (state eq 'running')", FAILED, True),
        ("not (state eq 'active' or state eq 'completed')", FAILED, False),
        ("true or false and false", ACTIVE, True),
        ("(true or false) and false", ACTIVE, False),
        ("not false and false", ACTIVE, False),
        ("not (false and false)", ACTIVE, True),
        # keywords in any case, whitespace of any kind, a blank filter
        ("state EQ 'completed' AND executionInfo/result Eq 'failure'", FAILED, True),
        ("  state\teq\n'completed'  ", FAILED, True),
        ("(((state eq 'completed')))", FAILED, True),
        ("", ACTIVE, True),
        ("   ", FAILED, True),
        ("TRUE", FAILED, True),
        ("false", FAILED, False),
    ],
)
def test_filter_matches(text: str, obj: dict[str, Any], expected: bool):
    assert parse_filter(text).matches(obj) is expected


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("state eq", "expected a value after 'eq' at column 9, found the end of the filter", 9),
        ("state eq )", "expected a value after 'eq' at column 10, found ')'", 10),
        ("state eq eq", "expected a value after 'eq' at column 10, found 'eq'", 10),
        ("id eq not x", "expected a value after 'eq' at column 7, found 'not'", 7),
        ("state eq 'a' and", "expected a condition after 'and' at column 17, found the end", 17),
        ("state eq 'a' or or", "expected a condition after 'or' at column 17, found 'or'", 17),
        ("id eq 'a' and 'b'", "expected a condition after 'and' at column 15, found 'b'", 15),
        ("state eq 'a' and not", "expected a condition after 'not' at column 21", 21),
        ("not 5", "expected a condition after 'not' at column 5, found '5'", 5),
        ("5", "expected a condition at column 1, found '5'", 1),
        ("null", "expected a condition at column 1, found 'null'", 1),
        ("datetime'2025-06-01'", "expected a condition at column 1", 1),
        (")", "expected a condition at column 1, found ')'", 1),
        ("(5)", "expected a condition after '(' at column 2, found '5'", 2),
        ("and", "expected a condition at column 1, found 'and'", 1),
        ("(state eq 'a'", "expected ')' at column 14, found the end of the filter", 14),
        ("state eq 'a')", "expected 'and', 'or' or the end of the filter at column 13", 13),
        ("state eq 'a' eq 'b'", "expected 'and', 'or' or the end of the filter at column 14", 14),
        ("state eq 'a' 'b'", "at column 14, found 'b'", 14),
        ("state eq 'a", "unterminated string starting at column 10", 10),
        ("id eq 'it''s", "unterminated string starting at column 7", 7),
        ("state eq 'a' #", "unexpected character '#' at column 14", 14),
        ("id eq \u2018a\u2019", "unexpected character '\u2018' at column 7", 7),
        ("-x eq 1", "unexpected character '-' at column 1", 1),
        ("exitCode eq 5x", "malformed number '5x' at column 13", 13),
        ("exitCode eq 1.2.3", "malformed number '1.2.3' at column 13", 13),
        ("exitCode eq 1.", "malformed number '1.' at column 13", 13),
        ("executionInfo/ eq 1", "expected a property name after '/' at column 15", 15),
        ("/id eq 1", "unexpected character '/' at column 1", 1),
        ("state = 'a'", "unknown operator '=' at column 7: write eq", 7),
        ("state == 'a'", "unknown operator '==' at column 7: write eq", 7),
        ("exitCode >= 1", "unknown operator '>=' at column 10: write ge", 10),
        ("state eq 'a' && id eq 'b'", "unknown operator '&&' at column 14: write and", 14),
        ("!startswith(id, 'a')", "unknown operator '!' at column 1: write not", 1),
        ("id has 'a'", "unknown operator 'has' at column 4", 4),
        ("exitCode add 1 eq 2", "unknown operator 'add' at column 10", 10),
        ("id eq 'a' xor id eq 'b'", "unknown operator 'xor' at column 11", 11),
        ("endswith(id, 'a')", "unknown function 'endswith' at column 1", 1),
        ("state eq tolower('A')", "unknown function 'tolower' at column 10", 10),
        (
            "startswith('a', id)",
            "expected a property path as startswith's first argument at column 12",
            12,
        ),
        ("startswith(id, 5)", "expected a string as startswith's second argument at column 16", 16),
        (
            "startswith(id, name)",
            "expected a string as startswith's second argument at column 16",
            16,
        ),
        (
            "startswith(id)",
            "expected ',' and a string after startswith's first argument at column 14",
            14,
        ),
        (
            "startswith(id 'a')",
            "expected ',' and a string after startswith's first argument at column 15",
            15,
        ),
        ("startswith(id, 'a'", "expected ')' after startswith's two arguments at column 19", 19),
        (
            "startswith(id, 'a', 'b')",
            "expected ')' after startswith's two arguments at column 19",
            19,
        ),
        ("guid'abc' eq id", "unknown literal type 'guid' at column 1", 1),
        ("creationTime gt datetime'yesterday'", "invalid datetime 'yesterday' at column 17", 17),
        ("creationTime gt datetime'2025-13-01T00:00:00Z'", "invalid datetime", 17),
        ("creationTime gt datetime'2025-06-01", "unterminated string starting at column 25", 25),
        ("not state eq 'a'", "'not' at column 1 applies only to the value right after it", 1),
        ("id eq 'a' or not state ne 'b'", "'not' at column 14 applies only to the value", 14),
    ],
)
def test_malformed_filter_names_the_column(text: str, message: str, column: int):
    with pytest.raises(BadInput) as caught:
        parse_filter(text)
    error = caught.value
    assert error.code == "InvalidQueryParameterValue"
    assert error.field == "$filter"
    assert error.exit_status == 2
    assert error.message.startswith("$filter: ")
    assert message in error.message
    assert error.details == {"column": column}


def test_a_filter_at_the_length_limit_parses_and_one_past_it_is_refused():
    clause = "id eq 'x' or "
    text = clause * ((MAX_LENGTH - 9) // len(clause)) + "id eq 'x'"
    text += " " * (MAX_LENGTH - len(text))
    assert len(text) == MAX_LENGTH
    assert parse_filter(text).matches({"id": "X"})
    assert not parse_filter(text).matches({"id": "y"})
    with pytest.raises(BadInput, match="longer than 4096 characters") as caught:
        parse_filter(text + " ")
    assert caught.value.field == "$filter"


def test_long_chains_of_and_and_or_evaluate_without_deep_recursion():
    ands = " and ".join(["e ge 0"] * 370)
    ors = " or ".join(["e lt 0"] * 400)
    assert len(ands) < MAX_LENGTH and len(ors) < MAX_LENGTH
    assert parse_filter(ands).matches({"e": 0})
    assert not parse_filter(ands).matches({"e": -1})
    assert parse_filter(ors).matches({"e": -1})
    assert not parse_filter(ors).matches({"e": 0})


def test_a_long_string_literal_is_one_value():
    long_id = "x" * (MAX_LENGTH - 20)
    assert parse_filter(f"id eq '{long_id}'").matches({"id": long_id.upper()})


@pytest.mark.parametrize(
    ("opening", "closing", "levels"),
    [("(", ")", 1), ("not (", ")", 2), ("not ", "", 1), ("startswith(id, 'a') eq (", ")", 1)],
)
def test_nesting_up_to_the_depth_limit_parses_and_deeper_is_refused(opening, closing, levels):
    """Each parenthesis, not and call is a level; the innermost comparison has its own."""

    def nested(times: int) -> str:
        return opening * times + "(state eq 'completed')" + closing * times

    assert parse_filter(nested((MAX_DEPTH - 1) // levels)).matches(FAILED) in (True, False)
    with pytest.raises(BadInput, match=f"nested more than {MAX_DEPTH} levels deep at column"):
        parse_filter(nested(MAX_DEPTH // levels + 1))
    with pytest.raises(BadInput, match="nested more than"):
        parse_filter(opening * (MAX_LENGTH // len(opening)))


def test_nesting_inside_startswith_counts_toward_the_depth():
    text = "(" * (MAX_DEPTH - 1) + "startswith(id, 'r')" + ")" * (MAX_DEPTH - 1)
    assert parse_filter(text).matches(FAILED)
    with pytest.raises(BadInput, match="nested more than 32 levels deep at column 33"):
        parse_filter("(" + text + ")")


def test_a_filter_keeps_its_text_and_is_reusable():
    flt = parse_filter("state eq 'completed'")
    assert flt.text == "state eq 'completed'"
    assert [flt.matches(o) for o in (FAILED, ACTIVE, SUCCEEDED)] == [True, False, True]


def test_filtering_ten_thousand_tasks_is_quick():
    import time

    tasks = [FAILED | {"id": f"t{i:05}"} for i in range(10_000)]
    flt = parse_filter(
        "(state eq 'completed' and executionInfo/result eq 'failure') or startswith(id, 't0')"
    )
    began = time.perf_counter()
    assert sum(flt.matches(t) for t in tasks) == 10_000
    assert time.perf_counter() - began < 1.0


# ---------------------------------------------------------------------------- properties

FILTER_WORDS = [
    "state",
    "executionInfo/exitCode",
    "id",
    "eq",
    "ne",
    "gt",
    "le",
    "and",
    "or",
    "not",
    "(",
    ")",
    ",",
    "'a'",
    "'it''s'",
    "'",
    "0",
    "-1",
    "2.5",
    "true",
    "null",
    "startswith(",
    "datetime'2025-06-01T10:00:00Z'",
    "datetime'0001-01-01T00:00:00+05:00'",
    "datetime'9999-12-31T23:59:59-05:00'",
    "datetime'Sun, 01 Jun 2025 10:00:00 +9999'",
    "datetime'x'",
    "==",
    "/",
]
token_soup = st.lists(st.sampled_from(FILTER_WORDS), max_size=30).map(" ".join)
OBJECTS: list[dict[str, Any]] = [
    FAILED,
    ACTIVE,
    {},
    {"id": None, "state": 5, "executionInfo": [1], "creationTime": "0001-01-01T00:00:00+05:00"},
    {"state": {"x": 1}, "id": True, "executionInfo": {"exitCode": "3"}},
]


@settings(max_examples=500, deadline=timedelta(seconds=2))
@given(st.text(max_size=300))
def test_parse_filter_raises_only_bad_input_on_any_text(text: str):
    try:
        flt = parse_filter(text)
    except BadInput as error:
        assert error.code == "InvalidQueryParameterValue"
        assert error.field == "$filter"
    else:
        for obj in OBJECTS:
            assert flt.matches(obj) in (True, False)


@settings(max_examples=500, deadline=timedelta(seconds=2))
@given(token_soup)
def test_filters_that_parse_answer_true_or_false_on_any_object(text: str):
    try:
        flt = parse_filter(text)
    except BadInput as error:
        assert "column" in error.details
        return
    for obj in OBJECTS:
        assert flt.matches(obj) in (True, False)


@settings(max_examples=200, deadline=timedelta(seconds=2))
@given(st.text(alphabet=string.printable, max_size=60))
def test_quoted_strings_round_trip_through_the_escape(value: str):
    literal = "'" + value.replace("'", "''") + "'"
    assert parse_filter(f"name eq {literal}").matches({"name": value})
    assert parse_filter(f"startswith(name, {literal})").matches({"name": value + "tail"})


# ---------------------------------------------------------------------------- $select


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("*", None),
        ("id", ["id"]),
        ("id,state", ["id", "state"]),
        (" id , state ,executionInfo ", ["id", "state", "executionInfo"]),
        ("id,state,id", ["id", "state"]),
        ("stats", ["stats"]),
        ("State", ["State"]),
    ],
)
def test_parse_select(text: str | None, expected: list[str] | None):
    assert parse_select(text) == expected


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("id,,state", "expected a name at column 4", 4),
        ("id,", "expected a name at column 4", 4),
        (",id", "expected a name at column 1", 1),
        ("id, ", "expected a name at column 5", 5),
        ("id, state ,  ", "expected a name at column 14", 14),
        ("id,executionInfo/exitCode", "only top-level properties can be selected", 4),
        ("id, st ate", "expected a property name at column 5, found 'st ate'", 5),
        ("id,9lives", "expected a property name at column 4, found '9lives'", 4),
        ("id,*", "expected a property name at column 4, found '*'", 4),
    ],
)
def test_malformed_select_names_the_column(text: str, message: str, column: int):
    with pytest.raises(BadInput) as caught:
        parse_select(text)
    assert caught.value.code == "InvalidQueryParameterValue"
    assert caught.value.field == "$select"
    assert caught.value.message.startswith("$select: ")
    assert message in caught.value.message
    assert caught.value.details == {"column": column}


def test_select_keeps_the_named_properties_in_the_objects_order():
    fields = parse_select("state, id, nosuch")
    assert select(FAILED, fields) == {"id": "render-007", "state": "completed"}
    assert list(select(FAILED, fields)) == ["id", "state"]
    assert select(FAILED, parse_select("")) == FAILED
    assert select(FAILED, ["State"]) == {}
    assert "odata.metadata" not in select(FAILED | {"odata.metadata": "x"}, ["id"])


def test_select_of_a_long_list_is_refused_past_the_limit():
    with pytest.raises(BadInput, match="longer than 4096") as caught:
        parse_select("id," * 1366)
    assert caught.value.field == "$select"


# ---------------------------------------------------------------------------- $expand


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, set()),
        ("", set()),
        ("stats", {"stats"}),
        (" stats ", {"stats"}),
        ("stats,stats", {"stats"}),
    ],
)
def test_parse_expand(text: str | None, expected: set[str]):
    assert parse_expand(text) == expected


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("Stats", "cannot expand 'Stats' (column 1): Azure Batch expands stats only", 1),
        ("stats,nodes", "cannot expand 'nodes' (column 7)", 7),
        ("stats,", "expected a name at column 7", 7),
        ("*", "cannot expand '*'", 1),
    ],
)
def test_unknown_expand_is_refused(text: str, message: str, column: int):
    with pytest.raises(BadInput) as caught:
        parse_expand(text)
    assert caught.value.code == "InvalidQueryParameterValue"
    assert caught.value.field == "$expand"
    assert message in caught.value.message
    assert caught.value.details == {"column": column}


@pytest.mark.parametrize(
    ("select_text", "expand_text", "expected"),
    [
        (None, None, False),
        (None, "stats", True),
        ("id,stats", None, True),
        ("id,state", None, False),
        ("id", "stats", True),
    ],
)
def test_stats_come_with_expand_or_when_selected(select_text, expand_text, expected):
    assert wants_stats(parse_select(select_text), parse_expand(expand_text)) is expected


# ---------------------------------------------------------------------------- maxresults


@pytest.mark.parametrize(
    ("text", "kwargs", "expected"),
    [
        (None, {}, 1000),
        ("", {}, 1000),
        ("1", {}, 1),
        ("1000", {}, 1000),
        (" 250 ", {}, 250),
        ("007", {}, 7),
        (None, {"default": 100, "limit": 100}, 100),
        ("100", {"limit": 100}, 100),
    ],
)
def test_parse_maxresults(text: str | None, kwargs: dict[str, int], expected: int):
    assert parse_maxresults(text, **kwargs) == expected


@pytest.mark.parametrize(
    ("text", "kwargs"),
    [
        ("0", {}),
        ("1001", {}),
        ("101", {"limit": 100}),
        ("-5", {}),
        ("+5", {}),
        ("1.5", {}),
        ("1e3", {}),
        ("ten", {}),
        ("1_000", {}),
        ("\u0661\u0662", {}),
        ("9" * 5000, {}),
    ],
)
def test_bad_maxresults_is_refused(text: str, kwargs: dict[str, int]):
    with pytest.raises(BadInput) as caught:
        parse_maxresults(text, **kwargs)
    assert caught.value.code == "InvalidQueryParameterValue"
    assert caught.value.field == "maxresults"
    assert "expected a whole number from 1 to" in caught.value.message
    assert len(caught.value.message) < 200


# ---------------------------------------------------------------------------- paging

BASE = "http://127.0.0.1:8443/jobs/job%201/tasks"


@pytest.mark.parametrize(
    "query",
    [
        [("api-version", "2025-06-01")],
        [
            ("api-version", "2025-06-01"),
            ("$filter", "state eq 'completed' and startswith(id, 'a&b=c')"),
            ("$select", "id,state"),
            ("$expand", "stats"),
            ("maxresults", "100"),
            ("timeOut", "30"),
        ],
        [("$filter", "creationTime gt datetime'2025-06-01T10:00:00+02:00'"), ("maxresults", "5")],
        [("$filter", "displayName eq 'caf\u00e9 %20 #1 / 50%'"), ("$skiptoken", "old-token")],
        [("$SkipToken", "older"), ("api-version", "2024-07-01.20.0")],
    ],
)
def test_next_link_round_trips_every_option_and_replaces_the_token(query):
    link = next_link(BASE, query, "task-0099")
    parts = urlsplit(link)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "http",
        "127.0.0.1:8443",
        "/jobs/job%201/tasks",
    )
    assert parts.fragment == ""
    kept = [(k, v) for k, v in query if k.lower() != "$skiptoken"]
    assert parse_qsl(parts.query, keep_blank_values=True) == [*kept, ("$skiptoken", "task-0099")]
    assert " " not in link and "'" not in link and "+" not in parts.query


def test_next_link_survives_the_v15_sdks_reparsing():
    """azure-batch 15.x reads the link back with parse_qs, then quotes each value again."""
    flt = (
        "executionInfo/result eq 'failure' and creationTime ge datetime'2025-06-01T10:00:00+02:00'"
    )
    link = next_link(BASE, [("$filter", flt), ("api-version", "2025-06-01")], "t 1")
    params = parse_qs(urlsplit(link).query)
    assert params == {"$filter": [flt], "api-version": ["2025-06-01"], "$skiptoken": ["t 1"]}


def test_next_link_drops_the_base_urls_own_query_and_needs_an_absolute_url():
    link = next_link(BASE + "?stale=1#frag", [("maxresults", "2")], "t0001")
    assert link == BASE + "?maxresults=2&$skiptoken=t0001"
    with pytest.raises(ValueError, match="absolute"):
        next_link("/jobs/j/tasks", [], "t")
