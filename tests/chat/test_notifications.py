"""Notifications: created with their cause, newest first, read, cleared, and only
pointing at what the viewer may still see."""
from __future__ import annotations

import pytest
from sqlalchemy import delete, select

from db import models
from db import notifications as notifications_db
from db.engine import transaction
from resolvers.context import Context
from resolvers.notifications import notify
from tests.chat.conftest import make_group, table_snapshot
from tests.chat.helpers import send, start
from tests.conftest import error_code
from tests.factories import create_user

LIST = """
query($unread: Boolean, $first: Int, $after: String) {
  notifications(unreadOnly: $unread, first: $first, after: $after) {
    edges { cursor node { id kind readAt actor { username } message { body } conversation { id } } }
    pageInfo { hasNextPage hasPreviousPage endCursor }
  }
  unreadNotificationCount
}
"""
MARK = "mutation($ids: [ID!]) { markNotificationsRead(ids: $ids) }"
CLEAR = "mutation { clearNotifications }"


async def listing(gql, user, **args):
    data = await gql.ok(LIST, args, token=user.token)
    return data["notifications"], data["unreadNotificationCount"]


@pytest.fixture
async def inbox(app, gql):
    """bob has 4 DIRECT_MESSAGE notifications from alice: m1..m4."""
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    cid = await start(gql, alice, bob)
    for i in range(1, 5):
        await send(gql, alice, cid, f"m{i}")
    return alice, bob, cid


async def test_newest_first_with_pages(app, gql, inbox):
    alice, bob, cid = inbox
    page, unread = await listing(gql, bob, first=3)
    assert unread == 4
    assert [e["node"]["message"]["body"] for e in page["edges"]] == ["m4", "m3", "m2"]
    node = page["edges"][0]["node"]
    assert (node["kind"], node["readAt"], node["actor"], node["conversation"]) == (
        "DIRECT_MESSAGE", None, {"username": "alice"}, {"id": cid})
    assert (page["pageInfo"]["hasNextPage"], page["pageInfo"]["hasPreviousPage"]) == (True, False)
    rest, _ = await listing(gql, bob, first=3, after=page["pageInfo"]["endCursor"])
    assert [e["node"]["message"]["body"] for e in rest["edges"]] == ["m1"]
    assert rest["pageInfo"]["hasNextPage"] is False
    assert (await listing(gql, alice))[1] == 0


async def test_mark_read_by_ids_then_all(app, gql, published, inbox):
    alice, bob, _ = inbox
    page, _ = await listing(gql, bob)
    newest, second = page["edges"][0]["node"]["id"], page["edges"][1]["node"]["id"]
    published.clear()

    assert await gql.ok(MARK, {"ids": [newest, newest]}, token=bob.token) == {"markNotificationsRead": 1}
    assert await gql.ok(MARK, {"ids": [newest]}, token=bob.token) == {"markNotificationsRead": 0}
    unread_page, unread = await listing(gql, bob, unread=True)
    assert unread == 3
    assert newest not in {e["node"]["id"] for e in unread_page["edges"]}
    # someone else's id, or a missing one, changes nothing and is no error
    assert await gql.ok(MARK, {"ids": [second, "n_999999"]}, token=alice.token) == {"markNotificationsRead": 0}
    assert await gql.ok(MARK, {"ids": []}, token=bob.token) == {"markNotificationsRead": 0}
    assert await gql.ok(MARK, token=bob.token) == {"markNotificationsRead": 3}
    assert (await listing(gql, bob))[1] == 0
    assert (await listing(gql, bob, unread=True))[0]["edges"] == []
    assert all(e["node"]["readAt"] for e in (await listing(gql, bob))[0]["edges"])
    assert published.published == []


