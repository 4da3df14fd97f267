"""Attachments: upload, attach to a message, delete, look up, download checks, cleanup.

Lifecycle. `upload_attachment` stores the bytes first and commits the row second, so
a crash in between leaves a file no row names: `cleanup` removes such orphans after
`orphan_file_grace_seconds`. The row is *pending* (no message) until its uploader sends
it with a message in the same conversation (`attach_to_message`, called by sendMessage
inside its transaction); pending uploads older than `pending_upload_ttl_seconds` are
deleted with their files. deleteAttachment and deleteMessage only soft-delete
(`deleted_at`): from then on the file is not served, and `cleanup` deletes it after
`deleted_file_grace_seconds` and marks the row `purged_at`.

Visibility (what is NOT_FOUND, see db.attachments.visible): members of the conversation
see its sent attachments; a pending upload is seen by its uploader only.
sendMessage refusals, per the contract's NOT_FOUND rule:
- an id the sender cannot see (missing, deleted, someone else's pending upload, an
  attachment of a conversation the sender is not in): NOT_FOUND;
- an attachment already sent with a message (the sender's own or one they can see):
  CONFLICT, it exists but its state forbids the change;
- the sender's own pending upload to another conversation: BAD_USER_INPUT
  (field attachmentIds); so is naming more than `max_attachments_per_message`.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from auth import audit, permissions
from auth.access import access_conversation
from db import attachments as attachments_db
from db import conversations as conversations_db
from db import messages as messages_db
from db import models
from db.engine import Database, Transaction, transaction
from errors import BadUserInput, Conflict, Forbidden, NotFound
from resolvers.context import Context, Services
from resolvers.conversations import events
from storage.base import Storage, new_key
from storage.cleanup import remove_orphans, remove_stale_temp_files
from storage.http import FileRecord
from storage.multipart import UploadedFile
from storage.signing import file_path
from storage.sniff import sniff_file

log = logging.getLogger("parley.attachments")

ATTACHMENT_DELETED_BY_MODERATOR = "attachment_deleted_by_moderator"
CLEANUP_BATCH = 500
_SIGNING_CONTEXT = b"parley/file-urls/v1"


def utcnow() -> datetime:
    return datetime.now(UTC)


def signing_secret(settings: Any) -> bytes:
    """The key download URLs are signed with: derived from SECRET_KEY, so it differs
    from the token-signing key and rotates with it."""
    return hmac.new(settings.secret_key.encode(), _SIGNING_CONTEXT, hashlib.sha256).digest()


def _storage(ctx: Context) -> Storage:
    storage = ctx.services.storage
    if storage is None:
        raise BadUserInput("File uploads are not available on this server", field="file")
    return storage


# ------------------------------------------------------------------------ loaders


async def attachment_by_id(ctx: Context, keys: Sequence[int]) -> list[models.Attachment | None]:
    """Attachments the viewer may see, None for the rest (whether or not they exist)."""
    viewer = ctx.require_viewer()
    async with ctx.db.session() as s:
        found = await attachments_db.visible(s, viewer.user_id, keys)
    return [found[k][0] if k in found else None for k in keys]


def download_url(ctx: Context, row: models.Attachment, *, now: float | None = None) -> str:
    """The viewer's signed URL of the file: identical within a signing window (so
    browsers cache it), absolute when `public_url` is set."""
    viewer = ctx.require_viewer()
    settings = ctx.settings
    path = file_path(
        row.id, viewer.user_id, row.filename, now=time.time() if now is None else now,
        window_seconds=settings.signed_url_ttl_seconds, secret=signing_secret(settings),
    )
    return settings.public_url.rstrip("/") + path if settings.public_url else path


# ------------------------------------------------------------------------ queries


async def get_attachment(ctx: Context, attachment_id: int) -> models.Attachment:
    row = await ctx.loader(attachment_by_id).load(attachment_id)
    if row is None:
        raise NotFound("Attachment not found")
    return row


# ---------------------------------------------------------------------- mutations


async def upload_attachment(ctx: Context, conversation_id: int, upload: Any) -> models.Attachment:
    """Store an uploaded file as a pending attachment of a conversation the viewer is in.

    The type comes from the bytes (storage.sniff against `allowed_upload_types`), the
    name is the parser's sanitised one, the storage key is generated.
    """
    viewer = ctx.require_viewer()
    if not isinstance(upload, UploadedFile):
        raise BadUserInput("file must be sent as a GraphQL multipart request", field="file")
    storage = _storage(ctx)
    async with ctx.db.session() as s:
        await access_conversation(s, viewer, conversation_id)
    detected = await sniff_file(upload.path, ctx.settings.allowed_upload_types)
    now = utcnow()
    key = new_key(now)
    size = await storage.write(key, upload.chunks())
    try:
        async with transaction(ctx.db) as tx:
            await access_conversation(tx.session, viewer, conversation_id)  # still a member?
            row = await attachments_db.insert(
                tx.session, uploader_id=viewer.user_id, conversation_id=conversation_id,
                filename=upload.filename, content_type=detected.mime, kind=detected.kind.value,
                size=size, storage_key=key, sha256=upload.sha256 or None, now=now,
            )
    except BaseException:
        # Best effort (a cancelled request may not get here): orphan cleanup is the backstop.
        with contextlib.suppress(Exception):
            await storage.delete(key)
        raise
    ctx.prime(attachment_by_id, row.id, row)
    return row


async def attach_to_message(
    tx: Transaction, ctx: Context, conversation_id: int, message_id: int, attachment_ids: Sequence[int]
) -> list[models.Attachment]:
    """sendMessage's hook, inside its transaction (the conversation row is already
    locked by then): attach the sender's pending uploads to the new message, or raise
    (which rolls the whole message back). See the module docstring for the codes."""
    viewer = ctx.require_viewer()
    wanted = list(dict.fromkeys(attachment_ids))
    limit = ctx.settings.max_attachments_per_message
    if len(wanted) > limit:
        raise BadUserInput(f"A message can carry at most {limit} attachments", field="attachmentIds")
    if not wanted:
        return []
    s = tx.session
    rows = await attachments_db.lock_rows(s, wanted)
    member_of = await attachments_db.member_of(s, viewer.user_id, {r.conversation_id for r in rows.values()})
    for attachment_id in wanted:
        row = rows.get(attachment_id)
        if row is None or row.deleted_at is not None or row.purged_at is not None \
                or row.conversation_id not in member_of \
                or (row.message_id is None and row.uploader_id != viewer.user_id):
            raise NotFound("Attachment not found")
        if row.message_id is not None:
            raise Conflict("This attachment was already sent with a message")
        if row.conversation_id != conversation_id:
            raise BadUserInput("This attachment was uploaded to another conversation", field="attachmentIds")
    attached = [rows[i] for i in wanted]
    for row in attached:
        row.message_id = message_id
    await s.flush()
    return attached


async def delete_attachment(ctx: Context, attachment_id: int) -> bool:
    """Soft delete by the uploader, or by a MODERATOR (or above) of a group conversation
    (audited); other members who can see it get FORBIDDEN. Removing a sent attachment
    changes its message, so the message's EDITED event is published (editedAt does
    not change: the body was not edited). Deleting again is NOT_FOUND: a deleted
    attachment no longer exists for anyone."""
    viewer = ctx.require_viewer()
    publish = events(ctx)
    async with transaction(ctx.db) as tx:
        s = tx.session
        conversation_id = await attachments_db.conversation_of(s, attachment_id)
        if conversation_id is None:
            raise NotFound("Attachment not found")
        # Conversation first, then the attachment: the lock order sendMessage uses.
        try:
            conversation, _ = await access_conversation(s, viewer, conversation_id, lock=True)
        except NotFound:
            raise NotFound("Attachment not found") from None
        found = await attachments_db.visible(s, viewer.user_id, [attachment_id], lock=True)
        if attachment_id not in found:
            raise NotFound("Attachment not found")
        row, member = found[attachment_id]
        own = row.uploader_id == viewer.user_id
        if not own:
            role = permissions.as_role(member.role) if conversation.kind == "GROUP" else None
            if not permissions.can(role, permissions.Action.DELETE_OTHERS_MESSAGE):
                raise Forbidden("Only the uploader or a group moderator can delete this attachment")
        now = utcnow()
        row.deleted_at = now
        await s.flush()
        if not own:
            detail = f"attachment {row.id} of user {row.uploader_id} in conversation {conversation.id}"
            entry = await audit.record(s, ATTACHMENT_DELETED_BY_MODERATOR, viewer.user_id, ctx.ip_address, detail)
            tx.after_commit(publish.audit, entry.id)
        if row.message_id is not None:
            await _message_changed(tx, ctx, conversation, row.message_id, now)
    return True


async def _message_changed(
    tx: Transaction, ctx: Context, conversation: models.Conversation, message_id: int, now: datetime
) -> None:
    """Publish the message (now without the deleted attachment) as EDITED, at the next
    event position, so live and resuming subscribers both see the change."""
    from resolvers import messages as messages_resolvers  # sendMessage imports us lazily too

    s = tx.session
    message = await s.get(models.Message, message_id)
    if message is None or message.deleted_at is not None:
        return
    _, pos = await conversations_db.advance(s, conversation, new_message=False, now=now)
    messages_db.add_event(s, conversation.id, pos, "EDITED", message.id, now)
    await s.flush()
    snap = await messages_resolvers.snapshot(s, message)
    publish = events(ctx)
    tx.after_commit(publish.message_event, conversation.id, pos, "EDITED", snap)
    if conversation.last_message_id == message.id:
        tx.after_commit(
            publish.conversations_updated, await conversations_db.member_ids(s, conversation.id), conversation.id
        )


# ------------------------------------------------------------------------ download


async def file_record(db: Database, attachment_id: int, viewer_id: int) -> FileRecord | None:
    """The download endpoint's check, on every request: the attachment as the viewer
    may download it now, or None (not a member any more, attachment or message deleted,
    someone else's pending upload)."""
    async with db.session() as s:
        found = await attachments_db.visible(s, viewer_id, [attachment_id])
    if attachment_id not in found:
        return None
    row = found[attachment_id][0]
    return FileRecord(
        key=row.storage_key, content_type=row.content_type, size=row.size, filename=row.filename,
        kind=row.kind, created_at=row.created_at,
    )


# ------------------------------------------------------------------------- cleanup


@dataclass(frozen=True)
class CleanupReport:
    pending_removed: int = 0
    files_purged: int = 0
    orphans_removed: int = 0
    temp_files_removed: int = 0


async def cleanup(services: Services, *, now: datetime | None = None) -> CleanupReport:
    """One sweep, safe to run concurrently on several instances (each step re-checks
    its condition in the statement that acts on it):

    1. pending uploads created before now - pending_upload_ttl_seconds: rows deleted,
       then their files;
    2. attachments deleted (themselves, or through their message or conversation)
       before now - deleted_file_grace_seconds: files deleted, rows marked purged;
    3. stored files older than now - orphan_file_grace_seconds that no row names;
    4. temp files (uploads being parsed or written) older than that grace too.
    """
    now = now or utcnow()
    settings, db, storage = services.settings, services.db, services.storage
    if storage is None:
        return CleanupReport()
    pending = await _remove_pending(db, storage, now - timedelta(seconds=settings.pending_upload_ttl_seconds))
    purged = await _purge_deleted(db, storage, now - timedelta(seconds=settings.deleted_file_grace_seconds), now)
    orphan_grace = timedelta(seconds=max(1, settings.orphan_file_grace_seconds))

    async def known_keys(keys: Sequence[str]) -> set[str]:
        async with db.session() as s:
            return await attachments_db.existing_keys(s, keys)

    orphans = await remove_orphans(storage, known_keys, now=now, grace=orphan_grace)
    tmp_dir = getattr(storage, "tmp_dir", None)
    temps = await remove_stale_temp_files(tmp_dir, now=now, grace=orphan_grace) if tmp_dir is not None else 0
    return CleanupReport(pending, purged, orphans, temps)


async def _remove_pending(db: Database, storage: Storage, cutoff: datetime) -> int:
    removed = 0
    while True:
        async with db.session() as s:
            ids = await attachments_db.expired_pending(s, cutoff, CLEANUP_BATCH)
        if not ids:
            return removed
        # Rows first: a crash before the files go leaves orphans, which step 3 removes.
        async with transaction(db) as tx:
            keys = await attachments_db.delete_pending(tx.session, ids, cutoff)
        for key in keys:
            await _delete_file(storage, key)
        removed += len(keys)
        if len(ids) < CLEANUP_BATCH:
            return removed


async def _purge_deleted(db: Database, storage: Storage, cutoff: datetime, now: datetime) -> int:
    purged = 0
    while True:
        async with db.session() as s:
            batch = await attachments_db.purgeable(s, cutoff, CLEANUP_BATCH)
        if not batch:
            return purged
        # Files first, then the mark: a crash in between only repeats a delete.
        done = [attachment_id for attachment_id, key in batch if await _delete_file(storage, key)]
        async with transaction(db) as tx:
            await attachments_db.mark_purged(tx.session, done, now)
        purged += len(done)
        if len(done) < len(batch):
            return purged  # some deletes failed: retry on the next sweep, do not spin
        if len(batch) < CLEANUP_BATCH:
            return purged


async def _delete_file(storage: Storage, key: str) -> bool:
    """True once the object is gone (already missing counts)."""
    try:
        await storage.delete(key)
    except Exception:
        log.warning("could not delete stored file %s", key, exc_info=True)
        return False
    return True
