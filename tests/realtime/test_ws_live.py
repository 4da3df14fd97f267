"""Authorization kept true while live, and the fan-out machinery: shared executions,
queries per delivery, gapless hand-over, gap filling, slow consumers."""
from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event

from resolvers import messages as messages_resolvers
from resolvers.context import Context
from tests import factories
from tests.realtime import wsclient
from tests.realtime.wsclient import WS, WS_PROTOCOL, LiveServer, StartServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

# The shared WebSocket fixtures (tests/realtime/wsclient.py), found by pytest here.
ws_backend = wsclient.ws_backend
start_server = wsclient.start_server
live_server = wsclient.live_server

START_DIRECT = "mutation($u: ID!) { startDirectConversation(userId: $u) { id eventCursor } }"
CREATE_GROUP = wsclient.CREATE_GROUP
SEND = wsclient.SEND
EVENTS = (
    "subscription($c: ID!, $a: String) { messageEvents(conversationId: $c, after: $a) { kind cursor message "
    "{ id body sender { username displayName } conversation { id } mentions { id } editHistory { body } } } }"
)
TYPING = "subscription($c: ID!) { typing(conversationId: $c) { isTyping } }"
READ_STATE = "subscription($c: ID!) { readStateChanged(conversationId: $c) { readAt } }"


group = wsclient.create_group


async def send(server: LiveServer, user: factories.TestUser, cid: str, body: str) -> str:
    return str((await server.gql(SEND, {"c": cid, "b": body}, token=user.token))["sendMessage"]["id"])


def bodies(messages: list[dict[str, Any]], op: str) -> list[str]:
    return [m["payload"]["data"]["messageEvents"]["message"]["body"] for m in messages
            if m.get("id") == op and m["type"] == "next"]


# ---------------------------------------------------------------- live authorization


async def test_removed_member_stops_receiving_at_once(live_server: LiveServer) -> None:
    owner, kept, removed = await live_server.user(), await live_server.user(), await live_server.user()
    g = await group(live_server, owner, kept, removed)
    cid = g["conversation"]["id"]
    ws_kept, ws_removed = await live_server.ws(kept.token), await live_server.ws(removed.token)
    op_kept = await ws_kept.subscribe(EVENTS, {"c": cid})
    ops = [await ws_removed.subscribe(q, {"c": cid}) for q in (EVENTS, TYPING, READ_STATE)]
    await live_server.settle()

    await live_server.gql("mutation($g: ID!, $u: ID!) { removeGroupMember(groupId: $g, userId: $u) { id } }",
                          {"g": g["id"], "u": removed.gid}, token=owner.token)
    errors = {}
    for _ in ops:
        message = await ws_removed.expect("error")
        errors[message["id"]] = message["payload"][0]["extensions"]["code"]
    assert errors == dict.fromkeys(ops, "NOT_FOUND")
    await send(live_server, owner, cid, "after the removal")
    assert (await ws_kept.next(op_kept))["messageEvents"]["message"]["body"] == "after the removal"
    await ws_removed.silent(0.3)


async def test_deleted_group_ends_its_streams(live_server: LiveServer) -> None:
    owner, member = await live_server.user(), await live_server.user()
    g = await group(live_server, owner, member)
    ws = await live_server.ws(member.token)
    op = await ws.subscribe(EVENTS, {"c": g["conversation"]["id"]})
    await live_server.settle()
    await live_server.gql("mutation($g: ID!) { deleteGroup(id: $g) }", {"g": g["id"]}, token=owner.token)
    assert (await ws.error(op))["extensions"] == {"code": "NOT_FOUND"}


async def test_revoked_sessions_close_their_sockets(live_server: LiveServer) -> None:
    user = await live_server.user()
    second = await _second_session(live_server, user)  # the same user on another device
    ws_first, ws_second = await live_server.ws(user.token), await live_server.ws(second)
    sessions = await live_server.gql("query { sessions { id current } }", token=second)
    first_id = next(s["id"] for s in sessions["sessions"] if not s["current"])
    await live_server.gql("mutation($id: ID!) { revokeSession(id: $id) }", {"id": first_id}, token=second)
    assert await ws_first.closed() == (4403, "session revoked")
    assert await ws_second.request("query { me { username } }") == {"me": {"username": user.username}}


