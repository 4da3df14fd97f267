"""uvicorn's sans-I/O WebSocket protocol, plus a direct text-frame write for fan-out,
with less memory per socket.

`ParleyWebSocketProtocol` is passed as `ws=` to `uvicorn.run` (server.py, setting
`WS_PROTOCOL=parley`). It behaves like uvicorn's `websockets-sansio` implementation
(handshake, reads, pings, close handshake, ASGI `send`/`receive`), and:

1. (`DirectWebSocketProtocol`) puts itself in the ASGI scope
as `scope["extensions"][DIRECT_SEND]`, so `realtime.connection` can hand a ready frame
to the kernel without the ASGI `send` coroutine per socket (measured ~16 µs each: await
`writable`, a state machine, `Frame.serialize`, a join, the starlette wrappers):

- `write_text(payload)`: one unmasked, unfragmented text frame (`0x81`, the length,
  the payload: server frames are never masked, RFC 6455 5.1) written with one
  `transport.write`. The payload must be UTF-8 (our frames are orjson output). Returns
  False once the socket is closing (the frame is dropped; the receive side sees the
  disconnect).
- `write_buffer_size()`: bytes the transport holds for this socket (kernel buffer
  full = a slow reader): what the send path compares with `ws_send_high_water_bytes`.

Everything else (accept, close, pings) stays on uvicorn's path. Both write to the same
transport synchronously, so frames keep their order as long as a socket writes its
text frames through one path (realtime.connection routes all of them here once the
extension is present). permessage-deflate must be off: a direct frame is never
compressed (server.py sets `ws_per_message_deflate=False`, and an offered extension
is then not negotiated).

2. holds less per socket (measured with bench/idle.py, RSS per 1000 subscribed sockets:
~40 MB with uvicorn's class, ~30 MB with this one): a small receive inbox and writable
flag instead of asyncio.Queue / asyncio.Event (four deques), and once the handshake is
answered it drops the handshake's request/response objects, including the request that
websockets' parser generator would otherwise keep alive for the socket's whole life.
"""
from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import Protocol

from realtime.transport import DIRECT_SEND, text_frame_header


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with `write_text` exposed through the scope."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        # Only when the handshake goes on to the app (not refused before the ASGI app runs);
        # the app task has been created but has not started, so it sees this extension.
        if scope is not None and not self.close_sent:
            if self.conn.extensions:  # a negotiated extension (deflate) would need per-frame work
                return
            scope["extensions"][DIRECT_SEND] = self

    def write_text(self, payload: bytes) -> bool:
        if self.close_sent or self.disconnected or not self.handshake_complete:
            return False
        transport = self.transport
        if transport.is_closing():
            return False
        length = len(payload)
        if length < 126:
            transport.write(bytes((0x81, length)) + payload)
        else:
            transport.write(text_frame_header(length) + payload)
        return True

    def write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size()


class _Inbox:
    """What uvicorn uses of `asyncio.Queue` for received messages (put_nowait, get,
    empty), without its three deques (~2.3 KB per socket). uvicorn pauses reading after
    each message until the app takes it, so it rarely holds more than one item."""

    __slots__ = ("_items", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._items: list[Any] = []
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    async def get(self) -> Any:
        while not self._items:
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class _Writable:
    """uvicorn's `writable` flag (an asyncio.Event: a deque and a dict) as two slots;
    a future exists only while a send waits on a paused transport."""

    __slots__ = ("_loop", "_set", "_waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = self._loop.create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter
        return True


class ParleyWebSocketProtocol(DirectWebSocketProtocol):
    """`DirectWebSocketProtocol` holding less per socket: the receive queue and the
    writable flag above instead of asyncio's, and the handshake's request/response
    objects (their header structures) dropped once the handshake is answered (the ASGI
    scope keeps its own copy of the request headers)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox(self.loop)  # type: ignore[assignment]
        self.writable = _Writable(self.loop)  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            self.response = None  # type: ignore[assignment]
            self.request = None  # type: ignore[assignment]
            _drop_handshake_parser(self.conn)


def _drop_handshake_parser(conn: Any) -> None:
    """websockets' ServerProtocol.parse() reads the HTTP request, then delegates to the
    frame parser for the socket's whole life, its generator frame keeping the parsed
    request (headers and all) alive. At a frame boundary with nothing buffered (always
    the case right after the 101: a client sends frames only once it has it), start the
    frame parser directly instead; the reader's state lives on `conn`, not in the frame."""
    outer = conn.parser
    inner = getattr(outer, "gi_yieldfrom", None)  # Protocol.parse()
    innermost = getattr(inner, "gi_yieldfrom", None)  # StreamReader.at_eof() between frames
    if innermost is None or getattr(innermost, "__name__", "") != "at_eof" or conn.reader.buffer:
        return
    parser = Protocol.parse(conn)
    next(parser)
    conn.parser = parser
    outer.close()


# settings.ws_protocol -> what `uvicorn.run(ws=...)` takes
WS_PROTOCOLS = {
    "parley": "realtime.uvicorn_ws:ParleyWebSocketProtocol",  # direct writes + lean (production)
    "direct": "realtime.uvicorn_ws:DirectWebSocketProtocol",  # direct writes, uvicorn's per-socket state
    "websockets-sansio": "websockets-sansio",
    "websockets": "websockets",
    "wsproto": "wsproto",
}


def uvicorn_ws(name: str) -> str:
    try:
        return WS_PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"WS_PROTOCOL must be one of {', '.join(WS_PROTOCOLS)}, not {name!r}") from None
