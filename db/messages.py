"""Message queries: keyset pages by sequence, the event log, edits, mentions, attachments.

Every batch function takes many ids and costs one statement, so loaders stay constant
whatever the page size.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db import models
from db.conversations import top_ids_per_group

M = models.Message


@dataclass(frozen=True)
class Window:
    """A keyset window on `seq`: rows strictly between `after` and `before`, the first
    `limit` of them from the oldest (forward) or from the newest (backward)."""

    limit: int
    forward: bool
    after: int | None = None
    before: int | None = None

    def where(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if self.after is not None:
            conditions.append(M.seq > self.after)
        if self.before is not None:
            conditions.append(M.seq < self.before)
        return conditions


async def pages(
    session: AsyncSession, conversation_ids: Sequence[int], window: Window
) -> dict[int, list[tuple[models.Message, models.User]]]:
    """One window per conversation in one statement, each in query direction (the
    caller's `slice_page` trims the extra row and turns backward pages oldest first),
    with each message's sender."""
    order = M.seq.asc() if window.forward else M.seq.desc()
    stmt = select(M, models.User).join(models.User, models.User.id == M.sender_id)
    if len(conversation_ids) == 1:
        stmt = stmt.where(M.conversation_id == conversation_ids[0], *window.where()).order_by(order)
        stmt = stmt.limit(window.limit)
    else:
        ids = top_ids_per_group(M.id, M.conversation_id, conversation_ids, window.where(), [order], window.limit)
        stmt = stmt.where(M.id.in_(ids)).order_by(M.conversation_id, order)
    found: dict[int, list[tuple[models.Message, models.User]]] = {cid: [] for cid in conversation_ids}
    for message, sender in (await session.execute(stmt)).all():
        found[message.conversation_id].append((message, sender))
    return found


async def by_ids(session: AsyncSession, message_ids: Iterable[int]) -> dict[int, models.Message]:
    rows = (await session.execute(select(M).where(M.id.in_(list(message_ids))))).scalars()
    return {row.id: row for row in rows}


async def with_senders(
    session: AsyncSession, message_ids: Iterable[int]
) -> dict[int, tuple[models.Message, models.User]]:
    rows = await session.execute(
        select(M, models.User).join(models.User, models.User.id == M.sender_id).where(M.id.in_(list(message_ids)))
    )
    return {message.id: (message, sender) for message, sender in rows.all()}


async def by_client_id(
    session: AsyncSession, conversation_id: int, sender_id: int, client_message_id: str
) -> models.Message | None:
    return (
        await session.execute(
            select(M).where(
                M.conversation_id == conversation_id,
                M.sender_id == sender_id,
                M.client_message_id == client_message_id,
            )
        )
    ).scalar_one_or_none()


async def insert(
    session: AsyncSession, *, conversation_id: int, seq: int, sender_id: int, body: str,
    client_message_id: str | None, now: datetime,
) -> models.Message:
    message = models.Message(
        conversation_id=conversation_id, seq=seq, sender_id=sender_id, body=body,
        client_message_id=client_message_id, created_at=now,
    )
    session.add(message)
    await session.flush()
    return message


def add_event(session: AsyncSession, conversation_id: int, pos: int, kind: str, message_id: int, now: datetime) -> None:
    session.add(
        models.MessageEvent(conversation_id=conversation_id, pos=pos, kind=kind, message_id=message_id, created_at=now)
    )


async def events_after(
    session: AsyncSession, conversation_id: int, after_pos: int, limit: int
) -> list[models.MessageEvent]:
    return list(
        (
            await session.execute(
                select(models.MessageEvent)
                .where(models.MessageEvent.conversation_id == conversation_id, models.MessageEvent.pos > after_pos)
                .order_by(models.MessageEvent.pos)
                .limit(limit)
            )
        ).scalars()
    )


# ------------------------------------------------------------ edits and mentions


async def edits_for(session: AsyncSession, message_ids: Sequence[int]) -> dict[int, list[models.MessageEdit]]:
    """Earlier bodies per message, oldest first."""
    rows = (
        await session.execute(
            select(models.MessageEdit).where(models.MessageEdit.message_id.in_(message_ids))
            .order_by(models.MessageEdit.message_id, models.MessageEdit.id)
        )
    ).scalars()
    found: dict[int, list[models.MessageEdit]] = {mid: [] for mid in message_ids}
    for row in rows:
        found[row.message_id].append(row)
    return found


async def mentions_for(session: AsyncSession, message_ids: Sequence[int]) -> dict[int, list[models.User]]:
    mm = models.MessageMention
    rows = (
        await session.execute(
            select(mm.message_id, models.User).join(models.User, models.User.id == mm.user_id)
            .where(mm.message_id.in_(message_ids)).order_by(mm.message_id, mm.id)
        )
    ).all()
    found: dict[int, list[models.User]] = {mid: [] for mid in message_ids}
    for mid, user in rows:
        found[mid].append(user)
    return found


async def attachments_for(session: AsyncSession, message_ids: Sequence[int]) -> dict[int, list[models.Attachment]]:
    a = models.Attachment
    rows = (
        await session.execute(
            select(a).where(a.message_id.in_(message_ids), a.deleted_at.is_(None)).order_by(a.message_id, a.id)
        )
    ).scalars()
    found: dict[int, list[models.Attachment]] = {mid: [] for mid in message_ids}
    for row in rows:
        if row.message_id is not None:
            found[row.message_id].append(row)
    return found


async def members_by_username(
    session: AsyncSession, conversation_id: int, username_keys: Sequence[str]
) -> list[models.User]:
    """Members of the conversation among the given casefolded usernames."""
    cm = models.ConversationMember
    return list(
        (
            await session.execute(
                select(models.User).join(cm, cm.user_id == models.User.id)
                .where(cm.conversation_id == conversation_id, models.User.username_key.in_(username_keys))
                .order_by(models.User.id)
            )
        ).scalars()
    )


async def replace_mentions(session: AsyncSession, message_id: int, user_ids: Sequence[int]) -> list[int]:
    """Make the message's mentions exactly `user_ids`; returns the newly added ones."""
    mm = models.MessageMention
    current = set((await session.execute(select(mm.user_id).where(mm.message_id == message_id))).scalars())
    wanted = list(dict.fromkeys(user_ids))
    gone = current - set(wanted)
    if gone:
        await session.execute(delete(mm).where(mm.message_id == message_id, mm.user_id.in_(gone)))
    added = [uid for uid in wanted if uid not in current]
    session.add_all([mm(message_id=message_id, user_id=uid) for uid in added])
    return added


async def erase(session: AsyncSession, message: models.Message, now: datetime) -> None:
    """The tombstone: no body, no history, no mentions; its attachments are deleted too
    (their files stop being served and the attachments' cleanup purges them)."""
    message.body = None
    message.deleted_at = now
    await session.execute(delete(models.MessageEdit).where(models.MessageEdit.message_id == message.id))
    await session.execute(delete(models.MessageMention).where(models.MessageMention.message_id == message.id))
    a = models.Attachment
    await session.execute(
        update(a).where(a.message_id == message.id, a.deleted_at.is_(None)).values(deleted_at=now)
        .execution_options(synchronize_session=False)
    )
