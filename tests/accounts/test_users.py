"""me, user, users, updateProfile, setPresence, and who may see presence."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from db import models
from tests.accounts.conftest import execute, rows, services
from tests.conftest import error_code
from tests.factories import create_user

USER_FIELDS = "id username displayName isAdmin presence lastSeenAt"


async def _make_online(app, user_id: int) -> None:
    """A live socket as realtime's presence service sees it, or (realtime not wired)
    a last-seen time within the presence grace, which the fallback reads."""
    presence = services(app).presence
    if presence is not None:
        await presence.connect(user_id)
    else:
        await execute(app, update(models.User).where(models.User.id == user_id).values(last_seen_at=models.utcnow()))


@pytest.fixture
def without_realtime_presence(app):
    svc = services(app)
    original, svc.presence = svc.presence, None
    yield
    svc.presence = original


async def _share_conversation(app, *user_ids: int, kind: str = "DIRECT") -> int:
    async with services(app).db.writer() as s, s.begin():
        group_id = None
        if kind == "GROUP":
            group = models.Group(name="g", name_key="g", owner_id=user_ids[0], member_count=len(user_ids))
            s.add(group)
            await s.flush()
            group_id = group.id
        conversation = models.Conversation(
            kind=kind, group_id=group_id,
            direct_key=":".join(map(str, sorted(user_ids))) if kind == "DIRECT" else None,
        )
        s.add(conversation)
        await s.flush()
        for user_id in user_ids:
            s.add(models.ConversationMember(
                conversation_id=conversation.id, user_id=user_id, role="MEMBER" if kind == "GROUP" else None
            ))
        return conversation.id


async def test_me(app, gql):
    alice = await create_user(app, "alice", display_name="Alice A")
    data = await gql.ok(f"{{ me {{ {USER_FIELDS} }} }}", token=alice.token)
    assert data["me"] == {
        "id": alice.gid, "username": "alice", "displayName": "Alice A", "isAdmin": False,
        "presence": "OFFLINE", "lastSeenAt": None,
    }


async def test_user_lookup(app, gql):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    query = f"query($id: ID!) {{ user(id: $id) {{ {USER_FIELDS} }} }}"

    found = await gql.ok(query, {"id": bob.gid}, token=alice.token)
    assert found["user"]["username"] == "bob"

    body = await gql(query, {"id": "u_999999"}, token=alice.token)
    assert body["data"] == {"user": None} and error_code(body["errors"][0]) == "NOT_FOUND"
    body = await gql(query, {"id": "c_1"}, token=alice.token)
    assert body["data"] == {"user": None} and error_code(body["errors"][0]) == "NOT_FOUND"
    err = await gql.error(query, {"id": "nope"}, token=alice.token)
    assert error_code(err) == "BAD_USER_INPUT" and err["extensions"]["field"] == "id"
    err = await gql.error(query, {"id": bob.gid})
    assert error_code(err) == "UNAUTHENTICATED"


async def test_presence_is_hidden_from_strangers(app, gql):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    await _make_online(app, bob.id)
    now = models.utcnow()
    await execute(app, update(models.User).where(models.User.id == bob.id).values(last_seen_at=now))
    query = "query($id: ID!) { user(id: $id) { presence lastSeenAt } }"

    stranger = await gql.ok(query, {"id": bob.gid}, token=alice.token)
    assert stranger["user"] == {"presence": None, "lastSeenAt": None}

    conversation_id = await _share_conversation(app, alice.id, bob.id)
    shared = await gql.ok(query, {"id": bob.gid}, token=alice.token)
    assert shared["user"]["presence"] == "ONLINE"
    assert shared["user"]["lastSeenAt"] is not None

    await execute(
        app, update(models.Conversation).where(models.Conversation.id == conversation_id).values(deleted_at=now)
    )
    gone = await gql.ok(query, {"id": bob.gid}, token=alice.token)
    assert gone["user"] == {"presence": None, "lastSeenAt": None}


async def test_presence_is_visible_to_group_members(app, gql):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    carol = await create_user(app, "carol")
    await _share_conversation(app, alice.id, bob.id, kind="GROUP")
    query = "query($a: ID!, $b: ID!) { a: user(id: $a) { presence } b: user(id: $b) { presence } }"

    data = await gql.ok(query, {"a": bob.gid, "b": carol.gid}, token=alice.token)

    assert data == {"a": {"presence": "OFFLINE"}, "b": {"presence": None}}


async def test_set_presence_stores_the_choice(app, gql):
    alice = await create_user(app, "alice")
    await _make_online(app, alice.id)

    data = await gql.ok("mutation { setPresence(status: AWAY) { presence } }", token=alice.token)

    assert data == {"setPresence": {"presence": "AWAY"}}
    (user,) = await rows(app, select(models.User))
    assert user.presence_choice == "AWAY"
    data = await gql.ok("mutation { setPresence(status: ONLINE) { presence } }", token=alice.token)
    assert data == {"setPresence": {"presence": "ONLINE"}}
    assert (await gql.ok("{ me { presence } }", token=alice.token))["me"]["presence"] == "ONLINE"
    err = await gql.error('mutation { setPresence(status: BUSY) { id } }', token=alice.token)
    assert error_code(err) == "GRAPHQL_VALIDATION_FAILED"


async def test_presence_without_realtime_comes_from_the_row(app, gql, published, without_realtime_presence):
    alice = await create_user(app, "alice")
    await execute(app, update(models.User).values(last_seen_at=models.utcnow()))

    data = await gql.ok("mutation { setPresence(status: AWAY) { presence } }", token=alice.token)

    assert data == {"setPresence": {"presence": "AWAY"}}
    (event,) = published.of_type("presence")
    assert (event["user_id"], event["status"]) == (alice.id, "AWAY")
    await gql.ok("mutation { setPresence(status: ONLINE) { id } }", token=alice.token)
    assert (await gql.ok("{ me { presence } }", token=alice.token))["me"]["presence"] == "ONLINE"
    stale = models.utcnow() - timedelta(hours=1)
    await execute(app, update(models.User).values(last_seen_at=stale))
    assert (await gql.ok("{ me { presence } }", token=alice.token))["me"]["presence"] == "OFFLINE"


async def test_a_chosen_offline_hides_a_live_user(app, gql):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    await _share_conversation(app, alice.id, bob.id)
    await _make_online(app, bob.id)
    query = "query($id: ID!) { user(id: $id) { presence } me { presence } }"

    data = await gql.ok(query, {"id": bob.gid}, token=alice.token)
    assert data == {"user": {"presence": "ONLINE"}, "me": {"presence": "OFFLINE"}}

    await gql.ok("mutation { setPresence(status: OFFLINE) { id } }", token=bob.token)
    data = await gql.ok(query, {"id": bob.gid}, token=alice.token)
    assert data["user"] == {"presence": "OFFLINE"}


async def test_set_presence_needs_a_viewer(gql):
    err = await gql.error("mutation { setPresence(status: AWAY) { id } }")
    assert error_code(err) == "UNAUTHENTICATED"


async def test_update_profile(app, gql):
    alice = await create_user(app, "alice")
    query = "mutation($i: UpdateProfileInput!) { updateProfile(input: $i) { displayName } }"

    data = await gql.ok(query, {"i": {"displayName": "  Alice Liddell "}}, token=alice.token)
    assert data == {"updateProfile": {"displayName": "Alice Liddell"}}
    data = await gql.ok(query, {"i": {}}, token=alice.token)
    assert data == {"updateProfile": {"displayName": "Alice Liddell"}}


@pytest.mark.parametrize("name", ["", "  ", "x" * 65, "tab\tname"])
async def test_update_profile_refusals(app, gql, name):
    alice = await create_user(app, "alice", display_name="Alice")
    query = "mutation($i: UpdateProfileInput!) { updateProfile(input: $i) { displayName } }"

    err = await gql.error(query, {"i": {"displayName": name}}, token=alice.token)

    assert error_code(err) == "BAD_USER_INPUT" and err["extensions"]["field"] == "displayName"
    (user,) = await rows(app, select(models.User))
    assert user.display_name == "Alice"


async def test_update_profile_needs_a_viewer(gql):
    err = await gql.error('mutation { updateProfile(input: {displayName: "x"}) { id } }')
    assert error_code(err) == "UNAUTHENTICATED"


USERS = "query($q: String, $first: Int, $after: String) { users(query: $q, first: $first, after: $after) { " \
    "edges { cursor node { username } } pageInfo { hasNextPage hasPreviousPage endCursor } } }"


async def test_users_search_and_pages(app, gql):
    viewer = await create_user(app, "viewer")
    for name in ("ann", "anna", "annabel", "bob"):
        await create_user(app, name, display_name=f"{name.title()} Smith" if name != "bob" else "Bob Jones")

    first = await gql.ok(USERS, {"q": "ANN", "first": 2}, token=viewer.token)
    page = first["users"]
    assert [e["node"]["username"] for e in page["edges"]] == ["ann", "anna"]
    assert page["pageInfo"]["hasNextPage"] is True and page["pageInfo"]["hasPreviousPage"] is False

    second = await gql.ok(USERS, {"q": "ann", "first": 2, "after": page["pageInfo"]["endCursor"]}, token=viewer.token)
    assert [e["node"]["username"] for e in second["users"]["edges"]] == ["annabel"]
    assert second["users"]["pageInfo"]["hasNextPage"] is False

    by_display = await gql.ok(USERS, {"q": "jones"}, token=viewer.token)
    assert [e["node"]["username"] for e in by_display["users"]["edges"]] == ["bob"]

    everyone = await gql.ok(USERS, {}, token=viewer.token)
    assert [e["node"]["username"] for e in everyone["users"]["edges"]] == ["ann", "anna", "annabel", "bob", "viewer"]

    wildcard = await gql.ok(USERS, {"q": "%"}, token=viewer.token)
    assert wildcard["users"]["edges"] == []


async def test_users_refusals(app, gql):
    viewer = await create_user(app, "viewer")
    for first in (0, 101):
        err = await gql.error(USERS, {"first": first}, token=viewer.token)
        assert error_code(err) == "BAD_USER_INPUT" and err["extensions"]["field"] == "first"
    err = await gql.error(USERS, {"after": "!!"}, token=viewer.token)
    assert error_code(err) == "BAD_USER_INPUT" and err["extensions"]["field"] == "after"
    err = await gql.error(USERS, {})
    assert error_code(err) == "UNAUTHENTICATED"


async def test_users_page_costs_the_same_statements_whatever_its_size(app, gql, statements):
    viewer = await create_user(app, "viewer")
    query = "query($n: Int) { users(first: $n) { edges { node { id presence lastSeenAt } } } }"
    others = [await create_user(app, f"peer{i}") for i in range(8)]
    for other in others[:4]:
        await _share_conversation(app, viewer.id, other.id)
    await gql.ok(query, {"n": 1}, token=viewer.token)  # warm-up (the session touch, caches)

    statements.count = 0
    small = await gql.ok(query, {"n": 2}, token=viewer.token)
    small_count, statements.count = statements.count, 0
    large = await gql.ok(query, {"n": 9}, token=viewer.token)

    assert len(small["users"]["edges"]) == 2 and len(large["users"]["edges"]) == 9
    assert statements.count == small_count
    visible = [e["node"]["presence"] is not None for e in large["users"]["edges"]]
    assert visible.count(True) == 5  # four peers sharing a conversation, and the viewer


async def test_audit_log_page_costs_the_same_statements_whatever_its_size(app, gql, statements):
    from auth import audit as audit_log
    from db.engine import transaction

    admin = await create_user(app, "root", admin=True)
    actors = [await create_user(app, f"actor{i}") for i in range(6)]
    query = "query($n: Int) { auditLog(first: $n) { edges { node { kind actor { username presence } } } } }"

    async def add_events(n: int) -> None:
        async with transaction(services(app).db) as tx:
            for actor in actors[:n]:
                await audit_log.record(tx.session, audit_log.LOGIN, actor.id, None, None)

    await add_events(6)
    await gql.ok(query, {"n": 1}, token=admin.token)
    statements.count = 0
    await gql.ok(query, {"n": 1}, token=admin.token)
    one, statements.count = statements.count, 0
    data = await gql.ok(query, {"n": 6}, token=admin.token)
    assert len(data["auditLog"]["edges"]) == 6
    assert statements.count == one
