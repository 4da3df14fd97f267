"""Conversations over HTTP: direct pairs, the list, hiding, read positions, typing."""
from __future__ import annotations

import pytest

from db import models
from resolvers.messages import decode_event_cursor
from tests.chat.conftest import count_rows, make_group, table_snapshot
from tests.chat.helpers import DELETE, EDIT, MARK_READ, START, send, start
from tests.conftest import error_code
from tests.factories import create_user

LIST = """
query($first: Int, $after: String) {
  conversations(first: $first, after: $after) {
    edges { cursor node { id title kind unreadCount lastMessage { body } } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""
ONE = "query($id: ID!) { conversation(id: $id) { id title kind eventCursor } }"
DELETE_CONV = "mutation($id: ID!) { deleteConversation(id: $id) }"
TYPING = "mutation($c: ID!, $t: Boolean!) { setTyping(conversationId: $c, isTyping: $t) }"
MEMBERS = """
query($id: ID!, $first: Int, $after: String) { conversation(id: $id) {
  members(first: $first, after: $after) { edges { cursor node { username } } pageInfo { hasNextPage endCursor } } } }
"""


async def titles(gql, user, **args) -> list[str]:
    data = await gql.ok(LIST, args, token=user.token)
    return [e["node"]["title"] for e in data["conversations"]["edges"]]


# ------------------------------------------------------------ startDirectConversation


async def test_start_direct_makes_one_conversation_per_pair_titled_by_the_other(app, gql, published):
    alice = await create_user(app, "alice", display_name="Alice A")
    bob = await create_user(app, "bob", display_name="Bob B")

    first = (await gql.ok(START, {"u": bob.gid}, token=alice.token))["startDirectConversation"]
    again = (await gql.ok(START, {"u": alice.gid}, token=bob.token))["startDirectConversation"]

    assert first == {"id": first["id"], "kind": "DIRECT", "title": "Bob B"}
    assert again == {"id": first["id"], "kind": "DIRECT", "title": "Alice A"}
    assert await count_rows(app, models.Conversation) == 1
    assert await count_rows(app, models.ConversationMember) == 2
    cid = int(first["id"].split("_")[1])
    assert published.published == [
        (f"user:{alice.id}", {"type": "conversation_updated", "conversation_id": cid}),
        (f"user:{bob.id}", {"type": "conversation_updated", "conversation_id": cid}),
    ]


async def test_start_direct_refusals_write_nothing(app, gql, published):
    alice = await create_user(app, "alice")
    before = await table_snapshot(app)

    cases = [
        ({"u": alice.gid}, "BAD_USER_INPUT", "userId"),  # yourself
        ({"u": "u_999999"}, "NOT_FOUND", None),  # no such user
        ({"u": "c_1"}, "NOT_FOUND", None),  # an id of another type
        ({"u": "nonsense"}, "BAD_USER_INPUT", "userId"),  # malformed
    ]
    for variables, code, field in cases:
        err = await gql.error(START, variables, token=alice.token)
        assert error_code(err) == code, variables
        assert err["extensions"].get("field") == field
    assert error_code(await gql.error(START, {"u": alice.gid})) == "UNAUTHENTICATED"
    assert await table_snapshot(app) == before
    assert published.published == []


# ------------------------------------------------------------------ conversations


async def test_list_is_latest_activity_first_with_keyset_pages_that_never_repeat(app, gql):
    alice = await create_user(app, "alice")
    peers = [await create_user(app, f"peer{i}", display_name=f"P{i}") for i in range(1, 6)]
    convs = [await start(gql, alice, p) for p in peers]  # created P1..P5
    for i in (2, 0, 4):  # activity in P3, then P1, then P5
        await send(gql, peers[i], convs[i], f"hi from P{i + 1}")

    assert await titles(gql, alice) == ["P5", "P1", "P3", "P4", "P2"]

    page1 = (await gql.ok(LIST, {"first": 2}, token=alice.token))["conversations"]
    assert [e["node"]["title"] for e in page1["edges"]] == ["P5", "P1"]
    assert page1["pageInfo"]["hasNextPage"] is True
    assert page1["pageInfo"]["hasPreviousPage"] is False
    # P2 (the oldest) jumps to the top between two pages: it is not repeated later.
    await send(gql, peers[1], convs[1], "back to the top")
    page2 = (await gql.ok(LIST, {"first": 2, "after": page1["pageInfo"]["endCursor"]}, token=alice.token))
    page2 = page2["conversations"]
    assert [e["node"]["title"] for e in page2["edges"]] == ["P3", "P4"]
    page3 = (await gql.ok(LIST, {"first": 2, "after": page2["pageInfo"]["endCursor"]}, token=alice.token))
    page3 = page3["conversations"]
    assert [e["node"]["title"] for e in page3["edges"]] == []
    assert page3["pageInfo"] == {"hasNextPage": False, "hasPreviousPage": True, "startCursor": None,
                                 "endCursor": None}
    assert await titles(gql, alice) == ["P2", "P5", "P1", "P3", "P4"]


async def test_list_page_size_and_cursor_limits(app, gql):
    alice = await create_user(app, "alice")
    for first, code in ((0, "BAD_USER_INPUT"), (101, "BAD_USER_INPUT"), (-1, "BAD_USER_INPUT")):
        err = await gql.error(LIST, {"first": first}, token=alice.token)
        assert (error_code(err), err["extensions"]["field"]) == (code, "first")
    assert (await gql.ok(LIST, {"first": 100}, token=alice.token))["conversations"]["edges"] == []
    for bad in ("!!", "WzFd", "WyJub3QgYSBkYXRlIiwxXQ"):  # not base64 / wrong arity / not a time
        err = await gql.error(LIST, {"after": bad}, token=alice.token)
        assert (error_code(err), err["extensions"]["field"]) == ("BAD_USER_INPUT", "after")
    assert error_code(await gql.error(LIST)) == "UNAUTHENTICATED"


async def test_conversation_lookup_is_for_members_only(app, gql):
    alice, bob, eve = [await create_user(app, n) for n in ("alice", "bob", "eve")]
    cid = await start(gql, alice, bob)

    assert (await gql.ok(ONE, {"id": cid}, token=bob.token))["conversation"]["title"] == "Alice"
    body = await gql(ONE, {"id": cid}, token=eve.token)
    assert body["data"] == {"conversation": None}
    assert error_code(body["errors"][0]) == "NOT_FOUND"
    body = await gql(ONE, {"id": "c_424242"}, token=eve.token)
    assert error_code(body["errors"][0]) == "NOT_FOUND"
    err = await gql.error(ONE, {"id": "x"}, token=eve.token)
    assert (error_code(err), err["extensions"]["field"]) == ("BAD_USER_INPUT", "id")


async def test_group_conversation_title_and_members_pages(app, gql):
    owner = await create_user(app, "owner")
    mates = [await create_user(app, f"mate{i}") for i in range(3)]
    group = await make_group(app, owner, {"MEMBER": mates}, name="Rocket Team")

    data = await gql.ok(ONE, {"id": group.gid}, token=mates[0].token)
    assert (data["conversation"]["title"], data["conversation"]["kind"]) == ("Rocket Team", "GROUP")

    first = (await gql.ok(MEMBERS, {"id": group.gid, "first": 2}, token=owner.token))["conversation"]["members"]
    assert [e["node"]["username"] for e in first["edges"]] == ["owner", "mate0"]
    assert first["pageInfo"]["hasNextPage"] is True
    rest = await gql.ok(MEMBERS, {"id": group.gid, "first": 2, "after": first["pageInfo"]["endCursor"]},
                        token=owner.token)
    rest = rest["conversation"]["members"]
    assert [e["node"]["username"] for e in rest["edges"]] == ["mate1", "mate2"]
    assert rest["pageInfo"]["hasNextPage"] is False
    for size in (0, 101):
        body = await gql(MEMBERS, {"id": group.gid, "first": size}, token=owner.token)
        assert error_code(body["errors"][0]) == "BAD_USER_INPUT"
        assert body["errors"][0]["extensions"]["field"] == "first"


# --------------------------------------------------------------- deleteConversation


async def test_delete_conversation_hides_it_until_a_newer_message(app, gql, published):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    cid = await start(gql, alice, bob)
    await send(gql, bob, cid, "one")
    published.clear()

    assert (await gql.ok(DELETE_CONV, {"id": cid}, token=alice.token)) == {"deleteConversation": True}

    assert await titles(gql, alice) == []
    assert await titles(gql, bob) == ["Alice"]
    assert await count_rows(app, models.Message) == 1  # nothing deleted
    conv_id = int(cid.split("_")[1])
    assert published.published == [
        (f"user:{alice.id}", {"type": "conversation_removed", "conversation_id": conv_id})
    ]
    # Still reachable directly; hiding again changes and announces nothing.
    assert (await gql.ok(ONE, {"id": cid}, token=alice.token))["conversation"]["id"] == cid
    published.clear()
    assert (await gql.ok(DELETE_CONV, {"id": cid}, token=alice.token)) == {"deleteConversation": True}
    assert published.published == []

    await send(gql, bob, cid, "two")
    assert await titles(gql, alice) == ["Bob"]


async def test_start_direct_again_shows_a_hidden_conversation(app, gql):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    cid = await start(gql, alice, bob)
    await gql.ok(DELETE_CONV, {"id": cid}, token=alice.token)

    assert await start(gql, alice, bob) == cid
    assert await titles(gql, alice) == ["Bob"]


async def test_delete_conversation_refusals(app, gql, published):
    alice, bob, eve = [await create_user(app, n) for n in ("alice", "bob", "eve")]
    cid = await start(gql, alice, bob)
    group = await make_group(app, alice, {"MEMBER": [bob]})
    before = await table_snapshot(app)
    published.clear()

    err = await gql.error(DELETE_CONV, {"id": group.gid}, token=bob.token)
    assert (error_code(err), err["extensions"]["field"]) == ("BAD_USER_INPUT", "id")
    assert error_code(await gql.error(DELETE_CONV, {"id": cid}, token=eve.token)) == "NOT_FOUND"
    assert error_code(await gql.error(DELETE_CONV, {"id": "c_99999"}, token=eve.token)) == "NOT_FOUND"
    assert error_code(await gql.error(DELETE_CONV, {"id": cid})) == "UNAUTHENTICATED"
    assert await table_snapshot(app) == before
    assert published.published == []


# ------------------------------------------------------------- markConversationRead


UNREAD = "query($id: ID!) { conversation(id: $id) { unreadCount } }"


async def unread(gql, user, cid) -> int:
    return int((await gql.ok(UNREAD, {"id": cid}, token=user.token))["conversation"]["unreadCount"])


async def test_read_position_only_moves_forward_and_unread_counts_others_live_messages(app, gql, published):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    cid = await start(gql, alice, bob)
    conv_id = int(cid.split("_")[1])
    m = [await send(gql, bob, cid, f"m{i}") for i in range(1, 4)]
    assert (await unread(gql, alice, cid), await unread(gql, bob, cid)) == (3, 0)

    await send(gql, alice, cid, "mine")  # sending moves the sender's own read position
    assert (await unread(gql, alice, cid), await unread(gql, bob, cid)) == (0, 1)
    await send(gql, bob, cid, "m5")
    assert (await unread(gql, alice, cid), await unread(gql, bob, cid)) == (1, 0)

    published.clear()
    data = (await gql.ok(MARK_READ, {"c": cid, "m": m[0]["id"]}, token=alice.token))["markConversationRead"]
    assert data["unreadCount"] == 1  # an older position changes nothing
    assert published.published == []

    data = (await gql.ok(MARK_READ, {"c": cid}, token=alice.token))["markConversationRead"]
    assert data["unreadCount"] == 0
    (channel, event), = published.of_type("read_state")
    assert channel == f"conv:{conv_id}"
    assert (event["user_id"], event["last_read_seq"]) == (alice.id, 5)
    assert (f"user:{alice.id}", {"type": "conversation_updated", "conversation_id": conv_id}) in published.published

    oops = await send(gql, bob, cid, "oops")
    assert await unread(gql, alice, cid) == 1
    await gql.ok(DELETE, {"id": oops["id"]}, token=bob.token)
    assert await unread(gql, alice, cid) == 0  # deleted messages never count


async def test_mark_read_in_the_middle_then_forward(app, gql):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    cid = await start(gql, alice, bob)
    m = [await send(gql, bob, cid, f"m{i}") for i in range(1, 5)]

    data = (await gql.ok(MARK_READ, {"c": cid, "m": m[2]["id"]}, token=alice.token))["markConversationRead"]
    assert data["unreadCount"] == 1
    data = (await gql.ok(MARK_READ, {"c": cid, "m": m[0]["id"]}, token=alice.token))["markConversationRead"]
    assert data["unreadCount"] == 1  # never back
    states = {s["user"]["id"]: s["lastReadMessage"]["id"] for s in data["readStates"]}
    assert states == {alice.gid: m[2]["id"], bob.gid: m[3]["id"]}


async def test_mark_read_refusals_write_nothing(app, gql, published):
    alice, bob, eve = [await create_user(app, n) for n in ("alice", "bob", "eve")]
    cid = await start(gql, alice, bob)
    other = await start(gql, alice, eve)
    foreign = await send(gql, eve, other, "elsewhere")
    before = await table_snapshot(app)
    published.clear()

    cases = [
        ({"c": cid, "m": foreign["id"]}, alice, "NOT_FOUND", None),  # message of another conversation
        ({"c": cid, "m": "m_999999"}, alice, "NOT_FOUND", None),
        ({"c": cid}, eve, "NOT_FOUND", None),  # not a member
        ({"c": cid, "m": "zzz"}, alice, "BAD_USER_INPUT", "upToMessageId"),
        ({"c": "zzz"}, alice, "BAD_USER_INPUT", "conversationId"),
    ]
    for variables, user, code, field in cases:
        err = await gql.error(MARK_READ, variables, token=user.token)
        assert (error_code(err), err["extensions"].get("field")) == (code, field), variables
    assert await table_snapshot(app) == before
    assert published.published == []


async def test_read_states_list_the_most_recent_readers(app, gql):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    cid = await start(gql, alice, bob)
    assert (await gql.ok(MARK_READ, {"c": cid}, token=alice.token))["markConversationRead"]["readStates"] == []
    m1 = await send(gql, alice, cid, "hello")
    data = (await gql.ok(MARK_READ, {"c": cid}, token=bob.token))["markConversationRead"]
    assert [(s["user"]["id"], s["lastReadMessage"]["id"]) for s in data["readStates"]] == [
        (bob.gid, m1["id"]), (alice.gid, m1["id"])
    ]
    assert all(s["readAt"].endswith("+00:00") for s in data["readStates"])


# ------------------------------------------------------------------------ typing


class TypingService:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, bool]] = []

    async def set(self, conversation_id: int, user_id: int, is_typing: bool) -> None:
        self.calls.append((conversation_id, user_id, is_typing))


async def test_set_typing_hands_to_the_typing_service_or_publishes(app, gql, published):
    alice, bob, eve = [await create_user(app, n) for n in ("alice", "bob", "eve")]
    cid = await start(gql, alice, bob)
    conv_id = int(cid.split("_")[1])
    services = app.state.parley.services
    wired, service = services.typing, TypingService()
    published.clear()
    try:
        services.typing = service
        assert await gql.ok(TYPING, {"c": cid, "t": True}, token=bob.token) == {"setTyping": True}
        assert service.calls == [(conv_id, bob.id, True)]
        assert error_code(await gql.error(TYPING, {"c": cid, "t": True}, token=eve.token)) == "NOT_FOUND"
        assert service.calls == [(conv_id, bob.id, True)]

        services.typing = None  # without the typing service the event goes out as is
        assert await gql.ok(TYPING, {"c": cid, "t": False}, token=alice.token) == {"setTyping": True}
        assert published.published == [
            (f"conv:{conv_id}", {"type": "typing", "conversation_id": conv_id, "user_id": alice.id,
                                 "is_typing": False})
        ]
    finally:
        services.typing = wired


# ------------------------------------------------------------------- event cursor


async def test_event_cursor_is_the_latest_event_position(app, gql):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    cid = await start(gql, alice, bob)
    conv_id = int(cid.split("_")[1])
    cursor = (await gql.ok(ONE, {"id": cid}, token=alice.token))["conversation"]["eventCursor"]
    assert decode_event_cursor(cursor, conv_id) == 0

    m = await send(gql, alice, cid, "one")
    await send(gql, bob, cid, "two")
    await gql.ok(EDIT, {"id": m["id"], "b": "one!"}, token=alice.token)

    cursor = (await gql.ok(ONE, {"id": cid}, token=bob.token))["conversation"]["eventCursor"]
    assert decode_event_cursor(cursor, conv_id) == 3


@pytest.mark.parametrize("document", [
    "{ conversations { edges { cursor } } }",
    '{ conversation(id: "c_1") { id } }',
    '{ messages(conversationId: "c_1") { edges { cursor } } }',
    "{ notifications { edges { cursor } } }",
    "{ unreadNotificationCount }",
    'mutation { startDirectConversation(userId: "u_1") { id } }',
    'mutation { deleteConversation(id: "c_1") }',
    'mutation { markConversationRead(conversationId: "c_1") { id } }',
    'mutation { setTyping(conversationId: "c_1", isTyping: true) }',
    'mutation { sendMessage(input: {conversationId: "c_1", body: "x"}) { id } }',
    'mutation { editMessage(id: "m_1", body: "x") { id } }',
    'mutation { deleteMessage(id: "m_1") { id } }',
    "mutation { markNotificationsRead }",
    "mutation { clearNotifications }",
])
async def test_every_chat_operation_needs_a_viewer(app, gql, document):
    assert error_code(await gql.error(document)) == "UNAUTHENTICATED"


async def test_set_typing_with_a_malformed_id(app, gql):
    alice = await create_user(app, "alice")
    err = await gql.error(TYPING, {"c": "nope", "t": True}, token=alice.token)
    assert (error_code(err), err["extensions"]["field"]) == ("BAD_USER_INPUT", "conversationId")
