"""Conversations: the Conversation type, the viewer's list, direct pairs, read states, typing.

A `Conversation` is only built for a conversation the viewer is in; its nested fields
load through per-request DataLoaders (membership, last message, unread count, read
states, members, title), so a page of conversations costs the same few statements
whether it holds 20 rows or 100.
"""
from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry.types.nodes import SelectedField

from db import conversations as conversations_db
from db import models
from errors import BadUserInput
from resolvers import conversations as conversations_resolvers
from resolvers import messages as messages_resolvers
from schema import ids
from schema.pagination import (
    Page,
    PageInfo,
    PageRequest,
    decode_cursor,
    encode_cursor,
    page_info,
    page_request,
    slice_page,
)

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


def later(awaitable: Awaitable[Any]) -> Any:
    """What a sync resolver returns when its value needs I/O after all (graphql-core
    awaits it): fields whose value is usually at hand skip an `async def`'s cost."""
    return awaitable


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
    """Built only for a conversation the viewer is in. `from_listed` carries what the
    list statement brought along (membership, title, unread count, last message), so
    those fields resolve without a loader round; otherwise they load on demand."""

    row: strawberry.Private[Any]  # an ORM row or a light row (db.rows)
    id: strawberry.ID
    kind: ConversationKind
    member_row: strawberry.Private[Any] = None  # the viewer's membership, when known
    title_value: strawberry.Private[str | None] = None
    unread_value: strawberry.Private[int | None] = None
    last_known: strawberry.Private[bool] = False  # last_message_row / last_sender_row are set
    last_message_row: strawberry.Private[Any] = None
    last_sender_row: strawberry.Private[Any] = None
    # members pages the list statement's companion fetched: (id, rows, after user) -> users
    member_pages: strawberry.Private[dict[tuple[int, int, int | None], list[Any]] | None] = None

    async def _member(self, info: strawberry.Info) -> Any:
        if self.member_row is not None:
            return self.member_row
        return await conversations_resolvers.require_member(info.context, self.row.id)

    @strawberry.field(description="The group's name, or the other member's display name for a direct conversation.")
    def title(self, info: strawberry.Info) -> str:
        if self.title_value is not None:
            return self.title_value
        return later(info.context.loader(conversations_resolvers.conversation_title).load(self.row.id))

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
    def members(
        self, info: strawberry.Info, first: int | None = 50, after: str | None = strawberry.UNSET
    ) -> UserConnectionType:
        if self.member_row is None:  # membership first: NOT_FOUND before any argument error
            return later(self._load_members(info, first, after))
        request, key = self._member_key(info, first, after)
        if self.member_pages is not None and key in self.member_pages:
            return _user_connection(slice_page(self.member_pages[key], request))
        return later(self._load_members(info, first, after))

    def _member_key(
        self, info: strawberry.Info, first: int | None, after: str | None
    ) -> tuple[PageRequest, tuple[int, int, int | None]]:
        after = after or None
        request = page_request(first=first, after=after, default=50, maximum=info.context.settings.max_page_size)
        after_user = int_cursor(after, "after") if after else None
        return request, (self.row.id, request.size + 1, after_user)

    async def _load_members(self, info: strawberry.Info, first: int | None, after: str | None) -> UserConnectionType:
        await self._member(info)
        request, key = self._member_key(info, first, after)
        rows = await info.context.loader(conversations_resolvers.member_users).load(key)
        return _user_connection(slice_page(rows, request))

    @strawberry.field
    def last_message(self, info: strawberry.Info) -> MessageType | None:
        if self.row.last_message_id is None:
            return None
        if self.last_known:
            if self.last_message_row is None:
                return None
            from schema.messages import Message

            return Message.from_row(self.last_message_row, self.last_sender_row)
        return later(self._load_last_message(info))

    async def _load_last_message(self, info: strawberry.Info) -> MessageType | None:
        await self._member(info)
        row = await info.context.loader(messages_resolvers.message_by_id).load(self.row.last_message_id)
        return _message(row) if row is not None else None

    @strawberry.field(description="Messages by others after the viewer's read position.")
    def unread_count(self, info: strawberry.Info) -> int:
        if self.unread_value is not None:
            return self.unread_value
        return later(self._load_unread_count(info))

    async def _load_unread_count(self, info: strawberry.Info) -> int:
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
    def from_row(cls, row: Any) -> Conversation:
        return cls(row=row, id=strawberry.ID(ids.encode("Conversation", row.id)), kind=ConversationKind(row.kind))

    @classmethod
    def from_listed(
        cls, item: conversations_db.ListedConversation, last_known: bool,
        member_pages: dict[tuple[int, int, int | None], list[Any]] | None = None,
    ) -> Conversation:
        """A row of the viewer's list with what the list statement brought along."""
        row = item.conversation
        return cls(
            row=row, id=strawberry.ID(ids.encode("Conversation", row.id)), kind=ConversationKind(row.kind),
            member_row=item.member, title_value=item.title, unread_value=item.unread, last_known=last_known,
            last_message_row=item.last_message, last_sender_row=item.last_sender, member_pages=member_pages,
        )


