"""search(query, type, first): users, groups, the viewer's conversations and messages.

Everything is limited to what the viewer may see: any user; public groups and the
viewer's own; the viewer's live conversations; live messages in those conversations.
Message search runs on each database's full-text index with our own grammar
(`resolvers.search_query`), which no input can turn into an engine syntax error; a
query with nothing searchable in it gives empty lists, not an error.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from db import models
from db import search as search_db
from errors import BadUserInput
from resolvers import accounts as accounts_resolvers
from resolvers import conversations as conversations_resolvers
from resolvers import messages as messages_resolvers
from resolvers import search_query
from resolvers.context import Context

TYPES = ("ALL", "USERS", "GROUPS", "CONVERSATIONS", "MESSAGES")


@dataclass
class MessageHit:
    message: models.Message
    snippet: str


@dataclass
class Results:
    users: list[models.User] = field(default_factory=list)
    groups: list[models.Group] = field(default_factory=list)
    conversations: list[models.Conversation] = field(default_factory=list)
    messages: list[MessageHit] = field(default_factory=list)


async def search(ctx: Context, query: str, kind: str = "ALL", first: int = 20) -> Results:
    viewer = ctx.require_viewer()
    query = query.strip()
    if not query:
        raise BadUserInput("query must not be empty", field="query")
    limit = ctx.settings.max_search_query_length
    if len(query) > limit:
        raise BadUserInput(f"query must be at most {limit} characters", field="query")
    maximum = ctx.settings.max_page_size
    if not 1 <= first <= maximum:
        raise BadUserInput(f"first must be between 1 and {maximum}", field="first")
    if kind not in TYPES:
        raise BadUserInput("Unknown search type", field="type")
    terms = search_query.parse(query)
    prefix = search_query.text_prefix(query)
    results = Results()
    async with ctx.db.session() as session:
        if prefix and kind in ("ALL", "USERS"):
            results.users = await search_db.users(session, prefix, first)
        if prefix and kind in ("ALL", "GROUPS"):
            results.groups = await search_db.groups(session, viewer.user_id, prefix, first)
        if prefix and kind in ("ALL", "CONVERSATIONS"):
            results.conversations = await search_db.conversations(session, viewer.user_id, prefix, first)
        if terms and kind in ("ALL", "MESSAGES"):
            if ctx.db.is_postgres:
                rows = await search_db.messages_postgres(
                    session, viewer.user_id, search_query.to_tsquery(terms), first
                )
            else:
                rows = await search_db.messages_sqlite(session, viewer.user_id, search_query.to_fts5(terms), first)
            results.messages = [MessageHit(row, search_query.snippet(row.body or "", terms)) for row in rows]
    for user in results.users:
        ctx.prime(accounts_resolvers.user_by_id, user.id, user)
    for conversation in results.conversations:
        ctx.prime(conversations_resolvers.conversation_by_id, conversation.id, conversation)
    for hit in results.messages:
        ctx.prime(messages_resolvers.message_by_id, hit.message.id, hit.message)
    return results
