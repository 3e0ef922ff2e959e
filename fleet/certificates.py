"""Certificates: PEM, DER and PFX parsed with ``cryptography``, and the files a node gets for them.

Parsing is pure (bytes in, :class:`ParsedCertificate` out, BadInput naming the
file and the reason). Installing writes ``sha1-<thumbprint>.cer`` (PEM) into the
node's ``certs/``, and with a private key ``.pfx``, ``.pfx.pw`` and ``.key.pem``,
all owner-only; trust store entries go through ``sudo -n`` with fixed argv.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from fleet.errors import BadInput, NotFound, RemoteError
from fleet.secret_store import SecretStore
from fleet.settings import Settings
from fleet.spec_fields import TRUST_STORE_LOCATIONS, VISIBILITIES
from fleet.store import Store
from fleet.tables import Certificate

if TYPE_CHECKING:
    from fleet.ssh import Connection

FORMATS = ("pem", "der", "pfx")
PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


@dataclass(frozen=True)
class ParsedCertificate:
    """A certificate and, if the file had one, its private key (PKCS#8 PEM)."""

    der: bytes
    thumbprint: str  # lowercase hex SHA-1 of the DER
    sha256_thumbprint: str
    subject: str
    not_after: datetime
    private_key_pem: bytes | None

    @property
    def expired(self) -> bool:
        return self.not_after < datetime.now(UTC)


def new_pfx_password() -> str:
    """Return a fresh random password for the PFX a node gets."""
    return secrets.token_urlsafe(24)


def detect_format(data: bytes) -> str:
    """Return ``pem`` for text with a PEM armour, ``der`` for an X.509 DER, else ``pfx``."""
    if b"-----BEGIN" in data:
        return "pem"
    try:
        x509.load_der_x509_certificate(data)
        return "der"
    except ValueError:
        return "pfx"


def parse(
    data: bytes, name: str, fmt: str | None = None, password: bytes | None = None
) -> ParsedCertificate:
    """Return the certificate in ``data`` (``fmt`` detected when None).

    Raises BadInput naming ``name``: ``InvalidCertificateFormat`` (unknown ``fmt``),
    ``InvalidCertificate`` (not a certificate of that format, or a key that does not
    match it), ``CertificatePasswordRequired`` or ``CertificateWrongPassword``."""
    fmt = (fmt or detect_format(data)).lower()
    if fmt not in FORMATS:
        raise BadInput(
            f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}",
            code="InvalidCertificateFormat",
            target=name,
            field="format",
        )
    key: Any = None
    if fmt == "pfx":
        cert, key = _parse_pfx(data, name, password)
    elif fmt == "der":
        try:
            cert = x509.load_der_x509_certificate(data)
        except ValueError as exc:
            raise _broken(name, "DER", exc) from None
    else:
        try:
            cert = x509.load_pem_x509_certificates(data)[0]
        except ValueError as exc:
            raise _broken(name, "PEM", exc) from None
        if b"PRIVATE KEY-----" in data:
            key = _pem_key(data, name, password)
    if key is not None and _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise BadInput(
            "the private key in the file does not belong to its certificate",
            code="InvalidCertificate",
            target=name,
        )
    der = cert.public_bytes(serialization.Encoding.DER)
    return ParsedCertificate(
        der=der,
        thumbprint=hashlib.sha1(der, usedforsecurity=False).hexdigest(),
        sha256_thumbprint=hashlib.sha256(der).hexdigest(),
        subject=cert.subject.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        private_key_pem=None
        if key is None
        else key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def _public_der(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _broken(name: str, fmt: str, exc: Exception) -> BadInput:
    return BadInput(
        f"{name} is not a {fmt} certificate: {exc}", code="InvalidCertificate", target=name
    )


def _parse_pfx(data: bytes, name: str, password: bytes | None) -> tuple[Any, Any]:
    try:
        key, cert, _chain = pkcs12.load_key_and_certificates(data, password)
    except ValueError as exc:
        text = str(exc).lower()
        if "password" in text or "mac" in text or "decrypt" in text:
            if password is None:
                raise BadInput(
                    f"{name} is a PFX protected by a password: give --password-file",
                    code="CertificatePasswordRequired",
                    target=name,
                    field="password",
                ) from None
            raise BadInput(
                f"the password does not open the PFX {name}",
                code="CertificateWrongPassword",
                target=name,
                field="password",
            ) from None
        raise _broken(name, "PFX (PKCS#12)", exc) from None
    if cert is None:
        raise BadInput(
            f"the PFX {name} holds no certificate", code="InvalidCertificate", target=name
        )
    return cert, key


def _pem_key(data: bytes, name: str, password: bytes | None) -> Any:
    start = data.index(b"-----BEGIN", data.index(b"PRIVATE KEY-----") - 40)
    try:
        return serialization.load_pem_private_key(data[start:], password)
    except TypeError:
        raise BadInput(
            f"the private key in {name} is encrypted: give --password-file",
            code="CertificatePasswordRequired",
            target=name,
            field="password",
        ) from None
    except ValueError as exc:
        wrong = password is not None and "password" in str(exc).lower() or "decrypt" in str(exc)
        raise BadInput(
            f"the password does not open the private key in {name}"
            if wrong
            else f"the private key in {name} cannot be read: {exc}",
            code="CertificateWrongPassword" if wrong else "InvalidCertificate",
            target=name,
        ) from None


# -- the files a node gets ------------------------------------------------------------------


@dataclass(frozen=True)
class NodeCertificate:
    """One certificate as a node installs it, with its private parts decrypted."""

    thumbprint: str
    der: bytes
    private_key_pem: bytes | None
    pfx_password: str | None
    store_location: str
    visibility: tuple[str, ...]

    @property
    def pem(self) -> bytes:
        return x509.load_der_x509_certificate(self.der).public_bytes(serialization.Encoding.PEM)

    def files(self) -> dict[str, tuple[bytes, int]]:
        """Return ``{file name: (content, mode)}`` for the node's ``certs/`` directory."""
        base = f"sha1-{self.thumbprint}"
        out = {f"{base}.cer": (self.pem, PUBLIC_MODE)}
        if self.private_key_pem is not None and self.pfx_password is not None:
            key = serialization.load_pem_private_key(self.private_key_pem, None)
            cert = x509.load_der_x509_certificate(self.der)
            pfx = pkcs12.serialize_key_and_certificates(
                None,
                key,  # type: ignore[arg-type]
                cert,
                None,
                serialization.BestAvailableEncryption(self.pfx_password.encode()),
            )
            out[f"{base}.pfx"] = (pfx, PRIVATE_MODE)
            out[f"{base}.pfx.pw"] = (self.pfx_password.encode(), PRIVATE_MODE)
            out[f"{base}.key.pem"] = (self.private_key_pem, PRIVATE_MODE)
        return out


def public_data(der: bytes) -> str:
    """Return Azure's ``publicData``: the DER, base64."""
    return base64.b64encode(der).decode("ascii")


def node_certificates(
    store: Store, settings: Settings, references: list[dict[str, Any]]
) -> list[NodeCertificate]:
    """Return the certificates a pool's ``certificateReferences`` name, private parts
    decrypted. Raises NotFound (CertificateNotFound) for one that is gone, or the secret
    store's SecretKeyError."""
    if not references:
        return []
    secrets_ = SecretStore.of(settings)
    out = []
    with store.session() as s:
        for ref in references:
            cert = s.get(Certificate, ref["thumbprint"])
            if cert is None:
                raise NotFound(
                    f"the pool references certificate {ref['thumbprint']}, which does not exist",
                    code="CertificateNotFound",
                    target=f"certificate {ref['thumbprint']}",
                )
            key = secrets_.get(s, cert.key_secret_id) if cert.key_secret_id else None
            pw = (
                secrets_.get(s, cert.pfx_password_secret_id)
                if cert.pfx_password_secret_id
                else None
            )
            out.append(
                NodeCertificate(
                    thumbprint=cert.thumbprint,
                    der=base64.b64decode(cert.public_data),
                    private_key_pem=key,
                    pfx_password=pw.decode() if pw is not None else None,
                    store_location=ref.get("storeLocation", "currentuser"),
                    visibility=tuple(ref.get("visibility") or VISIBILITIES),
                )
            )
    return out


async def install_for_node(
    conn: Connection,
    store: Store,
    settings: Settings,
    pool_spec: dict[str, Any],
    root: str,
    login_user: str,
) -> None:
    """Install the pool's certificates on a node that joins, reboots or is reimaged, before
    its start task (the node bootstrap hook). Raises RemoteError (CertificateInstallError)
    or NotFound."""
    certs = node_certificates(store, settings, pool_spec.get("certificateReferences") or [])
    if certs:
        await install(conn, f"{root.rstrip('/')}/certs", certs, login_user)
        for account in pool_spec.get("userAccounts") or []:  # tasks run as them read ~/certs
            await copy_for_user(conn, account["name"], certs, "task")


async def install(
    conn: Connection, certs_dir: str, certs: list[NodeCertificate], login_user: str
) -> None:
    """Write every certificate's files into ``certs_dir`` on the node (atomically, private
    files 0600), and put those with a trust store location into the system trust store.
    Certificates whose visibility names neither the start task nor tasks get only the
    trust store entry (and the node users' copies, see :func:`copy_for_user`)."""
    trusted = []
    for cert in certs:
        if {"starttask", "task"} & set(cert.visibility):
            for name, (data, mode) in cert.files().items():
                await conn.upload_bytes(data, f"{certs_dir}/{name}", mode)
        if cert.store_location in TRUST_STORE_LOCATIONS:
            trusted.append(cert)
    if trusted:
        await add_to_trust_store(conn, trusted, [] if login_user == "root" else SUDO)


SUDO = ["sudo", "-n"]
#: Where each family keeps local CA certificates, and the command that rebuilds the bundle.
TRUST_STORES = (
    (
        "/usr/sbin/update-ca-certificates",
        "/usr/local/share/ca-certificates",
        ["update-ca-certificates"],
    ),
    (
        "/usr/bin/update-ca-trust",
        "/etc/pki/ca-trust/source/anchors",
        ["update-ca-trust", "extract"],
    ),
)


async def add_to_trust_store(
    conn: Connection, certs: list[NodeCertificate], sudo: list[str]
) -> None:
    """Add ``certs`` to the node's system trust store (Debian/Ubuntu update-ca-certificates,
    RHEL update-ca-trust) with fixed argv (``sudo`` is ``sudo -n`` or nothing for root),
    the PEM on ``dd``'s standard input.

    Raises RemoteError (CertificateInstallError) when the node has neither tool or a
    command fails."""
    found = [store for store in TRUST_STORES if await _has(conn, store[0])]
    if not found:
        raise RemoteError(
            "the node has no update-ca-certificates or update-ca-trust for storeLocation "
            "localmachine",
            code="CertificateInstallError",
        )
    _tool, directory, rebuild = found[0]
    for cert in certs:
        path = f"{directory}/fleet-sha1-{cert.thumbprint}.crt"
        await _must(conn, [*sudo, "dd", f"of={path}", "status=none"], stdin=cert.pem)
        await _must(conn, [*sudo, "chmod", "0644", path])
    await _must(conn, [*sudo, *rebuild])


async def copy_for_user(
    conn: Connection, user: str, certs: list[NodeCertificate], visibility: str = "remoteuser"
) -> None:
    """Give ``user`` (a validated name) a ``~/certs`` copy of every certificate whose
    visibility names ``visibility``: the directory 0700 and private files 0600, owned by
    the user. Node users get the ``remoteuser`` ones (the node-users feature calls this
    with :func:`node_certificates`); pool user accounts get the ``task`` ones. Runs
    through ``sudo -n`` with fixed argv."""
    wanted = [c for c in certs if visibility in c.visibility]
    if not wanted:
        return
    found = await conn.run(["getent", "passwd", user])
    fields = found.stdout.decode(errors="replace").strip().split(":")
    if found.exit_code != 0 or len(fields) < 6 or not fields[5].startswith("/"):
        raise RemoteError(f"no home directory for user {user}", code="CertificateInstallError")
    home_certs = f"{fields[5]}/certs"
    await _must(conn, [*SUDO, "install", "-d", "-m", "0700", "-o", user, home_certs])
    for cert in wanted:
        for name, (data, mode) in cert.files().items():
            path = f"{home_certs}/{name}"
            await _must(conn, [*SUDO, "-u", user, "dd", f"of={path}", "status=none"], stdin=data)
            await _must(conn, [*SUDO, "-u", user, "chmod", f"{mode:04o}", path])


async def _has(conn: Connection, tool: str) -> bool:
    return (await conn.run(["test", "-x", tool])).exit_code == 0


async def _must(conn: Connection, argv: list[str], stdin: bytes | None = None) -> None:
    result = await conn.run(argv, stdin=stdin)
    if result.exit_code != 0:
        detail = result.stderr.decode(errors="replace").strip()[-300:]
        raise RemoteError(
            f"{' '.join(argv[:4])} failed (exit {result.exit_code}): {detail}",
            code="CertificateInstallError",
        )
