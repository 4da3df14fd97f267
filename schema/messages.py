"""Messages: the Message type and its pages, send/edit/delete, and the event types.

A Message resolves its sender, attachments, mentions and history through per-request
loaders; `Message.from_snapshot(snapshot, ctx)` primes those loaders from the snapshot
a write published, so subscribers resolve a delivered message without any SQL.
Deleted messages are tombstones: body null, history, attachments and mentions empty.
"""
from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from db import models
from errors import NotFound
from resolvers import conversations as conversations_resolvers
from resolvers import messages as messages_resolvers
from resolvers.context import Context
from resolvers.messages import Window
from schema import ids
from schema.conversations import int_cursor, later
from schema.pagination import Page, PageInfo, encode_cursor, page_info, page_request, slice_page

if TYPE_CHECKING:
    from schema.conversations import Conversation
    from schema.files import Attachment
    from schema.users import User

UserType = Annotated["User", strawberry.lazy("schema.users")]
ConversationType = Annotated["Conversation", strawberry.lazy("schema.conversations")]
AttachmentType = Annotated["Attachment", strawberry.lazy("schema.files")]


def _user(row: models.User) -> User:
    from schema.users import User

    return User.from_row(row)


@strawberry.type
class MessageEdit:
    row: strawberry.Private[models.MessageEdit]

    @strawberry.field
    def body(self) -> str:
        return self.row.body

    @strawberry.field(description="When this earlier body was written (the message's creation for the original).")
    def edited_at(self) -> datetime:
        return self.row.edited_at


async def _load_conversation(self: Any, info: strawberry.Info) -> ConversationType:
    from schema.conversations import Conversation

    row = await info.context.loader(conversations_resolvers.conversation_by_id).load(self.row.conversation_id)
    if row is None:
        raise NotFound("Conversation not found")
    return Conversation.from_row(row)


async def _load_sender(message: Any, info: strawberry.Info) -> UserType:
    return _user(await info.context.loader(conversations_resolvers.user_by_id).load(message.row.sender_id))


def _sender(self: Any, info: strawberry.Info) -> UserType:
    if self.sender_row is not None:
        return _user(self.sender_row)
    return later(_load_sender(self, info))


def _client_message_id(self: Any, info: strawberry.Info) -> str | None:
    viewer = info.context.viewer
    return self.row.client_message_id if viewer is not None and viewer.user_id == self.row.sender_id else None


@strawberry.type
class Message:
    # An ORM row or a light row (db.rows); the plain fields are copied by `from_row`
    # (Strawberry's attribute fast path), the sender too when the page brought it.
    row: strawberry.Private[Any]
    id: strawberry.ID
    conversation: ConversationType = strawberry.field(resolver=_load_conversation)
    sender: UserType = strawberry.field(resolver=_sender)
    body: str | None = strawberry.field(description="Null once deleted.")
    client_message_id: str | None = strawberry.field(
        resolver=_client_message_id, description="The sender's idempotency key, echoed back (to the sender only)."
    )
    created_at: datetime
    edited_at: datetime | None
    deleted_at: datetime | None
    is_deleted: bool
    sender_row: strawberry.Private[Any] = None

    @property
    def _deleted(self) -> bool:
        return self.is_deleted

    @strawberry.field(description="Earlier bodies, oldest first; empty once deleted.")
    async def edit_history(self, info: strawberry.Info) -> list[MessageEdit]:
        if self._deleted:
            return []
        rows = await info.context.loader(messages_resolvers.edits_by_message).load(self.row.id)
        return [MessageEdit(row=row) for row in rows]

    @strawberry.field
    async def attachments(self, info: strawberry.Info) -> list[AttachmentType]:
        if self._deleted:
            return []
        from schema.files import Attachment

        rows = await info.context.loader(messages_resolvers.attachments_by_message).load(self.row.id)
        return [Attachment.from_row(row) for row in rows]

    @strawberry.field
    async def mentions(self, info: strawberry.Info) -> list[UserType]:
        if self._deleted:
            return []
        rows = await info.context.loader(messages_resolvers.mentions_by_message).load(self.row.id)
        return [_user(row) for row in rows]

    @classmethod
    def from_row(cls, row: Any, sender: Any = None) -> Message:
        """`row`: an ORM or light message row; `sender`: its sender's row when at hand."""
        deleted = row.deleted_at is not None
        return cls(
            row=row, id=strawberry.ID(ids.encode("Message", row.id)), body=None if deleted else row.body,
            created_at=row.created_at, edited_at=row.edited_at, deleted_at=row.deleted_at, is_deleted=deleted,
            sender_row=sender,
        )

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any], ctx: Context) -> Message:
        """The message a write published (`resolvers.messages.snapshot`), with this
        context's loaders primed: sender, attachments, mentions and history cost no SQL."""
        return cls.from_row(messages_resolvers.prime_snapshot(ctx, snapshot))


@strawberry.type
class MessageEdge:
    cursor: str
    node: Message


@strawberry.type
class MessageConnection:
    edges: list[MessageEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[tuple[Any, Any]]) -> MessageConnection:
        """`page.rows`: (message, sender) rows."""
        return cls(
            edges=[
                MessageEdge(cursor=encode_cursor(row.seq), node=Message.from_row(row, sender))
                for row, sender in page.rows
            ],
            page_info=page_info(page, _message_cursor),
        )


