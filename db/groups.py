"""Groups and their membership (which is the group conversation's membership).

Every write here runs inside the caller's transaction. Callers that change a group's
membership or ownership first load the group with `lock=True` (`FOR UPDATE OF groups`
on PostgreSQL; SQLite writers are already serialised by BEGIN IMMEDIATE), so
`member_count` and the owner never race.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, and_, delete, insert, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from db import models

GROUP = "GROUP"


@dataclass
class GroupView:
    """A live group, its conversation and the viewer's membership row (None if not a member)."""

    group: models.Group
    conversation: models.Conversation
    membership: models.ConversationMember | None


async def load_for_user(session: AsyncSession, group_id: int, user_id: int, *, lock: bool = False) -> GroupView | None:
    """One query: the group (not deleted), its conversation, and `user_id`'s membership."""
    member = models.ConversationMember
    query = (
        select(models.Group, models.Conversation, member)
        .join(models.Conversation, models.Conversation.group_id == models.Group.id)
        .outerjoin(member, and_(member.conversation_id == models.Conversation.id, member.user_id == user_id))
        .where(models.Group.id == group_id, models.Group.deleted_at.is_(None))
    )
    if lock:
        query = query.with_for_update(of=models.Group)
    row = (await session.execute(query)).first()
    if row is None:
        return None
    return GroupView(group=row[0], conversation=row[1], membership=row[2])


async def membership(session: AsyncSession, conversation_id: int, user_id: int) -> models.ConversationMember | None:
    return (
        await session.execute(
            select(models.ConversationMember).where(
                models.ConversationMember.conversation_id == conversation_id,
                models.ConversationMember.user_id == user_id,
            )
        )
    ).scalar_one_or_none()


async def existing_user_ids(session: AsyncSession, user_ids: Iterable[int]) -> set[int]:
    wanted = list(set(user_ids))
    found: set[int] = set()
    for start in range(0, len(wanted), 500):  # stay under SQLite's bound-parameter limit
        chunk = wanted[start : start + 500]
        rows = await session.execute(select(models.User.id).where(models.User.id.in_(chunk)))
        found.update(rows.scalars())
    return found


async def create(
    session: AsyncSession, *, name: str, description: str | None, visibility: str, owner_id: int,
    member_ids: Sequence[int], now: datetime,
) -> tuple[models.Group, models.Conversation]:
    """The group, its conversation, the owner as OWNER and `member_ids` (not the owner) as MEMBER."""
    others = [uid for uid in dict.fromkeys(member_ids) if uid != owner_id]
    group = models.Group(
        name=name, name_key=name_key(name), description=description, visibility=visibility,
        owner_id=owner_id, member_count=1 + len(others), created_at=now,
    )
    session.add(group)
    await session.flush()
    conversation = models.Conversation(kind=GROUP, group_id=group.id, created_at=now, updated_at=now)
    session.add(conversation)
    await session.flush()
    await _insert_members(session, conversation.id, [(owner_id, "OWNER"), *((uid, "MEMBER") for uid in others)], now)
    return group, conversation


async def add_members(
    session: AsyncSession, group: models.Group, conversation_id: int, user_ids: Sequence[int], now: datetime,
    role: str = "MEMBER",
) -> list[int]:
    """Adds those of `user_ids` who are not members yet; returns them. Group row must be locked."""
    wanted = list(dict.fromkeys(user_ids))
    if not wanted:
        return []
    present: set[int] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = await session.execute(
            select(models.ConversationMember.user_id).where(
                models.ConversationMember.conversation_id == conversation_id,
                models.ConversationMember.user_id.in_(chunk),
            )
        )
        present.update(rows.scalars())
    new = [uid for uid in wanted if uid not in present]
    if new:
        await _insert_members(session, conversation_id, [(uid, role) for uid in new], now)
        await _bump_count(session, group, len(new))
    return new


async def remove_member(session: AsyncSession, group: models.Group, member: models.ConversationMember) -> None:
    await session.execute(delete(models.ConversationMember).where(models.ConversationMember.id == member.id))
    await _bump_count(session, group, -1)


async def set_role(session: AsyncSession, member: models.ConversationMember, role: str) -> None:
    await session.execute(
        update(models.ConversationMember).where(models.ConversationMember.id == member.id).values(role=role)
    )
    member.role = role


async def set_owner(session: AsyncSession, group: models.Group, owner_id: int) -> None:
    await session.execute(update(models.Group).where(models.Group.id == group.id).values(owner_id=owner_id))
    group.owner_id = owner_id


