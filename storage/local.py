"""Attachment bytes on the local filesystem (one directory tree, `root`).

Layout: `root/YYYY/MM/DD/<uuid4hex>` for objects, `root/tmp/` for files being written
(and, by default, for upload temp files) so that the final `os.replace` is a rename
within one filesystem: atomic, never a copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG
from typing import Any

import aiofiles
import aiofiles.os

from storage.base import CHUNK_SIZE, InvalidKey, ObjectNotFound, ObjectStat, new_key, validate_key

__all__ = ["LocalStorage", "new_key", "private_opener"]

TMP_DIR_NAME = "tmp"
_GENERATED_KEY = re.compile(r"\d{4}/\d{2}/\d{2}/[0-9a-f]{32}")
_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


def private_opener(path: str, flags: int) -> int:
    """`open(..., opener=)` hook: files readable by the server's user only (0600)."""
    return os.open(path, flags, 0o600)


class LocalStorage:
    """`storage.base.Storage` on a directory tree."""

    def __init__(self, root: Path) -> None:
        # Resolved once, so the containment check below compares real paths.
        self.root = Path(root).resolve()
        self.tmp_dir = self.root / TMP_DIR_NAME

    def path_for(self, key: str) -> Path:
        """The file for `key`; InvalidKey if it could name anything outside the store.

        `validate_key` already rules out `..`, absolute paths and backslashes; the
        resolve check also catches a symlink planted inside the tree.
        """
        validate_key(key)
        if key.split("/", 1)[0] == TMP_DIR_NAME:
            raise InvalidKey("Keys may not point into the temp directory")
        path = self.root / key
        if not path.resolve().is_relative_to(self.root):
            raise InvalidKey(f"Storage key escapes the root: {key!r}")
        return path

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        dest = self.path_for(key)
        await aiofiles.os.makedirs(self.tmp_dir, exist_ok=True)
        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.part"
        size = 0
        try:
            async with aiofiles.open(tmp, "xb", opener=private_opener) as handle:
                async for chunk in chunks:
                    await handle.write(chunk)
                    size += len(chunk)
                await handle.flush()
                await asyncio.to_thread(os.fsync, handle.fileno())
            await aiofiles.os.makedirs(dest.parent, exist_ok=True)
            await aiofiles.os.replace(tmp, dest)
        except BaseException:
            # Synchronous on purpose: this must also run when the task is being
            # cancelled (a client disconnect), where a further await would not.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        # The rename is only durable once the directory entry is: the database row
        # that points at this key is committed right after we return.
        await asyncio.to_thread(_fsync_directory, dest.parent)
        return size

    async def open_range(
        self, key: str, offset: int = 0, length: int | None = None, *, chunk_size: int = CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        path = self.path_for(key)
        try:
            handle = await aiofiles.open(path, "rb")
        except _MISSING as exc:
            raise ObjectNotFound() from exc
        try:
            await handle.seek(offset)
        except BaseException:
            await handle.close()
            raise
        return _read_chunks(handle, length, chunk_size)

    async def stat(self, key: str) -> ObjectStat:
        try:
            result = await aiofiles.os.stat(self.path_for(key))
        except _MISSING as exc:
            raise ObjectNotFound() from exc
        if not S_ISREG(result.st_mode):
            raise ObjectNotFound()
        return ObjectStat(size=result.st_size, modified_at=datetime.fromtimestamp(result.st_mtime, UTC))

    async def delete(self, key: str) -> bool:
        try:
            await aiofiles.os.remove(self.path_for(key))
        except _MISSING:
            return False
        return True

    async def list_older_than(self, cutoff: datetime) -> AsyncIterator[str]:
        """Keys written before `cutoff`, one day-directory at a time.

        Only names of the shape `new_key()` produces are listed, so a file an operator
        put under the root is never offered to orphan cleanup.
        """
        threshold = cutoff.timestamp()
        for directory in await asyncio.to_thread(self._day_directories):
            for key in await asyncio.to_thread(self._old_keys_in, directory, threshold):
                yield key

    def _day_directories(self) -> list[Path]:
        return sorted(p for p in self.root.glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]") if p.is_dir())

    def _old_keys_in(self, directory: Path, threshold: float) -> list[str]:
        keys = []
        with os.scandir(directory) as entries:
            for entry in entries:
                key = f"{directory.relative_to(self.root).as_posix()}/{entry.name}"
                if not _GENERATED_KEY.fullmatch(key) or not entry.is_file(follow_symlinks=False):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime < threshold:
                        keys.append(key)
        return keys


async def _read_chunks(handle: Any, remaining: int | None, chunk_size: int) -> AsyncIterator[bytes]:
    try:
        while remaining is None or remaining > 0:
            chunk = await handle.read(chunk_size if remaining is None else min(chunk_size, remaining))
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
    finally:
        await handle.close()


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
