"""Membership changes and messages in one order: commit order, whatever the arrival order.

A removal takes the conversation's next event position (like a message) and is
published on the conversation's channel. A message committed after the removal has a
higher position; when it reaches an instance before the removal's event does (another
instance published it first, Redis delivers in publish order), the subscriber sees a
jump, fills from the database, where access is checked again, and ends with NOT_FOUND:
the removed member never receives it. Replay by cursor skips the positions that carry
no message, so a resuming client misses nothing and sees nothing twice.
"""
from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import pytest

from realtime.events import Publisher
from tests.realtime import wsclient
from tests.realtime.wsclient import LiveServer, StartServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

ws_backend = wsclient.ws_backend
start_server = wsclient.start_server
live_server = wsclient.live_server

CREATE_GROUP = wsclient.CREATE_GROUP
REMOVE = wsclient.REMOVE
LEAVE = "mutation($g: ID!) { leaveGroup(groupId: $g) }"
SEND = wsclient.SEND
CURSOR = "query($c: ID!) { conversation(id: $c) { eventCursor } }"
EVENTS = (
    "subscription($c: ID!, $a: String) { messageEvents(conversationId: $c, after: $a) "
    "{ kind cursor message { body } } }"
)


class HeldMembership(Publisher):
    """Publishes membership changes only when released (an instance slow to publish)."""

    def __init__(self, hub: Any) -> None:
        super().__init__(hub)
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def membership_changed(self, *args: Any, **kwargs: Any) -> None:
        self.reached.set()
        await self.release.wait()
        await super().membership_changed(*args, **kwargs)


group = wsclient.create_group


def position(cursor: str) -> int:
    return int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().rsplit(":", 1)[1])


async def seen_position(server: LiveServer, cid: str, pos: int) -> None:
    """Wait until `server` has received the event at `pos` of the conversation."""
    from realtime.events import conversation_channel
    from schema import ids

    channel = conversation_channel(ids.decode("Conversation", cid))
    deadline = time.monotonic() + 5
    while True:
        feed = server.handler.engine.feeds.get(channel)
        if feed is not None and (feed.state.high_pos or 0) >= pos:
            return
        assert time.monotonic() < deadline, "the event did not arrive"
        await asyncio.sleep(0.01)


async def nexts(ws: wsclient.WS, op: str, count: int) -> list[dict[str, Any]]:
    return [(await ws.next(op))["messageEvents"] for _ in range(count)]


# ------------------------------------------------------------------------ ordering


@pytest.mark.parametrize("change", ["remove", "leave"])
async def test_a_message_overtaking_the_removal_never_reaches_the_removed_member(
    live_server: LiveServer, change: str
) -> None:
    """One instance plays all three: the removal's event is held back (as by a slow
    publisher elsewhere) while a message committed after it arrives first."""
    owner, kept, removed = [await live_server.user() for _ in range(3)]
    g = await group(live_server, owner, kept, removed)
    cid = g["conversation"]["id"]
    ws_kept, ws_removed = await live_server.ws(kept.token), await live_server.ws(removed.token)
    op_kept = await ws_kept.subscribe(EVENTS, {"c": cid})
    op_removed = await ws_removed.subscribe(EVENTS, {"c": cid})
    await live_server.settle()
    await live_server.gql(SEND, {"c": cid, "b": "before"}, token=owner.token)
    assert (await ws_removed.next(op_removed))["messageEvents"]["message"]["body"] == "before"

    services = live_server.services
    held = HeldMembership(services.events.hub)
    original, services.events = services.events, held
    try:
        if change == "remove":
            removal = asyncio.ensure_future(
                live_server.gql(REMOVE, {"g": g["id"], "u": removed.gid}, token=owner.token)
            )
        else:
            removal = asyncio.ensure_future(live_server.gql(LEAVE, {"g": g["id"]}, token=removed.token))
        await asyncio.wait_for(held.reached.wait(), 5)  # committed; its event not yet out
        sent = await live_server.gql(SEND, {"c": cid, "b": "after the removal"}, token=owner.token)
        assert sent["sendMessage"]["id"]
        event = (await ws_kept.next(op_kept))["messageEvents"]
        assert event["message"]["body"] == "before"
        event = (await ws_kept.next(op_kept))["messageEvents"]
        assert event["message"]["body"] == "after the removal"
        # the removal took the position before the message's: the kept member's cursor skips it
        await seen_position(live_server, cid, position(event["cursor"]))
        error = await ws_removed.error(op_removed)  # ended by the re-check of the fill
        assert error["extensions"] == {"code": "NOT_FOUND"}
        held.release.set()
        await removal
    finally:
        held.release.set()
        services.events = original
    await ws_removed.silent(0.3)
    assert not [m for m in ws_removed.messages if m.get("type") == "next" and m["id"] == op_removed
                and m["payload"]["data"]["messageEvents"]["message"]["body"] == "after the removal"]
    await live_server.gql(SEND, {"c": cid, "b": "later"}, token=owner.token)
    assert (await ws_kept.next(op_kept))["messageEvents"]["message"]["body"] == "later"  # live, in order


