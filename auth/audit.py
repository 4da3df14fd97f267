"""The audit log: security- and moderation-relevant events, for admins.

Call `record(tx.session, ...)` inside the transaction that does the audited thing, and
announce it once committed:

    row = await audit.record(tx.session, audit.ROLE_CHANGED, viewer.user_id, ctx.ip_address, detail)
    tx.after_commit(ctx.events.audit, row.id)

`record_now` is for events that must be kept although the request fails (a failed
login, a rate-limit hit): it commits in a transaction of its own.
"""
from __future__ import annotations

from typing import Any

from db import audit as audit_db
from db import models
from db.engine import Database, transaction

LOGIN = "login"
LOGIN_FAILED = "login_failed"
LOGOUT = "logout"
REGISTER = "register"
SESSION_REVOKED = "session_revoked"
SESSIONS_REVOKED = "sessions_revoked"
REFRESH_REUSED = "refresh_token_reused"
PASSWORD_CHANGED = "password_changed"
RATE_LIMITED = "rate_limited"
ROLE_CHANGED = "role_changed"
ADMIN_GRANTED = "admin_granted"
MESSAGE_DELETED_BY_MODERATOR = "message_deleted_by_moderator"


async def record(
    session: Any, kind: str, actor_id: int | None, ip: str | None, detail: str | None
) -> models.AuditEvent:
    """Append one audit row in the caller's transaction (flushed, so `row.id` is set)."""
    return await audit_db.insert(session, kind=kind, actor_id=actor_id, ip_address=ip, detail=detail)


async def record_now(
    db: Database, events: Any, kind: str, actor_id: int | None, ip: str | None, detail: str | None
) -> int:
    """Append one audit row in a transaction of its own and announce it after commit."""
    async with transaction(db) as tx:
        row = await record(tx.session, kind, actor_id, ip, detail)
        if events is not None:
            tx.after_commit(events.audit, row.id)
    return row.id
