"""A streaming, capped parser for the GraphQL multipart request spec.

https://github.com/jaydenseric/graphql-multipart-request-spec: parts `operations`
(JSON), `map` (JSON: file field -> object paths such as `variables.file`), then the
files. Starlette's `request.form()` (which Strawberry uses) spools every file to disk
uncapped before anything can look at it; here the body is read chunk by chunk with
python-multipart's `MultipartParser`, each file is written to its own temp file while
its bytes are counted, and the request is refused the moment a limit is passed, with
every temp file it made deleted. Limit violations are PayloadTooLarge (HTTP 413, as
graphql-upload does), malformed requests BadUserInput (HTTP 400).

The caller owns the returned files: `await result.cleanup()` (or `async with result`)
once the operation has run, whether it stored them or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiofiles
import aiofiles.os
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from errors import BadUserInput, PayloadTooLarge
from storage import operations_map
from storage.base import CHUNK_SIZE
from storage.filenames import sanitize_filename
from storage.local import private_opener
from storage.operations_map import FilesMap, JsonValue

__all__ = [
    "MultipartLimits",
    "MultipartRequest",
    "UploadedFile",
    "asgi_body",
    "cleanup_uploads",
    "parse_graphql_multipart",
    "parse_request",
    "require_preflight_header",
]

PARSER_FEED_BYTES = 64 * 1024
"""Network chunks are fed to the parser in slices of at most this, so the events one
`write` produces (and the memory they hold) stay small whatever the sender does."""
PART_OVERHEAD_BYTES = 16 * 1024
MAX_DECLARED_TYPE_LENGTH = 255


@dataclass(frozen=True, slots=True)
class MultipartLimits:
    """Caps for one request; settings upstream. The defaults follow the contract: one
    file of up to 10 MiB, JSON parts up to the 1 MiB request-body limit."""

    max_file_bytes: int = 10 * 1024 * 1024
    max_files: int = 1
    max_parts: int = 3
    """Every part counts: operations, map and the files."""
    max_field_bytes: int = 1024 * 1024
    """Per non-file part (operations, map)."""
    max_body_bytes: int | None = None
    """Whole body, boundaries and part headers included; derived when None."""
    max_filename_chars: int = 255

    @property
    def body_limit(self) -> int:
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return self.max_files * self.max_file_bytes + 2 * self.max_field_bytes + self.max_parts * PART_OVERHEAD_BYTES


@dataclass(eq=False)
class UploadedFile:
    """One uploaded file, complete on disk. What the `Upload` scalar resolves to."""

    field_name: str
    path: Path
    filename: str
    """Sanitised (see storage.filenames); for display and Content-Disposition only."""
    content_type: str
    """As declared by the client: untrusted, never served. Use storage.sniff."""
    size: int
    sha256: str
    """Hex digest of the contents, computed while they streamed in."""

    async def chunks(self, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """The contents, e.g. for `storage.write(key, upload.chunks())`."""
        async with aiofiles.open(self.path, "rb") as handle:
            while chunk := await handle.read(chunk_size):
                yield chunk

    async def close(self) -> None:
        """Delete the temp file; idempotent. A plain unlink, not awaited in a thread:
        it is quick, and it must still happen in a `finally` of a cancelled request."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@dataclass(eq=False)
class MultipartRequest:
    operations: JsonValue
    """`operations` with every mapped path replaced by its UploadedFile."""
    files: dict[str, UploadedFile] = field(default_factory=dict)
    """By multipart field name (the `map` keys)."""

    async def cleanup(self) -> None:
        await cleanup_uploads(self.files.values())

    async def __aenter__(self) -> MultipartRequest:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.cleanup()


async def cleanup_uploads(files: Iterable[UploadedFile]) -> None:
    """Delete the temp files of these uploads."""
    for upload in list(files):
        await upload.close()


def require_preflight_header(headers: Mapping[str, str]) -> None:
    """CSRF guard for uploads (the contract, as Apollo Server does it): a browser sends
    a cross-site multipart POST without a CORS preflight, but not one carrying a custom
    header, so require `Apollo-Require-Preflight` or a non-empty `X-Apollo-Operation-Name`.
    `headers` must be case-insensitive (Starlette's are)."""
    if headers.get("apollo-require-preflight") or headers.get("x-apollo-operation-name", "").strip():
        return
    raise BadUserInput("Uploads need an Apollo-Require-Preflight or X-Apollo-Operation-Name header", field="headers")


