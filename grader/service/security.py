"""Passwords (argon2id), secrets (sign-up links, sessions, API tokens: random, stored as sha256), CSRF tokens.

A secret we hand out is 32 random bytes; only its sha256 is stored, so a copy of the database gives no
usable token. Tokens carry a prefix saying what they are (cns_t_ API token, cns_s_ session, cns_u_ sign-up).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

SCOPES = ("read", "submit", "manage")

_hasher = None


def _ph():
    global _hasher
    if _hasher is None:
        from argon2 import PasswordHasher, Type
        _hasher = PasswordHasher(type=Type.ID)   # argon2id, the library's (RFC 9106 low-memory) parameters
    return _hasher


def hash_password(password: str) -> str:
    return _ph().hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError
    if not stored:
        _ph().hash(password)   # the same work as a real check: no timing difference for unknown users
        return False
    try:
        return _ph().verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def new_secret(kind: str) -> str:
    return f"cns_{kind}_{secrets.token_urlsafe(32)}"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
