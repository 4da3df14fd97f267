"""GraphQL documents and small calls shared by the chat tests."""
from __future__ import annotations

from typing import Any

from tests.conftest import GQL
from tests.factories import TestUser

MESSAGE_FIELDS = """
  id body clientMessageId createdAt editedAt deletedAt isDeleted
  sender { id username }
  mentions { id username }
  editHistory { body editedAt }
  conversation { id }
"""

START = "mutation($u: ID!) { startDirectConversation(userId: $u) { id kind title } }"
SEND = f"mutation($i: SendMessageInput!) {{ sendMessage(input: $i) {{ {MESSAGE_FIELDS} }} }}"
EDIT = f"mutation($id: ID!, $b: String!) {{ editMessage(id: $id, body: $b) {{ {MESSAGE_FIELDS} }} }}"
DELETE = f"mutation($id: ID!) {{ deleteMessage(id: $id) {{ {MESSAGE_FIELDS} }} }}"
MESSAGES = """
query($c: ID!, $first: Int, $after: String, $last: Int, $before: String) {
  messages(conversationId: $c, first: $first, after: $after, last: $last, before: $before) {
    edges { cursor node { id body } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""
MARK_READ = """
mutation($c: ID!, $m: ID) { markConversationRead(conversationId: $c, upToMessageId: $m) {
  id unreadCount readStates { user { id } lastReadMessage { id } readAt } } }
"""


async def start(gql: GQL, a: TestUser, b: TestUser) -> str:
    data = await gql.ok(START, {"u": b.gid}, token=a.token)
    return str(data["startDirectConversation"]["id"])


async def send(gql: GQL, user: TestUser, conversation: str, body: str, **extra: Any) -> dict[str, Any]:
    data = await gql.ok(SEND, {"i": {"conversationId": conversation, "body": body, **extra}}, token=user.token)
    return dict(data["sendMessage"])


async def bodies(gql: GQL, user: TestUser, conversation: str, **args: Any) -> list[str]:
    data = await gql.ok(MESSAGES, {"c": conversation, **args}, token=user.token)
    return [e["node"]["body"] for e in data["messages"]["edges"]]
