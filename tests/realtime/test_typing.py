"""Typing: merged repeats, self-expiry, message_sent, ordering and timer cleanup.

Events are observed where subscribers see them: on the conversation channel of a real
hub (memory:// and, with TEST_REDIS_URL, Redis), published by the real Publisher.
Short settings keep it fast: expiry 0.3 s, merge window 0.2 s.
"""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from realtime.events import Publisher, conversation_channel
from realtime.hub import Hub
from realtime.typing import Typing
from settings import Settings

EXPIRY = 0.3
MERGE = 0.2
CONV = 7
ALICE, BOB = 1, 2


class Events:
    """Listener on one conversation channel: (is_typing, user id, loop time) per event."""

    def __init__(self) -> None:
        self.items: list[tuple[bool, int, float]] = []
        self._changed = asyncio.Event()

    def on_event(self, channel: str, event: dict[str, Any]) -> None:
        assert event["type"] == "typing" and event["conversation_id"] == CONV
        self.items.append((event["is_typing"], event["user_id"], asyncio.get_running_loop().time()))
        self._changed.set()

    def on_gap(self, channel: str) -> None:
        raise AssertionError("no gap expected")

    @property
    def states(self) -> list[tuple[int, bool]]:
        return [(user, typing) for typing, user, _ in self.items]

    async def wait_for(self, count: int, within: float = 2.0) -> None:
        async with asyncio.timeout(within):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()

    async def settle(self, seconds: float = 0.05) -> None:
        """Let in-flight deliveries (Redis round trip) arrive."""
        await asyncio.sleep(seconds)


@pytest.fixture
async def typing_env(hub: Hub) -> Any:
    events = Events()
    await hub.subscribe(conversation_channel(CONV), events)
    typing = Typing(Settings(typing_expiry_seconds=EXPIRY, typing_merge_seconds=MERGE), Publisher(hub))
    yield typing, events
    await typing.close()


async def test_typing_is_published_and_repeats_within_the_merge_window_are_merged(typing_env: Any) -> None:
    typing, events = typing_env
    # Given Alice starts typing
    await typing.set(CONV, ALICE, True)
    # When she repeats it twice within the merge window
    await asyncio.sleep(0.05)
    await typing.set(CONV, ALICE, True)
    await typing.set(CONV, ALICE, True)
    await events.settle()
    # Then only the first went out
    assert events.states == [(ALICE, True)]
    assert typing.merged == 2
    # And a repeat after the merge window is published again (refreshing late subscribers)
    await asyncio.sleep(MERGE)
    await typing.set(CONV, ALICE, True)
    await events.wait_for(2)
    assert events.states == [(ALICE, True), (ALICE, True)]


async def test_typing_expires_by_itself_with_a_false_event(typing_env: Any) -> None:
    typing, events = typing_env
    start = asyncio.get_running_loop().time()
    await typing.set(CONV, ALICE, True)
    await events.wait_for(2, within=EXPIRY + 1)
    assert events.states == [(ALICE, True), (ALICE, False)]
    elapsed = events.items[1][2] - start
    assert EXPIRY - 0.01 <= elapsed < EXPIRY + 0.15
    assert not typing.is_typing(CONV, ALICE)
    # Nothing else follows, and no state is kept
    await asyncio.sleep(MERGE)
    assert len(events.items) == 2
    assert typing.active == 0


async def test_merged_repeats_still_renew_the_expiry(typing_env: Any) -> None:
    typing, events = typing_env
    loop = asyncio.get_running_loop()
    await typing.set(CONV, ALICE, True)
    await asyncio.sleep(0.15)
    renewed_at = loop.time()
    await typing.set(CONV, ALICE, True)  # merged, but renews
    # At the original expiry Alice still types
    await asyncio.sleep(EXPIRY - 0.15 + 0.07)
    assert events.states == [(ALICE, True)]
    assert typing.is_typing(CONV, ALICE)
    # It ends one expiry after the renewal
    await events.wait_for(2, within=1)
    assert events.states == [(ALICE, True), (ALICE, False)]
    assert events.items[1][2] - renewed_at >= EXPIRY - 0.01


