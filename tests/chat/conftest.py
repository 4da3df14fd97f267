"""Chat fixtures: published-event capture, SQL statement counting, quick group setup.

Groups are inserted as rows (the groups work has its own tests for createGroup): a
GROUP conversation whose members carry roles is all the chat core reads.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from db import models
from realtime.events import Publisher
from schema import ids
from tests.factories import GroupChat, TestUser, make_group, recorded_statements  # noqa: F401 (re-exported for the chat tests)


class RecordingHub:
    """A hub that keeps what was published, for asserting on events."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        self.published.append((channel, event))

    def of_type(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [(c, e) for c, e in self.published if e.get("type") == kind]

    def clear(self) -> None:
        self.published.clear()


@pytest.fixture
def published(app: Any) -> RecordingHub:
    hub = RecordingHub()
    app.state.parley.services.events = Publisher(hub)
    return hub


@dataclass
class StatementCounter:
    statements: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.statements)


@pytest.fixture
def count_statements(app: Any) -> Any:
    db = app.state.parley.services.db

    @contextmanager
    def counting() -> Iterator[StatementCounter]:
        with recorded_statements(db) as seen:
            yield StatementCounter(seen)

    return counting


async def count_rows(app: Any, model: type[models.Base]) -> int:
    async with app.state.parley.services.db.session() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def row_counts(app: Any) -> dict[str, int]:
    """Rows in every table the chat core writes: compare before/after a refusal."""
    tables = (models.Conversation, models.ConversationMember, models.Message, models.MessageEdit,
              models.MessageMention, models.MessageEvent, models.Notification, models.AuditEvent)
    return {t.__tablename__: await count_rows(app, t) for t in tables}


async def table_snapshot(app: Any) -> dict[str, Any]:
    """Row counts plus the mutable columns, so refusals can be shown to change nothing."""
    async with app.state.parley.services.db.session() as s:
        messages = (await s.execute(select(models.Message.id, models.Message.body, models.Message.deleted_at,
                                           models.Message.edited_at))).all()
        convs = (await s.execute(select(models.Conversation.id, models.Conversation.last_seq,
                                        models.Conversation.last_event_pos))).all()
        members = (await s.execute(select(models.ConversationMember.id, models.ConversationMember.last_read_seq,
                                          models.ConversationMember.hidden))).all()
        notes = (await s.execute(select(models.Notification.id, models.Notification.read_at))).all()
    return {"counts": await row_counts(app), "messages": sorted(messages), "conversations": sorted(convs),
            "members": sorted(members), "notifications": sorted(notes)}


async def make_pending_attachment(app: Any, uploader: TestUser, conversation_id: int, name: str = "a.png") -> str:
    """A pending upload row (what uploadAttachment leaves before sendMessage), no file."""
    import secrets

    async with app.state.parley.services.db.writer() as s, s.begin():
        row = models.Attachment(
            uploader_id=uploader.id, conversation_id=conversation_id, filename=name, content_type="image/png",
            kind="IMAGE", size=3, storage_key=f"test/{secrets.token_hex(8)}", created_at=datetime.now(UTC),
        )
        s.add(row)
        await s.flush()
        return ids.encode("Attachment", row.id)


def context_for(app: Any, user_id: int) -> Any:
    """A request context for `user_id`: seeds data through the real resolvers, minus HTTP."""
    from auth.viewer import Viewer
    from resolvers.context import Context

    return Context(services=app.state.parley.services, viewer=Viewer(user_id=user_id, session_id=0))


async def bulk_users(app: Any, names: list[str]) -> list[int]:
    """Users without sessions (they never call the API themselves), in one transaction."""
    now = datetime.now(UTC)
    async with app.state.parley.services.db.writer() as s, s.begin():
        rows = [models.User(username=n, username_key=n.casefold(), display_name=n.title(), password_hash="-",
                            created_at=now) for n in names]
        s.add_all(rows)
        await s.flush()
        return [row.id for row in rows]
