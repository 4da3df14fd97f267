"""Bearer token -> Viewer, checked against the session on every request.

The JWT proves who signed it; the session row decides whether it still counts, so
logout and revocation take effect on the next request on every instance.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

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


def session_is_live(session: models.AuthSession, settings: Any, now: datetime) -> bool:
    if session.revoked_at is not None or session.expires_at <= now:
        return False
    return session.last_active_at + timedelta(seconds=settings.session_idle_ttl_seconds) > now


async def authenticate(services: Any, token: str) -> Viewer:
    """The viewer for `token`, or Unauthenticated with the contract's reason:
    "invalid token", "expired token" or "session revoked"."""
    settings = services.settings
    claims = tokens.decode_access_token(
        settings.secret_key, token, issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    async with services.db.session() as session:
        row = (
            await session.execute(
                select(models.AuthSession, models.User.is_admin)
                .join(models.User, models.User.id == models.AuthSession.user_id)
                .where(models.AuthSession.id == claims.session_id)
            )
        ).first()
    now = datetime.now(UTC)
    if row is None or row[0].user_id != claims.user_id:
        raise Unauthenticated("invalid token")
    auth_session, is_admin = row
    if not session_is_live(auth_session, settings, now):
        raise Unauthenticated("session revoked")
    if (now - auth_session.last_active_at).total_seconds() >= settings.session_touch_interval_seconds:
        await touch_session(services.db, auth_session.id, now)
    return Viewer(user_id=claims.user_id, session_id=claims.session_id, is_admin=bool(is_admin))


async def touch_session(db: Any, session_id: int, now: datetime) -> None:
    """Last-active moves at most once a minute (the caller checks), in its own short write."""
    async with db.writer() as session, session.begin():
        await session.execute(
            update(models.AuthSession)
            .where(models.AuthSession.id == session_id, models.AuthSession.revoked_at.is_(None))
            .values(last_active_at=now)
        )
