"""Session rows (one per signed-in device): creation, locking, listing, revocation."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db import models


def live_clause(now: datetime, idle_seconds: int) -> ColumnElement[bool]:
    """Not revoked, not past its absolute lifetime, and used within the idle lifetime."""
    return and_(
        models.AuthSession.revoked_at.is_(None),
        models.AuthSession.expires_at > now,
        models.AuthSession.last_active_at > now - timedelta(seconds=idle_seconds),
    )


async def create(
    session: AsyncSession, *, user_id: int, now: datetime, expires_at: datetime, refresh_hash: str,
    ip_address: str | None, user_agent: str | None,
) -> models.AuthSession:
    row = models.AuthSession(
        user_id=user_id, created_at=now, last_active_at=now, expires_at=expires_at,
        ip_address=(ip_address or None) and ip_address[:64], user_agent=(user_agent or None) and user_agent[:512],
        refresh_hash=refresh_hash, generation=0,
    )
    session.add(row)
    await session.flush()
    return row


async def get_for_update(session: AsyncSession, session_id: int) -> models.AuthSession | None:
    """The row locked until the transaction ends (PostgreSQL); SQLite writers are serialised anyway."""
    return (
        await session.execute(
            select(models.AuthSession)
            .where(models.AuthSession.id == session_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()


async def live_for_user(
    session: AsyncSession, user_id: int, *, now: datetime, idle_seconds: int
) -> Sequence[models.AuthSession]:
    """The user's live sessions, most recently active first."""
    return (
        await session.execute(
            select(models.AuthSession)
            .where(models.AuthSession.user_id == user_id, live_clause(now, idle_seconds))
            .order_by(models.AuthSession.last_active_at.desc(), models.AuthSession.id.desc())
        )
    ).scalars().all()


async def revoke(
    session: AsyncSession, session_ids: Iterable[int], *, reason: str, now: datetime
) -> list[int]:
    """Revoke the given sessions that are not revoked yet; returns the ids it changed."""
    wanted = list(set(session_ids))
    if not wanted:
        return []
    result = await session.execute(
        update(models.AuthSession)
        .where(models.AuthSession.id.in_(wanted), models.AuthSession.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason[:64])
        .returning(models.AuthSession.id)
    )
    return sorted(result.scalars())


async def revoke_for_user(
    session: AsyncSession, user_id: int, *, keep: int | None, reason: str, now: datetime, idle_seconds: int
) -> list[int]:
    """Revoke every live session of `user_id` except `keep`; returns the revoked ids."""
    conditions = [models.AuthSession.user_id == user_id, live_clause(now, idle_seconds)]
    if keep is not None:
        conditions.append(models.AuthSession.id != keep)
    result = await session.execute(
        update(models.AuthSession)
        .where(*conditions)
        .values(revoked_at=now, revoked_reason=reason[:64])
        .returning(models.AuthSession.id)
    )
    return sorted(result.scalars())


async def count_live(session: AsyncSession, *, now: datetime, idle_seconds: int) -> int:
    return int(
        (
            await session.execute(
                select(func.count()).select_from(models.AuthSession).where(live_clause(now, idle_seconds))
            )
        ).scalar_one()
    )
