"""Spec validation: whole-string name patterns, and nothing accepted that the node agent refuses."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet import dependencies, durations, hostsets, inventory, specs
from fleet.errors import BadInput

_JOB = {
    "id": "j",
    "poolInfo": {"poolId": "p"},
    "commonEnvironmentSettings": [{"name": "COMMON", "value": "1"}],
    "jobManagerTask": {
        "id": "manager",
        "commandLine": "true",
        "environmentSettings": [{"name": "M", "value": "1"}],
        "userIdentity": {"username": "worker"},
    },
    "jobPreparationTask": {
        "id": "prep",
        "commandLine": "true",
        "environmentSettings": [{"name": "P", "value": "1"}],
    },
    "jobReleaseTask": {
        "id": "release",
        "commandLine": "true",
        "environmentSettings": [{"name": "R", "value": "1"}],
    },
}
_TASK = {
    "id": "t",
    "commandLine": "true",
    "environmentSettings": [{"name": "FOO", "value": "1"}],
    "userIdentity": {"username": "worker"},
    "dependsOn": {"taskIds": ["parent"]},
    "multiInstanceSettings": {"numberOfInstances": 2, "coordinationCommandLine": "true"},
}
_POOL = {
    "id": "p",
    "hosts": ["h1"],
    "startTask": {"commandLine": "true", "environmentSettings": [{"name": "S", "value": "1"}]},
    "userAccounts": [{"name": "worker"}],
}
_BASE = {"pool": _POOL, "job": _JOB, "task": _TASK}


def _parse(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    if kind == "task":
        return specs.parse_task(spec, "j")
    return specs.parse_pool(spec) if kind == "pool" else specs.parse_job(spec)


def _set(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Return a copy of ``spec`` with ``value`` at dotted ``path`` (``[i]`` indexes a list)."""
    out = copy.deepcopy(spec)
    node: Any = out
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[int(parts[-1]) if parts[-1].isdigit() else parts[-1]] = value
    return out


#: every name a spec validates against a pattern: kind, dotted path, a valid value
NAME_FIELDS = [
    ("pool", "id", "p"),
    ("pool", "startTask.environmentSettings[0].name", "S"),
    ("pool", "userAccounts[0].name", "worker"),
    ("job", "id", "j"),
    ("job", "poolInfo.poolId", "p"),
    ("job", "commonEnvironmentSettings[0].name", "COMMON"),
    ("job", "jobManagerTask.id", "manager"),
    ("job", "jobManagerTask.environmentSettings[0].name", "M"),
    ("job", "jobManagerTask.userIdentity.username", "worker"),
    ("job", "jobPreparationTask.id", "prep"),
    ("job", "jobPreparationTask.environmentSettings[0].name", "P"),
    ("job", "jobReleaseTask.id", "release"),
    ("job", "jobReleaseTask.environmentSettings[0].name", "R"),
    ("task", "id", "t"),
    ("task", "environmentSettings[0].name", "FOO"),
    ("task", "userIdentity.username", "worker"),
    ("task", "dependsOn.taskIds[0]", "parent"),
    ("task", "resourceFiles[0].fileMode", "0755"),
]


@pytest.mark.parametrize(("kind", "path", "valid"), NAME_FIELDS, ids=lambda v: str(v))
def test_a_trailing_newline_is_refused_in_every_validated_name(kind, path, valid):
    spec = _BASE[kind]
    if path.startswith("resourceFiles"):
        spec = spec | {"resourceFiles": [{"httpUrl": "https://example.com/f", "filePath": "f"}]}
    _parse(kind, _set(spec, path, valid))  # the valid value passes
    with pytest.raises(BadInput) as caught:
        _parse(kind, _set(spec, path, valid + "\n"))
    assert caught.value.field in (path, "id")


