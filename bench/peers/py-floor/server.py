#!/usr/bin/env python3
"""Python floor: the least work a *Python* server can do for the fan-out.

The same contract as peers/ws-floor/server.mjs (Node `ws`), on asyncio (+ uvloop when
installed) with no framework at all: a hand-written HTTP/1.1 keep-alive parser, the
WebSocket handshake, unmasking of client frames, and per event ONE pre-serialised
`next` frame written to every subscribed socket with one `transport.write` each.
No GraphQL, no ASGI, no websockets library.

What it answers: how much of Parley's CPU per delivery is Python + the kernel's
per-socket write, i.e. what no amount of work on Parley's own code can remove while
it stays on one CPython event loop.

Env: HOST (default 127.0.0.1), PORT (default 0). Run: python bench/peers/py-floor/server.py
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import time
import uuid

try:
    import orjson

    dumps = orjson.dumps
except ImportError:  # pragma: no cover
    def dumps(obj):  # type: ignore[no-redef]
        return json.dumps(obj, separators=(",", ":")).encode()

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
subscribers: dict[str, dict[Conn, str]] = {}  # conversation -> {conn: subscription id}
cursor_seq = 0


def frame_header(n: int, opcode: int = 0x1) -> bytes:
    first = 0x80 | opcode
    if n < 126:
        return bytes((first, n))
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big")
    return bytes((first, 127)) + n.to_bytes(8, "big")


def iso_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def new_event(conversation_id: str, token: str, body: str, client_message_id: str | None) -> dict:
    global cursor_seq
    cursor_seq += 1
    message = {
        "id": str(uuid.uuid4()),
        "conversation": {"id": conversation_id, "kind": "GROUP", "title": "floor"},
        "sender": {"id": f"u-{token[-12:]}", "username": "floor", "displayName": "Floor Sender"},
        "body": body,
        "clientMessageId": client_message_id,
        "createdAt": iso_now(),
        "editedAt": None,
        "deletedAt": None,
        "isDeleted": False,
        "editHistory": [],
        "attachments": [],
        "mentions": [],
    }
    cursor = base64.urlsafe_b64encode(f"{conversation_id}:{cursor_seq}".encode()).rstrip(b"=").decode()
    return {"kind": "ADDED", "message": message, "cursor": cursor}


def http_response(status: str, payload: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n"
        "connection: keep-alive\r\n\r\n"
    ).encode() + payload


class Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.ws = False
        self.acked = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        for subs in subscribers.values():
            subs.pop(self, None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.ws:
            self.ws_frames()
        else:
            self.http_requests()

    # HTTP -----------------------------------------------------------------------
    def http_requests(self) -> None:
        while not self.ws:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ", 2)
            headers = {}
            for line in head[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            if headers.get("upgrade", "").lower() == "websocket":
                self.upgrade(headers)
                if self.buf:
                    self.ws_frames()
                return
            self.http(method, path.split("?")[0], headers, body)

    def upgrade(self, headers: dict[str, str]) -> None:
        assert self.transport is not None
        accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest()).decode()
        protocols = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
        extra = "Sec-WebSocket-Protocol: graphql-transport-ws\r\n" if "graphql-transport-ws" in protocols else ""
        self.transport.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
            ).encode()
        )
        self.ws = True

    def http(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        assert self.transport is not None
        if path == "/health":
            self.transport.write(http_response("200 OK", b'{"ok":true}'))
            return
        try:
            req = json.loads(body) if body else {}
            variables = req.get("variables") or {}
            inp = variables.get("input") or req.get("input") or req
            conversation_id = inp["conversationId"]
        except (ValueError, KeyError, TypeError, AttributeError):
            self.transport.write(http_response("400 Bad Request", b'{"errors":[{"message":"bad request"}]}'))
            return
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else (auth or "anonymous")
        event = new_event(conversation_id, token, str(inp.get("body") or ""), inp.get("clientMessageId"))
        delivered = 0
        subs = subscribers.get(conversation_id)
        if subs:
            payload = dumps({"data": {"messageEvents": event}})
            frames: dict[str, bytes] = {}
            for conn, sub_id in list(subs.items()):
                frame = frames.get(sub_id)
                if frame is None:
                    data = b'{"id":' + dumps(sub_id) + b',"type":"next","payload":' + payload + b"}"
                    frame = frames[sub_id] = frame_header(len(data)) + data
                t = conn.transport
                if t is not None and not t.is_closing():
                    t.write(frame)
                    delivered += 1
        m = event["message"]
        reply = {"data": {"sendMessage": {"id": m["id"], "clientMessageId": m["clientMessageId"],
                                          "createdAt": m["createdAt"]}}, "extensions": {"delivered": delivered}}
        self.transport.write(http_response("200 OK", dumps(reply)))

    # WebSocket ------------------------------------------------------------------
    def send_text(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(frame_header(len(data)) + data)

    def close(self, code: int, reason: str) -> None:
        assert self.transport is not None
        payload = code.to_bytes(2, "big") + reason.encode()
        self.transport.write(frame_header(len(payload), 0x8) + payload)
        self.transport.close()

    def ws_frames(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            opcode = buf[0] & 0x0F
            n = buf[1] & 0x7F
            masked = buf[1] & 0x80
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = int.from_bytes(buf[2:10], "big")
                pos = 10
            if len(buf) < pos + (4 if masked else 0) + n:
                return
            if masked:
                mask = buf[pos : pos + 4]
                pos += 4
                raw = bytes(buf[pos : pos + n])
                key = int.from_bytes((mask * (n // 4 + 1))[:n], "big") if n else 0
                payload = (int.from_bytes(raw, "big") ^ key).to_bytes(n, "big") if n else b""
            else:
                payload = bytes(buf[pos : pos + n])
            del buf[: pos + n]
            if opcode == 0x1:
                self.on_text(payload)
            elif opcode == 0x8:
                self.close(1000, "")
                return
            elif opcode == 0x9:
                assert self.transport is not None
                self.transport.write(frame_header(len(payload), 0xA) + payload)

    def on_text(self, raw: bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            self.close(4400, "Invalid message received")
            return
        kind = msg.get("type")
        if kind == "connection_init":
            if self.acked:
                self.close(4429, "Too many initialisation requests")
                return
            p = msg.get("payload") or {}
            if not (p.get("authorization") or p.get("Authorization")):
                self.close(4403, "invalid token")
                return
            self.acked = True
            self.send_text(b'{"type":"connection_ack"}')
        elif kind == "subscribe":
            if not self.acked:
                self.close(4401, "Unauthorized")
                return
            v = (msg.get("payload") or {}).get("variables") or {}
            conv = str(v.get("c") or v.get("conversationId") or next(iter(v.values()), ""))
            subscribers.setdefault(conv, {})[self] = str(msg.get("id"))
        elif kind == "complete":
            for subs in subscribers.values():
                subs.pop(self, None)
        elif kind == "ping":
            self.send_text(b'{"type":"pong"}')


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "0")))
    host, port = server.sockets[0].getsockname()[:2]
    print(f"py floor listening on http://{host}:{port}/graphql pid={os.getpid()} loop={type(loop).__module__}",
          flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
