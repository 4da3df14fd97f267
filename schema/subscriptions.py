"""The Subscription type: nine live streams, served by realtime.fanout over WebSocket.

Each field authorizes when subscribing (NOT_FOUND for a conversation the viewer is not
in, FORBIDDEN for non-admins on admin streams, BAD_USER_INPUT for bad arguments) and
returns a `LiveSource` describing the stream: which hub channels to follow, the
permission scope subscribers may share payloads within, how an event becomes the root
value (loaders primed from the event, so a delivery costs no query per subscriber), and
how authorization stays true while live (membership events end conversation streams
with NOT_FOUND; presence visibility is recomputed when the viewer's memberships change).

`VIEWER_FIELDS` is the one list of fields whose value depends on who is asking: a
subscription selecting any of them gets payloads executed per viewer instead of shared.
`Message.clientMessageId` (echoed to the sender only) splits payloads in two variants
(sender / others) instead.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, cast

import strawberry
from sqlalchemy import select
from sqlalchemy.orm import aliased

from db import models
from errors import AppError, BadUserInput, NotFound
from realtime.events import AUDIT_CHANNEL, MEMBERSHIP_EVENT, PRESENCE_CHANNEL, conversation_channel, user_channel
from realtime.live import REPLAY_END, LiveSource
from resolvers import admin as admin_resolvers
from resolvers import conversations as conversations_resolvers
from resolvers import messages as messages_resolvers
from resolvers import notifications as notifications_resolvers
from resolvers.context import Context
from schema import ids
from schema.users import PresenceStatus

if TYPE_CHECKING:
    from schema.admin import AdminStats, AuditEvent
    from schema.conversations import Conversation, ReadState
    from schema.messages import MessageEvent, TypingEvent
    from schema.notifications import Notification
    from schema.users import User

UserType = Annotated["User", strawberry.lazy("schema.users")]
MessageEventType = Annotated["MessageEvent", strawberry.lazy("schema.messages")]
TypingEventType = Annotated["TypingEvent", strawberry.lazy("schema.messages")]
ReadStateType = Annotated["ReadState", strawberry.lazy("schema.conversations")]
ConversationType = Annotated["Conversation", strawberry.lazy("schema.conversations")]
NotificationType = Annotated["Notification", strawberry.lazy("schema.notifications")]
AdminStatsType = Annotated["AdminStats", strawberry.lazy("schema.admin")]
AuditEventType = Annotated["AuditEvent", strawberry.lazy("schema.admin")]

# Fields whose value depends on the viewer (keep this the one list).
VIEWER_FIELDS: frozenset[tuple[str, str]] = frozenset({
    ("Conversation", "unreadCount"),
    ("Conversation", "title"),
    ("Group", "viewerRole"),
    ("Group", "conversation"),
    ("Attachment", "url"),
    ("User", "presence"),
    ("User", "lastSeenAt"),
    ("Session", "current"),
    ("Notification", "conversation"),
    ("Notification", "message"),
    ("Notification", "group"),
})
# Depends only on whether the viewer sent the message.
SENDER_FIELDS: frozenset[tuple[str, str]] = frozenset({("Message", "clientMessageId")})
MAX_PRESENCE_USER_IDS = 1000
ADMIN_INTERVAL_RANGE = (1, 60)


def _not_found() -> AppError:
    return NotFound("Conversation not found")


# -------------------------------------------------------------------------- queries


MEMBERS_KEY = "members"  # ChannelState key of a conversation channel's `Members`


@dataclass(frozen=True, slots=True)
class Members:
    """Who may follow a conversation, as one read found it (nobody when deleted)."""

    user_ids: frozenset[int]
    last_event_pos: int


async def _conversation_members(ctx: Context, conversation_id: int) -> Members:
    """One Core statement: the live conversation's event position and its member ids."""
    c, cm = models.Conversation.__table__, models.ConversationMember.__table__
    stmt = (
        select(c.c.last_event_pos, cm.c.user_id)
        .select_from(c.outerjoin(cm, cm.c.conversation_id == c.c.id))
        .where(c.c.id == conversation_id, c.c.deleted_at.is_(None))
    )
    async with ctx.db.session() as s:
        rows = (await s.execute(stmt)).all()
    if not rows:
        return Members(frozenset(), 0)
    return Members(frozenset(int(uid) for _, uid in rows if uid is not None), int(rows[0][0]))


