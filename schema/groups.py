"""Groups: types, the groups/group queries and the membership mutations.

A `Group` is only ever built for a group the viewer may see; its nested fields load
through per-request DataLoaders (owner, viewerRole, conversation, members), so a page
of groups costs a fixed number of statements whatever its size.
"""
from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry

from db import models
from errors import BadUserInput
from resolvers import accounts as accounts_resolvers
from resolvers import conversations as conversations_resolvers
from resolvers import groups as groups_resolvers
from schema import ids
from schema.pagination import PageInfo, decode_cursor, encode_cursor, page_info, page_request, slice_page

if TYPE_CHECKING:
    from schema.conversations import Conversation
    from schema.users import User

UserType = Annotated["User", strawberry.lazy("schema.users")]
ConversationType = Annotated["Conversation", strawberry.lazy("schema.conversations")]


@strawberry.enum
class GroupRole(Enum):
    OWNER = "OWNER"
    ADMIN = "ADMIN"
    MODERATOR = "MODERATOR"
    MEMBER = "MEMBER"


@strawberry.enum
class GroupVisibility(Enum):
    PUBLIC = "PUBLIC"
    PRIVATE = "PRIVATE"


def _user(row: models.User) -> User:
    from schema.users import User

    return User.from_row(row)


@strawberry.type
class GroupMember:
    row: strawberry.Private[models.ConversationMember]
    user_row: strawberry.Private[models.User | None] = None

    @strawberry.field
    async def user(self, info: strawberry.Info) -> UserType:
        row = self.user_row or await info.context.loader(accounts_resolvers.user_by_id).load(self.row.user_id)
        return _user(row)

    @strawberry.field
    def role(self) -> GroupRole:
        return GroupRole(self.row.role)

    @strawberry.field
    def joined_at(self) -> datetime:
        return self.row.joined_at

    @classmethod
    def from_row(cls, row: models.ConversationMember, user: models.User | None = None) -> GroupMember:
        return cls(row=row, user_row=user)


@strawberry.type
class GroupMemberEdge:
    cursor: str
    node: GroupMember


@strawberry.type
class GroupMemberConnection:
    edges: list[GroupMemberEdge]
    page_info: PageInfo


@strawberry.type
class Group:
    row: strawberry.Private[models.Group]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(ids.encode("Group", self.row.id))

    @strawberry.field
    def name(self) -> str:
        return self.row.name

    @strawberry.field
    def description(self) -> str | None:
        return self.row.description

    @strawberry.field
    def visibility(self) -> GroupVisibility:
        return GroupVisibility(self.row.visibility)

    @strawberry.field
    async def owner(self, info: strawberry.Info) -> UserType:
        return _user(await info.context.loader(accounts_resolvers.user_by_id).load(self.row.owner_id))

    @strawberry.field
    def member_count(self) -> int:
        return self.row.member_count

    @strawberry.field
    async def members(
        self, info: strawberry.Info, first: int | None = 50, after: str | None = strawberry.UNSET
    ) -> GroupMemberConnection:
        ctx = info.context
        after = after or None
        request = page_request(first=first, after=after, default=50, maximum=ctx.settings.max_page_size)
        after_user = int(decode_cursor(after, 1, field="after")[0]) if after else None
        conversation = await ctx.loader(groups_resolvers.group_conversation).load(self.row.id)
        rows = []
        if conversation is not None:
            key = (conversation.id, request.size + 1, after_user)
            rows = await ctx.loader(conversations_resolvers.member_page).load(key)
        page = slice_page(rows, request)
        edges = [
            GroupMemberEdge(cursor=encode_cursor(member.user_id), node=GroupMember.from_row(member, user))
            for member, user in page.rows
        ]
        return GroupMemberConnection(edges=edges, page_info=page_info(page, lambda r: encode_cursor(r[0].user_id)))

    @strawberry.field(description="Null when the viewer is not a member.")
    async def viewer_role(self, info: strawberry.Info) -> GroupRole | None:
        member = await info.context.loader(conversations_resolvers.viewer_group_membership).load(self.row.id)
        return GroupRole(member.role) if member is not None and member.role else None

    @strawberry.field(description="The group's conversation; null when the viewer is not a member.")
    async def conversation(self, info: strawberry.Info) -> ConversationType | None:
        ctx = info.context
        member = await ctx.loader(conversations_resolvers.viewer_group_membership).load(self.row.id)
        if member is None:
            return None
        row = await ctx.loader(groups_resolvers.group_conversation).load(self.row.id)
        if row is None:
            return None
        from schema.conversations import Conversation

        return Conversation.from_row(row)

    @strawberry.field
    def created_at(self) -> datetime:
        return self.row.created_at

    @classmethod
    def from_row(cls, row: models.Group) -> Group:
        return cls(row=row)


@strawberry.type
class GroupEdge:
    cursor: str
    node: Group


@strawberry.type
class GroupConnection:
    edges: list[GroupEdge]
    page_info: PageInfo


@strawberry.input
class CreateGroupInput:
    name: str
    description: str | None = strawberry.UNSET
    visibility: GroupVisibility | None = GroupVisibility.PRIVATE
    member_ids: list[strawberry.ID] | None = strawberry.UNSET


@strawberry.input
class UpdateGroupInput:
    """Omitted fields stay as they are; `description: null` (or blank) clears it."""

    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    visibility: GroupVisibility | None = strawberry.UNSET


