"""Admin-only fields: adminStats and auditLog (FORBIDDEN for non-admins).

`AuditEvent.from_row` and `AdminStats.from_stats` are also what the auditEvents and
adminMonitor subscriptions return (resolvers.admin.audit_event_by_id loads a row).
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from db import models
from errors import BadUserInput
from resolvers import accounts
from resolvers import admin as admin_resolvers
from schema import ids
from schema.pagination import PageInfo, decode_cursor, encode_cursor, page_info, page_request, slice_page

if TYPE_CHECKING:
    from schema.users import User

UserType = Annotated["User", strawberry.lazy("schema.users")]
AUDIT_KIND_MAX_LENGTH = 64


@strawberry.type(description="Figures for the whole deployment, across every server instance.")
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

    @classmethod
    def from_stats(cls, stats: admin_resolvers.AdminStats) -> AdminStats:
        return cls(
            at=stats.at, instances=stats.instances, online_users=stats.online_users,
            connections=stats.connections, subscriptions=stats.subscriptions,
            messages_last_minute=stats.messages_last_minute, total_users=stats.total_users,
            total_conversations=stats.total_conversations, total_groups=stats.total_groups,
            total_messages=stats.total_messages,
        )


@strawberry.type(
    description="A security- or moderation-relevant event: a login, a failed login, a logout, a revoked session, a "
    "rate limit hit, a registration, a role change, a message deleted by a moderator."
)
class AuditEvent:
    row: strawberry.Private[models.AuditEvent]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(ids.encode("AuditEvent", self.row.id))

    @strawberry.field
    def at(self) -> datetime:
        return self.row.at

    @strawberry.field
    def kind(self) -> str:
        return self.row.kind

    @strawberry.field
    async def actor(self, info: strawberry.Info) -> UserType | None:
        if self.row.actor_id is None:
            return None
        row = await info.context.loader(accounts.user_by_id).load(self.row.actor_id)
        if row is None:
            return None
        from schema.users import User

        return User.from_row(row)

    @strawberry.field
    def ip_address(self) -> str | None:
        return self.row.ip_address

    @strawberry.field
    def detail(self) -> str | None:
        return self.row.detail

    @classmethod
    def from_row(cls, row: models.AuditEvent) -> AuditEvent:
        return cls(row=row)


@strawberry.type
class AuditEventEdge:
    cursor: str
    node: AuditEvent


@strawberry.type
class AuditEventConnection:
    edges: list[AuditEventEdge]
    page_info: PageInfo


def _cursor(row: models.AuditEvent) -> str:
    return encode_cursor(row.id)


@strawberry.type
class Query:
    @strawberry.field(description="Admins only.")
    async def admin_stats(self, info: strawberry.Info) -> AdminStats:
        return AdminStats.from_stats(await admin_resolvers.admin_stats(info.context))

    @strawberry.field(description="Admins only.")
    async def audit_log(
        self, info: strawberry.Info, kind: str | None = None, first: int | None = 50, after: str | None = None
    ) -> AuditEventConnection:
        ctx = info.context
        admin_resolvers.require_admin(ctx)
        request = page_request(first=first, after=after, default=50, maximum=ctx.settings.max_page_size)
        before_id = None
        if after is not None:
            (value,) = decode_cursor(after, 1, field="after")
            if not isinstance(value, int) or value <= 0:
                raise BadUserInput("Malformed cursor", field="after")
            before_id = value
        if kind is not None and len(kind) > AUDIT_KIND_MAX_LENGTH:
            kind = kind[:AUDIT_KIND_MAX_LENGTH + 1]  # matches nothing, like any unknown kind
        rows = await admin_resolvers.audit_log(ctx, kind, before_id=before_id, limit=request.size + 1)
        page = slice_page(rows, request)
        return AuditEventConnection(
            edges=[AuditEventEdge(cursor=_cursor(row), node=AuditEvent.from_row(row)) for row in page.rows],
            page_info=page_info(page, _cursor),
        )
