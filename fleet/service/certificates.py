"""Certificate requests: add (private key encrypted), list, show and delete (refused while a pool uses it)."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, select

from fleet import certificates as parsing
from fleet import secret_store
from fleet.errors import Conflict, NotFound
from fleet.secret_store import SecretStore
from fleet.settings import Settings
from fleet.store import Store
from fleet.tables import Certificate, Pool


@dataclass
class Added:
    """A certificate just added, with notes for the user (an expired certificate)."""

    certificate: Certificate
    notes: list[str] = field(default_factory=list)


def create_certificate(
    store: Store,
    settings: Settings,
    data: bytes,
    name: str,
    fmt: str | None = None,
    password: bytes | None = None,
) -> Added:
    """Parse the certificate file ``data`` and store it; a private key (and the password of
    the PFX nodes get) go to the secret store.

    Raises BadInput (broken file, wrong password) or Conflict (CertificateExists)."""
    parsed = parsing.parse(data, name, fmt, password)
    notes = []
    if parsed.expired:
        notes.append(
            f"certificate {parsed.thumbprint} expired on "
            f"{parsed.not_after.isoformat().replace('+00:00', 'Z')}"
        )
    now = time.time()
    secrets = SecretStore.of(settings)
    with store.session() as s:
        if s.get(Certificate, parsed.thumbprint) is not None:
            raise Conflict(
                "a certificate with this thumbprint exists already",
                code="CertificateExists",
                target=f"certificate {parsed.thumbprint}",
            )
        cert = Certificate(
            thumbprint=parsed.thumbprint,
            sha256_thumbprint=parsed.sha256_thumbprint,
            subject=parsed.subject,
            not_after=parsed.not_after.timestamp(),
            public_data=parsing.public_data(parsed.der),
            created_at=now,
            state_changed_at=now,
        )
        if parsed.private_key_pem is not None:
            cert.key_secret_id = secrets.put(
                s, f"certificate {parsed.thumbprint} private key", parsed.private_key_pem
            )
            cert.pfx_password_secret_id = secrets.put(
                s, f"certificate {parsed.thumbprint} pfx password", parsing.new_pfx_password()
            )
        s.add(cert)
    return Added(cert, notes)


def check_references(session: Session, references: list[dict[str, Any]], target: str) -> None:
    """Raise NotFound (CertificateNotFound, exit 3, as for an unknown host) unless every
    referenced certificate exists."""
    for i, ref in enumerate(references):
        if session.get(Certificate, ref["thumbprint"]) is None:
            raise NotFound(
                f"no certificate with thumbprint {ref['thumbprint']}: add it with "
                "'fleet certificate create' first",
                code="CertificateNotFound",
                target=target,
                field=f"certificateReferences[{i}].thumbprint",
            )


def get_certificate(session: Session, thumbprint: str) -> Certificate:
    """Return the certificate; Raises NotFound (CertificateNotFound)."""
    cert = session.get(Certificate, thumbprint.lower())
    if cert is None:
        raise NotFound(
            f"no certificate with thumbprint {thumbprint!r}",
            code="CertificateNotFound",
            target=f"certificate {thumbprint}",
        )
    return cert


def list_certificates(store: Store) -> list[Certificate]:
    """Return every certificate, by thumbprint."""
    with store.read() as s:
        return list(s.exec(select(Certificate).order_by(Certificate.thumbprint)))


def show_certificate(store: Store, thumbprint: str) -> Certificate:
    """Return one certificate; Raises NotFound."""
    with store.read() as s:
        return get_certificate(s, thumbprint)


def pools_using(session: Session, thumbprint: str) -> list[str]:
    """Return the ids of the pools whose certificateReferences name ``thumbprint``."""
    return [
        pool.id
        for pool in session.exec(select(Pool).order_by(Pool.id))
        if any(r["thumbprint"] == thumbprint for r in pool.spec.get("certificateReferences") or [])
    ]


def delete_certificate(store: Store, thumbprint: str) -> None:
    """Delete a certificate and its secrets.

    Raises NotFound, or Conflict (CertificateInUse) while a pool references it: then the
    certificate stays usable, in state ``deletefailed`` with ``deleteCertificateError``
    naming the pools."""
    with store.session() as s:
        cert = get_certificate(s, thumbprint)
        users = pools_using(s, cert.thumbprint)
        if users:
            message = f"the certificate is referenced by pools: {', '.join(users)}"
            error: dict[str, Any] = {
                "code": "CertificateInUse",
                "message": message,
                "values": [{"name": "pools", "value": ",".join(users)}],
            }
            cert.state, cert.delete_error = "deletefailed", error
            cert.state_changed_at = time.time()
            s.add(cert)
        else:
            for secret_id in (cert.key_secret_id, cert.pfx_password_secret_id):
                secret_store.delete(s, secret_id)
            s.delete(cert)
    if users:
        raise Conflict(message, code="CertificateInUse", target=f"certificate {cert.thumbprint}")


def cancel_deletion(store: Store, thumbprint: str) -> Certificate:
    """Make a certificate whose deletion failed (``deletefailed``) ``active`` again and
    forget the error. Raises NotFound, or Conflict (CertificateNotDeleteFailed) in any
    other state."""
    with store.session() as s:
        cert = get_certificate(s, thumbprint)
        if cert.state != "deletefailed":
            raise Conflict(
                f"only a certificate whose deletion failed can be kept; this one is {cert.state}",
                code="CertificateNotDeleteFailed",
                target=f"certificate {cert.thumbprint}",
            )
        cert.state, cert.delete_error = "active", None
        cert.state_changed_at = time.time()
        s.add(cert)
        return cert


def view(cert: Certificate) -> dict[str, Any]:
    """Return the certificate as Azure Batch's certificate object plus fleet's fields
    (``sha256Thumbprint``, ``subject``, ``notAfter``, ``hasPrivateKey``); never a secret."""
    out: dict[str, Any] = {
        "thumbprint": cert.thumbprint,
        "thumbprintAlgorithm": "sha1",
        "state": cert.state,
        "stateTransitionTime": _iso(cert.state_changed_at),
        "publicData": cert.public_data,
        "sha256Thumbprint": cert.sha256_thumbprint,
        "subject": cert.subject,
        "notAfter": _iso(cert.not_after),
        "hasPrivateKey": cert.key_secret_id is not None,
    }
    if cert.delete_error:
        out["deleteCertificateError"] = cert.delete_error
    return out


def public_der(cert: Certificate) -> bytes:
    """Return the certificate's DER."""
    return base64.b64decode(cert.public_data)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
