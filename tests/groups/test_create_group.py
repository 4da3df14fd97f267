"""createGroup and updateGroup: success, every validation refusal, every limit's boundary."""
from __future__ import annotations

import pytest

from schema import ids
from tests.conftest import error_code
from tests.factories import create_user
from tests.groups.helpers import (
    CREATE,
    UPDATE,
    bulk_users,
    channel_user,
    gid,
    group_row,
    members_of,
    notifications_of,
    recording,
    seed_group,
    snapshot,
    uid,
)


async def test_create_group_makes_creator_owner_and_adds_members(app, gql):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    carol = await create_user(app, "carol")
    with recording(app) as hub:
        data = await gql.ok(
            CREATE,
            {"input": {"name": "  Climbers  ", "description": "rocks", "visibility": "PUBLIC",
                       "memberIds": [bob.gid, carol.gid, bob.gid, alice.gid]}},
            token=alice.token,
        )
    group = data["createGroup"]
    assert group["name"] == "Climbers"
    assert group["description"] == "rocks"
    assert group["visibility"] == "PUBLIC"
    assert group["memberCount"] == 3
    assert group["viewerRole"] == "OWNER"
    assert group["owner"] == {"id": alice.gid}
    group_id = ids.decode("Group", group["id"])
    row = await group_row(app, group_id)
    assert row.name_key == "climbers"
    conversation_id = (await snapshot(app))["conversations"][0][0]
    assert await members_of(app, conversation_id) == {alice.id: "OWNER", bob.id: "MEMBER", carol.id: "MEMBER"}
    for user in (bob, carol):
        assert await notifications_of(app, user.id) == [("ADDED_TO_GROUP", alice.id, group_id, conversation_id)]
    assert await notifications_of(app, alice.id) == []
    # announced after commit: membership on the conversation, list updates for all, notifications
    membership = hub.of_type("membership")
    assert membership == [
        (f"conv:{conversation_id}",
         {"type": "membership", "conversation_id": conversation_id, "added": [alice.id, bob.id, carol.id],
          "removed": []})
    ]
    updated = {channel_user(c) for c, e in hub.of_type("conversation_updated")}
    assert updated == {alice.id, bob.id, carol.id}
    assert sorted(channel_user(c) for c, e in hub.of_type("notification")) == sorted([bob.id, carol.id])


async def test_create_group_defaults_private_without_members(app, gql):
    alice = await create_user(app, "alice")
    data = await gql.ok(CREATE, {"input": {"name": "Solo"}}, token=alice.token)
    assert data["createGroup"]["visibility"] == "PRIVATE"
    assert data["createGroup"]["memberCount"] == 1
    assert data["createGroup"]["description"] is None


async def test_create_group_requires_authentication(app, gql):
    err = await gql.error(CREATE, {"input": {"name": "x"}})
    assert error_code(err) == "UNAUTHENTICATED"
    assert (await snapshot(app))["groups"] == []


@pytest.mark.parametrize(
    ("name", "ok"),
    [("x" * 100, True), ("  " + "x" * 100 + "  ", True), ("x" * 101, False), ("", False), ("   ", False), ("y", True)],
)
async def test_create_group_name_limits(app, gql, name, ok):
    alice = await create_user(app, "alice")
    body = await gql(CREATE, {"input": {"name": name}}, token=alice.token)
    if ok:
        assert body["data"]["createGroup"]["name"] == name.strip()
    else:
        assert error_code(body["errors"][0]) == "BAD_USER_INPUT"
        assert body["errors"][0]["extensions"]["field"] == "name"
        assert (await snapshot(app))["groups"] == []


@pytest.mark.parametrize(("length", "ok"), [(1000, True), (1001, False)])
async def test_create_group_description_limit(app, gql, length, ok):
    alice = await create_user(app, "alice")
    body = await gql(CREATE, {"input": {"name": "g", "description": "d" * length}}, token=alice.token)
    if ok:
        assert len(body["data"]["createGroup"]["description"]) == 1000
    else:
        assert error_code(body["errors"][0]) == "BAD_USER_INPUT"
        assert body["errors"][0]["extensions"]["field"] == "description"
        assert (await snapshot(app))["groups"] == []


@pytest.mark.parametrize(("count", "ok"), [(1000, True), (1001, False)])
async def test_create_group_member_ids_limit_at_the_real_default(app, gql, count, ok):
    alice = await create_user(app, "alice")
    assert app.state.parley.settings.max_group_member_ids == 1000
    if ok:
        member_ids = [uid(i) for i in await bulk_users(app, count, "m")]
    else:
        member_ids = [uid(10_000 + i) for i in range(count)]  # refused before any lookup
    with recording(app) as hub:
        body = await gql(CREATE, {"input": {"name": "big", "memberIds": member_ids}}, token=alice.token)
    if ok:
        assert body["data"]["createGroup"]["memberCount"] == 1001
        state = await snapshot(app)
        assert len(state["members"]) == 1001
        assert state["notifications"] == 1000
    else:
        assert error_code(body["errors"][0]) == "BAD_USER_INPUT"
        assert body["errors"][0]["extensions"]["field"] == "memberIds"
        assert (await snapshot(app))["groups"] == []
        assert hub.events == []


