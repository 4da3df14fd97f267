"""The periodic cleanup task: started with the app, sweeping, cancelled in teardown."""
from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from db import models
from settings import Settings
from tests.attachments.conftest import People
from tests.attachments.helpers import Chat, attachment_row, attachment_rows, stored_files, upload_ok
from tests.storage import storage_samples as samples


def services(app: Any) -> Any:
    return app.state.parley.services



@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    return settings_factory(cleanup_interval_seconds=1)  # type: ignore[no-any-return]


async def test_the_periodic_task_sweeps_and_stops_with_the_app(
    app: Any, client: httpx.AsyncClient, people: People, chat: Chat
) -> None:
    task = services(app).extras["file_cleanup_task"]
    assert not task.done()
    # Given a pending upload that is past its TTL
    upload = await upload_ok(client, people.alice, chat.gid, samples.png())
    row = await attachment_row(app, upload["id"])
    ttl = app.state.parley.settings.pending_upload_ttl_seconds
    async with services(app).db.writer() as s, s.begin():
        await s.execute(update(models.Attachment).where(models.Attachment.id == row.id)
                        .values(created_at=row.created_at - timedelta(seconds=ttl + 60)))

    # Then within a couple of sweeps it is gone, file included
    for _ in range(40):
        if not await attachment_rows(app):
            break
        await asyncio.sleep(0.1)
    assert await attachment_rows(app) == []
    assert row.storage_key not in stored_files(app)


async def test_the_task_is_cancelled_in_teardown(settings: Settings) -> None:
    from server import create_app

    application = create_app(settings)
    async with application.router.lifespan_context(application):
        task = application.state.parley.services.extras["file_cleanup_task"]
        assert not task.done()
    assert task.cancelled()
    assert "file_cleanup_task" not in application.state.parley.services.extras
