"""Multipart bodies built by hand (per the GraphQL multipart request spec), seeding,
and readers of what was stored (rows, files, temp files)."""
from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from db import models
from resolvers.attachments import signing_secret
from schema import ids
from storage.signing import file_path
from tests import factories
from tests.factories import TestUser

PREFLIGHT = {"Apollo-Require-Preflight": "true"}
ATTACHMENT_FIELDS = """
  id filename contentType size kind url createdAt
  uploader { id username }
  message { id body }
"""
UPLOAD = f"""mutation($c: ID!, $file: Upload!) {{
  uploadAttachment(conversationId: $c, file: $file) {{ {ATTACHMENT_FIELDS} }}
}}"""
ATTACHMENT = f"query($id: ID!) {{ attachment(id: $id) {{ {ATTACHMENT_FIELDS} }} }}"
DELETE = "mutation($id: ID!) { deleteAttachment(id: $id) }"
SEND = """mutation($i: SendMessageInput!) {
  sendMessage(input: $i) { id body attachments { id filename contentType kind size url message { id } } }
}"""
DELETE_MESSAGE = "mutation($id: ID!) { deleteMessage(id: $id) { id isDeleted attachments { id } } }"


@dataclass(frozen=True)
class Part:
    name: str
    filename: str
    content_type: str
    data: bytes


def multipart(operations: Any, files_map: dict[str, list[str]], parts: Sequence[Part]) -> tuple[bytes, str]:
    """(body, Content-Type) of a GraphQL multipart request: operations, map, files."""
    boundary = f"----parley{secrets.token_hex(8)}"
    crlf = b"\r\n"
    out = bytearray()
    for name, value in (("operations", operations), ("map", files_map)):
        out += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n".encode()
        out += json.dumps(value).encode() + crlf
    for part in parts:
        out += (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{part.name}\"; "
            f"filename=\"{part.filename}\"\r\nContent-Type: {part.content_type}\r\n\r\n"
        ).encode()
        out += part.data + crlf
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


async def post_upload(
    client: httpx.AsyncClient, user: TestUser | None, conversation_gid: str, data: bytes, *,
    filename: str = "file.bin", content_type: str = "application/octet-stream",
    headers: dict[str, str] | None = PREFLIGHT,
) -> httpx.Response:
    """uploadAttachment as apollo-upload-client sends it."""
    operations = {"query": UPLOAD, "variables": {"c": conversation_gid, "file": None}}
    body, ctype = multipart(operations, {"0": ["variables.file"]}, [Part("0", filename, content_type, data)])
    h = {"Content-Type": ctype, **(headers or {})}
    if user is not None:
        h["Authorization"] = f"Bearer {user.token}"
    return await client.post("/graphql", content=body, headers=h)


async def upload_ok(client: httpx.AsyncClient, user: TestUser, conversation_gid: str, data: bytes,
                    **kw: Any) -> dict[str, Any]:
    response = await post_upload(client, user, conversation_gid, data, **kw)
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body.get("errors"), body
    return body["data"]["uploadAttachment"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------- seeding


@dataclass(frozen=True)
class Chat:
    conversation_id: int

    @property
    def gid(self) -> str:
        return ids.encode("Conversation", self.conversation_id)


async def make_direct(app: Any, a: TestUser, b: TestUser) -> Chat:
    db = app.state.parley.services.db
    now = datetime.now(UTC)
    low, high = sorted((a.id, b.id))
    async with db.writer() as s, s.begin():
        conversation = models.Conversation(kind="DIRECT", direct_key=f"{low}:{high}", created_at=now, updated_at=now,
                                           last_seq=0, last_event_pos=0)
        s.add(conversation)
        await s.flush()
        s.add_all([models.ConversationMember(conversation_id=conversation.id, user_id=u.id, joined_at=now)
                   for u in (a, b)])
    return Chat(conversation.id)


async def make_group(app: Any, owner: TestUser, members: dict[str, list[TestUser]] | None = None) -> Chat:
    """A group and its GROUP conversation: `owner` as OWNER, `members` by role name."""
    return Chat((await factories.make_group(app, owner, members)).conversation_id)


async def remove_member(app: Any, chat: Chat, user: TestUser) -> None:
    cm = models.ConversationMember
    async with app.state.parley.services.db.writer() as s, s.begin():
        member = (await s.execute(select(cm).where(cm.conversation_id == chat.conversation_id,
                                                   cm.user_id == user.id))).scalar_one()
        await s.delete(member)


# ---------------------------------------------------------------- what was stored


async def attachment_rows(app: Any) -> list[models.Attachment]:
    async with app.state.parley.services.db.session() as s:
        return list((await s.execute(select(models.Attachment).order_by(models.Attachment.id))).scalars())


async def attachment_row(app: Any, gid: str) -> models.Attachment:
    async with app.state.parley.services.db.session() as s:
        row = await s.get(models.Attachment, ids.decode("Attachment", gid))
    assert row is not None
    return row


async def message_count(app: Any) -> int:
    async with app.state.parley.services.db.session() as s:
        return len((await s.execute(select(models.Message.id))).all())


def storage_root(app: Any) -> Path:
    return Path(app.state.parley.services.storage.root)


def stored_files(app: Any) -> set[str]:
    """Stored objects (keys), temp files excluded."""
    root = storage_root(app)
    files = (p for p in root.rglob("*") if p.is_file() and p.parts[len(root.parts)] != "tmp")
    return {p.relative_to(root).as_posix() for p in files}


def temp_files(app: Any) -> set[str]:
    tmp = storage_root(app) / "tmp"
    return {p.name for p in tmp.iterdir()} if tmp.exists() else set()


def signed_path(app: Any, attachment_gid: str, viewer: TestUser, *, now: float, filename: str = "f") -> str:
    """A download path as the server would have minted it at `now`."""
    settings = app.state.parley.settings
    return file_path(
        ids.decode("Attachment", attachment_gid), viewer.id, filename, now=now,
        window_seconds=settings.signed_url_ttl_seconds, secret=signing_secret(settings),
    )


def path_of(url: str) -> str:
    """The path of an Attachment.url (absolute or not)."""
    return httpx.URL(url).raw_path.decode() if url.startswith("http") else url
