"""Conversations: the Conversation type, the viewer's list, direct pairs, read states, typing.

A `Conversation` is only built for a conversation the viewer is in; its nested fields
load through per-request DataLoaders (membership, last message, unread count, read
states, members, title), so a page of conversations costs the same few statements
whether it holds 20 rows or 100.
"""
from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from db import models
from errors import BadUserInput
from resolvers import conversations as conversations_resolvers
from resolvers import messages as messages_resolvers
from schema import ids
from schema.pagination import PageInfo, decode_cursor, encode_cursor, page_info, page_request, slice_page

if TYPE_CHECKING:
    from schema.groups import Group
    from schema.messages import Message, MessageConnection
    from schema.users import User, UserConnection

UserType = Annotated["User", strawberry.lazy("schema.users")]
UserConnectionType = Annotated["UserConnection", strawberry.lazy("schema.users")]
MessageType = Annotated["Message", strawberry.lazy("schema.messages")]
MessageConnectionType = Annotated["MessageConnection", strawberry.lazy("schema.messages")]
GroupType = Annotated["Group", strawberry.lazy("schema.groups")]


def int_cursor(cursor: str, field: str) -> int:
    (value,) = decode_cursor(cursor, 1, field=field)
    if not isinstance(value, int) or value < 0:
        raise BadUserInput("Malformed cursor", field=field)
    return value


def _message(row: models.Message) -> Message:
    from schema.messages import Message

    return Message.from_row(row)


@strawberry.enum
class ConversationKind(Enum):
    DIRECT = "DIRECT"
    GROUP = "GROUP"


@strawberry.type
class ReadState:
    row: strawberry.Private[models.ConversationMember]
    user_row: strawberry.Private[models.User | None] = None

    @strawberry.field
    async def user(self, info: strawberry.Info) -> UserType:
        from schema.users import User

        row = self.user_row or await info.context.loader(conversations_resolvers.user_by_id).load(self.row.user_id)
        return User.from_row(row)

    @strawberry.field
    async def last_read_message(self, info: strawberry.Info) -> MessageType | None:
        if self.row.last_read_message_id is None:
            return None
        row = await info.context.loader(messages_resolvers.message_by_id).load(self.row.last_read_message_id)
        return _message(row) if row is not None else None

    @strawberry.field
    def read_at(self) -> datetime | None:
        return self.row.read_at

    @classmethod
    def from_row(cls, row: models.ConversationMember, user: models.User | None = None) -> ReadState:
        return cls(row=row, user_row=user)

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> ReadState:
        """From a `read_state` event as `Publisher.read_state` publishes it."""
        read_at = event.get("read_at")
        return cls(
            row=models.ConversationMember(
                conversation_id=event["conversation_id"], user_id=event["user_id"],
                last_read_seq=event["last_read_seq"], last_read_message_id=event["last_read_message_id"],
                read_at=datetime.fromisoformat(read_at) if read_at else None,
            )
        )


@strawberry.type
class Conversation:
    row: strawberry.Private[models.Conversation]

    async def _member(self, info: strawberry.Info) -> models.ConversationMember:
        return await conversations_resolvers.require_member(info.context, self.row.id)

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(ids.encode("Conversation", self.row.id))

    @strawberry.field
    def kind(self) -> ConversationKind:
        return ConversationKind(self.row.kind)

    @strawberry.field(description="The group's name, or the other member's display name for a direct conversation.")
    async def title(self, info: strawberry.Info) -> str:
        loader = info.context.loader
        if self.row.group_id is not None:
            group = await loader(conversations_resolvers.group_by_id).load(self.row.group_id)
            return group.name if group is not None else ""
        peer = await loader(conversations_resolvers.direct_peer).load(self.row.id)
        return peer.display_name if peer is not None else ""

    @strawberry.field(description="Null for a direct conversation.")
    async def group(self, info: strawberry.Info) -> GroupType | None:
        if self.row.group_id is None:
            return None
        row = await info.context.loader(conversations_resolvers.group_by_id).load(self.row.group_id)
        if row is None or row.deleted_at is not None:
            return None
        from schema.groups import Group

        return Group.from_row(row)

    @strawberry.field
    async def members(
        self, info: strawberry.Info, first: int | None = 50, after: str | None = strawberry.UNSET
    ) -> UserConnectionType:
        from schema.users import UserConnection

        ctx = info.context
        await self._member(info)
        after = after or None
        request = page_request(first=first, after=after, default=50, maximum=ctx.settings.max_page_size)
        after_user = int_cursor(after, "after") if after else None
        rows = await ctx.loader(conversations_resolvers.member_page).load((self.row.id, request.size + 1, after_user))
        page = slice_page([user for _, user in rows], request)
        return UserConnection.from_page(page, lambda user: encode_cursor(user.id))

    @strawberry.field
    async def last_message(self, info: strawberry.Info) -> MessageType | None:
        if self.row.last_message_id is None:
            return None
        await self._member(info)
        row = await info.context.loader(messages_resolvers.message_by_id).load(self.row.last_message_id)
        return _message(row) if row is not None else None

    @strawberry.field(description="Messages by others after the viewer's read position.")
    async def unread_count(self, info: strawberry.Info) -> int:
        await self._member(info)
        return int(await info.context.loader(conversations_resolvers.unread_count).load(self.row.id))

    @strawberry.field(description="Where members have read up to: the 100 most recent readers.")
    async def read_states(self, info: strawberry.Info) -> list[ReadState]:
        await self._member(info)
        rows = await info.context.loader(conversations_resolvers.read_states).load(self.row.id)
        return [ReadState.from_row(member, user) for member, user in rows]

    @strawberry.field(
        description="Position of the latest message event: pass as `after` to messageEvents right after loading "
        "messages, to miss nothing in between."
    )
    async def event_cursor(self, info: strawberry.Info) -> str:
        await self._member(info)
        return messages_resolvers.encode_event_cursor(self.row.id, self.row.last_event_pos)

    @strawberry.field
    async def messages(
        self, info: strawberry.Info, first: int | None = strawberry.UNSET, after: str | None = strawberry.UNSET,
        last: int | None = strawberry.UNSET, before: str | None = strawberry.UNSET,
    ) -> MessageConnectionType:
        from schema.messages import message_connection

        await self._member(info)
        return await message_connection(info.context, self.row.id, first, after, last, before)

    @strawberry.field
    def created_at(self) -> datetime:
        return self.row.created_at

    @strawberry.field(description="Time of the latest message, or of creation.")
    def updated_at(self) -> datetime:
        return self.row.updated_at

    @classmethod
    def from_row(cls, row: models.Conversation) -> Conversation:
        return cls(row=row)


