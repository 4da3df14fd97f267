"""Bearer token -> Viewer, checked against the session on every request.

The JWT proves who signed it; the session row decides whether it still counts, so
logout and revocation take effect on the next request on every instance.

Per request this costs one Core SELECT of five columns (no ORM entity, no session):
the session row is never cached. What is remembered (bounded LRU, per process) is only
the outcome of verifying a token's signature and claims, a pure function of the token
text and the settings; its expiry is checked again on every use.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update

from auth import tokens
from auth.viewer import Viewer
from db import models
from errors import Unauthenticated


def bearer_token(header: str | None) -> str | None:
    """The token in `Bearer <token>`; a bare token is accepted too (WebSocket init)."""
    if not header:
        return None
    value = header.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None


def session_is_live(session: Any, settings: Any, now: datetime) -> bool:
    """`session`: an AuthSession row, or any row with its revoked_at, expires_at and
    last_active_at."""
    if session.revoked_at is not None or session.expires_at <= now:
        return False
    return session.last_active_at + timedelta(seconds=settings.session_idle_ttl_seconds) > now


_S = models.AuthSession.__table__
_U = models.User.__table__
_SESSION = (
    select(_S.c.user_id, _S.c.revoked_at, _S.c.expires_at, _S.c.last_active_at, _U.c.is_admin)
    .join(_U, _U.c.id == _S.c.user_id)
    .where(_S.c.id == bindparam("p_sid"))
)

VERIFIED_MAX = 4096
_LEEWAY = 5  # seconds, as tokens.decode_access_token
_verified: OrderedDict[tuple[str, str, str, str], tokens.AccessClaims] = OrderedDict()


def verified_claims(settings: Any, token: str) -> tokens.AccessClaims:
    """`tokens.decode_access_token`, remembering tokens that passed (signature, issuer,
    audience, required claims): a token seen before costs a dict lookup and the expiry
    check. Refused tokens are never remembered."""
    key = (settings.secret_key, settings.jwt_issuer, settings.jwt_audience, token)
    claims = _verified.get(key)
    if claims is None:
        claims = tokens.decode_access_token(
            settings.secret_key, token, issuer=settings.jwt_issuer, audience=settings.jwt_audience
        )
        _verified[key] = claims
        if len(_verified) > VERIFIED_MAX:
            _verified.popitem(last=False)
    elif claims.expires_at <= time.time() - _LEEWAY:
        del _verified[key]
        raise Unauthenticated("expired token")
    return claims


async def authenticate(services: Any, token: str) -> Viewer:
    """The viewer for `token`, or Unauthenticated with the contract's reason:
    "invalid token", "expired token" or "session revoked"."""
    settings = services.settings
    claims = verified_claims(settings, token)
    db = services.db
    async with db.engine.connect() as conn:
        if db.is_postgres:  # one statement needs no transaction: saves BEGIN and ROLLBACK round trips
            await conn.execution_options(isolation_level="AUTOCOMMIT")
        row = (await conn.execute(_SESSION, {"p_sid": claims.session_id})).first()
    now = datetime.now(UTC)
    if row is None or row.user_id != claims.user_id:
        raise Unauthenticated("invalid token")
    if not session_is_live(row, settings, now):
        raise Unauthenticated("session revoked")
    if (now - row.last_active_at).total_seconds() >= settings.session_touch_interval_seconds:
        await touch_session(services.db, claims.session_id, now)
    return Viewer(user_id=claims.user_id, session_id=claims.session_id, is_admin=bool(row.is_admin))


async def touch_session(db: Any, session_id: int, now: datetime) -> None:
    """Last-active moves at most once a minute (the caller checks), in its own short write."""
    async with db.writer() as session, session.begin():
        await session.execute(
            update(models.AuthSession)
            .where(models.AuthSession.id == session_id, models.AuthSession.revoked_at.is_(None))
            .values(last_active_at=now)
        )
