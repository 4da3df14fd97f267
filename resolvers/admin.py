"""Admin-only reads: deployment statistics and the audit log.

`require_admin(ctx)`: UNAUTHENTICATED without a viewer (with the token's reason),
FORBIDDEN for a signed-in non-admin. `is_admin` is read from the user row on every
request (auth.authenticate), so a demotion takes effect at once.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from auth.viewer import Viewer
from db import audit as audit_db
from db import models
from errors import Forbidden
from resolvers.context import Context

# Totals are exact COUNTs; adminMonitor may poll every second from several admins,
# so each instance reuses them for this long.
TOTALS_TTL_SECONDS = 1.0


def require_admin(ctx: Context) -> Viewer:
    viewer = ctx.require_viewer()
    if not viewer.is_admin:
        raise Forbidden("Admins only")
    return viewer


@dataclass(frozen=True)
class AdminStats:
    at: datetime
    instances: int
    online_users: int
    connections: int
    subscriptions: int
    messages_last_minute: int
    total_users: int
    total_conversations: int
    total_groups: int
    total_messages: int


def _count(model: Any, *where: Any) -> Any:
    return select(func.count()).select_from(model).where(*where).scalar_subquery()


async def _totals(ctx: Context, now: datetime) -> dict[str, int]:
    cache = ctx.services.extras.setdefault("admin_totals", {})
    if cache and cache["expires"] > time.monotonic():
        return cache["values"]  # type: ignore[no-any-return]
    stmt = select(
        _count(models.User).label("users"),
        _count(models.Conversation, models.Conversation.deleted_at.is_(None)).label("conversations"),
        _count(models.Group, models.Group.deleted_at.is_(None)).label("groups"),
        _count(models.Message).label("messages"),
        _count(models.Message, models.Message.created_at >= now - timedelta(minutes=1)).label("last_minute"),
    )
    async with ctx.db.session() as s:
        row = (await s.execute(stmt)).one()
    values = {key: int(value or 0) for key, value in row._mapping.items()}
    cache.update(values=values, expires=time.monotonic() + TOTALS_TTL_SECONDS)
    return values


async def _live_figures(ctx: Context) -> dict[str, int]:
    """Cluster figures from the realtime engineer's `extras["stats"].snapshot()`, else
    this instance alone with no sockets."""
    source = ctx.services.extras.get("stats")
    snapshot: dict[str, Any] = await source.snapshot() if source is not None else {}

    def pick(*names: str, default: int = 0) -> int:
        for name in names:
            if snapshot.get(name) is not None:
                return int(snapshot[name])
        return default

    return {
        "instances": pick("instances", default=1),
        "connections": pick("connections"),
        "subscriptions": pick("subscriptions"),
        "online_users": pick("onlineUsers", "online_users"),
    }


async def admin_stats(ctx: Context) -> AdminStats:
    require_admin(ctx)
    now = models.utcnow()
    totals = await _totals(ctx, now)
    live = await _live_figures(ctx)
    return AdminStats(
        at=now, instances=live["instances"], online_users=live["online_users"], connections=live["connections"],
        subscriptions=live["subscriptions"], messages_last_minute=totals["last_minute"],
        total_users=totals["users"], total_conversations=totals["conversations"], total_groups=totals["groups"],
        total_messages=totals["messages"],
    )


async def audit_log(
    ctx: Context, kind: str | None, *, before_id: int | None, limit: int
) -> Sequence[models.AuditEvent]:
    """Newest first; `limit` rows (callers pass page size + 1)."""
    require_admin(ctx)
    async with ctx.db.session() as s:
        rows = await audit_db.page(s, kind=kind, before_id=before_id, limit=limit)
    for row in rows:
        ctx.prime(audit_event_by_id, row.id, row)
    return rows


async def audit_event_by_id(ctx: Context, keys: Sequence[int]) -> list[models.AuditEvent | None]:
    """Loader for auditEvents deliveries (the event carries only the row id)."""
    async with ctx.db.session() as s:
        found = await audit_db.by_ids(s, keys)
    return [found.get(key) for key in keys]
