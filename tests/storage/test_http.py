"""storage.http: the signed download endpoint, through a real Starlette app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from storage.base import new_key
from storage.http import FileRecord, file_routes, make_file_app, make_file_endpoint, parse_range
from storage.local import LocalStorage
from storage.signing import expiry_for, file_path
from tests.storage import storage_samples as samples

SECRET = b"test-secret-of-at-least-16-bytes"
WINDOW = 600
NOW = 1_700_000_100.0
ATTACHMENT_ID, VIEWER_ID = 7, 42
CREATED = datetime(2024, 5, 1, 12, 30, 15, tzinfo=UTC)
LAST_MODIFIED = "Wed, 01 May 2024 12:30:15 GMT"


class Harness:
    def __init__(self, root: Path) -> None:
        self.storage = LocalStorage(root)
        self.records: dict[tuple[int, int], FileRecord] = {}
        self.now = NOW
        self.lookups: list[tuple[int, int]] = []

    async def lookup(self, attachment_id: int, viewer_id: int) -> FileRecord | None:
        self.lookups.append((attachment_id, viewer_id))
        return self.records.get((attachment_id, viewer_id))

    async def store(self, data: bytes, **fields: object) -> FileRecord:
        key = new_key()

        async def chunks() -> AsyncIterator[bytes]:
            yield data

        await self.storage.write(key, chunks())
        record = FileRecord(
            key=key, content_type="image/png", size=len(data), filename="photo.png", kind="IMAGE", created_at=CREATED
        )
        record = replace(record, **fields)  # type: ignore[arg-type]
        self.records[(ATTACHMENT_ID, VIEWER_ID)] = record
        return record

    def url(self, filename: str = "photo.png", attachment_id: int = ATTACHMENT_ID, viewer_id: int = VIEWER_ID) -> str:
        return file_path(attachment_id, viewer_id, filename, now=self.now, window_seconds=WINDOW, secret=SECRET)

    def client(self) -> httpx.AsyncClient:
        endpoint = make_file_endpoint(self.storage, SECRET, self.lookup, clock=lambda: self.now)
        app = Starlette(routes=file_routes(endpoint))
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://parley.test")


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


@pytest.mark.asyncio
async def test_an_image_is_served_inline_with_safe_headers(harness: Harness) -> None:
    data = samples.png()
    await harness.store(data)

    async with harness.client() as client:
        response = await client.get(harness.url())

    assert response.status_code == 200
    assert response.content == data
    headers = response.headers
    assert headers["content-type"] == "image/png"
    assert headers["content-length"] == str(len(data))
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-disposition"] == 'inline; filename="photo.png"'
    assert headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert headers["cache-control"] == f"private, max-age={expiry_for(NOW, WINDOW) - int(NOW)}"
    assert headers["accept-ranges"] == "bytes"
    assert headers["last-modified"] == LAST_MODIFIED
    assert headers["etag"].startswith('"') and headers["etag"].endswith('"') and len(headers["etag"]) == 34
    assert harness.lookups == [(ATTACHMENT_ID, VIEWER_ID)]


@pytest.mark.asyncio
async def test_documents_are_downloaded_as_attachments(harness: Harness) -> None:
    await harness.store(samples.TEXT, content_type="text/plain", kind="DOCUMENT", filename="notes été.txt")

    async with harness.client() as client:
        response = await client.get(harness.url("whatever-the-url-says.txt"))

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"notes ete.txt\"; filename*=UTF-8''notes%20%C3%A9t%C3%A9.txt"
    )


@pytest.mark.asyncio
async def test_head_sends_the_headers_only(harness: Harness) -> None:
    await harness.store(b"0123456789")
    async with harness.client() as client:
        response = await client.head(harness.url())
    assert response.status_code == 200
    assert response.headers["content-length"] == "10"
    assert response.content == b""


@pytest.mark.parametrize(
    ("range_header", "expected_range", "expected_body"),
    [
        ("bytes=0-3", "bytes 0-3/10", b"0123"),
        ("bytes=4-", "bytes 4-9/10", b"456789"),
        ("bytes=-3", "bytes 7-9/10", b"789"),
        ("bytes=8-100", "bytes 8-9/10", b"89"),
        ("bytes=-100", "bytes 0-9/10", b"0123456789"),
        ("bytes=9-9", "bytes 9-9/10", b"9"),
    ],
)
@pytest.mark.asyncio
async def test_single_ranges_get_206(
    harness: Harness, range_header: str, expected_range: str, expected_body: bytes
) -> None:
    await harness.store(b"0123456789")
    async with harness.client() as client:
        response = await client.get(harness.url(), headers={"Range": range_header})
    assert response.status_code == 206
    assert response.headers["content-range"] == expected_range
    assert response.headers["content-length"] == str(len(expected_body))
    assert response.content == expected_body


@pytest.mark.parametrize("range_header", ["bytes=10-", "bytes=10-20", "bytes=-0"])
@pytest.mark.asyncio
async def test_unsatisfiable_ranges_get_416(harness: Harness, range_header: str) -> None:
    await harness.store(b"0123456789")
    async with harness.client() as client:
        response = await client.get(harness.url(), headers={"Range": range_header})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */10"
    assert response.content == b""


@pytest.mark.parametrize("range_header", ["bytes=0-1,4-5", "items=0-1", "bytes=5-2", "bytes=abc"])
@pytest.mark.asyncio
async def test_ranges_we_do_not_serve_fall_back_to_the_whole_file(harness: Harness, range_header: str) -> None:
    await harness.store(b"0123456789")
    async with harness.client() as client:
        response = await client.get(harness.url(), headers={"Range": range_header})
    assert response.status_code == 200
    assert response.content == b"0123456789"


@pytest.mark.asyncio
async def test_if_range_must_match_for_a_partial_response(harness: Harness) -> None:
    await harness.store(b"0123456789")
    async with harness.client() as client:
        etag = (await client.head(harness.url())).headers["etag"]
        matching = await client.get(harness.url(), headers={"Range": "bytes=0-1", "If-Range": etag})
        stale = await client.get(harness.url(), headers={"Range": "bytes=0-1", "If-Range": '"other"'})
        by_date = await client.get(harness.url(), headers={"Range": "bytes=0-1", "If-Range": LAST_MODIFIED})
    assert (matching.status_code, matching.content) == (206, b"01")
    assert (stale.status_code, stale.content) == (200, b"0123456789")
    assert (by_date.status_code, by_date.content) == (206, b"01")


@pytest.mark.asyncio
async def test_conditional_requests_get_304(harness: Harness) -> None:
    await harness.store(samples.png())
    async with harness.client() as client:
        first = await client.get(harness.url())
        etag = first.headers["etag"]
        by_etag = await client.get(harness.url(), headers={"If-None-Match": etag})
        by_weak_etag_list = await client.get(harness.url(), headers={"If-None-Match": f'"nope", W/{etag}'})
        other_etag = await client.get(harness.url(), headers={"If-None-Match": '"nope"'})
        by_date = await client.get(harness.url(), headers={"If-Modified-Since": LAST_MODIFIED})
        older_date = await client.get(
            harness.url(), headers={"If-Modified-Since": format_datetime(CREATED.replace(year=2023), usegmt=True)}
        )
        etag_wins = await client.get(
            harness.url(), headers={"If-None-Match": '"nope"', "If-Modified-Since": LAST_MODIFIED}
        )

    for response in (by_etag, by_weak_etag_list, by_date):
        assert response.status_code == 304
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert response.headers["cache-control"].startswith("private, max-age=")
    for response in (other_etag, older_date, etag_wins):
        assert response.status_code == 200


@pytest.mark.asyncio
async def test_a_tampered_link_is_403(harness: Harness) -> None:
    await harness.store(b"data")
    prefix, token, name = harness.url().rsplit("/", 2)
    payload, signature = token.split(".")
    forged_for_other_viewer = harness.url(viewer_id=43).rsplit("/", 2)[1].split(".")[0]

    async with harness.client() as client:
        flipped = await client.get(f"{prefix}/{payload}.{signature[:-2]}AA/{name}")
        swapped = await client.get(f"{prefix}/{forged_for_other_viewer}.{signature}/{name}")
        garbage = await client.get(f"{prefix}/not-a-token/{name}")

    for response in (flipped, swapped, garbage):
        assert response.status_code == 403
    assert harness.lookups == []  # refused before touching the database


@pytest.mark.asyncio
async def test_an_expired_link_is_403(harness: Harness) -> None:
    await harness.store(b"data")
    url = harness.url()
    harness.now = expiry_for(NOW, WINDOW)

    async with harness.client() as client:
        response = await client.get(url)

    assert response.status_code == 403
    assert response.text == "This link has expired"


@pytest.mark.asyncio
async def test_lookup_none_is_404(harness: Harness) -> None:
    # Given a valid link for a viewer who has since lost access
    await harness.store(b"data")
    harness.records.clear()
    async with harness.client() as client:
        response = await client.get(harness.url())
    assert response.status_code == 404
    assert response.headers["cache-control"] == "no-store"
    assert harness.lookups == [(ATTACHMENT_ID, VIEWER_ID)]


@pytest.mark.asyncio
async def test_a_missing_stored_object_is_404(harness: Harness) -> None:
    record = await harness.store(b"data")
    await harness.storage.delete(record.key)
    async with harness.client() as client:
        response = await client.get(harness.url())
    assert response.status_code == 404


@pytest.mark.asyncio
async def test_the_asgi_app_works_under_a_catch_all_route(harness: Harness) -> None:
    # As server.py mounts it: Route("/files/{rest:path}", app)
    await harness.store(b"0123456789")
    app = Starlette(
        routes=[
            Route(
                "/files/{rest:path}",
                make_file_app(harness.storage, SECRET, harness.lookup, clock=lambda: harness.now),
                methods=["GET", "HEAD"],
            )
        ]
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://parley.test") as client:
        response = await client.get(harness.url(), headers={"Range": "bytes=2-4"})
    assert (response.status_code, response.content) == (206, b"234")


def test_parse_range_on_an_empty_file() -> None:
    assert parse_range("bytes=0-1,2-3", 0) is None  # several ranges: ignored
    for header in ("bytes=0-", "bytes=-1", "bytes=0-0"):
        with pytest.raises(Exception) as caught:
            parse_range(header, 0)
        assert type(caught.value).__name__ == "_Unsatisfiable"
