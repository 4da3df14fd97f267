"""uploadAttachment through the real HTTP stack: multipart bodies built by hand."""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from schema import ids
from settings import Settings
from storage.sniff import DOCX, PPTX, XLSX
from tests.attachments.conftest import People
from tests.attachments.helpers import (
    PREFLIGHT,
    UPLOAD,
    Chat,
    Part,
    attachment_rows,
    multipart,
    post_upload,
    stored_files,
    temp_files,
    upload_ok,
)
from tests.conftest import GQL, error_code
from tests.storage import storage_samples as samples

SAMPLES: dict[str, tuple[Callable[[], bytes], str]] = {
    "image/jpeg": (samples.jpeg, "IMAGE"),
    "image/png": (samples.png, "IMAGE"),
    "image/gif": (samples.gif, "IMAGE"),
    "image/webp": (samples.webp, "IMAGE"),
    "audio/mpeg": (samples.mp3, "AUDIO"),
    "audio/wav": (samples.wav, "AUDIO"),
    "audio/ogg": (samples.ogg, "AUDIO"),
    "video/mp4": (samples.mp4, "VIDEO"),
    "video/webm": (samples.webm, "VIDEO"),
    "application/pdf": (samples.pdf, "DOCUMENT"),
    "text/plain": (lambda: samples.TEXT, "DOCUMENT"),
    "application/msword": (lambda: samples.ole2("WordDocument"), "DOCUMENT"),
    "application/vnd.ms-excel": (lambda: samples.ole2("Workbook"), "DOCUMENT"),
    "application/vnd.ms-powerpoint": (lambda: samples.ole2("PowerPoint Document"), "DOCUMENT"),
    DOCX: (lambda: samples.ooxml("word"), "DOCUMENT"),
    XLSX: (lambda: samples.ooxml("xl"), "DOCUMENT"),
    PPTX: (lambda: samples.ooxml("ppt"), "DOCUMENT"),
}
KEY = re.compile(r"\d{4}/\d{2}/\d{2}/[0-9a-f]{32}")


def test_every_allowed_type_has_a_sample() -> None:
    assert set(Settings().allowed_upload_types) == set(SAMPLES)


async def assert_nothing_stored(app: Any, files_before: set[str]) -> None:
    assert await attachment_rows(app) == []
    assert stored_files(app) == files_before
    assert temp_files(app) == set()


@pytest.mark.parametrize("mime", list(SAMPLES))
async def test_each_allowed_type_is_stored_with_the_detected_type(
    app: Any, client: httpx.AsyncClient, people: People, chat: Chat, mime: str
) -> None:
    # Given a real file of an allowed type, declared by the client as something else
    make, kind = SAMPLES[mime]
    data = make()
    before = stored_files(app)

    # When alice uploads it to her conversation
    result = await upload_ok(client, people.alice, chat.gid, data, filename="upload.bin",
                             content_type="text/html")

    # Then the type and kind come from the content, and it is pending
    assert result["contentType"] == mime
    assert result["kind"] == kind
    assert result["size"] == len(data)
    assert result["filename"] == "upload.bin"
    assert result["uploader"] == {"id": people.alice.gid, "username": "alice"}
    assert result["message"] is None
    assert result["url"].startswith("/files/") and result["url"].endswith("/upload.bin")
    # And the bytes sit under a generated date-based key, with nothing left in temp
    [row] = await attachment_rows(app)
    assert ids.encode("Attachment", row.id) == result["id"]
    assert KEY.fullmatch(row.storage_key)
    assert (row.content_type, row.kind, row.size, row.message_id) == (mime, kind, len(data), None)
    assert stored_files(app) - before == {row.storage_key}
    assert (app.state.parley.services.storage.root / row.storage_key).read_bytes() == data
    assert temp_files(app) == set()


async def test_the_client_filename_is_only_kept_sanitised(
    app: Any, client: httpx.AsyncClient, people: People, chat: Chat
) -> None:
    result = await upload_ok(client, people.alice, chat.gid, samples.png(), filename="../../etc/\u202epasswd.png")

    [row] = await attachment_rows(app)
    assert result["filename"] == row.filename == "passwd.png"
    assert "etc" not in row.storage_key and "passwd" not in row.storage_key


