"""Pools and certificates: references checked, files on the node before the start task,
delete refused while referenced, pool user passwords kept as secrets."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from passlib.hash import sha512_crypt
from sqlalchemy import text

from fleet.errors import Conflict, NotFound
from fleet.inventory import HostSpec
from fleet.secret_store import SecretStore
from fleet.service import certificates, hosts, pools
from fleet.settings import Settings
from fleet.store import Store
from tests.cert_files import key_pem, make_cert, sha1, write_pem, write_pfx
from tests.conftest import pg_database, wait_for_idle_nodes

PFX_PASSWORD = b"pfx-pass-91c3"
USER_PASSWORD = "pool-user-pw-5e2a77"


@pytest.fixture
def offline(fleet, tmp_path):
    """The CLI with two made-up hosts (never contacted)."""
    (tmp_path / "inv.ini").write_text("n1 ansible_host=192.0.2.1\nn2 ansible_host=192.0.2.2\n")
    fleet("host", "import", str(tmp_path / "inv.ini"))
    return fleet


def _pool(fleet, spec, check=True):
    return fleet(
        "pool", "create", "--json-file", "-", "-o", "json", input=json.dumps(spec), check=check
    )


def test_a_reference_to_an_unknown_certificate_is_refused_at_pool_create(offline):
    ref = {"thumbprint": "ab" * 20, "thumbprintAlgorithm": "sha1"}
    result = _pool(offline, {"id": "p", "hosts": ["n1"], "certificateReferences": [ref]}, False)
    assert result.code == 3
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "CertificateNotFound"
    assert error["field"] == "certificateReferences[0].thumbprint"
    assert offline.json("pool", "list") == []


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        ({"thumbprint": "xyz"}, "certificateReferences[0].thumbprint"),
        (
            {"thumbprint": "ab" * 20, "thumbprintAlgorithm": "md5"},
            "certificateReferences[0].thumbprintAlgorithm",
        ),
        (
            {"thumbprint": "ab" * 20, "visibility": ["everyone"]},
            "certificateReferences[0].visibility",
        ),
        (
            {"thumbprint": "ab" * 20, "storeLocation": "nowhere"},
            "certificateReferences[0].storeLocation",
        ),
    ],
)
def test_a_bad_certificate_reference_names_its_field(offline, ref, field):
    result = _pool(offline, {"id": "p", "hosts": ["n1"], "certificateReferences": [ref]}, False)
    assert result.code == 2
    assert json.loads(result.stderr)["error"]["field"] == field


def test_a_referenced_certificate_cannot_be_deleted_and_stays_usable(offline, tmp_path):
    cert, _ = make_cert("in-use")
    offline("certificate", "create", "--file", str(write_pem(tmp_path / "c.pem", cert)))
    ref = {"thumbprint": sha1(cert).upper(), "thumbprintAlgorithm": "SHA1", "visibility": ["task"]}
    _pool(offline, {"id": "p1", "hosts": ["n1"], "certificateReferences": [ref]})
    shown_pool = offline.json("pool", "show", "p1")
    assert shown_pool["certificateReferences"] == [
        {
            "thumbprint": sha1(cert),
            "thumbprintAlgorithm": "sha1",
            "storeLocation": "currentuser",
            "visibility": ["task"],
        }
    ]
    result = offline("certificate", "delete", sha1(cert), "-o", "json", check=False)
    assert result.code == 4
    assert json.loads(result.stderr)["error"]["code"] == "CertificateInUse"
    shown = offline.json("certificate", "show", sha1(cert))
    assert shown["state"] == "deletefailed"
    assert shown["deleteCertificateError"]["code"] == "CertificateInUse"
    assert "p1" in shown["deleteCertificateError"]["message"]
    kept = offline.json("certificate", "cancel-delete", sha1(cert))
    assert kept["state"] == "active" and "deleteCertificateError" not in kept
    again = offline("certificate", "cancel-delete", sha1(cert), "-o", "json", check=False)
    assert again.code == 4
    assert json.loads(again.stderr)["error"]["code"] == "CertificateNotDeleteFailed"
    # still usable: another pool may reference it, and show output is create input
    _pool(offline, shown_pool | {"id": "p2", "hosts": ["n2"]})
    offline("pool", "delete", "p1")
    offline("pool", "delete", "p2")
    offline("certificate", "delete", sha1(cert))
    assert offline.json("certificate", "list") == []


def test_pool_show_prints_no_password_and_the_stored_spec_keeps_only_a_reference(offline):
    _pool(
        offline,
        {
            "id": "p",
            "hosts": ["n1"],
            "userAccounts": [{"name": "alice", "password": USER_PASSWORD}],
        },
    )
    shown = offline("pool", "show", "p", "-o", "json").stdout
    assert USER_PASSWORD not in shown
    assert json.loads(shown)["userAccounts"] == [{"name": "alice", "elevationLevel": "nonadmin"}]
    raw = b"".join(p.read_bytes() for p in Path(offline.home).glob("fleet.db*"))
    assert b"alice" in raw and USER_PASSWORD.encode() not in raw


# -- the raw database, on every backend ------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path: Path, monkeypatch) -> Iterator[tuple[Store, Settings]]:
    monkeypatch.delenv("FLEET_SECRET_KEY_FILE", raising=False)
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'home' / 'fleet.db'}"
        store = Store(url)
        yield store, Settings.resolve(tmp_path / "home", url)
        store.close()
    else:
        for url in pg_database(request.getfixturevalue("pg_server")):
            store = Store(url)
            yield store, Settings.resolve(tmp_path / "home", url)
            store.close()


def _raw_bytes(store: Store, settings: Settings) -> bytes:
    """Every byte the database holds: the SQLite files, or every row of every table."""
    if store.is_sqlite:
        return b"".join(p.read_bytes() for p in settings.home.glob("fleet.db*"))
    out = []
    with store.engine.connect() as conn:
        tables = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).scalars()
        for table in list(tables):
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                out.append(repr(tuple(row)).encode())
    return b"\n".join(out)


def _key_forms(key) -> list[bytes]:
    body = b"".join(key_pem(key).splitlines()[1:-1])
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    return [body[:40], body[-40:], der, scalar, scalar.hex().encode(), base64.b64encode(scalar)]


def test_no_private_key_or_password_is_in_the_raw_database(backend, tmp_path):
    store, settings = backend
    hosts.import_hosts(store, [HostSpec(id="n1", address="192.0.2.1")])
    cert, key = make_cert("secret-holder")
    pfx = write_pfx(tmp_path / "c.pfx", cert, key, PFX_PASSWORD).read_bytes()
    certificates.create_certificate(store, settings, pfx, "c.pfx", None, PFX_PASSWORD)
    pools.create_pool(
        store,
        {
            "id": "p",
            "hosts": ["n1"],
            "userAccounts": [{"name": "alice", "password": USER_PASSWORD}],
            "certificateReferences": [{"thumbprint": sha1(cert)}],
        },
        settings,
    )
    with store.session() as s:
        row = certificates.get_certificate(s, sha1(cert))
        node_pfx_password = SecretStore.of(settings).get(s, row.pfx_password_secret_id)
    raw = _raw_bytes(store, settings)
    assert sha1(cert).encode() in raw  # the search does see what the rows hold
    for secret in [*_key_forms(key), PFX_PASSWORD, USER_PASSWORD.encode(), node_pfx_password]:
        assert secret not in raw
    with pytest.raises(Conflict):
        certificates.delete_certificate(store, sha1(cert))
    pools.delete_pool(store, "p")
    certificates.delete_certificate(store, sha1(cert))
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM secrets")).scalar() == 0
    with pytest.raises(NotFound):
        certificates.show_certificate(store, sha1(cert))


# -- on real nodes ----------------------------------------------------------------------------

START = (
    '/bin/sh -c \'cd "$FLEET_CERTIFICATES_DIR" && test "$AZ_BATCH_CERTIFICATES_DIR" = "$PWD" '
    '&& stat -c "%a %n" sha1-* '
    "&& openssl x509 -in sha1-{plain}.cer -noout -fingerprint -sha1 "
    "&& openssl pkcs12 -in sha1-{keyed}.pfx -passin file:sha1-{keyed}.pfx.pw -nokeys -noout "
    "&& openssl pkey -in sha1-{keyed}.key.pem -noout && echo KEY_OK'"
)


@pytest.mark.lab
def test_the_start_task_finds_the_pools_certificates_in_its_certificates_dir(
    fleet, lab_inventory, controller, tmp_path
):
    plain, _ = make_cert("plain")
    keyed, key = make_cert("keyed")
    (tmp_path / "pw").write_bytes(PFX_PASSWORD)
    fleet("certificate", "create", "--file", str(write_pem(tmp_path / "plain.pem", plain)))
    pfx = write_pfx(tmp_path / "keyed.pfx", keyed, key, PFX_PASSWORD)
    fleet("certificate", "create", "--file", str(pfx), "--password-file", str(tmp_path / "pw"))
    fleet("host", "import", str(lab_inventory))
    host = fleet.json("host", "list")[0]["id"]
    spec = {
        "id": "p",
        "hosts": [host],
        "certificateReferences": [
            {"thumbprint": sha1(plain), "visibility": ["starttask"]},
            {"thumbprint": sha1(keyed)},
        ],
        "startTask": {
            "commandLine": START.format(plain=sha1(plain), keyed=sha1(keyed)),
            "waitForSuccess": True,
        },
    }
    _pool(fleet, spec)
    controller()
    wait_for_idle_nodes(fleet, "p")
    out = (fleet.home / "nodefiles" / host / "startup" / "stdout.txt").read_text()
    fingerprint = hashlib.sha1(plain.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert ":".join(fingerprint[i : i + 2] for i in range(0, 40, 2)).upper() in out
    assert "KEY_OK" in out
    modes = dict(line.split()[::-1] for line in out.splitlines() if line.startswith(("6", "7")))
    base = f"sha1-{sha1(keyed)}"
    assert {modes[f"{base}{ext}"] for ext in (".pfx", ".pfx.pw", ".key.pem")} == {"600"}
    assert modes[f"sha1-{sha1(plain)}.cer"] in ("644", "600")


@pytest.fixture
def password_account():
    if os.geteuid() != 0:
        pytest.skip("creating OS user accounts on the lab host needs root")
    yield "fleetcertpw"
    subprocess.run(["userdel", "-r", "fleetcertpw"], capture_output=True)


@pytest.mark.lab
def test_a_pool_user_gets_its_password_as_a_sha512_hash_and_its_own_certificate_copy(
    fleet, lab_inventory, controller, password_account, tmp_path
):
    fleet("host", "import", str(lab_inventory))
    host = fleet.json("host", "list")[0]["id"]
    cert, key = make_cert("for-alice")
    fleet("certificate", "create", "--file", str(write_pem(tmp_path / "k.pem", cert, key)))
    hidden, _ = make_cert("not-for-tasks")
    fleet("certificate", "create", "--file", str(write_pem(tmp_path / "h.pem", hidden)))
    account = {"name": password_account, "password": USER_PASSWORD}
    refs = [
        {"thumbprint": sha1(cert), "visibility": ["task"]},
        {"thumbprint": sha1(hidden), "visibility": ["starttask"]},
    ]
    _pool(
        fleet,
        {"id": "p", "hosts": [host], "userAccounts": [account], "certificateReferences": refs},
    )
    ctl = controller()
    wait_for_idle_nodes(fleet, "p")
    shadow = subprocess.run(
        ["getent", "shadow", password_account], capture_output=True, text=True, check=True
    ).stdout
    hashed = shadow.split(":")[1]
    assert hashed.startswith("$6$")
    assert sha512_crypt.verify(USER_PASSWORD, hashed)
    assert USER_PASSWORD not in ctl.log_text()
    home = Path(pwd.getpwnam(password_account).pw_dir) / "certs"
    uid = pwd.getpwnam(password_account).pw_uid
    assert (home.stat().st_uid, home.stat().st_mode & 0o777) == (uid, 0o700)
    for ext in (".pfx", ".pfx.pw", ".key.pem"):
        st = (home / f"sha1-{sha1(cert)}{ext}").stat()
        assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o600)
    assert (home / f"sha1-{sha1(cert)}.key.pem").read_bytes() == key_pem(key)
    assert not list(home.glob(f"sha1-{sha1(hidden)}*"))


def test_secrets_rotate_keeps_pool_passwords_and_certificate_keys_readable(offline, tmp_path):
    cert, key = make_cert()
    offline("certificate", "create", "--file", str(write_pem(tmp_path / "k.pem", cert, key)))
    _pool(
        offline, {"id": "p", "hosts": ["n1"], "userAccounts": [{"name": "al", "password": "pw1"}]}
    )
    key_file = Path(offline.home) / "secret.key"
    old = key_file.read_bytes()
    result = offline.json("secrets", "rotate")
    assert result["reencrypted"] == 3  # the key, the node PFX password, the user password
    assert key_file.read_bytes() != old and key_file.stat().st_mode & 0o777 == 0o600
    store = Store(f"sqlite:///{Path(offline.home) / 'fleet.db'}")
    try:
        settings = Settings.resolve(offline.home, store.url)
        keys = SecretStore.of(settings)
        with store.session() as s:
            row = certificates.get_certificate(s, sha1(cert))
            assert keys.get(s, row.key_secret_id) == key_pem(key)
            pool = pools.get_pool(s, "p")
            assert keys.get(s, pool.spec["userAccounts"][0]["passwordSecretId"]) == b"pw1"
    finally:
        store.close()
