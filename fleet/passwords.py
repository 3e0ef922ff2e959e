"""Password hashes for OS accounts on nodes (SHA-512 crypt, what ``chpasswd -e`` accepts)."""

from __future__ import annotations

from passlib.hash import sha512_crypt

ROUNDS = 5000  # glibc's default for $6$ hashes; every Linux node understands it


def crypt_sha512(password: str) -> str:
    """Return the ``$6$`` crypt(3) hash of ``password`` with a fresh random salt, for
    ``chpasswd -e`` on a node's standard input (the plain password never leaves the
    controller)."""
    return str(sha512_crypt.using(rounds=ROUNDS).hash(password))
