"""What the realtime work builds on: snapshots, event cursors, replay, event types.

Captured events are compared with a fresh fetch from the database (replay), and a
Message rebuilt from a snapshot resolves without a single SQL statement.
"""
from __future__ import annotations

from typing import Any

import orjson
import pytest
import strawberry

from auth.viewer import Viewer
from errors import BadUserInput
from resolvers import messages as messages_resolvers
from resolvers.context import Context
from schema.conversations import ReadState
from schema.messages import MessageEvent, TypingEvent
from tests.chat.conftest import make_group, make_pending_attachment
from tests.chat.helpers import DELETE, EDIT, send
from tests.factories import create_user

MESSAGE_QUERY = """{ event {
  kind cursor
  message { id body clientMessageId createdAt editedAt deletedAt isDeleted
    sender { id username displayName createdAt isAdmin }
    attachments { id filename contentType size kind }
    mentions { id username }
    editHistory { body editedAt } }
} }"""


@strawberry.type
class _Query:
    @strawberry.field
    def event(self, info: strawberry.Info) -> MessageEvent:
        return MessageEvent.from_event(info.root_value, info.context)


def _schema() -> strawberry.Schema:
    return strawberry.Schema(query=_Query)


def _context(app: Any, user_id: int) -> Context:
    return Context(services=app.state.parley.services, viewer=Viewer(user_id=user_id, session_id=0))


async def test_a_message_event_resolves_from_its_snapshot_without_sql(app, gql, published, count_statements):
    alice = await create_user(app, "alice")
    carol = await create_user(app, "carol")
    group = await make_group(app, alice, {"MEMBER": [carol]})
    attachment = await make_pending_attachment(app, alice, group.conversation_id)
    m = await send(gql, alice, group.gid, "hi @carol", clientMessageId="k1", attachmentIds=[attachment])
    await gql.ok(EDIT, {"id": m["id"], "b": "hello @carol"}, token=alice.token)
    (_, event), = [e for e in published.of_type("message") if e[1]["kind"] == "EDITED"]
    wire = orjson.loads(orjson.dumps(event))  # what crosses Redis: plain JSON

    with count_statements() as counter:
        result = await _schema().execute(MESSAGE_QUERY, root_value=wire, context_value=_context(app, alice.id))

    assert result.errors is None
    assert counter.count == 0, counter.statements
    got = result.data["event"]
    assert messages_resolvers.decode_event_cursor(got["cursor"], group.conversation_id) == 2
    assert got["kind"] == "EDITED"
    message = got["message"]
    assert (message["id"], message["body"], message["clientMessageId"]) == (m["id"], "hello @carol", "k1")
    assert message["sender"] == {"id": alice.gid, "username": "alice", "displayName": "Alice",
                                 "createdAt": message["sender"]["createdAt"], "isAdmin": False}
    assert message["mentions"] == [{"id": carol.gid, "username": "carol"}]
    assert message["attachments"] == [{"id": attachment, "filename": "a.png", "contentType": "image/png", "size": 3,
                                       "kind": "IMAGE"}]
    assert message["editHistory"] == [{"body": "hi @carol", "editedAt": m["createdAt"]}]
    # another viewer gets the same message without the sender's key
    result = await _schema().execute(MESSAGE_QUERY, root_value=wire, context_value=_context(app, carol.id))
    assert result.data["event"]["message"]["clientMessageId"] is None


async def test_replay_matches_what_was_published(app, gql, published):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    group = await make_group(app, alice, {"MEMBER": [bob]})
    m1 = await send(gql, alice, group.gid, "one")
    await send(gql, bob, group.gid, "two")
    await gql.ok(EDIT, {"id": m1["id"], "b": "one!"}, token=alice.token)
    await gql.ok(DELETE, {"id": m1["id"]}, token=alice.token)
    live = [e for _, e in published.of_type("message")]

    async with app.state.parley.services.db.session() as s:
        replay = await messages_resolvers.events_since(s, group.conversation_id, 0)
        tail = await messages_resolvers.events_since(s, group.conversation_id, 2)
        limited = await messages_resolvers.events_since(s, group.conversation_id, 0, limit=1)

    assert [(e["kind"], e["pos"]) for e in live] == [("ADDED", 1), ("ADDED", 2), ("EDITED", 3), ("DELETED", 4)]
    assert [(e["kind"], e["pos"]) for e in replay] == [(e["kind"], e["pos"]) for e in live]
    assert replay[-1] == live[-1]  # the latest state is exactly what was announced
    assert replay[1] == live[1]  # an untouched message replays as it was published
    assert replay[0]["message"]["message"]["body"] is None  # replay shows the message as it is now
    assert [e["pos"] for e in tail] == [3, 4]
    assert [e["pos"] for e in limited] == [1]


def test_event_cursor_round_trip_and_refusals():
    cursor = messages_resolvers.encode_event_cursor(12, 345)
    assert messages_resolvers.decode_event_cursor(cursor, 12) == 345
    for bad, conversation in ((cursor, 13), ("***", 12), ("", 12), ("ZXY6MTI6LTE", 12), ("YWJj", 12)):
        with pytest.raises(BadUserInput) as info:
            messages_resolvers.decode_event_cursor(bad, conversation)
        assert info.value.extensions == {"code": "BAD_USER_INPUT", "field": "after"}


async def test_snapshot_is_json_and_leaves_secrets_out(app, gql):
    alice = await create_user(app, "alice")
    group = await make_group(app, alice)
    m = await send(gql, alice, group.gid, "x")
    async with app.state.parley.services.db.session() as s:
        snap = await messages_resolvers.snapshot(s, int(m["id"].split("_")[1]))
    assert orjson.loads(orjson.dumps(snap)) == snap
    assert set(snap) == {"message", "sender", "attachments", "mentions", "edits"}
    assert "password_hash" not in snap["sender"]
    assert snap["message"]["created_at"] == m["createdAt"]


async def test_typing_and_read_state_events_rebuild_their_types(app):
    alice = await create_user(app, "alice")

    typing = TypingEvent.from_event({"type": "typing", "conversation_id": 7, "user_id": alice.id, "is_typing": True})
    assert (typing.conversation_id, typing.user_id, typing.is_typing) == ("c_7", alice.id, True)
    state = ReadState.from_event({"type": "read_state", "conversation_id": 7, "user_id": alice.id,
                                  "last_read_seq": 3, "last_read_message_id": 9,
                                  "read_at": "2026-01-01T00:00:00+00:00"})
    assert (state.row.user_id, state.row.last_read_seq, state.row.read_at.isoformat()) == (
        alice.id, 3, "2026-01-01T00:00:00+00:00")
