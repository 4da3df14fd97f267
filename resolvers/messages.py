"""Messages: send, edit, delete, pages, and what realtime needs to deliver them.

Write path (one place for every change): inside one transaction the conversation row
is advanced with UPDATE ... RETURNING (next `seq` for a new message, next event `pos`
for every change), the change and its MessageEvent row are written, the message's
snapshot is built, and `tx.after_commit(events.message_event, ...)` publishes it only
once committed. The row lock makes commit order equal sequence order, so readers
paging by `seq` or resuming by event `pos` never skip anything.

For realtime: `snapshot()` / `snapshot_many()` (JSON-able, resolvable without SQL via
`schema.messages.Message.from_snapshot`), `events_since()` for replay, and
`encode_event_cursor()` / `decode_event_cursor()`.
"""
from __future__ import annotations

import base64
import binascii
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from auth import audit, permissions
from auth.access import access_message
from db import conversations as conversations_db
from db import message_pages, models
from db import messages as messages_db
from db.engine import Transaction, transaction
from db.messages import Window
from errors import BadUserInput, Conflict, Forbidden, NotFound
from resolvers import attachments as attachments_resolvers
from resolvers import notifications
from resolvers.accounts import rate_limit
from resolvers.context import Context
from resolvers.conversations import events, require_member, user_by_id, utcnow

MAX_MENTIONS = 50  # per message; also the cost estimate in schema/limits.py
MAX_EDIT_HISTORY = 50  # earlier bodies returned (the newest 50, oldest first)
MAX_CLIENT_MESSAGE_ID = 128  # the column's width
REPLAY_BATCH = 500
_MENTION = re.compile(r"(?<![\w@])@(\w[\w.\-]*)")


# ------------------------------------------------------------------ event cursors


def encode_event_cursor(conversation_id: int, pos: int) -> str:
    """Opaque resume position: after event `pos` of `conversation_id`."""
    return base64.urlsafe_b64encode(f"ev:{conversation_id}:{pos}".encode()).decode().rstrip("=")


