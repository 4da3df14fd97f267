"""Pub/sub transports under the fan-out hub (`realtime.hub.Hub`).

Both classes implement broadcaster's `BroadcastBackend` interface (connect, disconnect,
subscribe, unsubscribe, publish, next_published), so they stay drop-in comparable with
broadcaster's own backends, but neither is used through `broadcaster.Broadcast`: see
`realtime.hub` for why.

Why not broadcaster 0.3.1's `redis://` backend:
- With redis-py 8 it delivers nothing and logs nothing: it marks itself ready before
  SUBSCRIBE is confirmed, its reader's `listen()` returns at once (nothing subscribed
  yet) and then waits forever for a readiness flag nobody sets again.
- When Redis restarts, its reader task dies silently; publishing keeps "working" and
  nobody ever receives again.
- It takes strings only (a dict raises DataError) and cannot tell anyone that events
  were lost while the connection was down.

What `RedisBackend` does instead: one publish client with short timeouts and one
dedicated pub/sub connection read by ONE task that never dies. That task reconnects
with capped exponential backoff, re-SUBSCRIBEs every live channel, and then yields a
`Gap` from `next_published()`, so callers know that events may have been lost between
the loss and the resubscribe (Redis pub/sub is at-most-once; only a replay from the
database closes such a gap).

Events travel as `Message` objects whose `message` is the decoded Python object (a
dict for the hub): `MemoryBackend` passes the published object through untouched,
`RedisBackend` encodes it with orjson on publish and decodes it exactly once per
process on receipt.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import orjson
from broadcaster._backends.base import BroadcastBackend
from broadcaster._base import Event
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool, Connection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


class BackendUnavailable(ConnectionError):
    """The pub/sub transport cannot be reached (Redis down, unreachable or too slow).

    Raised quickly (socket timeouts are set) instead of hanging, so a mutation that
    already committed can log the lost announcement and carry on; subscribers will
    catch up through a gap/replay.
    """


class Message(Event):
    """A published event; `message` is the decoded object, never wire bytes."""

    message: Any

    def __init__(self, channel: str, message: Any) -> None:
        self.channel = channel
        self.message = message


class Gap(Event):
    """Events on `channels` may have been lost (the subscriber connection was down).

    Yielded by `next_published()` once every live channel is subscribed again, so a
    replay started on receipt cannot miss anything published after it.
    """

    def __init__(self, channels: frozenset[str]) -> None:
        self.channel = ""
        self.message = ""
        self.channels = channels

    def __repr__(self) -> str:
        return f"Gap(channels={sorted(self.channels)!r})"


class Backend(BroadcastBackend):
    """broadcaster's backend interface plus what the hub needs for readiness checks."""

    @property
    def is_connected(self) -> bool:
        raise NotImplementedError()

    @property
    def channels(self) -> frozenset[str]:
        """Channels this process is subscribed to at the transport."""
        raise NotImplementedError()

    async def ping(self) -> bool:
        """True if publishing can currently reach the transport; never raises."""
        raise NotImplementedError()

    async def publish_many(self, items: list[tuple[str, Any]]) -> None:
        """Publish several (channel, message) pairs; backends batch where they can."""
        for channel, message in items:
            await self.publish(channel, message)


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has really finished.

    One `cancel()` is not enough on Python 3.11: `asyncio.wait_for` (which redis-py
    uses for every socket write) swallows a cancellation that lands just as the
    awaited operation completes, and a loop like our reader then carries on forever.
    So cancel again until the task is done.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled() and task.exception() is not None:
        logger.error("Task %s failed while stopping", task.get_name(), exc_info=task.exception())