# -------------------------------------------------------------------------- replay


async def test_resuming_across_membership_positions_misses_nothing_and_repeats_nothing(
    live_server: LiveServer,
) -> None:
    owner, kept, gone, other = [await live_server.user() for _ in range(4)]
    g = await group(live_server, owner, kept, gone, other)
    cid = g["conversation"]["id"]
    ws = await live_server.ws(kept.token)
    op = await ws.subscribe(EVENTS, {"c": cid})
    await live_server.settle()
    await live_server.gql(SEND, {"c": cid, "b": "m1"}, token=owner.token)
    first = (await nexts(ws, op, 1))[0]
    await ws.complete(op)  # the client goes away after m1

    await live_server.gql(REMOVE, {"g": g["id"], "u": gone.gid}, token=owner.token)  # a position, no message
    await live_server.gql(SEND, {"c": cid, "b": "m2"}, token=owner.token)
    await live_server.gql(LEAVE, {"g": g["id"]}, token=other.token)  # another one
    await live_server.gql(SEND, {"c": cid, "b": "m3"}, token=owner.token)
    latest = (await live_server.gql(CURSOR, {"c": cid}, token=kept.token))["conversation"]["eventCursor"]

    resumed = await ws.subscribe(EVENTS, {"c": cid, "a": first["cursor"]})
    got = await nexts(ws, resumed, 2)
    assert [e["message"]["body"] for e in got] == ["m2", "m3"]
    positions = [position(first["cursor"]), *(position(e["cursor"]) for e in got)]
    assert positions == [positions[0], positions[0] + 2, positions[0] + 4]  # the removals sit in between
    await live_server.settle()
    await live_server.gql(SEND, {"c": cid, "b": "m4"}, token=owner.token)
    assert [e["message"]["body"] for e in await nexts(ws, resumed, 1)] == ["m4"]  # live, once

    # resuming from the conversation's cursor taken after m3 picks up exactly what follows
    from_latest = await ws.subscribe(EVENTS, {"c": cid, "a": latest})
    assert [e["message"]["body"] for e in await nexts(ws, from_latest, 1)] == ["m4"]
    await ws.silent(0.3)


async def test_a_subscription_from_a_cursor_on_a_removal_position(live_server: LiveServer) -> None:
    owner, kept, gone = [await live_server.user() for _ in range(3)]
    g = await group(live_server, owner, kept, gone)
    cid = g["conversation"]["id"]
    await live_server.gql(SEND, {"c": cid, "b": "old"}, token=owner.token)
    await live_server.gql(REMOVE, {"g": g["id"], "u": gone.gid}, token=owner.token)
    at_removal = (await live_server.gql(CURSOR, {"c": cid}, token=kept.token))["conversation"]["eventCursor"]
    await live_server.gql(SEND, {"c": cid, "b": "new"}, token=owner.token)
    ws = await live_server.ws(kept.token)
    op = await ws.subscribe(EVENTS, {"c": cid, "a": at_removal})
    assert [e["message"]["body"] for e in await nexts(ws, op, 1)] == ["new"]
    await live_server.settle()
    await live_server.gql(SEND, {"c": cid, "b": "live"}, token=owner.token)
    assert [e["message"]["body"] for e in await nexts(ws, op, 1)] == ["live"]
    await ws.silent(0.2)


# ------------------------------------------------------------------ three instances


@pytest.fixture
def redis_instances(ws_backend: tuple[str, str | None]) -> None:
    if ws_backend[0] != "services":
        pytest.skip("instances share events over Redis only on the services backend")