def decode_event_cursor(cursor: str, conversation_id: int) -> int:
    """The event position inside `cursor`; BAD_USER_INPUT (field "after") when it is
    malformed or belongs to another conversation."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise BadUserInput("Malformed cursor", field="after") from None
    tag, _, rest = raw.partition(":")
    cid, _, pos = rest.partition(":")
    if tag != "ev" or not cid.isdigit() or not pos.isdigit() or len(pos) > 18:
        raise BadUserInput("Malformed cursor", field="after")
    if int(cid) != conversation_id:
        raise BadUserInput("This cursor belongs to another conversation", field="after")
    return int(pos)


# ---------------------------------------------------------------------- snapshots


def _columns(model: type[models.Base]) -> list[tuple[str, bool]]:
    """(attribute, is datetime) for each column of `model`."""
    return [
        (attr.key, isinstance(attr.columns[0].type, (DateTime, models.UTCDateTime)))
        for attr in sa_inspect(model).column_attrs
    ]


_COLUMNS: dict[type[models.Base], list[tuple[str, bool]]] = {}
_PRIVATE = {"password_hash"}


def row_to_dict(row: models.Base) -> dict[str, Any]:
    """A row as JSON-able data (datetimes as ISO 8601 strings, secrets left out)."""
    cols = _COLUMNS.get(type(row)) or _COLUMNS.setdefault(type(row), _columns(type(row)))
    out: dict[str, Any] = {}
    for key, is_dt in cols:
        if key in _PRIVATE:
            continue
        value = getattr(row, key)
        out[key] = value.isoformat() if is_dt and value is not None else value
    return out


def row_from_dict(model: type[Any], data: dict[str, Any]) -> Any:
    """The transient row `row_to_dict` described (never added to a session)."""
    cols = _COLUMNS.get(model) or _COLUMNS.setdefault(model, _columns(model))
    kwargs: dict[str, Any] = {}
    for key, is_dt in cols:
        if key in data:
            value = data[key]
            kwargs[key] = datetime.fromisoformat(value) if is_dt and value is not None else value
    return model(**kwargs)


def build_snapshot(
    message: models.Message, sender: models.User, attachments: Sequence[models.Attachment],
    mentions: Sequence[models.User], edits: Sequence[models.MessageEdit],
) -> dict[str, Any]:
    deleted = message.deleted_at is not None
    return {
        "message": row_to_dict(message),
        "sender": row_to_dict(sender),
        "attachments": [] if deleted else [row_to_dict(a) for a in attachments],
        "mentions": [] if deleted else [row_to_dict(u) for u in mentions],
        "edits": [] if deleted else [row_to_dict(e) for e in edits[-MAX_EDIT_HISTORY:]],
    }


async def snapshot_many(session: AsyncSession, rows: Sequence[models.Message]) -> dict[int, dict[str, Any]]:
    """Snapshots of many messages in four statements."""
    if not rows:
        return {}
    ids = [m.id for m in rows]
    users = {
        u.id: u
        for u in (
            await session.execute(select(models.User).where(models.User.id.in_({m.sender_id for m in rows})))
        ).scalars()
    }
    attachments = await messages_db.attachments_for(session, ids)
    mentions = await messages_db.mentions_for(session, ids)
    edits = await messages_db.edits_for(session, ids)
    return {
        m.id: build_snapshot(m, users[m.sender_id], attachments[m.id], mentions[m.id], edits[m.id]) for m in rows
    }


async def snapshot(session: AsyncSession, message: int | models.Message) -> dict[str, Any]:
    """Everything needed to resolve the full Message type without a query: the message
    columns, its sender, attachments, mentioned users and earlier bodies (all empty once
    deleted). Build it inside the writing transaction (pass the row, or its id) and
    publish it after commit."""
    row = message if isinstance(message, models.Message) else await session.get(models.Message, message)
    if row is None:
        raise LookupError(f"message {message} not found")
    return (await snapshot_many(session, [row]))[row.id]


async def events_since(
    session: AsyncSession, conversation_id: int, after_pos: int, limit: int = REPLAY_BATCH
) -> list[dict[str, Any]]:
    """Events after `after_pos`, oldest first, shaped exactly like what
    `Publisher.message_event` publishes (the message as it is now). Page with the last
    event's `pos` until fewer than `limit` come back."""
    rows = await messages_db.events_after(session, conversation_id, after_pos, limit)
    messages = await messages_db.by_ids(session, {e.message_id for e in rows})
    snaps = await snapshot_many(session, list(messages.values()))
    return [
        {"type": "message", "kind": e.kind, "pos": e.pos, "conversation_id": conversation_id,
         "message": snaps[e.message_id]}
        for e in rows
    ]


# ------------------------------------------------------------------------ loaders


def _prime_senders(ctx: Context, pairs: Iterable[tuple[models.Message, models.User]]) -> None:
    """A message's sender is always asked after the message itself: seeding the users
    loader here keeps `sender` free of extra statements, whatever the timing."""
    users = ctx.loader(user_by_id)
    for _, sender in pairs:
        users.prime(sender.id, sender)


async def message_by_id(ctx: Context, ids: Sequence[int]) -> list[models.Message | None]:
    async with ctx.db.session() as s:
        found = await messages_db.with_senders(s, ids)
    _prime_senders(ctx, found.values())
    return [found[i][0] if i in found else None for i in ids]


async def edits_by_message(ctx: Context, ids: Sequence[int]) -> list[list[models.MessageEdit]]:
    async with ctx.db.session() as s:
        found = await messages_db.edits_for(s, ids)
    return [found[i][-MAX_EDIT_HISTORY:] for i in ids]


async def mentions_by_message(ctx: Context, ids: Sequence[int]) -> list[list[models.User]]:
    async with ctx.db.session() as s:
        found = await messages_db.mentions_for(s, ids)
    return [found[i] for i in ids]


async def attachments_by_message(ctx: Context, ids: Sequence[int]) -> list[list[models.Attachment]]:
    async with ctx.db.session() as s:
        found = await messages_db.attachments_for(s, ids)
    return [found[i] for i in ids]


async def message_page(ctx: Context, keys: Sequence[tuple[int, Window]]) -> list[list[tuple[Any, Any]]]:
    """Keys are (conversation id, window); one statement per distinct window, as light
    (message, sender) rows (`db.message_pages`). The caller has checked membership."""
    groups: dict[Window, list[int]] = defaultdict(list)
    for cid, window in keys:
        groups[window].append(cid)
    results: dict[tuple[int, Window], list[tuple[Any, Any]]] = {}
    for window, cids in groups.items():
        async with ctx.db.read_connection() as conn:
            found = await message_pages.page_rows(conn, list(dict.fromkeys(cids)), window)
        for cid in cids:
            results[(cid, window)] = found[cid]
    return [results[k] for k in keys]


