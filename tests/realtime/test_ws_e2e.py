"""The wire protocol against the client libraries frontends use (npm graphql-ws, Apollo
Client's GraphQLWsLink, subscriptions-transport-ws), run by Node from tests/e2e."""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.realtime import wsclient
from tests.realtime.wsclient import LiveServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

# The shared WebSocket fixtures (tests/realtime/wsclient.py), found by pytest here.
ws_backend = wsclient.ws_backend
start_server = wsclient.start_server
live_server = wsclient.live_server

E2E = Path(__file__).resolve().parents[1] / "e2e"
SCRIPT = E2E / "ws_clients.mjs"
START_DIRECT = "mutation($u: ID!) { startDirectConversation(userId: $u) { id } }"
SEND = "mutation($c: ID!, $b: String!) { sendMessage(input: {conversationId: $c, body: $b}) { id } }"


@pytest.fixture(scope="module")
def node() -> str:
    binary = shutil.which("node")
    if binary is None:
        pytest.skip("node is not on PATH: end-to-end client tests need Node.js")
    for package in ("graphql-ws", "subscriptions-transport-ws", "@apollo/client", "ws"):
        if not (E2E / "node_modules" / package).is_dir():
            pytest.skip(f"tests/e2e/node_modules/{package} is missing: run `npm install --prefix tests/e2e`")
    return binary


class NodeClient:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, node: str, scenario: str, **args: Any) -> NodeClient:
        process = await asyncio.create_subprocess_exec(
            node, str(SCRIPT), scenario, orjson.dumps(args).decode(), cwd=E2E,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def until(self, step: str, within: float = 15) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.process.stdout.readline(), within)
            if not raw:
                stderr = await self.process.stderr.read() if self.process.stderr else b""
                raise AssertionError(f"node ended before {step!r}: {self.lines} {stderr.decode()[-2000:]}")
            line = orjson.loads(raw)
            self.lines.append(line)
            assert line["at"] != "failed", line
            if line["at"] == step:
                return dict(line)

    async def finish(self) -> list[dict[str, Any]]:
        assert self.process.stdout is not None
        rest = await asyncio.wait_for(self.process.stdout.read(), 15)
        self.lines.extend(orjson.loads(line) for line in rest.splitlines() if line.strip())
        code = await asyncio.wait_for(self.process.wait(), 15)
        assert code == 0, self.lines
        return self.lines


async def _conversation(server: LiveServer) -> tuple[Any, Any, str]:
    alice, bob = await server.user(), await server.user()
    cid = (await server.gql(START_DIRECT, {"u": bob.gid}, token=alice.token))["startDirectConversation"]["id"]
    return alice, bob, cid


async def _wait_subscribed(server: LiveServer, count: int) -> None:
    for _ in range(500):
        if server.handler.engine.subscribers >= count:
            await server.settle()
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the client's subscription never arrived")


async def _deliver(server: LiveServer, sender: Any, cid: str, client: NodeClient, n: int) -> list[str]:
    await client.until("subscribed")
    await _wait_subscribed(server, 1)
    for i in range(n):
        await server.gql(SEND, {"c": cid, "b": f"hello {i}"}, token=sender.token)
    lines = await client.finish()
    return [line["result"]["data"]["messageEvents"]["message"]["body"] for line in lines if line["at"] == "event"]


async def test_graphql_ws_client(live_server: LiveServer, node: str) -> None:
    alice, bob, cid = await _conversation(live_server)
    _, _, foreign = await _conversation(live_server)
    client = await NodeClient.start(node, "graphql-ws", url=live_server.url, token=bob.token, conversationId=cid,
                                    foreignConversationId=foreign, count=3)
    assert (await client.until("query"))["result"] == {"data": {"me": {"username": bob.username}}}
    refused = (await client.until("refused"))["errors"]
    assert [e["extensions"] for e in refused] == [{"code": "NOT_FOUND"}]
    assert await _deliver(live_server, alice, cid, client, 3) == ["hello 0", "hello 1", "hello 2"]


async def test_graphql_ws_client_sees_4403_with_the_reason(live_server: LiveServer, node: str) -> None:
    client = await NodeClient.start(node, "graphql-ws-reject", url=live_server.url, token="not-a-token")
    assert await client.until("closed") == {"at": "closed", "code": 4403, "reason": "invalid token"}
    await client.finish()


async def test_apollo_client(live_server: LiveServer, node: str) -> None:
    alice, bob, cid = await _conversation(live_server)
    client = await NodeClient.start(node, "apollo", url=live_server.url, token=bob.token, conversationId=cid, count=2)
    assert await _deliver(live_server, alice, cid, client, 2) == ["hello 0", "hello 1"]


async def test_legacy_subscriptions_transport_ws_client(live_server: LiveServer, node: str) -> None:
    alice, bob, cid = await _conversation(live_server)
    client = await NodeClient.start(node, "legacy", url=live_server.url, token=bob.token, conversationId=cid, count=2)
    assert await _deliver(live_server, alice, cid, client, 2) == ["hello 0", "hello 1"]


async def test_legacy_client_rejected(live_server: LiveServer, node: str) -> None:
    client = await NodeClient.start(node, "legacy-reject", url=live_server.url, token="not-a-token")
    assert await client.until("rejected") == {
        "at": "rejected", "code": 4403, "reason": "invalid token",
        "connectionError": {"message": "invalid token", "extensions": {"code": "UNAUTHENTICATED"}},
    }
    await client.finish()
