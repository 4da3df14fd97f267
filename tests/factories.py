"""Fast test data: users with live sessions and access tokens, without argon2 per user.

The accounts tests exercise the real register/login path; everything else uses this to
get signed-in users quickly. Rows go through the same models and the same token code.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event

from auth import tokens
from db import models
from schema import ids

_counter = itertools.count(1)
# A real argon2id hash of "correct horse battery", computed once per process.
_PASSWORD = "correct horse battery"
_HASH: str | None = None


@dataclass
class TestUser:
    id: int
    username: str
    token: str
    session_id: int
    password: str = _PASSWORD

    @property
    def gid(self) -> str:
        return ids.encode("User", self.id)


async def _hash() -> str:
    global _HASH
    if _HASH is None:
        from auth.passwords import hash_password

        _HASH = await hash_password(_PASSWORD)
    return _HASH


async def create_user(
    app: Any, username: str | None = None, *, admin: bool = False, display_name: str | None = None
) -> TestUser:
    services = app.state.parley.services
    settings = services.settings
    name = username or f"user{next(_counter)}"
    now = datetime.now(UTC)
    async with services.db.writer() as session, session.begin():
        user = models.User(
            username=name, username_key=name.casefold(), display_name=display_name or name.title(),
            password_hash=await _hash(), is_admin=admin, created_at=now,
        )
        session.add(user)
        await session.flush()
        auth_session = models.AuthSession(
            user_id=user.id, created_at=now, last_active_at=now,
            expires_at=now + timedelta(seconds=settings.session_absolute_ttl_seconds),
            refresh_hash=tokens.refresh_digest(tokens.new_refresh_token()),
        )
        session.add(auth_session)
        await session.flush()
        user_id, session_id = user.id, auth_session.id
    token, _ = tokens.mint_access_token(
        settings.secret_key, user_id=user_id, session_id=session_id,
        ttl=settings.access_token_ttl_seconds, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
    )
    return TestUser(id=user_id, username=name, token=token, session_id=session_id)


async def create_users(app: Any, count: int, prefix: str = "user") -> list[TestUser]:
    return [await create_user(app, f"{prefix}{next(_counter)}") for _ in range(count)]


@dataclass
class GroupChat:
    group_id: int
    conversation_id: int

    @property
    def gid(self) -> str:
        return ids.encode("Conversation", self.conversation_id)


async def make_group(app: Any, owner: TestUser, members: dict[str, list[TestUser]] | None = None,
                     name: str = "Team") -> GroupChat:
    """A group and its GROUP conversation: `owner` as OWNER, `members` by role name."""
    db = app.state.parley.services.db
    now = datetime.now(UTC)
    roles: list[tuple[int, str]] = [(owner.id, "OWNER")]
    for role, users in (members or {}).items():
        roles.extend((u.id, role) for u in users)
    async with db.writer() as s, s.begin():
        group = models.Group(name=name, name_key=name.casefold(), visibility="PRIVATE", owner_id=owner.id,
                             member_count=len(roles), created_at=now)
        s.add(group)
        await s.flush()
        conversation = models.Conversation(kind="GROUP", group_id=group.id, created_at=now, updated_at=now,
                                           last_seq=0, last_event_pos=0)
        s.add(conversation)
        await s.flush()
        s.add_all([models.ConversationMember(conversation_id=conversation.id, user_id=uid, role=role, joined_at=now)
                   for uid, role in roles])
    return GroupChat(group.id, conversation.id)


_TRANSACTION_CONTROL = {"BEGIN", "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"}


@contextmanager
def recorded_statements(db: Any) -> Iterator[list[str]]:
    """The SQL statements sent through `db` (a db.engine.Database) meanwhile, without
    transaction control (BEGIN/COMMIT/ROLLBACK)."""
    engine = db.engine.sync_engine
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.strip().upper() not in _TRANSACTION_CONTROL:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)
