"""Conversation queries: direct pairs, the activity-ordered list, counters, members, reads.

Counters (`last_seq`, `last_event_pos`) only move inside the writing transaction with
`UPDATE ... RETURNING`, which holds the conversation row lock until COMMIT: the next
writer waits, so commit order equals sequence order and a reader never sees seq N+1
before seq N.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from db import models, rows

C = models.Conversation
CM = models.ConversationMember


def direct_key(user_a: int, user_b: int) -> str:
    low, high = sorted((user_a, user_b))
    return f"{low}:{high}"


def top_ids_per_group(
    id_col: Any, group_col: Any, group_ids: Sequence[int], where: Sequence[ColumnElement[bool]],
    order_by: Sequence[Any], limit: int,
) -> Select[Any]:
    """`SELECT id` of the first `limit` rows of each group, as one UNION ALL statement.

    Each part is its own index range scan with LIMIT (on PostgreSQL and SQLite alike),
    which a window function over whole partitions is not: a page of 100 conversations
    costs one statement, and a 10,000-member group reads only what the page needs.
    """
    parts = [
        select(id_col.label("id")).where(group_col == gid, *where).order_by(*order_by).limit(limit).subquery()
        for gid in group_ids
    ]
    return union_all(*(select(part.c.id) for part in parts)).subquery().select()


# ------------------------------------------------------------------------ direct


async def get_by_direct_key(session: AsyncSession, key: str) -> models.Conversation | None:
    return (
        await session.execute(select(C).where(C.direct_key == key, C.deleted_at.is_(None)))
    ).scalar_one_or_none()


async def create_direct(session: AsyncSession, user_a: int, user_b: int, now: datetime) -> models.Conversation:
    """Insert the pair's conversation and both memberships. A concurrent creator of the
    same pair makes the flush fail on `direct_key` (IntegrityError): fetch theirs then."""
    conversation = models.Conversation(
        kind="DIRECT", direct_key=direct_key(user_a, user_b), created_at=now, updated_at=now,
        last_seq=0, last_event_pos=0,
    )
    session.add(conversation)
    await session.flush()
    session.add_all(
        [
            models.ConversationMember(conversation_id=conversation.id, user_id=uid, joined_at=now)
            for uid in (user_a, user_b)
        ]
    )
    await session.flush()
    return conversation


# ---------------------------------------------------------------------- counters


async def advance(
    session: AsyncSession, conversation: models.Conversation, *, new_message: bool, now: datetime
) -> tuple[int, int]:
    """Take the next event position (and, for a new message, the next sequence number
    and the activity time) under the row lock; returns (last_seq, last_event_pos)."""
    values: dict[str, Any] = {"last_event_pos": C.last_event_pos + 1}
    if new_message:
        values.update(last_seq=C.last_seq + 1, updated_at=now)
    stmt = (
        update(C).where(C.id == conversation.id).values(**values)
        .returning(C.last_seq, C.last_event_pos)
        .execution_options(synchronize_session=False)
    )
    seq, pos = (await session.execute(stmt)).one()
    set_committed_value(conversation, "last_seq", seq)
    set_committed_value(conversation, "last_event_pos", pos)
    if new_message:
        set_committed_value(conversation, "updated_at", now)
    return int(seq), int(pos)


async def set_last_message(session: AsyncSession, conversation: models.Conversation, message_id: int) -> None:
    await session.execute(
        update(C).where(C.id == conversation.id).values(last_message_id=message_id)
        .execution_options(synchronize_session=False)
    )
    set_committed_value(conversation, "last_message_id", message_id)


# ---------------------------------------------------------------------- members


async def memberships(session: AsyncSession, user_id: int, conversation_ids: Sequence[int]) -> dict[int, Any]:
    rows = (
        await session.execute(select(CM).where(CM.user_id == user_id, CM.conversation_id.in_(conversation_ids)))
    ).scalars()
    return {row.conversation_id: row for row in rows}


async def member_ids(session: AsyncSession, conversation_id: int) -> list[int]:
    return list(
        (await session.execute(select(CM.user_id).where(CM.conversation_id == conversation_id))).scalars()
    )


async def member_pages(
    session: AsyncSession, conversation_ids: Sequence[int], limit: int, after_user_id: int | None
) -> dict[int, list[tuple[models.ConversationMember, models.User]]]:
    """Members of each conversation by user id (the unique index order), `limit` each."""
    where = [CM.user_id > after_user_id] if after_user_id is not None else []
    ids = top_ids_per_group(CM.id, CM.conversation_id, conversation_ids, where, [CM.user_id], limit)
    rows = (
        await session.execute(
            select(CM, models.User).join(models.User, models.User.id == CM.user_id)
            .where(CM.id.in_(ids)).order_by(CM.conversation_id, CM.user_id)
        )
    ).all()
    found: dict[int, list[tuple[models.ConversationMember, models.User]]] = {cid: [] for cid in conversation_ids}
    for member, user in rows:
        found[member.conversation_id].append((member, user))
    return found


async def read_states(
    session: AsyncSession, conversation_ids: Sequence[int], limit: int
) -> dict[int, list[tuple[models.ConversationMember, models.User]]]:
    """The `limit` most recent readers of each conversation, latest first, with their users."""
    ids = top_ids_per_group(
        CM.id, CM.conversation_id, conversation_ids, [CM.read_at.is_not(None)], [CM.read_at.desc(), CM.id], limit
    )
    rows = (
        await session.execute(
            select(CM, models.User).join(models.User, models.User.id == CM.user_id)
            .where(CM.id.in_(ids)).order_by(CM.read_at.desc(), CM.id)
        )
    ).all()
    found: dict[int, list[tuple[models.ConversationMember, models.User]]] = {cid: [] for cid in conversation_ids}
    for member, user in rows:
        found[member.conversation_id].append((member, user))
    return found


async def unread_counts(session: AsyncSession, user_id: int, conversation_ids: Sequence[int]) -> dict[int, int]:
    """Others' live messages after the user's read position, for many conversations in
    one statement: an index range count over messages(conversation_id, seq)."""
    m = models.Message
    rows = (
        await session.execute(
            select(m.conversation_id, func.count())
            .join(CM, and_(CM.conversation_id == m.conversation_id, CM.user_id == user_id))
            .where(
                m.conversation_id.in_(conversation_ids),
                m.seq > CM.last_read_seq,
                m.sender_id != user_id,
                m.deleted_at.is_(None),
            )
            .group_by(m.conversation_id)
        )
    ).all()
    return {cid: int(count) for cid, count in rows}


async def advance_read(
    session: AsyncSession, member: models.ConversationMember, seq: int, message_id: int | None, now: datetime
) -> bool:
    """Move the read position forward only; False when it already was at or past `seq`."""
    result = await session.execute(
        update(CM).where(CM.id == member.id, CM.last_read_seq < seq)
        .values(last_read_seq=seq, last_read_message_id=message_id, read_at=now)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    set_committed_value(member, "last_read_seq", seq)
    set_committed_value(member, "last_read_message_id", message_id)
    set_committed_value(member, "read_at", now)
    return True


async def hide(session: AsyncSession, member: models.ConversationMember, at_seq: int) -> bool:
    """Hide for one member until a message after `at_seq`; False if already hidden there."""
    if member.hidden and member.hidden_at_seq == at_seq:
        return False
    await session.execute(
        update(CM).where(CM.id == member.id).values(hidden=True, hidden_at_seq=at_seq)
        .execution_options(synchronize_session=False)
    )
    return True


async def unhide(session: AsyncSession, conversation_id: int, user_id: int | None = None) -> list[int]:
    """Show the conversation again (to everyone, or one user); returns who it reappears for."""
    stmt = update(CM).where(CM.conversation_id == conversation_id, CM.hidden.is_(True))
    if user_id is not None:
        stmt = stmt.where(CM.user_id == user_id)
    rows = await session.execute(
        stmt.values(hidden=False).returning(CM.user_id).execution_options(synchronize_session=False)
    )
    return list(rows.scalars())


# ------------------------------------------------------------------------- lists


async def by_ids(session: AsyncSession, conversation_ids: Sequence[int]) -> dict[int, models.Conversation]:
    rows = (await session.execute(select(C).where(C.id.in_(conversation_ids)))).scalars()
    return {row.id: row for row in rows}


async def groups_by_ids(session: AsyncSession, group_ids: Sequence[int]) -> dict[int, models.Group]:
    """Group rows (deleted ones included: callers decide what a deleted group shows)."""
    rows = (await session.execute(select(models.Group).where(models.Group.id.in_(group_ids)))).scalars()
    return {row.id: row for row in rows}


async def group_memberships(
    session: AsyncSession, user_id: int, group_ids: Sequence[int]
) -> dict[int, models.ConversationMember]:
    """The user's membership in each group's conversation, by group id."""
    rows = await session.execute(
        select(C.group_id, CM).join(CM, CM.conversation_id == C.id)
        .where(C.group_id.in_(group_ids), CM.user_id == user_id)
    )
    return {group_id: member for group_id, member in rows.all() if group_id is not None}


# ------------------------------------------------------- light rows for hot lists


@dataclass(slots=True)
class ListedConversation:
    """One row of the viewer's list (light rows, `db.rows`) with what its page shows;
    `title`, `unread` and `last_message`/`last_sender` are None when not asked."""

    conversation: Any
    member: Any
    title: str | None
    unread: int | None
    last_message: Any
    last_sender: Any


@cache
def _list_statement(title: bool, unread: bool, last_message: bool, keyset: bool) -> Select[Any]:
    """The list page in one statement: each conversation with the viewer's membership
    and, on demand, its title, unread count and last message with its sender. Built once
    per shape (bind parameters: v, n and, with `keyset`, at and cid)."""
    c, cm = C.__table__, CM.__table__
    v: Any = bindparam("v")
    cols: list[Any] = [*rows.columns(C), *rows.columns(CM)]
    from_: Any = c.join(cm, and_(cm.c.conversation_id == c.c.id, cm.c.user_id == v))
    if last_message:
        lm = models.Message.__table__.alias("lm")
        lu = models.User.__table__.alias("lu")
        cols += [*rows.columns(models.Message, lm), *rows.columns(models.User, lu)]
        from_ = from_.outerjoin(lm, lm.c.id == c.c.last_message_id).outerjoin(lu, lu.c.id == lm.c.sender_id)
    if title:
        g = models.Group.__table__
        pm = CM.__table__.alias("pm")
        pu = models.User.__table__
        peer = (
            select(pu.c.display_name).select_from(pm.join(pu, pu.c.id == pm.c.user_id))
            .where(pm.c.conversation_id == c.c.id, pm.c.user_id != v).limit(1).scalar_subquery()
        )
        cols.append(func.coalesce(case((c.c.group_id.is_(None), peer), else_=g.c.name), "").label("title"))
        from_ = from_.outerjoin(g, g.c.id == c.c.group_id)
    else:
        cols.append(literal_column("NULL").label("title"))
    if unread:
        m = models.Message.__table__.alias("um")
        cols.append(
            select(func.count()).select_from(m).where(
                m.c.conversation_id == c.c.id, m.c.seq > cm.c.last_read_seq, m.c.sender_id != v,
                m.c.deleted_at.is_(None),
            ).scalar_subquery().label("unread")
        )
    else:
        cols.append(literal_column("NULL").label("unread"))
    stmt = select(*cols).select_from(from_).where(cm.c.hidden.is_(False), c.c.deleted_at.is_(None))
    if keyset:
        at: Any = bindparam("at", type_=models.UTCDateTime())
        cid: Any = bindparam("cid")
        stmt = stmt.where(or_(c.c.updated_at < at, and_(c.c.updated_at == at, c.c.id < cid)))
    return stmt.order_by(c.c.updated_at.desc(), c.c.id.desc()).limit(bindparam("n"))


async def list_rows_for_user(
    conn: AsyncConnection, user_id: int, limit: int, after: tuple[datetime, int] | None, *,
    title: bool, unread: bool, last_message: bool,
) -> list[ListedConversation]:
    """The user's visible conversations, latest activity first, keyset after
    (updated_at, id), as light rows plus what the page asked for, in one statement."""
    params: dict[str, Any] = {"v": user_id, "n": limit}
    if after is not None:
        params["at"], params["cid"] = after
    stmt = _list_statement(title, unread, last_message, after is not None)
    shape = (C, CM, models.Message, models.User) if last_message else (C, CM)
    out = []
    for row in (await conn.execute(stmt, params)).all():
        parts = rows.split(row, *shape)
        if last_message:
            conversation, member, message, sender, title_, unread_ = parts
        else:
            (conversation, member, title_, unread_), message, sender = parts, None, None
        out.append(ListedConversation(
            conversation, member, title_, None if unread_ is None else int(unread_), message, sender
        ))
    return out


@cache
def _member_page_statement(parts: int, keyset: bool) -> Select[Any]:
    """`member_pages` for `parts` conversations as user light rows (first column:
    conversation_id), one LIMITed index range per conversation (bind parameters c0..,
    n and, with `keyset`, after)."""
    cm, u = CM.__table__, models.User.__table__
    selects = []
    for i in range(parts):
        where = [cm.c.conversation_id == bindparam(f"c{i}")]
        if keyset:
            where.append(cm.c.user_id > bindparam("after"))
        part = (
            select(cm.c.conversation_id, *rows.columns(models.User, u)).select_from(cm.join(u, u.c.id == cm.c.user_id))
            .where(*where).order_by(cm.c.user_id).limit(bindparam("n")).subquery()
        )
        selects.append(select(part))
    both = union_all(*selects).subquery()
    return select(both).order_by(both.c.conversation_id, both.c.id)


async def member_user_pages(
    conn: AsyncConnection, conversation_ids: Sequence[int], limit: int, after_user_id: int | None
) -> dict[int, list[Any]]:
    """`member_pages` without the membership rows: user light rows by user id, `limit`
    per conversation, in one statement."""
    params: dict[str, Any] = {f"c{i}": cid for i, cid in enumerate(conversation_ids)}
    params["n"] = limit
    if after_user_id is not None:
        params["after"] = after_user_id
    stmt = _member_page_statement(len(conversation_ids), after_user_id is not None)
    user_row = rows.row_type(models.User)
    found: dict[int, list[Any]] = {cid: [] for cid in conversation_ids}
    for row in (await conn.execute(stmt, params)).all():
        found[row[0]].append(user_row._make(row[1:]))
    return found


async def membership_rows(conn: AsyncConnection, user_id: int, conversation_ids: Sequence[int]) -> dict[int, Any]:
    """`memberships` as light rows."""
    stmt = select(*rows.columns(CM)).where(CM.user_id == user_id, CM.conversation_id.in_(conversation_ids))
    member_row = rows.row_type(CM)
    return {r.conversation_id: r for r in map(member_row._make, (await conn.execute(stmt)).all())}


async def title_rows(conn: AsyncConnection, user_id: int, conversation_ids: Sequence[int]) -> dict[int, str]:
    """Each conversation's title (the group's name, or the other member's display name)."""
    stmt = _list_titles()
    return dict((await conn.execute(stmt, {"v": user_id, "ids": list(conversation_ids)})).all())


@cache
def _list_titles() -> Select[Any]:
    c, g, pm, pu = C.__table__, models.Group.__table__, CM.__table__, models.User.__table__
    peer = (
        select(pu.c.display_name).select_from(pm.join(pu, pu.c.id == pm.c.user_id))
        .where(pm.c.conversation_id == c.c.id, pm.c.user_id != bindparam("v")).limit(1).scalar_subquery()
    )
    title = func.coalesce(case((c.c.group_id.is_(None), peer), else_=g.c.name), "")
    return (
        select(c.c.id, title).select_from(c.outerjoin(g, g.c.id == c.c.group_id))
        .where(c.c.id.in_(bindparam("ids", expanding=True)))
    )
