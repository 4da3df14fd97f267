"""Membership mutations in detail: effects, notifications, audit rows, announcements."""
from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import select

from db import models
from tests.conftest import error_code
from tests.factories import create_user
from tests.groups.helpers import (
    ADD,
    DELETE,
    GROUP,
    JOIN,
    LEAVE,
    REMOVE,
    SET_ROLE,
    TRANSFER,
    UPDATE,
    bulk_users,
    channel_user,
    group_row,
    members_of,
    notifications_of,
    recording,
    seed_group,
    snapshot,
    uid,
)

TRIO = {"owner": "OWNER", "admin": "ADMIN", "member": "MEMBER"}


async def _audit_rows(app):
    async with app.state.parley.services.db.session() as s:
        rows = (await s.execute(select(models.AuditEvent).order_by(models.AuditEvent.id))).scalars().all()
    return [(r.kind, r.actor_id, json.loads(r.detail or "{}")) for r in rows]


# ---- addGroupMembers ----------------------------------------------------------------------------
async def test_add_members_is_idempotent_for_existing_members(app, gql):
    seeded = await seed_group(app, TRIO, outsiders=("newbie",))
    owner, member, newbie = seeded.users["owner"], seeded.users["member"], seeded.users["newbie"]
    with recording(app) as hub:
        data = await gql.ok(ADD, {"g": seeded.gid, "u": [member.gid, newbie.gid, newbie.gid]}, token=owner.token)
    assert data["addGroupMembers"]["memberCount"] == 4
    assert await notifications_of(app, newbie.id) == [
        ("ADDED_TO_GROUP", owner.id, seeded.group_id, seeded.conversation_id)
    ]
    assert await notifications_of(app, member.id) == []
    assert [e for _, e in hub.of_type("membership")] == [
        {"type": "membership", "conversation_id": seeded.conversation_id, "added": [newbie.id], "removed": []}
    ]
    # again: nothing changes, nothing is announced
    before = await snapshot(app)
    with recording(app) as hub:
        data = await gql.ok(ADD, {"g": seeded.gid, "u": [member.gid, newbie.gid]}, token=owner.token)
    assert data["addGroupMembers"]["memberCount"] == 4
    assert await snapshot(app) == before
    assert hub.events == []


@pytest.mark.parametrize(("count", "ok"), [(1000, True), (1001, False)])
async def test_add_members_limit(app, gql, count, ok):
    seeded = await seed_group(app, {"owner": "OWNER"})
    user_ids = [uid(i) for i in await bulk_users(app, count, "a")]
    before = await snapshot(app)
    body = await gql(ADD, {"g": seeded.gid, "u": user_ids}, token=seeded.users["owner"].token)
    if ok:
        assert body["data"]["addGroupMembers"]["memberCount"] == 1001
        assert len(await members_of(app, seeded.conversation_id)) == 1001
    else:
        assert error_code(body["errors"][0]) == "BAD_USER_INPUT"
        assert body["errors"][0]["extensions"]["field"] == "userIds"
        assert await snapshot(app) == before


async def test_add_unknown_user_is_not_found_and_adds_nobody(app, gql):
    seeded = await seed_group(app, TRIO, outsiders=("newbie",))
    before = await snapshot(app)
    err = await gql.error(
        ADD, {"g": seeded.gid, "u": [seeded.users["newbie"].gid, uid(987_654)]}, token=seeded.users["owner"].token
    )
    assert error_code(err) == "NOT_FOUND"
    assert await snapshot(app) == before


