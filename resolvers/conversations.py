"""Conversations: direct pairs, the viewer's list, hiding, read positions, typing.

Also the per-request loaders every domain may reuse (`conversation_by_id`, `group_by_id`,
`viewer_membership`, `member_page`, ...; `user_by_id` is re-exported from
resolvers.accounts): each is `async def fn(ctx, keys) -> list` for `ctx.loader(fn)`
and costs one statement per batch.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from auth.access import access_conversation
from db import conversations as conversations_db
from db import models
from db.engine import transaction
from errors import BadUserInput, NotFound
from realtime.events import Publisher
from resolvers.accounts import user_by_id as user_by_id  # re-exported: one users loader for every domain
from resolvers.context import Context

READ_STATES_LIMIT = 100  # the contract's "100 most recent readers"
_SILENT = Publisher(None)


def utcnow() -> datetime:
    return datetime.now(UTC)


def events(ctx: Context) -> Publisher:
    """The publisher, or a silent one when realtime is not wired (HTTP-only deployments)."""
    return ctx.events or _SILENT


# -------------------------------------------------------------------------- loaders


async def conversation_by_id(ctx: Context, ids: Sequence[int]) -> list[models.Conversation | None]:
    async with ctx.db.session() as s:
        found = await conversations_db.by_ids(s, ids)
    return [found.get(i) for i in ids]


async def group_by_id(ctx: Context, ids: Sequence[int]) -> list[models.Group | None]:
    async with ctx.db.session() as s:
        found = await conversations_db.groups_by_ids(s, ids)
    return [found.get(i) for i in ids]


async def viewer_membership(ctx: Context, conversation_ids: Sequence[int]) -> list[Any]:
    """The viewer's membership row per conversation, a light row (None: not a member)."""
    viewer = ctx.require_viewer()
    async with ctx.db.read_connection() as conn:
        found = await conversations_db.membership_rows(conn, viewer.user_id, conversation_ids)
    return [found.get(i) for i in conversation_ids]


async def conversation_title(ctx: Context, conversation_ids: Sequence[int]) -> list[str]:
    """The group's name, or the other member's display name ("" when there is none)."""
    viewer = ctx.require_viewer()
    async with ctx.db.read_connection() as conn:
        found = await conversations_db.title_rows(conn, viewer.user_id, conversation_ids)
    return [found.get(i, "") for i in conversation_ids]


async def viewer_group_membership(ctx: Context, group_ids: Sequence[int]) -> list[models.ConversationMember | None]:
    """The viewer's membership in each group's conversation (None: not a member)."""
    viewer = ctx.require_viewer()
    async with ctx.db.session() as s:
        found = await conversations_db.group_memberships(s, viewer.user_id, group_ids)
    return [found.get(i) for i in group_ids]


async def unread_count(ctx: Context, conversation_ids: Sequence[int]) -> list[int]:
    viewer = ctx.require_viewer()
    async with ctx.db.session() as s:
        found = await conversations_db.unread_counts(s, viewer.user_id, conversation_ids)
    return [found.get(i, 0) for i in conversation_ids]


async def read_states(ctx: Context, conversation_ids: Sequence[int]) -> list[list[Any]]:
    """(membership, user) of the 100 most recent readers per conversation."""
    async with ctx.db.session() as s:
        found = await conversations_db.read_states(s, conversation_ids, READ_STATES_LIMIT)
    return [found[i] for i in conversation_ids]


async def member_page(ctx: Context, keys: Sequence[tuple[int, int, int | None]]) -> list[list[Any]]:
    """Keys are (conversation id, rows to fetch, after user id); one statement per
    distinct (rows, after), so a list page asking the same members page costs one."""
    groups: dict[tuple[int, int | None], list[int]] = defaultdict(list)
    for cid, limit, after in keys:
        groups[(limit, after)].append(cid)
    results: dict[tuple[int, int, int | None], list[Any]] = {}
    async with ctx.db.session() as s:
        for (limit, after), cids in groups.items():
            found = await conversations_db.member_pages(s, list(dict.fromkeys(cids)), limit, after)
            for cid in cids:
                results[(cid, limit, after)] = found[cid]
    return [results[k] for k in keys]


async def member_users(ctx: Context, keys: Sequence[tuple[int, int, int | None]]) -> list[list[Any]]:
    """`member_page` as user light rows only (Conversation.members): keys are
    (conversation id, rows to fetch, after user id); one statement per distinct
    (rows, after)."""
    groups: dict[tuple[int, int | None], list[int]] = defaultdict(list)
    for cid, limit, after in keys:
        groups[(limit, after)].append(cid)
    results: dict[tuple[int, int, int | None], list[Any]] = {}
    for (limit, after), cids in groups.items():
        async with ctx.db.read_connection() as conn:
            found = await conversations_db.member_user_pages(conn, list(dict.fromkeys(cids)), limit, after)
        for cid in cids:
            results[(cid, limit, after)] = found[cid]
    return [results[k] for k in keys]


# ------------------------------------------------------------------------- queries


