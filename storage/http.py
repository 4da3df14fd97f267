"""`GET /files/<token>/<filename>`: serving attachments to whoever holds a signed URL.

Uploaded bytes are hostile, so every response pins the type we detected
(`nosniff`), forbids active content (`Content-Security-Policy: default-src 'none';
sandbox`) and downloads everything but images. The signature proves the server minted
the link for this viewer; `lookup` (the server's database check) decides whether the
viewer may still see it: a viewer who left the conversation, or a deleted attachment
or message, gets 404 from then on even with an unexpired link.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Literal

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from storage.base import ObjectNotFound, Storage
from storage.filenames import content_disposition
from storage.signing import Secret, SignatureExpired, SignatureInvalid, read_token

__all__ = ["FileApp", "FileRecord", "Lookup", "file_routes", "make_file_app", "make_file_endpoint", "parse_range"]

logger = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = "default-src 'none'; sandbox"


@dataclass(frozen=True, slots=True)
class FileRecord:
    """What the server's `lookup` returns for an attachment the viewer may download."""

    key: str
    content_type: str
    """The type storage.sniff detected at upload, never the client's."""
    size: int
    filename: str
    kind: str
    """AttachmentKind: IMAGE is shown inline, anything else is downloaded."""
    created_at: datetime
    updated_at: datetime | None = None


Lookup = Callable[[int, int], Awaitable[FileRecord | None]]
"""`lookup(attachment_id, viewer_id)`: the record, or None when the attachment or its
message is gone or the viewer may no longer see it."""
Endpoint = Callable[[Request], Awaitable[Response]]


def make_file_endpoint(
    storage: Storage,
    secret: Secret | Sequence[Secret],
    lookup: Lookup,
    *,
    clock: Callable[[], float] = time.time,
) -> Endpoint:
    """A Starlette endpoint for the routes of `file_routes`.

    `secret` may be a sequence (newest first) while a signing secret is rotated.
    """

    async def endpoint(request: Request) -> Response:
        now = clock()
        try:
            grant = read_token(_token(request), now, secret)
        except SignatureExpired:
            return _refusal(403, "This link has expired")
        except SignatureInvalid:
            return _refusal(403, "Invalid link")
        record = await lookup(grant.attachment_id, grant.viewer_id)
        if record is None:
            return _refusal(404, "Not found")
        try:
            size = (await storage.stat(record.key)).size
        except ObjectNotFound:
            logger.warning("Attachment %s has no stored object (key %s)", grant.attachment_id, record.key)
            return _refusal(404, "Not found")
        return await _respond(request, storage, record, size, max_age=max(0, int(grant.expires_at - now)))

    return endpoint


def make_file_app(
    storage: Storage,
    secret: Secret | Sequence[Secret],
    lookup: Lookup,
    *,
    clock: Callable[[], float] = time.time,
) -> FileApp:
    """The same endpoint as an ASGI app, e.g. for `Route("/files/{rest:path}", app)`,
    which passes the path after /files/ as `rest`."""
    return FileApp(make_file_endpoint(storage, secret, lookup, clock=clock))


class FileApp:
    """ASGI form of the endpoint. A class instance on purpose: Starlette's `Route`
    treats a plain function as `endpoint(request)`, never as an ASGI app."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)


def _token(request: Request) -> str:
    params = request.path_params
    if "token" in params:
        return str(params["token"])
    return str(params.get("rest", "")).partition("/")[0]


def file_routes(endpoint: Endpoint, prefix: str = "/files") -> list[Route]:
    """GET and HEAD on `<prefix>/<token>/<filename>` (and without the name)."""
    prefix = prefix.rstrip("/")
    return [
        Route(f"{prefix}/{{token}}/{{filename:path}}", endpoint, methods=["GET", "HEAD"]),
        Route(f"{prefix}/{{token}}", endpoint, methods=["GET", "HEAD"]),
    ]


async def _respond(request: Request, storage: Storage, record: FileRecord, size: int, *, max_age: int) -> Response:
    etag = _etag(record, size)
    modified = _utc(record.updated_at or record.created_at).replace(microsecond=0)
    validators = {
        "ETag": etag,
        "Last-Modified": format_datetime(modified, usegmt=True),
        "Cache-Control": f"private, max-age={max_age}",
        "X-Content-Type-Options": "nosniff",
    }
    if _not_modified(request, etag, modified):
        return Response(status_code=304, headers=validators)

    content_type = record.content_type
    if content_type == "text/plain":
        content_type += "; charset=utf-8"  # sniff only accepts UTF-8 text
    disposition: Literal["inline", "attachment"] = "inline" if record.kind == "IMAGE" else "attachment"
    headers = {
        **validators,
        "Content-Type": content_type,
        "Content-Disposition": content_disposition(disposition, record.filename),
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Accept-Ranges": "bytes",
    }
    status, offset, length = 200, 0, size
    range_header = request.headers.get("range")
    if range_header and _if_range_holds(request.headers.get("if-range"), etag, modified):
        try:
            byte_range = parse_range(range_header, size)
        except _Unsatisfiable:
            headers["Content-Range"] = f"bytes */{size}"
            del headers["Content-Disposition"], headers["Content-Type"]
            return Response(status_code=416, headers=headers)
        if byte_range is not None:
            first, last = byte_range
            status, offset, length = 206, first, last - first + 1
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    try:
        chunks = await storage.open_range(record.key, offset, length)
    except ObjectNotFound:
        return _refusal(404, "Not found")
    return StreamingResponse(chunks, status_code=status, headers=headers)


def _refusal(status: int, text: str) -> Response:
    # no-store: access is re-checked on every request, a refusal must not stick either.
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    return PlainTextResponse(text, status_code=status, headers=headers)


def _etag(record: FileRecord, size: int) -> str:
    # Strong: the bytes under a key never change (keys are never reused).
    digest = hashlib.sha256(f"{record.key}\0{size}".encode()).hexdigest()[:32]
    return f'"{digest}"'


def _not_modified(request: Request, etag: str, modified: datetime) -> bool:
    """RFC 9110 13.2.2: If-None-Match decides when present; else If-Modified-Since."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return "*" in tags or etag in tags  # weak comparison, as the RFC asks here
    since = _parse_http_date(request.headers.get("if-modified-since"))
    return since is not None and modified <= since


def _if_range_holds(if_range: str | None, etag: str, modified: datetime) -> bool:
    """A Range applies only if If-Range (when sent) still matches: strong comparison."""
    if if_range is None:
        return True
    if if_range.startswith(('"', "W/")):
        return if_range == etag
    return _parse_http_date(if_range) == modified


class _Unsatisfiable(Exception):
    pass


_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})", re.IGNORECASE)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a single-range `Range` header asks for, or None to
    serve the whole file (syntax we do not understand, or several ranges: RFC 9110
    lets a server ignore Range). Raises _Unsatisfiable (-> 416) when no byte of the
    file is in the range."""
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text:
        if not last_text:
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise _Unsatisfiable()
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None
    if first >= size:
        raise _Unsatisfiable()
    return first, min(int(last_text), size - 1) if last_text else size - 1


def _parse_http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return _utc(parsed)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
