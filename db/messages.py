"""Message queries: keyset pages by sequence, the event log, edits, mentions, attachments,
and the append path of sendMessage.

Every batch function takes many ids and costs one statement, so loaders stay constant
whatever the page size.

The append path (`append_target`, then `append_message`; `insert_mentions`) is Core on
the transaction's connection: no ORM unit of work, no identity map, statements built
once. It is the hottest write of the API: a plain message costs five statements on
SQLite and two on PostgreSQL (whose data-modifying CTEs do the four writes in one).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Row,
    String,
    Table,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

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


# ------------------------------------------------------- the append path (Core)

def _table(model: type[models.Base]) -> Table:
    return model.__table__  # type: ignore[return-value]  # declared as FromClause


_MT = _table(models.Message)
_ET = _table(models.MessageEvent)
_MMT = _table(models.MessageMention)
_CT = _table(models.Conversation)
_CMT = _table(models.ConversationMember)
_UT = _table(models.User)

# The sender's public columns (what a snapshot's "sender" holds), labelled "u_<key>".
SENDER_COLUMNS = [c.key for c in _UT.c if c.key != "password_hash"]
_TARGET = (
    select(
        _CT.c.kind, _CT.c.last_seq, _CT.c.last_event_pos,
        _CMT.c.id.label("member_id"), _CMT.c.last_read_seq, _CMT.c.last_read_message_id, _CMT.c.read_at,
        *(_UT.c[key].label(f"u_{key}") for key in SENDER_COLUMNS),
    )
    .select_from(_CT)
    .join(_CMT, (_CMT.c.conversation_id == _CT.c.id) & (_CMT.c.user_id == bindparam("p_uid")))
    .join(_UT, _UT.c.id == _CMT.c.user_id)
    .where(_CT.c.id == bindparam("p_cid"), _CT.c.deleted_at.is_(None))
    .with_for_update(of=_CT)  # PostgreSQL; SQLite writers hold the database lock from BEGIN IMMEDIATE
)


async def append_target(conn: AsyncConnection, conversation_id: int, user_id: int) -> Row[Any] | None:
    """The conversation's kind and counters, the user's membership (id, read position)
    and the user's public columns, under the conversation row lock; None when the
    conversation is missing, deleted, or the user is not a member.

    The lock (FOR UPDATE OF conversations) is held until COMMIT: the next writer waits
    here, so it reads the counters this one leaves, and commit order is sequence order.
    """
    return (await conn.execute(_TARGET, {"p_cid": conversation_id, "p_uid": user_id})).first()


_INSERT_MESSAGE = insert(_MT).returning(_MT.c.id)


async def insert_message(
    conn: AsyncConnection, *, conversation_id: int, seq: int, sender_id: int, body: str,
    client_message_id: str | None, now: datetime,
) -> int:
    """The new message's id. A repeated (conversation, sender, client_message_id) raises
    IntegrityError, which aborts the transaction (the caller fetches the first one)."""
    return int(
        (
            await conn.execute(_INSERT_MESSAGE, {
                "conversation_id": conversation_id, "seq": seq, "sender_id": sender_id, "body": body,
                "client_message_id": client_message_id, "created_at": now,
            })
        ).scalar_one()
    )


def _id_list(dialect: str, column: Any) -> Any:
    """The column's values over a group as one "1,2,3" string (NULLs skipped; NULL if none)."""
    as_text = cast(column, String)
    if dialect == "postgresql":
        return func.string_agg(as_text, literal_column("','"))
    return func.group_concat(as_text, literal_column("','"))


def _parse_ids(value: str | None) -> list[int]:
    return sorted(int(v) for v in value.split(",")) if value else []


_RECORD: dict[str, Any] = {}


def _record_stmt(dialect: str) -> Any:
    stmt = _RECORD.get(dialect)
    if stmt is None:
        cid: Any = bindparam("p_cid")
        members = select(_id_list(dialect, _CMT.c.user_id)).where(_CMT.c.conversation_id == cid)
        hidden = members.where(_CMT.c.hidden.is_(True))
        stmt = _RECORD[dialect] = (
            update(_CT).where(_CT.c.id == cid)
            .values(last_seq=bindparam("p_seq"), last_event_pos=bindparam("p_pos"),
                    updated_at=bindparam("p_now", type_=models.UTCDateTime()), last_message_id=bindparam("p_mid"))
            .returning(members.scalar_subquery(), hidden.scalar_subquery())
        )
    return stmt


async def record_message(
    conn: AsyncConnection, conversation_id: int, *, seq: int, pos: int, message_id: int, now: datetime
) -> tuple[list[int], list[int]]:
    """Counters, activity time and last message of the conversation in one UPDATE; returns
    its member ids and the ids of members who hid it, read by the same statement (after
    the lock, so a membership change committed before it is seen).

    Precondition: `append_target` locked the row and `seq` / `pos` are one past the
    `last_seq` / `last_event_pos` it read.
    """
    row = (
        await conn.execute(_record_stmt(conn.dialect.name), {
            "p_cid": conversation_id, "p_seq": seq, "p_pos": pos, "p_now": now, "p_mid": message_id,
        })
    ).one()
    return _parse_ids(row[0]), _parse_ids(row[1])


_INSERT_EVENT = insert(_ET)


