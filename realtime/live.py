"""What the schema layer hands the fan-out: a `LiveSource` per subscription, and the
`Sink` protocol a socket offers the fan-out engine.

A Subscription field's resolver authorizes and returns a `LiveSource` (it is an async
iterable only in name: the engine in `realtime.fanout` serves it, never iterates it).
Imports nothing but `errors`, so `schema/` may subclass it without pulling in the rest
of realtime.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Protocol

from errors import AppError, NotFound

FieldRef = tuple[str, str]  # (GraphQL type name, field name)
# The last item `replay()` may return: {"type": REPLAY_END, "pos": p} says that no event
# up to position p is missing from the replay (positions without a delivery, such as a
# membership change's, are skipped up to it).
REPLAY_END = "replay_end"


class SharedReads:
    """Values read from the database, shared by the callers that ask for one while it
    is valid: concurrent callers share one in-flight read, and `invalidate()` drops
    everything (in-flight reads included: a read that was in flight when an invalidation
    arrived is never stored nor handed to a later caller; its own caller still gets it).
    """

    __slots__ = ("_values", "closed", "invalidations", "loads")

    def __init__(self) -> None:
        self._values: dict[Hashable, asyncio.Future[Any]] = {}
        self.closed = False
        self.loads = 0  # reads started (for tests and figures)
        self.invalidations = 0

    def __len__(self) -> int:
        return len(self._values)

    def invalidate(self) -> None:
        self.invalidations += 1
        self._values.clear()

    def forget(self, key: Hashable) -> None:
        self._values.pop(key, None)

    def replace(self, key: Hashable, value: Any) -> None:
        """Store `value` (read by the caller just now) in place of what is kept."""
        if self.closed:
            return
        found: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        found.set_result(value)
        self._values[key] = found

    def close(self) -> None:
        self.closed = True
        self._values.clear()

    def peek(self, key: Hashable) -> Any:
        """The stored value for `key` (None when absent, in flight or failed)."""
        found = self._values.get(key)
        if found is None or not found.done() or found.cancelled() or found.exception() is not None:
            return None
        return found.result()

    async def cached(self, key: Hashable, load: Callable[[], Awaitable[Any]]) -> Any:
        while True:
            found = self._values.get(key)
            if found is None:
                return await self._load(key, load)
            try:
                return await asyncio.shield(found)
            except asyncio.CancelledError:
                if not found.cancelled():
                    raise  # this caller was cancelled
                # the reader was cancelled (its client left): read again

    async def _load(self, key: Hashable, load: Callable[[], Awaitable[Any]]) -> Any:
        found: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self.closed:
            self._values[key] = found
        self.loads += 1
        try:
            value = await load()
        except BaseException as exc:
            if self._values.get(key) is found:
                del self._values[key]  # failures are not kept: the next caller reads again
            if isinstance(exc, Exception):
                found.set_exception(exc)
                found.exception()  # retrieved: the waiters re-raise it themselves
            else:
                found.cancel()
            raise
        found.set_result(value)
        return value


class ChannelState(SharedReads):
    """What this instance knows about a channel while it follows it (one per `Feed`).

    - `high_pos`: the highest event position seen on the channel since it was followed
      (positions are taken in commit order, so everything up to it is committed).
    - `cached(key, load)`: a value read from the database (`SharedReads`), kept until
      an event that may change it arrives (the feed calls `invalidate()` on membership
      events and gaps), or the instance stops following the channel (`close()`).
    - `cover(pos)` / `complete()`: the kept value was read at position `pos`; it is
      complete (nothing it may miss) while every position between it and `high_pos` has
      been seen. A hole means an event committed in between has not arrived yet: with
      several instances publishing, a removal may be overtaken by a later message, so
      the caller must read again (and `replace` the kept value) rather than trust it.

    Soundness rests on one precondition, which `realtime.fanout.Engine` guarantees: the
    hub subscription is live before the first read starts, so every change committed
    after a read is announced to this feed and invalidates the value.
    """

    __slots__ = ("_ahead", "high_pos", "upto")

    MAX_AHEAD = 4096  # positions seen beyond a hole, kept to close it

    def __init__(self) -> None:
        super().__init__()
        self.high_pos: int | None = None
        self.upto: int | None = None  # every position up to it is in the kept value or seen
        self._ahead: set[int] = set()

    def saw(self, event: dict[str, Any]) -> None:
        pos = event.get("pos")
        if not isinstance(pos, int):
            return
        if self.high_pos is None or pos > self.high_pos:
            self.high_pos = pos
        upto = self.upto
        if upto is None or pos <= upto:
            return
        if pos == upto + 1:
            self._advance(pos)
        elif len(self._ahead) < self.MAX_AHEAD:
            self._ahead.add(pos)

    def cover(self, pos: int) -> None:
        """The kept value reflects every change up to position `pos`."""
        if self.upto is None or pos > self.upto:
            self._advance(pos)

    def complete(self) -> bool:
        """No position up to `high_pos` is unaccounted for (see the class docstring)."""
        return self.high_pos is None or (self.upto is not None and self.high_pos <= self.upto)

    def _advance(self, pos: int) -> None:
        ahead = self._ahead
        while pos + 1 in ahead:
            pos += 1
        self.upto = pos
        if ahead:
            self._ahead = {p for p in ahead if p > pos}

    def invalidate(self) -> None:
        super().invalidate()
        self.upto = None
        self._ahead = set()


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
    # Set by the engine before `start()`: the state of `channels[0]` on this instance.
    channel_state: ChannelState | None = None
    # Positioned sources may set this in `start()`: a position every event after which
    # reaches the feed only after `start()` began (read after the hub subscription went
    # live, or seen on it). When `start()` returns it and no later event reached the
    # group meanwhile, the subscriber goes live without a replay read.
    known_end: int | None = None

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
        """Events after position `after`, oldest first, shaped like the live ones: at
        most `limit` of them, and every deliverable event between two returned ones
        (positions in between carry nothing to deliver). When fewer than `limit` come
        back, a `REPLAY_END` item may follow (see there)."""
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
