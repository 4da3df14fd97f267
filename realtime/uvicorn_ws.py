"""uvicorn's sans-I/O WebSocket protocol, plus a direct text-frame write for fan-out.

`ParleyWebSocketProtocol` is passed as `ws=` to `uvicorn.run` (server.py). It behaves
exactly like uvicorn's `websockets-sansio` implementation (handshake, reads, pings,
close handshake, ASGI `send`/`receive`), and additionally puts itself in the ASGI scope
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
"""
from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from realtime.transport import DIRECT_SEND, text_frame_header


class ParleyWebSocketProtocol(WebSocketsSansIOProtocol):
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


class LeanWebSocketProtocol(ParleyWebSocketProtocol):
    """`ParleyWebSocketProtocol` holding less per socket: the receive queue and the
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


# settings.ws_protocol -> what `uvicorn.run(ws=...)` takes
WS_PROTOCOLS = {
    "parley": "realtime.uvicorn_ws:ParleyWebSocketProtocol",
    "lean": "realtime.uvicorn_ws:LeanWebSocketProtocol",
    "websockets-sansio": "websockets-sansio",
    "websockets": "websockets",
    "wsproto": "wsproto",
}


def uvicorn_ws(name: str) -> str:
    try:
        return WS_PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"WS_PROTOCOL must be one of {', '.join(WS_PROTOCOLS)}, not {name!r}") from None
