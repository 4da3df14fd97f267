"""Redis goes away under live subscribers: they are never left silent.

Runs against a redis-server this test owns (tests/realtime/conftest.py `redis_server`),
never the shared one.
"""
from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.realtime import wsclient
from tests.realtime.conftest import RedisServer
from tests.realtime.wsclient import LiveServer, StartServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

# The shared WebSocket fixtures (tests/realtime/wsclient.py), found by pytest here.
ws_backend = wsclient.ws_backend
start_server = wsclient.start_server

START_DIRECT = "mutation($u: ID!) { startDirectConversation(userId: $u) { id } }"
SEND = "mutation($c: ID!, $b: String!) { sendMessage(input: {conversationId: $c, body: $b}) { id } }"
EVENTS = "subscription($c: ID!) { messageEvents(conversationId: $c) { kind message { body } } }"
TYPING = "subscription($c: ID!) { typing(conversationId: $c) { isTyping } }"


async def test_redis_outage_fills_message_streams_and_asks_others_to_resume(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    server: LiveServer = await start_server(broadcast_url=redis_server.url, channel_prefix=uuid.uuid4().hex)
    alice, bob = await server.user(), await server.user()
    cid = (await server.gql(START_DIRECT, {"u": bob.gid}, token=alice.token))["startDirectConversation"]["id"]
    ws = await server.ws(bob.token)
    events = await ws.subscribe(EVENTS, {"c": cid})
    typing = await ws.subscribe(TYPING, {"c": cid})
    await server.settle()
    await server.gql(SEND, {"c": cid, "b": "before"}, token=alice.token)
    assert (await ws.next(events))["messageEvents"]["message"]["body"] == "before"

    # Redis crashes; messages are still stored (their announcements are lost)
    redis_server.kill()
    for body in ("while down 1", "while down 2"):
        await server.gql(SEND, {"c": cid, "b": body}, token=alice.token)
    await ws.silent(0.2)
    # it comes back: the hub resubscribes and reports the gap
    redis_server.start()
    got: list[str] = []
    errors: dict[str, list[dict[str, object]]] = {}
    while len(got) < 2 or not errors:
        message = await ws.receive(within=10)
        if message["type"] == "next":
            assert message["id"] == events
            got.append(message["payload"]["data"]["messageEvents"]["message"]["body"])
        elif message["type"] == "error":
            errors[message["id"]] = message["payload"]
    assert got == ["while down 1", "while down 2"]  # filled from the database, in order
    assert errors == {typing: [{"message": "Events may have been lost; resubscribe",
                                "extensions": {"code": "RESUME_REQUIRED"}}]}
    # and the message stream carries on live
    await asyncio.sleep(0.1)
    await server.gql(SEND, {"c": cid, "b": "after"}, token=alice.token)
    assert (await ws.next(events))["messageEvents"]["message"]["body"] == "after"
    # the client may resubscribe the ended stream
    again = await ws.subscribe(TYPING, {"c": cid})
    await server.settle()
    assert again