def _message_cursor(pair: tuple[Any, Any]) -> str:
    return encode_cursor(pair[0].seq)


def _given(value: Any) -> Any:
    return None if value is strawberry.UNSET else value


async def message_connection(
    ctx: Context, conversation_id: int, first: int | None, after: str | None, last: int | None,
    before: str | None, *, root: bool = False,
) -> MessageConnection:
    """A page of a conversation's messages, oldest first within the page whichever way
    it was asked. Neither first nor last: the newest 50 (only `after`: the 50 right
    after it, so catching up never skips). Cursors are `seq` positions."""
    first, after, last, before = _given(first), _given(after) or None, _given(last), _given(before) or None
    request = page_request(
        first=first, after=after, last=last, before=before, default=50,
        maximum=ctx.settings.max_page_size, default_forward=after is not None and before is None,
    )
    window = Window(
        limit=request.size + 1, forward=request.forward,
        after=int_cursor(after, "after") if after else None,
        before=int_cursor(before, "before") if before else None,
    )
    if root:  # one conversation: the membership check rides in the page statement
        rows = await messages_resolvers.list_messages_as_member(ctx, conversation_id, window)
    else:  # Conversation.messages: membership checked, pages batched across conversations
        rows = await messages_resolvers.list_messages(ctx, conversation_id, window)
    return MessageConnection.from_page(slice_page(rows, request))


@strawberry.input
class SendMessageInput:
    conversation_id: strawberry.ID
    body: str
    client_message_id: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Retrying with the same key returns the first message instead of a duplicate.",
    )
    attachment_ids: list[strawberry.ID] | None = strawberry.field(
        default=strawberry.UNSET,
        description="Attachments uploaded earlier by the sender to this conversation and not yet sent.",
    )


@strawberry.enum
class MessageEventKind(Enum):
    ADDED = "ADDED"
    EDITED = "EDITED"
    DELETED = "DELETED"


@strawberry.type
class MessageEvent:
    kind: MessageEventKind
    message: Message
    cursor: str = strawberry.field(
        description="Pass as `after` to messageEvents to resume after this event with nothing lost."
    )

    @classmethod
    def from_event(cls, event: dict[str, Any], ctx: Context) -> MessageEvent:
        """From a `message` event as `Publisher.message_event` publishes it (or as
        `resolvers.messages.events_since` replays it); resolving it runs no SQL for the
        message's own fields."""
        return cls(
            kind=MessageEventKind(event["kind"]),
            message=Message.from_snapshot(event["message"], ctx),
            cursor=messages_resolvers.encode_event_cursor(event["conversation_id"], event["pos"]),
        )


@strawberry.type
class TypingEvent:
    conversation_id: strawberry.ID
    user_id: strawberry.Private[int]
    is_typing: bool

    @strawberry.field
    async def user(self, info: strawberry.Info) -> UserType:
        return _user(await info.context.loader(conversations_resolvers.user_by_id).load(self.user_id))

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> TypingEvent:
        """From a `typing` event as `Publisher.typing` publishes it."""
        return cls(
            conversation_id=strawberry.ID(ids.encode("Conversation", event["conversation_id"])),
            user_id=event["user_id"], is_typing=event["is_typing"],
        )


@strawberry.type
class Query:
    @strawberry.field
    async def messages(
        self, info: strawberry.Info, conversation_id: strawberry.ID, first: int | None = strawberry.UNSET,
        after: str | None = strawberry.UNSET, last: int | None = strawberry.UNSET,
        before: str | None = strawberry.UNSET,
    ) -> MessageConnection:
        info.context.require_viewer()
        cid = ids.decode("Conversation", conversation_id, field="conversationId")
        return await message_connection(info.context, cid, first, after, last, before, root=True)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def send_message(self, info: strawberry.Info, input: SendMessageInput) -> Message:
        ctx = info.context
        ctx.require_viewer()
        cid = ids.decode("Conversation", input.conversation_id, field="conversationId")
        attachment_ids = ids.decode_many("Attachment", _given(input.attachment_ids), field="attachmentIds")
        snap = await messages_resolvers.send_message(
            ctx, cid, input.body, _given(input.client_message_id), attachment_ids
        )
        return Message.from_snapshot(snap, ctx)

    @strawberry.mutation(description="Sender only.")
    async def edit_message(self, info: strawberry.Info, id: strawberry.ID, body: str) -> Message:
        ctx = info.context
        ctx.require_viewer()
        snap = await messages_resolvers.edit_message(ctx, ids.decode("Message", id, field="id"), body)
        return Message.from_snapshot(snap, ctx)

    @strawberry.mutation(description="Sender, or a group moderator and above. Soft: the message stays as a tombstone.")
    async def delete_message(self, info: strawberry.Info, id: strawberry.ID) -> Message:
        ctx = info.context
        ctx.require_viewer()
        snap = await messages_resolvers.delete_message(ctx, ids.decode("Message", id, field="id"))
        return Message.from_snapshot(snap, ctx)
