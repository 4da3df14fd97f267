"""Limits and URLs that depend on settings: a small upload limit (so the boundary test
stays fast), a parts cap of exactly operations + map + one file, a public URL."""
from __future__ import annotations

from typing import Any

import httpx
import pytest

from settings import Settings
from tests.attachments.conftest import People
from tests.attachments.helpers import (
    PREFLIGHT,
    UPLOAD,
    Chat,
    Part,
    attachment_rows,
    multipart,
    path_of,
    post_upload,
    stored_files,
    temp_files,
    upload_ok,
)
from tests.conftest import error_code
from tests.storage import storage_samples as samples

LIMIT = 4096
PUBLIC_URL = "https://chat.example.com/"


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    return settings_factory(max_upload_bytes=LIMIT, max_multipart_parts=3, public_url=PUBLIC_URL)  # type: ignore[no-any-return]


async def test_a_file_of_exactly_the_limit_is_accepted(
    app: Any, client: httpx.AsyncClient, people: People, chat: Chat
) -> None:
    result = await upload_ok(client, people.alice, chat.gid, b"a" * LIMIT, filename="big.txt")

    assert (result["size"], result["contentType"]) == (LIMIT, "text/plain")


@pytest.mark.parametrize("size", [LIMIT + 1, 3 * 1024 * 1024], ids=["limit+1", "past the body limit"])
async def test_a_byte_over_the_limit_is_payload_too_large_and_leaves_no_trace(
    app: Any, client: httpx.AsyncClient, people: People, chat: Chat, size: int
) -> None:
    before = stored_files(app)

    response = await post_upload(client, people.alice, chat.gid, b"a" * size, filename="big.txt")

    assert response.status_code == 413
    assert error_code(response.json()["errors"][0]) == "PAYLOAD_TOO_LARGE"
    assert await attachment_rows(app) == []
    assert stored_files(app) == before
    assert temp_files(app) == set()


async def test_a_part_beyond_the_cap_is_payload_too_large(
    app: Any, client: httpx.AsyncClient, people: People, chat: Chat
) -> None:
    before = stored_files(app)
    operations = {"query": UPLOAD, "variables": {"c": chat.gid, "file": None}}
    parts = [Part("0", "a.png", "image/png", samples.png()), Part("extra", "b.png", "image/png", samples.png())]
    body, ctype = multipart(operations, {"0": ["variables.file"]}, parts)

    response = await client.post("/graphql", content=body, headers={
        "Content-Type": ctype, "Authorization": f"Bearer {people.alice.token}", **PREFLIGHT})

    assert response.status_code == 413
    assert error_code(response.json()["errors"][0]) == "PAYLOAD_TOO_LARGE"
    assert await attachment_rows(app) == []
    assert stored_files(app) == before
    assert temp_files(app) == set()


async def test_urls_are_absolute_with_a_public_url(
    app: Any, client: httpx.AsyncClient, people: People, chat: Chat
) -> None:
    result = await upload_ok(client, people.alice, chat.gid, samples.png(), filename="p.png")

    assert result["url"].startswith("https://chat.example.com/files/")
    assert result["url"].endswith("/p.png")
    response = await client.get(path_of(result["url"]))
    assert (response.status_code, response.content) == (200, samples.png())
