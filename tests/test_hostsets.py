"""Tests for fleet.hostsets: node-set ranges, host id rules and host selection patterns."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.errors import BadInput, NotFound
from fleet.hostsets import HOST_ID_RE, MAX_EXPANSION, expand, select, split_items, validate_host_id

INVENTORY = ["web1", "web2", "web3", "weba", "webb", "db01", "db02", "node08", "node09", "node10"]


@pytest.mark.parametrize(
    ("pattern", "names"),
    [
        ("web1", ["web1"]),
        ("node[01:03]", ["node01", "node02", "node03"]),
        ("node[1-3]", ["node1", "node2", "node3"]),
        ("node[01-03]", ["node01", "node02", "node03"]),
        ("node[8:10]", ["node8", "node9", "node10"]),
        ("node[08:10]", ["node08", "node09", "node10"]),
        ("node[008:10]", ["node008", "node009", "node010"]),
        ("node[1:10:3]", ["node1", "node4", "node7", "node10"]),
        ("node[01:09:4]", ["node01", "node05", "node09"]),
        ("node[1,3,5-7]", ["node1", "node3", "node5", "node6", "node7"]),
        ("node[3,1,3]", ["node3", "node1"]),
        ("node[0]", ["node0"]),
        ("[1-2]node", ["1node", "2node"]),
        ("rack[1-2]-node[1:2]", ["rack1-node1", "rack1-node2", "rack2-node1", "rack2-node2"]),
        ("r[1-2]n[01:02].lab", ["r1n01.lab", "r1n02.lab", "r2n01.lab", "r2n02.lab"]),
        (f"n[1:{MAX_EXPANSION}]", [f"n{i}" for i in range(1, MAX_EXPANSION + 1)]),
    ],
)
def test_expand_lists_every_name_of_a_node_set_in_order(pattern: str, names: list[str]):
    assert expand(pattern) == names


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("node[5:1]", "range end is below its start"),
        ("node[5-1]", "range end is below its start"),
        ("node[a:c]", "not a numeric range"),
        ("node[1-3", "unbalanced '['"),
        ("node1-3]", "unbalanced ']'"),
        ("node][1", "unbalanced ']'"),
        ("node[[1-2]]", "nested"),
        ("node[]", "empty brackets"),
        ("node[1,,3]", "empty item"),
        ("node[1-2-3]", "is not a number"),
        ("node[1:2:3:4]", "is not a number"),
        ("node[1:9:0]", "stride must be at least 1"),
        ("node[-1:3]", "is not a number"),
        (f"node[0:{MAX_EXPANSION}]", "more than"),
        ("a[1-100]b[1-101]", "more than"),
        ("", "empty pattern"),
    ],
)
def test_expand_refuses_a_bad_range_naming_the_pattern_and_reason(pattern: str, reason: str):
    with pytest.raises(BadInput) as info:
        expand(pattern)
    assert info.value.code == "InvalidHostPattern"
    assert info.value.target == pattern
    assert repr(pattern) in info.value.message
    assert reason in info.value.message


def test_expand_of_a_huge_range_fails_without_building_it():
    with pytest.raises(BadInput, match="more than"):
        expand("n[0:999999999999999999]")


@pytest.mark.parametrize(
    ("pattern", "selected"),
    [
        ("web1", ["web1"]),
        ("web3,web1", ["web1", "web3"]),
        ("web[1-3]", ["web1", "web2", "web3"]),
        ("web[1:3:2]", ["web1", "web3"]),
        ("web[1,3]", ["web1", "web3"]),
        ("web[ab]", ["weba", "webb"]),
        ("web[!ab]", ["web1", "web2", "web3"]),
        ("web?", ["web1", "web2", "web3", "weba", "webb"]),
        ("db*", ["db01", "db02"]),
        ("*", INVENTORY),
        ("db*, web[1-2] ,db01", ["web1", "web2", "db01", "db02"]),
        ("node[08:10]", ["node08", "node09", "node10"]),
        ("node[08:09],node1*", ["node08", "node09", "node10"]),
        ("db[01:02]*", ["db01", "db02"]),
        ("web1,,web2,", ["web1", "web2"]),
    ],
)
def test_select_returns_matched_ids_in_inventory_order_once_each(pattern: str, selected: list):
    assert select(pattern, INVENTORY) == selected


@pytest.mark.parametrize(
    ("pattern", "missing"),
    [
        ("web9", "web9"),
        ("web1,web9", "web9"),
        ("web[1-4]", "web4"),
        ("node[8:10]", "node8"),
        ("WEB1", "WEB1"),
    ],
)
def test_select_of_a_missing_literal_or_range_member_is_host_not_found(pattern, missing):
    with pytest.raises(NotFound) as info:
        select(pattern, INVENTORY)
    assert info.value.code == "HostNotFound"
    assert missing in info.value.details["missing"]
    assert missing in info.value.message


@pytest.mark.parametrize("pattern", ["x*", "web[xyz]", "db?9", "web1,gpu*"])
def test_select_of_a_glob_matching_nothing_names_the_item(pattern: str):
    with pytest.raises(NotFound) as info:
        select(pattern, INVENTORY)
    assert info.value.code == "HostNotFound"
    assert info.value.details["item"] in pattern
    assert "matches no host" in info.value.message


@pytest.mark.parametrize("pattern", ["", " , ", "web[1-", "web]"])
def test_select_of_a_malformed_pattern_is_bad_input(pattern: str):
    with pytest.raises(BadInput) as info:
        select(pattern, INVENTORY)
    assert info.value.code == "InvalidHostPattern"


def test_bracket_of_digits_is_a_range_and_bracket_with_letters_is_a_glob_class():
    hosts = ["web1", "web2", "web12", "weba"]
    assert select("web[12]", hosts) == ["web12"]
    assert select("web[1-2]", hosts) == ["web1", "web2"]
    assert select("web[a-z]", hosts) == ["weba"]
    assert select("web[!a-z]", hosts) == ["web1", "web2"]


def test_split_items_keeps_commas_inside_brackets():
    assert split_items("web[1,3],db*, node[01:02,05] ") == ["web[1,3]", "db*", "node[01:02,05]"]


@pytest.mark.parametrize("host_id", ["a", "web01", "10.0.0.1", "node-1.lab_x", "A" * 64])
def test_valid_host_ids_are_accepted(host_id: str):
    assert validate_host_id(host_id) == host_id


@pytest.mark.parametrize(
    "host_id", ["", "-web", ".web", "_web", "web 1", "web/1", "A" * 65, "web\n", "wéb", "a:b"]
)
def test_invalid_host_ids_are_refused(host_id: str):
    with pytest.raises(BadInput) as info:
        validate_host_id(host_id)
    assert info.value.code == "InvalidHostId"


prefixes = st.from_regex(r"[a-z][a-z-]{0,10}", fullmatch=True)


@given(prefixes, st.integers(0, 5000), st.integers(0, 300))
def test_expanding_a_range_yields_one_distinct_name_per_number(prefix: str, start: int, span: int):
    names = expand(f"{prefix}[{start}:{start + span}]")
    assert len(names) == len(set(names)) == span + 1
    numbers = [int(re.fullmatch(re.escape(prefix) + r"(\d+)", n).group(1)) for n in names]
    assert numbers == list(range(start, start + span + 1))
    assert expand(f"{prefix}[{start}-{start + span}]") == names


@given(prefixes, st.integers(1, 3), st.integers(0, 99), st.integers(0, 99))
def test_zero_padding_follows_the_start_bound(prefix: str, extra: int, start: int, span: int):
    first = str(start).zfill(len(str(start)) + extra)
    names = expand(f"{prefix}[{first}:{start + span}]")
    suffixes = [n[len(prefix) :] for n in names]
    assert suffixes[0] == first
    assert all(len(s) >= len(first) for s in suffixes)
    assert [int(s) for s in suffixes] == list(range(start, start + span + 1))


@given(prefixes.filter(lambda p: "[" not in p))
def test_a_name_without_brackets_expands_to_itself(name: str):
    assert expand(name) == [name]


inventories = st.lists(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,10}", fullmatch=True),
    min_size=1,
    max_size=30,
    unique=True,
)


@given(inventories, st.data())
def test_select_of_literal_ids_returns_exactly_those_in_inventory_order(ids, data):
    chosen = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=len(ids)))
    assert select(",".join(chosen), ids) == [i for i in ids if i in chosen]


@given(inventories)
def test_select_star_returns_the_whole_inventory(ids):
    assert all(HOST_ID_RE.fullmatch(i) for i in ids)
    assert select("*", ids) == ids