async def parse_request(
    request: Request,
    *,
    tmp_dir: Path,
    limits: MultipartLimits = MultipartLimits(),
    require_preflight: bool = True,
) -> MultipartRequest:
    """`parse_graphql_multipart` for a Starlette request (reads `request.stream()`),
    after the CSRF header check, so a refused request stores nothing."""
    if require_preflight:
        require_preflight_header(request.headers)
    length = request.headers.get("content-length")
    return await parse_graphql_multipart(
        request.headers.get("content-type", ""),
        request.stream(),
        tmp_dir=tmp_dir,
        limits=limits,
        content_length=int(length) if length and length.isdigit() else None,
    )


async def asgi_body(receive: Receive) -> AsyncIterator[bytes]:
    """The request body straight from ASGI `receive`, for use outside Starlette."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if body := message.get("body", b""):
            yield body
        if not message.get("more_body", False):
            return


async def parse_graphql_multipart(
    content_type: str,
    body: AsyncIterable[bytes],
    *,
    tmp_dir: Path,
    limits: MultipartLimits = MultipartLimits(),
    content_length: int | None = None,
) -> MultipartRequest:
    """Parse a GraphQL multipart request, streaming files into `tmp_dir`.

    Raises PayloadTooLarge past any limit (before reading the body when Content-Length
    already says so) and BadUserInput for a malformed request; in both cases, and on
    any other failure or cancellation, no temp file is left behind.
    """
    mime, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if mime != b"multipart/form-data" or not boundary:
        raise BadUserInput("Expected multipart/form-data with a boundary")
    if content_length is not None and content_length > limits.body_limit:
        raise PayloadTooLarge("The request is too large")
    state = _ParseState(limits, Path(tmp_dir))
    try:
        try:
            parser = MultipartParser(boundary, state.callbacks())
        except FormParserError as exc:
            raise BadUserInput("Invalid multipart boundary") from exc
        received = 0
        async for chunk in body:
            received += len(chunk)
            if received > limits.body_limit:
                raise PayloadTooLarge("The request is too large")
            for start in range(0, len(chunk), PARSER_FEED_BYTES):
                try:
                    parser.write(chunk[start : start + PARSER_FEED_BYTES])
                except FormParserError as exc:
                    raise BadUserInput("Malformed multipart body") from exc
                await state.process_events()
        parser.finalize()
        return state.result()
    except BaseException:
        await state.discard()
        raise


@dataclass
class _Part:
    name: str
    is_file: bool
    data: bytearray = field(default_factory=bytearray)
    size: int = 0
    handle: Any = None
    digest: Any = None
    upload: UploadedFile | None = None


class _ParseState:
    """Follows the parser's events; python-multipart calls back synchronously, so the
    callbacks only queue events and `process_events` does the (async) work."""

    def __init__(self, limits: MultipartLimits, tmp_dir: Path) -> None:
        self.limits = limits
        self.tmp_dir = tmp_dir
        self.events: list[tuple[str, bytes]] = []
        self.headers: dict[bytes, bytes] = {}
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.part_count = 0
        self.part: _Part | None = None
        self.operations: JsonValue | None = None
        self.files_map: FilesMap | None = None
        self.uploads: dict[str, UploadedFile] = {}
        self.temp_paths: list[Path] = []
        self.finished = False

    def callbacks(self) -> Any:
        def event(name: str) -> Any:
            return lambda: self.events.append((name, b""))

        def data_event(name: str) -> Any:
            return lambda data, start, end: self.events.append((name, bytes(data[start:end])))

        return {
            "on_part_begin": event("part_begin"),
            "on_header_field": data_event("header_field"),
            "on_header_value": data_event("header_value"),
            "on_header_end": event("header_end"),
            "on_headers_finished": event("headers_finished"),
            "on_part_data": data_event("part_data"),
            "on_part_end": event("part_end"),
            "on_end": event("end"),
        }

    async def process_events(self) -> None:
        events, self.events = self.events, []
        for name, data in events:
            if name == "part_begin":
                self.part_count += 1
                if self.part_count > self.limits.max_parts:
                    raise PayloadTooLarge(f"At most {self.limits.max_parts} multipart parts are allowed")
                self.headers.clear()
            elif name == "header_field":
                self.header_field += data
            elif name == "header_value":
                self.header_value += data
            elif name == "header_end":
                self.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
                self.header_field.clear()
                self.header_value.clear()
            elif name == "headers_finished":
                await self._start_part()
            elif name == "part_data":
                await self._part_data(data)
            elif name == "part_end":
                await self._end_part()
            elif name == "end":
                self.finished = True

    async def _start_part(self) -> None:
        disposition, options = parse_options_header(self.headers.get(b"content-disposition"))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if disposition != b"form-data" or not name:
            raise BadUserInput("Every multipart part needs a form-data name")
        expected = {1: "operations", 2: "map"}.get(self.part_count)
        if expected is not None:
            if name != expected:
                raise BadUserInput(f"Multipart part {self.part_count} must be '{expected}'", field=name)
            self.part = _Part(name, is_file=False)
            return
        assert self.files_map is not None
        if name not in self.files_map:
            raise BadUserInput("Multipart part is not in the map", field=name)
        if name in self.uploads:
            raise BadUserInput("Duplicate multipart file", field=name)
        if len(self.uploads) >= self.limits.max_files:
            raise PayloadTooLarge(f"At most {self.limits.max_files} files are allowed")
        await aiofiles.os.makedirs(self.tmp_dir, exist_ok=True)
        path = self.tmp_dir / f"upload-{uuid.uuid4().hex}.part"
        self.temp_paths.append(path)
        part = _Part(name, is_file=True)
        part.handle = await aiofiles.open(path, "xb", opener=private_opener)
        declared = self.headers.get(b"content-type", b"application/octet-stream").decode("latin-1")
        part.upload = UploadedFile(
            field_name=name,
            path=path,
            filename=sanitize_filename(
                options.get(b"filename", b"").decode("utf-8", "replace"), self.limits.max_filename_chars
            ),
            content_type=re.sub(r"[^\x21-\x7e ]", "", declared)[:MAX_DECLARED_TYPE_LENGTH].strip(),
            size=0,
            sha256="",
        )
        part.digest = hashlib.sha256()
        self.part = part

    async def _part_data(self, data: bytes) -> None:
        part = self.part
        assert part is not None
        part.size += len(data)
        if part.is_file:
            if part.size > self.limits.max_file_bytes:
                raise PayloadTooLarge(f"Files may be at most {self.limits.max_file_bytes} bytes", field=part.name)
            part.digest.update(data)
            await part.handle.write(data)
        else:
            if part.size > self.limits.max_field_bytes:
                raise PayloadTooLarge(f"The '{part.name}' part is too large", field=part.name)
            part.data += data

    async def _end_part(self) -> None:
        part, self.part = self.part, None
        assert part is not None
        if part.is_file:
            assert part.upload is not None
            await part.handle.close()
            part.handle = None
            part.upload.size = part.size
            part.upload.sha256 = part.digest.hexdigest()
            self.uploads[part.name] = part.upload
        elif part.name == "operations":
            self.operations = operations_map.parse_operations(part.data)
        else:
            assert self.operations is not None
            self.files_map = operations_map.parse_map(part.data, self.operations, self.limits.max_files)

    def result(self) -> MultipartRequest:
        if not self.finished or self.operations is None or self.files_map is None:
            raise BadUserInput("Incomplete multipart request: 'operations' and 'map' are required")
        missing = sorted(set(self.files_map) - set(self.uploads))
        if missing:
            raise BadUserInput("The map names a file that was not sent", field=missing[0])
        for name, paths in self.files_map.items():
            for path in paths:
                operations_map.set_at(self.operations, path, self.uploads[name])
        return MultipartRequest(self.operations, dict(self.uploads))

    async def discard(self) -> None:
        """Remove every temp file. The unlinks are synchronous so they happen even
        while the task is being cancelled (client gone), where an await may not run."""
        for path in self.temp_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        handle = self.part.handle if self.part is not None else None
        if handle is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await handle.close()