# ---- removeGroupMember ---------------------------------------------------------------------------
async def test_removed_member_is_notified_announced_and_loses_access_at_once(app, gql):
    seeded = await seed_group(app, TRIO)
    owner, admin, member = seeded.users["owner"], seeded.users["admin"], seeded.users["member"]
    assert (await gql.ok(GROUP, {"id": seeded.gid}, token=member.token))["group"]["viewerRole"] == "MEMBER"
    with recording(app) as hub:
        data = await gql.ok(REMOVE, {"g": seeded.gid, "u": member.gid}, token=admin.token)
    assert data["removeGroupMember"]["memberCount"] == 2
    assert await notifications_of(app, member.id) == [("REMOVED_FROM_GROUP", admin.id, seeded.group_id, None)]
    assert [e for _, e in hub.of_type("membership")] == [
        {"type": "membership", "conversation_id": seeded.conversation_id, "added": [], "removed": [member.id],
         "pos": 1}  # the removal takes the conversation's next event position (no message yet)
    ]
    removed = [(channel_user(c), e["conversation_id"]) for c, e in hub.of_type("conversation_removed")]
    assert removed == [(member.id, seeded.conversation_id)]
    assert {channel_user(c) for c, _ in hub.of_type("conversation_updated")} == {owner.id, admin.id}
    assert [channel_user(c) for c, _ in hub.of_type("notification")] == [member.id]
    # the very next request: the private group is gone for them, reads and writes alike
    body = await gql(GROUP, {"id": seeded.gid}, token=member.token)
    assert body["data"] == {"group": None}
    assert error_code(body["errors"][0]) == "NOT_FOUND"
    for query, variables in ((LEAVE, {"g": seeded.gid}), (UPDATE, {"id": seeded.gid, "input": {"name": "x"}})):
        assert error_code(await gql.error(query, variables, token=member.token)) == "NOT_FOUND"
    # and the group's conversation, through the chat core's own access checks
    conversation = f"c_{seeded.conversation_id}"
    for query in (
        "query($c: ID!) { conversation(id: $c) { id } }",
        "query($c: ID!) { messages(conversationId: $c, first: 5) { edges { cursor } } }",
        "mutation($c: ID!) { sendMessage(input: {conversationId: $c, body: \"still here?\"}) { id } }",
    ):
        assert error_code(await gql.error(query, {"c": conversation}, token=member.token)) == "NOT_FOUND"


async def test_removed_member_of_public_group_sees_it_as_outsider(app, gql):
    seeded = await seed_group(app, TRIO, visibility="PUBLIC")
    member = seeded.users["member"]
    await gql.ok(REMOVE, {"g": seeded.gid, "u": member.gid}, token=seeded.users["owner"].token)
    data = await gql.ok(GROUP, {"id": seeded.gid}, token=member.token)
    assert data["group"]["viewerRole"] is None
    assert error_code(await gql.error(LEAVE, {"g": seeded.gid}, token=member.token)) == "FORBIDDEN"


async def test_remove_non_member_is_not_found(app, gql):
    seeded = await seed_group(app, TRIO, outsiders=("stranger",))
    before = await snapshot(app)
    for target in (seeded.users["stranger"].gid, uid(424_242)):
        err = await gql.error(REMOVE, {"g": seeded.gid, "u": target}, token=seeded.users["owner"].token)
        assert error_code(err) == "NOT_FOUND"
    assert await snapshot(app) == before


async def test_nobody_removes_themselves(app, gql):
    seeded = await seed_group(app, TRIO)
    for label in ("owner", "admin"):
        me = seeded.users[label]
        assert error_code(await gql.error(REMOVE, {"g": seeded.gid, "u": me.gid}, token=me.token)) == "FORBIDDEN"


# ---- setGroupMemberRole ----------------------------------------------------------------------------
async def test_role_change_notifies_and_audits(app, gql):
    seeded = await seed_group(app, TRIO)
    owner, member = seeded.users["owner"], seeded.users["member"]
    with recording(app) as hub:
        data = await gql.ok(SET_ROLE, {"g": seeded.gid, "u": member.gid, "r": "MODERATOR"}, token=owner.token)
    assert data["setGroupMemberRole"]["role"] == "MODERATOR"
    assert data["setGroupMemberRole"]["user"] == {"id": member.gid}
    assert await notifications_of(app, member.id) == [
        ("ROLE_CHANGED", owner.id, seeded.group_id, seeded.conversation_id)
    ]
    assert await _audit_rows(app) == [
        ("role_changed", owner.id, {"group": seeded.group_id, "user": member.id, "from": "MEMBER", "to": "MODERATOR"})
    ]
    assert len(hub.of_type("audit")) == 1
    assert [channel_user(c) for c, _ in hub.of_type("notification")] == [member.id]


async def test_setting_the_same_role_changes_nothing(app, gql):
    seeded = await seed_group(app, TRIO)
    before = await snapshot(app)
    with recording(app) as hub:
        data = await gql.ok(
            SET_ROLE, {"g": seeded.gid, "u": seeded.users["member"].gid, "r": "MEMBER"},
            token=seeded.users["owner"].token,
        )
    assert data["setGroupMemberRole"]["role"] == "MEMBER"
    assert await snapshot(app) == before
    assert hub.events == []


async def test_set_role_owner_is_bad_user_input(app, gql):
    seeded = await seed_group(app, TRIO)
    before = await snapshot(app)
    err = await gql.error(
        SET_ROLE, {"g": seeded.gid, "u": seeded.users["admin"].gid, "r": "OWNER"}, token=seeded.users["owner"].token
    )
    assert error_code(err) == "BAD_USER_INPUT"
    assert err["extensions"]["field"] == "role"
    assert await snapshot(app) == before


