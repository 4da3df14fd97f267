"""Groups: creation, settings, membership and roles.

Each mutation: validate input (BAD_USER_INPUT), load the group with the viewer's
membership (NOT_FOUND when the viewer cannot see it), check the role table in
`auth.permissions` (FORBIDDEN), write in one transaction (notifications and audit rows
included), and announce with `tx.after_commit` only.

Choices where the issue left room:
- unknown user ids in createGroup/addGroupMembers are NOT_FOUND (nothing is written);
- a target user who is not a member (remove, set role, transfer) is NOT_FOUND;
- joinGroup by a member, transferGroupOwnership to oneself, setGroupMemberRole to the
  current role are no-ops that return the current state;
- a non-member acting on a PUBLIC group it can see gets FORBIDDEN, on a PRIVATE one
  NOT_FOUND (leaveGroup included).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from auth import audit, permissions
from auth.permissions import Action, Role
from db import conversations as conversations_db
from db import groups as groups_db
from db import models
from db.engine import Transaction, transaction
from errors import BadUserInput, Conflict, NotFound
from resolvers import conversations as conversations_resolvers
from resolvers import notifications as notifications_resolvers
from resolvers.context import Context
from resolvers.search_query import has_control

VISIBILITIES = ("PUBLIC", "PRIVATE")
KEEP: Any = object()  # updateGroup: field not given


# ---- loaders (batch functions for ctx.loader) ------------------------------------------
# Users come from the shared `resolvers.accounts.user_by_id`; the viewer's membership per
# group and member pages from `resolvers.conversations` (`viewer_group_membership`,
# `member_page`), so every domain shares one cache per request.
async def group_conversation(ctx: Context, group_ids: Sequence[int]) -> list[models.Conversation | None]:
    """Each live group's conversation."""
    async with ctx.db.session() as session:
        found = await groups_db.conversations_of(session, group_ids)
    for conversation in found.values():
        ctx.prime(conversations_resolvers.conversation_by_id, conversation.id, conversation)
    return [found.get(gid) for gid in group_ids]


# ---- queries ----------------------------------------------------------------------------
async def get_group(ctx: Context, group_id: int) -> models.Group:
    viewer = ctx.require_viewer()
    async with ctx.db.session() as session:
        view = await _access(session, viewer.user_id, group_id)
    _prime(ctx, view)
    return view.group


async def list_groups(
    ctx: Context, *, query: str | None, after: tuple[str, int] | None, limit: int
) -> list[models.Group]:
    """Public groups and the viewer's own, by name; `query` is a case-insensitive name prefix."""
    viewer = ctx.require_viewer()
    prefix = (query or "").strip()
    if len(prefix) > ctx.settings.max_search_query_length:
        raise BadUserInput(
            f"query must be at most {ctx.settings.max_search_query_length} characters", field="query"
        )
    if has_control(prefix):  # no group name holds one (see _clean_name)
        return []
    async with ctx.db.session() as session:
        return await groups_db.list_visible(session, viewer.user_id, prefix=prefix or None, after=after, limit=limit)


# ---- mutations --------------------------------------------------------------------------
async def create_group(
    ctx: Context, *, name: str, description: str | None, visibility: str, member_ids: Sequence[int]
) -> models.Group:
    viewer = ctx.require_viewer()
    name = _clean_name(ctx, name)
    description = _clean_description(ctx, description)
    _check_visibility(visibility)
    check_id_count(ctx, member_ids, field="memberIds")
    now = datetime.now(UTC)
    async with transaction(ctx.db) as tx:
        wanted = [uid for uid in dict.fromkeys(member_ids) if uid != viewer.user_id]
        await _require_users(tx.session, wanted)
        group, conversation = await groups_db.create(
            tx.session, name=name, description=description, visibility=visibility,
            owner_id=viewer.user_id, member_ids=wanted, now=now,
        )
        await _notify(ctx, tx, wanted, "ADDED_TO_GROUP", group_id=group.id, conversation_id=conversation.id)
        everyone = [viewer.user_id, *wanted]
        _publish(ctx, tx, "membership_changed", conversation.id, added=everyone, member_ids=everyone)
    ctx.prime(group_conversation, group.id, conversation)
    return group


