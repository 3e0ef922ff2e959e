"""Test certificates made with ``cryptography``: self-signed, expired, CA, with or without a key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID


def make_cert(
    name: str = "fleet-test", *, days: int = 30, expired: bool = False, ca: bool = False
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Return a self-signed certificate and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    start, end = (
        (now - dt.timedelta(days=60), now - dt.timedelta(days=1))
        if expired
        else (
            now - dt.timedelta(minutes=5),
            now + dt.timedelta(days=days),
        )
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def sha1(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex()


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_pem(
    path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None
) -> Path:
    data = cert.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(data + (key_pem(key) if key is not None else b""))
    return path


def write_der(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return path


def write_pfx(
    path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, password: bytes
) -> Path:
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"test", key, cert, None, serialization.BestAvailableEncryption(password)
        )
    )
    return path
