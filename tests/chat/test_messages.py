"""Messages over HTTP: send (limits, idempotency, mentions), pages, edit, delete."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from db import models
from tests.chat.conftest import count_rows, make_group, make_pending_attachment, table_snapshot
from tests.chat.helpers import DELETE, EDIT, MESSAGES, SEND, bodies, send, start
from tests.conftest import error_code
from tests.factories import create_user


@pytest.fixture
async def pair(app, gql):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    return alice, bob, await start(gql, alice, bob)


def num(gid: str) -> int:
    return int(gid.split("_")[1])


# -------------------------------------------------------------------------- send


async def test_send_returns_the_message_and_publishes_it_after_commit(app, gql, published, pair):
    alice, bob, cid = pair
    published.clear()

    m = await send(gql, alice, cid, "  hello bob  ", clientMessageId="c-1")

    assert m == {
        "id": m["id"], "body": "hello bob", "clientMessageId": "c-1", "createdAt": m["createdAt"],
        "editedAt": None, "deletedAt": None, "isDeleted": False,
        "sender": {"id": alice.gid, "username": "alice"}, "mentions": [], "editHistory": [],
        "conversation": {"id": cid},
    }
    (channel, event), = published.of_type("message")
    assert channel == f"conv:{num(cid)}"
    assert (event["kind"], event["pos"], event["conversation_id"]) == ("ADDED", 1, num(cid))
    assert event["message"]["message"]["id"] == num(m["id"])
    assert event["message"]["message"]["body"] == "hello bob"
    assert event["message"]["sender"]["username"] == "alice"
    assert "password_hash" not in event["message"]["sender"]
    users = {c for c, e in published.of_type("conversation_updated")}
    assert users == {f"user:{alice.id}", f"user:{bob.id}"}
    # the other member sees it, without the sender's idempotency key
    data = await gql.ok(MESSAGES, {"c": cid}, token=bob.token)
    assert [e["node"] for e in data["messages"]["edges"]] == [{"id": m["id"], "body": "hello bob"}]
    async with app.state.parley.services.db.session() as s:
        event_row = (await s.execute(select(models.MessageEvent))).scalar_one()
    assert (event_row.pos, event_row.kind, event_row.message_id) == (1, "ADDED", num(m["id"]))


async def test_client_message_id_is_shown_to_the_sender_only(app, gql, pair):
    alice, bob, cid = pair
    m = await send(gql, alice, cid, "x", clientMessageId="key")
    query = "query($c: ID!) { messages(conversationId: $c) { edges { node { clientMessageId } } } }"
    assert (await gql.ok(query, {"c": cid}, token=alice.token))["messages"]["edges"][0]["node"] == {
        "clientMessageId": "key"}
    assert (await gql.ok(query, {"c": cid}, token=bob.token))["messages"]["edges"][0]["node"] == {
        "clientMessageId": None}
    assert m["clientMessageId"] == "key"


async def test_body_length_boundary(app, gql, published, pair):
    alice, _, cid = pair
    ok = await send(gql, alice, cid, "x" * 10_000)
    assert len(ok["body"]) == 10_000
    ok = await send(gql, alice, cid, "  " + "y" * 10_000 + "\n")  # trimmed before counting
    assert len(ok["body"]) == 10_000
    before = await table_snapshot(app)
    published.clear()

    for body in ("x" * 10_001, "", "   \n\t ", "nul\x00byte"):
        err = await gql.error(SEND, {"i": {"conversationId": cid, "body": body}}, token=alice.token)
        assert (error_code(err), err["extensions"]["field"]) == ("BAD_USER_INPUT", "body")
    assert await table_snapshot(app) == before
    assert published.published == []


async def test_send_refusals_write_and_publish_nothing(app, gql, published, pair):
    alice, _, cid = pair
    eve = await create_user(app, "eve")
    before = await table_snapshot(app)
    published.clear()

    cases = [
        (eve, {"conversationId": cid, "body": "hi"}, "NOT_FOUND", None),
        (alice, {"conversationId": "c_987654", "body": "hi"}, "NOT_FOUND", None),
        (alice, {"conversationId": "bogus", "body": "hi"}, "BAD_USER_INPUT", "conversationId"),
        (alice, {"conversationId": cid, "body": "hi", "clientMessageId": "k" * 129}, "BAD_USER_INPUT",
         "clientMessageId"),
        (alice, {"conversationId": cid, "body": "hi", "clientMessageId": ""}, "BAD_USER_INPUT", "clientMessageId"),
        (alice, {"conversationId": cid, "body": "hi", "attachmentIds": ["nope"]}, "BAD_USER_INPUT", "attachmentIds"),
    ]
    for user, payload, code, field in cases:
        err = await gql.error(SEND, {"i": payload}, token=user.token)
        assert (error_code(err), err["extensions"].get("field")) == (code, field), payload
    err = await gql.error(SEND, {"i": {"conversationId": cid, "body": "hi"}})
    assert error_code(err) == "UNAUTHENTICATED"
    assert await table_snapshot(app) == before
    assert published.published == []
    # the longest key is fine
    assert (await send(gql, alice, cid, "ok", clientMessageId="k" * 128))["clientMessageId"] == "k" * 128


async def test_attachments_are_sent_inside_the_message_transaction(app, gql, published, pair):
    alice, bob, cid = pair
    mine = await make_pending_attachment(app, alice, num(cid))
    theirs = await make_pending_attachment(app, bob, num(cid))
    query = "query($c: ID!) { messages(conversationId: $c) { edges { node { body attachments { id } } } } }"
    before = await table_snapshot(app)
    published.clear()

    err = await gql.error(SEND, {"i": {"conversationId": cid, "body": "pics", "attachmentIds": [mine, theirs]}},
                          token=alice.token)
    assert error_code(err) == "NOT_FOUND"  # bob's pending upload: the whole message rolls back
    assert await table_snapshot(app) == before
    assert published.published == []

    m = await send(gql, alice, cid, "pic", attachmentIds=[mine])
    assert (await gql.ok(query, {"c": cid}, token=bob.token))["messages"]["edges"] == [
        {"node": {"body": "pic", "attachments": [{"id": mine}]}}]
    (_, event), = published.of_type("message")
    assert [a["id"] for a in event["message"]["attachments"]] == [num(mine)]

    await gql.ok(DELETE, {"id": m["id"]}, token=alice.token)
    assert (await gql.ok(query, {"c": cid}, token=bob.token))["messages"]["edges"] == [
        {"node": {"body": None, "attachments": []}}]
    async with app.state.parley.services.db.session() as s:
        row = await s.get(models.Attachment, num(mine))
    assert row is not None and row.deleted_at is not None  # no longer served, purged by the cleanup


async def test_a_retry_with_the_same_client_message_id_returns_the_first_message(app, gql, published, pair):
    alice, bob, cid = pair
    first = await send(gql, alice, cid, "once", clientMessageId="retry-1")
    published.clear()

    again = await send(gql, alice, cid, "once (retried)", clientMessageId="retry-1")

    assert again == first
    assert await count_rows(app, models.Message) == 1
    assert await count_rows(app, models.MessageEvent) == 1
    assert published.published == []
    # the key is per sender and per conversation
    other = await send(gql, bob, cid, "mine", clientMessageId="retry-1")
    assert other["id"] != first["id"]
    group = await make_group(app, alice)
    elsewhere = await send(gql, alice, group.gid, "there", clientMessageId="retry-1")
    assert elsewhere["id"] not in {first["id"], other["id"]}


async def test_mentions_in_a_group_notify_mentioned_members_but_not_the_sender(app, gql, published):
    alice = await create_user(app, "alice")
    carol = await create_user(app, "carol")
    dave = await create_user(app, "Dave")
    outsider = await create_user(app, "outsider")
    group = await make_group(app, alice, {"MEMBER": [carol, dave]})
    published.clear()

    m = await send(gql, alice, group.gid, "@carol, @DAVE. and @alice and @outsider @ghost e@mail.com")

    # members only (not the outsider, not an unknown name, not an e-mail address), the
    # sender included as a mention but never notified
    assert m["mentions"] == [{"id": alice.gid, "username": "alice"}, {"id": carol.gid, "username": "carol"},
                             {"id": dave.gid, "username": "Dave"}]
    assert outsider.id not in {u["id"] for u in m["mentions"]}
    async with app.state.parley.services.db.session() as s:
        rows = (await s.execute(select(models.Notification.user_id, models.Notification.kind,
                                       models.Notification.actor_id, models.Notification.message_id))).all()
    assert sorted(rows) == sorted([(carol.id, "MENTION", alice.id, num(m["id"])),
                                   (dave.id, "MENTION", alice.id, num(m["id"]))])
    assert sorted(c for c, _ in published.of_type("notification")) == sorted([f"user:{carol.id}",
                                                                              f"user:{dave.id}"])


async def test_a_direct_message_notifies_the_recipient_once(app, gql, published, pair):
    alice, bob, cid = pair
    m = await send(gql, alice, cid, "hey @bob")
    assert m["mentions"] == [{"id": bob.gid, "username": "bob"}]
    async with app.state.parley.services.db.session() as s:
        rows = (await s.execute(select(models.Notification.user_id, models.Notification.kind))).all()
    assert rows == [(bob.id, "DIRECT_MESSAGE")]


async def test_a_new_message_unhides_the_direct_conversation_for_both(app, gql, pair):
    alice, bob, cid = pair
    await gql.ok("mutation($id: ID!) { deleteConversation(id: $id) }", {"id": cid}, token=bob.token)
    await send(gql, alice, cid, "still there?")
    data = await gql.ok("{ conversations { edges { node { id } } } }", token=bob.token)
    assert [e["node"]["id"] for e in data["conversations"]["edges"]] == [cid]


# ------------------------------------------------------------------------- pages


async def page(gql, user, cid, **args):
    data = (await gql.ok(MESSAGES, {"c": cid, **args}, token=user.token))["messages"]
    return [e["node"]["body"] for e in data["edges"]], data["pageInfo"]


async def test_pages_both_ways_are_oldest_first(app, gql, pair):
    alice, bob, cid = pair
    for i in range(1, 8):
        await send(gql, alice if i % 2 else bob, cid, f"m{i}")

    got, info = await page(gql, bob, cid, first=3)
    assert (got, info["hasNextPage"], info["hasPreviousPage"]) == (["m1", "m2", "m3"], True, False)
    got, info = await page(gql, bob, cid, first=3, after=info["endCursor"])
    assert (got, info["hasNextPage"], info["hasPreviousPage"]) == (["m4", "m5", "m6"], True, True)
    got, info = await page(gql, bob, cid, first=3, after=info["endCursor"])
    assert (got, info["hasNextPage"]) == (["m7"], False)

    got, info = await page(gql, bob, cid, last=3)
    assert (got, info["hasPreviousPage"], info["hasNextPage"]) == (["m5", "m6", "m7"], True, False)
    got, info = await page(gql, bob, cid, last=3, before=info["startCursor"])
    assert (got, info["hasPreviousPage"], info["hasNextPage"]) == (["m2", "m3", "m4"], True, True)
    got, info = await page(gql, bob, cid, last=3, before=info["startCursor"])
    assert (got, info["hasPreviousPage"]) == (["m1"], False)

    # a window between two cursors
    all_edges = (await gql.ok(MESSAGES, {"c": cid}, token=bob.token))["messages"]["edges"]
    got, _ = await page(gql, bob, cid, first=10, after=all_edges[1]["cursor"], before=all_edges[5]["cursor"])
    assert got == ["m3", "m4", "m5"]


async def test_without_first_or_last_the_newest_50_come_oldest_first(app, gql, pair):
    alice, _, cid = pair
    for i in range(1, 53):
        await send(gql, alice, cid, f"m{i}")
    got, info = await page(gql, alice, cid)
    assert got == [f"m{i}" for i in range(3, 53)]
    assert (info["hasPreviousPage"], info["hasNextPage"]) == (True, False)
    # only `after`: the 50 right after it (catching up never skips the middle)
    first = (await gql.ok(MESSAGES, {"c": cid, "first": 1}, token=alice.token))["messages"]["edges"][0]
    got, info = await page(gql, alice, cid, after=first["cursor"])
    assert got == [f"m{i}" for i in range(2, 52)]
    assert (info["hasPreviousPage"], info["hasNextPage"]) == (True, True)
    # only `before`: the 50 right before it
    got, _ = await page(gql, alice, cid, before=info["endCursor"])
    assert got == [f"m{i}" for i in range(1, 51)]


async def test_page_size_boundaries_and_bad_cursors(app, gql, pair):
    alice, _, cid = pair
    await send(gql, alice, cid, "only")
    assert (await page(gql, alice, cid, first=100))[0] == ["only"]
    assert (await page(gql, alice, cid, last=100))[0] == ["only"]
    for args, field in (({"first": 0}, "first"), ({"first": 101}, "first"), ({"last": 0}, "last"),
                        ({"last": 101}, "last"), ({"first": 1, "last": 1}, "last"),
                        ({"after": "%%%"}, "after"), ({"before": "WyJ4Il0"}, "before"), ({"after": "Wy0xXQ"}, "after")):
        err = await gql.error(MESSAGES, {"c": cid, **args}, token=alice.token)
        assert (error_code(err), err["extensions"]["field"]) == ("BAD_USER_INPUT", field), args
    eve = await create_user(app, "eve")
    assert error_code(await gql.error(MESSAGES, {"c": cid}, token=eve.token)) == "NOT_FOUND"
    assert error_code(await gql.error(MESSAGES, {"c": cid})) == "UNAUTHENTICATED"


async def test_paging_while_new_messages_arrive_neither_skips_nor_repeats(app, gql, pair):
    alice, bob, cid = pair
    for i in range(1, 5):
        await send(gql, alice, cid, f"m{i}")
    seen: list[str] = []
    cursor = None
    n = 4
    for _ in range(20):
        got, info = await page(gql, bob, cid, first=3, **({"after": cursor} if cursor else {}))
        seen += got
        cursor = info["endCursor"] or cursor
        if n < 12:  # two more arrive between every two pages
            for _ in range(2):
                n += 1
                await send(gql, bob if n % 2 else alice, cid, f"m{n}")
        elif not got:
            break
    assert seen == [f"m{i}" for i in range(1, 13)]


async def test_conversation_messages_field_pages_like_the_query(app, gql, pair):
    alice, bob, cid = pair
    for i in range(1, 5):
        await send(gql, alice, cid, f"m{i}")
    query = """query($id: ID!) { conversation(id: $id) {
      messages(last: 2) { edges { node { body } } pageInfo { hasPreviousPage } } } }"""
    data = (await gql.ok(query, {"id": cid}, token=bob.token))["conversation"]["messages"]
    assert [e["node"]["body"] for e in data["edges"]] == ["m3", "m4"]
    assert data["pageInfo"]["hasPreviousPage"] is True


# -------------------------------------------------------------------------- edit


async def test_edit_keeps_the_earlier_bodies_oldest_first(app, gql, published, pair):
    alice, bob, cid = pair
    m = await send(gql, alice, cid, "first")
    published.clear()

    one = (await gql.ok(EDIT, {"id": m["id"], "b": " second "}, token=alice.token))["editMessage"]
    two = (await gql.ok(EDIT, {"id": m["id"], "b": "third"}, token=alice.token))["editMessage"]

    assert one["body"] == "second"
    assert one["editHistory"] == [{"body": "first", "editedAt": m["createdAt"]}]
    assert two["body"] == "third"
    assert two["editHistory"] == [{"body": "first", "editedAt": m["createdAt"]},
                                  {"body": "second", "editedAt": one["editedAt"]}]
    assert two["editedAt"] > one["editedAt"]
    events = [(e["kind"], e["pos"], e["message"]["message"]["body"]) for _, e in published.of_type("message")]
    assert events == [("EDITED", 2, "second"), ("EDITED", 3, "third")]
    # the same body again changes and announces nothing
    published.clear()
    same = (await gql.ok(EDIT, {"id": m["id"], "b": "third"}, token=alice.token))["editMessage"]
    assert same == two
    assert published.published == []
    assert await bodies(gql, bob, cid) == ["third"]


async def test_edit_can_add_a_mention(app, gql, published):
    alice = await create_user(app, "alice")
    carol = await create_user(app, "carol")
    group = await make_group(app, alice, {"MEMBER": [carol]})
    m = await send(gql, alice, group.gid, "hello")
    edited = (await gql.ok(EDIT, {"id": m["id"], "b": "hello @carol"}, token=alice.token))["editMessage"]
    assert edited["mentions"] == [{"id": carol.gid, "username": "carol"}]
    again = (await gql.ok(EDIT, {"id": m["id"], "b": "hello @carol!"}, token=alice.token))["editMessage"]
    assert again["mentions"] == [{"id": carol.gid, "username": "carol"}]
    assert await count_rows(app, models.Notification) == 1  # notified once, when first mentioned
    gone = (await gql.ok(EDIT, {"id": m["id"], "b": "hello"}, token=alice.token))["editMessage"]
    assert gone["mentions"] == []


async def test_edit_refusals(app, gql, published, pair):
    alice, bob, cid = pair
    eve = await create_user(app, "eve")
    m = await send(gql, alice, cid, "mine")
    gone = await send(gql, alice, cid, "to delete")
    await gql.ok(DELETE, {"id": gone["id"]}, token=alice.token)
    before = await table_snapshot(app)
    published.clear()

    cases = [
        (bob, m["id"], "x", "FORBIDDEN", None),  # a member who is not the sender
        (eve, m["id"], "x", "NOT_FOUND", None),  # not a member
        (alice, "m_99999", "x", "NOT_FOUND", None),
        (alice, gone["id"], "x", "CONFLICT", None),  # deleted: exists, but its state forbids it
        (alice, m["id"], "   ", "BAD_USER_INPUT", "body"),
        (alice, m["id"], "x" * 10_001, "BAD_USER_INPUT", "body"),
        (alice, "zz", "x", "BAD_USER_INPUT", "id"),
    ]
    for user, mid, body, code, field in cases:
        err = await gql.error(EDIT, {"id": mid, "b": body}, token=user.token)
        assert (error_code(err), err["extensions"].get("field")) == (code, field), (user.username, body[:5])
    assert await table_snapshot(app) == before
    assert published.published == []
    assert len((await gql.ok(EDIT, {"id": m["id"], "b": "y" * 10_000}, token=alice.token))["editMessage"]["body"]) \
        == 10_000


# ------------------------------------------------------------------------ delete


async def test_delete_leaves_a_tombstone_for_everyone(app, gql, published, pair):
    alice, bob, cid = pair
    m = await send(gql, alice, cid, "secret @bob")
    await gql.ok(EDIT, {"id": m["id"], "b": "secret v2 @bob"}, token=alice.token)
    published.clear()

    dead = (await gql.ok(DELETE, {"id": m["id"]}, token=alice.token))["deleteMessage"]

    assert dead["body"] is None and dead["isDeleted"] is True and dead["deletedAt"] is not None
    assert (dead["editHistory"], dead["mentions"]) == ([], [])
    (_, event), = published.of_type("message")
    assert (event["kind"], event["pos"]) == ("DELETED", 3)
    assert event["message"]["message"]["body"] is None
    assert (event["message"]["edits"], event["message"]["mentions"], event["message"]["attachments"]) == ([], [], [])
    query = """query($c: ID!) { messages(conversationId: $c) { edges { node {
      id body isDeleted editHistory { body } mentions { id } } } } }"""
    assert (await gql.ok(query, {"c": cid}, token=bob.token))["messages"]["edges"] == [
        {"node": {"id": m["id"], "body": None, "isDeleted": True, "editHistory": [], "mentions": []}}]
    async with app.state.parley.services.db.session() as s:
        assert (await s.execute(select(models.MessageEdit))).first() is None
        assert (await s.execute(select(models.Message.body))).scalar_one() is None
    # deleting again returns the tombstone and announces nothing
    published.clear()
    assert (await gql.ok(DELETE, {"id": m["id"]}, token=alice.token))["deleteMessage"] == dead
    assert published.published == []


@pytest.mark.parametrize("role", ["MODERATOR", "ADMIN"])
async def test_moderators_and_up_delete_others_messages_with_an_audit_row(app, gql, published, role):
    owner = await create_user(app, "owner")
    mod = await create_user(app, "mod")
    member = await create_user(app, "member")
    group = await make_group(app, owner, {role: [mod], "MEMBER": [member]})
    m = await send(gql, member, group.gid, "spam")
    published.clear()

    dead = (await gql.ok(DELETE, {"id": m["id"]}, token=mod.token))["deleteMessage"]

    assert dead["isDeleted"] is True
    async with app.state.parley.services.db.session() as s:
        audit = (await s.execute(select(models.AuditEvent))).scalar_one()
    assert (audit.kind, audit.actor_id) == ("message_deleted_by_moderator", mod.id)
    assert f"message {num(m['id'])}" in (audit.detail or "")
    assert ("audit", {"type": "audit", "audit_id": audit.id}) in published.published


async def test_a_moderator_deleting_its_own_message_is_not_audited(app, gql):
    owner = await create_user(app, "owner")
    mod = await create_user(app, "mod")
    group = await make_group(app, owner, {"MODERATOR": [mod]})
    m = await send(gql, mod, group.gid, "mine")
    await gql.ok(DELETE, {"id": m["id"]}, token=mod.token)
    assert await count_rows(app, models.AuditEvent) == 0


async def test_delete_refusals(app, gql, published):
    owner = await create_user(app, "owner")
    member = await create_user(app, "member")
    other = await create_user(app, "other")
    eve = await create_user(app, "eve")
    group = await make_group(app, owner, {"MEMBER": [member, other]})
    in_group = await send(gql, owner, group.gid, "owner's")
    direct = await start(gql, member, other)
    in_direct = await send(gql, member, direct, "dm")
    before = await table_snapshot(app)
    published.clear()

    cases = [
        (other, in_group["id"], "FORBIDDEN"),  # a MEMBER on someone else's
        (other, in_direct["id"], "FORBIDDEN"),  # the other side of a direct conversation
        (eve, in_group["id"], "NOT_FOUND"),  # not a member
        (eve, "m_424242", "NOT_FOUND"),
    ]
    for user, mid, code in cases:
        assert error_code(await gql.error(DELETE, {"id": mid}, token=user.token)) == code, (user.username, mid)
    assert await table_snapshot(app) == before
    assert published.published == []
