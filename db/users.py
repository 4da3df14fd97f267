"""User rows: lookups, creation, search, and who shares a conversation with whom."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from db import models


def username_key(username: str) -> str:
    """The case-insensitive identity of a username (what the unique index holds)."""
    return username.strip().casefold()


async def by_id(session: AsyncSession, user_id: int) -> models.User | None:
    return await session.get(models.User, user_id)


async def by_ids(session: AsyncSession, user_ids: Iterable[int]) -> dict[int, models.User]:
    wanted = list(set(user_ids))
    if not wanted:
        return {}
    rows = (await session.execute(select(models.User).where(models.User.id.in_(wanted)))).scalars()
    return {row.id: row for row in rows}


async def by_username(session: AsyncSession, username: str) -> models.User | None:
    return (
        await session.execute(select(models.User).where(models.User.username_key == username_key(username)))
    ).scalar_one_or_none()


async def create(
    session: AsyncSession, *, username: str, display_name: str, password_hash: str, is_admin: bool = False
) -> models.User:
    """Insert a user; the caller turns an IntegrityError (taken name) into CONFLICT."""
    user = models.User(
        username=username, username_key=username_key(username), display_name=display_name,
        password_hash=password_hash, is_admin=is_admin, created_at=models.utcnow(),
    )
    session.add(user)
    await session.flush()
    return user


async def set_password_hash(session: AsyncSession, user_id: int, password_hash: str) -> None:
    await session.execute(
        update(models.User).where(models.User.id == user_id).values(password_hash=password_hash)
    )


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search(
    session: AsyncSession, query: str | None, *, after_key: str | None, limit: int
) -> Sequence[models.User]:
    """Users by username (prefix) or display name (substring), ordered by username_key.

    Keyset on the unique username_key; fetch `limit` rows (callers pass size + 1).
    """
    stmt = select(models.User)
    text = (query or "").strip().casefold()
    if text:
        pattern = _escape_like(text)
        stmt = stmt.where(
            or_(
                models.User.username_key.like(f"{pattern}%", escape="\\"),
                func.lower(models.User.display_name).like(f"%{pattern}%", escape="\\"),
            )
        )
    if after_key is not None:
        stmt = stmt.where(models.User.username_key > after_key)
    stmt = stmt.order_by(models.User.username_key).limit(limit)
    return (await session.execute(stmt)).scalars().all()


async def sharing_with(session: AsyncSession, viewer_id: int, user_ids: Iterable[int]) -> set[int]:
    """Which of `user_ids` share a live conversation (direct or group) with `viewer_id`.

    Group membership is membership of the group's conversation, so one self-join over
    conversation_members answers both.
    """
    wanted = list(set(user_ids))
    if not wanted:
        return set()
    mine = aliased(models.ConversationMember)
    theirs = aliased(models.ConversationMember)
    stmt = (
        select(theirs.user_id)
        .join(mine, mine.conversation_id == theirs.conversation_id)
        .join(models.Conversation, models.Conversation.id == theirs.conversation_id)
        .outerjoin(models.Group, models.Group.id == models.Conversation.group_id)
        .where(
            mine.user_id == viewer_id,
            theirs.user_id.in_(wanted),
            models.Conversation.deleted_at.is_(None),
            models.Group.deleted_at.is_(None),
        )
        .distinct()
    )
    return set((await session.execute(stmt)).scalars())


async def set_presence_choice(session: AsyncSession, user_id: int, choice: str) -> models.User | None:
    await session.execute(update(models.User).where(models.User.id == user_id).values(presence_choice=choice))
    return await session.get(models.User, user_id, populate_existing=True)


async def count(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(models.User))).scalar_one())
