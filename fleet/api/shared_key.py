"""Azure Batch SharedKey authentication: the string-to-sign, its HMAC, and a request's check.

Pure (no I/O, no clock: the time comes in as ``now``). The scheme is the one both
``azure-batch`` SDKs compute (14.x ``azure/batch/batch_auth.py`` ``SharedKeyAuth``, 15.x
``azure/batch/_patch.py`` ``BatchSharedKeyAuthPolicy``), which differs in places from
Azure Storage's documented SharedKey::

    METHOD \\n
    content-encoding \\n content-language \\n content-length \\n content-md5 \\n
    content-type \\n date \\n if-modified-since \\n if-match \\n if-none-match \\n
    if-unmodified-since \\n range \\n          (each value as sent, or empty)
    name:value \\n                             (every header whose lowercased name contains
                                              "ocp-", non-empty, sorted by name then value)
    /ACCOUNT/raw/path                         (percent-encoded as sent, no query)
    \\nname:value ...                          (query parameters decoded, sorted by name
                                              as sent, not lowercased; a repeated name
                                              signs its first non-empty value only;
                                              empty values are left out)

Content-Length: 14.x (``requests``) signs the header ``requests`` then sends, which
is ``0`` for a POST or DELETE without a body and absent for GET and HEAD; 15.x signs
``0`` for any method but GET and HEAD that has no Content-Length, whether or not its
transport then sends one. Both therefore sign ``0``, never the empty string Azure
Storage uses for an empty body. A request without Content-Length whose method is
neither GET nor HEAD is checked both ways (empty, and ``0``).

Content-Type is signed as sent: 14.x sends ``application/json; odata=minimalmetadata;
charset=utf-8`` with every POST, PUT and PATCH (a body or not); 15.x sends
``application/json; odata=minimalmetadata`` with a body only. Both send ``ocp-date``
(RFC 1123), which this module prefers to ``Date`` for the freshness check, and
``ocp-range`` for ranged file reads; both headers are covered by the signature.

The body itself is not signed: only its Content-Length (and a Content-MD5, which
neither SDK sends). A body changed in flight to another of the same length therefore
passes this check; integrity of bodies needs TLS.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

from fleet.errors import FleetError

#: The standard headers whose values are signed, in their order in the string-to-sign.
SIGNED_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)

#: How far a request's date may be from the server's clock, either way (Azure's rule).
MAX_CLOCK_SKEW = 15 * 60

#: ``SharedKey NAME:SIGNATURE``; the scheme's case does not matter (RFC 9110).
_AUTHORIZATION_RE = re.compile(r"SharedKey ([^:\s]+):(\S+)", re.IGNORECASE)
#: What an account name may be: only names that could be an account are echoed back.
_ACCOUNT_NAME_RE = re.compile(r"[a-z0-9]{3,24}")


class AuthenticationFailed(FleetError):
    """A request's SharedKey authentication failed. ``reason`` is a short stable token
    (``MissingAuthorization``, ``MalformedAuthorization``, ``UnknownAccount``,
    ``MissingDate``, ``MalformedDate``, ``StaleDate``, ``SignatureMismatch``) for logs
    and Azure's ``AuthenticationErrorDetail``; the message never holds a signature or
    a key."""

    code = "AuthenticationFailed"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, target="Authorization")
        self.reason = reason


def string_to_sign(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    account: str,
) -> str:
    """Return the string a client signs for this request, as the azure-batch SDKs build it.

    ``path`` is the raw URL path (percent-encoded as sent, without the query), ``query``
    the decoded (name, value) pairs in the order sent, ``headers`` the request's headers
    (names in any case; each name once)."""
    lowered = {name.lower(): value for name, value in headers.items() if value}
    lines = [method.upper(), *(lowered.get(name, "") for name in SIGNED_HEADERS)]
    ocp = sorted((name, value) for name, value in lowered.items() if "ocp-" in name)
    lines.extend(f"{name}:{value}" for name, value in ocp)
    lines.append(f"/{account}{path}")
    first: dict[str, str] = {}
    for name, value in query:
        if value:
            first.setdefault(name, value)
    lines.extend(f"{name}:{first[name]}" for name in sorted(first))
    return "\n".join(lines)


def sign(key_b64: str, string_to_sign: str) -> str:
    """Return the base64 HMAC-SHA256 of ``string_to_sign`` (UTF-8) under the base64 key
    ``key_b64``. Raises ValueError when the key is not base64."""
    return base64.b64encode(_digest(key_b64, string_to_sign)).decode("ascii")


def _digest(key_b64: str, text: str) -> bytes:
    key = base64.b64decode(key_b64, validate=True)
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def authenticate(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    lookup_key: Callable[[str], list[str] | None],
    now: float,
) -> str:
    """Return the name of the account that signed this request.

    ``lookup_key(name)`` gives the account's current keys (base64), or None for no such
    account; ``now`` is the server's time (UTC epoch seconds). Arguments are as for
    :func:`string_to_sign`. Raises AuthenticationFailed saying what is wrong."""
    lowered = {name.lower(): value for name, value in headers.items()}
    account, signature = _parse_authorization(lowered.get("authorization"))
    keys = lookup_key(account)
    if not keys:
        raise AuthenticationFailed("UnknownAccount", f"there is no account {account!r}")
    _check_date(lowered, now)
    pairs = list(query)
    candidates = [string_to_sign(method, path, pairs, lowered, account)]
    if method.upper() not in ("GET", "HEAD") and not lowered.get("content-length"):
        # 15.x signs Content-Length 0 whether or not its transport sends it
        padded = {**lowered, "content-length": "0"}
        candidates.append(string_to_sign(method, path, pairs, padded, account))
    for key in keys:
        for text in candidates:
            if hmac.compare_digest(_digest(key, text), signature):
                return account
    raise AuthenticationFailed(
        "SignatureMismatch",
        f"the signature of account {account!r} does not match this request: the key is "
        "wrong, or the request changed after it was signed",
    )


def _parse_authorization(value: str | None) -> tuple[str, bytes]:
    """Return the account name and the decoded signature of an Authorization header."""
    if not value:
        raise AuthenticationFailed(
            "MissingAuthorization", "the request has no Authorization header"
        )
    match = _AUTHORIZATION_RE.fullmatch(value.strip())
    if match is None:
        raise AuthenticationFailed(
            "MalformedAuthorization",
            "the Authorization header is not of the form 'SharedKey ACCOUNT:SIGNATURE'",
        )
    account, signature = match.groups()
    if not _ACCOUNT_NAME_RE.fullmatch(account):
        raise AuthenticationFailed(
            "UnknownAccount",
            "the account in the Authorization header is not an account name "
            "(3 to 24 lowercase letters and digits)",
        )
    try:
        digest = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != hashlib.sha256().digest_size:
        raise AuthenticationFailed(
            "MalformedAuthorization",
            "the signature in the Authorization header is not a base64 HMAC-SHA256",
        )
    return account, digest


def _check_date(headers: Mapping[str, str], now: float) -> None:
    """Raise unless the request's ``ocp-date`` (else ``Date``) is within MAX_CLOCK_SKEW."""
    name = "ocp-date" if headers.get("ocp-date") else "date"
    value = headers.get(name)
    if not value:
        raise AuthenticationFailed(
            "MissingDate", "the request has neither an ocp-date nor a Date header"
        )
    try:
        sent = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise AuthenticationFailed(
            "MalformedDate", f"the {name} header is not an RFC 1123 date"
        ) from None
    if sent.tzinfo is None:  # "-0000": UTC, origin unknown
        sent = sent.replace(tzinfo=UTC)
    skew = sent.timestamp() - now
    if abs(skew) > MAX_CLOCK_SKEW:
        raise AuthenticationFailed(
            "StaleDate",
            f"the {name} header is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} "
            f"the server's clock; at most {MAX_CLOCK_SKEW // 60} minutes are allowed",
        )