async def test_create_group_member_ids_limit_follows_the_setting(settings_factory, backend):
    import httpx

    from server import create_app
    from tests.conftest import GQL, _empty_tables

    app = create_app(settings_factory(max_group_member_ids=3))
    async with app.router.lifespan_context(app):
        await _empty_tables(app)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            gql = GQL(client)
            alice = await create_user(app, "alice")
            users = [uid(i) for i in await bulk_users(app, 4, "m")]
            ok = await gql.ok(CREATE, {"input": {"name": "three", "memberIds": users[:3]}}, token=alice.token)
            assert ok["createGroup"]["memberCount"] == 4
            err = await gql.error(CREATE, {"input": {"name": "four", "memberIds": users}}, token=alice.token)
            assert error_code(err) == "BAD_USER_INPUT"
            assert err["extensions"]["field"] == "memberIds"
            assert len((await snapshot(app))["groups"]) == 1


async def test_create_group_unknown_member_is_not_found_and_writes_nothing(app, gql):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    with recording(app) as hub:
        err = await gql.error(
            CREATE, {"input": {"name": "g", "memberIds": [bob.gid, uid(999_999)]}}, token=alice.token
        )
    assert error_code(err) == "NOT_FOUND"
    state = await snapshot(app)
    assert state["groups"] == [] and state["members"] == [] and state["notifications"] == 0
    assert hub.events == []


@pytest.mark.parametrize("bad", ["nope", "u_", "u_abc", "g_1x"])
async def test_create_group_malformed_member_id_is_bad_user_input(app, gql, bad):
    alice = await create_user(app, "alice")
    err = await gql.error(CREATE, {"input": {"name": "g", "memberIds": [bad]}}, token=alice.token)
    assert error_code(err) == "BAD_USER_INPUT"
    assert err["extensions"]["field"] == "memberIds"


async def test_create_group_id_of_another_type_is_not_found(app, gql):
    alice = await create_user(app, "alice")
    err = await gql.error(CREATE, {"input": {"name": "g", "memberIds": [gid(1)]}}, token=alice.token)
    assert error_code(err) == "NOT_FOUND"


# ---- updateGroup ------------------------------------------------------------------------------
async def test_update_group_changes_only_given_fields_and_announces(app, gql):
    seeded = await seed_group(app, {"owner": "OWNER", "admin": "ADMIN", "member": "MEMBER"}, name="Old")
    with recording(app) as hub:
        data = await gql.ok(
            UPDATE, {"id": seeded.gid, "input": {"name": " New Name ", "visibility": "PUBLIC"}},
            token=seeded.users["admin"].token,
        )
    group = data["updateGroup"]
    assert (group["name"], group["visibility"], group["description"]) == ("New Name", "PUBLIC", None)
    row = await group_row(app, seeded.group_id)
    assert row.name_key == "new name"
    everyone = {u.id for u in seeded.users.values()}
    assert {channel_user(c) for c, e in hub.of_type("conversation_updated")} == everyone
    # description: set, then cleared with null
    owner = seeded.users["owner"]
    data = await gql.ok(UPDATE, {"id": seeded.gid, "input": {"description": "about"}}, token=owner.token)
    assert data["updateGroup"]["description"] == "about"
    assert data["updateGroup"]["name"] == "New Name"
    data = await gql.ok(UPDATE, {"id": seeded.gid, "input": {"description": None}}, token=seeded.users["owner"].token)
    assert data["updateGroup"]["description"] is None


@pytest.mark.parametrize(
    ("patch", "field", "ok"),
    [
        ({"name": "n" * 100}, "name", True),
        ({"name": "n" * 101}, "name", False),
        ({"name": "  "}, "name", False),
        ({"description": "d" * 1000}, "description", True),
        ({"description": "d" * 1001}, "description", False),
    ],
)
async def test_update_group_limits(app, gql, patch, field, ok):
    seeded = await seed_group(app, {"owner": "OWNER"})
    before = await snapshot(app)
    body = await gql(UPDATE, {"id": seeded.gid, "input": patch}, token=seeded.users["owner"].token)
    if ok:
        assert body["data"]["updateGroup"][field] == patch[field]
    else:
        assert error_code(body["errors"][0]) == "BAD_USER_INPUT"
        assert body["errors"][0]["extensions"]["field"] == field
        assert await snapshot(app) == before


async def test_update_group_with_no_change_announces_nothing(app, gql):
    seeded = await seed_group(app, {"owner": "OWNER"}, name="Same")
    with recording(app) as hub:
        await gql.ok(UPDATE, {"id": seeded.gid, "input": {"name": "Same"}}, token=seeded.users["owner"].token)
    assert hub.events == []


@pytest.mark.parametrize(
    ("patch", "field"),
    [({"name": "bad\x00name"}, "name"), ({"name": "line\nbreak"}, "name"), ({"description": "nul\x00"}, "description")],
)
async def test_control_characters_are_bad_user_input(app, gql, patch, field):
    alice = await create_user(app, "alice")
    err = await gql.error(CREATE, {"input": {"name": "ok", **patch}}, token=alice.token)
    assert (error_code(err), err["extensions"]["field"]) == ("BAD_USER_INPUT", field)
    assert (await snapshot(app))["groups"] == []
    ok = await gql.ok(CREATE, {"input": {"name": "ok", "description": "two\nlines\tand a tab"}}, token=alice.token)
    assert ok["createGroup"]["description"] == "two\nlines\tand a tab"
