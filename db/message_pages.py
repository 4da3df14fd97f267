"""Message pages as light rows (`db.rows`): the hot read path of `messages(...)`.

The same windows as `db.messages.pages` (keyset on `seq`, one LIMITed index range per
conversation, in query direction), with each message's sender, as named tuples instead
of ORM entities. Statements are built once per shape and reused.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, exists, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from db import models, rows
from db.messages import Window


@cache
def _page_statement(parts: int, forward: bool, after: bool, before: bool) -> Select[Any]:
    """Bind parameters: c0.. (conversation ids), n, and `after` / `before` when set."""
    m, u = models.Message.__table__, models.User.__table__
    order = m.c.seq.asc() if forward else m.c.seq.desc()
    selects = []
    for i in range(parts):
        where = [m.c.conversation_id == bindparam(f"c{i}")]
        if after:
            where.append(m.c.seq > bindparam("after"))
        if before:
            where.append(m.c.seq < bindparam("before"))
        part = (
            select(*rows.columns(models.Message), *rows.columns(models.User))
            .select_from(m.join(u, u.c.id == m.c.sender_id)).where(*where).order_by(order).limit(bindparam("n"))
        )
        if parts == 1:
            return part
        selects.append(select(part.subquery()))
    both = union_all(*selects).subquery()
    # both.c: message columns first (their names), then the sender's (deduplicated
    # names, "id_1", ...): order by position within each conversation
    seq = both.c.seq
    return select(both).order_by(both.c.conversation_id, seq.asc() if forward else seq.desc())


async def page_rows(
    conn: AsyncConnection, conversation_ids: Sequence[int], window: Window
) -> dict[int, list[tuple[Any, Any]]]:
    """One window per conversation, each in query direction (the caller's `slice_page`
    trims the extra row and turns backward pages oldest first): (message, sender)."""
    params: dict[str, Any] = {f"c{i}": cid for i, cid in enumerate(conversation_ids)}
    params["n"] = window.limit
    if window.after is not None:
        params["after"] = window.after
    if window.before is not None:
        params["before"] = window.before
    stmt = _page_statement(len(conversation_ids), window.forward, window.after is not None, window.before is not None)
    found: dict[int, list[tuple[Any, Any]]] = {cid: [] for cid in conversation_ids}
    for row in (await conn.execute(stmt, params)).all():
        message, sender = rows.split(row, models.Message, models.User)
        found[message.conversation_id].append((message, sender))
    return found


@cache
def _member_page_statement(forward: bool, after: bool, before: bool) -> Select[Any]:
    """`_page_statement` for one conversation, empty unless user `v` is a member."""
    cm = models.ConversationMember.__table__
    member = exists().where(cm.c.conversation_id == bindparam("c0"), cm.c.user_id == bindparam("v"))
    return _page_statement(1, forward, after, before).where(member)


async def member_page_rows(
    conn: AsyncConnection, user_id: int, conversation_id: int, window: Window
) -> list[tuple[Any, Any]]:
    """`page_rows` of one conversation in one statement, with the membership check of
    `user_id` inside it: empty when not a member (or when the window is empty, which
    the caller tells apart with a membership check of its own)."""
    params: dict[str, Any] = {"c0": conversation_id, "v": user_id, "n": window.limit}
    if window.after is not None:
        params["after"] = window.after
    if window.before is not None:
        params["before"] = window.before
    stmt = _member_page_statement(window.forward, window.after is not None, window.before is not None)
    return [
        tuple(rows.split(row, models.Message, models.User))
        for row in (await conn.execute(stmt, params)).all()
    ]