def prime_snapshot(ctx: Context, snap: dict[str, Any]) -> models.Message:
    """Rebuild the rows of a snapshot and seed this context's loaders with them, so
    resolving the Message (sender, attachments, mentions, history) runs no SQL."""
    message = row_from_dict(models.Message, snap["message"])
    sender = row_from_dict(models.User, snap["sender"])
    mentions = [row_from_dict(models.User, u) for u in snap["mentions"]]
    for user in (sender, *mentions):
        ctx.loader(user_by_id).prime(user.id, user)
    ctx.loader(message_by_id).prime(message.id, message, force=True)
    ctx.loader(mentions_by_message).prime(message.id, mentions, force=True)
    ctx.loader(edits_by_message).prime(
        message.id, [row_from_dict(models.MessageEdit, e) for e in snap["edits"]], force=True
    )
    ctx.loader(attachments_by_message).prime(
        message.id, [row_from_dict(models.Attachment, a) for a in snap["attachments"]], force=True
    )
    return message


# ------------------------------------------------------------------------- checks


def clean_body(ctx: Context, body: str) -> str:
    text = body.strip()
    limit = ctx.settings.max_message_length
    if not text:
        raise BadUserInput("The message body must not be empty", field="body")
    if len(text) > limit:
        raise BadUserInput(f"The message body is limited to {limit} characters", field="body")
    if "\x00" in text:
        raise BadUserInput("The message body must not contain NUL characters", field="body")
    return text


def clean_client_message_id(value: str | None) -> str | None:
    if value is None:
        return None
    if not value or len(value) > MAX_CLIENT_MESSAGE_ID or "\x00" in value:
        raise BadUserInput(
            f"clientMessageId must be 1..{MAX_CLIENT_MESSAGE_ID} characters", field="clientMessageId"
        )
    return value


def mention_keys(body: str) -> list[str]:
    """Casefolded usernames written as `@name` (a trailing "." or "-" is punctuation)."""
    keys: dict[str, None] = {}
    for match in _MENTION.finditer(body):
        name = match.group(1)
        for candidate in (name, name.rstrip(".-")):
            if candidate:
                keys[candidate.casefold()] = None
        if len(keys) >= 2 * MAX_MENTIONS:
            break
    return list(keys)


async def _mentioned_members(s: AsyncSession, conversation_id: int, body: str) -> list[models.User]:
    keys = mention_keys(body)
    if not keys:
        return []
    return (await messages_db.members_by_username(s, conversation_id, keys))[:MAX_MENTIONS]


# ---------------------------------------------------------------------- mutations


async def send_message(
    ctx: Context, conversation_id: int, body: str, client_message_id: str | None = None,
    attachment_ids: Sequence[int] = (),
) -> dict[str, Any]:
    """Append a message; returns its snapshot. With `client_message_id`, a retry returns
    the first message: the retry's insert fails on the unique key (whether the first
    one committed long ago or a moment ago in a concurrent request), its whole
    transaction (counters included) rolls back, nothing is published, and the first
    message is fetched."""
    viewer = ctx.require_viewer()
    text = clean_body(ctx, body)
    client_id = clean_client_message_id(client_message_id)
    await rate_limit(ctx, "send_message")
    try:
        return await _append(ctx, conversation_id, text, client_id, attachment_ids)
    except IntegrityError:
        if client_id is None:
            raise
        async with ctx.db.session() as s:
            existing = await messages_db.by_client_id(s, conversation_id, viewer.user_id, client_id)
            if existing is None:
                raise
            return await snapshot(s, existing)


