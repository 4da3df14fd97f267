"""The direct send path's contract, shared by the ASGI server side and realtime.connection.

An ASGI server that can write ready WebSocket text frames straight to a socket's
transport publishes an object in `scope["extensions"][DIRECT_SEND]` with:

- `write_text(payload: bytes) -> bool`: write one complete text frame carrying
  `payload` (UTF-8) now, in order with everything written before; False when the
  socket is closing (the frame is dropped);
- `write_buffer_size() -> int`: bytes accepted but not yet taken by the kernel.

`realtime.uvicorn_ws.ParleyWebSocketProtocol` is the implementation for uvicorn.
Under any other server (or a test client) the extension is absent and the send path
uses the ASGI `send` as before.

`WebSocketShortcut` routes the GraphQL WebSocket past the app's HTTP-only layers
(memory per socket). Standard library only (starlette lazily, in the shortcut).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

DIRECT_SEND = "parley.ws.direct_send"


class DirectSend(Protocol):
    def write_text(self, payload: bytes) -> bool: ...

    def write_buffer_size(self) -> int: ...


def direct_sender(scope: Mapping[str, Any]) -> DirectSend | None:
    """The scope's direct send extension, if the server offers one."""
    extensions = scope.get("extensions") or {}
    sender = extensions.get(DIRECT_SEND)
    if sender is None or not callable(getattr(sender, "write_text", None)):
        return None
    return sender


def text_frame_header(length: int) -> bytes:
    """The header of an unmasked FIN text frame carrying `length` payload bytes
    (server-to-client frames are never masked, RFC 6455 section 5.1)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    return b"\x81\x7f" + length.to_bytes(8, "big")


class WebSocketShortcut:
    """ASGI middleware (put it first in the app's middleware list): a WebSocket to
    `path` goes straight to `endpoint(WebSocket)`, skipping the layers below it.

    Every layer an ASGI call passes through stays suspended for the socket's whole life
    (a coroutine frame, plus the wrapped `send` closures some of them create): with
    Starlette's exception middleware, router and route wrappers and our HTTP-only
    middlewares (security headers, CORS: both pass WebSocket scopes through unchanged)
    that was ~3-5 KB per socket for no work. HTTP and every other path are untouched.
    """

    def __init__(self, app: Any, *, path: str, endpoint: Any) -> None:
        self.app = app
        self.path = path
        self.endpoint = endpoint

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):]
            if path == self.path:
                from starlette.websockets import WebSocket

                await self.endpoint(WebSocket(scope, receive=receive, send=send))
                return
        await self.app(scope, receive, send)
