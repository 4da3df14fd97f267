"""What the schema layer hands the fan-out: a `LiveSource` per subscription, and the
`Sink` protocol a socket offers the fan-out engine.

A Subscription field's resolver authorizes and returns a `LiveSource` (it is an async
iterable only in name: the engine in `realtime.fanout` serves it, never iterates it).
Imports nothing but `errors`, so `schema/` may subclass it without pulling in the rest
of realtime.
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

from errors import AppError, NotFound

FieldRef = tuple[str, str]  # (GraphQL type name, field name)


class LiveSource:
    """What a Subscription field's resolver returns: how to feed that subscription.

    One instance per subscriber (it may hold per-subscriber state, e.g. the users a
    presence subscriber may see); the group's first subscriber's instance also serves
    the group-wide calls (`root`, `replay`, `variant`). Methods called on the dispatch
    path (`admit`, `control`, `variant`, `position`, `root`) must be quick and must not
    block; `root` may be a coroutine when it needs the database (once per group and
    event, never per subscriber).
    """

    channels: tuple[str, ...] = ()  # hub channels whose events this subscription follows
    private_channels: tuple[str, ...] = ()  # per-subscriber control channels (see on_private)
    scope: Hashable = None  # permission scope: subscribers of one scope may share payloads
    event_types: frozenset[str] = frozenset()  # event "type"s that produce a delivery
    control_types: frozenset[str] = frozenset()  # event "type"s passed to control()
    filtered = False  # admit() is asked per subscriber
    positioned = False  # events carry a position; replay() fills gaps
    interval: float | None = None  # timer-driven: root(None, ctx) every `interval` seconds
    viewer_fields: frozenset[FieldRef] = frozenset()  # selecting these makes payloads per viewer
    # Selecting `sender_fields` splits payloads by `variant()` (e.g. "is the viewer the
    # sender"), provided every selected field returning one of `sender_types` is in
    # `sender_carriers` (the event's own message); otherwise payloads are per viewer.
    sender_fields: frozenset[FieldRef] = frozenset()
    sender_types: frozenset[str] = frozenset()
    sender_carriers: frozenset[FieldRef] = frozenset()

    def admit(self, event: dict[str, Any], viewer: Any) -> bool:
        return True

    def control(self, event: dict[str, Any], viewer: Any) -> AppError | None:
        """An error ends this subscriber (e.g. NOT_FOUND once removed from the conversation)."""
        return None

    def variant(self, event: dict[str, Any], viewer: Any) -> Hashable:
        return None

    def root(self, event: dict[str, Any] | None, ctx: Any) -> Any:
        """The root value for executing the selection set (None: nothing to deliver)."""
        raise NotImplementedError

    async def start(self, ctx: Any) -> int | None:
        """Runs once the hub subscription is live: re-check access (a change between the
        resolver's check and now was not seen by the feed); positioned sources return the
        position to fill from (the `after` cursor, or the current end)."""
        return None

    def position(self, event: dict[str, Any]) -> int:
        raise NotImplementedError

    async def replay(self, ctx: Any, after: int, limit: int) -> list[dict[str, Any]]:
        """Events after position `after`, oldest first, shaped like the live ones."""
        raise NotImplementedError

    async def still_allowed(self, ctx: Any, user_ids: set[int]) -> set[int]:
        """Which of `user_ids` may still receive this stream (checked after a replay read)."""
        return user_ids

    def denied(self) -> AppError:
        """What ends a subscriber that lost access (NOT_FOUND, as if it never existed)."""
        return NotFound()

    def on_private(self, channel: str, event: dict[str, Any], viewer: Any) -> bool:
        """An event on a private channel; True asks for `refresh()` (deliveries are held
        meanwhile and re-checked with `admit` afterwards)."""
        return False

    async def refresh(self, ctx: Any) -> None:
        return None

    def __aiter__(self) -> Any:
        raise TypeError("LiveSource subscriptions are served by realtime.fanout over WebSocket")


class Sink(Protocol):
    """The socket side of a subscriber (realtime.connection.Connection)."""

    def push(self, frame: bytes) -> bool:
        """Queue a data frame; False when the socket is over its send limits."""
        ...

    def operation_ended(self, op_id: str, error: AppError | None) -> None:
        """The server ended `op_id` (error frame, or complete when `error` is None)."""
        ...
