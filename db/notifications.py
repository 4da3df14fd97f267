"""Notification rows: written in the same transaction as their cause, newest first.

Other domains call `add()` inside their transaction and then publish with
`tx.after_commit(ctx.events.notification_added, user_id, row.id)` (or use
`resolvers.notifications.notify(tx, ctx, ...)`, which does both).
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from db import models

N = models.Notification
KINDS = frozenset({"DIRECT_MESSAGE", "MENTION", "ADDED_TO_GROUP", "REMOVED_FROM_GROUP", "ROLE_CHANGED"})


async def add(
    session: AsyncSession, user_id: int, kind: str, actor_id: int | None, conversation_id: int | None = None,
    message_id: int | None = None, group_id: int | None = None, *, now: datetime | None = None,
) -> models.Notification:
    """Insert one notification for `user_id` (flushed: `.id` is set)."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    row = models.Notification(
        user_id=user_id, kind=kind, actor_id=actor_id, conversation_id=conversation_id,
        message_id=message_id, group_id=group_id, **({"created_at": now} if now else {}),
    )
    session.add(row)
    await session.flush()
    return row


async def add_many(
    session: AsyncSession, user_ids: Sequence[int], kind: str, actor_id: int | None,
    conversation_id: int | None = None, message_id: int | None = None, group_id: int | None = None,
) -> list[models.Notification]:
    """One notification per user in one flush (SQLAlchemy batches the INSERTs), ids set."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    rows = [
        models.Notification(
            user_id=user_id, kind=kind, actor_id=actor_id, conversation_id=conversation_id,
            message_id=message_id, group_id=group_id,
        )
        for user_id in user_ids
    ]
    session.add_all(rows)
    await session.flush()
    return rows


_NT: Table = N.__table__  # type: ignore[assignment]  # declared as FromClause
_INSERT_RETURNING = insert(_NT).returning(_NT.c.user_id, _NT.c.id)


async def add_core(
    conn: AsyncConnection, user_ids: Sequence[int], kind: str, actor_id: int | None, *,
    conversation_id: int | None = None, message_id: int | None = None, group_id: int | None = None,
    now: datetime,
) -> list[tuple[int, int]]:
    """One notification per user in one INSERT ... RETURNING on a Core connection (no
    ORM rows); returns (user id, notification id) pairs in `user_ids` order."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    if not user_ids:
        return []
    values = [
        {"user_id": uid, "kind": kind, "actor_id": actor_id, "conversation_id": conversation_id,
         "message_id": message_id, "group_id": group_id, "created_at": now}
        for uid in user_ids
    ]
    stmt = _INSERT_RETURNING.values(values) if len(values) > 1 else _INSERT_RETURNING
    rows = (await conn.execute(stmt) if len(values) > 1 else await conn.execute(stmt, values[0])).all()
    ids = {int(user_id): int(nid) for user_id, nid in rows}
    return [(uid, ids[uid]) for uid in user_ids]


async def page(
    session: AsyncSession, user_id: int, *, unread_only: bool, limit: int, before_id: int | None
) -> list[models.Notification]:
    """Newest first (by id, which follows creation), keyset below `before_id`."""
    stmt = select(N).where(N.user_id == user_id)
    if unread_only:
        stmt = stmt.where(N.read_at.is_(None))
    if before_id is not None:
        stmt = stmt.where(N.id < before_id)
    return list((await session.execute(stmt.order_by(N.id.desc()).limit(limit))).scalars())


async def by_ids(session: AsyncSession, user_id: int, ids: Sequence[int]) -> dict[int, models.Notification]:
    rows = (await session.execute(select(N).where(N.user_id == user_id, N.id.in_(ids)))).scalars()
    return {row.id: row for row in rows}


async def unread_count(session: AsyncSession, user_id: int) -> int:
    return int(
        (await session.execute(select(func.count()).where(N.user_id == user_id, N.read_at.is_(None)))).scalar_one()
    )


async def mark_read(session: AsyncSession, user_id: int, ids: Sequence[int] | None, now: datetime) -> int:
    """Mark the user's unread notifications read (all, or those among `ids`); returns how
    many changed. Ids of other users' or missing notifications change nothing."""
    stmt = update(N).where(N.user_id == user_id, N.read_at.is_(None))
    if ids is not None:
        stmt = stmt.where(N.id.in_(ids))
    result = await session.execute(stmt.values(read_at=now).execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def clear(session: AsyncSession, user_id: int) -> int:
    result = await session.execute(
        delete(N).where(N.user_id == user_id).execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