async def _append(
    ctx: Context, conversation_id: int, text: str, client_id: str | None, attachment_ids: Sequence[int]
) -> dict[str, Any]:
    """The write path (see the module docstring), in Core statements on the transaction's
    connection: the locked read of conversation, membership and sender, then
    `append_message` (INSERT message, UPDATE conversation: counters, activity, last
    message, returning the member ids; INSERT event; UPDATE read position), which is
    four statements on SQLite and one on PostgreSQL."""
    viewer = ctx.require_viewer()
    publish = events(ctx)
    async with transaction(ctx.db) as tx:
        s = tx.session
        conn = await s.connection()
        target = await messages_db.append_target(conn, conversation_id, viewer.user_id)
        if target is None:
            raise NotFound("Conversation not found")
        now = utcnow()
        seq, pos = target.last_seq + 1, target.last_event_pos + 1
        message_id, read_advanced, member_ids, hidden_ids = await messages_db.append_message(
            conn, conversation_id=conversation_id, member_id=target.member_id, seq=seq, pos=pos,
            sender_id=viewer.user_id, body=text, client_message_id=client_id, now=now,
        )
        if read_advanced:
            read_state = {"last_read_seq": seq, "last_read_message_id": message_id, "read_at": now.isoformat()}
        else:  # already past seq: cannot happen under the lock, kept for the invariant's sake
            read_state = {"last_read_seq": target.last_read_seq, "last_read_message_id": target.last_read_message_id,
                          "read_at": target.read_at.isoformat() if target.read_at else None}
        direct = target.kind == "DIRECT"
        if direct and hidden_ids:
            await conversations_db.unhide(s, conversation_id)
        mentioned = await _mentioned_members(s, conversation_id, text) if "@" in text else []
        await messages_db.insert_mentions(conn, message_id, [u.id for u in mentioned])
        attachments = (
            await attachments_resolvers.attach_to_message(tx, ctx, conversation_id, message_id, attachment_ids)
            if attachment_ids else []
        )
        if direct:  # DIRECT_MESSAGE for the other member (it already tells a mentioned one)
            notified = [uid for uid in member_ids if uid != viewer.user_id]
            await notifications.notify_users(tx, ctx, notified, "DIRECT_MESSAGE", viewer.user_id,
                                             conversation_id=conversation_id, message_id=message_id, now=now)
        else:  # MENTION for each mentioned member of a group but the sender
            notified = [u.id for u in mentioned if u.id != viewer.user_id]
            await notifications.notify_users(tx, ctx, notified, "MENTION", viewer.user_id,
                                             conversation_id=conversation_id, message_id=message_id, now=now)
        snap = {
            "message": {
                "id": message_id, "conversation_id": conversation_id, "seq": seq, "sender_id": viewer.user_id,
                "body": text, "client_message_id": client_id, "created_at": now.isoformat(), "edited_at": None,
                "deleted_at": None,
            },
            "sender": _sender_dict(target),
            "attachments": [row_to_dict(a) for a in attachments],
            "mentions": [row_to_dict(u) for u in mentioned],
            "edits": [],
        }
        tx.after_commit(publish.message_event, conversation_id, pos, "ADDED", snap)
        tx.after_commit(publish.read_state, conversation_id, viewer.user_id, read_state)
        tx.after_commit(publish.conversations_updated, member_ids, conversation_id)
        typing = ctx.services.typing
        if typing is not None:  # sending a message ends the sender's typing state
            tx.after_commit(typing.message_sent, conversation_id, viewer.user_id)
    return snap


_SENDER_DATETIMES = {key for key, is_dt in _columns(models.User) if is_dt}
_SENDER_KEYS = [(key, f"u_{key}", key in _SENDER_DATETIMES) for key in messages_db.SENDER_COLUMNS]


def _sender_dict(target: Any) -> dict[str, Any]:
    """The "sender" of a snapshot (what `row_to_dict(user)` gives) from `append_target`'s row."""
    mapping = target._mapping
    out: dict[str, Any] = {}
    for key, label, is_dt in _SENDER_KEYS:
        value = mapping[label]
        out[key] = value.isoformat() if is_dt and value is not None else value
    return out


