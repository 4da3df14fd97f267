"""Notifications: the viewer's list (newest first), unread count, mark read, clear.

What a notification points at is shown only while the viewer may still see it: its
conversation and message while the viewer is a member of that conversation, its group
while the group is visible (public, or the viewer is in it); otherwise null.
"""
from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry

from auth import permissions
from db import models
from errors import BadUserInput, NotFound
from resolvers import conversations as conversations_resolvers
from resolvers import messages as messages_resolvers
from resolvers import notifications as notifications_resolvers
from schema import ids
from schema.conversations import int_cursor
from schema.pagination import PageInfo, encode_cursor, page_info, page_request, slice_page

if TYPE_CHECKING:
    from schema.conversations import Conversation
    from schema.groups import Group
    from schema.messages import Message
    from schema.users import User

UserType = Annotated["User", strawberry.lazy("schema.users")]
ConversationType = Annotated["Conversation", strawberry.lazy("schema.conversations")]
MessageType = Annotated["Message", strawberry.lazy("schema.messages")]
GroupType = Annotated["Group", strawberry.lazy("schema.groups")]


@strawberry.enum
class NotificationKind(Enum):
    DIRECT_MESSAGE = "DIRECT_MESSAGE"
    MENTION = "MENTION"
    ADDED_TO_GROUP = "ADDED_TO_GROUP"
    REMOVED_FROM_GROUP = "REMOVED_FROM_GROUP"
    ROLE_CHANGED = "ROLE_CHANGED"


async def _visible_conversation(info: strawberry.Info, conversation_id: int | None) -> models.Conversation | None:
    if conversation_id is None:
        return None
    loader = info.context.loader
    if await loader(conversations_resolvers.viewer_membership).load(conversation_id) is None:
        return None
    row = await loader(conversations_resolvers.conversation_by_id).load(conversation_id)
    return row if row is not None and row.deleted_at is None else None


@strawberry.type
class Notification:
    row: strawberry.Private[models.Notification]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(ids.encode("Notification", self.row.id))

    @strawberry.field
    def kind(self) -> NotificationKind:
        return NotificationKind(self.row.kind)

    @strawberry.field
    def created_at(self) -> datetime:
        return self.row.created_at

    @strawberry.field
    def read_at(self) -> datetime | None:
        return self.row.read_at

    @strawberry.field
    async def actor(self, info: strawberry.Info) -> UserType | None:
        if self.row.actor_id is None:
            return None
        row = await info.context.loader(conversations_resolvers.user_by_id).load(self.row.actor_id)
        if row is None:
            return None
        from schema.users import User

        return User.from_row(row)

    @strawberry.field
    async def conversation(self, info: strawberry.Info) -> ConversationType | None:
        row = await _visible_conversation(info, self.row.conversation_id)
        if row is None:
            return None
        from schema.conversations import Conversation

        return Conversation.from_row(row)

    @strawberry.field
    async def message(self, info: strawberry.Info) -> MessageType | None:
        if self.row.message_id is None:
            return None
        row = await info.context.loader(messages_resolvers.message_by_id).load(self.row.message_id)
        if row is None or await _visible_conversation(info, row.conversation_id) is None:
            return None
        from schema.messages import Message

        return Message.from_row(row)

    @strawberry.field
    async def group(self, info: strawberry.Info) -> GroupType | None:
        if self.row.group_id is None:
            return None
        loader = info.context.loader
        row = await loader(conversations_resolvers.group_by_id).load(self.row.group_id)
        if row is None or row.deleted_at is not None:
            return None
        member = await loader(conversations_resolvers.viewer_group_membership).load(row.id)
        if not permissions.can_see(row.visibility, permissions.as_role(member.role) if member else None):
            return None
        from schema.groups import Group

        return Group.from_row(row)

    @classmethod
    def from_row(cls, row: models.Notification) -> Notification:
        return cls(row=row)


@strawberry.type
class NotificationEdge:
    cursor: str
    node: Notification


@strawberry.type
class NotificationConnection:
    edges: list[NotificationEdge]
    page_info: PageInfo


def _cursor(row: models.Notification) -> str:
    return encode_cursor(row.id)


@strawberry.type
class Query:
    @strawberry.field
    async def notifications(
        self, info: strawberry.Info, unread_only: bool | None = False, first: int | None = 20,
        after: str | None = strawberry.UNSET,
    ) -> NotificationConnection:
        ctx = info.context
        ctx.require_viewer()
        after = after or None
        request = page_request(first=first, after=after, default=20, maximum=ctx.settings.max_page_size)
        rows = await notifications_resolvers.list_notifications(
            ctx, unread_only=bool(unread_only), limit=request.size + 1,
            before_id=int_cursor(after, "after") if after else None,
        )
        page = slice_page(rows, request)
        return NotificationConnection(
            edges=[NotificationEdge(cursor=_cursor(row), node=Notification.from_row(row)) for row in page.rows],
            page_info=page_info(page, _cursor),
        )

    @strawberry.field
    async def unread_notification_count(self, info: strawberry.Info) -> int:
        return await notifications_resolvers.unread_notification_count(info.context)


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Without ids, all of the viewer's notifications. Returns how many changed. Ids that are not "
        "the viewer's unread notifications change nothing (no error)."
    )
    async def mark_notifications_read(
        self, info: strawberry.Info, ids: list[strawberry.ID] | None = strawberry.UNSET
    ) -> int:
        ctx = info.context
        ctx.require_viewer()
        wanted = None
        if ids is not strawberry.UNSET and ids is not None:
            if len(ids) > ctx.settings.max_page_size:
                raise BadUserInput(f"At most {ctx.settings.max_page_size} ids at once", field="ids")
            wanted = _decode_ids(ids)
        return await notifications_resolvers.mark_notifications_read(ctx, wanted)

    @strawberry.mutation
    async def clear_notifications(self, info: strawberry.Info) -> int:
        info.context.require_viewer()
        return await notifications_resolvers.clear_notifications(info.context)


def _decode_ids(values: list[strawberry.ID]) -> list[int]:
    """Malformed ids are BAD_USER_INPUT; ids of another type or of no row are skipped
    (they cannot be the viewer's notifications)."""
    out: list[int] = []
    for value in values:
        try:
            out.append(ids.decode("Notification", value, field="ids"))
        except NotFound:
            continue
    return out
