"""Wires file storage into the server (loaded by server.py's lifespan).

The composition root of the files capability, and so the one module under storage/
that reaches into resolvers/ (for the database checks); the rest of storage/ knows
nothing of the database. It installs:

- `services.storage`: LocalStorage under `settings.uploads_dir` (an S3 backend would
  be chosen here; resolvers only see the `storage.base.Storage` protocol);
- `services.extras["multipart"]`: `async (request) -> params`, the GraphQL multipart
  request parsed with the CSRF header check and every limit applied while streaming;
  the params carry `cleanup`, which the server awaits once the operation has run, so
  no temp file outlives its request;
- `services.extras["file_endpoint"]`: `async (request) -> response` for
  `GET /files/<token>/<name>`, checking the signature and then, on every request,
  whether the viewer may still see the attachment;
- the periodic cleanup task (resolvers.attachments.cleanup), every
  `cleanup_interval_seconds`, cancelled in teardown.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.requests import Request

from errors import BadUserInput
from resolvers import attachments
from schema.params import parse_operation
from storage.http import FileRecord, make_file_endpoint
from storage.local import LocalStorage
from storage.multipart import MultipartLimits, parse_request

log = logging.getLogger("parley.storage")

CLEANUP_TASK = "file_cleanup_task"
FIRST_SWEEP_MAX_DELAY = 60.0


def multipart_limits(settings: Any) -> MultipartLimits:
    return MultipartLimits(
        max_file_bytes=settings.max_upload_bytes,
        max_files=settings.max_upload_files,
        max_parts=settings.max_multipart_parts,
        max_field_bytes=settings.max_request_bytes,
        max_filename_chars=settings.max_filename_length,
    )


def operation_params(operations: Any) -> dict[str, Any]:
    """The one operation of a multipart request as the server's params dict."""
    if isinstance(operations, list):
        raise BadUserInput("Batched multipart requests are not accepted", field="operations")
    return parse_operation(operations)


async def setup(services: Any) -> None:
    settings = services.settings
    storage = LocalStorage(settings.uploads_dir)
    services.storage = storage
    limits = multipart_limits(settings)

    async def multipart(request: Request) -> dict[str, Any]:
        parsed = await parse_request(request, tmp_dir=storage.tmp_dir, limits=limits)
        try:
            params = operation_params(parsed.operations)
        except BaseException:
            await parsed.cleanup()
            raise
        params["cleanup"] = parsed.cleanup
        return params

    async def lookup(attachment_id: int, viewer_id: int) -> FileRecord | None:
        return await attachments.file_record(services.db, attachment_id, viewer_id)

    services.extras["multipart"] = multipart
    services.extras["file_endpoint"] = make_file_endpoint(storage, attachments.signing_secret(settings), lookup)
    if settings.cleanup_interval_seconds > 0:
        services.extras[CLEANUP_TASK] = asyncio.create_task(_sweep_forever(services), name="parley-file-cleanup")


async def teardown(services: Any) -> None:
    task = services.extras.pop(CLEANUP_TASK, None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _sweep_forever(services: Any) -> None:
    """Every instance sweeps; each step is idempotent and re-checked in SQL, so
    overlapping sweeps only repeat work. The first sweep waits a little so startup
    (and short-lived processes such as tests) is not slowed by it."""
    interval = float(services.settings.cleanup_interval_seconds)
    await asyncio.sleep(min(interval, FIRST_SWEEP_MAX_DELAY))
    while True:
        try:
            report = await attachments.cleanup(services)
            if any(vars(report).values()):
                log.info("file cleanup: %s", report)
        except Exception:
            log.exception("file cleanup failed")
        await asyncio.sleep(interval)
