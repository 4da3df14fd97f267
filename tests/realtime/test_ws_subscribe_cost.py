"""What subscribing costs, and that the shortcuts taken for it keep authorization true.

Subscribing to a conversation's streams reads its members once per instance (one Core
statement, shared by concurrent subscribers, kept until a membership event or a gap
arrives on the conversation's channel); connection_init reuses a token's session check
for a few seconds unless a revocation arrives. These tests count the statements, and
check that a removed member, a re-added one and a revoked session are treated exactly as
without the shortcuts."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests import factories
from tests.realtime import wsclient
from tests.realtime.wsclient import LiveServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

ws_backend = wsclient.ws_backend
start_server = wsclient.start_server
live_server = wsclient.live_server

CREATE_GROUP = wsclient.CREATE_GROUP
ADD = "mutation($g: ID!, $u: [ID!]!) { addGroupMembers(groupId: $g, userIds: $u) { id } }"
REMOVE = wsclient.REMOVE
SEND = wsclient.SEND
EVENTS = (
    "subscription($c: ID!, $a: String) { messageEvents(conversationId: $c, after: $a) "
    "{ kind cursor message { body } } }"
)
TYPING = "subscription($c: ID!) { typing(conversationId: $c) { isTyping } }"


def statements(server: LiveServer) -> Any:
    return factories.recorded_statements(server.services.db)


group = wsclient.create_group


def feed_state(server: LiveServer, cid: str) -> Any:
    from realtime.events import conversation_channel
    from schema import ids

    feed = server.handler.engine.feeds[conversation_channel(ids.decode("Conversation", cid))]
    return feed.state


async def invalidated(server: LiveServer, cid: str, count: int) -> None:
    """Wait until the conversation's feed has seen `count` invalidating events."""
    deadline = time.monotonic() + 5
    while feed_state(server, cid).invalidations < count:
        assert time.monotonic() < deadline, "the membership event did not arrive"
        await asyncio.sleep(0.01)


def body(message: dict[str, Any]) -> str:
    return str(message["messageEvents"]["message"]["body"])


# ---------------------------------------------------------------------------- cost


async def test_one_statement_per_conversation_then_none_until_membership_changes(live_server: LiveServer) -> None:
    owner, first, second, later = [await live_server.user() for _ in range(4)]
    g = await group(live_server, owner, first, second)
    cid = g["conversation"]["id"]
    ws_owner, ws_first, ws_second = [await live_server.ws(u.token) for u in (owner, first, second)]

    with statements(live_server) as first_subscribe:
        await ws_owner.subscribe(EVENTS, {"c": cid})
        await live_server.settle()
    assert len(first_subscribe) == 1, first_subscribe  # the members read; no replay, no ORM rows
    assert "conversation_members" in first_subscribe[0]

    with statements(live_server) as more:
        await ws_first.subscribe(EVENTS, {"c": cid})
        await ws_second.subscribe(TYPING, {"c": cid})
        await ws_owner.subscribe(EVENTS, {"c": cid})
        await live_server.settle()
    assert more == []

    await live_server.gql(ADD, {"g": g["id"], "u": [later.gid]}, token=owner.token)
    await invalidated(live_server, cid, 1)
    ws_later = await live_server.ws(later.token)
    with statements(live_server) as after_change:
        op = await ws_later.subscribe(EVENTS, {"c": cid})
        await live_server.settle()
    assert len(after_change) == 1, after_change

    await live_server.gql(SEND, {"c": cid, "b": "hello newcomer"}, token=owner.token)
    assert body(await ws_later.next(op)) == "hello newcomer"


async def test_concurrent_subscribes_share_one_read(live_server: LiveServer) -> None:
    owner = await live_server.user()
    members = [await live_server.user() for _ in range(5)]
    g = await group(live_server, owner, *members)
    cid = g["conversation"]["id"]
    sockets = [await live_server.ws(m.token) for m in members for _ in range(3)]
    with statements(live_server) as seen:
        await asyncio.gather(*(ws.subscribe(EVENTS, {"c": cid}) for ws in sockets))
        await live_server.settle()
    assert len(seen) == 1, seen
    assert feed_state(live_server, cid).loads == 1


async def test_repeated_subscription_documents_skip_the_limit_rules(live_server: LiveServer) -> None:
    owner, member = await live_server.user(), await live_server.user()
    g = await group(live_server, owner, member)
    cid = g["conversation"]["id"]
    ws = await live_server.ws(member.token)
    await ws.subscribe(EVENTS, {"c": cid})
    await live_server.settle()
    limits = live_server.handler._limit_errors.__self__
    hits = limits.hits
    for _ in range(3):
        await ws.subscribe(EVENTS, {"c": cid, "a": None})
    await live_server.settle()
    assert limits.hits == hits + 3


# ------------------------------------------------------------------ authorization kept


