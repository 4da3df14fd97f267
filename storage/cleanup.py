"""Removing stored files that no database row references.

An upload writes the file first and commits its row second, so a crash (or a failed
transaction) in between leaves a file nobody points at; deleting an attachment
commits first and removes the file after, so a crash there leaves one too. Neither is
ever referenced again (keys are never reused), so anything older than a grace period
that the database does not know is garbage. The grace period must exceed the longest
time between writing a file and committing its row (an upload in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from storage.base import Storage

__all__ = ["KnownKeys", "remove_orphans", "remove_stale_temp_files"]

logger = logging.getLogger(__name__)

KnownKeys = Callable[[Sequence[str]], Awaitable[Collection[str]]]
"""`known_keys(keys)`: which of these keys some row still references (one query per
batch, e.g. `SELECT storage_key FROM attachments WHERE storage_key = ANY(:keys)`)."""


async def remove_orphans(
    storage: Storage,
    known_keys: KnownKeys,
    *,
    now: datetime,
    grace: timedelta,
    batch_size: int = 500,
) -> int:
    """Delete objects written before `now - grace` that no row references; returns
    how many were deleted."""
    if grace <= timedelta(0):
        raise ValueError("grace must be positive: uploads in flight are not orphans")
    deleted = 0
    batch: list[str] = []
    async for key in storage.list_older_than(now - grace):
        batch.append(key)
        if len(batch) >= batch_size:
            deleted += await _delete_unknown(storage, known_keys, batch)
            batch = []
    if batch:
        deleted += await _delete_unknown(storage, known_keys, batch)
    return deleted


async def _delete_unknown(storage: Storage, known_keys: KnownKeys, keys: list[str]) -> int:
    known = set(await known_keys(keys))
    deleted = 0
    for key in keys:
        if key not in known and await storage.delete(key):
            logger.info("Deleted orphaned file %s", key)
            deleted += 1
    return deleted


async def remove_stale_temp_files(directory: Path, *, now: datetime, grace: timedelta) -> int:
    """Delete files in an upload/write temp directory older than `grace` (left by a
    process that was killed mid-upload); returns how many were deleted."""
    return await asyncio.to_thread(_remove_stale, Path(directory), (now - grace).timestamp())


def _remove_stale(directory: Path, threshold: float) -> int:
    deleted = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        with contextlib.suppress(FileNotFoundError):
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < threshold:
                os.unlink(entry.path)
                deleted += 1
    return deleted
