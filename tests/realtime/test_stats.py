"""Deployment-wide live figures: per-instance counters summed over live instances.

Two "instances" are two Stats objects with different ids sharing the test Redis
(TEST_REDIS_URL, under a key prefix unique to the test, deleted afterwards). The last
test reads the figures the way admins do: the adminStats query of a running app.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from realtime.events import Publisher
from realtime.presence import Presence, create_redis
from realtime.stats import Stats
from settings import Settings
from tests.factories import create_user
from tests.realtime.conftest import delete_prefixed_keys

HEARTBEAT = 0.1
EXPIRY = 3 * HEARTBEAT


class Deployment:
    """Stats (and presence) instances sharing one store."""

    def __init__(self, redis_url: str | None) -> None:
        self.redis_url = redis_url
        self.prefix = f"parley-test:{uuid.uuid4().hex[:10]}"
        self.settings = Settings(
            channel_prefix=self.prefix, presence_heartbeat_seconds=HEARTBEAT, presence_grace_seconds=0.3
        )
        self.closables: list[Any] = []
        self.clients: list[Any] = []

    def client(self, url: str | None = None) -> Any:
        url = url or self.redis_url
        if url is None:
            return None
        redis = create_redis(url)
        self.clients.append(redis)
        return redis

    async def instance(self, instance_id: str, *, url: str | None = None) -> tuple[Stats, Presence]:
        redis = self.client(url)
        presence = Presence(self.settings, Publisher(None), redis=redis, instance_id=instance_id)
        await presence.start()
        stats = Stats(self.settings, redis=redis, instance_id=instance_id, presence=presence)
        await stats.start()
        self.closables += [stats, presence]
        return stats, presence

    async def cleanup(self) -> None:
        for item in reversed(self.closables):
            await item.close()
        await delete_prefixed_keys(self.redis_url, self.prefix)
        for redis in self.clients:
            await redis.aclose()


@contextlib.asynccontextmanager
async def deployment(url: str | None) -> AsyncIterator[Deployment]:
    d = Deployment(url)
    try:
        yield d
    finally:
        await d.cleanup()


@pytest.fixture
async def shared() -> AsyncIterator[Deployment]:
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set: stats across instances not tested")
    async with deployment(url) as d:
        yield d


async def test_memory_snapshot_is_this_instance() -> None:
    async with deployment(None) as d:
        stats, presence = await d.instance("solo")
        stats.connection_opened()
        stats.connection_opened()
        stats.connection_closed()
        stats.subscription_started()
        stats.subscription_started()
        await presence.connect(5)
        assert await stats.snapshot() == {"instances": 1, "connections": 1, "subscriptions": 2, "online_users": 1}
        # Counters never go negative
        stats.subscription_ended()
        stats.subscription_ended()
        stats.subscription_ended()
        stats.connection_closed()
        stats.connection_closed()
        assert await stats.snapshot() == {"instances": 1, "connections": 0, "subscriptions": 0, "online_users": 1}


async def test_snapshot_sums_live_instances(shared: Deployment) -> None:
    a, presence_a = await shared.instance("a")
    b, presence_b = await shared.instance("b")
    # Given A holds 2 sockets with 3 subscriptions, B 1 socket with 4 (attributes work too)
    a.connections, a.subscriptions = 2, 3
    b.connection_opened()
    for _ in range(4):
        b.subscription_started()
    await presence_a.connect(1)
    await presence_a.connect(2)
    await presence_b.connect(2)
    await presence_b.connect(3)
    # When both have published (their heartbeats would do it within 0.1 s)
    await a.publish()
    await b.publish()
    # Then either instance reports the whole deployment
    expected = {"instances": 2, "connections": 3, "subscriptions": 7, "online_users": 3}
    assert await a.snapshot() == expected
    assert await b.snapshot() == expected
    # An instance's own counters count live, before its next heartbeat
    a.connection_opened()
    assert (await a.snapshot())["connections"] == 4
    # A cleanly closed instance leaves at once
    await b.close()
    assert (await a.snapshot())["instances"] == 1


async def test_a_crashed_instance_stops_counting_after_expiry(shared: Deployment) -> None:
    a, _ = await shared.instance("a")
    b, _ = await shared.instance("b")
    b.connections = 5
    await b.publish()
    assert (await a.snapshot())["connections"] == 5
    # When B stops heartbeating without cleanup
    assert b._task is not None
    b._task.cancel()
    # Then it still counts until its entry expires, and not after
    await asyncio.sleep(EXPIRY / 3)
    assert (await a.snapshot())["instances"] == 2
    await asyncio.sleep(EXPIRY)
    assert await a.snapshot() == {"instances": 1, "connections": 0, "subscriptions": 0, "online_users": 0}


async def test_unreachable_redis_gives_this_instance_only(unused_redis_url: str) -> None:
    async with deployment(None) as d:
        stats, _ = await d.instance("lonely", url=unused_redis_url)
        stats.connection_opened()
        assert await stats.publish() is False
        assert await stats.snapshot() == {"instances": 1, "connections": 1, "subscriptions": 0, "online_users": 0}


@pytest.fixture
def settings(prefixed_settings: Settings) -> Settings:
    return prefixed_settings


async def test_admin_stats_query_reports_live_figures(app: Any, gql: Any) -> None:
    services = app.state.parley.services
    admin = await create_user(app, "root", admin=True)
    query = "{ adminStats { instances onlineUsers connections subscriptions totalUsers } }"
    before = (await gql.ok(query, token=admin.token))["adminStats"]
    assert before == {"instances": 1, "onlineUsers": 0, "connections": 0, "subscriptions": 0, "totalUsers": 1}
    # When the WebSocket layer reports a socket with two subscriptions for the admin
    stats = services.extras["stats"]
    stats.connection_opened()
    stats.subscription_started()
    stats.subscription_started()
    await services.presence.connect(admin.id)
    try:
        after = (await gql.ok(query, token=admin.token))["adminStats"]
    finally:
        await services.presence.disconnect(admin.id)
        stats.connection_closed()
        stats.subscription_ended()
        stats.subscription_ended()
    # Then adminStats shows it
    assert after == {"instances": 1, "onlineUsers": 1, "connections": 1, "subscriptions": 2, "totalUsers": 1}
