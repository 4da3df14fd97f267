"""Fixtures for the realtime hub: both backends, and a private redis-server to break.

The shared Redis (TEST_REDIS_URL) is only ever used with a channel prefix unique to
this test run, because pub/sub ignores database numbers. Fault tests never touch it:
they start their own `redis-server` on a free port and kill/restart only that.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from realtime.backends import RedisBackend
from realtime.hub import Hub
from realtime.presence import create_redis
from settings import Settings

RUN_PREFIX = f"parley-test:{uuid.uuid4().hex[:10]}:"

# Fast failure detection so the fault tests stay short.
FAST_REDIS: dict[str, Any] = {
    "connect_timeout": 0.5,
    "command_timeout": 0.5,
    "subscribe_timeout": 2.0,
    "health_interval": 0.3,
    "backoff_min": 0.02,
    "backoff_max": 0.2,
}


@pytest.fixture
def prefix() -> str:
    """A channel prefix unique to this test (under one unique to this run)."""
    return f"{RUN_PREFIX}{uuid.uuid4().hex[:6]}:"


@pytest_asyncio.fixture(params=["memory", "redis"])
async def hub(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Hub]:
    """A started hub on memory:// and, when TEST_REDIS_URL is set, on that Redis."""
    if request.param == "memory":
        instance = Hub("memory://")
    else:
        url = os.environ.get("TEST_REDIS_URL")
        if not url:
            pytest.skip("TEST_REDIS_URL is not set: Redis backend not tested against a shared Redis")
        instance = Hub(backend=RedisBackend(url, prefix=prefix, **FAST_REDIS))
    await instance.start()
    yield instance
    await instance.stop()


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set: Redis backend not tested against a shared Redis")
    return url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unused_redis_url() -> str:
    """A Redis URL nothing listens on."""
    return f"redis://127.0.0.1:{free_port()}/0"


class RedisServer:
    """A throwaway redis-server this test owns: kill, freeze and restart it at will."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: connections drop at once, as in a crash."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: sockets stay open but nothing answers (a half-open peer)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        if self.process is not None:
            self.kill()
        self.start()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH: fault tests need a Redis they may kill")
    server = RedisServer(binary, free_port())
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.thaw()
            server.kill()


@pytest_asyncio.fixture
async def make_hub() -> AsyncIterator[Callable[..., Hub]]:
    """Build (not start) hubs that are stopped at teardown."""
    hubs: list[Hub] = []

    def build(url: str, prefix: str, **options: Any) -> Hub:
        instance = Hub(backend=RedisBackend(url, prefix=prefix, **{**FAST_REDIS, **options}))
        hubs.append(instance)
        return instance

    yield build
    for instance in hubs:
        await instance.stop()


async def delete_prefixed_keys(redis_url: str | None, prefix: str) -> None:
    """Remove every key under `prefix` from the shared test Redis (never a flush)."""
    if not redis_url:
        return
    client = create_redis(redis_url)
    assert client is not None
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest_asyncio.fixture
async def prefixed_settings(settings_factory: Any) -> AsyncIterator[Settings]:
    """Settings with a key prefix of the test's own, removed afterwards: presence and
    stats state outlive an app by its grace period and would leak into the next test."""
    prefix = f"parley-test:{uuid.uuid4().hex[:10]}"
    yield settings_factory(channel_prefix=prefix)
    await delete_prefixed_keys(os.environ.get("TEST_REDIS_URL"), prefix)
