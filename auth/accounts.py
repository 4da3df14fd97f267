"""Accounts and sessions: input rules, issuing and rotating token pairs, admin CLI.

Everything here runs inside a transaction the caller owns (except
`create_or_promote_admin`, the CLI's entry point). Argon2 hashing is slow (tens of ms):
callers hash BEFORE opening a write transaction, never inside one.
"""
from __future__ import annotations

import hmac
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from auth import audit, tokens
from auth.authenticate import session_is_live
from auth.passwords import hash_password
from db import models
from db import sessions as sessions_db
from db import users as users_db
from db.engine import Database, transaction
from errors import BadUserInput, Conflict, Unauthenticated

USERNAME_MIN_LENGTH = 3
_USERNAME = re.compile(r"[A-Za-z0-9_.-]+")


def validate_username(settings: Any, username: str, *, field: str = "username") -> str:
    name = username.strip()
    if not USERNAME_MIN_LENGTH <= len(name) <= settings.username_max_length:
        raise BadUserInput(
            f"Username must be {USERNAME_MIN_LENGTH} to {settings.username_max_length} characters", field=field
        )
    if not _USERNAME.fullmatch(name):
        raise BadUserInput("Username may contain only letters, digits, '_', '.' and '-'", field=field)
    return name


def validate_password(settings: Any, password: str, *, field: str = "password") -> str:
    if not settings.password_min_length <= len(password) <= settings.password_max_length:
        raise BadUserInput(
            f"Password must be {settings.password_min_length} to {settings.password_max_length} characters",
            field=field,
        )
    return password


