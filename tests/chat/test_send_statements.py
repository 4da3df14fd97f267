"""sendMessage costs a fixed, small number of SQL statements (BEGIN/COMMIT apart).

Counted over the whole HTTP request, authentication included. A plain group message:
the session check, then the locked read of conversation + membership + sender, then
the four writes (INSERT message, UPDATE conversation returning the member ids, INSERT
event, UPDATE read position): four statements on SQLite, one on PostgreSQL (CTEs). A
direct message adds its DIRECT_MESSAGE notification. Asserted exactly, so a regression
(or an unexpected saving worth a look) fails here.
"""
from __future__ import annotations

from tests.chat.conftest import make_group
from tests.chat.helpers import start
from tests.factories import create_user

SEND = """mutation($i: SendMessageInput!) { sendMessage(input: $i) {
  id body clientMessageId createdAt isDeleted sender { id username } mentions { id } editHistory { body }
} }"""
PLAIN_GROUP_SEND = {"embedded": 6, "services": 3}
DIRECT_SEND = {"embedded": 7, "services": 4}


async def _count(gql, count_statements, user, conversation: str, body: str) -> int:
    with count_statements() as counter:
        await gql.ok(SEND, {"i": {"conversationId": conversation, "body": body}}, token=user.token)
    return counter.count


async def test_a_plain_group_message_costs_six_statements_or_three(app, gql, count_statements, backend):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    group = await make_group(app, alice, {"MEMBER": [bob]})
    await gql.ok(SEND, {"i": {"conversationId": group.gid, "body": "warm"}}, token=alice.token)

    counts = [await _count(gql, count_statements, u, group.gid, "hello") for u in (alice, bob, alice)]

    assert counts == [PLAIN_GROUP_SEND[backend]] * 3


async def test_a_direct_message_costs_seven_statements_or_four(app, gql, count_statements, backend):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    cid = await start(gql, alice, bob)

    counts = [await _count(gql, count_statements, u, cid, "hi") for u in (alice, bob)]

    assert counts == [DIRECT_SEND[backend]] * 2