async def _members_among(ctx: Context, conversation_id: int, user_ids: set[int]) -> set[int]:
    """Which of `user_ids` are members of the (not deleted) conversation."""
    if not user_ids:
        return set()
    cm, c = models.ConversationMember, models.Conversation
    async with ctx.db.session() as s:
        rows = await s.execute(
            select(cm.user_id)
            .join(c, c.id == cm.conversation_id)
            .where(cm.conversation_id == conversation_id, cm.user_id.in_(list(user_ids)), c.deleted_at.is_(None))
        )
        return {int(uid) for uid in rows.scalars()}


async def _shared_users(ctx: Context, viewer_id: int) -> tuple[set[int], set[int]]:
    """(users sharing a live conversation or group with the viewer, the viewer's
    conversation ids). Group membership is membership of the group's conversation."""
    mine, theirs = aliased(models.ConversationMember), aliased(models.ConversationMember)
    c, g = models.Conversation, models.Group
    async with ctx.db.session() as s:
        conversations = set(
            (
                await s.execute(
                    select(mine.conversation_id)
                    .join(c, c.id == mine.conversation_id)
                    .outerjoin(g, g.id == c.group_id)
                    .where(mine.user_id == viewer_id, c.deleted_at.is_(None), g.deleted_at.is_(None))
                )
            ).scalars()
        )
        users: set[int] = set()
        if conversations:
            users = set(
                (
                    await s.execute(
                        select(theirs.user_id).where(theirs.conversation_id.in_(list(conversations))).distinct()
                    )
                ).scalars()
            )
    users.discard(viewer_id)
    return users, conversations


# -------------------------------------------------------------------------- sources


class _ConversationSource(LiveSource):
    """A stream of one conversation: members only, ended with NOT_FOUND on removal.

    Access is decided once, in `start()`, which the engine calls once the hub
    subscription is live (so no change committed after the check can go unseen: its
    membership event reaches this subscriber's `control()`). The check reads the
    conversation's members through the channel's `ChannelState`: one Core read per
    conversation and instance, shared by concurrent subscribers and kept until a
    membership event (or a gap) arrives on the channel.
    """

    control_types = frozenset({MEMBERSHIP_EVENT})
    viewer_fields = VIEWER_FIELDS

    def __init__(self, conversation_id: int) -> None:
        self.conversation_id = conversation_id
        self.channels = (conversation_channel(conversation_id),)

    def control(self, event: dict[str, Any], viewer: Any) -> AppError | None:
        if viewer.user_id in (event.get("removed") or ()):
            return _not_found()
        return None

    def denied(self) -> AppError:
        return _not_found()

    async def _check(self, ctx: Context) -> int:
        """NOT_FOUND unless the viewer is a member of the live conversation; the highest
        event position known committed (from the read or seen on the channel since)."""
        viewer = ctx.require_viewer()
        state = self.channel_state
        if state is None:
            members = await _conversation_members(ctx, self.conversation_id)
        else:
            seen = state.invalidations
            members = await state.cached(MEMBERS_KEY, lambda: _conversation_members(ctx, self.conversation_id))
            if state.invalidations == seen:
                state.cover(members.last_event_pos)
            if not state.complete():
                # An event committed after that read has not arrived yet (another
                # instance may publish a removal late): decide on a fresh read. Kept
                # only if nothing invalidated it meanwhile; this subscriber is in its
                # group already, so an event that did is dispatched to it anyway.
                seen = state.invalidations
                members = await _conversation_members(ctx, self.conversation_id)
                if state.invalidations == seen:
                    state.replace(MEMBERS_KEY, members)
                    state.cover(members.last_event_pos)
        if viewer.user_id not in members.user_ids:
            raise _not_found()
        if state is not None and state.high_pos is not None:
            return max(members.last_event_pos, state.high_pos)
        return members.last_event_pos

    async def start(self, ctx: Any) -> int | None:
        await self._check(ctx)
        return None


