"""search(query, type, first) on both backends: one corpus, one table of expected hits.

The expectations below are written once, so SQLite FTS5 and PostgreSQL tsvector must
give the same hits for them. Visibility: a user never finds a message of a conversation
it is not in, and stops finding it as soon as it is removed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from auth.viewer import Viewer
from resolvers import search as search_resolvers
from resolvers.context import Context
from tests import factories
from tests.conftest import error_code
from tests.factories import create_user
from tests.groups.helpers import CREATE, REMOVE
from tests.search.test_search_query import ALPHABET

SEARCH = """
query($q: String!, $type: SearchType, $first: Int) {
  search(query: $q, type: $type, first: $first) {
    users { username }
    groups { name }
    conversations { id title }
    messages { snippet message { id body } }
  }
}"""
SEND = "mutation($c: ID!, $b: String!) { sendMessage(input: {conversationId: $c, body: $b}) { id } }"
EDIT = "mutation($id: ID!, $b: String!) { editMessage(id: $id, body: $b) { id } }"
DELETE_MESSAGE = "mutation($id: ID!) { deleteMessage(id: $id) { id } }"
DIRECT = "mutation($u: ID!) { startDirectConversation(userId: $u) { id } }"

# label -> body, in sending order; where each goes is decided in `corpus`
BODIES = {
    "m1": "The quick brown fox jumps over the lazy dog",
    "m2": "Quick thinking saves the day",
    "m3": "Brown bears eat honey; foxes do not",
    "m4": "Meet at the e-mail café at noon",
    "m5": "Don't forget the CAFÉ meeting",
    "m6": "Grüße aus Köln, über alles",
    "m7": "secret fox den location",  # direct alice/dave
    "m8": "fox hidden from alice",  # carol's private group
    "m9": "deleted fox message",  # deleted later
    "m10": "original wording",  # edited later to "edited wording, fox"
}


@dataclass
class Corpus:
    users: dict[str, factories.TestUser]
    group_conversation: str
    direct_conversation: str
    message_ids: dict[str, str] = field(default_factory=dict)

    def labels(self, messages: list[dict[str, Any]]) -> list[str]:
        by_id = {v: k for k, v in self.message_ids.items()}
        return [by_id[m["message"]["id"]] for m in messages]


async def corpus(app: Any, gql: Any) -> Corpus:
    names = {"alice": "Alice", "bob": "Bob", "carol": "Carol", "dave": "Zed Dave"}
    users = {n: await create_user(app, n, display_name=d) for n, d in names.items()}
    alice, bob, carol, dave = (users[n] for n in names)
    climbers = await gql.ok(
        CREATE + "", {"input": {"name": "Climbers", "memberIds": [bob.gid]}}, token=alice.token
    )
    group_id = climbers["createGroup"]["id"]
    conversation = await gql.ok(
        "query($id: ID!) { group(id: $id) { conversation { id } } }", {"id": group_id}, token=alice.token
    )
    group_conversation = conversation["group"]["conversation"]["id"]
    direct = (await gql.ok(DIRECT, {"u": dave.gid}, token=alice.token))["startDirectConversation"]["id"]
    secret = await gql.ok(CREATE, {"input": {"name": "Carol secret"}}, token=carol.token)
    secret_conversation = (
        await gql.ok("query($id: ID!) { group(id: $id) { conversation { id } } }",
                     {"id": secret["createGroup"]["id"]}, token=carol.token)
    )["group"]["conversation"]["id"]
    await gql.ok(CREATE, {"input": {"name": "Carolers", "visibility": "PUBLIC"}}, token=carol.token)
    found = Corpus(users=users, group_conversation=group_conversation, direct_conversation=direct)
    found.users["group_id"] = group_id  # type: ignore[assignment]
    for label, body in BODIES.items():
        where, sender = {"m7": (direct, alice), "m8": (secret_conversation, carol)}.get(
            label, (group_conversation, bob if label in ("m2", "m4") else alice)
        )
        sent = await gql.ok(SEND, {"c": where, "b": body}, token=sender.token)
        found.message_ids[label] = sent["sendMessage"]["id"]
    await gql.ok(DELETE_MESSAGE, {"id": found.message_ids["m9"]}, token=alice.token)
    await gql.ok(EDIT, {"id": found.message_ids["m10"], "b": "edited wording, fox"}, token=alice.token)
    return found


async def _search(gql: Any, user: factories.TestUser, q: str, **variables: Any) -> dict[str, Any]:
    return (await gql.ok(SEARCH, {"q": q, **variables}, token=user.token))["search"]


# what alice finds, the same on both engines
EXPECTED_MESSAGES = {
    "fox": {"m1", "m7", "m10"},
    "FOX": {"m1", "m7", "m10"},
    "fox*": {"m1", "m3", "m7", "m10"},
    "fox:*": {"m1", "m3", "m7", "m10"},
    "quick": {"m1", "m2"},
    '"quick brown"': {"m1"},
    '"brown quick"': set(),
    "brown fox": {"m1"},
    "fox -dog": {"m1"},
    "e-mail": {"m4"},
    "email": set(),
    "café": {"m4", "m5"},
    "CAFE": set(),
    "caf*": {"m4", "m5"},
    "don't": {"m5"},
    "dont": set(),
    "grüße köln": {"m6"},
    "ÜBER": {"m6"},
    "original": set(),  # edited away
    "wording": {"m10"},
    "deleted": set(),  # deleted message
    "hidden": set(),  # a conversation alice is not in
    "the": {"m1", "m2", "m4", "m5"},
    "OR fox": set(),
    "NEAR(fox dog)": set(),
    '"': set(),
    "*": set(),
    "(": set(),
}


async def test_same_hits_on_both_engines(app, gql):
    c = await corpus(app, gql)
    alice = c.users["alice"]
    got = {}
    for q in EXPECTED_MESSAGES:
        result = await _search(gql, alice, q, type="MESSAGES", first=100)
        got[q] = set(c.labels(result["messages"]))
    assert got == EXPECTED_MESSAGES


async def test_snippets_mark_matches(app, gql):
    c = await corpus(app, gql)
    alice = c.users["alice"]
    hits = (await _search(gql, alice, "quick", type="MESSAGES"))["messages"]
    # equal relevance on both engines here: most recent first
    assert [(c.labels([h])[0], h["snippet"]) for h in hits] == [
        ("m2", "[[Quick]] thinking saves the day"),
        ("m1", "The [[quick]] brown fox jumps over the lazy dog"),
    ]
    hits = (await _search(gql, alice, '"brown fox" jump*', type="MESSAGES"))["messages"]
    assert [h["snippet"] for h in hits] == ["The quick [[brown]] [[fox]] [[jumps]] over the lazy dog"]
    assert hits[0]["message"]["body"] == BODIES["m1"]
    hits = (await _search(gql, alice, "café", type="MESSAGES"))["messages"]
    assert sorted(h["snippet"] for h in hits) == [
        "Don't forget the [[CAFÉ]] meeting", "Meet at the e-mail [[café]] at noon"
    ]


async def test_relevance_before_recency(app, gql):
    alice = await create_user(app, "alice")
    group = (await gql.ok(CREATE, {"input": {"name": "g"}}, token=alice.token))["createGroup"]["id"]
    conversation = (await gql.ok("query($id: ID!) { group(id: $id) { conversation { id } } }", {"id": group},
                                 token=alice.token))["group"]["conversation"]["id"]
    bodies = ["kayak kayak kayak kayak", "one kayak among many other different words here", "kayak kayak"]
    for body in bodies:
        await gql.ok(SEND, {"c": conversation, "b": body}, token=alice.token)
    hits = (await _search(gql, alice, "kayak", type="MESSAGES"))["messages"]
    assert [h["message"]["body"] for h in hits] == [bodies[0], bodies[2], bodies[1]]


async def test_non_member_never_finds_and_removed_member_stops_finding(app, gql):
    c = await corpus(app, gql)
    bob, carol, dave = c.users["bob"], c.users["carol"], c.users["dave"]
    assert set(c.labels((await _search(gql, carol, "fox", type="MESSAGES"))["messages"])) == {"m8"}
    assert set(c.labels((await _search(gql, dave, "fox", type="MESSAGES"))["messages"])) == {"m7"}
    assert set(c.labels((await _search(gql, bob, "fox", type="MESSAGES"))["messages"])) == {"m1", "m10"}
    await gql.ok(REMOVE, {"g": c.users["group_id"], "u": bob.gid}, token=c.users["alice"].token)
    assert (await _search(gql, bob, "fox", type="MESSAGES"))["messages"] == []
    assert (await _search(gql, bob, "clim", type="CONVERSATIONS"))["conversations"] == []
    assert (await _search(gql, bob, "clim", type="GROUPS"))["groups"] == []  # private


async def test_names_users_groups_conversations(app, gql):
    c = await corpus(app, gql)
    alice, bob = c.users["alice"], c.users["bob"]
    everything = await _search(gql, alice, "car")
    assert [u["username"] for u in everything["users"]] == ["carol"]
    assert [g["name"] for g in everything["groups"]] == ["Carolers"]  # not carol's private group
    assert everything["conversations"] == [] and everything["messages"] == []
    by_display_name = await _search(gql, alice, "zed")
    assert [u["username"] for u in by_display_name["users"]] == ["dave"]
    assert [(x["id"], x["title"]) for x in by_display_name["conversations"]] == [(c.direct_conversation, "Zed Dave")]
    group = await _search(gql, alice, '"CLIMB*')
    assert [g["name"] for g in group["groups"]] == ["Climbers"]
    assert [x["id"] for x in group["conversations"]] == [c.group_conversation]
    assert (await _search(gql, bob, "zed"))["conversations"] == []  # not bob's conversation
    only_users = await _search(gql, alice, "c", type="USERS")
    assert [u["username"] for u in only_users["users"]] == ["carol"]
    assert only_users["groups"] == only_users["conversations"] == only_users["messages"] == []
    exact_first = await _search(gql, alice, "carol", type="GROUPS")
    assert [g["name"] for g in exact_first["groups"]] == ["Carolers"]


async def test_first_limits_every_list(app, gql):
    c = await corpus(app, gql)
    result = await _search(gql, c.users["alice"], "fox*", first=1)
    assert len(result["messages"]) == 1
    result = await _search(gql, c.users["alice"], "c", type="USERS", first=1)
    assert len(result["users"]) == 1


@pytest.mark.parametrize(
    ("variables", "field", "ok"),
    [
        ({"q": ""}, "query", False),
        ({"q": "   \t "}, "query", False),
        ({"q": "x" * 200}, "query", True),
        ({"q": "x" * 201}, "query", False),
        ({"q": "x", "first": 0}, "first", False),
        ({"q": "x", "first": 1}, "first", True),
        ({"q": "x", "first": 100}, "first", True),
        ({"q": "x", "first": 101}, "first", False),
    ],
)
async def test_search_arguments(app, gql, variables, field, ok):
    alice = await create_user(app, "alice")
    body = await gql(SEARCH, variables, token=alice.token)
    if ok:
        assert not body.get("errors"), body
    else:
        assert error_code(body["errors"][0]) == "BAD_USER_INPUT"
        assert body["errors"][0]["extensions"]["field"] == field


async def test_search_needs_a_viewer(app, gql):
    assert error_code(await gql.error(SEARCH, {"q": "x"})) == "UNAUTHENTICATED"


async def test_fuzzed_queries_never_fail(app, gql):
    """Random punctuation, quotes, operators and unicode: results or empty lists, never an error."""
    c = await corpus(app, gql)
    alice = c.users["alice"]
    rng = random.Random(99)
    queries = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 30))) for _ in range(1200)]
    queries = [q for q in queries if q.strip() and len(q.strip()) <= 200]
    services = app.state.parley.services
    ctx = Context(services=services, viewer=Viewer(user_id=alice.id, session_id=alice.session_id))
    for i, q in enumerate(queries):  # straight through the resolver and the engine's SQL
        await search_resolvers.search(ctx, q, "ALL" if i % 3 == 0 else "MESSAGES", 100)
    for q in queries[:60]:  # and a sample through GraphQL, as a client sends them
        body = await gql(SEARCH, {"q": q}, token=alice.token)
        assert "errors" not in body, (q, body)
