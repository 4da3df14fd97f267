"""GET /files/...: the signed URL from Attachment.url, through the app."""
from __future__ import annotations

import time
from typing import Any

import httpx

from storage.signing import expiry_for
from tests.attachments.conftest import People
from tests.attachments.helpers import (
    ATTACHMENT,
    DELETE,
    DELETE_MESSAGE,
    SEND,
    Chat,
    remove_member,
    signed_path,
    upload_ok,
)
from tests.conftest import GQL
from tests.storage import storage_samples as samples

SANDBOX = "default-src 'none'; sandbox"


async def sent(client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat, data: bytes,
               filename: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """alice uploads and sends a file; returns (attachment as bob sees it, message)."""
    upload = await upload_ok(client, people.alice, chat.gid, data, filename=filename)
    variables = {"i": {"conversationId": chat.gid, "body": "file", "attachmentIds": [upload["id"]]}}
    message = (await gql.ok(SEND, variables, token=people.alice.token))["sendMessage"]
    seen = (await gql.ok(ATTACHMENT, {"id": upload["id"]}, token=people.bob.token))["attachment"]
    return seen, message


async def test_an_image_is_served_inline_without_authorization(
    client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    data = samples.png()
    attachment, _ = await sent(client, gql, people, chat, data, "photo.png")

    response = await client.get(attachment["url"])

    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == SANDBOX
    assert response.headers["content-disposition"] == 'inline; filename="photo.png"'
    assert response.headers["cache-control"].startswith("private, max-age=")
    assert response.headers["accept-ranges"] == "bytes"


async def test_anything_but_an_image_is_downloaded_as_an_attachment(
    client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    attachment, _ = await sent(client, gql, people, chat, samples.TEXT, "notes — café.txt")

    response = await client.get(attachment["url"])

    assert response.status_code == 200
    assert response.content == samples.TEXT
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"notes  cafe.txt\"; filename*=UTF-8''notes%20%E2%80%94%20caf%C3%A9.txt"
    )
    assert response.headers["content-security-policy"] == SANDBOX


async def test_the_url_is_stable_within_its_window_and_per_viewer(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    window = app.state.parley.settings.signed_url_ttl_seconds
    started = time.time()
    attachment, _ = await sent(client, gql, people, chat, samples.png(), "p.png")

    again = (await gql.ok(ATTACHMENT, {"id": attachment["id"]}, token=people.bob.token))["attachment"]
    for_alice = (await gql.ok(ATTACHMENT, {"id": attachment["id"]}, token=people.alice.token))["attachment"]

    # Same viewer, same window: the same URL (unless this test straddled a boundary)
    if expiry_for(started, window) == expiry_for(time.time(), window):
        assert again["url"] == attachment["url"]
    assert for_alice["url"] != attachment["url"]
    assert (await client.get(for_alice["url"])).status_code == 200


async def test_a_tampered_signature_is_forbidden(
    client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    attachment, _ = await sent(client, gql, people, chat, samples.png(), "p.png")
    url = attachment["url"]
    _, _, token, name = url.split("/", 3)
    payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]

    responses = [
        await client.get(f"/files/{payload}.{flipped}/{name}"),
        await client.get(f"/files/{payload[:-1]}Q.{signature}/{name}"),
        await client.get(f"/files/{token}x/{name}"),
        await client.get("/files/garbage/p.png"),
    ]

    assert [r.status_code for r in responses] == [403, 403, 403, 403]
    assert all(r.headers["cache-control"] == "no-store" for r in responses)


async def test_an_expired_url_is_forbidden(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    attachment, _ = await sent(client, gql, people, chat, samples.png(), "p.png")
    window = app.state.parley.settings.signed_url_ttl_seconds

    expired = signed_path(app, attachment["id"], people.bob, now=time.time() - 2 * window)
    fresh = signed_path(app, attachment["id"], people.bob, now=time.time())

    response = await client.get(expired)
    assert response.status_code == 403
    assert "expired" in response.text
    assert (await client.get(fresh)).status_code == 200


async def test_a_deleted_attachment_is_not_found(
    client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    attachment, _ = await sent(client, gql, people, chat, samples.png(), "p.png")
    assert (await client.get(attachment["url"])).status_code == 200

    await gql.ok(DELETE, {"id": attachment["id"]}, token=people.alice.token)

    response = await client.get(attachment["url"])
    assert response.status_code == 404
    assert response.headers["cache-control"] == "no-store"


async def test_an_attachment_of_a_deleted_message_is_not_found(
    client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    attachment, message = await sent(client, gql, people, chat, samples.png(), "p.png")

    await gql.ok(DELETE_MESSAGE, {"id": message["id"]}, token=people.alice.token)

    assert (await client.get(attachment["url"])).status_code == 404


async def test_a_viewer_who_left_the_conversation_loses_access(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    attachment, _ = await sent(client, gql, people, chat, samples.png(), "p.png")

    await remove_member(app, chat, people.bob)

    assert (await client.get(attachment["url"])).status_code == 404


async def test_a_pending_upload_is_served_to_its_uploader_only(
    app: Any, client: httpx.AsyncClient, people: People, chat: Chat
) -> None:
    upload = await upload_ok(client, people.alice, chat.gid, samples.png(), filename="p.png")

    mine = await client.get(upload["url"])
    bobs = await client.get(signed_path(app, upload["id"], people.bob, now=time.time()))

    assert mine.status_code == 200
    assert bobs.status_code == 404


async def test_range_requests_get_partial_content(
    client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    data = samples.pdf()
    attachment, _ = await sent(client, gql, people, chat, data, "doc.pdf")

    partial = await client.get(attachment["url"], headers={"Range": "bytes=5-14"})
    suffix = await client.get(attachment["url"], headers={"Range": "bytes=-4"})
    beyond = await client.get(attachment["url"], headers={"Range": f"bytes={len(data)}-"})

    assert partial.status_code == 206
    assert partial.content == data[5:15]
    assert partial.headers["content-range"] == f"bytes 5-14/{len(data)}"
    assert partial.headers["content-length"] == "10"
    assert (suffix.status_code, suffix.content) == (206, data[-4:])
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"


async def test_conditional_requests_get_not_modified(
    client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    attachment, _ = await sent(client, gql, people, chat, samples.png(), "p.png")
    first = await client.get(attachment["url"])
    etag, modified = first.headers["etag"], first.headers["last-modified"]

    by_etag = await client.get(attachment["url"], headers={"If-None-Match": etag})
    by_date = await client.get(attachment["url"], headers={"If-Modified-Since": modified})
    other_etag = await client.get(attachment["url"], headers={"If-None-Match": '"something-else"'})

    assert by_etag.status_code == 304 and by_etag.content == b""
    assert by_etag.headers["etag"] == etag
    assert by_date.status_code == 304
    assert other_etag.status_code == 200


async def test_head_answers_with_headers_only(
    client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    data = samples.png()
    attachment, _ = await sent(client, gql, people, chat, data, "p.png")

    response = await client.head(attachment["url"])

    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(data))