async def _second_session(server: LiveServer, user: factories.TestUser) -> str:
    data = await server.gql(
        "mutation($u: String!, $p: String!) { login(input: {username: $u, password: $p}) { accessToken } }",
        {"u": user.username, "p": user.password},
    )
    return str(data["login"]["accessToken"])


# --------------------------------------------------------------------------- fan-out


async def test_subscribers_share_one_execution_and_no_query_per_delivery(live_server: LiveServer) -> None:
    owner = await live_server.user()
    members = [await live_server.user() for _ in range(6)]
    g = await group(live_server, owner, *members)
    cid = g["conversation"]["id"]
    engine = live_server.handler.engine
    sockets = []
    for member in members:
        for _ in range(2):
            ws = await live_server.ws(member.token)
            sockets.append((ws, await ws.subscribe(EVENTS, {"c": cid})))
    await live_server.settle()
    groups = [key for key in engine.groups if key[3] == ("messages", int(cid.split("_")[1]))]
    assert len(groups) == 1  # 12 sockets of 6 viewers, one group

    # a committed message whose announcement we make ourselves, to count what the
    # fan-out alone costs
    conversation_id = int(cid.split("_")[1])
    ctx = Context(services=replace(live_server.services, events=None), viewer=_viewer(owner))
    snapshot = await messages_resolvers.send_message(ctx, conversation_id, "to everyone")
    pos = await _last_pos(live_server, conversation_id)
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sync_engine = live_server.services.db.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", count)
    try:
        baseline = engine.deliveries
        await live_server.services.events.message_event(conversation_id, pos, "ADDED", snapshot)
        for ws, op in sockets:
            assert (await ws.next(op))["messageEvents"]["message"]["body"] == "to everyone"
    finally:
        event.remove(sync_engine, "before_cursor_execute", count)
    assert engine.deliveries - baseline == 12
    # one execution for the 12 sockets: the message, its sender, mentions and history
    # come primed from the event; `conversation { id }` loads the conversation row once
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1, selects
    assert "FROM conversations" in selects[0]


async def test_viewer_dependent_selections_are_executed_per_viewer(live_server: LiveServer) -> None:
    owner, member = await live_server.user(), await live_server.user()
    g = await group(live_server, owner, member)
    cid = g["conversation"]["id"]
    query = ("subscription($c: ID!) { messageEvents(conversationId: $c) "
             "{ message { body conversation { unreadCount } } } }")
    ws_owner, ws_member = await live_server.ws(owner.token), await live_server.ws(member.token)
    op_owner = await ws_owner.subscribe(query, {"c": cid})
    op_member = await ws_member.subscribe(query, {"c": cid})
    await live_server.settle()
    await send(live_server, owner, cid, "count me")
    assert (await ws_owner.next(op_owner))["messageEvents"]["message"]["conversation"] == {"unreadCount": 0}
    assert (await ws_member.next(op_member))["messageEvents"]["message"]["conversation"] == {"unreadCount": 1}


# ------------------------------------------------------------------ resume and gaps


async def test_hand_over_from_replay_to_live_under_concurrent_sends(live_server: LiveServer) -> None:
    alice, bob = await live_server.user(), await live_server.user()
    conversation = (await live_server.gql(START_DIRECT, {"u": bob.gid}, token=alice.token))["startDirectConversation"]
    cid = conversation["id"]
    total = 40

    async def sender() -> None:
        for n in range(total):
            await send(live_server, alice, cid, f"m{n}")

    task = asyncio.create_task(sender())
    await asyncio.sleep(0.05)  # some are sent before, some during, some after the hand-over
    ws = await live_server.ws(bob.token)
    op = await ws.subscribe(EVENTS, {"c": cid, "a": conversation["eventCursor"]})
    await task
    received = [await ws.next(op) for _ in range(total)]
    assert [r["messageEvents"]["message"]["body"] for r in received] == [f"m{n}" for n in range(total)]
    await ws.silent(0.3)


