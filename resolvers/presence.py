"""The database side of presence: what `realtime.presence.Presence` is handed.

realtime/ never imports db/; `resolvers.wiring` builds these callables over the
app's `Database` and passes them in. (The AdminStats resolver, which adds the live
figures of `realtime.stats.Stats.snapshot()` to SQL totals, is `resolvers.admin.admin_stats`.)
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from sqlalchemy import or_, select, update

from db import models
from db.engine import Database, transaction


def last_seen_writer(db: Database) -> Callable[[int, datetime], Awaitable[None]]:
    """`store_last_seen(user_id, when)`: sets User.last_seen_at, never moving it back
    (two instances may report one user's departures out of order)."""

    async def store_last_seen(user_id: int, when: datetime) -> None:
        async with transaction(db) as tx:
            await tx.session.execute(
                update(models.User)
                .where(
                    models.User.id == user_id,
                    or_(models.User.last_seen_at.is_(None), models.User.last_seen_at < when),
                )
                .values(last_seen_at=when)
            )

    return store_last_seen


def choice_loader(db: Database) -> Callable[[Sequence[int]], Awaitable[dict[int, str]]]:
    """`load_choices(user_ids)`: the stored setPresence choice of each existing user."""

    async def load_choices(user_ids: Sequence[int]) -> dict[int, str]:
        if not user_ids:
            return {}
        async with db.session() as s:
            rows = await s.execute(
                select(models.User.id, models.User.presence_choice).where(models.User.id.in_(list(user_ids)))
            )
            return {int(user_id): str(choice) for user_id, choice in rows}

    return load_choices