async def update_group(
    ctx: Context, group_id: int, *, name: str | None = None, description: Any = KEEP, visibility: str | None = None
) -> models.Group:
    """`name`/`visibility` None: unchanged. `description` KEEP: unchanged; None or blank: cleared."""
    viewer = ctx.require_viewer()
    changes: dict[str, object] = {}
    if name is not None:
        changes["name"] = _clean_name(ctx, name)
    if description is not KEEP:
        changes["description"] = _clean_description(ctx, description)
    if visibility is not None:
        _check_visibility(visibility)
        changes["visibility"] = visibility
    async with transaction(ctx.db) as tx:
        view = await _access(tx.session, viewer.user_id, group_id, lock=True)
        permissions.require(_role(view), Action.UPDATE_GROUP)
        changes = {k: v for k, v in changes.items() if getattr(view.group, k) != v}
        if changes:
            await groups_db.update_fields(tx.session, view.group, changes)
            members = await conversations_db.member_ids(tx.session, view.conversation.id)
            _publish(ctx, tx, "conversations_updated", members, view.conversation.id)
    _prime(ctx, view)
    return view.group


async def delete_group(ctx: Context, group_id: int) -> bool:
    viewer = ctx.require_viewer()
    async with transaction(ctx.db) as tx:
        view = await _access(tx.session, viewer.user_id, group_id, lock=True)
        permissions.require(_role(view), Action.DELETE_GROUP)
        await _delete(ctx, tx, view)
    return True


async def add_members(ctx: Context, group_id: int, user_ids: Sequence[int]) -> models.Group:
    viewer = ctx.require_viewer()
    check_id_count(ctx, user_ids, field="userIds")
    now = datetime.now(UTC)
    async with transaction(ctx.db) as tx:
        view = await _access(tx.session, viewer.user_id, group_id, lock=True)
        permissions.require(_role(view), Action.ADD_MEMBERS)
        await _require_users(tx.session, user_ids)
        added = await groups_db.add_members(tx.session, view.group, view.conversation.id, user_ids, now)
        if added:
            conversation_id = view.conversation.id
            await _notify(ctx, tx, added, "ADDED_TO_GROUP", group_id=group_id, conversation_id=conversation_id)
            members = await conversations_db.member_ids(tx.session, conversation_id)
            _publish(ctx, tx, "membership_changed", conversation_id, added=added, member_ids=members)
    _prime(ctx, view)
    return view.group


async def remove_member(ctx: Context, group_id: int, user_id: int) -> models.Group:
    viewer = ctx.require_viewer()
    async with transaction(ctx.db) as tx:
        view = await _access(tx.session, viewer.user_id, group_id, lock=True)
        actor = permissions.require(_role(view), Action.REMOVE_MEMBER)
        target = await _target(tx, view, user_id)
        permissions.require_remove(actor, _target_role(target))
        await groups_db.remove_member(tx.session, view.group, target)
        pos = await _removal_position(tx, view)
        await _notify(ctx, tx, [user_id], "REMOVED_FROM_GROUP", group_id=group_id)
        members = await conversations_db.member_ids(tx.session, view.conversation.id)
        _publish(ctx, tx, "membership_changed", view.conversation.id, removed=[user_id], member_ids=members, pos=pos)
    _prime(ctx, view)
    return view.group


async def set_member_role(ctx: Context, group_id: int, user_id: int, role: str) -> models.ConversationMember:
    viewer = ctx.require_viewer()
    new_role = _check_role(role)
    async with transaction(ctx.db) as tx:
        view = await _access(tx.session, viewer.user_id, group_id, lock=True)
        actor = permissions.require(_role(view), Action.SET_MEMBER_ROLE)
        target = await _target(tx, view, user_id)
        old_role = _target_role(target)
        permissions.require_set_role(actor, old_role, new_role)
        if old_role is not new_role:
            await groups_db.set_role(tx.session, target, new_role.value)
            await _notify(
                ctx, tx, [user_id], "ROLE_CHANGED", group_id=group_id, conversation_id=view.conversation.id
            )
            await _audit(
                ctx, tx, audit.ROLE_CHANGED,
                {"group": group_id, "user": user_id, "from": old_role.value, "to": new_role.value},
            )
    return target