async def update_fields(session: AsyncSession, group: models.Group, changes: dict[str, object]) -> None:
    """`changes`: any of name, description, visibility (name_key follows name)."""
    if "name" in changes:
        changes = {**changes, "name_key": name_key(str(changes["name"]))}
    if not changes:
        return
    await session.execute(update(models.Group).where(models.Group.id == group.id).values(**changes))
    for key, value in changes.items():
        setattr(group, key, value)


async def soft_delete(
    session: AsyncSession, group: models.Group, conversation: models.Conversation, now: datetime
) -> None:
    """Group and conversation stay as rows (notifications point at them) but vanish everywhere."""
    await session.execute(update(models.Group).where(models.Group.id == group.id).values(deleted_at=now))
    await session.execute(
        update(models.Conversation).where(models.Conversation.id == conversation.id).values(deleted_at=now)
    )
    group.deleted_at = now
    conversation.deleted_at = now


# ---- reads for lists and loaders ------------------------------------------------------
def name_key(name: str) -> str:
    return name.casefold()


def _viewer_group_ids(user_id: int) -> Select[int | None]:
    return (
        select(models.Conversation.group_id)
        .join(models.ConversationMember, models.ConversationMember.conversation_id == models.Conversation.id)
        .where(models.ConversationMember.user_id == user_id, models.Conversation.group_id.is_not(None))
    )


def visible_to(user_id: int) -> ColumnElement[bool]:
    """WHERE clause: live groups that are public or have `user_id` as a member."""
    return and_(
        models.Group.deleted_at.is_(None),
        or_(models.Group.visibility == "PUBLIC", models.Group.id.in_(_viewer_group_ids(user_id))),
    )


async def list_visible(
    session: AsyncSession, user_id: int, *, prefix: str | None, after: tuple[str, int] | None, limit: int
) -> list[models.Group]:
    """Keyset page ordered by (name_key, id); `prefix` is matched against name_key."""
    query = select(models.Group).where(visible_to(user_id))
    if prefix:
        query = query.where(models.Group.name_key.startswith(name_key(prefix), autoescape=True))
    if after is not None:
        query = query.where(tuple_(models.Group.name_key, models.Group.id) > tuple_(*after))
    query = query.order_by(models.Group.name_key, models.Group.id).limit(limit)
    return list((await session.execute(query)).scalars())


async def roles_of(session: AsyncSession, group_ids: Sequence[int], user_id: int) -> dict[int, str]:
    rows = await session.execute(
        select(models.Conversation.group_id, models.ConversationMember.role)
        .join(models.ConversationMember, models.ConversationMember.conversation_id == models.Conversation.id)
        .where(models.Conversation.group_id.in_(group_ids), models.ConversationMember.user_id == user_id)
    )
    return {gid: role for gid, role in rows.all() if gid is not None and role is not None}


async def conversations_of(session: AsyncSession, group_ids: Sequence[int]) -> dict[int, models.Conversation]:
    rows = await session.execute(
        select(models.Conversation).where(
            models.Conversation.group_id.in_(group_ids), models.Conversation.deleted_at.is_(None)
        )
    )
    return {c.group_id: c for c in rows.scalars() if c.group_id is not None}


# ---- internals --------------------------------------------------------------------------
async def _insert_members(
    session: AsyncSession, conversation_id: int, members: Sequence[tuple[int, str]], now: datetime
) -> None:
    # A newcomer starts "read up to now": the history before joining is not unread;
    # a message sent concurrently gets a later seq and counts as unread, as it should.
    last_seq = (
        await session.execute(select(models.Conversation.last_seq).where(models.Conversation.id == conversation_id))
    ).scalar_one()
    rows = [
        {
            "conversation_id": conversation_id, "user_id": uid, "role": role, "joined_at": now,
            "last_read_seq": last_seq, "hidden": False, "hidden_at_seq": 0,
        }
        for uid, role in members
    ]
    if rows:
        await session.execute(insert(models.ConversationMember), rows)


async def _bump_count(session: AsyncSession, group: models.Group, delta: int) -> None:
    new_count = (
        await session.execute(
            update(models.Group)
            .where(models.Group.id == group.id)
            .values(member_count=models.Group.member_count + delta)
            .returning(models.Group.member_count)
        )
    ).scalar_one()
    group.member_count = new_count
