"""storage.local and storage.cleanup against a real directory."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.base import InvalidKey, ObjectNotFound, Storage, new_key
from storage.cleanup import remove_orphans, remove_stale_temp_files
from storage.local import LocalStorage


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read_all(storage: LocalStorage, key: str, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in await storage.open_range(key, offset, length, chunk_size=3)])


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_new_key_is_dated_and_random() -> None:
    key = new_key(datetime(2024, 2, 29, 23, 59, tzinfo=UTC))
    assert re.fullmatch(r"2024/02/29/[0-9a-f]{32}", key)
    assert new_key() != new_key()


def test_local_storage_satisfies_the_protocol(tmp_path: Path) -> None:
    assert isinstance(LocalStorage(tmp_path), Storage)


@pytest.mark.asyncio
async def test_write_read_stat_delete(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    key = new_key()

    size = await storage.write(key, chunks_of(b"hello ", b"world"))

    assert size == 11
    assert await read_all(storage, key) == b"hello world"
    assert await read_all(storage, key, 6) == b"world"
    assert await read_all(storage, key, 2, 5) == b"llo w"
    assert await read_all(storage, key, 20) == b""
    stat = await storage.stat(key)
    assert stat.size == 11
    assert abs(stat.modified_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert (tmp_path / key).stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path / "tmp") == []  # the temp file was renamed into place

    assert await storage.delete(key) is True
    assert await storage.delete(key) is False
    with pytest.raises(ObjectNotFound):
        await storage.stat(key)
    with pytest.raises(ObjectNotFound):
        await storage.open_range(key)


@pytest.mark.asyncio
async def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    key = new_key()

    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await storage.write(key, broken())

    assert not (tmp_path / key).exists()
    assert os.listdir(tmp_path / "tmp") == []


@pytest.mark.parametrize(
    "key",
    [
        "../outside",
        "2024/01/01/../../../../etc/passwd",
        "/etc/passwd",
        "2024\\01\\x",
        "2024//01",
        "",
        ".hidden",
        "2024/01/.x",
        "tmp/abc",
        "a\x00b",
        "x" * 600,
    ],
)
@pytest.mark.asyncio
async def test_keys_cannot_escape_the_root(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path / "root")
    with pytest.raises(InvalidKey):
        await storage.write(key, chunks_of(b"x"))
    with pytest.raises(InvalidKey):
        await storage.stat(key)
    with pytest.raises(InvalidKey):
        await storage.open_range(key)
    with pytest.raises(InvalidKey):
        await storage.delete(key)
    assert not (tmp_path / "outside").exists()


@pytest.mark.asyncio
async def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "2024").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "data").write_text("private")
    (root / "2024" / "01").symlink_to(tmp_path / "secret")
    storage = LocalStorage(root)
    with pytest.raises(InvalidKey):
        await storage.open_range("2024/01/data")


@pytest.mark.asyncio
async def test_remove_orphans_deletes_only_old_unreferenced_files(tmp_path: Path) -> None:
    # Given four stored files: old+referenced, old+orphaned, new+orphaned (an upload
    # in flight), and a stray file an operator left under the root
    storage = LocalStorage(tmp_path)
    old_known, old_orphan, new_orphan = new_key(), new_key(), new_key()
    for key in (old_known, old_orphan, new_orphan):
        await storage.write(key, chunks_of(b"data"))
    age(tmp_path / old_known, 7200)
    age(tmp_path / old_orphan, 7200)
    stray = tmp_path / old_known.rsplit("/", 1)[0] / "README"
    stray.write_text("not ours")
    age(stray, 7200)
    asked: list[Sequence[str]] = []

    async def known_keys(keys: Sequence[str]) -> set[str]:
        asked.append(list(keys))
        return {old_known} & set(keys)

    # When cleanup runs with a one-hour grace period
    deleted = await remove_orphans(storage, known_keys, now=datetime.now(UTC), grace=timedelta(hours=1), batch_size=1)

    # Then only the old orphan is gone
    assert deleted == 1
    assert not (tmp_path / old_orphan).exists()
    assert (tmp_path / old_known).exists()
    assert (tmp_path / new_orphan).exists()
    assert stray.exists()
    assert sorted(k for batch in asked for k in batch) == sorted([old_known, old_orphan])


@pytest.mark.asyncio
async def test_remove_orphans_refuses_a_zero_grace_period(tmp_path: Path) -> None:
    async def known_keys(keys: Sequence[str]) -> set[str]:
        return set()

    with pytest.raises(ValueError):
        await remove_orphans(LocalStorage(tmp_path), known_keys, now=datetime.now(UTC), grace=timedelta(0))


@pytest.mark.asyncio
async def test_remove_stale_temp_files(tmp_path: Path) -> None:
    (tmp_path / "old.part").write_bytes(b"x")
    (tmp_path / "fresh.part").write_bytes(b"x")
    age(tmp_path / "old.part", 7200)

    deleted = await remove_stale_temp_files(tmp_path, now=datetime.now(UTC), grace=timedelta(hours=1))

    assert deleted == 1
    assert os.listdir(tmp_path) == ["fresh.part"]
    assert await remove_stale_temp_files(tmp_path / "missing", now=datetime.now(UTC), grace=timedelta(hours=1)) == 0
