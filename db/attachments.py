"""Attachment queries: visibility, attaching to a message, and what cleanup removes.

One visibility rule serves the `attachment` query, deleteAttachment, sendMessage and
the download endpoint (`visible`): the viewer is a member of the attachment's
(undeleted) conversation, the attachment is neither deleted nor purged, and either it
is pending and the viewer uploaded it, or its message is not deleted.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db import models

A = models.Attachment
CM = models.ConversationMember
C = models.Conversation
M = models.Message


async def insert(
    session: AsyncSession, *, uploader_id: int, conversation_id: int, filename: str, content_type: str,
    kind: str, size: int, storage_key: str, sha256: str | None, now: datetime,
) -> models.Attachment:
    row = A(
        uploader_id=uploader_id, conversation_id=conversation_id, filename=filename, content_type=content_type,
        kind=kind, size=size, storage_key=storage_key, sha256=sha256, created_at=now,
    )
    session.add(row)
    await session.flush()
    return row


async def visible(
    session: AsyncSession, viewer_id: int, attachment_ids: Collection[int], *, lock: bool = False
) -> dict[int, tuple[models.Attachment, models.ConversationMember]]:
    """The attachments among `attachment_ids` the viewer may see, each with the viewer's
    membership of its conversation. `lock=True` locks the attachment rows (PostgreSQL;
    SQLite writers are serialised) in id order, and refreshes them, so a decision is
    taken on the latest committed state. Lock the conversation first when you will also
    advance it (sendMessage does), never the other way round."""
    if not attachment_ids:
        return {}
    stmt = (
        select(A, CM)
        .join(C, C.id == A.conversation_id)
        .join(CM, and_(CM.conversation_id == A.conversation_id, CM.user_id == viewer_id))
        .outerjoin(M, M.id == A.message_id)
        .where(
            A.id.in_(list(attachment_ids)),
            A.deleted_at.is_(None),
            A.purged_at.is_(None),
            C.deleted_at.is_(None),
            or_(
                and_(A.message_id.is_(None), A.uploader_id == viewer_id),
                and_(A.message_id.is_not(None), M.deleted_at.is_(None)),
            ),
        )
        .order_by(A.id)
    )
    if lock:
        stmt = stmt.with_for_update(of=A).execution_options(populate_existing=True)
    return {row.id: (row, member) for row, member in (await session.execute(stmt)).all()}


async def conversation_of(session: AsyncSession, attachment_id: int) -> int | None:
    return (await session.execute(select(A.conversation_id).where(A.id == attachment_id))).scalar_one_or_none()


async def lock_rows(session: AsyncSession, attachment_ids: Sequence[int]) -> dict[int, models.Attachment]:
    """The rows with these ids, whatever their state, locked in id order (PostgreSQL)
    and refreshed: what sendMessage decides on."""
    if not attachment_ids:
        return {}
    stmt = (
        select(A).where(A.id.in_(list(attachment_ids))).order_by(A.id)
        .with_for_update().execution_options(populate_existing=True)
    )
    return {row.id: row for row in (await session.execute(stmt)).scalars()}


async def member_of(session: AsyncSession, user_id: int, conversation_ids: Collection[int]) -> set[int]:
    """Which of these (undeleted) conversations the user is a member of."""
    if not conversation_ids:
        return set()
    rows = await session.execute(
        select(CM.conversation_id).join(C, C.id == CM.conversation_id)
        .where(CM.user_id == user_id, CM.conversation_id.in_(list(conversation_ids)), C.deleted_at.is_(None))
    )
    return set(rows.scalars())


async def existing_keys(session: AsyncSession, keys: Sequence[str]) -> set[str]:
    """Which of these storage keys some row (in any state) still names."""
    if not keys:
        return set()
    return set((await session.execute(select(A.storage_key).where(A.storage_key.in_(list(keys))))).scalars())


# ---------------------------------------------------------------------- cleanup


async def expired_pending(session: AsyncSession, cutoff: datetime, limit: int) -> list[int]:
    """Ids of uploads never sent and created before `cutoff`."""
    rows = await session.execute(
        select(A.id).where(A.message_id.is_(None), A.created_at < cutoff).order_by(A.id).limit(limit)
    )
    return list(rows.scalars())


async def delete_pending(session: AsyncSession, attachment_ids: Sequence[int], cutoff: datetime) -> list[str]:
    """Delete those rows that are still pending and old (a concurrent sendMessage may
    have attached one meanwhile); returns the storage keys of what was deleted."""
    if not attachment_ids:
        return []
    stmt = (
        delete(A)
        .where(A.id.in_(list(attachment_ids)), A.message_id.is_(None), A.created_at < cutoff)
        .returning(A.storage_key)
        .execution_options(synchronize_session=False)
    )
    return list((await session.execute(stmt)).scalars())


async def purgeable(session: AsyncSession, cutoff: datetime, limit: int) -> list[tuple[int, str]]:
    """(id, storage key) of files not yet purged whose attachment, message or
    conversation was deleted before `cutoff`."""
    message_gone = exists().where(M.id == A.message_id, M.deleted_at < cutoff)
    conversation_gone = exists().where(C.id == A.conversation_id, C.deleted_at < cutoff)
    rows = await session.execute(
        select(A.id, A.storage_key)
        .where(A.purged_at.is_(None), or_(A.deleted_at < cutoff, message_gone, conversation_gone))
        .order_by(A.id)
        .limit(limit)
    )
    return [(int(i), str(k)) for i, k in rows.all()]


async def mark_purged(session: AsyncSession, attachment_ids: Sequence[int], now: datetime) -> None:
    if attachment_ids:
        await session.execute(
            update(A).where(A.id.in_(list(attachment_ids)), A.purged_at.is_(None)).values(purged_at=now)
            .execution_options(synchronize_session=False)
        )
