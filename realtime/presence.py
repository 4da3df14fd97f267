"""Presence per user across every device and every instance.

A user is *live* while any authenticated socket of theirs is open on a live instance,
and for `settings.presence_grace_seconds` after the last one closed (a reload or a
network switch does not flap). Others see the *effective* status:

    chose OFFLINE ("appear offline")   -> OFFLINE
    not live                           -> OFFLINE
    live and chose AWAY                -> AWAY
    live                               -> ONLINE

`Presence` publishes `publisher.presence(user_id, status, last_seen_at)` only when the
effective status changes, exactly once per change across the deployment, and stores
`lastSeenAt` (through the injected `store_last_seen(user_id, when)`) when the user
stops being visibly online: the end of the grace period, or choosing OFFLINE while
live. An invisible user's real disconnect is not recorded, so lastSeenAt never reveals
activity they chose to hide. Who may see whose presence is the subscription and field
layer's business, not this module's.

Stores. `memory://`: in-process state (one instance). Redis (the broadcast URL's
server; keys under `<channel_prefix>:presence:`; standalone Redis, no cluster):
- `inst`        ZSET instance id -> heartbeat deadline (ms, Redis clock). Each instance
                refreshes its own entry every `presence_heartbeat_seconds`; it is live
                while its deadline (3 heartbeats ahead) is in the future.
- `u:<user>`    SET of instance ids holding a socket of the user (written only when an
                instance's count for the user goes 0 <-> 1; the counts stay local).
- `i:<inst>`    SET of user ids with sockets on that instance (for reaping).
- `online`      HASH user -> since: users that are live (the state everyone agrees on).
- `pending`     ZSET user -> end of grace.
- `seen`        HASH user -> last seen (ms).
- `choice`      HASH user -> chosen status, refreshed from the database on connect.
Liveness of an instance is one ZADD per heartbeat, whatever its number of users (the
shared keys are also given a retention of a day past the last heartbeat anywhere).
Transitions are Lua scripts (atomic), so each change is claimed by exactly one
instance, which publishes it. The instance where the last socket closed arms a timer
for the end of grace; every instance also sweeps due `pending` entries and reaps dead
instances (deadline passed: crashed or partitioned) on each heartbeat, so a dead
instance's users go OFFLINE max(3 heartbeats, grace) after its last heartbeat (plus
at most one heartbeat; lastSeenAt is that last heartbeat), and a grace timer lost with
its instance still fires.

Failure: if Redis is unreachable nothing raises into requests. Answers come from
local knowledge (this instance's sockets and grace timers), the users touched meanwhile
are re-synchronised once Redis answers again, and an instance that finds it was reaped
while cut off re-registers all its users.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from realtime.locks import KeyedLocks

log = logging.getLogger("parley.presence")

ONLINE, AWAY, OFFLINE = "ONLINE", "AWAY", "OFFLINE"
STATUSES = (ONLINE, AWAY, OFFLINE)
REDIS_ERRORS = (RedisError, OSError, TimeoutError)
HEARTBEATS_TO_EXPIRY = 3
SWEEP_BATCH = 500
# Keys outlive the last heartbeat of the last instance by this much, then vanish (a
# deployment down that long comes back with everyone OFFLINE, which is the truth).
KEY_RETENTION_SECONDS = 24 * 3600
REDIS_POOL_SIZE = 32

StoreLastSeen = Callable[[int, datetime], Awaitable[None]]
LoadChoices = Callable[[Sequence[int]], Awaitable[dict[int, str]]]


class PresencePublisher(Protocol):
    def presence(self, user_id: int, status: str, last_seen_at: str | None) -> Awaitable[None]: ...


def effective_status(live: bool, choice: str | None) -> str:
    if choice == OFFLINE or not live:
        return OFFLINE
    return AWAY if choice == AWAY else ONLINE


def new_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def create_redis(url: str) -> Redis | None:
    """A client for presence/stats keys on the broadcast Redis (None for memory://).

    Short timeouts and no retries: a dead Redis must cost a request at most about a
    second once, after which the circuit answers locally until a heartbeat succeeds.
    """
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    # Blocking pool: a burst of concurrent calls waits for a connection instead of
    # failing at once (redis-py's default pool raises past its size). One immediate
    # retry for a pooled socket broken by a Redis restart; none on timeouts.
    pool = BlockingConnectionPool.from_url(
        url, max_connections=REDIS_POOL_SIZE, timeout=1.0, socket_timeout=1.0, socket_connect_timeout=1.0,
        decode_responses=True, retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    return Redis.from_pool(pool)


def _iso(ms: int | float | str | None) -> str | None:
    if ms is None or ms == "":
        return None
    return datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat()


def _dt(ms: int | float | str) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that a library turned into an ordinary error.

    redis-py's blocking pool waits under `asyncio.timeout`, which on Python 3.11 can
    swallow a cancellation that coincides with it; the caught RedisError must then not
    be mistaken for an outage, and the task must still end.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def stop_task(task: asyncio.Task[Any] | None, patience: float = 2.0) -> None:
    """Cancel `task` and wait for it, cancelling again if a cancellation was swallowed."""
    if task is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
    if not task.done():
        log.error("task %s did not stop within %.1fs", task.get_name(), patience)
    elif not task.cancelled() and task.exception() is not None:
        log.error("task %s failed", task.get_name(), exc_info=task.exception())


# ----------------------------------------------------------------------- Lua scripts

_LUA_COMMON = """
local base = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function live(uid, now)
  for _, inst in ipairs(redis.call('SMEMBERS', base .. 'u:' .. uid)) do
    local deadline = redis.call('ZSCORE', base .. 'inst', inst)
    if deadline and tonumber(deadline) > now then return true end
  end
  return false
end
"""

# ARGV: base, instance, user, choice ('' = keep). Returns {became_live, last_seen or '', choice or ''}.
_CONNECT = _LUA_COMMON + """
local inst, uid, choice = ARGV[2], ARGV[3], ARGV[4]
local now = now_ms()
redis.call('SADD', base .. 'u:' .. uid, inst)
redis.call('SADD', base .. 'i:' .. inst, uid)
redis.call('ZREM', base .. 'pending', uid)
if choice ~= '' then redis.call('HSET', base .. 'choice', uid, choice) end
local seen = redis.call('HGET', base .. 'seen', uid) or ''
local stored = redis.call('HGET', base .. 'choice', uid) or ''
return {redis.call('HSETNX', base .. 'online', uid, now), seen, stored}
"""

# ARGV: base, instance, user, grace_ms. Returns ms until the end of grace, or -1.
_DISCONNECT = _LUA_COMMON + """
local inst, uid, grace = ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
redis.call('SREM', base .. 'u:' .. uid, inst)
redis.call('SREM', base .. 'i:' .. inst, uid)
if redis.call('HEXISTS', base .. 'online', uid) == 0 or live(uid, now) then return -1 end
local due = redis.call('ZSCORE', base .. 'pending', uid)
if due then return math.max(0, tonumber(due) - now) end
redis.call('HSET', base .. 'seen', uid, now)
redis.call('ZADD', base .. 'pending', now + grace, uid)
return grace
"""

# ARGV: base, user. Returns {0, ms left} (not due / nothing to do) or {1, last_seen, choice}.
_FINALIZE = _LUA_COMMON + """
local uid = ARGV[2]
local now = now_ms()
local due = redis.call('ZSCORE', base .. 'pending', uid)
if not due then return {0, -1} end
if tonumber(due) > now then return {0, tonumber(due) - now} end
redis.call('ZREM', base .. 'pending', uid)
if live(uid, now) then return {0, -1} end
redis.call('HDEL', base .. 'online', uid)
local choice = redis.call('HGET', base .. 'choice', uid) or ''
return {1, redis.call('HGET', base .. 'seen', uid) or '', choice}
"""

# ARGV: base, instance, ttl_ms, retention_ms. Returns 1 if this instance was
# registered and alive. Shared keys live `retention` past the last heartbeat anywhere.
_HEARTBEAT = _LUA_COMMON + """
local inst, ttl, keep = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local old = redis.call('ZSCORE', base .. 'inst', inst)
redis.call('ZADD', base .. 'inst', now + ttl, inst)
for _, name in ipairs({'inst', 'online', 'pending', 'seen', 'choice', 'i:' .. inst}) do
  redis.call('PEXPIRE', base .. name, keep)
end
if old and tonumber(old) > now then return 1 end
return 0
"""

# ARGV: base, ttl_ms, grace_ms, batch. Reaps dead instances; returns users now pending.
_REAP = _LUA_COMMON + """
local ttl, grace, batch = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local dead = redis.call('ZRANGEBYSCORE', base .. 'inst', '-inf', now, 'WITHSCORES', 'LIMIT', 0, batch)
local pending = {}
for i = 1, #dead, 2 do
  local inst, deadline = dead[i], tonumber(dead[i + 1])
  if redis.call('ZREM', base .. 'inst', inst) == 1 then
    local last = deadline - ttl
    for _, uid in ipairs(redis.call('SMEMBERS', base .. 'i:' .. inst)) do
      redis.call('SREM', base .. 'u:' .. uid, inst)
      if redis.call('HEXISTS', base .. 'online', uid) == 1 and not live(uid, now)
          and not redis.call('ZSCORE', base .. 'pending', uid) then
        redis.call('HSET', base .. 'seen', uid, last)
        redis.call('ZADD', base .. 'pending', math.max(now, last + grace), uid)
        table.insert(pending, uid)
      end
    end
    redis.call('DEL', base .. 'i:' .. inst)
  end
end
return pending
"""

# ARGV: base, user, choice. Returns {previous choice or '', live (0/1), last_seen or ''}.
_SET_CHOICE = _LUA_COMMON + """
local uid, choice = ARGV[2], ARGV[3]
local old = redis.call('HGET', base .. 'choice', uid) or ''
redis.call('HSET', base .. 'choice', uid, choice)
local seen = redis.call('HGET', base .. 'seen', uid) or ''
return {old, redis.call('HEXISTS', base .. 'online', uid), seen}
"""

# ARGV: base, limit. Users whose grace is over by Redis's clock.
_DUE = _LUA_COMMON + """
return redis.call('ZRANGEBYSCORE', base .. 'pending', '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[2]))
"""


class Presence:
    """Presence of users; one per process (see the module docstring).

    The WebSocket layer calls `connect(user_id)` once per authenticated socket and
    `disconnect(user_id)` exactly once when that socket ends; the accounts resolver
    calls `set_choice(user_id, status)` after storing the choice. Lifecycle:
    `await start()` ... `await close()`.
    """

    def __init__(
        self,
        settings: Any,
        publisher: PresencePublisher,
        *,
        redis: Redis | None = None,
        instance_id: str | None = None,
        store_last_seen: StoreLastSeen | None = None,
        load_choices: LoadChoices | None = None,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.redis = redis
        self.instance_id = instance_id or new_instance_id()
        self.store_last_seen = store_last_seen
        self.load_choices = load_choices
        self.grace = float(settings.presence_grace_seconds)
        self.heartbeat = float(settings.presence_heartbeat_seconds)
        self._base = f"{settings.channel_prefix}:presence:"

        self._sockets: dict[int, int] = {}  # user -> sockets open on this instance
        self._choices: dict[int, str] = {}  # memory: the truth; Redis: fallback cache
        self._timers: dict[int, asyncio.TimerHandle] = {}  # grace timers armed here
        self._locks = KeyedLocks()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._closed = False
        # Memory store (and, with Redis, nothing): live users with their last seen.
        self._live: dict[int, int] = {}  # user -> since (ms)
        self._seen: dict[int, int] = {}  # user -> last seen (ms)
        self._pending: dict[int, float] = {}  # user -> end of grace (loop time)
        # Redis state.
        self._redis_ok = redis is not None
        self._dirty: set[int] = set()  # users whose Redis entry may be out of date
        self._resync_all = False
        if redis is not None:
            self._scripts = {
                name: redis.register_script(code)
                for name, code in (
                    ("connect", _CONNECT), ("disconnect", _DISCONNECT), ("finalize", _FINALIZE),
                    ("heartbeat", _HEARTBEAT), ("reap", _REAP), ("set_choice", _SET_CHOICE), ("due", _DUE),
                )
            }

    # Lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Register this instance (Redis) and start heartbeating; never raises."""
        if self.redis is None or self._loop_task is not None:
            return
        await self._beat()
        self._loop_task = asyncio.create_task(self._heartbeat_loop(), name="presence-heartbeat")

    async def close(self) -> None:
        """Leave cleanly: this instance's users enter their grace period everywhere
        (another instance finishes it), timers and the heartbeat stop."""
        if self._closed:
            return
        self._closed = True
        await stop_task(self._loop_task)
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.redis is not None and self._redis_ok:
            users = [user for user, count in self._sockets.items() if count > 0]
            try:
                for user in users:
                    await self._scripts["disconnect"](
                        args=[self._base, self.instance_id, user, int(self.grace * 1000)]
                    )
                await self.redis.zrem(self._base + "inst", self.instance_id)
                await self.redis.delete(self._base + "i:" + self.instance_id)
            except REDIS_ERRORS:
                log.warning("presence: could not deregister %s; it will be reaped", self.instance_id)
        elif self.redis is None and self._live:
            # Single process: nobody is left to end the grace periods, so the users
            # visibly online go offline now (best effort, bounded).
            now = _now_ms()
            visible = [u for u in self._live if effective_status(True, self._choices.get(u)) != OFFLINE]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    for user in visible:
                        await self._record_last_seen(user, now)
            self._live.clear()
        self._sockets.clear()

    # Sockets ------------------------------------------------------------------------------

    async def connect(self, user_id: int) -> None:
        """An authenticated socket of `user_id` opened on this instance."""
        count = self._sockets.get(user_id, 0) + 1
        self._sockets[user_id] = count
        if count == 1 and not self._closed:
            await self._sync(user_id)

    async def disconnect(self, user_id: int) -> None:
        """A socket counted by `connect` ended (call exactly once per socket)."""
        count = self._sockets.get(user_id, 0) - 1
        if count > 0:
            self._sockets[user_id] = count
            return
        self._sockets.pop(user_id, None)
        if count == 0 and not self._closed:
            await self._sync(user_id)

    def local_sockets(self, user_id: int) -> int:
        return self._sockets.get(user_id, 0)

    # Choice ------------------------------------------------------------------------------

    async def set_choice(self, user_id: int, status: str) -> None:
        """The user chose `status` (ONLINE = automatic); call after storing it.

        Publishes if the effective status changed; choosing OFFLINE while live stores
        lastSeenAt, as the user stops being visibly online.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown presence status {status!r}")
        async with self._locks(user_id):
            old, live, seen = await self._store_choice(user_id, status)
            before, after = effective_status(live, old), effective_status(live, status)
            if before == after:
                return
            if after == OFFLINE:
                now = _now_ms()
                await self._remember_seen(user_id, now)
                await self._record_last_seen(user_id, now)
                seen = now
            await self.publisher.presence(user_id, after, _iso(seen))

    # The accounts resolver looks for this name.
    choice_changed = set_choice

    # Queries -------------------------------------------------------------------------------

    async def status_of(self, user_ids: Iterable[int]) -> dict[int, str]:
        """Effective status of each user (never raises; local knowledge if Redis is down)."""
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return {}
        if self.redis is not None and self._redis_ok:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.hmget(self._base + "online", [str(u) for u in wanted])
                    pipe.hmget(self._base + "choice", [str(u) for u in wanted])
                    live_raw, choice_raw = await pipe.execute()
                return {
                    user: effective_status(live is not None, choice or self._choices.get(user))
                    for user, live, choice in zip(wanted, live_raw, choice_raw, strict=True)
                }
            except REDIS_ERRORS:
                self._redis_failed("status_of")
        return {user: effective_status(self._is_live_locally(user), self._choices.get(user)) for user in wanted}

    async def online_count(self) -> int:
        """Users live across the deployment (invisible ones included: an admin figure)."""
        if self.redis is not None and self._redis_ok:
            try:
                return int(await self.redis.hlen(self._base + "online"))
            except REDIS_ERRORS:
                self._redis_failed("online_count")
        if self.redis is None:
            return len(self._live)
        return sum(1 for user in set(self._sockets) | set(self._timers) if self._is_live_locally(user))

    # Transitions ---------------------------------------------------------------------------

    async def _sync(self, user_id: int) -> None:
        """Bring the shared state in line with this instance's socket count (idempotent)."""
        async with self._locks(user_id):
            if self._sockets.get(user_id, 0) > 0:
                timer = self._timers.pop(user_id, None)
                if timer is not None:
                    timer.cancel()
                choice = await self._fresh_choice(user_id)
                became, seen = await self._store_connect(user_id, choice)
                if became:
                    status = effective_status(True, self._choices.get(user_id))
                    if status != OFFLINE:
                        await self.publisher.presence(user_id, status, _iso(seen))
            else:
                left = await self._store_disconnect(user_id)
                if left is not None:
                    self._arm(user_id, left)

    async def _finalize(self, user_id: int) -> None:
        """End of a grace period: OFFLINE unless a socket came back meanwhile."""
        async with self._locks(user_id):
            result = await self._store_finalize(user_id)
            if result is None:
                return
            if isinstance(result, float):  # not due yet by the store's clock
                self._arm(user_id, result)
                return
            seen, choice = result
            if effective_status(True, choice) == OFFLINE:
                return  # invisible: nobody saw them online, nothing to record
            await self._record_last_seen(user_id, seen)
            await self.publisher.presence(user_id, OFFLINE, _iso(seen))

    def _arm(self, user_id: int, delay: float) -> None:
        if self._closed:
            return
        old = self._timers.pop(user_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[user_id] = loop.call_later(max(0.0, delay), self._grace_over, user_id)

    def _grace_over(self, user_id: int) -> None:
        self._timers.pop(user_id, None)
        self._spawn(self._finalize(user_id))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("presence task failed", exc_info=task.exception())

    # Store operations: Redis, else memory -------------------------------------------------

    async def _store_connect(self, user_id: int, choice: str | None) -> tuple[bool, int | None]:
        """(became live, last seen ms); `choice` is the freshly loaded one, if any."""
        if choice is not None:
            self._choices[user_id] = choice
        if self.redis is not None:
            if self._redis_ok:
                try:
                    became, seen, stored = await self._scripts["connect"](
                        args=[self._base, self.instance_id, user_id, choice or ""]
                    )
                    self._dirty.discard(user_id)
                    if stored:
                        self._choices[user_id] = stored
                    return bool(became), int(seen) if seen else None
                except REDIS_ERRORS:
                    self._redis_failed("connect")
            self._dirty.add(user_id)
            return False, None
        self._pending.pop(user_id, None)
        if user_id in self._live:
            return False, None
        self._live[user_id] = _now_ms()
        return True, self._seen.get(user_id)

    async def _store_disconnect(self, user_id: int) -> float | None:
        """Seconds until the end of grace if the user now has no socket anywhere."""
        if self.redis is not None:
            if self._redis_ok:
                try:
                    left = int(
                        await self._scripts["disconnect"](
                            args=[self._base, self.instance_id, user_id, int(self.grace * 1000)]
                        )
                    )
                    self._dirty.discard(user_id)
                    return None if left < 0 else left / 1000
                except REDIS_ERRORS:
                    self._redis_failed("disconnect")
            self._dirty.add(user_id)
            return self.grace  # local grace: answers status_of while Redis is away
        if user_id not in self._live:
            return None
        if user_id not in self._pending:
            self._seen[user_id] = _now_ms()
            self._pending[user_id] = asyncio.get_running_loop().time() + self.grace
        return max(0.0, self._pending[user_id] - asyncio.get_running_loop().time())

    async def _store_finalize(self, user_id: int) -> tuple[int, str | None] | float | None:
        """(last seen ms, choice) if the user just went offline; seconds left if the
        grace is not over yet; None if nothing happened."""
        if self.redis is not None:
            if not self._redis_ok:
                self._dirty.add(user_id)  # the heartbeat sweep finishes it
                return None
            try:
                reply = await self._scripts["finalize"](args=[self._base, user_id])
            except REDIS_ERRORS:
                self._redis_failed("finalize")
                self._dirty.add(user_id)
                return None
            if int(reply[0]) == 0:
                left_ms = int(reply[1])
                return None if left_ms < 0 else left_ms / 1000
            seen = int(reply[1]) if reply[1] else _now_ms()
            return seen, reply[2] or self._choices.get(user_id)
        due = self._pending.get(user_id)
        if due is None:
            return None
        left = due - asyncio.get_running_loop().time()
        if left > 0:
            return left
        del self._pending[user_id]
        if self._sockets.get(user_id, 0) > 0:
            return None
        self._live.pop(user_id, None)
        return self._seen.get(user_id, _now_ms()), self._choices.get(user_id)

    async def _store_choice(self, user_id: int, status: str) -> tuple[str | None, bool, int | None]:
        """Write the choice; (previous choice, live, last seen ms)."""
        previous = self._choices.get(user_id)
        self._choices[user_id] = status
        if self.redis is not None:
            if self._redis_ok:
                try:
                    old, live, seen = await self._scripts["set_choice"](args=[self._base, user_id, status])
                    return old or previous, bool(int(live)), int(seen) if seen else None
                except REDIS_ERRORS:
                    self._redis_failed("set_choice")
            return previous, self._is_live_locally(user_id), None
        return previous, user_id in self._live, self._seen.get(user_id)

    async def _remember_seen(self, user_id: int, when_ms: int) -> None:
        if self.redis is not None and self._redis_ok:
            try:
                await self.redis.hset(self._base + "seen", str(user_id), when_ms)
            except REDIS_ERRORS:
                self._redis_failed("seen")
        elif self.redis is None:
            self._seen[user_id] = when_ms

    async def _fresh_choice(self, user_id: int) -> str | None:
        """The stored choice (the database is the truth; caches may be stale)."""
        if self.load_choices is None:
            return None
        try:
            return (await self.load_choices([user_id])).get(user_id)
        except Exception:
            log.warning("presence: loading the choice of user %s failed", user_id, exc_info=True)
            return None

    async def _record_last_seen(self, user_id: int, when_ms: int) -> None:
        if self.store_last_seen is None:
            return
        try:
            await self.store_last_seen(user_id, _dt(when_ms))
        except Exception:
            log.warning("presence: storing last seen of user %s failed", user_id, exc_info=True)

    def _is_live_locally(self, user_id: int) -> bool:
        if self.redis is None:
            return user_id in self._live
        return self._sockets.get(user_id, 0) > 0 or user_id in self._timers

    # Redis upkeep ----------------------------------------------------------------------------

    def _redis_failed(self, what: str) -> None:
        raise_if_cancelled()
        if self._redis_ok:
            log.warning("presence: Redis unavailable (%s); answering from local state", what, exc_info=True)
        self._redis_ok = False

    async def _heartbeat_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.heartbeat)
            try:
                await self._beat()
            except Exception:  # a bug of ours must not end the heartbeat
                raise_if_cancelled()
                log.exception("presence heartbeat failed")

    async def _beat(self) -> None:
        """Refresh this instance, re-sync what failed, reap dead instances, finish due
        grace periods. Also the only way back from the degraded (local) mode."""
        ttl_ms = int(self.heartbeat * HEARTBEATS_TO_EXPIRY * 1000)
        try:
            registered = int(
                await self._scripts["heartbeat"](
                    args=[self._base, self.instance_id, ttl_ms, KEY_RETENTION_SECONDS * 1000]
                )
            )
        except REDIS_ERRORS:
            self._redis_failed("heartbeat")
            self._resync_all = True
            return
        if not self._redis_ok:
            log.warning("presence: Redis reachable again; re-synchronising")
        self._redis_ok = True
        if not registered and self._sockets:
            self._resync_all = True  # we were (or looked) dead: our entries may be gone
        if self._resync_all:
            self._resync_all = False
            self._dirty.update(self._sockets)
        for user_id in list(self._dirty):
            if user_id not in self._sockets and user_id in self._timers:
                self._timers.pop(user_id).cancel()
            await self._sync(user_id)
        try:
            reaped = await self._scripts["reap"](args=[self._base, ttl_ms, int(self.grace * 1000), 100])
            due = await self._scripts["due"](args=[self._base, SWEEP_BATCH])
        except REDIS_ERRORS:
            self._redis_failed("sweep")
            return
        for raw in reaped:  # a dead instance's users: finish their grace here, on time
            if int(raw) not in self._timers:
                self._arm(int(raw), 0.0)
        for raw in due:
            await self._finalize(int(raw))

    # Per-user serialisation -------------------------------------------------------------------

