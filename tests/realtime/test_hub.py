"""The fan-out hub and its backends, pinned against broadcaster 0.3.1's known faults.

(a) readiness: a publish right after subscribe() returns is delivered (broadcaster's
    redis backend with redis-py 8 delivers nothing);
(b) a Redis restart is survived: reconnect, on_gap, delivery resumes (broadcaster's
    reader dies silently);
(c) concurrent first subscribers to a new channel both receive (broadcaster races);
(d) no per-listener queue: a stalled or raising listener neither blocks nor breaks
    the others (broadcaster awaits an unbounded queue per subscriber in turn);
(e) the transport subscription follows the listener refcount;
(f) publish while Redis is down fails fast instead of hanging.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as redis

from realtime.backends import BackendUnavailable, RedisBackend
from realtime.hub import Hub

if TYPE_CHECKING:
    from tests.realtime.conftest import RedisServer

pytestmark = pytest.mark.asyncio


class Recorder:
    """A listener that records everything, as a socket's buffer would."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.gaps: list[str] = []
        self._changed = asyncio.Event()

    def on_event(self, channel: str, event: dict[str, Any]) -> None:
        self.events.append((channel, event))
        self._changed.set()

    def on_gap(self, channel: str) -> None:
        self.gaps.append(channel)
        self._changed.set()

    async def wait_until(self, predicate: Callable[[], bool], within: float = 3.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_for_events(self, count: int, within: float = 3.0) -> None:
        await self.wait_until(lambda: len(self.events) >= count, within)


class Raising(Recorder):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def on_event(self, channel: str, event: dict[str, Any]) -> None:
        super().on_event(channel, event)
        if len(self.events) > self.after:
            raise RuntimeError("listener bug")


class AsyncByMistake:
    async def on_event(self, channel: str, event: dict[str, Any]) -> None:  # wrong: must be sync
        pass

    def on_gap(self, channel: str) -> None:
        pass


class Stalled:
    """A socket that stopped reading: a bounded buffer that flags overflow (-> resume)."""

    def __init__(self, limit: int) -> None:
        self.buffer: deque[dict[str, Any]] = deque()
        self.limit = limit
        self.overflowed = False

    def on_event(self, channel: str, event: dict[str, Any]) -> None:
        if len(self.buffer) >= self.limit:
            self.overflowed = True
            return
        self.buffer.append(event)

    def on_gap(self, channel: str) -> None:
        pass


def has_gaps(listener: Recorder, count: int) -> bool:
    return len(listener.gaps) >= count


def new_channel() -> str:
    return f"conversation:{uuid.uuid4().hex[:12]}"


async def eventually(predicate: Callable[[], bool], within: float = 3.0) -> None:
    """Poll state that no event signals (connection flags, the backend's channel set)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - nothing to wait on but time
            await asyncio.sleep(0.01)


def backend_of(hub: Hub) -> Any:
    return hub._backend


async def numsub(url: str, wire_channel: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        [(_, count)] = await client.pubsub_numsub(wire_channel)
        return int(count)
    finally:
        await client.aclose()


async def wait_numsub(url: str, wire_channel: str, expected: int) -> None:
    async with asyncio.timeout(3):
        while await numsub(url, wire_channel) != expected:  # noqa: ASYNC110 - Redis state, polled
            await asyncio.sleep(0.01)


# Both backends ---------------------------------------------------------------------


async def test_publish_right_after_subscribe_is_delivered(hub: Hub) -> None:
    # Given a listener whose subscribe() has returned
    channel, listener = new_channel(), Recorder()
    await hub.subscribe(channel, listener)
    # When publishing at once, with no sleep in between
    await hub.publish(channel, {"n": 1})
    # Then it arrives (a)
    await listener.wait_for_events(1)
    assert listener.events == [(channel, {"n": 1})]


async def test_every_listener_gets_the_same_decoded_dict(hub: Hub) -> None:
    channel, first, second = new_channel(), Recorder(), Recorder()
    await hub.subscribe(channel, first)
    await hub.subscribe(channel, second)
    await hub.publish(channel, {"id": "m1", "body": "hi", "tags": [1, 2]})
    await first.wait_for_events(1)
    await second.wait_for_events(1)
    # decoded once per process, handed to everyone
    assert first.events[0][1] == {"id": "m1", "body": "hi", "tags": [1, 2]}
    assert first.events[0][1] is second.events[0][1]
    assert hub.events_in == 1


async def test_delivery_keeps_publish_order(hub: Hub) -> None:
    channel, listener = new_channel(), Recorder()
    await hub.subscribe(channel, listener)
    for n in range(300):
        await hub.publish(channel, {"n": n})
    await listener.wait_for_events(300)
    assert [event["n"] for _, event in listener.events] == list(range(300))


async def test_concurrent_first_subscribers_share_one_subscription(hub: Hub) -> None:
    # Given a channel nobody is subscribed to yet
    channel = new_channel()
    listeners = [Recorder() for _ in range(10)]
    # When ten listeners subscribe to it concurrently (c)
    await asyncio.gather(*(hub.subscribe(channel, listener) for listener in listeners))
    await hub.publish(channel, {"n": 1})
    # Then every one of them receives, over a single transport subscription
    for listener in listeners:
        await listener.wait_for_events(1)
        assert listener.events == [(channel, {"n": 1})]
    assert backend_of(hub).channels == {channel}
    assert (hub.channels, hub.listeners) == (1, 10)


async def test_unsubscribe_racing_a_new_subscriber_keeps_the_channel(hub: Hub) -> None:
    channel, leaving, joining = new_channel(), Recorder(), Recorder()
    await hub.subscribe(channel, leaving)
    # the last listener leaves while a new one arrives
    await asyncio.gather(hub.unsubscribe(channel, leaving), hub.subscribe(channel, joining))
    await hub.publish(channel, {"n": 1})
    await joining.wait_for_events(1)
    assert joining.events == [(channel, {"n": 1})]
    assert leaving.events == []
    assert backend_of(hub).channels == {channel}


async def test_raising_listener_is_detached_and_others_keep_receiving(hub: Hub) -> None:
    # Given two healthy listeners around one that raises from its second event on (d)
    channel, first, bad, last = new_channel(), Recorder(), Raising(after=1), Recorder()
    for listener in (first, bad, last):
        await hub.subscribe(channel, listener)
    # When three events are published
    for n in range(3):
        await hub.publish(channel, {"n": n})
    # Then the healthy ones get all three, the bad one is detached after raising
    await first.wait_for_events(3)
    await last.wait_for_events(3)
    assert [e["n"] for _, e in last.events] == [0, 1, 2]
    assert [e["n"] for _, e in bad.events] == [0, 1]
    assert (hub.listeners, hub.listener_errors) == (2, 1)
    # and unsubscribing it later is a harmless no-op
    await hub.unsubscribe(channel, bad)
    assert hub.listeners == 2


async def test_async_listener_is_detached_without_blocking_dispatch(hub: Hub) -> None:
    channel, wrong, good = new_channel(), AsyncByMistake(), Recorder()
    await hub.subscribe(channel, wrong)  # type: ignore[arg-type]  # the mistake under test
    await hub.subscribe(channel, good)
    await hub.publish(channel, {"n": 1})
    await hub.publish(channel, {"n": 2})
    await good.wait_for_events(2)
    assert (hub.listeners, hub.listener_errors) == (1, 1)


async def test_sole_raising_listener_releases_the_channel(hub: Hub) -> None:
    channel, bad = new_channel(), Raising(after=0)
    await hub.subscribe(channel, bad)
    await hub.publish(channel, {"n": 1})
    await bad.wait_for_events(1)
    await eventually(lambda: not backend_of(hub).channels)
    assert (hub.channels, hub.listeners) == (0, 0)


async def test_stalled_listener_does_not_hold_back_others(hub: Hub) -> None:
    # Given a listener whose socket stopped reading, next to a live one (d)
    channel, stalled, live = new_channel(), Stalled(limit=10), Recorder()
    await hub.subscribe(channel, stalled)
    await hub.subscribe(channel, live)
    # When many events are published
    started = time.monotonic()
    for n in range(2000):
        await hub.publish(channel, {"n": n})
    await live.wait_for_events(2000, within=10)
    # Then the live one got everything promptly; nothing queued up for the stalled one
    # beyond its own bound (the hub holds no per-listener backlog)
    assert [e["n"] for _, e in live.events] == list(range(2000))
    assert time.monotonic() - started < 5
    assert len(stalled.buffer) == 10 and stalled.overflowed
    assert hub.listeners == 2


async def test_publish_bursts_beyond_the_connection_pool(hub: Hub) -> None:
    # redis-py 8's default pool raises "Too many connections" past 100 concurrent commands
    channel, listener = new_channel(), Recorder()
    await hub.subscribe(channel, listener)
    await asyncio.gather(*(hub.publish(channel, {"n": n}) for n in range(300)))
    await listener.wait_for_events(300)
    assert sorted(e["n"] for _, e in listener.events) == list(range(300))


async def test_backend_subscription_follows_the_refcount(hub: Hub) -> None:
    channel = new_channel()
    a, b, c = Recorder(), Recorder(), Recorder()
    for listener in (a, b, c):
        await hub.subscribe(channel, listener)
    await hub.subscribe(channel, a)  # subscribing twice counts once
    assert (hub.channels, hub.listeners) == (1, 3)
    # When two of three leave, the transport subscription stays (e)
    await hub.unsubscribe(channel, a)
    await hub.unsubscribe(channel, b)
    assert backend_of(hub).channels == {channel}
    await hub.publish(channel, {"n": 1})
    await c.wait_for_events(1)
    # When the last one leaves, it goes
    await hub.unsubscribe(channel, c)
    assert backend_of(hub).channels == frozenset()
    assert (hub.channels, hub.listeners) == (0, 0)
    await hub.publish(channel, {"n": 2})
    # and the channel can be taken up again
    await hub.subscribe(channel, a)
    await hub.publish(channel, {"n": 3})
    await a.wait_for_events(1)
    assert a.events == [(channel, {"n": 3})]
    assert [e["n"] for _, e in c.events] == [1]
    assert b.events == []


async def test_stats(hub: Hub) -> None:
    channel, other, listener = new_channel(), new_channel(), Recorder()
    await hub.subscribe(channel, listener)
    await hub.subscribe(other, listener)
    await hub.publish(channel, {"n": 1})
    await listener.wait_for_events(1)
    assert hub.stats() == {"channels": 2, "listeners": 2, "events_in": 1, "gaps": 0, "listener_errors": 0}
    assert hub.connected and await hub.ping()


async def test_hub_must_be_started() -> None:
    hub = Hub("memory://")
    with pytest.raises(RuntimeError):
        await hub.subscribe("c", Recorder())
    with pytest.raises(RuntimeError):
        await hub.publish("c", {})
    assert not hub.connected and not await hub.ping()
    with pytest.raises(ValueError):
        Hub("kafka://localhost")


# Shared Redis (TEST_REDIS_URL) ---------------------------------------------------------


async def test_publish_from_another_process_right_after_subscribe(
    redis_url: str, prefix: str, make_hub: Callable[..., Hub]
) -> None:
    # Two hubs stand for two app processes sharing one Redis
    receiver, sender = make_hub(redis_url, prefix), make_hub(redis_url, prefix)
    await receiver.start()
    await sender.start()
    listeners = []
    for n in range(20):  # many rounds, so a readiness race would show (a)
        channel, listener = new_channel(), Recorder()
        await receiver.subscribe(channel, listener)
        await sender.publish(channel, {"n": n})
        listeners.append((listener, channel, n))
    for listener, channel, n in listeners:
        await listener.wait_for_events(1)
        assert listener.events == [(channel, {"n": n})]


async def test_channels_are_prefixed_per_deployment(
    redis_url: str, make_hub: Callable[..., Hub]
) -> None:
    prefix_a, prefix_b = f"{uuid.uuid4().hex[:8]}:a:", f"{uuid.uuid4().hex[:8]}:b:"
    hub_a, hub_b = make_hub(redis_url, prefix_a), make_hub(redis_url, prefix_b)
    await hub_a.start()
    await hub_b.start()
    channel, on_a, on_b = new_channel(), Recorder(), Recorder()
    await hub_a.subscribe(channel, on_a)
    await hub_b.subscribe(channel, on_b)
    assert await numsub(redis_url, prefix_a + channel) == 1
    await hub_b.publish(channel, {"from": "b"})
    await on_b.wait_for_events(1)
    await hub_a.publish(channel, {"from": "a"})
    await on_a.wait_for_events(1)
    assert on_a.events == [(channel, {"from": "a"})]
    assert on_b.events == [(channel, {"from": "b"})]


async def test_redis_unsubscribes_when_the_last_listener_leaves(
    redis_url: str, prefix: str, make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub(redis_url, prefix)
    await hub.start()
    channel, a, b = new_channel(), Recorder(), Recorder()
    await hub.subscribe(channel, a)
    await hub.subscribe(channel, b)
    assert await numsub(redis_url, prefix + channel) == 1  # one connection, not two (e)
    await hub.unsubscribe(channel, a)
    assert await numsub(redis_url, prefix + channel) == 1
    await hub.unsubscribe(channel, b)
    await wait_numsub(redis_url, prefix + channel, 0)


async def test_wire_payload_is_orjson_bytes(redis_url: str, prefix: str, make_hub: Callable[..., Hub]) -> None:
    hub = make_hub(redis_url, prefix)
    await hub.start()
    channel = new_channel()
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(prefix + channel)
        async with asyncio.timeout(3):
            while (await pubsub.get_message(timeout=0.1) or {}).get("type") != "subscribe":
                pass
        await hub.publish(channel, {"id": 1, "body": "é"})
        async with asyncio.timeout(3):
            while (message := await pubsub.get_message(timeout=0.1)) is None:
                pass
        assert message["data"] == '{"id":1,"body":"é"}'.encode()
    finally:
        await pubsub.aclose()
        await client.aclose()


# A private redis-server that the tests break -----------------------------------------


async def test_hub_recovers_from_redis_restarts_and_reports_gaps(
    redis_server: RedisServer, prefix: str, make_hub: Callable[..., Hub]
) -> None:
    # Given listeners on two channels of a hub that works
    hub = make_hub(redis_server.url, prefix)
    await hub.start()
    first, second = new_channel(), new_channel()
    a, b, c = Recorder(), Recorder(), Recorder()
    await hub.subscribe(first, a)
    await hub.subscribe(first, b)
    await hub.subscribe(second, c)
    for cycle in (1, 2):  # the reader survives more than one outage (b)
        # When Redis crashes and comes back on the same port
        redis_server.kill()
        await eventually(lambda: not hub.connected)
        redis_server.start()
        # Then, without restarting anything, every listener hears of the gap
        for listener, channel in ((a, first), (b, first), (c, second)):
            await listener.wait_until(partial(has_gaps, listener, cycle))
            assert listener.gaps == [channel] * cycle
        assert hub.connected and hub.gaps == cycle
        # and publishing and receiving work again
        await hub.publish(first, {"cycle": cycle})
        await hub.publish(second, {"cycle": cycle})
        for listener in (a, b, c):
            await listener.wait_for_events(cycle)
            assert listener.events[-1][1] == {"cycle": cycle}
    assert await numsub(redis_server.url, prefix + first) == 1


async def test_publish_while_redis_is_down_fails_fast(
    redis_server: RedisServer, prefix: str, make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub(redis_server.url, prefix)
    await hub.start()
    await hub.publish(new_channel(), {"n": 0})  # a pooled publish connection exists
    redis_server.kill()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="unavailable"):
        await hub.publish(new_channel(), {"n": 1})
    assert not await hub.ping()
    assert time.monotonic() - started < 2  # (f)


async def test_frozen_redis_is_detected_and_publish_times_out(
    redis_server: RedisServer, prefix: str, make_hub: Callable[..., Hub]
) -> None:
    # Given a hub with a listener
    hub = make_hub(redis_server.url, prefix)
    await hub.start()
    channel, listener = new_channel(), Recorder()
    await hub.subscribe(channel, listener)
    # When Redis stops answering without closing any socket
    redis_server.freeze()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await hub.publish(channel, {"n": 1})
    assert time.monotonic() - started < 2  # (f), via socket timeouts
    # Then the unanswered health PING reveals the dead subscriber connection
    await eventually(lambda: not hub.connected)
    # and once Redis answers again, the hub resubscribes and reports the gap
    redis_server.thaw()
    await listener.wait_until(lambda: listener.gaps == [channel])
    await hub.publish(channel, {"n": 2})
    await listener.wait_for_events(1)
    assert listener.events == [(channel, {"n": 2})]


async def test_subscribe_during_an_outage_completes_after_restart(
    redis_server: RedisServer, prefix: str, make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub(redis_server.url, prefix, subscribe_timeout=5.0)
    await hub.start()
    redis_server.kill()
    await eventually(lambda: not hub.connected)
    channel, listener = new_channel(), Recorder()
    pending = asyncio.create_task(hub.subscribe(channel, listener))
    await asyncio.sleep(0.3)
    assert not pending.done()  # no confirmation yet, so subscribe() has not returned
    redis_server.start()
    await asyncio.wait_for(pending, 3)
    await hub.publish(channel, {"n": 1})
    await listener.wait_for_events(1)
    assert listener.events == [(channel, {"n": 1})]


async def test_subscribe_gives_up_when_redis_stays_down(
    redis_server: RedisServer, prefix: str, make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub(redis_server.url, prefix, subscribe_timeout=0.5)
    await hub.start()
    redis_server.kill()
    channel, listener = new_channel(), Recorder()
    with pytest.raises(BackendUnavailable, match="SUBSCRIBE"):
        await hub.subscribe(channel, listener)
    # nothing half-registered
    assert (hub.channels, hub.listeners) == (0, 0)
    assert backend_of(hub).channels == frozenset()
    redis_server.start()
    await eventually(lambda: hub.connected)
    await hub.subscribe(channel, listener)
    await hub.publish(channel, {"n": 1})
    await listener.wait_for_events(1)


async def test_start_fails_fast_without_redis(unused_redis_url: str, prefix: str) -> None:
    hub = Hub(backend=RedisBackend(unused_redis_url, prefix=prefix, connect_timeout=0.5))
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await hub.start()
    assert time.monotonic() - started < 2
    assert not hub.connected


async def test_publish_many_reaches_every_channel_in_order(hub: Hub) -> None:
    # Given listeners on three channels
    channels = [new_channel() for _ in range(3)]
    listeners = [Recorder() for _ in channels]
    for channel, listener in zip(channels, listeners, strict=True):
        await hub.subscribe(channel, listener)
    # When a batch goes out (one round trip on Redis)
    await hub.publish_many([(c, {"n": i}) for i, c in enumerate(channels)] + [(channels[0], {"n": 9})])
    # Then each channel gets its events, in batch order
    await listeners[0].wait_until(lambda: len(listeners[0].events) == 2)
    assert [e["n"] for _, e in listeners[0].events] == [0, 9]
    for i in (1, 2):
        await listeners[i].wait_until(lambda i=i: len(listeners[i].events) == 1)
        assert listeners[i].events[0][1] == {"n": i}
