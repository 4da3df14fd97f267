"""Audit rows: append, page newest first, fetch by id."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db import models

MAX_DETAIL = 2000


async def insert(
    session: AsyncSession, *, kind: str, actor_id: int | None, ip_address: str | None, detail: str | None
) -> models.AuditEvent:
    row = models.AuditEvent(
        at=models.utcnow(), kind=kind[:64], actor_id=actor_id,
        ip_address=ip_address[:64] if ip_address else None,
        detail=detail[:MAX_DETAIL] if detail else None,
    )
    session.add(row)
    await session.flush()
    return row


async def page(
    session: AsyncSession, *, kind: str | None, before_id: int | None, limit: int
) -> Sequence[models.AuditEvent]:
    """Newest first (by id, which increases with time); `limit` rows (callers pass size + 1)."""
    stmt = select(models.AuditEvent)
    if kind is not None:
        stmt = stmt.where(models.AuditEvent.kind == kind)
    if before_id is not None:
        stmt = stmt.where(models.AuditEvent.id < before_id)
    stmt = stmt.order_by(models.AuditEvent.id.desc()).limit(limit)
    return (await session.execute(stmt)).scalars().all()


async def by_ids(session: AsyncSession, audit_ids: Iterable[int]) -> dict[int, models.AuditEvent]:
    wanted = list(set(audit_ids))
    if not wanted:
        return {}
    rows = (await session.execute(select(models.AuditEvent).where(models.AuditEvent.id.in_(wanted)))).scalars()
    return {row.id: row for row in rows}
