"""Helpers for the accounts tests: real register/login over GraphQL, captured events,
direct row reads for asserting what was (not) written."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from db import models
from realtime.events import Publisher
from settings import Settings

PASSWORD = "correct horse battery"

AUTH_FIELDS = """
  accessToken accessTokenExpiresAt refreshToken
  user { id username displayName isAdmin }
  session { id current ipAddress userAgent createdAt lastActiveAt expiresAt }
"""
REGISTER = f"mutation($input: RegisterInput!) {{ register(input: $input) {{ {AUTH_FIELDS} }} }}"
LOGIN = f"mutation($input: LoginInput!) {{ login(input: $input) {{ {AUTH_FIELDS} }} }}"
REFRESH = f"mutation($token: String!) {{ refreshToken(refreshToken: $token) {{ {AUTH_FIELDS} }} }}"


async def register(gql: Any, username: str, password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
    data = await gql.ok(REGISTER, {"input": {"username": username, "password": password, **extra}})
    return data["register"]  # type: ignore[no-any-return]


async def login(gql: Any, username: str, password: str = PASSWORD, **kw: Any) -> dict[str, Any]:
    data = await gql.ok(LOGIN, {"input": {"username": username, "password": password}}, **kw)
    return data["login"]  # type: ignore[no-any-return]


async def login_error(gql: Any, username: str, password: str, **kw: Any) -> dict[str, Any]:
    return await gql.error(LOGIN, {"input": {"username": username, "password": password}}, **kw)  # type: ignore[no-any-return]


def services(app: Any) -> Any:
    return app.state.parley.services


async def count(app: Any, model: Any, *where: Any) -> int:
    async with services(app).db.session() as s:
        return int((await s.execute(select(func.count()).select_from(model).where(*where))).scalar_one())


async def rows(app: Any, stmt: Any) -> list[Any]:
    async with services(app).db.session() as s:
        return list((await s.execute(stmt)).scalars().all())


async def audit_kinds(app: Any) -> list[str]:
    return [r.kind for r in await rows(app, select(models.AuditEvent).order_by(models.AuditEvent.id))]


async def execute(app: Any, stmt: Any) -> None:
    async with services(app).db.writer() as s, s.begin():
        await s.execute(stmt)


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    """A Redis namespace per test: presence and rate-limit state never leak between tests
    (user ids restart with every test)."""
    return settings_factory(channel_prefix=f"parley-test-{uuid.uuid4().hex[:12]}")  # type: ignore[no-any-return]


class Recorder:
    """Stands in for the hub behind the real Publisher: keeps what would be published."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        self.events.append((channel, event))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for _, event in self.events if event.get("type") == kind]


@pytest.fixture
def published(app: Any) -> Iterator[Recorder]:
    """Events the write path announces, captured at the publisher's hub boundary."""
    svc = services(app)
    original = svc.events
    recorder = Recorder()
    svc.events = Publisher(recorder)
    try:
        yield recorder
    finally:
        svc.events = original


class StatementCounter:
    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def statements(app: Any) -> Iterator[StatementCounter]:
    """Counts SQL statements sent by the app (loaders must keep list fields flat)."""
    from sqlalchemy import event

    engine = services(app).db.engine.sync_engine
    counter = StatementCounter()

    def before(*_: Any) -> None:
        counter.count += 1

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", before)