async def test_a_change_of_state_is_never_merged_or_delayed(typing_env: Any) -> None:
    typing, events = typing_env
    loop = asyncio.get_running_loop()
    # Within one merge window: true, false, true, false
    for state in (True, False, True, False):
        before = loop.time()
        await typing.set(CONV, ALICE, state)
        assert loop.time() - before < 0.1
    await events.wait_for(4)
    assert events.states == [(ALICE, True), (ALICE, False), (ALICE, True), (ALICE, False)]
    # And the last state (not typing) produces no expiry event
    await asyncio.sleep(EXPIRY + 0.1)
    assert len(events.items) == 4


async def test_repeated_false_is_merged_and_typers_are_independent(typing_env: Any) -> None:
    typing, events = typing_env
    await typing.set(CONV, ALICE, False)
    await typing.set(CONV, ALICE, False)
    await typing.set(CONV, BOB, True)
    await typing.set(CONV, BOB, True)
    await events.wait_for(2)
    await events.settle()
    assert events.states == [(ALICE, False), (BOB, True)]
    await events.wait_for(3, within=1)
    assert events.states == [(ALICE, False), (BOB, True), (BOB, False)]


async def test_message_sent_ends_typing_at_once(typing_env: Any) -> None:
    typing, events = typing_env
    await typing.set(CONV, ALICE, True)
    # When Alice sends her message
    assert await typing.message_sent(CONV, ALICE) is True
    await events.wait_for(2)
    assert events.states == [(ALICE, True), (ALICE, False)]
    # The client's own setTyping(false) right after is merged, and nothing expires later
    await typing.set(CONV, ALICE, False)
    await asyncio.sleep(EXPIRY + 0.1)
    assert events.states == [(ALICE, True), (ALICE, False)]
    # Sending while not typing publishes nothing
    assert await typing.message_sent(CONV, BOB) is False
    await events.settle()
    assert len(events.items) == 2
    # Typing again right after sending is published at once
    await typing.set(CONV, ALICE, True)
    await events.wait_for(3)
    assert events.states[-1] == (ALICE, True)


async def test_events_of_one_typer_keep_their_order(typing_env: Any) -> None:
    typing, events = typing_env
    # Calls that do not wait for each other still publish in call order
    await asyncio.gather(*(typing.set(CONV, ALICE, i % 2 == 0) for i in range(20)))
    await events.wait_for(20)
    assert [state for _, state in events.states] == [i % 2 == 0 for i in range(20)]


async def test_timers_are_handles_not_tasks_and_are_cleaned_up(typing_env: Any) -> None:
    typing, events = typing_env
    tasks_before = len(asyncio.all_tasks())
    # Given 200 users typing at once
    for user in range(100, 300):
        await typing.set(CONV, user, True)
    await events.wait_for(200)
    # Then each holds one timer handle and no task (under load on a busy machine some
    # states may already have expired: what matters is handles, not tasks)
    ended = sum(1 for typing_, _, _ in events.items if not typing_)
    assert typing.active + ended == 200
    assert len(asyncio.all_tasks()) == tasks_before
    # And every state ends by itself and is forgotten
    await events.wait_for(400, within=2)
    assert sorted(user for typing_, user, _ in events.items[200:] if not typing_) == list(range(100, 300))
    assert typing.active == 0


async def test_close_cancels_every_timer(typing_env: Any) -> None:
    typing, events = typing_env
    await typing.set(CONV, ALICE, True)
    await typing.set(CONV, BOB, True)
    await events.wait_for(2)
    await typing.close()
    assert typing.active == 0
    await asyncio.sleep(EXPIRY + 0.1)
    assert len(events.items) == 2
    # A closed service ignores further calls
    await typing.set(CONV, ALICE, True)
    await events.settle()
    assert len(events.items) == 2


async def test_publishing_failures_do_not_raise() -> None:
    # A Publisher whose hub is stopped (publish raises inside) logs instead of raising
    broken = Typing(Settings(typing_expiry_seconds=EXPIRY, typing_merge_seconds=MERGE), Publisher(Hub("memory://")))
    await broken.set(CONV, ALICE, True)
    assert broken.is_typing(CONV, ALICE)
    await broken.close()