@pytest.mark.parametrize(
    ("name", "data", "filename"),
    [
        ("html named .png", samples.HTML, "cat.png"),
        ("svg", samples.SVG, "logo.svg"),
        ("elf executable", samples.elf(), "tool"),
        ("windows executable", b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 120, "setup.exe"),
        ("empty file", b"", "empty.txt"),
    ],
)
async def test_refused_types_are_unsupported_and_leave_nothing(
    app: Any, client: httpx.AsyncClient, people: People, chat: Chat, name: str, data: bytes, filename: str
) -> None:
    before = stored_files(app)

    response = await post_upload(client, people.alice, chat.gid, data, filename=filename, content_type="image/png")

    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    assert error_code(body["errors"][0]) == "UNSUPPORTED_MEDIA_TYPE"
    await assert_nothing_stored(app, before)


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Apollo-Operation-Name": ""}, {"Apollo-Require-Preflight": ""}],
    ids=["no header", "empty operation name", "empty preflight"],
)
async def test_without_a_preflight_header_the_request_is_refused_before_anything_is_stored(
    app: Any, client: httpx.AsyncClient, people: People, chat: Chat, headers: dict[str, str]
) -> None:
    before = stored_files(app)

    response = await post_upload(client, people.alice, chat.gid, samples.png(), headers=headers)

    assert response.status_code == 400
    assert error_code(response.json()["errors"][0]) == "BAD_USER_INPUT"
    await assert_nothing_stored(app, before)


async def test_a_non_empty_operation_name_header_is_enough(
    app: Any, client: httpx.AsyncClient, people: People, chat: Chat
) -> None:
    result = await upload_ok(client, people.alice, chat.gid, samples.png(),
                             headers={"X-Apollo-Operation-Name": "Upload"})

    assert result["contentType"] == "image/png"


async def test_more_files_than_allowed_is_payload_too_large_and_leaves_nothing(
    app: Any, client: httpx.AsyncClient, people: People, chat: Chat
) -> None:
    # Given a request mapping two files (the limit is one)
    before = stored_files(app)
    query = "mutation($c: ID!, $a: Upload!, $b: Upload!) { a: uploadAttachment(conversationId: $c, file: $a) { id } " \
            "b: uploadAttachment(conversationId: $c, file: $b) { id } }"
    operations = {"query": query, "variables": {"c": chat.gid, "a": None, "b": None}}
    body, ctype = multipart(
        operations, {"0": ["variables.a"], "1": ["variables.b"]},
        [Part("0", "a.png", "image/png", samples.png()), Part("1", "b.png", "image/png", samples.png())],
    )

    response = await client.post("/graphql", content=body, headers={
        "Content-Type": ctype, "Authorization": f"Bearer {people.alice.token}", **PREFLIGHT})

    assert response.status_code == 413
    assert error_code(response.json()["errors"][0]) == "PAYLOAD_TOO_LARGE"
    await assert_nothing_stored(app, before)


async def test_a_non_member_cannot_upload_to_a_conversation(
    app: Any, client: httpx.AsyncClient, people: People, chat: Chat
) -> None:
    before = stored_files(app)

    response = await post_upload(client, people.carol, chat.gid, samples.png())

    body = response.json()
    assert response.status_code == 200 and body["data"] is None
    assert error_code(body["errors"][0]) == "NOT_FOUND"
    await assert_nothing_stored(app, before)


async def test_an_anonymous_upload_is_unauthenticated(
    app: Any, client: httpx.AsyncClient, people: People, chat: Chat
) -> None:
    before = stored_files(app)

    response = await post_upload(client, None, chat.gid, samples.png())

    assert error_code(response.json()["errors"][0]) == "UNAUTHENTICATED"
    await assert_nothing_stored(app, before)


async def test_a_file_variable_that_is_not_an_upload_is_bad_user_input(
    app: Any, gql: GQL, people: People, chat: Chat
) -> None:
    before = stored_files(app)

    error = await gql.error(UPLOAD, {"c": chat.gid, "file": "aGVsbG8="}, token=people.alice.token)

    assert error_code(error) == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == "file"
    await assert_nothing_stored(app, before)


async def test_a_malformed_multipart_body_is_refused_with_400(
    app: Any, client: httpx.AsyncClient, people: People, chat: Chat
) -> None:
    before = stored_files(app)
    body, ctype = multipart({"query": UPLOAD, "variables": {"c": chat.gid, "file": None}},
                            {"0": ["variables.nope"]}, [Part("0", "a.png", "image/png", samples.png())])

    response = await client.post("/graphql", content=body, headers={
        "Content-Type": ctype, "Authorization": f"Bearer {people.alice.token}", **PREFLIGHT})

    assert response.status_code == 400
    assert error_code(response.json()["errors"][0]) == "BAD_USER_INPUT"
    await assert_nothing_stored(app, before)
