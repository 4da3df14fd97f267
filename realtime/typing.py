"""Typing indicators: merged repeats, self-expiring states, ordered events per typer.

Semantics (what `setTyping` promises in the contract):
- A change of state (typing <-> not typing) is published at once: never refused,
  never delayed.
- A repeat of the current state within `settings.typing_merge_seconds` of its last
  publication is merged (not published again); a repeat of "typing" still renews the
  expiry. A repeat after the merge window is published again, which refreshes late
  subscribers.
- "typing" ends by itself with an `isTyping: false` event after
  `settings.typing_expiry_seconds` unless renewed; `message_sent` ends it at once.

Cost: one `loop.call_later` handle per active typer (no task, no sleep). Renewing only
moves a deadline; the handle re-arms itself for the remainder when it fires early, so a
client repeating setTyping every second costs no cancel/reschedule churn. A "not
typing" record lives only for the merge window. Events of one typer go out in order
(a chain per typer), so a quick true/false is never seen as false/true.

Across instances the state lives on the instance that received setTyping; events go
through the hub to every instance. Trade-off (no shared store, no extra round trip per
keystroke): when one user's setTyping calls land on different instances, each keeps its
own state, so a stale instance may publish an extra `false` at its expiry (the next
repeat after the merge window sets it right), and `message_sent` on an instance that
holds no state for the typer publishes nothing (the other instance's state then ends
by expiry). Sticky routing (setTyping over the user's WebSocket) avoids both.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any, Protocol

log = logging.getLogger("parley.typing")

Key = tuple[int, int]  # (conversation_id, user_id)
MAX_CONCURRENT_PUBLISHES = 16


class TypingPublisher(Protocol):
    def typing(self, conversation_id: int, user_id: int, is_typing: bool) -> Awaitable[None]: ...


class _State:
    """One typer's state in one conversation."""

    __slots__ = ("deadline", "handle", "is_typing", "published_at")

    def __init__(self, is_typing: bool, published_at: float, deadline: float) -> None:
        self.is_typing = is_typing
        self.published_at = published_at
        self.deadline = deadline  # typing: expiry; not typing: end of the merge window
        self.handle: asyncio.TimerHandle | None = None


class Typing:
    """Per-instance typing states; publishes through `publisher.typing(...)`."""

    def __init__(self, settings: Any, publisher: TypingPublisher) -> None:
        self.expiry = float(settings.typing_expiry_seconds)
        self.merge = float(settings.typing_merge_seconds)
        self.publisher = publisher
        self._states: dict[Key, _State] = {}
        self._tails: dict[Key, asyncio.Future[None]] = {}  # last queued publish per typer
        # Expiries come in bursts (many typers stop together); bounded concurrency keeps
        # them from exhausting the hub's publish connections.
        self._inflight = asyncio.Semaphore(MAX_CONCURRENT_PUBLISHES)
        self._closed = False
        self.published = 0
        self.merged = 0

    # Public API ------------------------------------------------------------------

    async def set(self, conversation_id: int, user_id: int, is_typing: bool) -> None:
        """Apply setTyping; returns once the event (if any) was handed to the hub.

        Never raises for a publishing failure (the Publisher logs it).
        """
        if self._closed:
            return
        key = (conversation_id, user_id)
        loop = asyncio.get_running_loop()
        now = loop.time()
        state = self._states.get(key)
        if state is not None and state.is_typing == is_typing:
            if is_typing:
                state.deadline = now + self.expiry  # the handle re-arms when it fires
            if now - state.published_at < self.merge:
                self.merged += 1
                return
            state.published_at = now
            if not is_typing:
                state.deadline = now + self.merge
                self._arm(key, state, loop)
            await self._emit(key, is_typing)
            return
        if state is None:
            state = self._states[key] = _State(is_typing, now, 0.0)
        state.is_typing = is_typing
        state.published_at = now
        state.deadline = now + (self.expiry if is_typing else self.merge)
        self._arm(key, state, loop)
        await self._emit(key, is_typing)

    async def message_sent(self, conversation_id: int, user_id: int) -> bool:
        """Sending a message ends typing: publishes `false` if this instance holds a
        typing state for the sender. Returns whether an event was published."""
        key = (conversation_id, user_id)
        state = self._states.get(key)
        if state is None or not state.is_typing or self._closed:
            return False
        # Kept as a "not typing" record: the client's own setTyping(false) that usually
        # follows a send is then merged instead of published twice.
        now = asyncio.get_running_loop().time()
        state.is_typing = False
        state.published_at = now
        state.deadline = now + self.merge
        await self._emit(key, False)
        return True

    def is_typing(self, conversation_id: int, user_id: int) -> bool:
        state = self._states.get((conversation_id, user_id))
        return state is not None and state.is_typing

    @property
    def active(self) -> int:
        """How many typers this instance tracks (typing or within a merge window)."""
        return len(self._states)

    async def close(self) -> None:
        """Cancel every timer and queued publish; no `false` is sent for live states
        (their subscribers are going away with this instance)."""
        self._closed = True
        for state in self._states.values():
            if state.handle is not None:
                state.handle.cancel()
        self._states.clear()
        tails = list(self._tails.values())
        self._tails.clear()
        for fut in tails:
            fut.cancel()
        for fut in tails:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await fut

    # Timers ------------------------------------------------------------------------

    def _arm(self, key: Key, state: _State, loop: asyncio.AbstractEventLoop) -> None:
        if state.handle is None:
            state.handle = loop.call_at(state.deadline, self._fire, key)

    def _fire(self, key: Key) -> None:
        state = self._states.get(key)
        if state is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < state.deadline:  # renewed since armed: wait for the remainder
            state.handle = loop.call_at(state.deadline, self._fire, key)
            return
        state.handle = None
        del self._states[key]
        if state.is_typing and not self._closed:
            self._queue(key, False)

    # Publishing in order per typer ---------------------------------------------------

    async def _emit(self, key: Key, is_typing: bool) -> None:
        fut = self._queue(key, is_typing)
        # Shielded: a caller that goes away must not cut the chain of later events.
        with contextlib.suppress(Exception):
            await asyncio.shield(fut)

    def _queue(self, key: Key, is_typing: bool) -> asyncio.Future[None]:
        previous = self._tails.get(key)
        fut = asyncio.ensure_future(self._publish_after(previous, key, is_typing))
        self._tails[key] = fut
        fut.add_done_callback(lambda done: self._settled(key, done))
        return fut

    def _settled(self, key: Key, fut: asyncio.Future[None]) -> None:
        if self._tails.get(key) is fut:
            del self._tails[key]
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("typing event for %s failed", key, exc_info=fut.exception())

    async def _publish_after(self, previous: asyncio.Future[None] | None, key: Key, is_typing: bool) -> None:
        if previous is not None and not previous.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(previous)
        async with self._inflight:
            self.published += 1
            await self.publisher.typing(key[0], key[1], is_typing)