async def list_conversation_rows(
    ctx: Context, limit: int, after: tuple[datetime, int] | None, *,
    title: bool = True, unread: bool = True, last_message: bool = True,
    members: tuple[int, int | None] | None = None, members_for: int = 0,
) -> tuple[list[conversations_db.ListedConversation], dict[tuple[int, int, int | None], list[Any]]]:
    """The viewer's conversations (`limit` rows: the caller asks one extra to learn
    whether more follow) as light rows in one statement, with the title, unread count
    and last message (and its sender) when asked: all of them are the viewer's own
    conversations, so the page is authorized by construction. With `members` (rows to
    fetch, after user id), the members pages of the first `members_for` rows follow in
    one more statement, keyed like `member_users`."""
    viewer = ctx.require_viewer()
    pages: dict[tuple[int, int, int | None], list[Any]] = {}
    async with ctx.db.read_connection() as conn:
        listed = await conversations_db.list_rows_for_user(
            conn, viewer.user_id, limit, after, title=title, unread=unread, last_message=last_message
        )
        cids = [item.conversation.id for item in listed[:members_for]]
        if members is not None and cids:
            size, after_user = members
            found = await conversations_db.member_user_pages(conn, cids, size, after_user)
            pages = {(cid, size, after_user): users for cid, users in found.items()}
    memberships = ctx.loader(viewer_membership)
    conversations = ctx.loader(conversation_by_id)
    for item in listed:
        memberships.prime(item.conversation.id, item.member)
        conversations.prime(item.conversation.id, item.conversation)
    return listed, pages


async def get_conversation(ctx: Context, conversation_id: int) -> models.Conversation:
    viewer = ctx.require_viewer()
    async with ctx.db.session() as s:
        conversation, member = await access_conversation(s, viewer, conversation_id)
    ctx.prime(viewer_membership, conversation.id, member)
    return conversation


async def require_member(ctx: Context, conversation_id: int) -> models.ConversationMember:
    """The viewer's membership through the loader (usually primed), or NotFound."""
    member = await ctx.loader(viewer_membership).load(conversation_id)
    if member is None:
        raise NotFound("Conversation not found")
    return member


# ----------------------------------------------------------------------- mutations


async def start_direct_conversation(ctx: Context, user_id: int) -> models.Conversation:
    """The pair's one direct conversation, created on first use.

    Two users starting it at the same moment race on the unique `direct_key`: the loser's
    transaction fails with IntegrityError and simply fetches the winner's conversation.
    """
    viewer = ctx.require_viewer()
    if user_id == viewer.user_id:
        raise BadUserInput("You cannot start a conversation with yourself", field="userId")
    key = conversations_db.direct_key(viewer.user_id, user_id)
    for attempt in (1, 2):
        try:
            async with transaction(ctx.db) as tx:
                s = tx.session
                if await s.get(models.User, user_id) is None:
                    raise NotFound("User not found")
                conversation = await conversations_db.get_by_direct_key(s, key)
                if conversation is None:
                    conversation = await conversations_db.create_direct(s, viewer.user_id, user_id, utcnow())
                    tx.after_commit(events(ctx).conversations_updated, [viewer.user_id, user_id], conversation.id)
                elif await conversations_db.unhide(s, conversation.id, viewer.user_id):
                    tx.after_commit(events(ctx).conversation_updated, viewer.user_id, conversation.id)
            return conversation
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def delete_conversation(ctx: Context, conversation_id: int) -> bool:
    """Hide a direct conversation from the viewer until a newer message arrives.

    Takes the conversation row lock so "newer" is measured against the latest committed
    message: a message sent concurrently either lands before (and is hidden with the
    rest) or after (and un-hides it), never in between.
    """
    viewer = ctx.require_viewer()
    async with transaction(ctx.db) as tx:
        conversation, member = await access_conversation(tx.session, viewer, conversation_id, lock=True)
        if conversation.kind != "DIRECT":
            raise BadUserInput("A group conversation is left with leaveGroup", field="id")
        if await conversations_db.hide(tx.session, member, conversation.last_seq):
            tx.after_commit(events(ctx).conversation_removed, viewer.user_id, conversation.id)
    return True


def read_state_payload(member: models.ConversationMember) -> dict[str, Any]:
    """What `Publisher.read_state` carries (and `ReadState.from_event` rebuilds)."""
    return {
        "last_read_seq": member.last_read_seq,
        "last_read_message_id": member.last_read_message_id,
        "read_at": member.read_at.isoformat() if member.read_at else None,
    }


async def mark_conversation_read(
    ctx: Context, conversation_id: int, up_to_message_id: int | None
) -> models.Conversation:
    """Move the viewer's read position forward to a message of this conversation (or to
    the latest); an older position than the current one changes nothing."""
    viewer = ctx.require_viewer()
    async with transaction(ctx.db) as tx:
        s = tx.session
        conversation, member = await access_conversation(s, viewer, conversation_id)
        message_id: int | None
        if up_to_message_id is not None:
            message = await s.get(models.Message, up_to_message_id)
            if message is None or message.conversation_id != conversation.id:
                raise NotFound("Message not found")
            seq, message_id = message.seq, message.id
        else:
            seq, message_id = conversation.last_seq, conversation.last_message_id
        if seq > 0 and await conversations_db.advance_read(s, member, seq, message_id, utcnow()):
            tx.after_commit(events(ctx).read_state, conversation.id, viewer.user_id, read_state_payload(member))
            tx.after_commit(events(ctx).conversation_updated, viewer.user_id, conversation.id)
    ctx.prime(viewer_membership, conversation.id, member)
    return conversation


async def set_typing(ctx: Context, conversation_id: int, is_typing: bool) -> bool:
    """Nothing is stored: the typing service (expiry, merging) publishes when wired,
    otherwise the event goes out as is."""
    viewer = ctx.require_viewer()
    async with ctx.db.session() as s:
        await access_conversation(s, viewer, conversation_id)
    typing = ctx.services.typing
    if typing is not None:
        await typing.set(conversation_id, viewer.user_id, is_typing)
    else:
        await events(ctx).typing(conversation_id, viewer.user_id, is_typing)
    return True
