"""Rate limits, shared across instances through Redis, per instance in memory otherwise.

Built on the `limits` library's moving-window strategy (exact: N hits in any window,
the N+1st refused until the oldest hit ages out, which is the `retryAfter`). The
storage is the deployment's Redis (key prefix `<channel_prefix>:ratelimit`) when
BROADCAST_URL is redis://, else process memory. When Redis is unreachable the limiter
falls back to memory for a while instead of failing requests.

Classes (settings.rate_limit_<class>):
- `http`: every HTTP request per client address (`check_request`, 429 + Retry-After);
- `auth`: login and register, per user (per address when anonymous);
- `send_message`: sendMessage per user;
- `default`: every other GraphQL operation per user (per address when anonymous);
- `login_user_address` / `login_user`: FAILED logins per (username, address) and per
  username (`check_login` / `login_failed` / `login_succeeded`).

Resolvers call `await limiter.hit("send_message", client_key(viewer, ip))`, which
raises `RateLimited(retry_after)` once the budget is spent.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.exceptions import RedisError

from errors import RateLimited

log = logging.getLogger("parley.ratelimit")

CLASSES = {
    "http": "rate_limit_http_requests",
    "auth": "rate_limit_auth",
    "send_message": "rate_limit_send_message",
    "default": "rate_limit_default",
    "login_user_address": "rate_limit_login_user_address",
    "login_user": "rate_limit_login_user",
}
# After a Redis failure, use memory for this long before trying Redis again.
REDIS_RETRY_SECONDS = 5.0
REDIS_TIMEOUT_SECONDS = 0.5
_STORAGE_ERRORS = (RedisError, StorageError, OSError, TimeoutError)

OnLimited = Callable[[str, str, int], Awaitable[None]]


def client_key(viewer: Any, address: str | None) -> str:
    """Who a limit counts against: the user when signed in, else the client address."""
    if viewer is not None:
        return f"user:{viewer.user_id}"
    return f"ip:{address or 'unknown'}"


def _login_pair(username_key: str, address: str | None) -> str:
    return f"{username_key[:128]}|{address or 'unknown'}"


class RateLimiter:
    """One per process (built by auth.wiring); every method is a no-op when disabled."""

    def __init__(self, settings: Any, *, on_limited: OnLimited | None = None) -> None:
        self.enabled: bool = bool(settings.rate_limit_enabled)
        self.items: dict[str, RateLimitItem] = {
            name: parse(getattr(settings, field)) for name, field in CLASSES.items()
        }
        self.on_limited = on_limited
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._redis_storage: RedisStorage | None = None
        self._shared: MovingWindowRateLimiter | None = None
        self._redis_down_until = 0.0
        url: str = settings.broadcast_url
        if self.enabled and url.startswith(("redis://", "rediss://")):
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._redis_storage = RedisStorage(
                "async+" + url, implementation="redispy",
                key_prefix=f"{settings.channel_prefix}:ratelimit",
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 0),  # type: ignore[arg-type]
            )
            self._shared = MovingWindowRateLimiter(self._redis_storage)

    @property
    def shared(self) -> bool:
        """True while limits are kept in Redis (False: per-instance memory)."""
        return self._shared is not None and time.monotonic() >= self._redis_down_until

    async def close(self) -> None:
        if self._redis_storage is not None:
            client = getattr(self._redis_storage.bridge, "storage", None)  # redis.asyncio.Redis
            if client is not None:
                await client.aclose()

    # ------------------------------------------------------------------ public API

    async def hit(self, name: str, key: str, *, cost: int = 1) -> None:
        """Spend `cost` of `key`'s budget in class `name`, or raise RateLimited."""
        if not self.enabled:
            return
        item = self.items[name]
        if not await self._call("hit", item, key, cost=cost):
            await self._refuse(name, item, key)

    async def check_request(self, address: str | None) -> None:
        """The per-client HTTP request budget (server.py answers 429 + Retry-After)."""
        await self.hit("http", client_key(None, address))

    async def check_login(self, username_key: str, address: str | None) -> None:
        """Refuse a login attempt (before the password is checked) while throttled.

        Strict per (username, address): after N failures that pair is refused, even with
        the right password, until the oldest failure ages out. Loose per username: once
        the username's failure budget is spent, only addresses with no recent failure
        for it may try, so a flood from elsewhere never locks the owner out.
        """
        if not self.enabled:
            return
        pair_item = self.items["login_user_address"]
        pair = _login_pair(username_key, address)
        stats = await self._call("get_window_stats", pair_item, pair)
        if stats.remaining <= 0:
            await self._refuse("login_user_address", pair_item, pair)
        if stats.remaining < pair_item.amount:  # this address failed recently
            user_stats = await self._call("get_window_stats", self.items["login_user"], username_key[:128])
            if user_stats.remaining <= 0:
                await self._refuse("login_user", pair_item, pair)

    async def login_failed(self, username_key: str, address: str | None) -> None:
        """Count one failed login against the pair and the username."""
        if not self.enabled:
            return
        await self._call("hit", self.items["login_user_address"], _login_pair(username_key, address))
        await self._call("hit", self.items["login_user"], username_key[:128])

    async def login_succeeded(self, username_key: str, address: str | None) -> None:
        if not self.enabled:
            return
        await self._call("clear", self.items["login_user_address"], _login_pair(username_key, address))

    # ------------------------------------------------------------------ internals

    async def _refuse(self, name: str, item: RateLimitItem, key: str) -> None:
        stats = await self._call("get_window_stats", item, key)
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        if self.on_limited is not None:
            try:
                await self.on_limited(name, key, retry)
            except Exception:  # the audit trail must not turn a 429 into a 500
                log.exception("rate-limit hook failed")
        raise RateLimited(retry)

    async def _call(self, op: str, item: RateLimitItem, key: str, **kwargs: Any) -> Any:
        if self._shared is not None and time.monotonic() >= self._redis_down_until:
            try:
                return await getattr(self._shared, op)(item, key, **kwargs)
            except _STORAGE_ERRORS:
                self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
                log.warning(
                    "rate-limit storage unreachable; per-instance limits for %.0f s", REDIS_RETRY_SECONDS,
                    exc_info=True,
                )
        return await getattr(self._memory, op)(item, key, **kwargs)