class MessageEventsSource(_ConversationSource):
    event_types = frozenset({"message"})
    positioned = True
    sender_fields = SENDER_FIELDS
    sender_types = frozenset({"Message"})
    sender_carriers = frozenset({("MessageEvent", "message")})

    def __init__(self, conversation_id: int, after: str | None) -> None:
        super().__init__(conversation_id)
        self.after = after  # the raw cursor: decoded once access is known (NOT_FOUND first)
        self.scope = ("messages", conversation_id)

    def variant(self, event: dict[str, Any], viewer: Any) -> bool:
        return bool(event["message"]["message"]["sender_id"] == viewer.user_id)

    def position(self, event: dict[str, Any]) -> int:
        return int(event["pos"])

    def root(self, event: dict[str, Any] | None, ctx: Any) -> Any:
        from schema.messages import MessageEvent

        assert event is not None
        return MessageEvent.from_event(event, ctx)

    async def start(self, ctx: Any) -> int | None:
        known = self.known_end = await self._check(ctx)
        if self.after is None:
            return known
        after = messages_resolvers.decode_event_cursor(self.after, self.conversation_id)
        if after > known:  # maybe newer than what we know: ask the database itself
            known = self.known_end = (await _conversation_members(ctx, self.conversation_id)).last_event_pos
            if after > known:
                raise BadUserInput("This cursor is not a position of this conversation", field="after")
        return after

    async def replay(self, ctx: Any, after: int, limit: int) -> list[dict[str, Any]]:
        """The message events after `after`; when they all fit, then REPLAY_END at the
        conversation's position, read FIRST: every message up to it is committed before
        the events are read (positions are taken in commit order), so the positions in
        between that have no message (membership changes) are skipped safely."""
        c = models.Conversation.__table__
        async with ctx.db.session() as s:
            end = (
                await s.execute(select(c.c.last_event_pos).where(c.c.id == self.conversation_id))
            ).scalar_one_or_none()
            events = await messages_resolvers.events_since(s, self.conversation_id, after, limit)
        if end is not None and len(events) < limit:
            events.append({"type": REPLAY_END, "pos": int(end)})
        return events

    async def still_allowed(self, ctx: Any, user_ids: set[int]) -> set[int]:
        return await _members_among(ctx, self.conversation_id, user_ids)


class TypingSource(_ConversationSource):
    event_types = frozenset({"typing"})
    filtered = True

    def __init__(self, conversation_id: int) -> None:
        super().__init__(conversation_id)
        self.scope = ("typing", conversation_id)

    def admit(self, event: dict[str, Any], viewer: Any) -> bool:
        return bool(event["user_id"] != viewer.user_id)

    def root(self, event: dict[str, Any] | None, ctx: Any) -> Any:
        from schema.messages import TypingEvent

        assert event is not None
        return TypingEvent.from_event(event)


class ReadStateSource(_ConversationSource):
    event_types = frozenset({"read_state"})

    def __init__(self, conversation_id: int) -> None:
        super().__init__(conversation_id)
        self.scope = ("read_state", conversation_id)

    def root(self, event: dict[str, Any] | None, ctx: Any) -> Any:
        from schema.conversations import ReadState

        assert event is not None
        return ReadState.from_event(event)


class _UserSource(LiveSource):
    """A stream of the viewer's own channel: payloads are shared by that user's sockets
    (the scope is the user, so no viewer-dependent field can leak)."""

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.channels = (user_channel(user_id),)
        self.scope = (type(self).__name__, user_id)


class ConversationUpdatedSource(_UserSource):
    event_types = frozenset({"conversation_updated"})

    async def root(self, event: dict[str, Any] | None, ctx: Any) -> Any:  # type: ignore[override]
        from schema.conversations import Conversation

        assert event is not None
        try:
            row = await conversations_resolvers.get_conversation(ctx, int(event["conversation_id"]))
        except NotFound:
            return None  # no longer the viewer's: conversationRemoved tells
        return Conversation.from_row(row)


