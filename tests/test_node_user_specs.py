"""Node user JSON validation: names, keys and expiry times are checked before anything runs."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet.errors import BadInput
from fleet.node_users import DEFAULT_EXPIRY_SECONDS, expire_date, parse_node_user

NOW = 1_900_000_000.0  # 2030-03-17T17:46:40Z
KEY = (
    Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    .decode()
)
BLOB = KEY.split()[1]


def test_a_node_user_defaults_to_a_non_admin_expiring_in_one_day():
    user = parse_node_user({"name": "alice"}, "node user n", NOW)
    assert user == {
        "name": "alice",
        "isAdmin": False,
        "expiryTime": NOW + DEFAULT_EXPIRY_SECONDS,
        "password": None,
        "sshPublicKey": None,
    }


def test_a_key_line_with_a_comment_and_an_explicit_expiry_are_kept():
    user = parse_node_user(
        {"name": "bob", "isAdmin": True, "expiryTime": "2030-03-18T00:00:00+01:00",
         "sshPublicKey": f"  {KEY} bob@laptop \n"},
        "node user n",
        NOW,
    )  # fmt: skip
    assert user["sshPublicKey"] == f"{KEY} bob@laptop"
    assert user["expiryTime"] == NOW + 6 * 3600 + 13 * 60 + 20 - 3600
    assert expire_date(user["expiryTime"]) == "2030-03-17"


@pytest.mark.parametrize(
    ("data", "field", "code"),
    [
        ({}, "name", "MissingRequiredProperty"),
        ({"name": "Alice"}, "name", "InvalidPropertyValue"),
        ({"name": "a;rm -rf /"}, "name", "InvalidPropertyValue"),
        ({"name": "-a"}, "name", "InvalidPropertyValue"),
        ({"name": "a" * 33}, "name", "InvalidPropertyValue"),
        ({"name": "a", "isAdmin": "yes"}, "isAdmin", "InvalidPropertyValue"),
        ({"name": "a", "password": ""}, "password", "InvalidPropertyValue"),
        ({"name": "a", "password": "x" * 257}, "password", "InvalidPropertyValue"),
        ({"name": "a", "expiryTime": "2030-03-17T17:00:00Z"}, "expiryTime", None),
        ({"name": "a", "expiryTime": "2031-01-01T00:00:00"}, "expiryTime", None),
        ({"name": "a", "expiryTime": "soon"}, "expiryTime", None),
        ({"name": "a", "expiryTime": 5}, "expiryTime", None),
        ({"name": "a", "sshPublicKey": f"no-pty {KEY}"}, "sshPublicKey", "InvalidSshPublicKey"),
        ({"name": "a", "sshPublicKey": f"{KEY}\n{KEY}"}, "sshPublicKey", "InvalidSshPublicKey"),
        ({"name": "a", "sshPublicKey": f"{KEY} a\rb"}, "sshPublicKey", "InvalidSshPublicKey"),
        ({"name": "a", "sshPublicKey": "ssh-ed25519 AAAA"}, "sshPublicKey", "InvalidSshPublicKey"),
        ({"name": "a", "sshPublicKey": f"ssh-rsa {BLOB}"}, "sshPublicKey", "InvalidSshPublicKey"),
        ({"name": "a", "sshPublicKey": f"ssh-dss {BLOB}"}, "sshPublicKey", "InvalidSshPublicKey"),
        ({"name": "a", "sshPublicKey": ["k"]}, "sshPublicKey", "InvalidPropertyValue"),
        ({"name": "a", "homeDir": "/"}, "homeDir", None),
    ],
)
def test_bad_node_users_are_refused_naming_the_field(data, field, code):
    with pytest.raises(BadInput) as info:
        parse_node_user(data, "node user n", NOW)
    assert info.value.target == "node user n"
    assert info.value.field == field
    assert info.value.exit_status == 2
    if code:
        assert info.value.code == code


def test_a_key_whose_data_names_another_type_is_refused():
    blob = base64.b64decode(BLOB)
    fake = base64.b64encode(b"\x00\x00\x00\x07ssh-rsa" + blob[15:]).decode()
    with pytest.raises(BadInput, match="not a valid ssh-rsa key|not a ssh-rsa key"):
        parse_node_user({"name": "a", "sshPublicKey": f"ssh-rsa {fake}"}, "node user n", NOW)


def test_what_node_user_list_prints_is_accepted_as_input():
    from fleet.service.node_users import view
    from fleet.tables import NodeUser

    row = NodeUser(
        node_id="n", name="bob", pool_id="p", is_admin=True, expiry_time=NOW + 3600,
        has_password=True, created_at=NOW,
    )  # fmt: skip
    again = parse_node_user(view(row), "node user n", NOW)
    assert (again["name"], again["isAdmin"], again["expiryTime"]) == ("bob", True, NOW + 3600)
