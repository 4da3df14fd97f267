"""Channel names and the events the write path publishes after commit.

Every event is a plain JSON-able dict with a "type" key, carrying what subscribers
need, so delivering one event to N subscribers costs no database query per
subscriber. Resolvers never publish directly: they register `tx.after_commit(...)`
with one of these methods, so nothing is announced unless it was stored.

Channels (the hub adds the deployment prefix):
- `conv:<conversation id>`  message events, typing, read states, membership changes
- `user:<user id>`          per-user: conversationUpdated, conversationRemoved,
                            notificationAdded, membership lost (ends subscriptions)
- `session`                 session revocations (closes sockets on every instance)
- `presence`                presence changes (filtered per viewer on delivery)
- `audit`                   audit rows for auditEvents
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

log = logging.getLogger("parley.events")


def conversation_channel(conversation_id: int) -> str:
    return f"conv:{conversation_id}"


def user_channel(user_id: int) -> str:
    return f"user:{user_id}"


SESSION_CHANNEL = "session"
PRESENCE_CHANNEL = "presence"
AUDIT_CHANNEL = "audit"

# Conversation-channel event types that change who may follow the conversation: an
# instance drops what it cached about the conversation's members when one arrives.
MEMBERSHIP_EVENT = "membership"
INVALIDATING_TYPES = frozenset({MEMBERSHIP_EVENT})


class Hub(Protocol):
    async def publish(self, channel: str, event: dict[str, Any]) -> None: ...


class Publisher:
    """The one place the write path announces committed changes.

    Publishing failures are logged, never raised: the change is already committed,
    and subscribers recover through replay by cursor (or RESUME_REQUIRED).
    """

    def __init__(self, hub: Hub | None) -> None:
        self.hub = hub

    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        if self.hub is None:
            return
        try:
            await self.hub.publish(channel, event)
        except Exception:
            log.warning("publish to %s failed", channel, exc_info=True)

    # --- messages ---------------------------------------------------------------
    async def message_event(self, conversation_id: int, pos: int, kind: str, snapshot: dict[str, Any]) -> None:
        """ADDED / EDITED / DELETED at event position `pos`. `snapshot` is the message
        as `resolvers.messages.snapshot()` makes it (row, sender, attachments,
        mentions, edits), enough to resolve the full Message type without a query."""
        await self.publish(
            conversation_channel(conversation_id),
            {"type": "message", "kind": kind, "pos": pos, "conversation_id": conversation_id, "message": snapshot},
        )

    async def typing(self, conversation_id: int, user_id: int, is_typing: bool) -> None:
        await self.publish(
            conversation_channel(conversation_id),
            {"type": "typing", "conversation_id": conversation_id, "user_id": user_id, "is_typing": is_typing},
        )

    async def read_state(self, conversation_id: int, user_id: int, state: dict[str, Any]) -> None:
        """`state`: last_read_seq, last_read_message_id, read_at (ISO)."""
        await self.publish(
            conversation_channel(conversation_id),
            {"type": "read_state", "conversation_id": conversation_id, "user_id": user_id, **state},
        )

    async def membership_changed(
        self, conversation_id: int, *, added: Iterable[int] = (), removed: Iterable[int] = (),
        member_ids: Iterable[int] = (), pos: int | None = None,
    ) -> None:
        """Members joined or left `conversation_id`. Removed users' live subscriptions on
        the conversation end; every current member's conversation list updates.

        `pos`: the conversation event position the change took in its transaction
        (removals take one, like messages): positioned subscribers then handle the
        change in commit order with the messages, whichever instance published what
        first, so a message committed after a removal never reaches the removed member.
        """
        added, removed = list(added), list(removed)
        event: dict[str, Any] = {
            "type": MEMBERSHIP_EVENT, "conversation_id": conversation_id, "added": added, "removed": removed,
        }
        if pos is not None:
            event["pos"] = pos
        await self.publish(conversation_channel(conversation_id), event)
        for user_id in removed:
            await self.conversation_removed(user_id, conversation_id)
        for user_id in set(member_ids) | set(added):
            await self.conversation_updated(user_id, conversation_id)

    # --- per user ----------------------------------------------------------------
    async def conversation_updated(self, user_id: int, conversation_id: int) -> None:
        await self.publish(
            user_channel(user_id), {"type": "conversation_updated", "conversation_id": conversation_id}
        )

    async def conversations_updated(self, user_ids: Iterable[int], conversation_id: int) -> None:
        """One event per member's channel, sent in one pipelined batch (a large group
        would otherwise cost one Redis round trip per member on every message)."""
        event = {"type": "conversation_updated", "conversation_id": conversation_id}
        await self._publish_many([(user_channel(user_id), event) for user_id in user_ids])

    async def _publish_many(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        if self.hub is None or not items:
            return
        publish_many = getattr(self.hub, "publish_many", None)
        try:
            if publish_many is not None:
                await publish_many(items)
            else:
                for channel, item in items:
                    await self.hub.publish(channel, item)
        except Exception:
            log.warning("publish of %d events failed", len(items), exc_info=True)

    async def conversation_removed(self, user_id: int, conversation_id: int) -> None:
        await self.publish(
            user_channel(user_id), {"type": "conversation_removed", "conversation_id": conversation_id}
        )

    async def notification_added(self, user_id: int, notification_id: int) -> None:
        await self.publish(
            user_channel(user_id), {"type": "notification", "notification_id": notification_id}
        )

    async def notifications_added(self, pairs: Iterable[tuple[int, int]]) -> None:
        """(user id, notification id) pairs, published in one batch."""
        await self._publish_many(
            [(user_channel(u), {"type": "notification", "notification_id": n}) for u, n in pairs]
        )

    # --- sessions, presence, audit --------------------------------------------------
    async def sessions_revoked(self, session_ids: Iterable[int], reason: str = "session revoked") -> None:
        ids = list(session_ids)
        if ids:
            await self.publish(SESSION_CHANNEL, {"type": "revoked", "session_ids": ids, "reason": reason})

    async def presence(self, user_id: int, status: str, last_seen_at: str | None) -> None:
        await self.publish(
            PRESENCE_CHANNEL,
            {"type": "presence", "user_id": user_id, "status": status, "last_seen_at": last_seen_at},
        )

    async def audit(self, audit_id: int) -> None:
        await self.publish(AUDIT_CHANNEL, {"type": "audit", "audit_id": audit_id})
