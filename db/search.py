"""Search queries: messages through each engine's own full-text index, names by prefix.

Message search takes an engine query that `resolvers.search_query` already built and
escaped (`to_tsquery` text for PostgreSQL, an FTS5 MATCH expression for SQLite): this
module never sees raw user input. Only messages the user may read are returned: live
messages of live conversations the user is a member of. Ranking is the engine's
relevance (`ts_rank` over the GIN-indexed `messages.search_vector`; FTS5 `bm25`), then
recency.

Name searches are prefix matches (LIKE 'p%' with escaping, never '%q%'), exact
matches first, then most recent.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnClause,
    ColumnElement,
    Float,
    and_,
    case,
    column,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from db import models
from db.groups import visible_to

M, C, CM, G, U = models.Message, models.Conversation, models.ConversationMember, models.Group, models.User

_search_vector: ColumnClause[Any] = literal_column("messages.search_vector")
_fts = table("messages_fts", column("rowid"))


def _readable_by(user_id: int) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """Joins and filters that keep only messages `user_id` may read."""
    return (
        and_(CM.conversation_id == M.conversation_id, CM.user_id == user_id),
        and_(M.deleted_at.is_(None), C.deleted_at.is_(None)),
    )


async def messages_postgres(
    session: AsyncSession, user_id: int, tsquery: str, limit: int
) -> list[models.Message]:
    query = func.to_tsquery(literal_column("'simple'::regconfig"), tsquery)
    rank = func.ts_rank(_search_vector, query, type_=Float).label("rank")
    membership, live = _readable_by(user_id)
    stmt = (
        select(M, rank)
        .join(CM, membership)
        .join(C, C.id == M.conversation_id)
        .where(_search_vector.op("@@")(query), live)
        .order_by(rank.desc(), M.created_at.desc(), M.id.desc())
        .limit(limit)
    )
    return [row[0] for row in (await session.execute(stmt)).all()]


async def messages_sqlite(session: AsyncSession, user_id: int, match: str, limit: int) -> list[models.Message]:
    rank = literal_column("bm25(messages_fts)", type_=Float).label("rank")
    membership, live = _readable_by(user_id)
    stmt = (
        select(M, rank)
        .select_from(_fts)
        .join(M, M.id == _fts.c.rowid)
        .join(CM, membership)
        .join(C, C.id == M.conversation_id)
        .where(text("messages_fts MATCH :match").bindparams(match=match), live)
        .order_by(rank.asc(), M.created_at.desc(), M.id.desc())
        .limit(limit)
    )
    return [row[0] for row in (await session.execute(stmt)).all()]


async def users(session: AsyncSession, prefix: str, limit: int) -> list[models.User]:
    """By username or display name prefix (`prefix` already case-folded)."""
    display = func.lower(U.display_name)
    exact = case((or_(U.username_key == prefix, display == prefix), 0), else_=1)
    stmt = (
        select(U)
        .where(or_(U.username_key.startswith(prefix, autoescape=True), display.startswith(prefix, autoescape=True)))
        .order_by(exact, U.created_at.desc(), U.id.desc())
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def groups(session: AsyncSession, user_id: int, prefix: str, limit: int) -> list[models.Group]:
    """Public groups and the user's own, by name prefix."""
    exact = case((G.name_key == prefix, 0), else_=1)
    stmt = (
        select(G)
        .where(visible_to(user_id), G.name_key.startswith(prefix, autoescape=True))
        .order_by(exact, G.created_at.desc(), G.id.desc())
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def conversations(session: AsyncSession, user_id: int, prefix: str, limit: int) -> list[models.Conversation]:
    """The user's live conversations whose title starts with `prefix`: the group's name,
    or the other member's display name for a direct conversation."""
    other = aliased(CM)
    title = func.coalesce(G.name_key, func.lower(U.display_name))
    exact = case((title == prefix, 0), else_=1)
    stmt = (
        select(C)
        .join(CM, and_(CM.conversation_id == C.id, CM.user_id == user_id))
        .outerjoin(G, and_(G.id == C.group_id, G.deleted_at.is_(None)))
        .outerjoin(other, and_(other.conversation_id == C.id, other.user_id != user_id, C.kind == "DIRECT"))
        .outerjoin(U, U.id == other.user_id)
        .where(C.deleted_at.is_(None), title.startswith(prefix, autoescape=True))
        .order_by(exact, C.updated_at.desc(), C.id.desc())
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())
