"""List fields cost a fixed number of SQL statements, whatever the page size.

Data is seeded through the resolvers (the same write path as the API, minus HTTP).
Statements are counted with a `before_cursor_execute` listener on the app's engine
(transaction control statements aside); a page of 20 and a page of 100 must cost the
same, and that number must stay small.
"""
from __future__ import annotations

from datetime import UTC, datetime

from db import models
from resolvers import conversations as conversations_resolvers
from resolvers import messages as messages_resolvers
from tests.chat.conftest import bulk_users, context_for, make_group
from tests.factories import create_user

CONVERSATIONS = """
query($first: Int) { conversations(first: $first) {
  edges { cursor node {
    id kind title createdAt updatedAt unreadCount eventCursor
    group { id name }
    lastMessage { id body isDeleted sender { id username } mentions { id } editHistory { body } }
    members(first: 5) { edges { node { id username } } pageInfo { hasNextPage } }
    readStates { readAt user { id } }
    messages(last: 2) { edges { cursor node { id body sender { id } } } }
  } }
  pageInfo { hasNextPage endCursor }
} }
"""
MESSAGES = """
query($c: ID!, $first: Int) { messages(conversationId: $c, first: $first) { edges { node {
  id body createdAt sender { id username } mentions { id } editHistory { body editedAt } conversation { id }
} } } }
"""
NOTIFICATIONS = """
query($first: Int) { notifications(first: $first) { edges { node {
  id kind createdAt actor { id username } conversation { id title } message { id body sender { id } }
} } } unreadNotificationCount }
"""
MEMBERS = """
query($id: ID!, $first: Int) { conversation(id: $id) { members(first: $first) { edges { node { id username } } } } }
"""


async def _add_members(app, conversation_id: int, user_ids: list[int]) -> None:
    async with app.state.parley.services.db.writer() as s, s.begin():
        s.add_all([models.ConversationMember(conversation_id=conversation_id, user_id=uid, role="MEMBER",
                                             joined_at=datetime.now(UTC)) for uid in user_ids])


async def _add_member_and_send(app, conversation_id: int, user_id: int) -> None:
    await _add_members(app, conversation_id, [user_id])
    await messages_resolvers.send_message(context_for(app, user_id), conversation_id, "hello @viewer")


async def measure(gql, count_statements, query, variables, token) -> tuple[int, dict]:
    with count_statements() as counter:
        data = await gql.ok(query, variables, token=token)
    return counter.count, data


async def test_conversations_page_costs_the_same_for_20_and_100(app, gql, count_statements):
    viewer = await create_user(app, "viewer")
    peers = await bulk_users(app, [f"peer{i}" for i in range(98)])
    for peer in peers:
        conversation = await conversations_resolvers.start_direct_conversation(context_for(app, viewer.id), peer)
        await messages_resolvers.send_message(context_for(app, peer), conversation.id, "hi @viewer")
    for name in ("g1", "g2"):
        group = await make_group(app, viewer, name=name)
        await messages_resolvers.send_message(context_for(app, viewer.id), group.conversation_id, "hello")
        await _add_member_and_send(app, group.conversation_id, peers[0])

    small, data20 = await measure(gql, count_statements, CONVERSATIONS, {"first": 20}, viewer.token)
    large, data100 = await measure(gql, count_statements, CONVERSATIONS, {"first": 100}, viewer.token)

    assert len(data20["conversations"]["edges"]) == 20
    assert len(data100["conversations"]["edges"]) == 100
    assert {e["node"]["kind"] for e in data20["conversations"]["edges"]} == {"DIRECT", "GROUP"}
    assert all(e["node"]["unreadCount"] == 1 for e in data100["conversations"]["edges"])
    assert small == large
    assert large <= 8  # auth + list + one per nested list field the list statement does not bring (measured: 8)


async def test_messages_page_costs_the_same_for_20_and_100(app, gql, count_statements):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    group = await make_group(app, alice, {"MEMBER": [bob]})
    for i in range(100):
        author = alice if i % 2 else bob
        snap = await messages_resolvers.send_message(context_for(app, author.id), group.conversation_id,
                                                     f"m{i} @alice @bob")
        if i % 10 == 0:
            await messages_resolvers.edit_message(context_for(app, author.id), snap["message"]["id"], f"m{i} edited")

    small, _ = await measure(gql, count_statements, MESSAGES, {"c": group.gid, "first": 20}, alice.token)
    large, data = await measure(gql, count_statements, MESSAGES, {"c": group.gid, "first": 100}, alice.token)

    assert len(data["messages"]["edges"]) == 100
    assert small == large
    assert large <= 5  # auth + the page with its membership check (measured: 5)


async def test_notifications_page_costs_the_same_for_20_and_100(app, gql, count_statements):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    direct = await conversations_resolvers.start_direct_conversation(context_for(app, alice.id), bob.id)
    group = await make_group(app, alice, {"MEMBER": [bob]})
    for i in range(100):
        target = direct.id if i % 2 else group.conversation_id
        await messages_resolvers.send_message(context_for(app, alice.id), target, f"n{i} @bob")

    small, _ = await measure(gql, count_statements, NOTIFICATIONS, {"first": 20}, bob.token)
    large, data = await measure(gql, count_statements, NOTIFICATIONS, {"first": 100}, bob.token)

    assert len(data["notifications"]["edges"]) == 100
    assert {e["node"]["kind"] for e in data["notifications"]["edges"]} == {"DIRECT_MESSAGE", "MENTION"}
    assert small == large
    assert large <= 8  # measured: 8


async def test_members_page_costs_the_same_for_20_and_100(app, gql, count_statements):
    owner = await create_user(app, "owner")
    group = await make_group(app, owner)
    await _add_members(app, group.conversation_id, await bulk_users(app, [f"m{i:03}" for i in range(120)]))

    small, _ = await measure(gql, count_statements, MEMBERS, {"id": group.gid, "first": 20}, owner.token)
    large, data = await measure(gql, count_statements, MEMBERS, {"id": group.gid, "first": 100}, owner.token)

    assert len(data["conversation"]["members"]["edges"]) == 100
    assert small == large
    assert large <= 3  # auth, access, the page