@strawberry.type
class ConversationEdge:
    cursor: str
    node: Conversation


@strawberry.type
class ConversationConnection:
    edges: list[ConversationEdge]
    page_info: PageInfo


def _member_cursor(user: Any) -> str:
    return encode_cursor(user.id)


def _user_connection(page: Page[Any]) -> UserConnection:
    from schema.users import UserConnection

    return UserConnection.from_page(page, _member_cursor)


def _conversation_cursor(row: Any) -> str:
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


def _node_fields(selected: list[Any]) -> dict[str, list[SelectedField]]:
    """The fields selected on `edges.node` of the connection by name (fragments
    included), so the list statement brings along only what the query asks."""
    names: dict[str, list[SelectedField]] = {}

    def walk(selections: list[Any], path: tuple[str, ...]) -> None:
        for selection in selections:
            if not isinstance(selection, SelectedField):  # fragment spread or inline fragment
                walk(selection.selections, path)
            elif not path:
                names.setdefault(selection.name, []).append(selection)
            elif selection.name == path[0]:
                walk(selection.selections, path[1:])

    for root in selected:
        walk(root.selections, ("edges", "node"))
    return names


def _members_window(ctx: Any, asked: dict[str, list[SelectedField]]) -> tuple[int, int | None] | None:
    """(rows to fetch, after user id) of the one `members(...)` page every listed row
    asks, to fetch it with the list; None when not asked, asked several ways, or with
    arguments the field itself must refuse."""
    selections = asked.get("members", [])
    if len({tuple(sorted(s.arguments.items())) for s in selections}) != 1:
        return None
    arguments = selections[0].arguments
    first, after = arguments.get("first", 50), arguments.get("after") or None
    try:
        request = page_request(first=first, after=after, default=50, maximum=ctx.settings.max_page_size)
        return request.size + 1, int_cursor(after, "after") if after else None
    except (BadUserInput, TypeError):
        return None


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
        asked = _node_fields(info.selected_fields)
        last_message = "lastMessage" in asked
        members = _members_window(ctx, asked)
        rows, member_pages = await conversations_resolvers.list_conversation_rows(
            ctx, request.size + 1, key, title="title" in asked, unread="unreadCount" in asked,
            last_message=last_message, members=members, members_for=request.size,
        )
        page = slice_page(rows, request)
        return ConversationConnection(
            edges=[
                ConversationEdge(
                    cursor=_conversation_cursor(r.conversation),
                    node=Conversation.from_listed(r, last_message, member_pages),
                )
                for r in page.rows
            ],
            page_info=page_info(page, lambda r: _conversation_cursor(r.conversation)),
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
