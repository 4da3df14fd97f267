"""Accounts and sessions: register, login, refresh, logout, revocation, profile, lookups.

Also the loaders other domains use for users (`user_by_id`) and the presence rules
(`presence_visible`, `live_presence`, `effective_presence`), and `rate_limit(ctx, name)`
for resolvers that spend a rate-limit class of their own (sendMessage).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from auth import accounts, audit
from auth.authenticate import session_is_live
from auth.passwords import hash_password, needs_rehash, verify_password
from auth.ratelimit import client_key
from auth.viewer import Viewer
from db import models
from db import sessions as sessions_db
from db import users as users_db
from db.engine import Transaction, transaction
from errors import BadUserInput, Conflict, NotFound, Unauthenticated
from resolvers.context import Context

PRESENCE_STATUSES = ("ONLINE", "AWAY", "OFFLINE")
LOGIN_FAILED_MESSAGE = "Invalid username or password"


@dataclass(frozen=True)
class SignedIn:
    """What register, login and refreshToken return (the AuthPayload)."""

    pair: accounts.TokenPair
    user: models.User


# ----------------------------------------------------------------------- helpers


async def rate_limit(ctx: Context, name: str) -> None:
    """Spend one unit of rate-limit class `name` for the viewer (or the client address).

    Raises RateLimited (extensions.retryAfter). sendMessage calls
    `await rate_limit(ctx, "send_message")` before writing.
    """
    limiter = ctx.services.limiter
    if limiter is not None:
        await limiter.hit(name, client_key(ctx.viewer, ctx.ip_address))


def _publish(tx: Transaction, ctx: Context, method: str, *args: Any) -> None:
    """Announce after commit through ctx.events (absent when realtime is not wired)."""
    events = ctx.events
    if events is not None:
        tx.after_commit(getattr(events, method), *args)


async def _audit(tx: Transaction, ctx: Context, kind: str, actor_id: int | None, detail: str | None) -> None:
    row = await audit.record(tx.session, kind, actor_id, ctx.ip_address, detail)
    _publish(tx, ctx, "audit", row.id)


def _revoked(tx: Transaction, ctx: Context, session_ids: list[int]) -> None:
    if session_ids:
        _publish(tx, ctx, "sessions_revoked", session_ids)


# ------------------------------------------------------------------ sign-in flows


async def register(ctx: Context, username: str, password: str, display_name: str | None) -> SignedIn:
    """Create an account and sign it in. A taken username is CONFLICT (field username):
    registration inherently reveals that a name exists; login never does."""
    await rate_limit(ctx, "auth")
    settings = ctx.settings
    name = accounts.validate_username(settings, username)
    accounts.validate_password(settings, password)
    shown = name if display_name is None else accounts.validate_display_name(settings, display_name)
    async with ctx.db.session() as s:
        if await users_db.by_username(s, name) is not None:
            raise Conflict("That username is taken", field="username")
    password_hash = await hash_password(password)
    now = models.utcnow()
    try:
        async with transaction(ctx.db) as tx:
            user = await users_db.create(tx.session, username=name, display_name=shown, password_hash=password_hash)
            pair = await accounts.start_session(
                tx.session, settings, user_id=user.id, ip_address=ctx.ip_address, user_agent=ctx.user_agent, now=now
            )
            await _audit(tx, ctx, audit.REGISTER, user.id, f"username={name} session={pair.session.id}")
    except IntegrityError:
        raise Conflict("That username is taken", field="username") from None
    return SignedIn(pair, user)


async def login(ctx: Context, username: str, password: str) -> SignedIn:
    """A fresh session for the right password.

    An unknown username costs the same argon2 verification and gets the same message
    as a wrong password. Failures are throttled per (username, address) and per
    username (see auth.ratelimit.check_login) and audited in their own transaction.
    """
    await rate_limit(ctx, "auth")
    settings = ctx.settings
    limiter = ctx.services.limiter
    key = users_db.username_key(username)[:128]
    if limiter is not None:
        await limiter.check_login(key, ctx.ip_address)
    user: models.User | None = None
    if len(key) <= settings.username_max_length:
        async with ctx.db.session() as s:
            user = await users_db.by_username(s, key)
    checkable = len(password) <= settings.password_max_length
    stored = user.password_hash if user is not None and checkable else None
    if not await verify_password(stored, password[: settings.password_max_length + 1]):
        if limiter is not None:
            await limiter.login_failed(key, ctx.ip_address)
        await audit.record_now(
            ctx.db, ctx.events, audit.LOGIN_FAILED, user.id if user else None, ctx.ip_address,
            f"username={username[:64]!r}",
        )
        raise Unauthenticated(LOGIN_FAILED_MESSAGE)
    assert user is not None
    if limiter is not None:
        await limiter.login_succeeded(key, ctx.ip_address)
    new_hash = await hash_password(password) if needs_rehash(user.password_hash) else None
    now = models.utcnow()
    async with transaction(ctx.db) as tx:
        if new_hash is not None:
            await users_db.set_password_hash(tx.session, user.id, new_hash)
        pair = await accounts.start_session(
            tx.session, settings, user_id=user.id, ip_address=ctx.ip_address, user_agent=ctx.user_agent, now=now
        )
        await _audit(tx, ctx, audit.LOGIN, user.id, f"session={pair.session.id}")
    return SignedIn(pair, user)


async def refresh_token(ctx: Context, token: str) -> SignedIn:
    """Rotate a refresh token (see auth.accounts.refresh_session). A reused one revokes
    its session: committed, announced (sockets close), audited, then UNAUTHENTICATED."""
    now = models.utcnow()
    user: models.User | None = None
    async with transaction(ctx.db) as tx:
        result = await accounts.refresh_session(tx.session, ctx.settings, token, now=now)
        if result.reused is not None:
            reused = result.reused
            await _audit(tx, ctx, audit.REFRESH_REUSED, reused.user_id, f"session={reused.id} revoked")
            _revoked(tx, ctx, [reused.id])
        elif result.pair is not None:
            user = await users_db.by_id(tx.session, result.pair.session.user_id)
    if result.pair is None or user is None:
        raise Unauthenticated("session revoked")
    return SignedIn(result.pair, user)


async def logout(ctx: Context) -> bool:
    viewer = ctx.require_viewer()
    async with transaction(ctx.db) as tx:
        ids = await sessions_db.revoke(tx.session, [viewer.session_id], reason="logout", now=models.utcnow())
        await _audit(tx, ctx, audit.LOGOUT, viewer.user_id, f"session={viewer.session_id}")
        _revoked(tx, ctx, ids)
    return True


async def revoke_session(ctx: Context, session_id: int) -> bool:
    """End one of the viewer's live sessions; anyone else's (or a dead one) is NOT_FOUND."""
    viewer = ctx.require_viewer()
    now = models.utcnow()
    async with transaction(ctx.db) as tx:
        row = await sessions_db.get_for_update(tx.session, session_id)
        if row is None or row.user_id != viewer.user_id or not session_is_live(row, ctx.settings, now):
            raise NotFound("Session not found")
        ids = await sessions_db.revoke(tx.session, [row.id], reason="revoked", now=now)
        await _audit(tx, ctx, audit.SESSION_REVOKED, viewer.user_id, f"session={row.id}")
        _revoked(tx, ctx, ids)
    return True


async def revoke_other_sessions(ctx: Context) -> int:
    viewer = ctx.require_viewer()
    async with transaction(ctx.db) as tx:
        ids = await sessions_db.revoke_for_user(
            tx.session, viewer.user_id, keep=viewer.session_id, reason="revoked by owner", now=models.utcnow(),
            idle_seconds=ctx.settings.session_idle_ttl_seconds,
        )
        if ids:
            await _audit(tx, ctx, audit.SESSIONS_REVOKED, viewer.user_id, f"sessions={ids}")
        _revoked(tx, ctx, ids)
    return len(ids)


async def change_password(ctx: Context, current_password: str, new_password: str) -> bool:
    """New password, and every other session ends. A wrong current password counts as
    a failed login (same throttle), so a stolen access token cannot guess it freely."""
    viewer = ctx.require_viewer()
    settings = ctx.settings
    accounts.validate_password(settings, new_password, field="newPassword")
    limiter = ctx.services.limiter
    async with ctx.db.session() as s:
        user = await users_db.by_id(s, viewer.user_id)
    if user is None:
        raise Unauthenticated("session revoked")
    if limiter is not None:
        await limiter.check_login(user.username_key, ctx.ip_address)
    checkable = len(current_password) <= settings.password_max_length
    stored = user.password_hash if checkable else None
    if not await verify_password(stored, current_password[: settings.password_max_length + 1]):
        if limiter is not None:
            await limiter.login_failed(user.username_key, ctx.ip_address)
        await audit.record_now(
            ctx.db, ctx.events, audit.LOGIN_FAILED, user.id, ctx.ip_address, "changePassword: wrong current password"
        )
        raise BadUserInput("The current password is wrong", field="currentPassword")
    password_hash = await hash_password(new_password)
    async with transaction(ctx.db) as tx:
        await users_db.set_password_hash(tx.session, user.id, password_hash)
        ids = await sessions_db.revoke_for_user(
            tx.session, user.id, keep=viewer.session_id, reason="password changed", now=models.utcnow(),
            idle_seconds=settings.session_idle_ttl_seconds,
        )
        await _audit(tx, ctx, audit.PASSWORD_CHANGED, user.id, f"other sessions revoked={ids}")
        _revoked(tx, ctx, ids)
    return True


# --------------------------------------------------------------- profile, presence


async def update_profile(ctx: Context, display_name: str | None) -> models.User:
    viewer = ctx.require_viewer()
    if display_name is None:
        return await me(ctx)
    name = accounts.validate_display_name(ctx.settings, display_name)
    async with transaction(ctx.db) as tx:
        user = await users_db.by_id(tx.session, viewer.user_id)
        if user is None:
            raise Unauthenticated("session revoked")
        user.display_name = name
        await tx.session.flush()
    return user


async def set_presence(ctx: Context, status: str) -> models.User:
    """Store the chosen status (ONLINE means automatic); realtime derives presence
    from sockets and this choice. Announced after commit with the effective status."""
    viewer = ctx.require_viewer()
    if status not in PRESENCE_STATUSES:
        raise BadUserInput("Unknown presence status", field="status")
    async with transaction(ctx.db) as tx:
        user = await users_db.set_presence_choice(tx.session, viewer.user_id, status)
        if user is None:
            raise Unauthenticated("session revoked")
        tx.after_commit(_announce_presence, ctx, user)
    return user


async def _announce_presence(ctx: Context, user: models.User) -> None:
    """The presence service (realtime) publishes when the effective status changes;
    without one, publish the status derived from the row."""
    presence = ctx.services.presence
    hook = getattr(presence, "choice_changed", None)
    if hook is not None:
        await hook(user.id, user.presence_choice)
        return
    if ctx.events is None:
        return
    live = (await presence.status_of([user.id])).get(user.id) if presence is not None else None
    status = effective_presence(user, live, ctx.settings)
    await ctx.events.presence(user.id, status, user.last_seen_at.isoformat() if user.last_seen_at else None)


def effective_presence(user: models.User, live: str | None, settings: Any, now: datetime | None = None) -> str:
    """The status others see: OFFLINE without a live socket (or its grace), else the
    user's choice (AWAY / OFFLINE) or ONLINE.

    `live` comes from ctx.services.presence (None when realtime is not wired: then the
    last-seen time within the presence grace stands in for a live socket).
    """
    if live is None:
        now = now or models.utcnow()
        recent = user.last_seen_at is not None and now - user.last_seen_at <= timedelta(
            seconds=settings.presence_grace_seconds
        )
        live = "ONLINE" if recent else "OFFLINE"
    if live == "OFFLINE":
        return "OFFLINE"
    if user.presence_choice in ("AWAY", "OFFLINE"):
        return user.presence_choice
    return live if live in PRESENCE_STATUSES else "ONLINE"


# ------------------------------------------------------------------------ lookups


async def me(ctx: Context) -> models.User:
    viewer = ctx.require_viewer()
    user = await ctx.loader(user_by_id).load(viewer.user_id)
    if user is None:
        raise Unauthenticated("session revoked")
    return user  # type: ignore[no-any-return]


async def get_user(ctx: Context, user_id: int) -> models.User:
    ctx.require_viewer()
    row = await ctx.loader(user_by_id).load(user_id)
    if row is None:
        raise NotFound("User not found")
    return row  # type: ignore[no-any-return]


async def search_users(ctx: Context, query: str | None, *, after_key: str | None, limit: int) -> Sequence[models.User]:
    ctx.require_viewer()
    if query is not None and len(query) > ctx.settings.max_search_query_length:
        raise BadUserInput(
            f"query must be at most {ctx.settings.max_search_query_length} characters", field="query"
        )
    async with ctx.db.session() as s:
        rows = await users_db.search(s, query, after_key=after_key, limit=limit)
    for row in rows:
        ctx.prime(user_by_id, row.id, row)
    return rows


async def sessions(ctx: Context) -> tuple[Viewer, Sequence[models.AuthSession]]:
    viewer = ctx.require_viewer()
    async with ctx.db.session() as s:
        rows = await sessions_db.live_for_user(
            s, viewer.user_id, now=models.utcnow(), idle_seconds=ctx.settings.session_idle_ttl_seconds
        )
    return viewer, rows


# ------------------------------------------------------------------------ loaders


async def user_by_id(ctx: Context, keys: Sequence[int]) -> list[models.User | None]:
    async with ctx.db.session() as s:
        found = await users_db.by_ids(s, keys)
    return [found.get(key) for key in keys]


async def presence_visible(ctx: Context, keys: Sequence[int]) -> list[bool]:
    """Whether the viewer may see each user's presence: itself, or someone it shares a
    conversation (direct counts) or group with."""
    viewer = ctx.viewer
    if viewer is None:
        return [False] * len(keys)
    others = [key for key in keys if key != viewer.user_id]
    shared: set[int] = set()
    if others:
        async with ctx.db.session() as s:
            shared = await users_db.sharing_with(s, viewer.user_id, others)
    return [key == viewer.user_id or key in shared for key in keys]


async def live_presence(ctx: Context, keys: Sequence[int]) -> list[str | None]:
    """Socket-derived status from ctx.services.presence, None per key without it."""
    presence = ctx.services.presence
    if presence is None:
        return [None] * len(keys)
    statuses = await presence.status_of(list(keys))
    return [statuses.get(key) for key in keys]
