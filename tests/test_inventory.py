"""Tests for fleet.inventory: data-driven cases under tests/cases/inventory, plus properties."""

from __future__ import annotations

import json
import shlex
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.errors import BadInput
from fleet.inventory import FORMATS, HostSpec, detect_format, parse_inventory

CASES = Path(__file__).parent / "cases" / "inventory"
INPUTS = sorted(p for p in CASES.iterdir() if p.suffix != ".json")
DEFAULTS = {f.name: f.default for f in fields(HostSpec) if f.name not in ("id", "address")}
DEFAULTS["labels"] = {}


def expected_hosts(entries: list[dict]) -> list[dict]:
    """Fill the fields a case file leaves out with HostSpec's defaults."""
    return [{**DEFAULTS, **entry} for entry in entries]


def test_every_inventory_case_has_an_input_and_an_expectation():
    expectations = {p.stem for p in CASES.glob("*.json")}
    inputs = [p.stem for p in INPUTS]
    assert sorted(inputs) == sorted(expectations)
    assert len(inputs) == len(set(inputs)), "two inputs share one expectation file"


@pytest.mark.parametrize("path", INPUTS, ids=[p.name for p in INPUTS])
def test_inventory_case_parses_as_its_json_file_says(path: Path):
    case = json.loads(path.with_suffix(".json").read_text())
    text = path.read_text()
    assert detect_format(text, path.name) == case["format"]
    if "error" in case:
        want = case["error"]
        with pytest.raises(BadInput) as info:
            parse_inventory(text, filename=path.name)
        err = info.value
        assert err.code == want["code"]
        assert err.details == {"line": want["line"]}
        assert err.target == path.name
        assert err.message.startswith(f"{path.name}:{want['line']}: ")
        assert want["message"] in err.message
    else:
        hosts = parse_inventory(text, filename=path.name)
        assert [h.to_dict() for h in hosts] == expected_hosts(case["hosts"])


@pytest.mark.parametrize(
    ("filename", "text", "fmt"),
    [
        ("hosts", "[web]\nweb1\n", "ansible-ini"),
        ("hosts", "web1 ansible_host=10.0.0.1\n", "ansible-ini"),
        ("inventory", "; comment\nweb1\n", "ansible-ini"),
        ("inventory", "# comment\nall:\n  hosts:\n", "ansible-yaml"),
        ("inventory", "---\nweb:\n", "ansible-yaml"),
        ("hosts.ini", "Host web1\n", "ansible-ini"),
        ("hosts.yaml", "[web]\n", "ansible-yaml"),
        ("config", "ServerAliveInterval 30\n", "ssh-config"),
        ("lab", "host=web1\n  User x\n", "ssh-config"),
        ("my_ssh_config", "", "ssh-config"),
        ("vagrant-boxes", "Host default\n  HostName 127.0.0.1\n", "vagrant"),
        (
            "boxes",
            "Host b\n  IdentityFile /x/.vagrant/machines/b/virtualbox/private_key\n",
            "vagrant",
        ),
        ("", "", "ansible-ini"),
    ],
)
def test_format_is_detected_from_name_and_first_line(filename: str, text: str, fmt: str):
    assert detect_format(text, filename) == fmt
    assert fmt in FORMATS


def test_ssh_config_without_all_three_vagrant_lines_is_plain_ssh_config():
    text = "Host a\n  UserKnownHostsFile /dev/null\n  IdentitiesOnly yes\n"
    assert detect_format(text, "boxes") == "ssh-config"


def test_explicit_format_overrides_detection():
    hosts = parse_inventory("Host web1\n  Port 2201\n", filename="hosts.ini", fmt="ssh-config")
    assert [(h.id, h.port) for h in hosts] == [("web1", 2201)]


def test_vagrant_format_labels_hosts_but_plain_ssh_config_does_not():
    text = "Host box\n  HostName 127.0.0.1\n"
    assert parse_inventory(text, filename="x", fmt="vagrant")[0].labels == {"vagrant": "true"}
    assert parse_inventory(text, filename="x", fmt="ssh-config")[0].labels == {}


def test_unknown_format_is_refused():
    with pytest.raises(BadInput) as info:
        parse_inventory("web1\n", filename="hosts", fmt="toml")
    assert info.value.code == "InvalidInventoryFormat"


def test_host_spec_is_hashable_and_compares_labels():
    a = HostSpec(id="a", address="10.0.0.1", labels={"web": "true"})
    b = HostSpec(id="a", address="10.0.0.1", labels={"web": "true"})
    c = HostSpec(id="a", address="10.0.0.1", labels={"db": "true"})
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2


