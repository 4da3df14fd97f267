"""Access tokens (JWT) and refresh tokens (opaque, stored hashed).

Access: HS256 with sub, sid, jti, iat, exp, iss, aud; verification pins the algorithm
and requires every claim. Refresh: 256 random bits plus the session id and rotation
generation under a MAC, single use; only a SHA-256 digest is stored.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from errors import Unauthenticated

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["sub", "sid", "jti", "iat", "exp", "iss", "aud"]


@dataclass(frozen=True)
class AccessClaims:
    user_id: int
    session_id: int
    jti: str
    issued_at: int
    expires_at: int


def mint_access_token(
    secret: str, *, user_id: int, session_id: int, ttl: int, issuer: str, audience: str,
    jti: str | None = None, issued_at: int | None = None,
) -> tuple[str, AccessClaims]:
    """A signed access token; passing `jti` and `issued_at` again re-mints the same token."""
    iat = int(time.time()) if issued_at is None else issued_at
    claims = AccessClaims(
        user_id=user_id, session_id=session_id, jti=jti or secrets.token_urlsafe(16),
        issued_at=iat, expires_at=iat + ttl,
    )
    payload: dict[str, Any] = {
        "sub": str(user_id), "sid": str(session_id), "jti": claims.jti, "iat": iat,
        "exp": claims.expires_at, "iss": issuer, "aud": audience,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM), claims


def decode_access_token(secret: str, token: str, *, issuer: str, audience: str) -> AccessClaims:
    """Verified claims, or Unauthenticated("expired token" / "invalid token")."""
    try:
        payload = jwt.decode(
            token, secret, algorithms=[ALGORITHM], audience=audience, issuer=issuer,
            options={"require": REQUIRED_CLAIMS, "verify_signature": True, "verify_exp": True,
                     "verify_iat": True, "verify_aud": True, "verify_iss": True},
            leeway=5,
        )
        return AccessClaims(
            user_id=int(payload["sub"]), session_id=int(payload["sid"]), jti=str(payload["jti"]),
            issued_at=int(payload["iat"]), expires_at=int(payload["exp"]),
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("expired token") from None
    except (jwt.InvalidTokenError, ValueError, TypeError, KeyError):
        raise Unauthenticated("invalid token") from None


def new_refresh_token() -> str:
    """256 random bits, URL-safe (the secret part of a refresh token)."""
    return secrets.token_urlsafe(32)


def _refresh_mac(secret: str, body: str) -> str:
    digest = hmac.new(secret.encode(), b"refresh:" + body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def mint_refresh_token(secret: str, session_id: int, generation: int) -> str:
    """`<session id>.<generation>.<256 random bits>.<MAC>`: opaque to clients.

    Naming the session and generation (authenticated by the MAC, so nobody can forge
    one) lets the server recognise ANY earlier token of a session, not only the one
    just replaced, and revoke the session when one is presented again.
    """
    body = f"{session_id}.{generation}.{new_refresh_token()}"
    return f"{body}.{_refresh_mac(secret, body)}"


def parse_refresh_token(secret: str, token: str) -> tuple[int, int] | None:
    """(session id, generation) of a token this server minted, else None."""
    parts = token.split(".")
    if len(parts) != 4 or len(token) > 200:
        return None
    session_id, generation, random_part, mac = parts
    if not (session_id.isdigit() and generation.isdigit()) or len(session_id) > 19 or len(generation) > 12:
        return None
    expected = _refresh_mac(secret, f"{session_id}.{generation}.{random_part}")
    if not random_part or not hmac.compare_digest(mac, expected):
        return None
    return int(session_id), int(generation)


def refresh_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _keystream(old_token: str, secret: str, length: int) -> bytes:
    """HMAC-SHA256 in counter mode, keyed by the server secret and the old token."""
    blocks = []
    for counter in range(length // 32 + 1):
        blocks.append(
            hmac.new(secret.encode(), b"grace:%d:" % counter + old_token.encode(), hashlib.sha256).digest()
        )
    return b"".join(blocks)[:length]


def seal_for_grace(new_token: str, old_token: str, secret: str) -> bytes:
    """Seal the new refresh token with a key only the holder of the old one can derive,
    so a second presentation of the old token within the grace returns the same pair."""
    raw = new_token.encode()
    return bytes(a ^ b for a, b in zip(raw, _keystream(old_token, secret, len(raw)), strict=True))


def unseal_for_grace(sealed: bytes, old_token: str, secret: str) -> str:
    stream = _keystream(old_token, secret, len(sealed))
    return bytes(a ^ b for a, b in zip(sealed, stream, strict=True)).decode("utf-8", "replace")