def validate_display_name(settings: Any, display_name: str, *, field: str = "displayName") -> str:
    name = unicodedata.normalize("NFC", display_name).strip()
    if not 1 <= len(name) <= settings.display_name_max_length:
        raise BadUserInput(f"Display name must be 1 to {settings.display_name_max_length} characters", field=field)
    if any(unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"} for ch in name):
        raise BadUserInput("Display name contains control characters", field=field)
    return name


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    session: models.AuthSession


def _mint_access(settings: Any, row: models.AuthSession, *, jti: str | None, issued_at: int | None) -> tuple[str, Any]:
    return tokens.mint_access_token(
        settings.secret_key, user_id=row.user_id, session_id=row.id, ttl=settings.access_token_ttl_seconds,
        issuer=settings.jwt_issuer, audience=settings.jwt_audience, jti=jti, issued_at=issued_at,
    )


def _expiry(claims: Any) -> datetime:
    return datetime.fromtimestamp(claims.expires_at, tz=UTC)


async def start_session(
    session: AsyncSession, settings: Any, *, user_id: int, ip_address: str | None, user_agent: str | None,
    now: datetime,
) -> TokenPair:
    """A fresh session row (one per login) and its first token pair."""
    row = await sessions_db.create(
        session, user_id=user_id, now=now,
        expires_at=now + timedelta(seconds=settings.session_absolute_ttl_seconds),
        refresh_hash=tokens.refresh_digest(tokens.new_refresh_token()),  # replaced below, once the id is known
        ip_address=ip_address, user_agent=user_agent,
    )
    refresh = tokens.mint_refresh_token(settings.secret_key, row.id, 0)
    access, claims = _mint_access(settings, row, jti=None, issued_at=None)
    row.refresh_hash = tokens.refresh_digest(refresh)
    row.access_jti, row.access_issued_at = claims.jti, claims.issued_at
    await session.flush()
    return TokenPair(access, _expiry(claims), refresh, row)


@dataclass(frozen=True)
class Refreshed:
    """The outcome of presenting a refresh token. `reused`: an earlier token came back
    after the grace, the session is revoked in this transaction (commit, then refuse)."""

    pair: TokenPair | None
    reused: models.AuthSession | None = None


async def refresh_session(session: AsyncSession, settings: Any, token: str, *, now: datetime) -> Refreshed:
    """Rotate the refresh token under the session row's lock.

    - the current token: a new pair, the old token kept (hashed) with the new one sealed
      under it, so presenting the old one again within the grace returns the same pair;
    - an earlier token after the grace (or any older one): theft, the session is revoked;
    - anything else: UNAUTHENTICATED.
    """
    parsed = tokens.parse_refresh_token(settings.secret_key, token)
    if parsed is None:
        raise Unauthenticated("invalid refresh token")
    session_id, generation = parsed
    row = await sessions_db.get_for_update(session, session_id)
    if row is None:
        raise Unauthenticated("invalid refresh token")
    if row.revoked_at is not None:
        raise Unauthenticated("session revoked")
    if not session_is_live(row, settings, now):
        raise Unauthenticated("session expired")
    digest = tokens.refresh_digest(token)
    if hmac.compare_digest(digest, row.refresh_hash):
        refresh = tokens.mint_refresh_token(settings.secret_key, row.id, row.generation + 1)
        access, claims = _mint_access(settings, row, jti=None, issued_at=None)
        row.previous_refresh_hash = digest
        row.refresh_hash = tokens.refresh_digest(refresh)
        row.grace_sealed = tokens.seal_for_grace(refresh, token, settings.secret_key)
        row.rotated_at = now
        row.generation += 1
        row.access_jti, row.access_issued_at = claims.jti, claims.issued_at
        row.last_active_at = now
        await session.flush()
        return Refreshed(TokenPair(access, _expiry(claims), refresh, row))
    if row.previous_refresh_hash is not None and hmac.compare_digest(digest, row.previous_refresh_hash):
        within_grace = (
            row.rotated_at is not None
            and (now - row.rotated_at).total_seconds() <= settings.refresh_reuse_grace_seconds
        )
        if within_grace and row.grace_sealed is not None and row.access_jti and row.access_issued_at:
            refresh = tokens.unseal_for_grace(row.grace_sealed, token, settings.secret_key)
            if hmac.compare_digest(tokens.refresh_digest(refresh), row.refresh_hash):
                access, claims = _mint_access(settings, row, jti=row.access_jti, issued_at=row.access_issued_at)
                return Refreshed(TokenPair(access, _expiry(claims), refresh, row))
    if generation < row.generation:
        revoked = await sessions_db.revoke(session, [row.id], reason="refresh token reused", now=now)
        return Refreshed(None, reused=row if revoked else None)
    raise Unauthenticated("invalid refresh token")


# ------------------------------------------------------------------------- admin CLI


async def create_or_promote_admin(settings: Any, db: Database, username: str, password: str | None) -> str:
    """`server.py create-admin USER`: promote an existing user, or create an admin.

    The password is only used (and required) when the user does not exist yet.
    """
    async with db.session() as s:
        user = await users_db.by_username(s, username)
    if user is not None:
        if user.is_admin:
            return f"{user.username} is already an admin"
        async with transaction(db) as tx:
            await tx.session.execute(update(models.User).where(models.User.id == user.id).values(is_admin=True))
            await audit.record(tx.session, audit.ADMIN_GRANTED, None, None, f"user={user.username} via create-admin")
        return f"promoted {user.username} to admin"
    name = validate_username(settings, username)
    if not password:
        raise BadUserInput(
            "A new admin needs a password: --password, $PARLEY_ADMIN_PASSWORD or the prompt", field="password"
        )
    validate_password(settings, password)
    password_hash = await hash_password(password)
    try:
        async with transaction(db) as tx:
            created = await users_db.create(
                tx.session, username=name, display_name=name, password_hash=password_hash, is_admin=True
            )
            await audit.record(
                tx.session, audit.ADMIN_GRANTED, created.id, None, f"user={name} created via create-admin"
            )
    except IntegrityError:
        raise Conflict("That username was just taken", field="username") from None
    return f"created admin {name}"
