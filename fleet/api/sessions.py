"""The dashboard's logins: signed session tokens, CSRF tokens and the failed-login limit.

A session token is ``ACCOUNT.EXPIRY.ID.SIGNATURE``: the HMAC-SHA256, under a random secret
made when the server starts, of the account, the expiry (epoch seconds) and a random id.
Nothing is stored per session, so a restart of the controller logs everyone out; a
logout remembers the token's id until it expires. A form that changes something carries
the session's CSRF token, the HMAC of its id under the same secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass

#: How long a login lasts.
SESSION_SECONDS = 12 * 3600
#: The cookie that carries the session token.
COOKIE = "fleet_session"
_TOKEN = re.compile(r"([a-z0-9]{3,24})\.(\d{1,12})\.([0-9a-f]{32})\.([0-9a-f]{64})")


@dataclass(frozen=True)
class Session:
    """One logged-in browser: whose it is, until when, and its random id."""

    account: str
    expires: int
    id: str


class Sessions:
    """Issues and checks session and CSRF tokens under one secret (random by default)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self._revoked: dict[str, int] = {}  # session id -> its expiry
        self._lock = threading.Lock()

    def _sign(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    def issue(self, account: str, now: float) -> tuple[Session, str]:
        """Return a new session of ``account`` and its token."""
        session = Session(account, int(now) + SESSION_SECONDS, secrets.token_hex(16))
        body = f"{session.account}.{session.expires}.{session.id}"
        return session, f"{body}.{self._sign(body)}"

    def check(self, token: str | None, now: float) -> Session | None:
        """Return the session ``token`` stands for, or None when it is missing, forged,
        expired or logged out."""
        match = _TOKEN.fullmatch(token or "")
        if match is None:
            return None
        account, expires, sid, signature = match.groups()
        if not hmac.compare_digest(signature, self._sign(f"{account}.{expires}.{sid}")):
            return None
        if int(expires) <= now:
            return None
        with self._lock:
            if sid in self._revoked:
                return None
        return Session(account, int(expires), sid)

    def revoke(self, session: Session, now: float) -> None:
        """Log ``session`` out: its token is refused from now on."""
        with self._lock:
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}
            self._revoked[session.id] = session.expires

    def csrf(self, session: Session) -> str:
        """Return the CSRF token of ``session``'s forms."""
        return self._sign(f"csrf:{session.id}")

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        """Return whether ``token`` is ``session``'s CSRF token."""
        return hmac.compare_digest(self.csrf(session), token or "")


def cookie(token: str, secure: bool, max_age: int = SESSION_SECONDS) -> str:
    """Return the ``Set-Cookie`` value that stores ``token`` (an empty one with
    ``max_age`` 0 clears it)."""
    parts = [f"{COOKIE}={token}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


class LoginLimiter:
    """Failed logins per client address: a bucket of ``burst`` tries that refills one try
    every ``refill`` seconds; an empty bucket refuses logins from that address."""

    def __init__(self, burst: int = 5, refill: float = 12.0, max_clients: int = 10000) -> None:
        self.burst, self.refill, self.max_clients = burst, refill, max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tries, at)
        self._lock = threading.Lock()

    def _tries(self, address: str, now: float) -> float:
        tries, at = self._buckets.get(address, (float(self.burst), now))
        return min(float(self.burst), tries + (now - at) / self.refill)

    def allowed(self, address: str, now: float) -> bool:
        """Return whether ``address`` may try to log in now."""
        with self._lock:
            return self._tries(address, now) >= 1

    def failed(self, address: str, now: float) -> None:
        """Count a failed login from ``address``."""
        with self._lock:
            if len(self._buckets) >= self.max_clients:  # forget full buckets first
                self._buckets = {
                    a: b for a, b in self._buckets.items() if self._tries(a, now) < self.burst
                }
            self._buckets[address] = (max(0.0, self._tries(address, now) - 1), now)
