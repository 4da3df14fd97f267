"""The storage interface resolvers and the file endpoint program against.

Kept deliberately narrow (write, ranged read, stat, delete, list-older-than) so an
S3-compatible backend can implement it with one call each (PutObject/multipart upload,
GetObject with a Range header, HeadObject, DeleteObject, ListObjectsV2) without any
resolver changing. Keys are opaque, made by `new_key()` and stored in the database;
they are never built from user input.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from errors import NotFound

CHUNK_SIZE = 64 * 1024
"""Default read/write granularity: large enough for throughput, small enough that a
download of a big file never holds more than this in memory."""


class ObjectNotFound(NotFound):
    """No object under this key (deleted, never written, or lost by a crash)."""

    default_message = "File not found"


class InvalidKey(ValueError):
    """A key that is not one the backend could have generated (e.g. `../x`).

    A programming error or a tampered database row, never a client error: keys do not
    come from requests.
    """


_KEY_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
MAX_KEY_LENGTH = 512


def new_key(now: datetime | None = None) -> str:
    """A fresh key `YYYY/MM/DD/<uuid4 hex>` (UTC date).

    Random, so unguessable and never reused: the contents under a key are immutable,
    which is what makes the download ETag a strong validator. The date prefix keeps
    directories (or S3 prefixes) small and lets an operator see a file's age at a glance.
    """
    day = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{day:%Y/%m/%d}/{uuid.uuid4().hex}"


def validate_key(key: str) -> str:
    """Return `key` if it is a plain relative path of safe segments, else InvalidKey.

    Segments may not start with a dot (no `..`, no hidden files) nor contain
    separators other than `/`, so no key can name anything outside the store.
    """
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH:
        raise InvalidKey("Storage key has an invalid length")
    if not all(_KEY_SEGMENT.fullmatch(part) for part in key.split("/")):
        raise InvalidKey(f"Invalid storage key: {key!r}")
    return key


@dataclass(frozen=True, slots=True)
class ObjectStat:
    size: int
    modified_at: datetime
    """Timezone-aware UTC time of the last write."""


@runtime_checkable
class Storage(Protocol):
    """Where attachment bytes live."""

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Store the chunks under `key` atomically and return the byte count.

        Readers see either nothing or the whole object, never a partial one; on error
        nothing is left under `key`.
        """
        ...

    async def open_range(
        self, key: str, offset: int = 0, length: int | None = None, *, chunk_size: int = CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        """Open `length` bytes from `offset` (to the end when None) for reading.

        Raises ObjectNotFound *here*, before the first chunk, so an HTTP endpoint can
        still answer 404 instead of breaking a response it has started. The returned
        iterator closes the underlying handle when exhausted or `aclose()`d.
        """
        ...

    async def stat(self, key: str) -> ObjectStat:
        """Size and modification time; raises ObjectNotFound."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the object; False if there was none (deleting twice is fine)."""
        ...

    def list_older_than(self, cutoff: datetime) -> AsyncIterator[str]:
        """Keys of objects last written before `cutoff` (for orphan cleanup)."""
        ...
