"""The issue's role table, exhaustively: every (actor role, target role, action).

Expectations are written out here from the issue, independently of auth/permissions.py.
Actors: the four roles, plus a non-member of a PUBLIC group (sees it: FORBIDDEN) and of
a PRIVATE group (does not: NOT_FOUND). Targets of the same rank as the actor are another
member of that rank (the owner's OWNER target is itself). Every refusal writes nothing
and publishes nothing.
"""
from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import error_code
from tests.groups.helpers import (
    ADD,
    DELETE,
    JOIN,
    LEAVE,
    REMOVE,
    SET_ROLE,
    TRANSFER,
    UPDATE,
    Seeded,
    group_row,
    members_of,
    recording,
    seed_group,
    snapshot,
)

OK, FORBIDDEN, NOT_FOUND, CONFLICT, BAD_INPUT = "OK", "FORBIDDEN", "NOT_FOUND", "CONFLICT", "BAD_USER_INPUT"
ROLES = ["OWNER", "ADMIN", "MODERATOR", "MEMBER"]
ACTORS = [*ROLES, "PUBLIC_OUTSIDER", "PRIVATE_OUTSIDER"]
MEMBERS = {
    "owner": "OWNER", "admin": "ADMIN", "admin2": "ADMIN", "mod": "MODERATOR", "mod2": "MODERATOR",
    "member": "MEMBER", "member2": "MEMBER",
}
ACTOR_LABEL = {
    "OWNER": "owner", "ADMIN": "admin", "MODERATOR": "mod", "MEMBER": "member",
    "PUBLIC_OUTSIDER": "outsider", "PRIVATE_OUTSIDER": "outsider",
}
TARGET_LABEL = {"OWNER": "owner", "ADMIN": "admin2", "MODERATOR": "mod2", "MEMBER": "member2"}


def _outsider_refusal(actor: str) -> str:
    return NOT_FOUND if actor == "PRIVATE_OUTSIDER" else FORBIDDEN


def _row(owner: str, admin: str, moderator: str, member: str, public: str, private: str = NOT_FOUND) -> dict[str, str]:
    return dict(zip(ACTORS, [owner, admin, moderator, member, public, private], strict=True))


# | action | owner | admin | moderator | member | non-member (public) | non-member (private) |
PLAIN: dict[str, dict[str, str]] = {
    "read": _row(OK, OK, OK, OK, OK),  # public: visible, viewerRole null
    "updateGroup": _row(OK, OK, FORBIDDEN, FORBIDDEN, FORBIDDEN),
    "addGroupMembers": _row(OK, OK, FORBIDDEN, FORBIDDEN, FORBIDDEN),
    "deleteGroup": _row(OK, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN),
    "joinGroup": _row(OK, OK, OK, OK, OK),  # members: a no-op
    "leaveGroup": _row(CONFLICT, OK, OK, OK, FORBIDDEN),  # owner: others remain
}
# removeGroupMember: owner removes anyone below, admins moderators and members, moderators members.
REMOVABLE = {
    ("OWNER", "ADMIN"), ("OWNER", "MODERATOR"), ("OWNER", "MEMBER"),
    ("ADMIN", "MODERATOR"), ("ADMIN", "MEMBER"),
    ("MODERATOR", "MEMBER"),
}
# setGroupMemberRole: owner up to admin on anyone below; admins up to moderator on those below.
ASSIGNABLE = {("OWNER", t, r) for t in ("ADMIN", "MODERATOR", "MEMBER") for r in ("ADMIN", "MODERATOR", "MEMBER")} | {
    ("ADMIN", t, r) for t in ("MODERATOR", "MEMBER") for r in ("MODERATOR", "MEMBER")
}


def expect_remove(actor: str, target: str) -> str:
    if actor.endswith("OUTSIDER"):
        return _outsider_refusal(actor)
    return OK if (actor, target) in REMOVABLE else FORBIDDEN


def expect_set_role(actor: str, target: str, role: str) -> str:
    if role == "OWNER":
        return BAD_INPUT  # transferGroupOwnership is the only way
    if actor.endswith("OUTSIDER"):
        return _outsider_refusal(actor)
    return OK if (actor, target, role) in ASSIGNABLE else FORBIDDEN


def expect_transfer(actor: str, target: str) -> str:
    if actor.endswith("OUTSIDER"):
        return _outsider_refusal(actor)
    return OK if actor == "OWNER" else FORBIDDEN


async def _setup(app: Any, actor: str) -> Seeded:
    visibility = "PUBLIC" if actor == "PUBLIC_OUTSIDER" else "PRIVATE"
    return await seed_group(app, MEMBERS, visibility=visibility, outsiders=("outsider", "newbie"))