async def test_set_role_on_non_member_is_not_found(app, gql):
    seeded = await seed_group(app, TRIO, outsiders=("stranger",))
    err = await gql.error(
        SET_ROLE, {"g": seeded.gid, "u": seeded.users["stranger"].gid, "r": "ADMIN"}, token=seeded.users["owner"].token
    )
    assert error_code(err) == "NOT_FOUND"


# ---- transferGroupOwnership --------------------------------------------------------------------------
async def test_transfer_makes_old_owner_admin_who_may_then_leave(app, gql):
    seeded = await seed_group(app, TRIO)
    owner, member = seeded.users["owner"], seeded.users["member"]
    assert error_code(await gql.error(LEAVE, {"g": seeded.gid}, token=owner.token)) == "CONFLICT"
    data = await gql.ok(TRANSFER, {"g": seeded.gid, "u": member.gid}, token=owner.token)
    group = data["transferGroupOwnership"]
    assert group["owner"] == {"id": member.gid}
    assert group["viewerRole"] == "ADMIN"
    assert await members_of(app, seeded.conversation_id) == {
        owner.id: "ADMIN", seeded.users["admin"].id: "ADMIN", member.id: "OWNER"
    }
    assert await notifications_of(app, member.id) == [
        ("ROLE_CHANGED", owner.id, seeded.group_id, seeded.conversation_id)
    ]
    audit = await _audit_rows(app)
    assert audit == [
        ("role_changed", owner.id,
         {"group": seeded.group_id, "user": member.id, "from": "MEMBER", "to": "OWNER", "transfer": True})
    ]
    assert await gql.ok(LEAVE, {"g": seeded.gid}, token=owner.token) == {"leaveGroup": True}
    assert (await group_row(app, seeded.group_id)).member_count == 2
    # the new owner can do owner things, the former cannot
    assert error_code(await gql.error(DELETE, {"id": seeded.gid}, token=seeded.users["admin"].token)) == "FORBIDDEN"


async def test_transfer_to_non_member_is_not_found(app, gql):
    seeded = await seed_group(app, TRIO, outsiders=("stranger",))
    before = await snapshot(app)
    stranger, owner = seeded.users["stranger"], seeded.users["owner"]
    err = await gql.error(TRANSFER, {"g": seeded.gid, "u": stranger.gid}, token=owner.token)
    assert error_code(err) == "NOT_FOUND"
    assert await snapshot(app) == before


# ---- join / leave / delete ---------------------------------------------------------------------------
async def test_join_public_group_announces_and_counts(app, gql):
    seeded = await seed_group(app, TRIO, visibility="PUBLIC", outsiders=("joiner",))
    joiner = seeded.users["joiner"]
    with recording(app) as hub:
        data = await gql.ok(JOIN, {"g": seeded.gid}, token=joiner.token)
    assert data["joinGroup"]["viewerRole"] == "MEMBER"
    assert data["joinGroup"]["memberCount"] == 4
    assert [e["added"] for _, e in hub.of_type("membership")] == [[joiner.id]]
    assert {channel_user(c) for c, _ in hub.of_type("conversation_updated")} == {
        u.id for u in seeded.users.values()
    }
    assert await notifications_of(app, joiner.id) == []


async def test_join_private_group_is_not_found(app, gql):
    seeded = await seed_group(app, TRIO, outsiders=("joiner",))
    before = await snapshot(app)
    err = await gql.error(JOIN, {"g": seeded.gid}, token=seeded.users["joiner"].token)
    assert error_code(err) == "NOT_FOUND"
    assert await snapshot(app) == before


async def test_member_leaving_is_announced(app, gql):
    seeded = await seed_group(app, TRIO)
    member = seeded.users["member"]
    with recording(app) as hub:
        assert await gql.ok(LEAVE, {"g": seeded.gid}, token=member.token) == {"leaveGroup": True}
    assert [e["removed"] for _, e in hub.of_type("membership")] == [[member.id]]
    assert [channel_user(c) for c, _ in hub.of_type("conversation_removed")] == [member.id]
    assert (await group_row(app, seeded.group_id)).member_count == 2


async def test_sole_owner_leaving_deletes_the_group(app, gql):
    seeded = await seed_group(app, {"owner": "OWNER"}, visibility="PUBLIC", outsiders=("other",))
    owner = seeded.users["owner"]
    with recording(app) as hub:
        assert await gql.ok(LEAVE, {"g": seeded.gid}, token=owner.token) == {"leaveGroup": True}
    row = await group_row(app, seeded.group_id)
    assert row.deleted_at is not None
    state = await snapshot(app)
    assert state["conversations"][0][1] is not None
    assert [channel_user(c) for c, _ in hub.of_type("conversation_removed")] == [owner.id]
    for user in (owner, seeded.users["other"]):
        assert error_code(await gql.error(GROUP, {"id": seeded.gid}, token=user.token)) == "NOT_FOUND"


