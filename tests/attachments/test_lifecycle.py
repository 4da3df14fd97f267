"""Pending until sent: sendMessage(attachmentIds), visibility, deleteAttachment."""
from __future__ import annotations

import asyncio
from typing import Any

import httpx

from db import models
from schema import ids
from tests.attachments.conftest import People, RecordingHub
from tests.attachments.helpers import (
    ATTACHMENT,
    DELETE,
    DELETE_MESSAGE,
    SEND,
    Chat,
    attachment_row,
    attachment_rows,
    make_direct,
    make_group,
    message_count,
    upload_ok,
)
from tests.conftest import GQL, error_code
from tests.factories import create_user
from tests.storage import storage_samples as samples


async def send(gql: GQL, user: Any, chat: Chat, attachment_ids: list[str], body: str = "look") -> dict[str, Any]:
    variables = {"i": {"conversationId": chat.gid, "body": body, "attachmentIds": attachment_ids}}
    return await gql(SEND, variables, token=user.token)


async def test_sending_attaches_the_uploads_to_the_message(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat, published: RecordingHub
) -> None:
    # Given two pending uploads by alice
    png = await upload_ok(client, people.alice, chat.gid, samples.png(), filename="a.png")
    pdf = await upload_ok(client, people.alice, chat.gid, samples.pdf(), filename="b.pdf")

    # When she sends a message with them
    body = await send(gql, people.alice, chat, [png["id"], pdf["id"]])

    # Then the message carries them, in order, and they point back at it
    message = body["data"]["sendMessage"]
    assert [a["id"] for a in message["attachments"]] == [png["id"], pdf["id"]]
    assert [a["message"] for a in message["attachments"]] == [{"id": message["id"]}] * 2
    assert message["attachments"][0]["contentType"] == "image/png"
    # And bob (a member) now sees the attachment and its message
    seen = (await gql.ok(ATTACHMENT, {"id": png["id"]}, token=people.bob.token))["attachment"]
    assert seen["message"] == {"id": message["id"], "body": "look"}
    assert seen["uploader"]["id"] == people.alice.gid
    # And the realtime snapshot carries the attachment rows
    [added] = [e for e in published.of_type("message") if e["kind"] == "ADDED"]
    assert [a["id"] for a in added["message"]["attachments"]] == [ids.decode("Attachment", png["id"]),
                                                                  ids.decode("Attachment", pdf["id"])]
    rows = await attachment_rows(app)
    assert {r.message_id for r in rows} == {ids.decode("Message", message["id"])}


