"""The nine subscriptions of the contract, over a real socket: what each delivers, to whom,
and what it refuses."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests import factories
from tests.realtime import wsclient
from tests.realtime.wsclient import LiveServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

# The shared WebSocket fixtures (tests/realtime/wsclient.py), found by pytest here.
ws_backend = wsclient.ws_backend
start_server = wsclient.start_server
live_server = wsclient.live_server

START_DIRECT = "mutation($u: ID!) { startDirectConversation(userId: $u) { id eventCursor } }"
CREATE_GROUP = wsclient.CREATE_GROUP
REMOVE_MEMBER = "mutation($g: ID!, $u: ID!) { removeGroupMember(groupId: $g, userId: $u) { id } }"
SEND = (
    "mutation($c: ID!, $b: String!, $k: String) "
    "{ sendMessage(input: {conversationId: $c, body: $b, clientMessageId: $k}) { id } }"
)
EDIT = "mutation($id: ID!, $b: String!) { editMessage(id: $id, body: $b) { id } }"
DELETE = "mutation($id: ID!) { deleteMessage(id: $id) { id } }"
EVENTS = (
    "subscription($c: ID!, $a: String) { messageEvents(conversationId: $c, after: $a) { kind cursor message "
    "{ id body isDeleted clientMessageId editHistory { body } sender { username } conversation { id } } } }"
)
TYPING = "subscription($c: ID!) { typing(conversationId: $c) { conversationId isTyping user { username } } }"
READ_STATE = (
    "subscription($c: ID!) { readStateChanged(conversationId: $c) { user { username } lastReadMessage { id } } }"
)
UPDATED = "subscription { conversationUpdated { id title unreadCount lastMessage { body } } }"
REMOVED = "subscription { conversationRemoved }"
PRESENCE = "subscription($u: [ID!]) { presenceChanged(userIds: $u) { user { username } status } }"
NOTIFICATIONS = "subscription { notificationAdded { kind actor { username } conversation { id } } }"
MONITOR = (
    "subscription($i: Int) { adminMonitor(intervalSeconds: $i) { instances connections subscriptions totalUsers } }"
)
AUDIT = "subscription { auditEvents { kind actor { username } } }"


async def direct(server: LiveServer, a: factories.TestUser, b: factories.TestUser) -> dict[str, Any]:
    data = await server.gql(START_DIRECT, {"u": b.gid}, token=a.token)
    return dict(data["startDirectConversation"])


group = wsclient.create_group


async def send(
    server: LiveServer, user: factories.TestUser, conversation_id: str, body: str, key: str | None = None
) -> str:
    data = await server.gql(SEND, {"c": conversation_id, "b": body, "k": key}, token=user.token)
    return str(data["sendMessage"]["id"])


# ---------------------------------------------------------------------- messageEvents


async def test_message_events_added_edited_deleted(live_server: LiveServer) -> None:
    alice, bob = await live_server.user(), await live_server.user()
    conversation = await direct(live_server, alice, bob)
    ws = await live_server.ws(bob.token)
    op = await ws.subscribe(EVENTS, {"c": conversation["id"]})
    await live_server.settle()

    message_id = await send(live_server, alice, conversation["id"], "hello")
    added = (await ws.next(op))["messageEvents"]
    await live_server.gql(EDIT, {"id": message_id, "b": "hello!"}, token=alice.token)
    edited = (await ws.next(op))["messageEvents"]
    await live_server.gql(DELETE, {"id": message_id}, token=alice.token)
    deleted = (await ws.next(op))["messageEvents"]

    base = {"id": message_id, "clientMessageId": None, "sender": {"username": alice.username},
            "conversation": {"id": conversation["id"]}}
    assert added["kind"] == "ADDED"
    assert added["message"] == {**base, "body": "hello", "isDeleted": False, "editHistory": []}
    assert edited["kind"] == "EDITED"
    assert edited["message"] == {**base, "body": "hello!", "isDeleted": False, "editHistory": [{"body": "hello"}]}
    assert deleted["kind"] == "DELETED"  # a tombstone: no body, no history
    assert deleted["message"] == {**base, "body": None, "isDeleted": True, "editHistory": []}
    assert len({added["cursor"], edited["cursor"], deleted["cursor"]}) == 3


async def test_client_message_id_reaches_the_sender_only(live_server: LiveServer) -> None:
    alice, bob = await live_server.user(), await live_server.user()
    conversation = await direct(live_server, alice, bob)
    mine, theirs = await live_server.ws(alice.token), await live_server.ws(bob.token)
    op_mine = await mine.subscribe(EVENTS, {"c": conversation["id"]})
    op_theirs = await theirs.subscribe(EVENTS, {"c": conversation["id"]})
    await live_server.settle()
    await send(live_server, alice, conversation["id"], "hi", key="k-1")
    assert (await mine.next(op_mine))["messageEvents"]["message"]["clientMessageId"] == "k-1"
    assert (await theirs.next(op_theirs))["messageEvents"]["message"]["clientMessageId"] is None


async def test_resume_after_a_cursor_replays_then_goes_live(live_server: LiveServer) -> None:
    alice, bob = await live_server.user(), await live_server.user()
    conversation = await direct(live_server, alice, bob)
    first = await send(live_server, alice, conversation["id"], "one")
    ws = await live_server.ws(bob.token)
    op = await ws.subscribe(EVENTS, {"c": conversation["id"]})
    await live_server.settle()
    await send(live_server, alice, conversation["id"], "two")
    cursor = (await ws.next(op))["messageEvents"]["cursor"]
    await ws.close()
    # while away: a new message, and the first one edited
    await send(live_server, alice, conversation["id"], "three")
    await live_server.gql(EDIT, {"id": first, "b": "one, edited"}, token=alice.token)

    again = await live_server.ws(bob.token)
    op = await again.subscribe(EVENTS, {"c": conversation["id"], "a": cursor})
    replayed = [(await again.next(op))["messageEvents"] for _ in range(2)]
    assert [(e["kind"], e["message"]["body"]) for e in replayed] == [("ADDED", "three"), ("EDITED", "one, edited")]
    await live_server.settle()
    await send(live_server, alice, conversation["id"], "four")
    live = (await again.next(op))["messageEvents"]
    assert (live["kind"], live["message"]["body"]) == ("ADDED", "four")
    await again.silent(0.2)


async def test_message_events_refusals(live_server: LiveServer) -> None:
    alice, bob, eve = await live_server.user(), await live_server.user(), await live_server.user()
    conversation = await direct(live_server, alice, bob)
    other = await direct(live_server, alice, eve)
    ws = await live_server.ws(eve.token)
    # not a member: NOT_FOUND, as if it did not exist
    op = await ws.subscribe(EVENTS, {"c": conversation["id"]})
    assert (await ws.error(op))["extensions"] == {"code": "NOT_FOUND"}
    op = await ws.subscribe(EVENTS, {"c": "c_999999"})
    assert (await ws.error(op))["extensions"] == {"code": "NOT_FOUND"}
    op = await ws.subscribe(EVENTS, {"c": "nonsense"})
    assert (await ws.error(op))["extensions"] == {"code": "BAD_USER_INPUT", "field": "conversationId"}
    # malformed or foreign cursors: BAD_USER_INPUT (field after)
    mine = await live_server.ws(alice.token)
    for cursor in ("%%%", "bm90LWEtY3Vyc29y", conversation["eventCursor"]):
        op = await mine.subscribe(EVENTS, {"c": other["id"], "a": cursor})
        assert (await mine.error(op))["extensions"] == {"code": "BAD_USER_INPUT", "field": "after"}, cursor
    # nothing was subscribed
    await live_server.settle()
    assert all(not c.ops for c in live_server.handler.connections if c.viewer and c.viewer.user_id == eve.id)


# --------------------------------------------------------------- typing and reads


async def test_typing_reaches_the_other_members_only(live_server: LiveServer) -> None:
    alice, bob, carol = await live_server.user(), await live_server.user(), await live_server.user()
    g = await group(live_server, alice, bob, carol)
    cid = g["conversation"]["id"]
    mine, theirs = await live_server.ws(alice.token), await live_server.ws(bob.token)
    op_mine = await mine.subscribe(TYPING, {"c": cid})
    op_theirs = await theirs.subscribe(TYPING, {"c": cid})
    await live_server.settle()
    await live_server.gql("mutation($c: ID!) { setTyping(conversationId: $c, isTyping: true) }", {"c": cid},
                          token=alice.token)
    event = (await theirs.next(op_theirs))["typing"]
    assert event == {"conversationId": cid, "isTyping": True, "user": {"username": alice.username}}
    await mine.silent(0.2)
    assert op_mine


async def test_read_state_changed(live_server: LiveServer) -> None:
    alice, bob = await live_server.user(), await live_server.user()
    conversation = await direct(live_server, alice, bob)
    message_id = await send(live_server, alice, conversation["id"], "read me")
    ws = await live_server.ws(alice.token)
    op = await ws.subscribe(READ_STATE, {"c": conversation["id"]})
    await live_server.settle()
    await live_server.gql("mutation($c: ID!) { markConversationRead(conversationId: $c) { id } }",
                          {"c": conversation["id"]}, token=bob.token)
    assert (await ws.next(op))["readStateChanged"] == {
        "user": {"username": bob.username}, "lastReadMessage": {"id": message_id},
    }


# ------------------------------------------------------------ the viewer's own streams


async def test_conversation_updated_is_resolved_for_each_viewer(live_server: LiveServer) -> None:
    alice = await live_server.user(display_name="Alice A")
    bob = await live_server.user(display_name="Bob B")
    conversation = await direct(live_server, alice, bob)
    ws_alice, ws_bob = await live_server.ws(alice.token), await live_server.ws(bob.token)
    op_alice = await ws_alice.subscribe(UPDATED)
    op_bob = await ws_bob.subscribe(UPDATED)
    await live_server.settle()
    await send(live_server, alice, conversation["id"], "news")
    seen_by_bob = (await ws_bob.next(op_bob))["conversationUpdated"]
    seen_by_alice = (await ws_alice.next(op_alice))["conversationUpdated"]
    assert seen_by_bob == {"id": conversation["id"], "title": "Alice A", "unreadCount": 1,
                           "lastMessage": {"body": "news"}}
    assert seen_by_alice == {"id": conversation["id"], "title": "Bob B", "unreadCount": 0,
                             "lastMessage": {"body": "news"}}


async def test_conversation_removed(live_server: LiveServer) -> None:
    alice, bob = await live_server.user(), await live_server.user()
    conversation = await direct(live_server, alice, bob)
    g = await group(live_server, alice, bob)
    ws = await live_server.ws(bob.token)
    op = await ws.subscribe(REMOVED)
    await live_server.settle()
    await live_server.gql("mutation($c: ID!) { deleteConversation(id: $c) }", {"c": conversation["id"]},
                          token=bob.token)
    assert await ws.next(op) == {"conversationRemoved": conversation["id"]}
    await live_server.gql(REMOVE_MEMBER, {"g": g["id"], "u": bob.gid}, token=alice.token)
    assert await ws.next(op) == {"conversationRemoved": g["conversation"]["id"]}


async def test_notification_added(live_server: LiveServer) -> None:
    alice, bob = await live_server.user(), await live_server.user()
    conversation = await direct(live_server, alice, bob)
    ws = await live_server.ws(bob.token)
    op = await ws.subscribe(NOTIFICATIONS)
    await live_server.settle()
    await send(live_server, alice, conversation["id"], "ping")
    assert (await ws.next(op))["notificationAdded"] == {
        "kind": "DIRECT_MESSAGE", "actor": {"username": alice.username}, "conversation": {"id": conversation["id"]},
    }


async def test_presence_changed_only_for_users_the_viewer_shares_with(live_server: LiveServer) -> None:
    alice, bob, stranger = await live_server.user(), await live_server.user(), await live_server.user()
    await direct(live_server, alice, bob)
    ws = await live_server.ws(alice.token)
    op = await ws.subscribe(PRESENCE)
    narrowed = await ws.subscribe(PRESENCE, {"u": [stranger.gid]})
    await live_server.settle()
    # a stranger comes online: nothing; bob does: ONLINE
    await live_server.ws(stranger.token)
    await live_server.ws(bob.token)
    event = await ws.expect("next", within=3)
    assert event == {"id": op, "type": "next",
                     "payload": {"data": {"presenceChanged": {"user": {"username": bob.username}, "status": "ONLINE"}}}}
    await ws.silent(0.3)
    assert narrowed
    # once they share a group, the stranger's changes arrive too
    g = await group(live_server, alice, stranger)
    assert g
    await asyncio.sleep(0.2)
    await live_server.gql('mutation { setPresence(status: AWAY) { id } }', token=stranger.token)
    got = {m["id"]: m["payload"]["data"]["presenceChanged"] for m in [await ws.expect("next"), await ws.expect("next")]}
    assert got == {op: {"user": {"username": stranger.username}, "status": "AWAY"},
                   narrowed: {"user": {"username": stranger.username}, "status": "AWAY"}}


# ----------------------------------------------------------------------------- admin


async def test_admin_streams_are_forbidden_to_others(live_server: LiveServer) -> None:
    user = await live_server.user()
    ws = await live_server.ws(user.token)
    for query in (MONITOR, AUDIT):
        op = await ws.subscribe(query)
        assert (await ws.error(op))["extensions"] == {"code": "FORBIDDEN"}


async def test_admin_monitor(live_server: LiveServer) -> None:
    admin = await live_server.user(admin=True)
    ws = await live_server.ws(admin.token)
    for interval in (0, 61):
        op = await ws.subscribe(MONITOR, {"i": interval})
        assert (await ws.error(op))["extensions"] == {"code": "BAD_USER_INPUT", "field": "intervalSeconds"}
    op = await ws.subscribe(MONITOR, {"i": 1})
    first = (await ws.next(op))["adminMonitor"]
    second = (await ws.next(op, within=3))["adminMonitor"]
    assert first["instances"] == second["instances"] == 1
    assert second["connections"] >= 1 and second["subscriptions"] >= 1
    assert second["totalUsers"] >= 1


async def test_audit_events(live_server: LiveServer) -> None:
    admin, user = await live_server.user(admin=True), await live_server.user()
    ws = await live_server.ws(admin.token)
    op = await ws.subscribe(AUDIT)
    await live_server.settle()
    assert await live_server.gql("mutation { logout }", token=user.token) == {"logout": True}
    assert (await ws.next(op))["auditEvents"] == {"kind": "logout", "actor": {"username": user.username}}