class ConversationRemovedSource(_UserSource):
    event_types = frozenset({"conversation_removed"})

    def root(self, event: dict[str, Any] | None, ctx: Any) -> Any:
        assert event is not None
        return strawberry.ID(ids.encode("Conversation", int(event["conversation_id"])))


class NotificationAddedSource(_UserSource):
    event_types = frozenset({"notification"})

    async def root(self, event: dict[str, Any] | None, ctx: Any) -> Any:  # type: ignore[override]
        from schema.notifications import Notification

        assert event is not None
        row = await ctx.loader(notifications_resolvers.notification_by_id).load(int(event["notification_id"]))
        return Notification.from_row(row) if row is not None else None


class PresenceSource(LiveSource):
    """Presence of the users the viewer shares a conversation or group with (optionally
    narrowed to `wanted`); the set is recomputed whenever the viewer's memberships move
    (events on the viewer's own channel), deliveries held meanwhile."""

    channels = (PRESENCE_CHANNEL,)
    scope = ("presence",)
    event_types = frozenset({"presence"})
    filtered = True
    viewer_fields = VIEWER_FIELDS

    def __init__(self, viewer_id: int, wanted: set[int] | None) -> None:
        self.viewer_id = viewer_id
        self.wanted = wanted
        self.private_channels = (user_channel(viewer_id),)
        self.visible: set[int] = set()
        self.conversations: set[int] = set()

    def admit(self, event: dict[str, Any], viewer: Any) -> bool:
        uid = event["user_id"]
        if self.wanted is not None and uid not in self.wanted:
            return False
        return uid in self.visible or uid == self.viewer_id

    def root(self, event: dict[str, Any] | None, ctx: Any) -> Any:
        assert event is not None
        seen = event.get("last_seen_at")
        return PresenceEvent(
            user_id=int(event["user_id"]), status=PresenceStatus(event["status"]),
            last_seen_at=datetime.fromisoformat(seen) if seen else None,
        )

    def on_private(self, channel: str, event: dict[str, Any], viewer: Any) -> bool:
        kind = event.get("type")
        if kind == "conversation_removed":
            return True
        return kind == "conversation_updated" and event.get("conversation_id") not in self.conversations

    async def refresh(self, ctx: Any) -> None:
        self.visible, self.conversations = await _shared_users(ctx, self.viewer_id)

    async def start(self, ctx: Any) -> int | None:
        await self.refresh(ctx)
        return None


class AdminMonitorSource(LiveSource):
    def __init__(self, interval: int) -> None:
        self.interval = float(interval)
        self.scope = ("admin_monitor", interval)

    async def root(self, event: dict[str, Any] | None, ctx: Any) -> Any:  # type: ignore[override]
        from schema.admin import AdminStats

        return AdminStats.from_stats(await admin_resolvers.admin_stats(ctx))


class AuditEventsSource(LiveSource):
    channels = (AUDIT_CHANNEL,)
    scope = ("audit",)
    event_types = frozenset({"audit"})
    viewer_fields = VIEWER_FIELDS

    async def root(self, event: dict[str, Any] | None, ctx: Any) -> Any:  # type: ignore[override]
        from schema.admin import AuditEvent

        assert event is not None
        row = await ctx.loader(admin_resolvers.audit_event_by_id).load(int(event["audit_id"]))
        return AuditEvent.from_row(row) if row is not None else None


# ---------------------------------------------------------------------------- types


@strawberry.type
class PresenceEvent:
    user_id: strawberry.Private[int]
    status: PresenceStatus
    last_seen_at: datetime | None

    @strawberry.field
    async def user(self, info: strawberry.Info) -> UserType:
        from schema.users import User

        row = await info.context.loader(conversations_resolvers.user_by_id).load(self.user_id)
        if row is None:
            raise NotFound("User not found")
        return User.from_row(row)


def _live(source: LiveSource) -> Any:
    """The resolver's return value: typed as the stream the SDL shows."""
    return cast(Any, source)