async def test_a_lost_event_is_filled_from_the_database(live_server: LiveServer) -> None:
    alice, bob = await live_server.user(), await live_server.user()
    cid = (await live_server.gql(START_DIRECT, {"u": bob.gid}, token=alice.token))["startDirectConversation"]["id"]
    ws = await live_server.ws(bob.token)
    op = await ws.subscribe(EVENTS, {"c": cid})
    await live_server.settle()
    # committed but never announced (as if its publish was lost or is still in flight)
    silent = replace(live_server.services, events=None)
    ctx = Context(services=silent, viewer=_viewer(alice))
    await messages_resolvers.send_message(ctx, int(cid.split("_")[1]), "unannounced")
    await ws.silent(0.2)
    # the next announced event reveals the jump: the missing one comes first, from the database
    await send(live_server, alice, cid, "announced")
    got = [(await ws.next(op))["messageEvents"]["message"]["body"] for _ in range(2)]
    assert got == ["unannounced", "announced"]
    # a late duplicate of the lost event is dropped
    pos = await _last_pos(live_server, cid)
    await live_server.services.events.message_event(
        int(cid.split("_")[1]), pos - 1, "ADDED",
        {"message": {"sender_id": alice.id}},  # never executed: dropped by position
    )
    await ws.silent(0.3)


def _viewer(user: factories.TestUser) -> Any:
    from auth.viewer import Viewer

    return Viewer(user_id=user.id, session_id=user.session_id)


async def _last_pos(server: LiveServer, cid: str | int) -> int:
    from db import models

    async with server.services.db.session() as s:
        row = await s.get(models.Conversation, cid if isinstance(cid, int) else int(cid.split("_")[1]))
        assert row is not None
        return int(row.last_event_pos)


@pytest.mark.parametrize("ws_protocol", [WS_PROTOCOL, "websockets-sansio"], ids=["direct", "asgi"])
async def test_a_slow_consumer_is_ended_with_resume_required(start_server: StartServer, ws_protocol: str) -> None:
    # with direct frame writes (production) and through the ASGI send (any other server)
    server = await start_server(ws_send_high_water_bytes=16_000, ws_send_queue_limit=8, ws_protocol=ws_protocol)
    alice, bob = await server.user(), await server.user()
    cid = (await server.gql(START_DIRECT, {"u": bob.gid}, token=alice.token))["startDirectConversation"]["id"]
    # a client that stops reading, on a narrow path: small socket buffers both ways
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.port))
    from websockets.asyncio.client import connect

    conn = await connect(server.url, sock=raw, subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                         compression=None, max_queue=1, ping_interval=None, close_timeout=1)
    transport = server.server_transport(raw.getsockname()[1])
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    transport.set_write_buffer_limits(high=4096)
    slow = WS(conn, "graphql-transport-ws")
    server.sockets.append(slow)
    await slow.init(bob.token)
    op = await slow.subscribe(EVENTS, {"c": cid})
    fast = await server.ws(alice.token)
    fast_op = await fast.subscribe(EVENTS, {"c": cid})
    await server.settle()
    engine = server.handler.engine
    sent = 0
    while engine.ended_slow == 0 and sent < 400:
        await send(server, alice, cid, "x" * 9000)
        sent += 1
    assert engine.ended_slow == 1, "the slow subscriber was never cut off"
    # the fast subscriber got everything; the slow one, once it reads again, finds its
    # backlog and then RESUME_REQUIRED, and resumes by cursor with nothing lost
    fast_bodies = [await fast.next(fast_op) for _ in range(sent)]
    assert len(fast_bodies) == sent
    delivered = []
    while True:
        message = await slow.receive(within=5)
        if message["type"] == "error":
            assert message["id"] == op
            assert message["payload"][0]["extensions"]["code"] == "RESUME_REQUIRED"
            break
        if message["type"] == "next":
            delivered.append(message["payload"]["data"]["messageEvents"]["cursor"])
    assert 0 < len(delivered) < sent
    op = await slow.subscribe(EVENTS, {"c": cid, "a": delivered[-1]})
    rest = [await slow.next(op) for _ in range(sent - len(delivered))]
    assert len(delivered) + len(rest) == sent
    await slow.silent(0.2)
