"""Apps with per-test settings (CORS, proxies, production, rate limits)."""
from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from tests.conftest import GQL, _empty_tables


@pytest_asyncio.fixture
async def app_factory(settings_factory: Any) -> AsyncIterator[Any]:
    """`await app_factory(**overrides)` -> (app, gql) with its lifespan running.

    Each app gets its own Redis key prefix so rate-limit counters never leak between tests.
    """
    from server import create_app

    async with contextlib.AsyncExitStack() as stack:

        async def make(*, peer: str = "127.0.0.1", **overrides: Any) -> tuple[Any, GQL]:
            overrides.setdefault("channel_prefix", f"parley-test-{uuid.uuid4().hex[:12]}")
            application = create_app(settings_factory(**overrides))
            await stack.enter_async_context(application.router.lifespan_context(application))
            await _empty_tables(application)
            transport = httpx.ASGITransport(app=application, client=(peer, 50000))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://testserver")
            )
            return application, GQL(client)

        yield make
