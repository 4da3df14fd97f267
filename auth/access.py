"""Fetch-and-authorize helpers for conversations and messages, used by every domain.

Each helper returns the rows it checked, so callers do not fetch them again, and
raises NotFound for anything the viewer may not see (missing, deleted, or not a
member), so existence never leaks. FORBIDDEN is the caller's business: it is for
what the viewer can see but may not do (see auth.permissions for group roles).
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from auth.viewer import Viewer
from db import models
from errors import NotFound


async def access_conversation(
    session: AsyncSession, viewer: Viewer, conversation_id: int, *, lock: bool = False
) -> tuple[models.Conversation, models.ConversationMember]:
    """The conversation and the viewer's membership, or NotFound.

    `lock=True` takes the conversation row lock (SELECT ... FOR UPDATE on PostgreSQL;
    SQLite writers are serialised anyway): use it when a decision reads the counters
    that concurrent senders advance (for example hiding "up to the latest message").
    """
    stmt = (
        select(models.Conversation, models.ConversationMember)
        .join(
            models.ConversationMember,
            (models.ConversationMember.conversation_id == models.Conversation.id)
            & (models.ConversationMember.user_id == viewer.user_id),
        )
        .where(models.Conversation.id == conversation_id, models.Conversation.deleted_at.is_(None))
    )
    if lock:
        stmt = stmt.with_for_update(of=models.Conversation)
    row = (await session.execute(stmt)).first()
    if row is None:
        raise NotFound("Conversation not found")
    return row[0], row[1]


async def member_role(session: AsyncSession, conversation_id: int, user_id: int) -> str | None:
    """The user's group role in the conversation; None when not a member or in a direct one."""
    return (
        await session.execute(
            select(models.ConversationMember.role).where(
                models.ConversationMember.conversation_id == conversation_id,
                models.ConversationMember.user_id == user_id,
            )
        )
    ).scalar_one_or_none()


async def access_message(
    session: AsyncSession, viewer: Viewer, message_id: int, *, lock: bool = False
) -> tuple[models.Message, models.Conversation, models.ConversationMember]:
    """A message of a conversation the viewer is in, with both rows, or NotFound.

    `lock=True` takes the conversation row lock first and then re-reads the message,
    so the caller decides on the latest committed state (edit vs concurrent delete).
    """
    message = await session.get(models.Message, message_id)
    if message is None:
        raise NotFound("Message not found")
    try:
        conversation, member = await access_conversation(session, viewer, message.conversation_id, lock=lock)
    except NotFound:
        raise NotFound("Message not found") from None
    if lock:
        await session.refresh(message)
    return message, conversation, member
