"""Two server processes behind one "load balancer" act as one: same PostgreSQL, same
Redis, subscribe on one and write on the other (`python server.py serve` subprocesses)."""
from __future__ import annotations

import asyncio
import base64
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.conftest import TEST_REDIS_URL, _services_skip_reason
from tests.realtime.wsclient import WS, Instance, spawn_instance

pytestmark = pytest.mark.asyncio(loop_scope="module")

REGISTER = (
    "mutation($u: String!) { register(input: {username: $u, password: \"correct horse battery\"}) "
    "{ accessToken user { id } } }"
)
START_DIRECT = "mutation($u: ID!) { startDirectConversation(userId: $u) { id eventCursor } }"
CREATE_GROUP = "mutation($m: [ID!]) { createGroup(input: {name: \"g\", memberIds: $m}) { id conversation { id } } }"
SEND = "mutation($c: ID!, $b: String!) { sendMessage(input: {conversationId: $c, body: $b}) { id } }"
EVENTS = "subscription($c: ID!) { messageEvents(conversationId: $c) { cursor message { body } } }"
UPDATED = "subscription { conversationUpdated { id unreadCount lastMessage { body } } }"


@pytest.fixture(scope="module")
def pg_url(request: pytest.FixtureRequest) -> str:
    reason = _services_skip_reason()
    if reason:
        pytest.skip(reason)
    return str(request.getfixturevalue("pg_database_url"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def instances(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[list[Instance]]:
    env = {
        "DATABASE_URL": pg_url, "BROADCAST_URL": TEST_REDIS_URL, "SECRET_KEY": secrets.token_urlsafe(48),
        "CHANNEL_PREFIX": f"parley-multi-{uuid.uuid4().hex[:8]}", "RATE_LIMIT_ENABLED": "false",
    }
    base: Path = tmp_path_factory.mktemp("instances")
    started = await asyncio.gather(spawn_instance(env, base / "a"), spawn_instance(env, base / "b"))
    try:
        yield list(started)
    finally:
        for instance in started:
            instance.stop()


class Client:
    def __init__(self, instance: Instance, token: str = "") -> None:
        self.instance = instance
        self.token = token

    async def gql(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with httpx.AsyncClient(base_url=self.instance.http_url, timeout=10) as http:
            body = (await http.post("/graphql", json={"query": query, "variables": variables or {}},
                                    headers=headers)).json()
        assert not body.get("errors"), body
        return body["data"]


async def register(instance: Instance) -> tuple[str, str]:
    data = await Client(instance).gql(REGISTER, {"u": f"u{uuid.uuid4().hex[:10]}"})
    return data["register"]["accessToken"], data["register"]["user"]["id"]


async def socket(instance: Instance, token: str) -> WS:
    ws = await WS.open(instance.url)
    await ws.init(token)
    return ws


async def test_subscribe_on_one_instance_write_on_the_other(instances: list[Instance]) -> None:
    a, b = instances
    (alice_token, _), (bob_token, bob_id) = await asyncio.gather(register(a), register(b))
    alice_on_b = Client(b, alice_token)
    conversation = (await alice_on_b.gql(START_DIRECT, {"u": bob_id}))["startDirectConversation"]
    ws = await socket(a, bob_token)
    try:
        events = await ws.subscribe(EVENTS, {"c": conversation["id"]})
        updates = await ws.subscribe(UPDATED)
        await asyncio.sleep(0.5)  # no "subscribed" ack in the protocol; a remote server cannot be asked
        # writes land on both instances, interleaved and concurrent: arrival order over
        # Redis may differ from commit order, positions put it right
        alice_on_a = Client(a, alice_token)
        await asyncio.gather(*(
            (alice_on_a if n % 2 else alice_on_b).gql(SEND, {"c": conversation["id"], "b": f"m{n}"})
            for n in range(20)
        ))
        received: list[str] = []
        cursors: list[str] = []
        last_update: dict[str, Any] = {}
        while len(received) < 20 or last_update.get("unreadCount") != 20:
            message = await ws.receive(within=10)
            if message.get("type") != "next":
                continue
            data = message["payload"]["data"]
            if message["id"] == events:
                received.append(data["messageEvents"]["message"]["body"])
                cursors.append(data["messageEvents"]["cursor"])
            elif message["id"] == updates:
                last_update = data["conversationUpdated"]
        assert sorted(received) == sorted(f"m{n}" for n in range(20))  # each once
        positions = [int(base64.urlsafe_b64decode(c + "=" * (-len(c) % 4)).decode().rsplit(":", 1)[1])
                     for c in cursors]
        assert positions == list(range(positions[0], positions[0] + 20))  # in order, no gap
        assert last_update["id"] == conversation["id"]
    finally:
        await ws.close()


async def test_revocation_and_removal_reach_every_instance(instances: list[Instance]) -> None:
    a, b = instances
    (owner_token, _), (member_token, member_id) = await asyncio.gather(register(a), register(b))
    g = (await Client(b, owner_token).gql(CREATE_GROUP, {"m": [member_id]}))["createGroup"]
    ws = await socket(a, member_token)
    try:
        events = await ws.subscribe(EVENTS, {"c": g["conversation"]["id"]})
        await asyncio.sleep(0.5)
        await Client(b, owner_token).gql(
            "mutation($g: ID!, $u: ID!) { removeGroupMember(groupId: $g, userId: $u) { id } }",
            {"g": g["id"], "u": member_id},
        )
        assert (await ws.error(events, within=10))["extensions"] == {"code": "NOT_FOUND"}
        assert await Client(b, member_token).gql("mutation { logout }") == {"logout": True}
        assert await ws.closed(within=10) == (4403, "session revoked")
    finally:
        await ws.close()
