"""Files: the Attachment type, `attachment(id)`, uploadAttachment and deleteAttachment.

Uploads arrive as GraphQL multipart requests, parsed (streamed, capped, CSRF-checked)
before execution by the hook storage.wiring installs; the `Upload` argument is then a
`storage.multipart.UploadedFile`. Message.attachments (schema.messages) builds this
type with `Attachment.from_row`.
"""
from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.file_uploads import Upload

from db import models
from errors import NotFound
from resolvers import attachments as attachments_resolvers
from resolvers import messages as messages_resolvers
from resolvers.conversations import user_by_id
from schema import ids

if TYPE_CHECKING:
    from schema.messages import Message
    from schema.users import User

UserType = Annotated["User", strawberry.lazy("schema.users")]
MessageType = Annotated["Message", strawberry.lazy("schema.messages")]


@strawberry.enum
class AttachmentKind(Enum):
    IMAGE = "IMAGE"
    DOCUMENT = "DOCUMENT"
    AUDIO = "AUDIO"
    VIDEO = "VIDEO"
    OTHER = "OTHER"


@strawberry.type
class Attachment:
    row: strawberry.Private[models.Attachment]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(ids.encode("Attachment", self.row.id))

    @strawberry.field(description="Sanitised original name, for display and Content-Disposition only.")
    def filename(self) -> str:
        return self.row.filename

    @strawberry.field(description="Detected from the file's content, not taken from the client.")
    def content_type(self) -> str:
        return self.row.content_type

    @strawberry.field
    def size(self) -> int:
        return self.row.size

    @strawberry.field
    def kind(self) -> AttachmentKind:
        try:
            return AttachmentKind(self.row.kind)
        except ValueError:
            return AttachmentKind.OTHER

    @strawberry.field(
        description=(
            "Signed URL of GET /files/... for this viewer (absolute when the server knows its public URL, "
            "else a path from the server's root); works without an Authorization header, stays the same "
            "within its expiry window so browsers can cache it, and stops working when the viewer leaves "
            "the conversation or the attachment is deleted."
        )
    )
    def url(self, info: strawberry.Info) -> str:
        return attachments_resolvers.download_url(info.context, self.row)

    @strawberry.field
    async def uploader(self, info: strawberry.Info) -> UserType:
        from schema.users import User

        row = await info.context.loader(user_by_id).load(self.row.uploader_id)
        if row is None:
            raise NotFound("User not found")
        return User.from_row(row)

    @strawberry.field(description="Null until sent with a message.")
    async def message(self, info: strawberry.Info) -> MessageType | None:
        if self.row.message_id is None:
            return None
        from schema.messages import Message

        row = await info.context.loader(messages_resolvers.message_by_id).load(self.row.message_id)
        return None if row is None else Message.from_row(row)

    @strawberry.field
    def created_at(self) -> datetime:
        return self.row.created_at

    @classmethod
    def from_row(cls, row: models.Attachment) -> Attachment:
        return cls(row=row)


@strawberry.type
class Query:
    @strawberry.field(
        description="NOT_FOUND unless the viewer is a member of its conversation (pending: its uploader only)."
    )
    async def attachment(self, info: strawberry.Info, id: strawberry.ID) -> Attachment | None:
        ctx = info.context
        ctx.require_viewer()
        row = await attachments_resolvers.get_attachment(ctx, ids.decode("Attachment", id, field="id"))
        return Attachment.from_row(row)


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="GraphQL multipart request; the attachment stays pending until sent with a message."
    )
    async def upload_attachment(
        self, info: strawberry.Info, conversation_id: strawberry.ID, file: Upload
    ) -> Attachment:
        ctx = info.context
        ctx.require_viewer()
        cid = ids.decode("Conversation", conversation_id, field="conversationId")
        row = await attachments_resolvers.upload_attachment(ctx, cid, file)
        return Attachment.from_row(row)

    @strawberry.mutation(description="The uploader, or a group moderator and above. Soft: the file is purged later.")
    async def delete_attachment(self, info: strawberry.Info, id: strawberry.ID) -> bool:
        ctx = info.context
        ctx.require_viewer()
        return await attachments_resolvers.delete_attachment(ctx, ids.decode("Attachment", id, field="id"))