def _conversation_id(info: strawberry.Info, conversation_id: strawberry.ID) -> int:
    """The decoded id (NOT_FOUND when it is not a conversation's). Membership is checked
    by the source's `start()`, once the hub subscription is live (see `_ConversationSource`)."""
    info.context.require_viewer()
    return ids.decode("Conversation", conversation_id, field="conversationId")


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Message added, edited and deleted in one conversation, the viewer's own included. With "
        "`after`, first replays every event since that cursor from the database, then goes live: no gap, no "
        "duplicate. Cursors stay valid as long as the conversation exists; a malformed or foreign one is "
        "BAD_USER_INPUT."
    )
    async def message_events(
        self, info: strawberry.Info, conversation_id: strawberry.ID, after: str | None = strawberry.UNSET
    ) -> AsyncIterator[MessageEventType]:
        cid = _conversation_id(info, conversation_id)
        return _live(MessageEventsSource(cid, after or None))

    @strawberry.subscription(
        description="Typing of the other members; each typing state ends by itself (isTyping false) after the "
        "expiry unless renewed. Repeats of the same state within 2 s are merged, never refused."
    )
    async def typing(self, info: strawberry.Info, conversation_id: strawberry.ID) -> AsyncIterator[TypingEventType]:
        return _live(TypingSource(_conversation_id(info, conversation_id)))

    @strawberry.subscription
    async def read_state_changed(
        self, info: strawberry.Info, conversation_id: strawberry.ID
    ) -> AsyncIterator[ReadStateType]:
        return _live(ReadStateSource(_conversation_id(info, conversation_id)))

    @strawberry.subscription(
        description="Each of the viewer's conversations as it changes: new last message, unread count, title, "
        "membership."
    )
    async def conversation_updated(self, info: strawberry.Info) -> AsyncIterator[ConversationType]:
        return _live(ConversationUpdatedSource(info.context.require_viewer().user_id))

    @strawberry.subscription(
        description="Ids of conversations the viewer just lost: left, removed, hidden, or the group deleted."
    )
    async def conversation_removed(self, info: strawberry.Info) -> AsyncIterator[strawberry.ID]:
        return _live(ConversationRemovedSource(info.context.require_viewer().user_id))

    @strawberry.subscription(
        description="Presence of the given users (default: everyone the viewer shares a conversation or group "
        "with); users the viewer may not see are left out."
    )
    async def presence_changed(
        self, info: strawberry.Info, user_ids: list[strawberry.ID] | None = strawberry.UNSET
    ) -> AsyncIterator[PresenceEvent]:
        viewer = info.context.require_viewer()
        wanted: set[int] | None = None
        if user_ids is not None and user_ids is not strawberry.UNSET:
            if len(user_ids) > MAX_PRESENCE_USER_IDS:
                raise BadUserInput(f"At most {MAX_PRESENCE_USER_IDS} user ids", field="userIds")
            wanted = set()
            for value in user_ids:
                try:
                    wanted.add(ids.decode("User", value, field="userIds"))
                except NotFound:
                    continue  # another type's id: nobody the viewer could see
        return _live(PresenceSource(viewer.user_id, wanted))

    @strawberry.subscription
    async def notification_added(self, info: strawberry.Info) -> AsyncIterator[NotificationType]:
        return _live(NotificationAddedSource(info.context.require_viewer().user_id))

    @strawberry.subscription(description="Admins only: fresh AdminStats every intervalSeconds (1..60).")
    async def admin_monitor(
        self, info: strawberry.Info, interval_seconds: int | None = 5
    ) -> AsyncIterator[AdminStatsType]:
        admin_resolvers.require_admin(info.context)
        low, high = ADMIN_INTERVAL_RANGE
        if interval_seconds is None or not low <= interval_seconds <= high:
            raise BadUserInput(f"intervalSeconds must be {low}..{high}", field="intervalSeconds")
        return _live(AdminMonitorSource(interval_seconds))

    @strawberry.subscription(description="Admins only: audit events as they happen.")
    async def audit_events(self, info: strawberry.Info) -> AsyncIterator[AuditEventType]:
        admin_resolvers.require_admin(info.context)
        return _live(AuditEventsSource())
