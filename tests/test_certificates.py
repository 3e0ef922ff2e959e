"""Certificates through the CLI: formats, errors, the Azure-shaped JSON, and no secret at rest."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.cert_files import key_pem, make_cert, sha1, write_der, write_pem, write_pfx

PFX_PASSWORD = b"pfx-pass-7d1f0c"


def test_a_pem_certificate_is_added_with_azures_fields(fleet, tmp_path):
    cert, _ = make_cert("alpha")
    shown = fleet.json("certificate", "create", "--file", str(write_pem(tmp_path / "a.pem", cert)))
    assert shown["thumbprint"] == sha1(cert)
    assert shown["thumbprintAlgorithm"] == "sha1"
    assert shown["state"] == "active"
    assert shown["hasPrivateKey"] is False
    assert shown["subject"] == "CN=alpha"
    der = base64.b64decode(shown["publicData"])
    assert der == cert.public_bytes(serialization.Encoding.DER)
    assert fleet.json("certificate", "show", sha1(cert).upper()) == shown
    assert [c["thumbprint"] for c in fleet.json("certificate", "list")] == [sha1(cert)]


def test_der_and_pfx_are_detected_without_format(fleet, tmp_path):
    der_cert, _ = make_cert("der")
    pfx_cert, pfx_key = make_cert("pfx")
    (tmp_path / "pw").write_bytes(PFX_PASSWORD + b"\n")
    fleet("certificate", "create", "--file", str(write_der(tmp_path / "c.der", der_cert)))
    shown = fleet.json(
        "certificate",
        "create",
        "--file",
        str(write_pfx(tmp_path / "c.pfx", pfx_cert, pfx_key, PFX_PASSWORD)),
        "--password-file",
        str(tmp_path / "pw"),
    )
    assert shown["thumbprint"] == sha1(pfx_cert) and shown["hasPrivateKey"] is True
    assert {c["thumbprint"] for c in fleet.json("certificate", "list")} == {
        sha1(der_cert),
        sha1(pfx_cert),
    }


def test_a_wrong_pfx_password_is_a_clear_error(fleet, tmp_path):
    cert, key = make_cert()
    pfx = write_pfx(tmp_path / "c.pfx", cert, key, PFX_PASSWORD)
    (tmp_path / "pw").write_bytes(b"not it")
    result = fleet(
        "certificate",
        "create",
        "--file",
        str(pfx),
        "--password-file",
        str(tmp_path / "pw"),
        "-o",
        "json",
        check=False,
    )
    assert result.code == 2
    assert json.loads(result.stderr)["error"]["code"] == "CertificateWrongPassword"
    missing = fleet("certificate", "create", "--file", str(pfx), "-o", "json", check=False)
    assert missing.code == 2
    assert json.loads(missing.stderr)["error"]["code"] == "CertificatePasswordRequired"
    assert fleet.json("certificate", "list") == []


@pytest.mark.parametrize("fmt", ["pem", "der", "pfx", None])
def test_a_broken_file_is_a_clear_error(fleet, tmp_path, fmt):
    broken = tmp_path / "broken"
    broken.write_bytes(
        b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n" if fmt == "pem" else b"\x30\x03junk"
    )
    args = ["--format", fmt] if fmt else []
    result = fleet("certificate", "create", "--file", str(broken), *args, "-o", "json", check=False)
    assert result.code == 2, result.stderr
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "InvalidCertificate" and error["target"] == str(broken)
    assert "Traceback" not in result.stderr


def test_an_expired_certificate_is_added_with_a_note(fleet, tmp_path):
    cert, _ = make_cert(expired=True)
    result = fleet("certificate", "create", "--file", str(write_pem(tmp_path / "old.pem", cert)))
    assert "note: certificate" in result.stderr and "expired" in result.stderr


def test_a_key_that_does_not_match_its_certificate_is_refused(fleet, tmp_path):
    cert, _ = make_cert()
    _, other_key = make_cert()
    path = write_pem(tmp_path / "mixed.pem", cert, other_key)
    result = fleet("certificate", "create", "--file", str(path), "-o", "json", check=False)
    assert result.code == 2 and json.loads(result.stderr)["error"]["code"] == "InvalidCertificate"


def test_adding_the_same_certificate_twice_is_a_conflict(fleet, tmp_path):
    cert, _ = make_cert()
    path = write_pem(tmp_path / "a.pem", cert)
    fleet("certificate", "create", "--file", str(path))
    assert fleet("certificate", "create", "--file", str(path), check=False).code == 4


def test_an_unknown_certificate_is_not_found(fleet):
    result = fleet("certificate", "show", "00" * 20, "-o", "json", check=False)
    assert result.code == 3
    assert json.loads(result.stderr)["error"]["code"] == "CertificateNotFound"
    assert fleet("certificate", "delete", "00" * 20, check=False).code == 3


def test_an_unreferenced_certificate_is_deleted(fleet, tmp_path):
    cert, key = make_cert()
    fleet("certificate", "create", "--file", str(write_pem(tmp_path / "a.pem", cert, key)))
    fleet("certificate", "delete", sha1(cert))
    assert fleet.json("certificate", "list") == []


def test_no_private_key_or_password_is_in_the_sqlite_file(fleet, tmp_path):
    cert, key = make_cert("secret-holder")
    (tmp_path / "pw").write_bytes(PFX_PASSWORD)
    pfx = write_pfx(tmp_path / "c.pfx", cert, key, PFX_PASSWORD)
    fleet("certificate", "create", "--file", str(pfx), "--password-file", str(tmp_path / "pw"))
    pem_cert, pem_key = make_cert("pem-holder")
    fleet("certificate", "create", "--file", str(write_pem(tmp_path / "k.pem", pem_cert, pem_key)))
    raw = b"".join(p.read_bytes() for p in Path(fleet.home).glob("fleet.db*"))
    assert raw, "the database files exist"
    for secret in _key_forms(key) + _key_forms(pem_key) + [PFX_PASSWORD]:
        assert secret not in raw
    # The database does hold the public part, so the search above would see the rest.
    assert cert.public_bytes(serialization.Encoding.DER)[-64:] not in raw  # stored base64
    assert base64.b64encode(cert.public_bytes(serialization.Encoding.DER))[:60] in raw


def _key_forms(key) -> list[bytes]:
    """The private key as PEM body lines, DER and the raw private scalar."""
    pem = key_pem(key)
    body = b"".join(pem.splitlines()[1:-1])
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    return [body[:40], body[-40:], der, scalar]


def test_show_prints_no_secret(fleet, tmp_path):
    cert, key = make_cert()
    fleet("certificate", "create", "--file", str(write_pem(tmp_path / "a.pem", cert, key)))
    out = fleet("certificate", "show", sha1(cert), "-o", "json").stdout
    assert b"".join(key_pem(key).splitlines()[1:-1])[:40].decode() not in out
    assert x509.load_der_x509_certificate(base64.b64decode(json.loads(out)["publicData"])) == cert
