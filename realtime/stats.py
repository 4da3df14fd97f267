"""Live figures of the whole deployment for AdminStats: instances, connections,
subscriptions and online users, summed over every live instance.

Each instance counts its own sockets and subscriptions in plain attributes (the
WebSocket layer keeps them current, see `Stats`) and publishes them every
`settings.presence_heartbeat_seconds` to Redis (keys under `<channel_prefix>:stats:`):
- `inst`     ZSET instance id -> deadline (ms, Redis clock, 3 heartbeats ahead)
- `c:<id>`   HASH connections, subscriptions (expires with the deadline)
`snapshot()` sums the instances whose deadline has not passed (and drops the dead
ones), using this instance's own counters live rather than as last published. A
crashed instance stops counting after 3 heartbeats. With `memory://`, or while Redis
is unreachable, the snapshot is this instance alone. The database totals of AdminStats
(messagesLastMinute, totals) are added by `resolvers.admin.admin_stats`.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio import Redis

from realtime.presence import (
    HEARTBEATS_TO_EXPIRY,
    KEY_RETENTION_SECONDS,
    REDIS_ERRORS,
    Presence,
    new_instance_id,
    raise_if_cancelled,
    stop_task,
)

log = logging.getLogger("parley.stats")

_PUBLISH = """
local base, inst, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', base .. 'inst', now + ttl, inst)
redis.call('PEXPIRE', base .. 'inst', ARGV[6])
redis.call('HSET', base .. 'c:' .. inst, 'connections', ARGV[4], 'subscriptions', ARGV[5])
redis.call('PEXPIRE', base .. 'c:' .. inst, ttl)
return 1
"""

# Returns a flat list: instance id, connections, subscriptions, ... of live instances.
_SNAPSHOT = """
local base = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', base .. 'inst', '-inf', now)
local out = {}
for _, inst in ipairs(redis.call('ZRANGE', base .. 'inst', 0, -1)) do
  local v = redis.call('HMGET', base .. 'c:' .. inst, 'connections', 'subscriptions')
  table.insert(out, inst)
  table.insert(out, v[1] or '0')
  table.insert(out, v[2] or '0')
end
return out
"""


class Stats:
    """This instance's counters and the deployment-wide snapshot.

    The WebSocket layer keeps the counters current, either by the methods
    (`connection_opened()` / `connection_closed()` per accepted socket,
    `subscription_started()` / `subscription_ended()` per running subscription) or by
    adjusting the `connections` / `subscriptions` attributes directly. Lifecycle:
    `await start()` ... `await close()`.
    """

    def __init__(
        self,
        settings: Any,
        *,
        redis: Redis | None = None,
        instance_id: str | None = None,
        presence: Presence | None = None,
    ) -> None:
        self.redis = redis
        self.instance_id = instance_id or new_instance_id()
        self.presence = presence
        self.heartbeat = float(settings.presence_heartbeat_seconds)
        self._base = f"{settings.channel_prefix}:stats:"
        self.connections = 0
        self.subscriptions = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._warned = False
        if redis is not None:
            self._publish_script = redis.register_script(_PUBLISH)
            self._snapshot_script = redis.register_script(_SNAPSHOT)

    # Counters ----------------------------------------------------------------------------

    def connection_opened(self) -> None:
        self.connections += 1

    def connection_closed(self) -> None:
        self.connections = max(0, self.connections - 1)

    def subscription_started(self) -> None:
        self.subscriptions += 1

    def subscription_ended(self) -> None:
        self.subscriptions = max(0, self.subscriptions - 1)

    # Lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Register this instance and start publishing; never raises."""
        if self.redis is None or self._task is not None:
            return
        await self.publish()
        self._task = asyncio.create_task(self._loop(), name="stats-heartbeat")

    async def close(self) -> None:
        task, self._task = self._task, None
        self._closed = True
        await stop_task(task)
        if self.redis is not None:
            try:
                await self.redis.zrem(self._base + "inst", self.instance_id)
                await self.redis.delete(self._base + "c:" + self.instance_id)
            except REDIS_ERRORS:
                pass  # expires by itself

    async def publish(self) -> bool:
        """Push this instance's counters now (the heartbeat does it periodically)."""
        if self.redis is None:
            return False
        ttl_ms = int(self.heartbeat * HEARTBEATS_TO_EXPIRY * 1000)
        try:
            await self._publish_script(
                args=[
                    self._base, self.instance_id, ttl_ms, self.connections, self.subscriptions,
                    KEY_RETENTION_SECONDS * 1000,
                ]
            )
        except REDIS_ERRORS:
            self._unavailable()
            return False
        self._warned = False
        return True

    # Snapshot ------------------------------------------------------------------------------

    async def snapshot(self) -> dict[str, int]:
        """{"instances", "connections", "subscriptions", "online_users"} for the whole
        deployment (this instance alone with memory:// or while Redis is away)."""
        instances, connections, subscriptions = 1, self.connections, self.subscriptions
        if self.redis is not None:
            try:
                flat = await self._snapshot_script(args=[self._base])
            except REDIS_ERRORS:
                self._unavailable()
            else:
                for i in range(0, len(flat), 3):
                    if flat[i] == self.instance_id:
                        continue  # counted live above
                    instances += 1
                    connections += int(flat[i + 1])
                    subscriptions += int(flat[i + 2])
        online = await self.presence.online_count() if self.presence is not None else 0
        return {
            "instances": instances,
            "connections": connections,
            "subscriptions": subscriptions,
            "online_users": online,
        }

    # Internals ----------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.heartbeat)
            try:
                await self.publish()
            except Exception:
                raise_if_cancelled()
                log.exception("stats heartbeat failed")

    def _unavailable(self) -> None:
        raise_if_cancelled()
        if not self._warned:
            log.warning("stats: Redis unavailable; figures cover this instance only", exc_info=True)
        self._warned = True