async def test_across_instances_a_removed_member_gets_no_later_message(
    redis_instances: None, start_server: StartServer
) -> None:
    """X commits the removal but publishes late; Y sends right after; the removed
    member's socket is on Z."""
    x, y, z = await start_server(), await start_server(), await start_server()
    owner, kept, removed = [await x.user() for _ in range(3)]
    g = await group(x, owner, kept, removed)
    cid = g["conversation"]["id"]
    ws_kept, ws_removed = await z.ws(kept.token), await z.ws(removed.token)
    op_kept = await ws_kept.subscribe(EVENTS, {"c": cid})
    op_removed = await ws_removed.subscribe(EVENTS, {"c": cid})
    await z.settle()
    await asyncio.sleep(0.2)  # Z's Redis subscription is live

    held = HeldMembership(x.services.events.hub)
    original, x.services.events = x.services.events, held
    try:
        removal = asyncio.ensure_future(x.gql(REMOVE, {"g": g["id"], "u": removed.gid}, token=owner.token))
        await asyncio.wait_for(held.reached.wait(), 5)
        await y.gql(SEND, {"c": cid, "b": "after the removal"}, token=owner.token)
        event = (await ws_kept.next(op_kept, within=10))["messageEvents"]
        assert event["message"]["body"] == "after the removal"
        assert (await ws_removed.error(op_removed, within=10))["extensions"] == {"code": "NOT_FOUND"}
        held.release.set()
        await removal
    finally:
        held.release.set()
        x.services.events = original
    await ws_removed.silent(0.5)
    assert not [m for m in ws_removed.messages if m.get("type") == "next"
                and m["payload"]["data"]["messageEvents"]["message"]["body"] == "after the removal"]


async def test_subscribing_while_a_removal_is_overtaken_reads_again_and_refuses(live_server: LiveServer) -> None:
    """The members are cached (read before the removal); a later message arrives, the
    removal's event not yet: the cache has a hole before the message's position, so a
    new subscribe of the removed member decides on a fresh read."""
    owner, removed = await live_server.user(), await live_server.user()
    g = await group(live_server, owner, removed)
    cid = g["conversation"]["id"]
    ws_owner, ws_removed = await live_server.ws(owner.token), await live_server.ws(removed.token)
    op_owner = await ws_owner.subscribe(EVENTS, {"c": cid})  # caches the members
    await live_server.settle()
    await live_server.gql(SEND, {"c": cid, "b": "contiguous"}, token=owner.token)
    assert (await ws_owner.next(op_owner))["messageEvents"]["message"]["body"] == "contiguous"
    state = (await _state(live_server, cid))
    loads = state.loads
    early = await ws_removed.subscribe(EVENTS, {"c": cid})  # no hole: served from the cache
    await live_server.settle()
    assert state.loads == loads

    services = live_server.services
    held = HeldMembership(services.events.hub)
    original, services.events = services.events, held
    try:
        removal = asyncio.ensure_future(live_server.gql(REMOVE, {"g": g["id"], "u": removed.gid}, token=owner.token))
        await asyncio.wait_for(held.reached.wait(), 5)
        await live_server.gql(SEND, {"c": cid, "b": "after the removal"}, token=owner.token)
        event = (await ws_owner.next(op_owner))["messageEvents"]
        await seen_position(live_server, cid, position(event["cursor"]))
        assert not state.complete()
        late = await ws_removed.subscribe(EVENTS, {"c": cid})
        errors = {}
        for _ in range(2):
            message = await ws_removed.expect("error")
            errors[message["id"]] = message["payload"][0]["extensions"]["code"]
        assert errors == {early: "NOT_FOUND", late: "NOT_FOUND"}
        held.release.set()
        await removal
    finally:
        held.release.set()
        services.events = original
    await ws_removed.silent(0.3)
    assert not [m for m in ws_removed.messages if m.get("type") == "next"
                and m["payload"]["data"]["messageEvents"]["message"]["body"] == "after the removal"]


async def _state(server: LiveServer, cid: str) -> Any:
    from realtime.events import conversation_channel
    from schema import ids

    return server.handler.engine.feeds[conversation_channel(ids.decode("Conversation", cid))].state


async def test_kept_members_follow_a_removal_in_order_without_a_replay(live_server: LiveServer) -> None:
    """The removal's event carries its position: the others step over it live (a
    removal without one would look like a jump and cost every group a replay read)."""
    from sqlalchemy import event as sa_event

    owner, kept, gone = [await live_server.user() for _ in range(3)]
    g = await group(live_server, owner, kept, gone)
    cid = g["conversation"]["id"]
    ws = await live_server.ws(kept.token)
    op = await ws.subscribe(EVENTS, {"c": cid})
    await live_server.settle()
    replays: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM message_events" in statement:
            replays.append(statement)

    engine = live_server.services.db.engine.sync_engine
    sa_event.listen(engine, "before_cursor_execute", before)
    try:
        await live_server.gql(REMOVE, {"g": g["id"], "u": gone.gid}, token=owner.token)
        await live_server.gql(SEND, {"c": cid, "b": "next"}, token=owner.token)
        event = (await ws.next(op))["messageEvents"]
    finally:
        sa_event.remove(engine, "before_cursor_execute", before)
    assert event["message"]["body"] == "next"
    assert replays == []