@pytest.mark.parametrize(
    "check",
    [
        lambda: hostsets.validate_host_id("web1\n"),
        lambda: hostsets.expand("web[1-2\n]"),
        lambda: inventory.parse_inventory('all:\n  vars:\n    "v\\n": 1\n', filename="x.yml"),
        lambda: inventory.parse_inventory('all:\n  children:\n    "g\\n":\n', filename="x.yml"),
        lambda: inventory.parse_inventory('all:\n  hosts:\n    "h\\n":\n', filename="x.yml"),
    ],
    ids=["host id", "host range", "yaml variable", "yaml group", "yaml host"],
)
def test_a_trailing_newline_is_refused_in_inventory_names(check):
    with pytest.raises(BadInput):
        check()


def test_an_id_with_a_trailing_newline_is_not_a_number_in_id_ranges():
    assert dependencies.int_id("7") == 7
    assert dependencies.int_id("7\n") is None


#: (kind, dotted path, value the node agent would refuse)
AGENT_REFUSES = [
    ("task", "commandLine", "echo a\0b"),
    ("task", "commandLine", "'' arg"),
    ("task", "multiInstanceSettings.coordinationCommandLine", "echo \0"),
    ("task", "environmentSettings[0].value", "a\0b"),
    ("task", "constraints.maxWallClockTime", "P100000D"),
    ("task", "constraints.retentionTime", "P100000D"),
    ("pool", "startTask.commandLine", "true\0"),
    ("pool", "startTask.environmentSettings[0].value", "\0"),
    ("job", "commonEnvironmentSettings[0].value", "\0"),
    ("job", "constraints.maxWallClockTime", "P100000D"),
    ("job", "jobManagerTask.commandLine", "sleep\0 1"),
    ("job", "jobManagerTask.constraints.maxWallClockTime", "PT1000000000S"),
    ("job", "jobPreparationTask.commandLine", "\0"),
    ("job", "jobPreparationTask.constraints.maxWallClockTime", "P11575D"),
    ("job", "jobReleaseTask.commandLine", "true \0"),
    ("job", "jobReleaseTask.retentionTime", "P100000D"),
]


@pytest.mark.parametrize(("kind", "path", "value"), AGENT_REFUSES, ids=lambda v: repr(v))
def test_what_the_node_agent_would_refuse_is_refused_naming_the_field(kind, path, value):
    with pytest.raises(BadInput) as caught:
        _parse(kind, _set(_BASE[kind], path, value))
    assert caught.value.field is not None
    assert path.split(".")[-1].split("[")[0] in caught.value.field


def test_azure_unlimited_duration_means_no_limit():
    task = specs.parse_task(_TASK | {"constraints": {"maxWallClockTime": durations.UNLIMITED}}, "j")
    assert specs.constraint_seconds(task, "maxWallClockTime") is None
    assert durations.parse("P11574DT1H46M39S") == 999_999_999


def test_a_release_task_limit_is_read_from_its_top_level_as_azure_writes_it():
    job = specs.parse_job(_set(_JOB, "jobReleaseTask.maxWallClockTime", "PT2M"))
    assert job["jobReleaseTask"]["maxWallClockTime"] == "PT2M"
    assert specs.constraint_seconds(job["jobReleaseTask"], "maxWallClockTime") == 120


@given(st.floats(min_value=1e-7, max_value=999_999_999))
def test_a_formatted_duration_parses_back_to_the_same_text(seconds):
    text = durations.format_seconds(seconds)
    assert durations.format_seconds(durations.parse(text)) == text


def test_an_inventory_with_a_nul_byte_is_refused_naming_the_line():
    text = "[web]\nweb1 ansible_host=192.0.2.1 fleet_node_root='/srv/\0fleet'\n"
    with pytest.raises(BadInput) as caught:
        inventory.parse_inventory(text, filename="inv.ini")
    assert caught.value.code == "InventoryParseError" and caught.value.details == {"line": 2}