async def insert_event(
    conn: AsyncConnection, conversation_id: int, pos: int, kind: str, message_id: int, now: datetime
) -> None:
    await conn.execute(_INSERT_EVENT, {
        "conversation_id": conversation_id, "pos": pos, "kind": kind, "message_id": message_id, "created_at": now,
    })


_ADVANCE_READ = (
    update(_CMT).where(_CMT.c.id == bindparam("p_id"), _CMT.c.last_read_seq < bindparam("p_seq"))
    .values(last_read_seq=bindparam("p_seq"), last_read_message_id=bindparam("p_mid"),
            read_at=bindparam("p_now", type_=models.UTCDateTime()))
)


async def advance_read_of(
    conn: AsyncConnection, member_id: int, seq: int, message_id: int | None, now: datetime
) -> bool:
    """Move a membership's read position forward only; False when it already was at or
    past `seq` (`db.conversations.advance_read` without an ORM row to keep in sync)."""
    result = await conn.execute(_ADVANCE_READ, {"p_id": member_id, "p_seq": seq, "p_mid": message_id, "p_now": now})
    return bool(result.rowcount)


_INSERT_MENTION = insert(_MMT)


async def insert_mentions(conn: AsyncConnection, message_id: int, user_ids: Sequence[int]) -> None:
    if user_ids:
        await conn.execute(_INSERT_MENTION, [{"message_id": message_id, "user_id": uid} for uid in user_ids])


def _bigint(name: str) -> Any:
    return bindparam(name, type_=BigInteger())


_APPEND_PG: list[Any] = []


def _append_pg_stmt() -> Any:
    """PostgreSQL: INSERT message, UPDATE conversation, INSERT event and UPDATE read
    position as data-modifying CTEs of one statement, which also returns the member ids.
    All parts share one snapshot, taken after `append_target` locked the row."""
    if _APPEND_PG:
        return _APPEND_PG[0]
    cid, seq, pos = _bigint("p_cid"), _bigint("p_seq"), _bigint("p_pos")
    now = bindparam("p_now", type_=models.UTCDateTime())
    m = (
        insert(_MT).values(
            conversation_id=cid, seq=seq, sender_id=_bigint("p_uid"), body=bindparam("p_body", type_=String()),
            client_message_id=bindparam("p_client", type_=String()), created_at=now,
        )
        .returning(_MT.c.id).cte("m")
    )
    message_id = select(m.c.id).scalar_subquery()
    c = (
        update(_CT).where(_CT.c.id == cid)
        .values(last_seq=seq, last_event_pos=pos, updated_at=now, last_message_id=message_id)
        .returning(_CT.c.id).cte("c")
    )
    e = (
        insert(_ET).from_select(
            ["conversation_id", "pos", "kind", "message_id", "created_at"],
            select(cid, pos, literal("ADDED", String()), m.c.id, now),
        ).returning(_ET.c.id).cte("e")
    )
    r = (
        update(_CMT).where(_CMT.c.id == _bigint("p_member"), _CMT.c.last_read_seq < seq)
        .values(last_read_seq=seq, last_read_message_id=message_id, read_at=now)
        .returning(_CMT.c.id).cte("r")
    )
    members = select(_id_list("postgresql", _CMT.c.user_id)).where(_CMT.c.conversation_id == cid)
    hidden = members.where(_CMT.c.hidden.is_(True))
    stmt = select(
        message_id.label("message_id"),
        select(func.count()).select_from(r).scalar_subquery().label("read_advanced"),
        members.scalar_subquery().label("member_ids"),
        hidden.scalar_subquery().label("hidden_ids"),
        # c and e are read only so that they are part of the statement (PostgreSQL runs
        # every data-modifying CTE once, whether or not its output is read)
        select(func.count()).select_from(c).scalar_subquery().label("updated"),
        select(func.count()).select_from(e).scalar_subquery().label("events"),
    )
    _APPEND_PG.append(stmt)
    return stmt


async def append_message(
    conn: AsyncConnection, *, conversation_id: int, member_id: int, seq: int, pos: int, sender_id: int, body: str,
    client_message_id: str | None, now: datetime,
) -> tuple[int, bool, list[int], list[int]]:
    """Write a new message: the row, the conversation's counters / activity / last
    message, the ADDED event, and the sender's read position. Returns (message id,
    whether the read position moved, member ids, ids of members who hid it).

    Precondition: `append_target` locked the conversation row in this transaction and
    `seq` / `pos` are one past the `last_seq` / `last_event_pos` it read. A repeated
    (conversation, sender, client_message_id) raises IntegrityError.
    """
    if conn.dialect.name == "postgresql":
        row = (
            await conn.execute(_append_pg_stmt(), {
                "p_cid": conversation_id, "p_seq": seq, "p_pos": pos, "p_now": now, "p_uid": sender_id,
                "p_body": body, "p_client": client_message_id, "p_member": member_id,
            })
        ).one()
        return int(row.message_id), bool(row.read_advanced), _parse_ids(row.member_ids), _parse_ids(row.hidden_ids)
    message_id = await insert_message(
        conn, conversation_id=conversation_id, seq=seq, sender_id=sender_id, body=body,
        client_message_id=client_message_id, now=now,
    )
    member_ids, hidden_ids = await record_message(conn, conversation_id, seq=seq, pos=pos, message_id=message_id,
                                                  now=now)
    await insert_event(conn, conversation_id, pos, "ADDED", message_id, now)
    advanced = await advance_read_of(conn, member_id, seq, message_id, now)
    return message_id, advanced, member_ids, hidden_ids
