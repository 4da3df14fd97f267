"""Shared by tests/groups and tests/search: seeding, published-event capture, snapshots."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select

from db import models
from realtime.events import Publisher
from schema import ids
from tests.factories import TestUser, _hash, create_user, recorded_statements

# ---- GraphQL documents -------------------------------------------------------------------
GROUP_FIELDS = "id name description visibility memberCount viewerRole owner { id } createdAt"
CREATE = f"mutation($input: CreateGroupInput!) {{ createGroup(input: $input) {{ {GROUP_FIELDS} }} }}"
UPDATE = f"mutation($id: ID!, $input: UpdateGroupInput!) {{ updateGroup(id: $id, input: $input) {{ {GROUP_FIELDS} }} }}"
DELETE = "mutation($id: ID!) { deleteGroup(id: $id) }"
ADD = f"mutation($g: ID!, $u: [ID!]!) {{ addGroupMembers(groupId: $g, userIds: $u) {{ {GROUP_FIELDS} }} }}"
REMOVE = f"mutation($g: ID!, $u: ID!) {{ removeGroupMember(groupId: $g, userId: $u) {{ {GROUP_FIELDS} }} }}"
SET_ROLE = (
    "mutation($g: ID!, $u: ID!, $r: GroupRole!) "
    "{ setGroupMemberRole(groupId: $g, userId: $u, role: $r) { role joinedAt user { id } } }"
)
TRANSFER = f"mutation($g: ID!, $u: ID!) {{ transferGroupOwnership(groupId: $g, userId: $u) {{ {GROUP_FIELDS} }} }}"
JOIN = f"mutation($g: ID!) {{ joinGroup(groupId: $g) {{ {GROUP_FIELDS} }} }}"
LEAVE = "mutation($g: ID!) { leaveGroup(groupId: $g) }"
GROUP = f"query($id: ID!) {{ group(id: $id) {{ {GROUP_FIELDS} }} }}"


def gid(group_id: int) -> str:
    return ids.encode("Group", group_id)


def uid(user_id: int) -> str:
    return ids.encode("User", user_id)


# ---- published events ----------------------------------------------------------------------
class RecordingHub:
    """Records what the real Publisher publishes, then hands it on (if a hub was wired)."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, channel: str, payload: dict[str, Any]) -> None:
        self.events.append((channel, payload))
        if self.inner is not None:
            await self.inner.publish(channel, payload)

    def clear(self) -> None:
        self.events.clear()

    def of_type(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [(c, e) for c, e in self.events if e.get("type") == kind]


@contextmanager
def recording(app: Any) -> Iterator[RecordingHub]:
    services = app.state.parley.services
    original = services.events
    if original is None:
        hub = RecordingHub()
        services.events = Publisher(hub)
    else:
        hub = RecordingHub(original.hub)
        original.hub = hub
    try:
        yield hub
    finally:
        if original is None:
            services.events = None
        else:
            original.hub = hub.inner


def channel_user(channel: str) -> int | None:
    return int(channel.rsplit(":", 1)[1]) if channel.startswith("user:") else None


# ---- seeding ---------------------------------------------------------------------------------
async def bulk_users(app: Any, count: int, prefix: str) -> list[int]:
    """`count` plain users (no sessions) in one statement; returns their ids in order."""
    db = app.state.parley.services.db
    now = datetime.now(UTC)
    password_hash = await _hash()
    rows = [
        {
            "username": f"{prefix}{i}", "username_key": f"{prefix}{i}".casefold(), "display_name": f"{prefix} {i}",
            "password_hash": password_hash, "is_admin": False, "presence_choice": "ONLINE", "created_at": now,
        }
        for i in range(count)
    ]
    async with db.writer() as session, session.begin():
        await session.execute(insert(models.User), rows)
        found = await session.execute(
            select(models.User.id)
            .where(models.User.username.in_([r["username"] for r in rows]))
            .order_by(models.User.id)
        )
        return list(found.scalars())


@dataclass
class Seeded:
    group_id: int
    conversation_id: int
    users: dict[str, TestUser] = field(default_factory=dict)  # by label

    @property
    def gid(self) -> str:
        return gid(self.group_id)


async def seed_group(
    app: Any, members: dict[str, str], *, visibility: str = "PRIVATE", outsiders: tuple[str, ...] = (),
    name: str = "Seeded", prefix: str = "",
) -> Seeded:
    """A group straight in the database: `members` maps label -> role (exactly one OWNER)."""
    db = app.state.parley.services.db
    users = {label: await create_user(app, f"{prefix}{label}".lower()) for label in [*members, *outsiders]}
    owner = next(users[label] for label, role in members.items() if role == "OWNER")
    now = datetime.now(UTC)
    async with db.writer() as session, session.begin():
        group = models.Group(
            name=name, name_key=name.casefold(), visibility=visibility, owner_id=owner.id,
            member_count=len(members), created_at=now,
        )
        session.add(group)
        await session.flush()
        conversation = models.Conversation(kind="GROUP", group_id=group.id, created_at=now, updated_at=now)
        session.add(conversation)
        await session.flush()
        for label, role in members.items():
            session.add(
                models.ConversationMember(
                    conversation_id=conversation.id, user_id=users[label].id, role=role, joined_at=now
                )
            )
        group_id, conversation_id = group.id, conversation.id
    return Seeded(group_id=group_id, conversation_id=conversation_id, users=users)


# ---- state snapshots (refusals must write nothing) -------------------------------------------
async def snapshot(app: Any) -> dict[str, Any]:
    db = app.state.parley.services.db
    async with db.session() as s:
        groups = (
            await s.execute(
                select(
                    models.Group.id, models.Group.name, models.Group.description, models.Group.visibility,
                    models.Group.owner_id, models.Group.member_count, models.Group.deleted_at,
                ).order_by(models.Group.id)
            )
        ).all()
        members = (
            await s.execute(
                select(
                    models.ConversationMember.conversation_id, models.ConversationMember.user_id,
                    models.ConversationMember.role,
                ).order_by(models.ConversationMember.id)
            )
        ).all()
        conversations = (
            await s.execute(
                select(models.Conversation.id, models.Conversation.deleted_at).order_by(models.Conversation.id)
            )
        ).all()
        notifications = (await s.execute(select(func.count()).select_from(models.Notification))).scalar_one()
        audits = (await s.execute(select(func.count()).select_from(models.AuditEvent))).scalar_one()
    return {
        "groups": [tuple(r) for r in groups], "members": [tuple(r) for r in members],
        "conversations": [tuple(r) for r in conversations], "notifications": notifications, "audits": audits,
    }


async def members_of(app: Any, conversation_id: int) -> dict[int, str]:
    db = app.state.parley.services.db
    async with db.session() as s:
        rows = await s.execute(
            select(models.ConversationMember.user_id, models.ConversationMember.role).where(
                models.ConversationMember.conversation_id == conversation_id
            )
        )
        return {user_id: role for user_id, role in rows.all()}


async def group_row(app: Any, group_id: int) -> models.Group:
    db = app.state.parley.services.db
    async with db.session() as s:
        return (await s.execute(select(models.Group).where(models.Group.id == group_id))).scalar_one()


async def notifications_of(app: Any, user_id: int) -> list[tuple[str, int | None, int | None, int | None]]:
    """(kind, actor_id, group_id, conversation_id) of the user's notifications, oldest first."""
    db = app.state.parley.services.db
    async with db.session() as s:
        rows = await s.execute(
            select(
                models.Notification.kind, models.Notification.actor_id, models.Notification.group_id,
                models.Notification.conversation_id,
            ).where(models.Notification.user_id == user_id).order_by(models.Notification.id)
        )
        return [tuple(r) for r in rows.all()]  # type: ignore[misc]


# ---- statement counting ----------------------------------------------------------------------
def count_statements(app: Any) -> Any:
    return recorded_statements(app.state.parley.services.db)