async def test_removed_member_is_refused_and_gets_nothing_with_a_warm_cache(live_server: LiveServer) -> None:
    owner, kept, removed = [await live_server.user() for _ in range(3)]
    g = await group(live_server, owner, kept, removed)
    cid = g["conversation"]["id"]
    ws_kept, ws_removed = await live_server.ws(kept.token), await live_server.ws(removed.token)
    op_kept = await ws_kept.subscribe(EVENTS, {"c": cid})
    op_removed = await ws_removed.subscribe(EVENTS, {"c": cid})  # cache now says: member
    await live_server.settle()

    await live_server.gql(REMOVE, {"g": g["id"], "u": removed.gid}, token=owner.token)
    assert (await ws_removed.error(op_removed))["extensions"] == {"code": "NOT_FOUND"}
    again = await ws_removed.subscribe(EVENTS, {"c": cid})  # a fresh read: refused
    assert (await ws_removed.error(again))["extensions"] == {"code": "NOT_FOUND"}
    typing = await ws_removed.subscribe(TYPING, {"c": cid})
    assert (await ws_removed.error(typing))["extensions"] == {"code": "NOT_FOUND"}

    await live_server.gql(SEND, {"c": cid, "b": "after the removal"}, token=owner.token)
    assert body(await ws_kept.next(op_kept)) == "after the removal"
    await ws_removed.silent(0.3)


async def test_removed_member_subscribing_right_after_the_removal_is_refused(live_server: LiveServer) -> None:
    """The removal and a subscribe race: the subscribe either reads the new state or is
    ended by the membership event; it never stays live."""
    owner, removed = await live_server.user(), await live_server.user()
    g = await group(live_server, owner, removed)
    cid = g["conversation"]["id"]
    ws_owner, ws_removed = await live_server.ws(owner.token), await live_server.ws(removed.token)
    await ws_owner.subscribe(EVENTS, {"c": cid})  # the cache is warm
    await live_server.settle()
    removal = asyncio.ensure_future(live_server.gql(REMOVE, {"g": g["id"], "u": removed.gid}, token=owner.token))
    ops = []
    for _ in range(5):
        ops.append(await ws_removed.subscribe(EVENTS, {"c": cid}))
        await asyncio.sleep(0.005)
    await removal
    for op in ops:
        assert (await ws_removed.error(op))["extensions"] == {"code": "NOT_FOUND"}
    await live_server.gql(SEND, {"c": cid, "b": "later"}, token=owner.token)
    await ws_removed.silent(0.3)


async def test_re_added_member_can_subscribe_again(live_server: LiveServer) -> None:
    owner, member = await live_server.user(), await live_server.user()
    g = await group(live_server, owner, member)
    cid = g["conversation"]["id"]
    ws_owner, ws = await live_server.ws(owner.token), await live_server.ws(member.token)
    await ws_owner.subscribe(EVENTS, {"c": cid})
    op = await ws.subscribe(EVENTS, {"c": cid})
    await live_server.settle()

    await live_server.gql(REMOVE, {"g": g["id"], "u": member.gid}, token=owner.token)
    assert (await ws.error(op))["extensions"] == {"code": "NOT_FOUND"}
    refused = await ws.subscribe(EVENTS, {"c": cid})
    assert (await ws.error(refused))["extensions"] == {"code": "NOT_FOUND"}

    await live_server.gql(ADD, {"g": g["id"], "u": [member.gid]}, token=owner.token)
    await invalidated(live_server, cid, 2)
    back = await ws.subscribe(EVENTS, {"c": cid})
    await live_server.settle()
    await live_server.gql(SEND, {"c": cid, "b": "welcome back"}, token=owner.token)
    assert body(await ws.next(back)) == "welcome back"


async def test_revoked_session_closes_its_sockets_and_its_token_is_not_reused(live_server: LiveServer) -> None:
    user = await live_server.user()
    second = await live_server.gql(
        "mutation($u: String!, $p: String!) { login(input: {username: $u, password: $p}) { accessToken } }",
        {"u": user.username, "p": user.password},
    )
    other = str(second["login"]["accessToken"])
    first_ws = await live_server.ws(user.token)
    again_ws = await live_server.ws(user.token)  # admitted from the reused check
    assert live_server.handler.auth_reused >= 1
    sessions = await live_server.gql("query { sessions { id current } }", token=other)
    first_id = next(s["id"] for s in sessions["sessions"] if not s["current"])
    await live_server.gql("mutation($id: ID!) { revokeSession(id: $id) }", {"id": first_id}, token=other)
    assert await first_ws.closed() == (4403, "session revoked")
    assert await again_ws.closed() == (4403, "session revoked")

    refused = await wsclient.WS.open(live_server.url, protocol=wsclient.TRANSPORT)
    live_server.sockets.append(refused)
    await refused.send({"type": "connection_init", "payload": {"authorization": f"Bearer {user.token}"}})
    assert await refused.closed() == (4403, "session revoked")