def _group_cursor(row: models.Group) -> str:
    return encode_cursor(row.name_key, row.id)


def _user_ids(info: strawberry.Info, values: list[strawberry.ID] | None, field: str) -> list[int]:
    groups_resolvers.check_id_count(info.context, values or [], field=field)
    return ids.decode_many("User", list(values or []), field=field)


@strawberry.type
class Query:
    @strawberry.field(description="Public groups and the viewer's own groups.")
    async def groups(
        self, info: strawberry.Info, query: str | None = strawberry.UNSET, first: int | None = 20,
        after: str | None = strawberry.UNSET,
    ) -> GroupConnection:
        ctx = info.context
        query, after = query or None, after or None
        ctx.require_viewer()
        request = page_request(first=first, after=after, default=20, maximum=ctx.settings.max_page_size)
        key = None
        if after:
            name_key, group_id = decode_cursor(after, 2, field="after")
            if not isinstance(name_key, str) or not isinstance(group_id, int):
                raise BadUserInput("Malformed cursor", field="after")
            key = (name_key, group_id)
        rows = await groups_resolvers.list_groups(ctx, query=query, after=key, limit=request.size + 1)
        page = slice_page(rows, request)
        return GroupConnection(
            edges=[GroupEdge(cursor=_group_cursor(row), node=Group.from_row(row)) for row in page.rows],
            page_info=page_info(page, _group_cursor),
        )

    @strawberry.field
    async def group(self, info: strawberry.Info, id: strawberry.ID) -> Group | None:
        row = await groups_resolvers.get_group(info.context, ids.decode("Group", id, field="id"))
        return Group.from_row(row)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_group(self, info: strawberry.Info, input: CreateGroupInput) -> Group:
        member_ids = _user_ids(info, input.member_ids, "memberIds")
        visibility = (input.visibility or GroupVisibility.PRIVATE).value
        row = await groups_resolvers.create_group(
            info.context, name=input.name, description=input.description or None, visibility=visibility,
            member_ids=member_ids,
        )
        return Group.from_row(row)

    @strawberry.mutation
    async def update_group(self, info: strawberry.Info, id: strawberry.ID, input: UpdateGroupInput) -> Group:
        group_id = ids.decode("Group", id, field="id")
        description = groups_resolvers.KEEP if input.description is strawberry.UNSET else input.description
        name = None if input.name is strawberry.UNSET else input.name
        visibility = None if input.visibility in (strawberry.UNSET, None) else input.visibility.value
        row = await groups_resolvers.update_group(
            info.context, group_id, name=name, description=description, visibility=visibility
        )
        return Group.from_row(row)

    @strawberry.mutation(description="Owner only.")
    async def delete_group(self, info: strawberry.Info, id: strawberry.ID) -> bool:
        return await groups_resolvers.delete_group(info.context, ids.decode("Group", id, field="id"))

    @strawberry.mutation(description="Owner and admins.")
    async def add_group_members(
        self, info: strawberry.Info, group_id: strawberry.ID, user_ids: list[strawberry.ID]
    ) -> Group:
        group = ids.decode("Group", group_id, field="groupId")
        users = _user_ids(info, user_ids, "userIds")
        return Group.from_row(await groups_resolvers.add_members(info.context, group, users))

    @strawberry.mutation(
        description="A member of lower rank: owner removes anyone, admins remove moderators and members, "
        "moderators remove members."
    )
    async def remove_group_member(
        self, info: strawberry.Info, group_id: strawberry.ID, user_id: strawberry.ID
    ) -> Group:
        group = ids.decode("Group", group_id, field="groupId")
        user = ids.decode("User", user_id, field="userId")
        return Group.from_row(await groups_resolvers.remove_member(info.context, group, user))

    @strawberry.mutation(
        description="Owner sets any role below owner; admins set moderator or member on those below them."
    )
    async def set_group_member_role(
        self, info: strawberry.Info, group_id: strawberry.ID, user_id: strawberry.ID, role: GroupRole
    ) -> GroupMember:
        group = ids.decode("Group", group_id, field="groupId")
        user = ids.decode("User", user_id, field="userId")
        row = await groups_resolvers.set_member_role(info.context, group, user, role.value)
        return GroupMember.from_row(row)

    @strawberry.mutation(description="Owner only; the old owner becomes an admin.")
    async def transfer_group_ownership(
        self, info: strawberry.Info, group_id: strawberry.ID, user_id: strawberry.ID
    ) -> Group:
        group = ids.decode("Group", group_id, field="groupId")
        user = ids.decode("User", user_id, field="userId")
        return Group.from_row(await groups_resolvers.transfer_ownership(info.context, group, user))

    @strawberry.mutation(description="Public groups only: a private group the viewer is not in is NOT_FOUND.")
    async def join_group(self, info: strawberry.Info, group_id: strawberry.ID) -> Group:
        group = ids.decode("Group", group_id, field="groupId")
        return Group.from_row(await groups_resolvers.join_group(info.context, group))

    @strawberry.mutation(description="The owner gets CONFLICT while other members remain: transfer ownership first.")
    async def leave_group(self, info: strawberry.Info, group_id: strawberry.ID) -> bool:
        return await groups_resolvers.leave_group(info.context, ids.decode("Group", group_id, field="groupId"))