@strawberry.type
class ConversationEdge:
    cursor: str
    node: Conversation


@strawberry.type
class ConversationConnection:
    edges: list[ConversationEdge]
    page_info: PageInfo


def _conversation_cursor(row: models.Conversation) -> str:
    return encode_cursor(row.updated_at.isoformat(), row.id)


def _decode_conversation_cursor(cursor: str) -> tuple[datetime, int]:
    at, conversation_id = decode_cursor(cursor, 2, field="after")
    try:
        when = datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or not isinstance(conversation_id, int):
        raise BadUserInput("Malformed cursor", field="after")
    return when, conversation_id


@strawberry.type
class Query:
    @strawberry.field(description="The viewer's conversations, most recently active first.")
    async def conversations(
        self, info: strawberry.Info, first: int | None = 20, after: str | None = strawberry.UNSET
    ) -> ConversationConnection:
        ctx = info.context
        ctx.require_viewer()
        after = after or None
        request = page_request(first=first, after=after, default=20, maximum=ctx.settings.max_page_size)
        key = _decode_conversation_cursor(after) if after else None
        rows = await conversations_resolvers.list_conversations(ctx, request.size + 1, key)
        page = slice_page(rows, request)
        return ConversationConnection(
            edges=[ConversationEdge(cursor=_conversation_cursor(r), node=Conversation.from_row(r)) for r in page.rows],
            page_info=page_info(page, _conversation_cursor),
        )

    @strawberry.field
    async def conversation(self, info: strawberry.Info, id: strawberry.ID) -> Conversation | None:
        conversation_id = ids.decode("Conversation", id, field="id")
        return Conversation.from_row(await conversations_resolvers.get_conversation(info.context, conversation_id))


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Returns the existing direct conversation with that user, or creates it.")
    async def start_direct_conversation(self, info: strawberry.Info, user_id: strawberry.ID) -> Conversation:
        ctx = info.context
        ctx.require_viewer()
        other = ids.decode("User", user_id, field="userId")
        return Conversation.from_row(await conversations_resolvers.start_direct_conversation(ctx, other))

    @strawberry.mutation(
        description="Hides a direct conversation from the viewer's list until a new message arrives; for a group "
        "conversation, use leaveGroup."
    )
    async def delete_conversation(self, info: strawberry.Info, id: strawberry.ID) -> bool:
        info.context.require_viewer()
        conversation_id = ids.decode("Conversation", id, field="id")
        return await conversations_resolvers.delete_conversation(info.context, conversation_id)

    @strawberry.mutation(
        description="Moves the viewer's read position forward (never back); without upToMessageId, to the latest "
        "message."
    )
    async def mark_conversation_read(
        self, info: strawberry.Info, conversation_id: strawberry.ID,
        up_to_message_id: strawberry.ID | None = strawberry.UNSET,
    ) -> Conversation:
        info.context.require_viewer()
        cid = ids.decode("Conversation", conversation_id, field="conversationId")
        mid = ids.decode("Message", up_to_message_id, field="upToMessageId") if up_to_message_id else None
        return Conversation.from_row(await conversations_resolvers.mark_conversation_read(info.context, cid, mid))

    @strawberry.mutation(description="Typing expires by itself after a few seconds unless repeated.")
    async def set_typing(self, info: strawberry.Info, conversation_id: strawberry.ID, is_typing: bool) -> bool:
        info.context.require_viewer()
        cid = ids.decode("Conversation", conversation_id, field="conversationId")
        return await conversations_resolvers.set_typing(info.context, cid, is_typing)