def test_a_password_hash_is_sha512_crypt_that_the_system_accepts():
    import subprocess

    from fleet.passwords import crypt_sha512

    hashed = crypt_sha512("s3cret pass")
    assert hashed.startswith("$6$") and "s3cret" not in hashed
    salt = hashed.split("$")[2]
    expected = subprocess.run(
        ["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
        input="s3cret pass",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert hashed == expected


_SELECTOR_POOL = {
    "id": "p",
    "hostSelector": {"labels": {"role": "worker"}},
    "targetDedicatedNodes": 2,
}

#: (case, pool spec, field named, error code)
BAD_HOST_SELECTION = [
    ("neither hosts nor selector", {"id": "p"}, "hosts", "MissingRequiredProperty"),
    (
        "both hosts and selector",
        _SELECTOR_POOL | {"hosts": ["h1"]},
        "hostSelector",
        "ConflictingProperties",
    ),
    ("selector not an object", {"id": "p", "hostSelector": ["role"]}, "hostSelector", None),
    (
        "selector without labels",
        {"id": "p", "hostSelector": {}},
        "hostSelector.labels",
        "MissingRequiredProperty",
    ),
    (
        "unknown selector property",
        {"id": "p", "hostSelector": {"labels": {}, "role": "x"}},
        "hostSelector.role",
        "UnknownProperty",
    ),
    (
        "a label value that is no string",
        {"id": "p", "hostSelector": {"labels": {"cores": 8}}},
        "hostSelector.labels.cores",
        None,
    ),
    (
        "negative target",
        _SELECTOR_POOL | {"targetDedicatedNodes": -1},
        "targetDedicatedNodes",
        None,
    ),
    (
        "target not an int",
        _SELECTOR_POOL | {"targetDedicatedNodes": "2"},
        "targetDedicatedNodes",
        None,
    ),
    (
        "low-priority nodes",
        _SELECTOR_POOL | {"targetLowPriorityNodes": 1},
        "targetLowPriorityNodes",
        None,
    ),
    (
        "low-priority nodes on a hosts pool",
        _POOL | {"targetLowPriorityNodes": 2},
        "targetLowPriorityNodes",
        None,
    ),
    (
        "a hosts pool's target is its host count",
        _POOL | {"targetDedicatedNodes": 3},
        "targetDedicatedNodes",
        None,
    ),
    (
        "resizeTimeout not ISO 8601",
        _SELECTOR_POOL | {"resizeTimeout": "15m"},
        "resizeTimeout",
        "InvalidDuration",
    ),
]


@pytest.mark.parametrize(
    ("case", "spec", "field", "code"),
    BAD_HOST_SELECTION,
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_bad_host_selection_is_refused_naming_the_field(case, spec, field, code):
    with pytest.raises(BadInput) as caught:
        specs.parse_pool(spec)
    assert caught.value.field == field, case
    assert caught.value.code == (code or "InvalidPropertyValue"), case


def test_a_selector_pool_is_normalized_and_parses_back_unchanged():
    spec = specs.parse_pool(
        _SELECTOR_POOL
        | {"hostSelector": {"labels": {"z": "1", "a": "2"}}, "targetLowPriorityNodes": 0}
        | {"resizeTimeout": "PT900S"}
    )
    assert spec["hostSelector"] == {"labels": {"a": "2", "z": "1"}}
    assert spec["targetDedicatedNodes"] == 2 and "hosts" not in spec
    assert spec["resizeTimeout"] == "PT15M" and "targetLowPriorityNodes" not in spec
    assert specs.parse_pool(spec) == spec
    assert (
        specs.parse_pool({"id": "p", "hostSelector": {"labels": {}}})["targetDedicatedNodes"] == 0
    )


def test_a_host_matches_when_every_selector_label_is_its_own():
    selector = {"labels": {"role": "worker", "zone": "a"}}
    assert specs.selector_matches(selector, {"role": "worker", "zone": "a", "gpu": "true"})
    assert not specs.selector_matches(selector, {"role": "worker"})
    assert not specs.selector_matches(selector, {"role": "worker", "zone": "b"})
    assert specs.selector_matches({"labels": {}}, {})
