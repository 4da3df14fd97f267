"""Wires realtime into Services (loaded by server.py's lifespan before resolvers.wiring).

- `extras["hub"]`: the fan-out hub on BROADCAST_URL (memory:// or redis://), channel
  names prefixed with CHANNEL_PREFIX;
- `services.events`: the Publisher the write path announces committed changes with;
- `extras["ws_handler_factory"]`: `(schema, services) -> GraphQLWebSocket`, called by the
  lifespan once every part is set up (the handler reads presence, stats and the limiter
  from Services at run time); the built handler is kept in `extras["ws"]`.

This module is the composition root of realtime: it is the one place that hands the
realtime layer (which imports no db/, schema/ or resolvers/) the callables it needs,
so it imports those layers itself, lazily, inside the factory.
"""
from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from realtime.events import Publisher
from realtime.hub import Hub
from realtime.ws import GraphQLWebSocket


async def setup(services: Any) -> None:
    settings = services.settings
    hub = Hub(settings.broadcast_url, prefix=f"{settings.channel_prefix}:")
    await hub.start()
    services.extras["hub"] = hub
    services.events = Publisher(hub)
    services.extras["ws_handler_factory"] = build_handler


async def teardown(services: Any) -> None:
    handler = services.extras.pop("ws", None)
    if handler is not None:
        with contextlib.suppress(Exception):
            await handler.close()
    hub = services.extras.pop("hub", None)
    if hub is not None:
        await hub.stop()


def build_handler(schema: Any, services: Any) -> GraphQLWebSocket:
    from auth.authenticate import authenticate
    from auth.perimeter import client_address
    from resolvers.context import Context
    from schema.errors import format_errors
    from schema.limits import LimitCache, document_refusal, limit_rules

    settings = services.settings
    suggestions = settings.flag("field_suggestions_enabled")

    def make_context(viewer: Any, connection: Any) -> Any:
        return Context(
            services=services,
            viewer=viewer,
            ip_address=getattr(connection, "address", None),
            user_agent=getattr(connection, "user_agent", None),
            request_id=secrets.token_hex(8),
            transport="ws",
            connection=connection,
        )

    def formatted(errors: list[Any], ctx: Any) -> list[dict[str, Any]]:
        return format_errors(errors, request_id=getattr(ctx, "request_id", ""), suggestions=suggestions)

    handler = GraphQLWebSocket(
        strawberry=schema,
        services=services,
        hub=services.extras.get("hub"),
        authenticate=lambda token: authenticate(services, token),
        make_context=make_context,
        format_errors=formatted,
        limit_rules=lambda variables: limit_rules(settings, variables),
        limit_errors=LimitCache(settings).errors,
        check_sessions=lambda ids: dead_sessions(services, ids),
        client_address=lambda scope: client_address(scope, settings.trusted_proxies),
        refuse_document=document_refusal,
    )
    services.extras["ws"] = handler
    handler.start()  # listen for revocations before the first socket arrives
    return handler


async def dead_sessions(services: Any, session_ids: Sequence[int]) -> set[int]:
    """Which of `session_ids` no longer count (revoked, expired, idle); the live ones are
    marked active, since an open socket is activity (sockets live as long as sessions)."""
    from sqlalchemy import select, update

    from db import models
    from db.sessions import live_clause

    settings = services.settings
    wanted = list(set(session_ids))
    if not wanted:
        return set()
    now = datetime.now(UTC)
    idle = settings.session_idle_ttl_seconds
    async with services.db.writer() as session, session.begin():
        live = set(
            (
                await session.execute(
                    select(models.AuthSession.id).where(models.AuthSession.id.in_(wanted), live_clause(now, idle))
                )
            ).scalars()
        )
        stale = now - timedelta(seconds=settings.session_touch_interval_seconds)
        if live:
            await session.execute(
                update(models.AuthSession)
                .where(models.AuthSession.id.in_(list(live)), models.AuthSession.last_active_at < stale)
                .values(last_active_at=now)
            )
    return set(wanted) - live