async def test_someone_elses_pending_upload_is_not_found_and_nothing_is_sent(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    upload = await upload_ok(client, people.alice, chat.gid, samples.png())

    body = await send(gql, people.bob, chat, [upload["id"]])

    assert error_code(body["errors"][0]) == "NOT_FOUND"
    assert await message_count(app) == 0
    assert (await attachment_row(app, upload["id"])).message_id is None


async def test_attaching_an_upload_twice_is_a_conflict(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    upload = await upload_ok(client, people.alice, chat.gid, samples.png())
    first = await send(gql, people.alice, chat, [upload["id"]])
    first_id = ids.decode("Message", first["data"]["sendMessage"]["id"])

    body = await send(gql, people.alice, chat, [upload["id"]], body="again")

    assert error_code(body["errors"][0]) == "CONFLICT"
    assert await message_count(app) == 1
    assert (await attachment_row(app, upload["id"])).message_id == first_id


async def test_a_retry_with_the_same_client_message_id_returns_the_first_message(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    upload = await upload_ok(client, people.alice, chat.gid, samples.png())
    variables = {"i": {"conversationId": chat.gid, "body": "hi", "clientMessageId": "k1",
                       "attachmentIds": [upload["id"]]}}

    first = (await gql.ok(SEND, variables, token=people.alice.token))["sendMessage"]
    again = (await gql.ok(SEND, variables, token=people.alice.token))["sendMessage"]

    assert again == first
    assert await message_count(app) == 1


async def test_an_upload_to_another_conversation_is_bad_user_input(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    other = await make_direct(app, people.alice, people.carol)
    upload = await upload_ok(client, people.alice, other.gid, samples.png())

    body = await send(gql, people.alice, chat, [upload["id"]])

    assert error_code(body["errors"][0]) == "BAD_USER_INPUT"
    assert body["errors"][0]["extensions"]["field"] == "attachmentIds"
    assert await message_count(app) == 0


async def test_unknown_malformed_and_too_many_attachment_ids(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    unknown = await send(gql, people.alice, chat, [ids.encode("Attachment", 999_999)])
    malformed = await send(gql, people.alice, chat, ["nope"])
    limit = app.state.parley.settings.max_attachments_per_message
    too_many = await send(gql, people.alice, chat, [ids.encode("Attachment", i) for i in range(1, limit + 2)])

    assert error_code(unknown["errors"][0]) == "NOT_FOUND"
    assert (error_code(malformed["errors"][0]), malformed["errors"][0]["extensions"]["field"]) == (
        "BAD_USER_INPUT", "attachmentIds")
    assert (error_code(too_many["errors"][0]), too_many["errors"][0]["extensions"]["field"]) == (
        "BAD_USER_INPUT", "attachmentIds")
    assert await message_count(app) == 0


async def test_who_sees_an_attachment(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    upload = await upload_ok(client, people.alice, chat.gid, samples.png())

    # Pending: the uploader only
    mine = (await gql.ok(ATTACHMENT, {"id": upload["id"]}, token=people.alice.token))["attachment"]
    pending_for_bob = await gql(ATTACHMENT, {"id": upload["id"]}, token=people.bob.token)
    assert mine["id"] == upload["id"] and mine["message"] is None
    assert pending_for_bob["data"] == {"attachment": None}
    assert error_code(pending_for_bob["errors"][0]) == "NOT_FOUND"

    # Sent: every member, nobody else
    await send(gql, people.alice, chat, [upload["id"]])
    for_bob = (await gql.ok(ATTACHMENT, {"id": upload["id"]}, token=people.bob.token))["attachment"]
    for_carol = await gql(ATTACHMENT, {"id": upload["id"]}, token=people.carol.token)
    assert for_bob["id"] == upload["id"]
    assert error_code(for_carol["errors"][0]) == "NOT_FOUND"
    # Each viewer gets a URL of their own
    assert for_bob["url"] != mine["url"]


async def test_the_uploader_deletes_an_attachment(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat, published: RecordingHub
) -> None:
    upload = await upload_ok(client, people.alice, chat.gid, samples.png())
    message = (await send(gql, people.alice, chat, [upload["id"]]))["data"]["sendMessage"]
    published.published.clear()

    assert (await gql.ok(DELETE, {"id": upload["id"]}, token=people.alice.token)) == {"deleteAttachment": True}

    # Then nobody sees it any more, and the message no longer lists it
    row = await attachment_row(app, upload["id"])
    assert row.deleted_at is not None and row.purged_at is None
    for user in (people.alice, people.bob):
        error = await gql.error(ATTACHMENT, {"id": upload["id"]}, token=user.token)
        assert error_code(error) == "NOT_FOUND"
    query = "query($c: ID!) { messages(conversationId: $c) { edges { node { id attachments { id } } } } }"
    page = await gql.ok(query, {"c": chat.gid}, token=people.bob.token)
    assert page["messages"]["edges"] == [{"node": {"id": message["id"], "attachments": []}}]
    # And subscribers get the message as EDITED, without it
    [edited] = published.of_type("message")
    assert edited["kind"] == "EDITED" and edited["message"]["attachments"] == []
    # And deleting again is NOT_FOUND
    again = await gql.error(DELETE, {"id": upload["id"]}, token=people.alice.token)
    assert error_code(again) == "NOT_FOUND"


async def test_the_uploader_deletes_a_pending_upload_without_any_event(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat, published: RecordingHub
) -> None:
    upload = await upload_ok(client, people.alice, chat.gid, samples.png())

    assert (await gql.ok(DELETE, {"id": upload["id"]}, token=people.alice.token)) == {"deleteAttachment": True}

    assert published.published == []
    send_it = await send(gql, people.alice, chat, [upload["id"]])
    assert error_code(send_it["errors"][0]) == "NOT_FOUND"


async def test_who_may_delete_an_attachment(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People
) -> None:
    # Given a group: alice owns it, bob moderates, dave and erin are members
    dave, erin = await create_user(app, "dave"), await create_user(app, "erin")
    group = await make_group(app, people.alice, {"MODERATOR": [people.bob], "MEMBER": [dave, erin]})
    upload = await upload_ok(client, dave, group.gid, samples.png())
    pending = await upload_ok(client, dave, group.gid, samples.gif())
    await send(gql, dave, group, [upload["id"]])

    # A plain member who can see it: FORBIDDEN; a non-member, or anyone on a pending
    # upload of someone else: NOT_FOUND; nothing changes
    forbidden = await gql.error(DELETE, {"id": upload["id"]}, token=erin.token)
    outsider = await gql.error(DELETE, {"id": upload["id"]}, token=people.carol.token)
    invisible = await gql.error(DELETE, {"id": pending["id"]}, token=people.bob.token)
    assert [error_code(e) for e in (forbidden, outsider, invisible)] == ["FORBIDDEN", "NOT_FOUND", "NOT_FOUND"]
    assert [r.deleted_at for r in await attachment_rows(app)] == [None, None]

    # A moderator may, and it is audited
    assert (await gql.ok(DELETE, {"id": upload["id"]}, token=people.bob.token)) == {"deleteAttachment": True}
    async with app.state.parley.services.db.session() as s:
        from sqlalchemy import select

        kinds = (await s.execute(select(models.AuditEvent.kind, models.AuditEvent.actor_id))).all()
    assert [tuple(k) for k in kinds] == [("attachment_deleted_by_moderator", people.bob.id)]


async def test_a_deleted_message_takes_its_attachments_with_it(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    upload = await upload_ok(client, people.alice, chat.gid, samples.png())
    message = (await send(gql, people.alice, chat, [upload["id"]]))["data"]["sendMessage"]

    deleted = (await gql.ok(DELETE_MESSAGE, {"id": message["id"]}, token=people.alice.token))["deleteMessage"]

    assert deleted == {"id": message["id"], "isDeleted": True, "attachments": []}
    error = await gql.error(ATTACHMENT, {"id": upload["id"]}, token=people.alice.token)
    assert error_code(error) == "NOT_FOUND"


async def test_two_concurrent_sends_of_one_upload_attach_it_once(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    # Given one pending upload, sent by two requests at the same moment
    upload = await upload_ok(client, people.alice, chat.gid, samples.png())

    results = await asyncio.gather(*[send(gql, people.alice, chat, [upload["id"]], body=f"try {i}") for i in range(4)])

    # Then exactly one message carries it, and the others are CONFLICT with nothing written
    winners = [r["data"]["sendMessage"] for r in results if r.get("data")]
    losers = [error_code(r["errors"][0]) for r in results if r.get("errors")]
    assert len(winners) == 1 and losers == ["CONFLICT"] * 3
    assert await message_count(app) == 1
    assert (await attachment_row(app, upload["id"])).message_id == ids.decode("Message", winners[0]["id"])