def create_backend(url: str, *, prefix: str = "") -> Backend:
    """`memory://` or `redis://`, `rediss://`, `unix://` (prefix is Redis-only)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBackend(url)
    if scheme in ("redis", "rediss", "unix"):
        return RedisBackend(url, prefix=prefix)
    raise ValueError(f"Unsupported broadcast URL scheme {scheme!r} (memory://, redis://)")


class MemoryBackend(Backend):
    """In-process transport for tests and single-process deployments.

    Publish hands the very object it was given to the subscriber side (no
    serialization, so listeners must treat events as read-only) and delivery keeps
    publish order. Like Redis, an event published to a channel nobody in this
    process subscribes to is dropped at once. The queue is bounded: a publisher
    waits rather than letting memory grow when dispatch falls behind.
    """

    def __init__(self, url: str = "memory://", *, queue_size: int = 10_000) -> None:
        self._queue_size = queue_size
        self._queue: asyncio.Queue[Event] | None = None
        self._subscribed: set[str] = set()

    @property
    def is_connected(self) -> bool:
        return self._queue is not None

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._subscribed)

    async def connect(self) -> None:
        self._queue = asyncio.Queue(self._queue_size)

    async def disconnect(self) -> None:
        self._queue = None
        self._subscribed.clear()

    async def subscribe(self, channel: str) -> None:
        self._running()
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    async def publish(self, channel: str, message: Any) -> None:
        queue = self._running()
        if channel in self._subscribed:
            await queue.put(Message(channel, message))

    async def next_published(self) -> Event:
        return await self._running().get()

    async def ping(self) -> bool:
        return self.is_connected

    def _running(self) -> asyncio.Queue[Event]:
        if self._queue is None:
            raise RuntimeError("MemoryBackend is not connected")
        return self._queue


class RedisBackend(Backend):
    """Redis pub/sub over redis.asyncio, built to survive Redis restarts.

    - Publishing and subscribing use separate connections: a connection in subscribe
      mode cannot PUBLISH, and a slow reader must not delay publishers.
    - The subscriber connection speaks RESP2 and is read by one task (`_run`) that
      never dies: on loss (EOF, socket error, or a PING without reply within
      `health_interval`) it reconnects with capped, jittered exponential backoff,
      re-SUBSCRIBEs every live channel and then yields a `Gap`.
    - `subscribe()` returns only once Redis acknowledged that very SUBSCRIBE, matched
      per channel in reply order, so a publish right after it is delivered.
    - Channel names are prefixed on the wire: pub/sub ignores the database number, so
      deployments (and test runs) sharing a Redis would otherwise hear each other.
    - Payloads are orjson bytes; `publish` fails with `BackendUnavailable` within about
      `connect_timeout` / `command_timeout` when Redis is down instead of hanging.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "",
        connect_timeout: float = 3.0,
        command_timeout: float = 1.0,
        subscribe_timeout: float = 5.0,
        health_interval: float = 5.0,
        backoff_min: float = 0.05,
        backoff_max: float = 5.0,
        queue_size: int = 10_000,
        max_publish_connections: int = 8,
    ) -> None:
        options: dict[str, Any] = dict(parse_url(url))
        self._connection_class: type[AbstractConnection] = options.pop("connection_class", Connection)
        options.update(
            socket_connect_timeout=connect_timeout,
            socket_timeout=command_timeout,
            retry=Retry(NoBackoff(), 0),  # reconnecting is the reader loop's job
            protocol=2,  # pub/sub replies as plain arrays; RESP3 would push them
        )
        self._options = options
        # A blocking pool: redis-py 8's default pool raises "Too many connections" past
        # 100 concurrent commands (a burst of expiring typing states does that), this
        # one waits briefly for a free connection instead. One immediate retry on a
        # broken pooled socket (the first publish after a Redis restart fails without
        # it); none on timeouts, so a dead Redis fails fast.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_publish_connections,
            timeout=connect_timeout + command_timeout,
            socket_connect_timeout=connect_timeout,
            socket_timeout=command_timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._publisher = Redis.from_pool(pool)
        self._address = _redacted(url)
        self._prefix = prefix
        self._command_timeout = command_timeout
        self._subscribe_timeout = subscribe_timeout
        self._health_interval = health_interval
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._queue_size = queue_size

        self._wire: dict[bytes, str] = {}  # live channels: wire name -> channel
        self._waiting: dict[bytes, set[asyncio.Future[None]]] = {}  # unconfirmed subscribe() calls
        self._acks: dict[bytes, deque[list[asyncio.Future[None]]]] = {}  # per SUBSCRIBE sent on _conn
        self._resubscribing: set[bytes] = set()
        self._gap_pending = False
        self._conn: AbstractConnection | None = None
        self._events: asyncio.Queue[Event] | None = None
        self._up: asyncio.Event | None = None
        self._reader: asyncio.Task[None] | None = None
        self.outages = 0

    @property
    def is_connected(self) -> bool:
        """The subscriber connection is up and every live channel is subscribed."""
        return self._conn is not None and not self._resubscribing

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._wire.values())

    async def connect(self) -> None:
        """Start the reader; raises `BackendUnavailable` if Redis is unreachable now."""
        if self._reader is not None:
            return
        if not await self.ping():
            raise BackendUnavailable(f"Redis at {self._address} is unavailable")
        self._events = asyncio.Queue(self._queue_size)
        self._up = asyncio.Event()
        self._reader = asyncio.create_task(self._run(), name="realtime-redis-reader")
        try:
            async with asyncio.timeout(self._subscribe_timeout):
                await self._up.wait()
        except TimeoutError:
            await self.disconnect()
            raise BackendUnavailable(f"Redis at {self._address}: no pub/sub connection") from None

    async def disconnect(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await cancel_and_wait(reader)
        for waiters in self._waiting.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(BackendUnavailable("backend disconnected"))
        self._waiting.clear()
        self._wire.clear()
        self._acks.clear()
        self._resubscribing.clear()
        self._events = None
        await self._publisher.aclose()

    async def subscribe(self, channel: str) -> None:
        """Subscribe and wait for Redis's acknowledgement (at most `subscribe_timeout`).

        While Redis is down this waits for the reader to reconnect; on timeout the
        channel is dropped again and `BackendUnavailable` is raised.
        """
        if self._reader is None:
            raise RuntimeError("RedisBackend is not connected")
        wire = (self._prefix + channel).encode()
        was_live = wire in self._wire
        self._wire[wire] = channel
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(wire, set()).add(fut)
        conn = self._conn
        if conn is not None and conn.is_connected:
            # Otherwise the reader is reconnecting and will SUBSCRIBE every live channel.
            self._acks.setdefault(wire, deque()).append([fut])
            with contextlib.suppress(RedisError, OSError):  # the reader notices the loss
                await conn.send_command("SUBSCRIBE", wire)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow our caller's
            # cancellation when the acknowledgement lands at the same moment.
            async with asyncio.timeout(self._subscribe_timeout):
                await fut
        except BaseException as exc:
            if not was_live:
                await self.unsubscribe(channel)
            if isinstance(exc, TimeoutError):
                raise BackendUnavailable(
                    f"Redis at {self._address} did not confirm SUBSCRIBE {channel!r} "
                    f"within {self._subscribe_timeout}s"
                ) from None
            raise
        finally:
            waiters = self._waiting.get(wire)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    del self._waiting[wire]

    async def unsubscribe(self, channel: str) -> None:
        """Forget the channel now (its late messages are dropped); UNSUBSCRIBE best-effort."""
        wire = (self._prefix + channel).encode()
        if self._wire.pop(wire, None) is None:
            return
        self._resubscribing.discard(wire)
        conn = self._conn
        if conn is not None and conn.is_connected:
            with contextlib.suppress(RedisError, OSError):
                await conn.send_command("UNSUBSCRIBE", wire)

    async def publish(self, channel: str, message: Any) -> None:
        """Encode with orjson and PUBLISH; `BackendUnavailable` if Redis is unreachable."""
        payload = orjson.dumps(message)
        try:
            await self._publisher.publish(self._prefix + channel, payload)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(
                f"publish to {channel!r} failed: Redis at {self._address} unavailable ({exc})"
            ) from exc

    async def publish_many(self, items: list[tuple[str, Any]]) -> None:
        """Many PUBLISHes in one pipelined round trip (a message to every member's channel)."""
        if not items:
            return
        try:
            async with self._publisher.pipeline(transaction=False) as pipe:
                for channel, message in items:
                    pipe.publish(self._prefix + channel, orjson.dumps(message))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(
                f"publish of {len(items)} events failed: Redis at {self._address} unavailable ({exc})"
            ) from exc

    async def next_published(self) -> Event:
        if self._events is None:
            raise RuntimeError("RedisBackend is not connected")
        return await self._events.get()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self._command_timeout * 2):
                return bool(await self._publisher.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    # The reader task -------------------------------------------------------------

    async def _run(self) -> None:
        """Connect, serve, and on any failure reconnect; only cancellation ends it.

        Every reconnect waits a jittered, doubling delay (capped at `backoff_max`);
        only a connection that stayed up longer than the cap resets it, so a Redis
        that accepts and then drops us (or rejects SUBSCRIBE) is not hammered.
        """
        delay = self._backoff_min
        down_since: float | None = None
        loop = asyncio.get_running_loop()
        first = True
        while True:
            if not first:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self._backoff_max)
            first = False
            conn = self._connection_class(**self._options)
            try:
                await conn.connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if down_since is None:
                    down_since = loop.time()
                    logger.warning("Redis pub/sub at %s unreachable (%s); retrying", self._address, exc)
                continue
            connected_at = loop.time()
            if down_since is not None:
                logger.warning(
                    "Redis pub/sub at %s back after %.1fs; resubscribing %d channel(s)",
                    self._address, loop.time() - down_since, len(self._wire),
                )
                down_since = None
            try:
                await self._serve(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                down_since = loop.time()
                self.outages += 1
                logger.warning("Redis pub/sub connection to %s lost (%r)", self._address, exc)
            finally:
                self._conn = None
                self._acks.clear()
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
            if self._wire:
                self._gap_pending = True
            if loop.time() - connected_at > self._backoff_max:
                delay = self._backoff_min

    async def _serve(self, conn: AbstractConnection) -> None:
        # Publishing _conn and snapshotting the channels happen in one step (no await
        # in between): a concurrent subscribe() is either in this SUBSCRIBE or sends
        # its own on the new connection.
        self._conn = conn
        self._acks = {}
        wires = list(self._wire)
        for wire in wires:
            self._acks[wire] = deque([list(self._waiting.get(wire, ()))])
        self._resubscribing = set(wires)
        if wires:
            await conn.send_command("SUBSCRIBE", *wires)
        assert self._up is not None
        self._up.set()
        ping_sent = False
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # a cancel that redis-py's wait_for swallowed
            await self._emit_gap_if_resubscribed()
            reply = await conn.read_response(timeout=self._health_interval)
            if reply is None:  # silence: a half-open TCP connection sends no EOF
                if ping_sent:
                    raise RedisConnectionError(f"no reply to PING within {self._health_interval}s")
                await conn.send_command("PING")
                ping_sent = True
                continue
            ping_sent = False
            await self._handle(reply)

    async def _handle(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) != 3:
            return  # PONG outside subscribe mode
        kind, wire, data = reply
        if kind == b"message":
            channel = self._wire.get(wire)
            if channel is None:
                return  # unsubscribed, or UNSUBSCRIBE still in flight
            try:
                payload = orjson.loads(data)
            except orjson.JSONDecodeError:
                logger.warning("Dropping undecodable payload on %r", channel)
                return
            assert self._events is not None
            await self._events.put(Message(channel, payload))
        elif kind == b"subscribe":
            self._resubscribing.discard(wire)
            pending = self._acks.get(wire)
            if pending:
                for fut in pending.popleft():
                    if not fut.done():
                        fut.set_result(None)
                if not pending:
                    del self._acks[wire]

    async def _emit_gap_if_resubscribed(self) -> None:
        if self._gap_pending and not self._resubscribing:
            self._gap_pending = False
            channels = frozenset(self._wire.values())
            if channels:
                assert self._events is not None
                await self._events.put(Gap(channels))


def _redacted(url: str) -> str:
    """host:port for log lines: never log credentials."""
    parts = urlsplit(url)
    if not parts.hostname:
        return parts.path  # unix://
    return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
