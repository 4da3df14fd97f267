"""Notifications: created with their cause, listed newest first, read and cleared.

Other domains create them with `notify(tx, ctx, ...)` inside their transaction: the row
is written there and `notification_added` goes out after COMMIT.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from db import models
from db import notifications as notifications_db
from db.engine import Transaction, transaction
from resolvers.context import Context
from resolvers.conversations import events, utcnow


async def notify(
    tx: Transaction, ctx: Context, user_id: int, kind: str, actor_id: int | None,
    conversation_id: int | None = None, message_id: int | None = None, group_id: int | None = None,
) -> models.Notification:
    """Write a notification in `tx` and announce it to `user_id` once committed."""
    row = await notifications_db.add(
        tx.session, user_id, kind, actor_id, conversation_id=conversation_id, message_id=message_id,
        group_id=group_id,
    )
    tx.after_commit(events(ctx).notification_added, user_id, row.id)
    return row


async def notify_many(
    tx: Transaction, ctx: Context, user_ids: Sequence[int], kind: str, actor_id: int | None,
    conversation_id: int | None = None, group_id: int | None = None,
) -> list[models.Notification]:
    """`notify` for many users at once: one batched INSERT, one pipelined publish."""
    rows = await notifications_db.add_many(
        tx.session, user_ids, kind, actor_id, conversation_id=conversation_id, group_id=group_id
    )
    if rows:
        tx.after_commit(events(ctx).notifications_added, [(row.user_id, row.id) for row in rows])
    return rows


async def notify_users(
    tx: Transaction, ctx: Context, user_ids: Sequence[int], kind: str, actor_id: int | None, *,
    conversation_id: int | None = None, message_id: int | None = None, now: datetime,
) -> list[int]:
    """`notify_many` for the hot write path (sendMessage): one Core INSERT ... RETURNING
    on the transaction's connection, no ORM rows; returns the notification ids.
    `user_ids` must be distinct."""
    if not user_ids:
        return []
    conn = await tx.session.connection()
    pairs = await notifications_db.add_core(
        conn, user_ids, kind, actor_id, conversation_id=conversation_id, message_id=message_id, now=now
    )
    tx.after_commit(events(ctx).notifications_added, pairs)
    return [nid for _, nid in pairs]


async def notification_by_id(ctx: Context, ids: Sequence[int]) -> list[models.Notification | None]:
    """The viewer's own notifications by id (None for anyone else's): what the
    notificationAdded subscription resolves its events with."""
    viewer = ctx.require_viewer()
    async with ctx.db.session() as s:
        found = await notifications_db.by_ids(s, viewer.user_id, ids)
    return [found.get(i) for i in ids]


async def list_notifications(
    ctx: Context, *, unread_only: bool, limit: int, before_id: int | None
) -> list[models.Notification]:
    viewer = ctx.require_viewer()
    async with ctx.db.session() as s:
        return await notifications_db.page(
            s, viewer.user_id, unread_only=unread_only, limit=limit, before_id=before_id
        )


async def unread_notification_count(ctx: Context) -> int:
    viewer = ctx.require_viewer()
    async with ctx.db.session() as s:
        return await notifications_db.unread_count(s, viewer.user_id)


async def mark_notifications_read(ctx: Context, ids: Sequence[int] | None) -> int:
    """Without ids: every unread notification of the viewer. With ids: those among
    them that are the viewer's and unread; anyone else's (or a deleted one) is ignored,
    not NOT_FOUND, so the call stays idempotent beside clearNotifications in another
    tab. Returns how many changed."""
    viewer = ctx.require_viewer()
    if ids is not None and not ids:
        return 0
    async with transaction(ctx.db) as tx:
        return await notifications_db.mark_read(tx.session, viewer.user_id, ids, utcnow())


async def clear_notifications(ctx: Context) -> int:
    viewer = ctx.require_viewer()
    async with transaction(ctx.db) as tx:
        return await notifications_db.clear(tx.session, viewer.user_id)