async def _run(app: Any, gql: Any, query: str, variables: dict[str, Any], token: str, expected: str) -> dict[str, Any]:
    """Run the operation; on refusal assert the code, no write and no announcement."""
    before = await snapshot(app)
    with recording(app) as hub:
        body = await gql(query, variables, token=token)
    if expected == OK:
        assert not body.get("errors"), body
        return body["data"]
    assert body.get("errors"), body
    assert error_code(body["errors"][0]) == expected, body
    assert await snapshot(app) == before
    assert hub.events == []
    return {}


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("action", list(PLAIN))
async def test_plain_actions(app, gql, action, actor):
    seeded = await _setup(app, actor)
    me = seeded.users[ACTOR_LABEL[actor]]
    expected = PLAIN[action][actor]
    count = len(MEMBERS)
    if action == "read":
        query = "query($id: ID!) { group(id: $id) { viewerRole memberCount conversation { id } } }"
        body = await gql(query, {"id": seeded.gid}, token=me.token)
        if expected == OK:
            outsider = actor.endswith("OUTSIDER")
            assert body["data"]["group"]["viewerRole"] == (None if outsider else actor)
            assert body["data"]["group"]["memberCount"] == count
            conversation = None if outsider else {"id": f"c_{seeded.conversation_id}"}
            assert body["data"]["group"]["conversation"] == conversation
        else:
            assert body["data"] == {"group": None}
            assert error_code(body["errors"][0]) == expected
    elif action == "updateGroup":
        data = await _run(app, gql, UPDATE, {"id": seeded.gid, "input": {"name": "Renamed"}}, me.token, expected)
        if expected == OK:
            assert data["updateGroup"]["name"] == "Renamed"
    elif action == "addGroupMembers":
        newbie = seeded.users["newbie"]
        data = await _run(app, gql, ADD, {"g": seeded.gid, "u": [newbie.gid]}, me.token, expected)
        if expected == OK:
            assert data["addGroupMembers"]["memberCount"] == count + 1
            assert (await members_of(app, seeded.conversation_id))[newbie.id] == "MEMBER"
    elif action == "deleteGroup":
        data = await _run(app, gql, DELETE, {"id": seeded.gid}, me.token, expected)
        if expected == OK:
            assert data == {"deleteGroup": True}
            assert (await group_row(app, seeded.group_id)).deleted_at is not None
    elif action == "joinGroup":
        before = await snapshot(app)
        data = await _run(app, gql, JOIN, {"g": seeded.gid}, me.token, expected)
        if expected == OK and actor.endswith("OUTSIDER"):
            assert data["joinGroup"]["viewerRole"] == "MEMBER"
            assert data["joinGroup"]["memberCount"] == count + 1
        elif expected == OK:  # already a member: nothing changes
            assert data["joinGroup"]["viewerRole"] == actor
            assert await snapshot(app) == before
    elif action == "leaveGroup":
        data = await _run(app, gql, LEAVE, {"g": seeded.gid}, me.token, expected)
        if expected == OK:
            assert data == {"leaveGroup": True}
            assert me.id not in await members_of(app, seeded.conversation_id)
            assert (await group_row(app, seeded.group_id)).member_count == count - 1


@pytest.mark.parametrize("target", ROLES)
@pytest.mark.parametrize("actor", ACTORS)
async def test_remove_group_member(app, gql, actor, target):
    seeded = await _setup(app, actor)
    me, them = seeded.users[ACTOR_LABEL[actor]], seeded.users[TARGET_LABEL[target]]
    expected = expect_remove(actor, target)
    data = await _run(app, gql, REMOVE, {"g": seeded.gid, "u": them.gid}, me.token, expected)
    if expected == OK:
        assert data["removeGroupMember"]["memberCount"] == len(MEMBERS) - 1
        assert them.id not in await members_of(app, seeded.conversation_id)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("target", ROLES)
@pytest.mark.parametrize("actor", ACTORS)
async def test_set_group_member_role(app, gql, actor, target, role):
    seeded = await _setup(app, actor)
    me, them = seeded.users[ACTOR_LABEL[actor]], seeded.users[TARGET_LABEL[target]]
    expected = expect_set_role(actor, target, role)
    data = await _run(app, gql, SET_ROLE, {"g": seeded.gid, "u": them.gid, "r": role}, me.token, expected)
    if expected == OK:
        assert data["setGroupMemberRole"]["role"] == role
        assert data["setGroupMemberRole"]["user"] == {"id": them.gid}
        assert (await members_of(app, seeded.conversation_id))[them.id] == role


@pytest.mark.parametrize("target", ROLES)
@pytest.mark.parametrize("actor", ACTORS)
async def test_transfer_group_ownership(app, gql, actor, target):
    seeded = await _setup(app, actor)
    me, them = seeded.users[ACTOR_LABEL[actor]], seeded.users[TARGET_LABEL[target]]
    expected = expect_transfer(actor, target)
    data = await _run(app, gql, TRANSFER, {"g": seeded.gid, "u": them.gid}, me.token, expected)
    if expected == OK:
        assert data["transferGroupOwnership"]["owner"] == {"id": them.gid}
        roles = await members_of(app, seeded.conversation_id)
        assert roles[them.id] == "OWNER"
        if them.id != me.id:
            assert roles[me.id] == "ADMIN"
            assert data["transferGroupOwnership"]["viewerRole"] == "ADMIN"
        assert list(roles.values()).count("OWNER") == 1
        assert (await group_row(app, seeded.group_id)).owner_id == them.id
