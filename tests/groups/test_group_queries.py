"""groups(query, first, after), group(id), Group.members, and the statement count of lists."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select

from db import models
from tests.conftest import error_code
from tests.factories import create_user
from tests.groups.helpers import CREATE, DELETE, count_statements, seed_group

LIST = """
query($q: String, $first: Int, $after: String) {
  groups(query: $q, first: $first, after: $after) {
    edges { cursor node { name visibility viewerRole } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""


async def _create(gql, user, name, visibility="PRIVATE", members=()):
    data = await gql.ok(
        CREATE, {"input": {"name": name, "visibility": visibility, "memberIds": [m.gid for m in members]}},
        token=user.token,
    )
    return data["createGroup"]["id"]


async def _names(gql, user, **variables):
    data = await gql.ok(LIST, variables, token=user.token)
    return [e["node"]["name"] for e in data["groups"]["edges"]]


async def test_groups_lists_public_and_own_by_name(app, gql):
    alice, bob, carol = [await create_user(app, n) for n in ("alice", "bob", "carol")]
    await _create(gql, alice, "beta public", "PUBLIC")
    await _create(gql, alice, "Alpha private with bob", members=[bob])
    await _create(gql, alice, "gamma private", "PRIVATE")
    await _create(gql, carol, "Delta carol public", "PUBLIC")
    deleted = await _create(gql, carol, "epsilon deleted", "PUBLIC")
    await gql.ok(DELETE, {"id": deleted}, token=carol.token)
    assert await _names(gql, bob) == ["Alpha private with bob", "beta public", "Delta carol public"]
    data = await gql.ok(LIST, {}, token=bob.token)
    roles = {e["node"]["name"]: e["node"]["viewerRole"] for e in data["groups"]["edges"]}
    assert roles == {"Alpha private with bob": "MEMBER", "beta public": None, "Delta carol public": None}
    assert await _names(gql, alice) == ["Alpha private with bob", "beta public", "Delta carol public", "gamma private"]


async def test_groups_query_is_a_case_insensitive_name_prefix(app, gql):
    alice = await create_user(app, "alice")
    for name in ("Rock climbing", "rockets", "Hard rock", "ROCK", "100% rock", "r_ck"):
        await _create(gql, alice, name, "PUBLIC")
    assert await _names(gql, alice, q="rock") == ["ROCK", "Rock climbing", "rockets"]
    assert await _names(gql, alice, q="  ROCK C") == ["Rock climbing"]
    assert await _names(gql, alice, q="100%") == ["100% rock"]
    assert await _names(gql, alice, q="%") == []  # LIKE wildcards are literal
    assert await _names(gql, alice, q="r_") == ["r_ck"]
    assert len(await _names(gql, alice, q="   ")) == 6  # blank: no filter


async def test_groups_pages_forward_without_repeats(app, gql):
    alice = await create_user(app, "alice")
    names = [f"group {i:02d}" for i in range(7)]
    for name in reversed(names):
        await _create(gql, alice, name, "PUBLIC")
    seen, after, pages = [], None, 0
    while True:
        data = (await gql.ok(LIST, {"first": 3, "after": after}, token=alice.token))["groups"]
        seen += [e["node"]["name"] for e in data["edges"]]
        pages += 1
        assert data["pageInfo"]["hasPreviousPage"] is (after is not None)
        assert data["pageInfo"]["endCursor"] == data["edges"][-1]["cursor"]
        if not data["pageInfo"]["hasNextPage"]:
            break
        after = data["pageInfo"]["endCursor"]
    assert seen == names
    assert pages == 3


@pytest.mark.parametrize(("variables", "field"), [({"first": 0}, "first"), ({"first": 101}, "first"),
                                                   ({"after": "not-a-cursor"}, "after"), ({"q": "x" * 201}, "query")])
async def test_groups_bad_arguments(app, gql, variables, field):
    alice = await create_user(app, "alice")
    err = await gql.error(LIST, variables, token=alice.token)
    assert error_code(err) == "BAD_USER_INPUT"
    assert err["extensions"]["field"] == field


async def test_groups_needs_a_viewer(app, gql):
    assert error_code(await gql.error(LIST, {})) == "UNAUTHENTICATED"


async def test_private_group_of_others_is_not_found(app, gql):
    seeded = await seed_group(app, {"owner": "OWNER"}, outsiders=("stranger",))
    one = "query($id: ID!) { group(id: $id) { id } }"
    stranger = seeded.users["stranger"]
    body = await gql(one, {"id": seeded.gid}, token=stranger.token)
    assert body["data"] == {"group": None}
    assert error_code(body["errors"][0]) == "NOT_FOUND"
    # exactly like a group that never existed
    body2 = await gql(one, {"id": "g_999999"}, token=stranger.token)
    assert body2["data"] == body["data"]
    assert body2["errors"][0]["extensions"] == body["errors"][0]["extensions"]
    assert body2["errors"][0]["message"] == body["errors"][0]["message"]


MEMBERS = """
query($id: ID!, $first: Int, $after: String) {
  group(id: $id) {
    members(first: $first, after: $after) {
      edges { cursor node { role joinedAt user { username } } }
      pageInfo { hasNextPage hasPreviousPage endCursor }
    }
  }
}"""


async def test_members_are_paged_by_user(app, gql):
    roles = {"m0": "OWNER", "m1": "ADMIN", "m2": "MODERATOR", "m3": "MEMBER", "m4": "MEMBER"}
    seeded = await seed_group(app, roles, visibility="PUBLIC", outsiders=("viewer",))
    viewer = seeded.users["viewer"]  # a public group's members are visible to outsiders
    first = (await gql.ok(MEMBERS, {"id": seeded.gid, "first": 3}, token=viewer.token))["group"]["members"]
    assert [(e["node"]["user"]["username"], e["node"]["role"]) for e in first["edges"]] == [
        ("m0", "OWNER"), ("m1", "ADMIN"), ("m2", "MODERATOR")
    ]
    assert first["pageInfo"]["hasNextPage"] is True
    assert all(e["node"]["joinedAt"].endswith("+00:00") for e in first["edges"])
    rest = (await gql.ok(MEMBERS, {"id": seeded.gid, "first": 3, "after": first["pageInfo"]["endCursor"]},
                         token=viewer.token))["group"]["members"]
    assert [e["node"]["user"]["username"] for e in rest["edges"]] == ["m3", "m4"]
    assert rest["pageInfo"] == {"hasNextPage": False, "hasPreviousPage": True, "endCursor": rest["edges"][-1]["cursor"]}
    err = await gql.error(MEMBERS, {"id": seeded.gid, "first": 101}, token=viewer.token)
    assert (error_code(err), err["extensions"]["field"]) == ("BAD_USER_INPUT", "first")


# ---- statement count -------------------------------------------------------------------------
PAGE = """
query($first: Int) {
  groups(first: $first) {
    edges { node {
      id name memberCount viewerRole owner { username } conversation { id }
      members(first: 3) { edges { node { role user { username } } } }
    } }
  }
}"""


async def _many_groups(app, count, owner_ids, viewer_id):
    """`count` groups straight in the database: every third one has the viewer as member."""
    db = app.state.parley.services.db
    now = datetime.now(UTC)
    async with db.writer() as s, s.begin():
        await s.execute(insert(models.Group), [
            {"name": f"g{i:03d}", "name_key": f"g{i:03d}", "visibility": "PUBLIC",
             "owner_id": owner_ids[i % len(owner_ids)], "member_count": 2 if i % 3 == 0 else 1, "created_at": now}
            for i in range(count)
        ])
        groups = (await s.execute(select(models.Group).order_by(models.Group.id))).scalars().all()
        await s.execute(insert(models.Conversation), [
            {"kind": "GROUP", "group_id": g.id, "created_at": now, "updated_at": now, "last_seq": 0,
             "last_event_pos": 0} for g in groups
        ])
        conversations = {c.group_id: c.id for c in (await s.execute(select(models.Conversation))).scalars()}
        rows = []
        for i, g in enumerate(groups):
            rows.append({"conversation_id": conversations[g.id], "user_id": g.owner_id, "role": "OWNER"})
            if i % 3 == 0:
                rows.append({"conversation_id": conversations[g.id], "user_id": viewer_id, "role": "MEMBER"})
        await s.execute(insert(models.ConversationMember), [
            {**r, "joined_at": now, "last_read_seq": 0, "hidden": False, "hidden_at_seq": 0} for r in rows
        ])


async def test_group_list_costs_the_same_statements_for_20_and_100_groups(app, gql):
    viewer = await create_user(app, "viewer")
    owners = [(await create_user(app, f"owner{i}")).id for i in range(5)]
    await _many_groups(app, 100, owners, viewer.id)
    await gql.ok(PAGE, {"first": 1}, token=viewer.token)  # warm-up (session touch etc.)
    counts = {}
    for first in (20, 100):
        with count_statements(app) as statements:
            data = await gql.ok(PAGE, {"first": first}, token=viewer.token)
        edges = data["groups"]["edges"]
        assert len(edges) == first
        assert edges[0]["node"]["viewerRole"] == "MEMBER" and edges[1]["node"]["viewerRole"] is None
        assert edges[0]["node"]["owner"]["username"] == "owner0"
        assert edges[0]["node"]["memberCount"] == 2
        assert edges[0]["node"]["conversation"]["id"].startswith("c_") and edges[1]["node"]["conversation"] is None
        members = [(e["node"]["user"]["username"], e["node"]["role"]) for e in edges[0]["node"]["members"]["edges"]]
        assert members == [("viewer", "MEMBER"), ("owner0", "OWNER")]  # by user id
        counts[first] = len(statements)
    assert counts[20] == counts[100], counts
    assert counts[100] <= 7, counts


async def test_groups_query_with_control_characters_matches_nothing(app, gql):
    alice = await create_user(app, "alice")
    await _create(gql, alice, "abc", "PUBLIC")
    assert await _names(gql, alice, q="a\x00") == []
    assert await _names(gql, alice, q="a\x07b") == []
