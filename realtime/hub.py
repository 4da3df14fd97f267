"""The process-wide fan-out hub: one transport subscription per channel, many listeners.

Used instead of `broadcaster.Broadcast`, whose faults sit in `Broadcast` itself, not in
its backends:
- `Broadcast.subscribe` races: two first subscribers to a new channel can overwrite
  each other's queue set while the backend's subscribe yields, and one never receives.
- Every subscriber gets an unbounded `asyncio.Queue`, and the listener task awaits
  `queue.put` for each subscriber in turn, so bounding those queues would stall every
  channel behind one slow socket; left unbounded, a slow socket holds memory forever.
- Its listener task dies for good if the backend's `next_published` raises.

`Hub` keeps per-channel reference counts (the backend subscription lives while at
least one local listener does), serializes the subscribe/unsubscribe transitions of
each channel, and delivers synchronously from ONE dispatch task: no queue, task or
async generator per listener. Bounding and shedding per subscriber is the listener's
business (for example, a bounded per-socket buffer that turns overflow into
RESUME_REQUIRED), which keeps one delivery at a few microseconds for thousands of
sockets. Each payload is decoded once per process and the same dict is handed to every
listener, so listeners must treat events as read-only.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any, Protocol

from realtime.backends import Backend, Gap, cancel_and_wait, create_backend
from realtime.locks import KeyedLocks

logger = logging.getLogger(__name__)


class Listener(Protocol):
    """Receives a channel's events; both methods run on the hub's dispatch task.

    They must return quickly and never block: buffer, or drop and ask the client to
    resume. A method that raises (or is accidentally `async`) gets the listener
    logged and detached; the other listeners are unaffected.
    """

    def on_event(self, channel: str, event: dict[str, Any]) -> None: ...

    def on_gap(self, channel: str) -> None:
        """Events on `channel` may have been lost: replay from the last cursor."""
        ...


class _Channel:
    """The listeners of one channel, with a lazily rebuilt snapshot for dispatch.

    Members are keyed by identity (listeners need not be hashable, and one that is
    equal to another is still a separate socket); the dict keeps them alive, so ids
    cannot be reused while registered.
    """

    __slots__ = ("_snapshot", "members")

    def __init__(self) -> None:
        self.members: dict[int, Listener] = {}
        self._snapshot: tuple[Listener, ...] | None = ()

    def add(self, listener: Listener) -> bool:
        if id(listener) in self.members:
            return False
        self.members[id(listener)] = listener
        self._snapshot = None
        return True

    def discard(self, listener: Listener) -> bool:
        if self.members.get(id(listener)) is not listener:
            return False
        del self.members[id(listener)]
        self._snapshot = None
        return True

    def snapshot(self) -> tuple[Listener, ...]:
        if self._snapshot is None:
            self._snapshot = tuple(self.members.values())
        return self._snapshot


class Hub:
    """Fan-out of channel events from a transport to in-process listeners.

    Build it from a URL (`memory://` or `redis://...`) and a deployment prefix, or hand
    it a backend. Lifecycle belongs to the app's lifespan: `await hub.start()` ...
    `await hub.stop()` (or `async with hub:`).
    """

    def __init__(self, url: str | None = None, *, prefix: str = "", backend: Backend | None = None) -> None:
        if backend is None:
            if url is None:
                raise ValueError("Hub needs a url or a backend")
            backend = create_backend(url, prefix=prefix)
        self._backend = backend
        self._channels: dict[str, _Channel] = {}
        self._transitions = KeyedLocks()
        self._dispatcher: asyncio.Task[None] | None = None
        self._chores: set[asyncio.Task[None]] = set()
        self._listeners = 0
        self.events_in = 0
        self.gaps = 0
        self.listener_errors = 0

    # Lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._dispatcher is not None:
            return
        await self._backend.connect()
        self._dispatcher = asyncio.create_task(self._dispatch(), name="realtime-hub-dispatch")

    async def stop(self) -> None:
        dispatcher, self._dispatcher = self._dispatcher, None
        for task in [*self._chores, *([dispatcher] if dispatcher else [])]:
            await cancel_and_wait(task)
        self._channels.clear()
        self._listeners = 0
        if dispatcher is not None:
            await self._backend.disconnect()

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # Subscriptions ---------------------------------------------------------------

    async def subscribe(self, channel: str, listener: Listener) -> None:
        """Attach `listener`; returns once the transport subscription is live.

        Anything published after this returns reaches the listener. Concurrent first
        subscribers of a channel share one transport subscription (the transition is
        serialized per channel); subscribing the same listener twice is a no-op. May
        raise `BackendUnavailable`, in which case nothing is registered.
        """
        self._require_running()
        entry = self._channels.get(channel)
        if entry is None:
            async with self._transitions(channel):
                entry = self._channels.get(channel)
                if entry is None:
                    await self._backend.subscribe(channel)
                    entry = self._channels[channel] = _Channel()
                self._listeners += entry.add(listener)
        else:
            self._listeners += entry.add(listener)

    async def unsubscribe(self, channel: str, listener: Listener) -> None:
        """Detach `listener` (no-op if it is not attached, e.g. already detached after
        raising); the transport subscription goes when the last listener leaves."""
        entry = self._channels.get(channel)
        if entry is None or not entry.discard(listener):
            return
        self._listeners -= 1
        if not entry.members:
            await self._release(channel, entry)

    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        """Publish to every process; may raise `BackendUnavailable` (quickly)."""
        self._require_running()
        await self._backend.publish(channel, event)

    async def publish_many(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Publish several (channel, event) pairs at once: one round trip on Redis."""
        self._require_running()
        await self._backend.publish_many(items)

    # Health and stats --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._dispatcher is not None and self._backend.is_connected

    async def ping(self) -> bool:
        """Readiness: can we publish right now? Never raises."""
        return self._dispatcher is not None and await self._backend.ping()

    @property
    def channels(self) -> int:
        return len(self._channels)

    @property
    def listeners(self) -> int:
        return self._listeners

    def stats(self) -> dict[str, int]:
        return {
            "channels": self.channels,
            "listeners": self._listeners,
            "events_in": self.events_in,
            "gaps": self.gaps,
            "listener_errors": self.listener_errors,
        }

    # Internals -------------------------------------------------------------------

    def _require_running(self) -> None:
        if self._dispatcher is None:
            raise RuntimeError("Hub is not started")

    async def _release(self, channel: str, entry: _Channel) -> None:
        async with self._transitions(channel):
            # A subscriber may have joined meanwhile; then the channel stays.
            if self._channels.get(channel) is entry and not entry.members:
                del self._channels[channel]
                await self._backend.unsubscribe(channel)

    async def _dispatch(self) -> None:
        """The one task that delivers everything; survives any backend or listener error."""
        while True:
            try:
                item = await self._backend.next_published()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Broadcast backend failed to deliver; retrying")
                await asyncio.sleep(0.1)
                continue
            try:
                if isinstance(item, Gap):
                    self.gaps += 1
                    for channel in item.channels:
                        self._deliver(channel, None)
                elif isinstance(item.message, dict):
                    self.events_in += 1
                    self._deliver(item.channel, item.message)
                else:  # events are dicts; anything else on our channels is not ours
                    logger.warning("Dropping non-dict event on %r", item.channel)
            except Exception:  # a bug of ours; never let it end dispatch
                logger.exception("Hub dispatch failed for %r", item)

    def _deliver(self, channel: str, event: dict[str, Any] | None) -> None:
        """Hand one decoded event, or a gap signal when `event` is None, to every listener."""
        entry = self._channels.get(channel)
        if entry is None:
            return
        for listener in entry.snapshot():
            handler: Callable[..., object]  # an `async def` method returns a coroutine
            try:
                if event is None:
                    handler = listener.on_gap
                    result = handler(channel)
                else:
                    handler = listener.on_event
                    result = handler(channel, event)
                if result is not None and inspect.isawaitable(result):
                    if inspect.iscoroutine(result):
                        result.close()
                    raise TypeError("listener methods must be synchronous (got an awaitable)")
            except Exception:
                self.listener_errors += 1
                logger.exception("Detaching listener %r of %r: it raised", listener, channel)
                self._detach(channel, entry, listener)

    def _detach(self, channel: str, entry: _Channel, listener: Listener) -> None:
        if not entry.discard(listener):
            return
        self._listeners -= 1
        if not entry.members:
            task = asyncio.create_task(self._release(channel, entry))
            self._chores.add(task)
            task.add_done_callback(self._chores.discard)
