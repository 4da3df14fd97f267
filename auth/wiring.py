"""Adds the rate limiter to Services (loaded by server.py's lifespan).

Rate-limit refusals are audited, at most once per (class, key) and refusal window
on each instance, so a flood of refused requests does not become a flood of writes.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from auth import audit
from auth.ratelimit import RateLimiter

log = logging.getLogger("parley.auth")
MAX_TRACKED = 10_000


class _RateLimitAudit:
    def __init__(self, services: Any) -> None:
        self.services = services
        self.recent: dict[tuple[str, str], float] = {}

    async def __call__(self, name: str, key: str, retry_after: int) -> None:
        now = time.monotonic()
        if self.recent.get((name, key), 0.0) > now:
            return
        if len(self.recent) >= MAX_TRACKED:
            self.recent = {k: until for k, until in self.recent.items() if until > now}
        self.recent[(name, key)] = now + retry_after
        kind, _, ident = key.partition(":")
        actor_id = int(ident) if kind == "user" and ident.isdigit() else None
        ip = ident if kind == "ip" else None
        if name.startswith("login"):  # key is "<username>|<address>" or "<username>"
            ip = key.rpartition("|")[2] if "|" in key else None
        await audit.record_now(
            self.services.db, self.services.events, audit.RATE_LIMITED, actor_id, ip,
            f"class={name} key={key[:200]} retry_after={retry_after}",
        )


async def setup(services: Any) -> None:
    services.limiter = RateLimiter(services.settings, on_limited=_RateLimitAudit(services))


async def teardown(services: Any) -> None:
    limiter = services.limiter
    if limiter is not None:
        await limiter.close()
