"""Shared fixtures: real backends, a real app, a small GraphQL client.

Backends: the embedded default (SQLite file + memory://) always; PostgreSQL + Redis
when TEST_DATABASE_URL / TEST_REDIS_URL are set. Each run gets its own PostgreSQL
database and Redis key/channel prefix; tables are emptied between tests (real
commits, no savepoint tricks).
"""
from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.engine import make_url

from settings import Settings

RUN_ID = secrets.token_hex(4)
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "")
BACKENDS = ["embedded", "services"]


def _services_skip_reason() -> str | None:
    if not TEST_DATABASE_URL:
        return "TEST_DATABASE_URL not set: PostgreSQL tests skipped"
    if not TEST_REDIS_URL:
        return "TEST_REDIS_URL not set: Redis tests skipped"
    return None


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, dropped at the end."""
    reason = _services_skip_reason()
    if reason:
        pytest.skip(reason)
    import asyncpg  # noqa: F401  (fail early if missing)

    base = make_url(TEST_DATABASE_URL)
    name = f"parley_test_{RUN_ID}"

    async def admin(sql: str) -> None:
        import asyncpg as pg

        conn = await pg.connect(
            host=base.host, port=base.port or 5432, user=base.username, password=base.password,
            database=base.database,
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    url = base.set(database=name).render_as_string(hide_password=False)
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "services":
        reason = _services_skip_reason()
        if reason:
            pytest.skip(reason)
    return str(request.param)


@pytest.fixture
def embedded_only() -> str:
    return "embedded"


@pytest.fixture(scope="session")
def sqlite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("parley-data")


def make_settings(
    backend: str, data_dir: Path, pg_url: str | None = None, *, prefix: str | None = None, **overrides: Any
) -> Settings:
    base = Settings(
        data_dir=data_dir,
        parley_env="test",
        secret_key="test-secret-" + "x" * 40,
        # Per test: presence and rate-limit state in Redis must not leak between tests.
        channel_prefix=prefix or f"parley-test-{RUN_ID}-{secrets.token_hex(3)}",
        rate_limit_enabled=False,
    )
    if backend == "services":
        base = replace(base, database_url=pg_url or "", broadcast_url=TEST_REDIS_URL)
    return replace(base, **overrides).validated()


@pytest.fixture
def settings_factory(
    backend: str, sqlite_dir: Path, request: pytest.FixtureRequest
) -> Any:
    pg_url = request.getfixturevalue("pg_database_url") if backend == "services" else None
    prefix = f"parley-test-{RUN_ID}-{secrets.token_hex(3)}"  # shared by every app of one test

    def factory(**overrides: Any) -> Settings:
        overrides.setdefault("prefix", prefix)
        return make_settings(backend, sqlite_dir, pg_url, **overrides)

    return factory


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    return settings_factory()


TABLES = (
    "audit_events", "notifications", "attachments", "message_events", "message_mentions",
    "message_edits", "messages", "conversation_members", "conversations", "groups", "sessions", "users",
)


async def _empty_tables(app: Any) -> None:
    db = app.state.parley.services.db
    async with db.engine.begin() as conn:
        if db.is_postgres:
            await conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        else:
            for table in TABLES:
                await conn.execute(text(f"DELETE FROM {table}"))


class GQL:
    """A tiny GraphQL client over httpx that returns the decoded JSON body."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None,
        headers: dict[str, str] | None = None, expect_status: int | None = 200,
    ) -> dict[str, Any]:
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        response = await self.client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=h)
        if expect_status is not None:
            assert response.status_code == expect_status, response.text
        return response.json()

    async def ok(self, query: str, variables: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        body = await self(query, variables, **kw)
        assert not body.get("errors"), body
        return body["data"]

    async def error(self, query: str, variables: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        """The first error; asserts there is one."""
        body = await self(query, variables, **kw)
        assert body.get("errors"), body
        return body["errors"][0]


def error_code(error: dict[str, Any]) -> str:
    return str(error.get("extensions", {}).get("code"))


@pytest_asyncio.fixture
async def app(settings: Settings) -> AsyncIterator[Any]:
    from server import create_app

    application = create_app(settings)
    async with application.router.lifespan_context(application):
        await _empty_tables(application)
        yield application


@pytest_asyncio.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest_asyncio.fixture
async def gql(client: httpx.AsyncClient) -> GQL:
    return GQL(client)