async def test_delete_group_removes_conversation_for_every_member(app, gql):
    seeded = await seed_group(app, TRIO, visibility="PUBLIC", outsiders=("other",))
    with recording(app) as hub:
        assert await gql.ok(DELETE, {"id": seeded.gid}, token=seeded.users["owner"].token) == {"deleteGroup": True}
    members = {seeded.users[label].id for label in TRIO}
    removed = [(channel_user(c), e["conversation_id"]) for c, e in hub.of_type("conversation_removed")]
    assert sorted(removed) == sorted((m, seeded.conversation_id) for m in members)
    assert [sorted(e["removed"]) for _, e in hub.of_type("membership")] == [sorted(members)]
    row = await group_row(app, seeded.group_id)
    assert row.deleted_at is not None
    # gone for everyone, members and outsiders, and for every mutation
    for label in (*TRIO, "other"):
        user = seeded.users[label]
        assert error_code(await gql.error(GROUP, {"id": seeded.gid}, token=user.token)) == "NOT_FOUND"
    owner = seeded.users["owner"]
    for query, variables in (
        (DELETE, {"id": seeded.gid}), (JOIN, {"g": seeded.gid}), (LEAVE, {"g": seeded.gid}),
        (ADD, {"g": seeded.gid, "u": [seeded.users["other"].gid]}),
    ):
        assert error_code(await gql.error(query, variables, token=owner.token)) == "NOT_FOUND"


@pytest.mark.parametrize("bad", ["x", "g_", "g_1_2"])
async def test_malformed_group_ids_name_the_argument(app, gql, bad):
    alice = await create_user(app, "alice")
    err = await gql.error(JOIN, {"g": bad}, token=alice.token)
    assert error_code(err) == "BAD_USER_INPUT"
    assert err["extensions"]["field"] == "groupId"
    err = await gql.error(GROUP, {"id": bad}, token=alice.token)
    assert error_code(err) == "BAD_USER_INPUT"
    assert err["extensions"]["field"] == "id"


async def test_concurrent_joins_keep_member_count_exact(app, gql):
    """Many joins at once (and the same user twice): the group row lock keeps count == rows."""
    seeded = await seed_group(app, {"owner": "OWNER"}, visibility="PUBLIC")
    joiners = [await create_user(app, f"j{i}") for i in range(12)]
    calls = [gql(JOIN, {"g": seeded.gid}, token=u.token) for u in joiners]
    calls += [gql(JOIN, {"g": seeded.gid}, token=joiners[0].token) for _ in range(3)]
    bodies = await asyncio.gather(*calls)
    assert all("errors" not in b for b in bodies), bodies
    members = await members_of(app, seeded.conversation_id)
    assert len(members) == 13
    assert (await group_row(app, seeded.group_id)).member_count == 13
    leaves = await asyncio.gather(*(gql(LEAVE, {"g": seeded.gid}, token=u.token) for u in joiners[:6]))
    assert all(b["data"] == {"leaveGroup": True} for b in leaves), leaves
    remaining = await members_of(app, seeded.conversation_id)
    assert (await group_row(app, seeded.group_id)).member_count == len(remaining) == 7


async def test_history_before_joining_is_not_unread_for_a_newcomer(app, gql):
    # Given a group with three messages
    owner, bob = await create_user(app), await create_user(app)
    created = await gql.ok(
        "mutation { createGroup(input: {name: \"g\"}) { id conversation { id } } }", token=owner.token
    )
    conversation_id = created["createGroup"]["conversation"]["id"]
    send = "mutation($c: ID!, $b: String!) { sendMessage(input: {conversationId: $c, body: $b}) { id } }"
    for body in ("one", "two", "three"):
        await gql.ok(send, {"c": conversation_id, "b": body}, token=owner.token)
    # When bob is added
    await gql.ok(ADD, {"g": created["createGroup"]["id"], "u": [bob.gid]}, token=owner.token)
    unread = "query($c: ID!) { conversation(id: $c) { unreadCount } }"
    # Then nothing is unread for him, and what comes next is
    assert (await gql.ok(unread, {"c": conversation_id}, token=bob.token))["conversation"]["unreadCount"] == 0
    await gql.ok(send, {"c": conversation_id, "b": "four"}, token=owner.token)
    assert (await gql.ok(unread, {"c": conversation_id}, token=bob.token))["conversation"]["unreadCount"] == 1
