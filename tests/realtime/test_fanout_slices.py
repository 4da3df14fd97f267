"""The fan-out shares the event loop: it yields every YIELD_EVERY sends, and every
YIELD_EVERY_BUSY sends while HTTP requests are in flight (a sendMessage needs several
loop turns, each of which waits for one fan-out slice)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from auth.viewer import Viewer
from realtime import groups
from resolvers import messages as messages_resolvers
from resolvers.context import Context
from tests.realtime import wsclient
from tests.realtime.wsclient import LiveServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

ws_backend = wsclient.ws_backend
start_server = wsclient.start_server
live_server = wsclient.live_server

CREATE_GROUP = (
    "mutation($n: String!, $m: [ID!]) { createGroup(input: {name: $n, memberIds: $m}) { conversation { id } } }"
)
EVENTS = "subscription($c: ID!) { messageEvents(conversationId: $c) { message { body } } }"


async def fan_out_pauses(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch, busy: bool) -> int:
    """Loop turns the fan-out takes while delivering one message to 20 sockets, with
    YIELD_EVERY 8 and YIELD_EVERY_BUSY 2."""
    owner = await live_server.user()
    members = [await live_server.user() for _ in range(4)]
    data = await live_server.gql(CREATE_GROUP, {"n": "g", "m": [m.gid for m in members]}, token=owner.token)
    cid = data["createGroup"]["conversation"]["id"]
    conversation_id = int(cid.split("_")[1])
    sockets = []
    for member in members:
        for _ in range(5):
            ws = await live_server.ws(member.token)
            sockets.append((ws, await ws.subscribe(EVENTS, {"c": cid})))
    await live_server.settle()
    # the message is committed here, announced below: the fan-out alone is counted
    ctx = Context(services=replace(live_server.services, events=None),
                  viewer=Viewer(user_id=owner.id, session_id=owner.session_id))
    snapshot = await messages_resolvers.send_message(ctx, conversation_id, "sliced")
    async with live_server.services.db.session() as s:
        from db import models

        row = await s.get(models.Conversation, conversation_id)
        assert row is not None
        pos = int(row.last_event_pos)
    pauses = 0
    pause = groups._pause

    async def counting() -> None:
        nonlocal pauses
        pauses += 1
        await pause()

    monkeypatch.setattr(groups, "_pause", counting)
    monkeypatch.setattr(groups, "YIELD_EVERY", 8)
    monkeypatch.setattr(groups, "YIELD_EVERY_BUSY", 2)
    monkeypatch.setattr(groups.PRESSURE, "requests", 1 if busy else 0)
    await live_server.services.events.message_event(conversation_id, pos, "ADDED", snapshot)
    for ws, op in sockets:
        assert (await ws.next(op))["messageEvents"]["message"]["body"] == "sliced"
    return pauses


async def test_fan_out_yields_every_yield_every_sends(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await fan_out_pauses(live_server, monkeypatch, busy=False) == 20 // 8


async def test_fan_out_takes_short_slices_while_requests_are_in_flight(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await fan_out_pauses(live_server, monkeypatch, busy=True) == 20 // 2


async def test_http_requests_are_counted_while_in_flight(live_server: LiveServer,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import server

    seen: list[int] = []
    handle = server.GraphQLHTTP.handle

    async def spy(self: Any, request: Any) -> Any:
        seen.append(groups.PRESSURE.requests)
        return await handle(self, request)

    monkeypatch.setattr(server.GraphQLHTTP, "handle", spy)
    before = groups.PRESSURE.requests
    client = live_server.http
    ok = await client.post("/graphql", json={"query": "{ __typename }"})
    bad = await client.post("/graphql", content=b"not json", headers={"content-type": "application/json"})
    assert (ok.status_code, bad.status_code) == (200, 400)
    assert seen == [before + 1, before + 1]
    assert groups.PRESSURE.requests == before  # back to zero after an answer and after a refusal
