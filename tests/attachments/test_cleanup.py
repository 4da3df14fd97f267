"""The periodic file cleanup, called directly with a `now`, and its task in the lifespan."""
from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from db import models
from resolvers import attachments as attachments_resolvers
from resolvers.attachments import cleanup
from schema import ids
from storage.base import new_key
from tests.attachments.conftest import People
from tests.attachments.helpers import (
    DELETE,
    DELETE_MESSAGE,
    SEND,
    Chat,
    attachment_row,
    attachment_rows,
    post_upload,
    stored_files,
    temp_files,
    upload_ok,
)
from tests.conftest import GQL, error_code
from tests.storage import storage_samples as samples


def services(app: Any) -> Any:
    return app.state.parley.services


async def send(gql: GQL, user: Any, chat: Chat, attachment_id: str) -> dict[str, Any]:
    variables = {"i": {"conversationId": chat.gid, "body": "file", "attachmentIds": [attachment_id]}}
    return (await gql.ok(SEND, variables, token=user.token))["sendMessage"]  # type: ignore[no-any-return]


async def test_pending_uploads_expire_with_their_files(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    # Given a pending upload and a sent one
    pending = await upload_ok(client, people.alice, chat.gid, samples.png())
    kept = await upload_ok(client, people.alice, chat.gid, samples.gif())
    await send(gql, people.alice, chat, kept["id"])
    pending_row, kept_row = await attachment_row(app, pending["id"]), await attachment_row(app, kept["id"])
    ttl = timedelta(seconds=app.state.parley.settings.pending_upload_ttl_seconds)

    # When the sweep runs just before the TTL: nothing goes
    early = await cleanup(services(app), now=pending_row.created_at + ttl - timedelta(seconds=1))
    assert (early.pending_removed, early.files_purged) == (0, 0)  # (earlier tests' files are orphans)
    assert {pending_row.storage_key, kept_row.storage_key} <= stored_files(app)

    # When it runs after the TTL: the pending row and its file go together, the sent one stays
    late = await cleanup(services(app), now=pending_row.created_at + ttl + timedelta(seconds=1))
    assert late.pending_removed == 1
    assert [r.id for r in await attachment_rows(app)] == [kept_row.id]
    assert pending_row.storage_key not in stored_files(app)
    assert kept_row.storage_key in stored_files(app)
    assert (await client.get(kept["url"])).status_code == 200


async def test_files_of_deleted_attachments_are_purged_after_the_grace(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    upload = await upload_ok(client, people.alice, chat.gid, samples.png())
    await send(gql, people.alice, chat, upload["id"])
    await gql.ok(DELETE, {"id": upload["id"]}, token=people.alice.token)
    row = await attachment_row(app, upload["id"])
    assert row.deleted_at is not None
    grace = timedelta(seconds=app.state.parley.settings.deleted_file_grace_seconds)

    assert (await cleanup(services(app), now=row.deleted_at + grace - timedelta(seconds=1))).files_purged == 0
    assert row.storage_key in stored_files(app)

    now = row.deleted_at + grace + timedelta(seconds=1)
    assert (await cleanup(services(app), now=now)).files_purged == 1
    assert row.storage_key not in stored_files(app)
    purged = await attachment_row(app, upload["id"])
    assert purged.purged_at == now
    # A second sweep has nothing left to do
    assert (await cleanup(services(app), now=now)).files_purged == 0


async def test_files_of_deleted_messages_are_purged_after_the_grace(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    upload = await upload_ok(client, people.alice, chat.gid, samples.pdf())
    message = await send(gql, people.alice, chat, upload["id"])
    await gql.ok(DELETE_MESSAGE, {"id": message["id"]}, token=people.alice.token)
    async with services(app).db.session() as s:
        deleted_at = (await s.get(models.Message, ids.decode("Message", message["id"]))).deleted_at  # type: ignore[union-attr]
    grace = timedelta(seconds=app.state.parley.settings.deleted_file_grace_seconds)
    key = (await attachment_row(app, upload["id"])).storage_key

    await cleanup(services(app), now=deleted_at + grace - timedelta(seconds=1))
    assert key in stored_files(app)
    await cleanup(services(app), now=deleted_at + grace + timedelta(seconds=1))
    assert key not in stored_files(app)


async def test_files_of_deleted_conversations_are_purged_after_the_grace(
    app: Any, client: httpx.AsyncClient, gql: GQL, people: People, chat: Chat
) -> None:
    upload = await upload_ok(client, people.alice, chat.gid, samples.png())
    await send(gql, people.alice, chat, upload["id"])
    deleted_at = datetime.now(UTC)
    async with services(app).db.writer() as s, s.begin():
        await s.execute(update(models.Conversation).where(models.Conversation.id == chat.conversation_id)
                        .values(deleted_at=deleted_at))
    key = (await attachment_row(app, upload["id"])).storage_key
    grace = timedelta(seconds=app.state.parley.settings.deleted_file_grace_seconds)

    assert (await client.get(upload["url"])).status_code == 404
    report = await cleanup(services(app), now=deleted_at + grace + timedelta(seconds=1))
    assert report.files_purged == 1
    assert key not in stored_files(app)


async def test_orphaned_files_and_stale_temp_files_are_removed_after_the_grace(
    app: Any, client: httpx.AsyncClient, people: People, chat: Chat
) -> None:
    # Given a file whose row was never committed (a crash between write and commit),
    # a stale temp file, and an attachment with its row
    storage = services(app).storage

    async def chunks() -> AsyncIterator[bytes]:
        yield b"orphan"

    orphan = new_key()
    await storage.write(orphan, chunks())
    storage.tmp_dir.mkdir(parents=True, exist_ok=True)
    (storage.tmp_dir / "upload-dead.part").write_bytes(b"half an upload")
    upload = await upload_ok(client, people.alice, chat.gid, samples.png())
    known = (await attachment_row(app, upload["id"])).storage_key
    grace = timedelta(seconds=app.state.parley.settings.orphan_file_grace_seconds)
    now = datetime.now(UTC)

    # Within the grace (an upload may be in flight) nothing is touched
    assert (await cleanup(services(app), now=now)).orphans_removed == 0
    assert orphan in stored_files(app) and "upload-dead.part" in temp_files(app)

    # After it the orphan and the temp file go; the referenced file stays
    report = await cleanup(services(app), now=now + grace + timedelta(seconds=5))
    assert report.orphans_removed >= 1 and report.temp_files_removed == 1
    assert orphan not in stored_files(app)
    assert known in stored_files(app)
    assert temp_files(app) == set()


async def test_a_failed_commit_removes_the_file_it_just_stored(
    app: Any, client: httpx.AsyncClient, people: People, chat: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: the row insert fails after the bytes were written
    before = stored_files(app)

    async def failing_insert(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database went away")

    monkeypatch.setattr(attachments_resolvers.attachments_db, "insert", failing_insert)

    response = await post_upload(client, people.alice, chat.gid, samples.png())

    assert error_code(response.json()["errors"][0]) == "INTERNAL_SERVER_ERROR"
    assert await attachment_rows(app) == []
    assert stored_files(app) == before
    assert temp_files(app) == set()
