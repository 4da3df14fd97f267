"""Attachments fixtures: three signed-in users, a direct chat of the first two, and a
publisher that records what would go out to subscribers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from realtime.events import Publisher
from tests.attachments.helpers import Chat, make_direct
from tests.factories import TestUser, create_user


@dataclass
class People:
    alice: TestUser
    bob: TestUser
    carol: TestUser  # in no conversation with the others


@pytest_asyncio.fixture
async def people(app: Any) -> People:
    return People(*[await create_user(app, name) for name in ("alice", "bob", "carol")])


@pytest_asyncio.fixture
async def chat(app: Any, people: People) -> Chat:
    return await make_direct(app, people.alice, people.bob)


class RecordingHub:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        self.published.append((channel, event))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.published if e.get("type") == kind]


@pytest.fixture
def published(app: Any) -> RecordingHub:
    hub = RecordingHub()
    app.state.parley.services.events = Publisher(hub)
    return hub