async def transfer_ownership(ctx: Context, group_id: int, user_id: int) -> models.Group:
    """The target (a member) becomes OWNER, the old owner ADMIN."""
    viewer = ctx.require_viewer()
    async with transaction(ctx.db) as tx:
        view = await _access(tx.session, viewer.user_id, group_id, lock=True)
        permissions.require(_role(view), Action.TRANSFER_OWNERSHIP)
        target = await _target(tx, view, user_id)
        if user_id != viewer.user_id:
            assert view.membership is not None
            old_role = target.role
            await groups_db.set_role(tx.session, view.membership, Role.ADMIN.value)
            await groups_db.set_role(tx.session, target, Role.OWNER.value)
            await groups_db.set_owner(tx.session, view.group, user_id)
            await _notify(
                ctx, tx, [user_id], "ROLE_CHANGED", group_id=group_id, conversation_id=view.conversation.id
            )
            await _audit(
                ctx, tx, audit.ROLE_CHANGED,
                {"group": group_id, "user": user_id, "from": old_role, "to": Role.OWNER.value, "transfer": True},
            )
            members = await conversations_db.member_ids(tx.session, view.conversation.id)
            _publish(ctx, tx, "conversations_updated", members, view.conversation.id)
    _prime(ctx, view)
    return view.group


async def join_group(ctx: Context, group_id: int) -> models.Group:
    """PUBLIC groups only (a private one the viewer is not in is NOT_FOUND); idempotent."""
    viewer = ctx.require_viewer()
    now = datetime.now(UTC)
    async with transaction(ctx.db) as tx:
        view = await _access(tx.session, viewer.user_id, group_id, lock=True)
        if view.membership is None:
            conversation_id = view.conversation.id
            await groups_db.add_members(tx.session, view.group, conversation_id, [viewer.user_id], now)
            view.membership = await groups_db.membership(tx.session, conversation_id, viewer.user_id)
            members = await conversations_db.member_ids(tx.session, conversation_id)
            _publish(ctx, tx, "membership_changed", conversation_id, added=[viewer.user_id], member_ids=members)
    _prime(ctx, view)
    return view.group


async def leave_group(ctx: Context, group_id: int) -> bool:
    """The owner gets CONFLICT while others remain; the owner alone deletes the group."""
    viewer = ctx.require_viewer()
    async with transaction(ctx.db) as tx:
        view = await _access(tx.session, viewer.user_id, group_id, lock=True)
        role = permissions.require(_role(view), Action.LEAVE)
        if permissions.leave_blocked(role, view.group.member_count):
            raise Conflict("The owner cannot leave while other members remain: transfer ownership first")
        assert view.membership is not None
        if role is Role.OWNER:
            await _delete(ctx, tx, view)
            return True
        await groups_db.remove_member(tx.session, view.group, view.membership)
        pos = await _removal_position(tx, view)
        members = await conversations_db.member_ids(tx.session, view.conversation.id)
        _publish(
            ctx, tx, "membership_changed", view.conversation.id, removed=[viewer.user_id], member_ids=members, pos=pos
        )
    return True


# ---- helpers ------------------------------------------------------------------------------
async def _access(session: Any, user_id: int, group_id: int, *, lock: bool = False) -> groups_db.GroupView:
    view = await groups_db.load_for_user(session, group_id, user_id, lock=lock)
    if view is None or not permissions.can_see(view.group.visibility, _role(view)):
        raise NotFound("Group not found")
    return view


def _role(view: groups_db.GroupView) -> Role | None:
    return permissions.as_role(view.membership.role) if view.membership is not None else None


async def _target(tx: Transaction, view: groups_db.GroupView, user_id: int) -> models.ConversationMember:
    target = await groups_db.membership(tx.session, view.conversation.id, user_id)
    if target is None or target.role is None:
        raise NotFound("That user is not a member of this group")
    return target