def test_hosts_do_not_share_one_labels_dict():
    hosts = parse_inventory("[web]\nweb[1:2]\n", filename="hosts")
    hosts[0].labels["extra"] = "x"
    assert "extra" not in hosts[1].labels


def test_group_variables_on_an_empty_group_are_still_checked():
    with pytest.raises(BadInput) as info:
        parse_inventory("[spare:vars]\nansible_port=0\n", filename="hosts")
    assert info.value.details == {"line": 2}


def test_ten_thousand_ranged_hosts_expand_with_inherited_labels():
    text = "[compute]\nnode[00001:10000] ansible_user=batch\n[rack:children]\ncompute\n"
    hosts = parse_inventory(text, filename="big.ini")
    assert len(hosts) == 10_000
    assert hosts[-1].id == "node10000" and hosts[-1].labels == {"compute": "true", "rack": "true"}


host_ids = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
users = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
ports = st.integers(min_value=1, max_value=65535)


@given(st.dictionaries(host_ids, st.tuples(ports, users), min_size=1, max_size=20))
def test_ansible_ini_written_from_hosts_parses_back_to_the_same_hosts(hosts: dict):
    lines = ["[pool]"] + [
        f"{h} ansible_port={port} ansible_user={user}" for h, (port, user) in hosts.items()
    ]
    parsed = parse_inventory("\n".join(lines) + "\n", filename="gen.ini")
    assert [(h.id, h.port, h.user) for h in parsed] == [
        (h, port, user) for h, (port, user) in hosts.items()
    ]
    assert all(h.labels == {"pool": "true"} for h in parsed)


@given(st.dictionaries(host_ids, st.tuples(ports, users), min_size=1, max_size=20))
def test_ssh_config_written_from_hosts_parses_back_to_the_same_hosts(hosts: dict):
    text = "".join(f"Host {h}\n  Port {port}\n  User {user}\n" for h, (port, user) in hosts.items())
    parsed = parse_inventory(text, filename="gen_ssh_config")
    assert [(h.id, h.port, h.user) for h in parsed] == [
        (h, port, user) for h, (port, user) in hosts.items()
    ]


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from("[]:=#;\"' \n-*abc01Hostal"), max_size=80))
@pytest.mark.parametrize("fmt", FORMATS)
def test_any_text_either_parses_or_raises_bad_input(fmt: str, text: str):
    try:
        hosts = parse_inventory(text, filename="fuzz", fmt=fmt)
    except BadInput as err:
        assert err.code == "InventoryParseError"
        assert isinstance(err.details["line"], int) and err.details["line"] >= 1
    else:
        assert all(isinstance(h, HostSpec) for h in hosts)


EXAMPLES_DIR = Path(__file__).parent.parent / "inventory"
EXAMPLES = sorted(EXAMPLES_DIR.glob("example.*"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_shipped_example_inventories_parse(path: Path):
    hosts = parse_inventory(path.read_text(), filename=path.name)
    assert hosts and all(h.source.startswith(f"{path.name}:") for h in hosts)


def test_ini_and_yaml_examples_describe_the_same_hosts():
    def parsed(name: str) -> list[dict]:
        hosts = parse_inventory((EXAMPLES_DIR / name).read_text(), filename=name)
        return sorted(({**h.to_dict(), "source": ""} for h in hosts), key=lambda d: d["id"])

    assert parsed("example.ini") == parsed("example.yml")


def test_explicit_ansible_port_beats_the_port_in_the_host_name():
    hosts = parse_inventory("[web]\nweb1:2201 ansible_port=2202\nweb2:2203\n", filename="h")
    assert [h.port for h in hosts] == [2202, 2203]


_ARG = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x85"),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_ARG, min_size=1, max_size=5).filter(lambda argv: argv[0] != ""))
def test_hook_command_quoted_on_an_ini_host_line_round_trips(argv: list[str]) -> None:
    # What `fleet lab up` writes: the argv joined as a command line, quoted once more.
    text = f"h1 fleet_reboot_command={shlex.quote(shlex.join(argv))}\n"
    (host,) = parse_inventory(text, filename="inv.ini")
    assert host.reboot_command == argv


def test_hook_commands_take_no_part_in_labels() -> None:
    (host,) = parse_inventory("h1 fleet_reboot_command=reboot\n", filename="inv.ini")
    assert host.labels == {} and host.reboot_command == ["reboot"]