async def test_mark_read_refusals(app, gql, inbox):
    _, bob, _ = inbox
    before = await table_snapshot(app)
    err = await gql.error(MARK, {"ids": ["junk"]}, token=bob.token)
    assert (error_code(err), err["extensions"]["field"]) == ("BAD_USER_INPUT", "ids")
    err = await gql.error(MARK, {"ids": [f"n_{i}" for i in range(1, 102)]}, token=bob.token)
    assert (error_code(err), err["extensions"]["field"]) == ("BAD_USER_INPUT", "ids")
    assert error_code(await gql.error(MARK)) == "UNAUTHENTICATED"
    assert await table_snapshot(app) == before
    assert await gql.ok(MARK, {"ids": [f"n_{i}" for i in range(1, 101)]}, token=bob.token) == {
        "markNotificationsRead": 4}


async def test_clear_deletes_the_viewers_notifications_only(app, gql, inbox):
    alice, bob, cid = inbox
    await send(gql, bob, cid, "reply")  # alice gets one
    assert await gql.ok(CLEAR, token=bob.token) == {"clearNotifications": 4}
    assert await gql.ok(CLEAR, token=bob.token) == {"clearNotifications": 0}
    assert (await listing(gql, bob))[0]["edges"] == []
    assert (await listing(gql, alice))[1] == 1


async def test_page_size_boundaries(app, gql, inbox):
    _, bob, _ = inbox
    assert len((await listing(gql, bob, first=100))[0]["edges"]) == 4
    for first in (0, 101):
        err = await gql.error(LIST, {"first": first}, token=bob.token)
        assert (error_code(err), err["extensions"]["field"]) == ("BAD_USER_INPUT", "first")
    err = await gql.error(LIST, {"after": "nope!"}, token=bob.token)
    assert (error_code(err), err["extensions"]["field"]) == ("BAD_USER_INPUT", "after")


async def test_targets_are_hidden_once_the_viewer_lost_access(app, gql):
    owner = await create_user(app, "owner")
    carol = await create_user(app, "carol")
    group = await make_group(app, owner, {"MEMBER": [carol]})
    await send(gql, owner, group.gid, "ping @carol")
    query = "{ notifications { edges { node { kind message { body } conversation { id } group { name } } } } }"
    node = (await gql.ok(query, token=carol.token))["notifications"]["edges"][0]["node"]
    assert node == {"kind": "MENTION", "message": {"body": "ping @carol"}, "conversation": {"id": group.gid},
                    "group": None}  # a mention names the conversation, not the group

    async with app.state.parley.services.db.writer() as s, s.begin():
        await s.execute(delete(models.ConversationMember).where(models.ConversationMember.user_id == carol.id))
        s.add(models.Notification(user_id=carol.id, kind="REMOVED_FROM_GROUP", actor_id=owner.id,
                                  group_id=group.group_id))

    data = await gql.ok(query, token=carol.token)
    assert [e["node"] for e in data["notifications"]["edges"]] == [
        {"kind": "REMOVED_FROM_GROUP", "message": None, "conversation": None, "group": None},  # private group
        {"kind": "MENTION", "message": None, "conversation": None, "group": None},
    ]
    async with app.state.parley.services.db.writer() as s, s.begin():
        group_row = await s.get(models.Group, group.group_id)
        group_row.visibility = "PUBLIC"
    data = await gql.ok(query, token=carol.token)
    assert data["notifications"]["edges"][0]["node"]["group"] == {"name": "Team"}


async def test_notify_writes_with_its_cause_and_publishes_only_after_commit(app, published):
    alice = await create_user(app, "alice")
    ctx = Context(services=app.state.parley.services)
    db = app.state.parley.services.db

    with pytest.raises(RuntimeError):
        async with transaction(db) as tx:
            await notify(tx, ctx, alice.id, "ADDED_TO_GROUP", None)
            raise RuntimeError("the cause failed")
    assert published.published == []

    async with transaction(db) as tx:
        row = await notify(tx, ctx, alice.id, "ROLE_CHANGED", None)
        assert published.published == []
    assert published.published == [(f"user:{alice.id}", {"type": "notification", "notification_id": row.id})]
    async with db.session() as s:
        assert (await s.execute(select(models.Notification.kind))).scalars().all() == ["ROLE_CHANGED"]
    with pytest.raises(ValueError):
        async with transaction(db) as tx:
            await notifications_db.add(tx.session, alice.id, "NOT_A_KIND", None)
