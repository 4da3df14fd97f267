"""Subscribers, groups and channel feeds: the per-event machinery of the fan-out.

- `Subscriber`: one running subscription of one socket (no task, queue or generator).
- `Group`: subscribers whose payloads are byte-identical for each event; executes the
  selection set once per event (per variant), and for positioned streams fills gaps
  from the database with one task per group.
- `Feed`: the hub listener of one channel; queues events and dispatches them in order
  from one task per busy channel, yielding every `YIELD_EVERY` sends.

See `realtime.fanout` for the whole picture.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from graphql.execution import Executor, execute_subscription_event

from errors import AppError, ResumeRequired
from realtime.events import INVALIDATING_TYPES
from realtime.live import REPLAY_END, ChannelState, LiveSource, Sink
from realtime.protocol import result_payload

if TYPE_CHECKING:
    from realtime.fanout import Engine

log = logging.getLogger("parley.realtime")

YIELD_EVERY = 128  # sends between yields to the event loop
YIELD_EVERY_BUSY = 16  # ... while HTTP requests are in flight (see `Pressure`)


class Pressure:
    """HTTP requests in flight in this process (server.py counts them). A request needs
    several loop turns (each database or Redis round trip is one), and each turn waits
    for one fan-out slice: while any is in flight the fan-out takes shorter slices."""

    requests = 0


PRESSURE = Pressure()


async def _pause() -> None:
    """One turn of the event loop in the middle of a fan-out."""
    await asyncio.sleep(0)
MAX_FEED_BACKLOG = 10_000  # queued events per channel before the backlog becomes a gap
REPLAY_BATCH = 500
_MISSING: Any = object()
_GAP: Any = object()


# ------------------------------------------------------------------------- subscribers


class Subscriber:
    """One running subscription of one socket (no task, queue or generator of its own)."""

    __slots__ = (
        "active", "channels", "counted", "filling", "group", "held", "op_id", "pos", "prefix", "ready",
        "refresh_again", "refreshing", "sink", "source", "target", "viewer",
    )

    def __init__(self, sink: Sink, op_id: str, prefix: bytes, viewer: Any, source: LiveSource) -> None:
        self.sink = sink
        self.op_id = op_id
        self.prefix = prefix
        self.viewer = viewer
        self.source = source
        self.group: Group | None = None
        self.channels: list[str] = []
        self.active = True
        self.ready = False  # started (non-positioned) — positioned ones use `filling`
        self.counted = False
        self.pos: int | None = None  # last delivered position (positioned)
        self.filling = source.positioned  # positioned: replaying from the database
        self.target = 0  # highest live position seen while filling
        self.held: list[dict[str, Any]] | None = None  # deliveries held during a refresh
        self.refreshing = False
        self.refresh_again = False


class Group:
    """Subscribers that receive byte-identical payloads for each event."""

    def __init__(self, engine: Engine, key: Hashable, executor: Executor, source: LiveSource, variants: bool) -> None:
        self.engine = engine
        self.key = key
        self.executor = executor
        self.source = source
        self.variants = variants
        self.members: dict[int, Subscriber] = {}
        self._snapshot: tuple[Subscriber, ...] | None = ()
        self.fill_task: asyncio.Task[None] | None = None
        self.timer_task: asyncio.Task[None] | None = None

    def snapshot(self) -> tuple[Subscriber, ...]:
        if self._snapshot is None:
            self._snapshot = tuple(self.members.values())
        return self._snapshot

    def add(self, sub: Subscriber) -> None:
        self.members[id(sub)] = sub
        self._snapshot = None
        sub.group = self

    def remove(self, sub: Subscriber) -> bool:
        if self.members.pop(id(sub), None) is None:
            return False
        self._snapshot = None
        return True

    # Execution ------------------------------------------------------------------------

    async def payload(self, event: dict[str, Any] | None, viewer: Any) -> bytes | None:
        """Execute the selection set for `event` once; the serialised `payload` JSON."""
        ctx = self.engine.make_context(viewer)
        root = self.source.root(event, ctx)
        if inspect.isawaitable(root):
            root = await root
        if root is None:
            return None
        executor = self.executor.build_per_event_executor(root)
        executor.context_value = ctx
        result: Any = execute_subscription_event(executor)
        if inspect.isawaitable(result):
            result = await result
        errors = self.engine.format_errors(list(result.errors), ctx) if result.errors else None
        return result_payload(result.data, errors)

    async def _payload_for(
        self, cache: dict[Hashable, bytes | None], event: dict[str, Any] | None, sub: Subscriber
    ) -> bytes | None:
        variant = self.source.variant(event, sub.viewer) if self.variants and event is not None else None
        found = cache.get(variant, _MISSING)
        if found is _MISSING:
            found = cache[variant] = await self.payload(event, sub.viewer)
        return found

    # Live events -------------------------------------------------------------------------

    async def on_event(self, event: dict[str, Any]) -> None:
        source = self.source
        kind = event.get("type")
        if kind in source.control_types:
            pos = event.get("pos") if source.positioned else None
            for sub in self.snapshot():
                if sub.active:
                    error = sub.source.control(event, sub.viewer)
                    if error is not None:
                        self.engine.end(sub, error)
                    elif isinstance(pos, int):
                        self._passed(sub, pos)
        if kind in source.event_types:
            await self.deliver(event)

    async def deliver(self, event: dict[str, Any]) -> None:
        source = self.source
        positioned = source.positioned
        pos = source.position(event) if positioned else 0
        cache: dict[Hashable, bytes | None] = {}
        variants = self.variants
        engine = self.engine
        frames: dict[bytes, bytes] = {}  # one payload (no variants): the frame per operation-id prefix
        sent = 0
        budget = YIELD_EVERY_BUSY if PRESSURE.requests else YIELD_EVERY  # sends before the next yield
        for sub in self.snapshot():
            if not sub.active:
                continue
            if positioned:
                if not self._next_for(sub, pos):
                    continue
            elif not sub.ready:
                continue
            if source.filtered and not sub.source.admit(event, sub.viewer):
                continue
            if sub.held is not None:
                sub.held.append(event)
                continue
            # the cache lookup inline: after the group's first subscriber every lookup hits
            found = cache.get(source.variant(event, sub.viewer) if variants else None, _MISSING)
            try:
                payload = await self._payload_for(cache, event, sub) if found is _MISSING else found
            except Exception:
                # Never leave subscribers silently behind: positioned ones re-read from
                # the database, the others are asked to resume.
                log.exception("executing a subscription event failed")
                engine.deliveries += sent
                self.on_gap()
                return
            if payload is None or not sub.active:
                continue
            if positioned:
                if sub.filling or sub.pos != pos - 1:
                    continue  # changed state while we executed
                sub.pos = pos
            prefix = sub.prefix
            if variants:
                frame = prefix + payload + b"}"
            else:
                frame = frames.get(prefix)  # clients mostly number their operations alike
                if frame is None:
                    frame = frames[prefix] = prefix + payload + b"}"
            if not sub.sink.push(frame):
                engine.shed(sub)
                continue
            sent += 1
            budget -= 1
            if not budget:
                engine.deliveries += sent
                sent = 0
                await _pause()
                budget = YIELD_EVERY_BUSY if PRESSURE.requests else YIELD_EVERY
        engine.deliveries += sent

    def _passed(self, sub: Subscriber, pos: int) -> None:
        """A positioned control event (a membership change) took position `pos`: it
        counts as handled in order, like a delivery, so the next message must follow it
        (a message that overtook it on the way is a jump: filled from the database,
        where access is checked again first)."""
        if self._next_for(sub, pos):
            sub.pos = pos

    def _next_for(self, sub: Subscriber, pos: int) -> bool:
        """Whether `pos` is the position `sub` takes next. Otherwise: while it fills from
        the database the position only raises its target; one already delivered
        (replayed, or a duplicate) is ignored; a jump starts a fill from the database."""
        if sub.filling:
            if pos > sub.target:
                sub.target = pos
            return False
        assert sub.pos is not None
        if pos <= sub.pos:
            return False
        if pos != sub.pos + 1:
            sub.filling = True
            sub.target = pos
            self.start_fill()
            return False
        return True

    def on_gap(self) -> None:
        """The hub may have lost events: positioned subscribers fill from the database,
        the others end with RESUME_REQUIRED."""
        if self.source.positioned:
            for sub in self.snapshot():
                if sub.active and not sub.filling:
                    sub.filling = True
                    sub.target = sub.pos or 0
            self.start_fill()
            return
        for sub in self.snapshot():
            if sub.active:
                self.engine.end(sub, ResumeRequired("Events may have been lost; resubscribe"))

    # Filling from the database -------------------------------------------------------

    def start_fill(self) -> None:
        if self.fill_task is None and self.members:
            self.fill_task = self.engine.spawn(self._fill(), name="realtime-fill")

    async def _fill(self) -> None:
        source = self.source
        try:
            while True:
                filling = [s for s in self.snapshot() if s.active and s.filling and s.pos is not None]
                if not filling:
                    return
                start = min(s.pos for s in filling if s.pos is not None)
                # Targets known before the read: what the read must have found.
                known = {id(s): s.target for s in filling}
                ctx = self.engine.make_context(filling[0].viewer)
                try:
                    events = await source.replay(ctx, start, REPLAY_BATCH)
                    allowed = await source.still_allowed(ctx, {s.viewer.user_id for s in filling})
                except AppError as error:
                    for sub in filling:
                        self.engine.end(sub, error)
                    continue
                except Exception:
                    log.exception("replay failed; ending the filling subscribers with RESUME_REQUIRED")
                    for sub in filling:
                        self.engine.end(sub, ResumeRequired("The server could not replay; resubscribe"))
                    continue
                for sub in filling:
                    if sub.active and sub.viewer.user_id not in allowed:
                        self.engine.end(sub, source.denied())
                before = {id(s): s.pos for s in filling}
                try:
                    await self._replayed(events, filling)
                except Exception:
                    log.exception("executing replayed events failed; ending the filling subscribers")
                    for sub in filling:
                        self.engine.end(sub, ResumeRequired("The server could not replay; resubscribe"))
                    continue
                if len(events) < REPLAY_BATCH or (events and events[-1].get("type") == REPLAY_END):
                    for sub in filling:
                        if not (sub.active and sub.filling):
                            continue
                        assert sub.pos is not None
                        if sub.pos >= sub.target:
                            sub.filling = False  # live from here: no await since the read
                        elif sub.pos == before[id(sub)] and known[id(sub)] > sub.pos:
                            # An event announced before the read is not in the database:
                            # the stream is broken (e.g. deleted); the client must resync.
                            self.engine.end(sub, ResumeRequired("Cannot catch up; resubscribe"))
                        # else: announced while we read: read again
                await asyncio.sleep(0)
        finally:
            self.fill_task = None

    async def _replayed(self, events: list[dict[str, Any]], filling: list[Subscriber]) -> None:
        """Deliver replayed events in order to the filling subscribers that need each,
        executing each event once (per variant)."""
        source = self.source
        for event in events:
            pos = source.position(event)
            if event.get("type") == REPLAY_END:  # nothing is missing up to `pos`
                for sub in filling:
                    if sub.active and sub.filling and sub.pos is not None and sub.pos < pos:
                        sub.pos = pos
                continue
            cache: dict[Hashable, bytes | None] = {}
            for sub in filling:
                # A replay holds every deliverable event of its range, so positions it
                # skips (membership changes) carry nothing for the subscriber.
                if not (sub.active and sub.filling) or sub.pos is None or sub.pos >= pos:
                    continue
                if source.filtered and not sub.source.admit(event, sub.viewer):
                    sub.pos = pos
                    continue
                payload = await self._payload_for(cache, event, sub)
                if not (sub.active and sub.filling) or sub.pos is None or sub.pos >= pos:
                    continue
                sub.pos = pos
                if payload is not None:
                    self.engine.send(sub, payload)

    # Timer-driven groups (adminMonitor) ----------------------------------------------------

    def start_timer(self) -> None:
        if self.timer_task is None and self.source.interval:
            self.timer_task = self.engine.spawn(self._tick(), name="realtime-timer")

    async def _tick(self) -> None:
        interval = float(self.source.interval or 1)
        while self.members:
            await asyncio.sleep(interval)
            ready = [s for s in self.snapshot() if s.active and s.ready]
            if not ready:
                continue
            try:
                payload = await self.payload(None, ready[0].viewer)
            except Exception:
                log.exception("timer subscription failed")
                continue
            if payload is None:
                continue
            for sub in ready:
                if sub.active:
                    self.engine.send(sub, payload)


# ------------------------------------------------------------------------------- feeds


class Feed:
    """The hub listener of one channel: queues events, dispatches them in order."""

    def __init__(self, engine: Engine, channel: str) -> None:
        self.engine = engine
        self.channel = channel
        self.groups: dict[Hashable, Group] = {}
        self.private: dict[int, Subscriber] = {}
        self.refs = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue: deque[Any] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.state = ChannelState()  # what subscribers may reuse while we follow the channel

    # Hub listener (synchronous, on the hub's dispatch task) ----------------------------

    def on_event(self, channel: str, event: dict[str, Any]) -> None:
        # On arrival, before queueing: a subscriber starting from now on must not reuse
        # what this event may have changed (its own dispatch may come later).
        state = self.state
        state.saw(event)
        if event.get("type") in INVALIDATING_TYPES:
            state.invalidate()
        if len(self.queue) >= MAX_FEED_BACKLOG:
            log.warning("channel %s fell %d events behind; treating it as a gap", channel, len(self.queue))
            self.queue.clear()
            self.queue.append(_GAP)
        else:
            self.queue.append(event)
        self._wake()

    def on_gap(self, channel: str) -> None:
        self.state.invalidate()  # invalidating events may have been lost
        self.queue.append(_GAP)
        self._wake()

    def _wake(self) -> None:
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._run(), name=f"realtime-feed:{self.channel}")

    async def _run(self) -> None:
        try:
            while self.queue:
                item = self.queue.popleft()
                try:
                    if item is _GAP:
                        self._gap()
                    else:
                        await self._dispatch(item)
                except Exception:
                    log.exception("dispatching an event of %s failed", self.channel)
        finally:
            self.worker = None

    def _gap(self) -> None:
        for sub in tuple(self.private.values()):
            if sub.active:  # a private control feed lost events: refresh to be safe
                self.engine.refresh(sub)
        for group in tuple(self.groups.values()):
            group.on_gap()

    async def _dispatch(self, event: dict[str, Any]) -> None:
        for sub in tuple(self.private.values()):
            if sub.active and sub.source.on_private(self.channel, event, sub.viewer):
                self.engine.refresh(sub)
        for group in tuple(self.groups.values()):
            try:
                await group.on_event(event)
            except Exception:  # a bug of ours: the other groups still get the event
                log.exception("dispatching an event of %s to a group failed", self.channel)
