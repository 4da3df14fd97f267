"""The conversation list's one-statement read path agrees with the on-demand loaders.

`conversations(...)` brings each row's title, unread count and last message (with its
sender) in its own statement when the query asks for them, and members come as light
rows; `conversation(id)` resolves the same fields through loaders. Both must answer
the same, for every selection shape (plain fields, fragments, partial selections).
"""
from __future__ import annotations

from types import SimpleNamespace

from tests.chat.conftest import make_group
from tests.chat.helpers import DELETE, send, start
from tests.conftest import error_code
from tests.factories import create_user

NODE = """
  id kind title unreadCount createdAt updatedAt eventCursor
  group { id name }
  lastMessage { id body isDeleted createdAt editedAt clientMessageId sender { id username displayName isAdmin } }
  members(first: 2) { edges { cursor node { id username displayName createdAt } } pageInfo { hasNextPage endCursor } }
  messages(last: 2) { edges { cursor node { id body sender { username } } } pageInfo { hasPreviousPage } }
"""
LIST = f"query {{ conversations(first: 10) {{ edges {{ node {{ {NODE} }} }} }} }}"
LIST_FRAGMENTS = """
query { conversations(first: 10) { edges { ... on ConversationEdge { node { ...Row } } } } }
fragment Row on Conversation { id ... on Conversation { title unreadCount } lastMessage { body sender { username } } }
"""
LIST_BARE = (
    "query { conversations(first: 10) { edges { node { id kind members(first: 1) { edges { node { id } } } } } } }"
)
ONE = f"query($id: ID!) {{ conversation(id: $id) {{ {NODE} }} }}"
MESSAGES = """query($c: ID!) { messages(conversationId: $c, last: 10) {
  edges { cursor node { id body isDeleted clientMessageId sender { id username } conversation { id title } } }
  pageInfo { hasPreviousPage startCursor } } }"""
MEMBERS_OF = "query($id: ID!) { conversation(id: $id) { members { edges { node { id } } } } }"


async def _world(app, gql):
    alice = await create_user(app, "alice", display_name="Alice A")
    bob = await create_user(app, "bob", display_name="Bob B")
    carol = await create_user(app, "carol", display_name="Carol C")
    group = await make_group(app, alice, {"MEMBER": [bob, carol]}, name="Lunch")
    direct = await start(gql, alice, bob)
    empty = await start(gql, alice, carol)  # no message: lastMessage null, unread 0
    await send(gql, bob, group.gid, "hi all", clientMessageId="k1")
    await send(gql, carol, group.gid, "hello")
    deleted = await send(gql, bob, direct, "oops")
    await gql.ok(DELETE, {"id": deleted["id"]}, token=bob.token)
    await send(gql, alice, direct, "mine", clientMessageId="k2")
    return SimpleNamespace(alice=alice, bob=bob, carol=carol, group=group, direct=direct, empty=empty)


async def test_list_fields_equal_the_single_conversation_fields(app, gql):
    w = await _world(app, gql)

    listed = [e["node"] for e in (await gql.ok(LIST, token=w.alice.token))["conversations"]["edges"]]
    one = [(await gql.ok(ONE, {"id": node["id"]}, token=w.alice.token))["conversation"] for node in listed]

    assert listed == one
    by_id = {node["id"]: node for node in listed}
    assert [n["id"] for n in listed] == [w.direct, w.group.gid, w.empty]
    assert [n["title"] for n in listed] == ["Bob B", "Lunch", "Carol C"]
    assert [n["unreadCount"] for n in listed] == [0, 2, 0]
    assert by_id[w.group.gid]["lastMessage"]["body"] == "hello"
    assert by_id[w.group.gid]["lastMessage"]["sender"] == {
        "id": w.carol.gid, "username": "carol", "displayName": "Carol C", "isAdmin": False,
    }
    assert by_id[w.direct]["lastMessage"]["clientMessageId"] == "k2"  # alice's own: echoed
    assert by_id[w.empty]["lastMessage"] is None and by_id[w.empty]["group"] is None
    assert by_id[w.group.gid]["group"]["name"] == "Lunch"
    assert [e["node"]["username"] for e in by_id[w.group.gid]["members"]["edges"]] == ["alice", "bob"]
    assert by_id[w.group.gid]["members"]["pageInfo"]["hasNextPage"] is True
    # one statement for the three conversations' windows (UNION ALL) = one window each
    assert [[e["node"]["body"] for e in n["messages"]["edges"]] for n in listed] == [
        [None, "mine"], ["hi all", "hello"], [],
    ]


async def test_partial_and_fragment_selections(app, gql):
    w = await _world(app, gql)

    full = {e["node"]["id"]: e["node"] for e in (await gql.ok(LIST, token=w.alice.token))["conversations"]["edges"]}
    frag = [e["node"] for e in (await gql.ok(LIST_FRAGMENTS, token=w.alice.token))["conversations"]["edges"]]
    bare = [e["node"] for e in (await gql.ok(LIST_BARE, token=w.alice.token))["conversations"]["edges"]]

    assert [(n["title"], n["unreadCount"]) for n in frag] == [
        (full[n["id"]]["title"], full[n["id"]]["unreadCount"]) for n in frag
    ]
    expected_last = []
    for n in frag:
        last = full[n["id"]]["lastMessage"]
        expected_last.append(last and {"body": last["body"], "sender": {"username": last["sender"]["username"]}})
    assert [n["lastMessage"] for n in frag] == expected_last
    assert [n["id"] for n in bare] == [w.direct, w.group.gid, w.empty]
    assert [len(n["members"]["edges"]) for n in bare] == [1, 1, 1]


async def test_message_page_rows_and_tombstones(app, gql):
    w = await _world(app, gql)

    page = (await gql.ok(MESSAGES, {"c": w.direct}, token=w.bob.token))["messages"]

    nodes = [e["node"] for e in page["edges"]]
    assert [(n["body"], n["isDeleted"], n["sender"]["username"]) for n in nodes] == [
        (None, True, "bob"), ("mine", False, "alice"),
    ]
    assert [n["clientMessageId"] for n in nodes] == [None, None]  # bob never sees alice's key
    assert {n["conversation"]["title"] for n in nodes} == {"Alice A"}  # titled for the viewer (bob)
    assert page["pageInfo"] == {"hasPreviousPage": False, "startCursor": page["edges"][0]["cursor"]}
    empty = (await gql.ok(MESSAGES, {"c": w.empty}, token=w.carol.token))["messages"]  # a member, no messages
    assert empty == {"edges": [], "pageInfo": {"hasPreviousPage": False, "startCursor": None}}


async def test_outsiders_get_nothing(app, gql):
    w = await _world(app, gql)

    assert error_code(await gql.error(MESSAGES, {"c": w.direct}, token=w.carol.token)) == "NOT_FOUND"
    assert error_code(await gql.error(MEMBERS_OF, {"id": w.direct}, token=w.carol.token)) == "NOT_FOUND"
    listed = (await gql.ok(LIST, token=w.carol.token))["conversations"]["edges"]
    assert {e["node"]["id"] for e in listed} == {w.group.gid, w.empty}