def _target_role(member: models.ConversationMember) -> Role:
    role = permissions.as_role(member.role)
    assert role is not None  # _target only returns group members
    return role


async def _delete(ctx: Context, tx: Transaction, view: groups_db.GroupView) -> None:
    """Soft-delete group and conversation; every member loses the conversation at once."""
    members = await conversations_db.member_ids(tx.session, view.conversation.id)
    pos = await _removal_position(tx, view)
    await groups_db.soft_delete(tx.session, view.group, view.conversation, datetime.now(UTC))
    _publish(ctx, tx, "membership_changed", view.conversation.id, removed=members, pos=pos)


async def _removal_position(tx: Transaction, view: groups_db.GroupView) -> int:
    """A removal takes the conversation's next event position (under its row lock, as
    messages do), so every instance orders it with the messages: one committed after
    it has a higher position and is never delivered to the removed member."""
    _, pos = await conversations_db.advance(tx.session, view.conversation, new_message=False, now=datetime.now(UTC))
    return pos


def _prime(ctx: Context, view: groups_db.GroupView) -> None:
    ctx.prime(conversations_resolvers.viewer_group_membership, view.group.id, view.membership)
    ctx.prime(group_conversation, view.group.id, view.conversation)


def _clean_name(ctx: Context, name: str) -> str:
    name = name.strip()
    limit = ctx.settings.max_group_name_length
    if not 1 <= len(name) <= limit:
        raise BadUserInput(f"name must be 1 to {limit} characters", field="name")
    if has_control(name):
        raise BadUserInput("name must not contain control characters", field="name")
    return name


def _clean_description(ctx: Context, description: str | None) -> str | None:
    description = (description or "").strip()
    limit = ctx.settings.max_group_description_length
    if len(description) > limit:
        raise BadUserInput(f"description must be at most {limit} characters", field="description")
    if has_control(description.replace("\n", "").replace("\t", "").replace("\r", "")):
        raise BadUserInput("description must not contain control characters other than newlines and tabs",
                           field="description")
    return description or None


def _check_visibility(visibility: str) -> None:
    if visibility not in VISIBILITIES:
        raise BadUserInput("visibility must be PUBLIC or PRIVATE", field="visibility")


def _check_role(role: str) -> Role:
    if role == Role.OWNER.value:
        raise BadUserInput("Use transferGroupOwnership to make someone the owner", field="role")
    try:
        return Role(role)
    except ValueError:
        raise BadUserInput("Unknown role", field="role") from None


def check_id_count(ctx: Context, user_ids: Sequence[object], *, field: str) -> None:
    """createGroup/addGroupMembers take at most settings.max_group_member_ids ids."""
    limit = ctx.settings.max_group_member_ids
    if len(user_ids) > limit:
        raise BadUserInput(f"At most {limit} user ids per request", field=field)


async def _require_users(session: Any, user_ids: Sequence[int]) -> None:
    missing = set(user_ids) - await groups_db.existing_user_ids(session, user_ids)
    if missing:
        raise NotFound("User not found")


def _publish(ctx: Context, tx: Transaction, event: str, *args: Any, **kwargs: Any) -> None:
    """Register `Publisher.<event>(*args, **kwargs)` to run after COMMIT."""
    tx.after_commit(getattr(conversations_resolvers.events(ctx), event), *args, **kwargs)


async def _notify(
    ctx: Context, tx: Transaction, user_ids: Sequence[int], kind: str, *, group_id: int,
    conversation_id: int | None = None,
) -> None:
    viewer = ctx.require_viewer()
    await notifications_resolvers.notify_many(
        tx, ctx, user_ids, kind, viewer.user_id, conversation_id=conversation_id, group_id=group_id
    )


async def _audit(ctx: Context, tx: Transaction, kind: str, detail: dict[str, Any]) -> None:
    viewer = ctx.require_viewer()
    row = await audit.record(tx.session, kind, viewer.user_id, ctx.ip_address, json.dumps(detail, sort_keys=True))
    _publish(ctx, tx, "audit", row.id)