async def edit_message(ctx: Context, message_id: int, body: str) -> dict[str, Any]:
    """Sender only; the earlier body is kept as a MessageEdit whose `edited_at` is when
    that body was written (creation for the original). A deleted message is CONFLICT
    (it exists and the sender may see it, but its state forbids the change); the same
    body again changes nothing and publishes nothing."""
    viewer = ctx.require_viewer()
    text = clean_body(ctx, body)
    publish = events(ctx)
    async with transaction(ctx.db) as tx:
        s = tx.session
        message, conversation, _ = await access_message(s, viewer, message_id, lock=True)
        if message.sender_id != viewer.user_id:
            raise Forbidden("Only the sender can edit a message")
        if message.deleted_at is not None:
            raise Conflict("A deleted message cannot be edited")
        if text == message.body:
            return await snapshot(s, message)
        now = utcnow()
        _, pos = await conversations_db.advance(s, conversation, new_message=False, now=now)
        written_at = message.edited_at or message.created_at
        s.add(models.MessageEdit(message_id=message.id, body=message.body, edited_at=written_at))
        message.body = text
        message.edited_at = now
        mentioned = await _mentioned_members(s, conversation.id, text)
        added = await messages_db.replace_mentions(s, message.id, [u.id for u in mentioned])
        if conversation.kind == "GROUP":
            for uid in added:
                if uid != viewer.user_id:
                    await notifications.notify(
                        tx, ctx, uid, "MENTION", viewer.user_id, conversation_id=conversation.id, message_id=message.id
                    )
        messages_db.add_event(s, conversation.id, pos, "EDITED", message.id, now)
        await s.flush()
        snap = await snapshot(s, message)
        tx.after_commit(publish.message_event, conversation.id, pos, "EDITED", snap)
        if conversation.last_message_id == message.id:
            tx.after_commit(publish.conversations_updated, await conversations_db.member_ids(s, conversation.id),
                            conversation.id)
    return snap


async def delete_message(ctx: Context, message_id: int) -> dict[str, Any]:
    """Soft delete by the sender, or by a MODERATOR (or above) of a group conversation;
    the latter is audited. Deleting a tombstone again returns it unchanged."""
    viewer = ctx.require_viewer()
    publish = events(ctx)
    async with transaction(ctx.db) as tx:
        s = tx.session
        message, conversation, member = await access_message(s, viewer, message_id, lock=True)
        own = message.sender_id == viewer.user_id
        role = permissions.as_role(member.role) if conversation.kind == "GROUP" else None
        if not own and not permissions.can_delete_message(role, own=False):
            raise Forbidden("Only the sender or a group moderator can delete this message")
        if message.deleted_at is not None:
            return await snapshot(s, message)
        now = utcnow()
        _, pos = await conversations_db.advance(s, conversation, new_message=False, now=now)
        await messages_db.erase(s, message, now)
        messages_db.add_event(s, conversation.id, pos, "DELETED", message.id, now)
        if not own:
            await _audit(tx, ctx, message, conversation)
        await s.flush()
        snap = await snapshot(s, message)
        tx.after_commit(publish.message_event, conversation.id, pos, "DELETED", snap)
        if conversation.last_message_id == message.id:
            tx.after_commit(publish.conversations_updated, await conversations_db.member_ids(s, conversation.id),
                            conversation.id)
    return snap


async def _audit(tx: Transaction, ctx: Context, message: models.Message, conversation: models.Conversation) -> None:
    viewer = ctx.require_viewer()
    detail = f"message {message.id} of user {message.sender_id} in conversation {conversation.id}"
    row = await audit.record(tx.session, audit.MESSAGE_DELETED_BY_MODERATOR, viewer.user_id, ctx.ip_address, detail)
    tx.after_commit(events(ctx).audit, row.id)


# ------------------------------------------------------------------------ queries


async def list_messages(ctx: Context, conversation_id: int, window: Window) -> list[tuple[Any, Any]]:
    """A window of a conversation the viewer is in (NOT_FOUND otherwise): light
    (message, sender) rows."""
    await require_member(ctx, conversation_id)
    return await ctx.loader(message_page).load((conversation_id, window))


async def list_messages_as_member(ctx: Context, conversation_id: int, window: Window) -> list[tuple[Any, Any]]:
    """`list_messages` for one root `messages(...)` field: the membership check rides
    in the page's statement; only an empty page costs a second one (to tell "not a
    member", NOT_FOUND, from "no messages there")."""
    viewer = ctx.require_viewer()
    async with ctx.db.read_connection() as conn:
        rows = await message_pages.member_page_rows(conn, viewer.user_id, conversation_id, window)
    if not rows:
        await require_member(ctx, conversation_id)
    return rows
