"""The direct send path (realtime/uvicorn_ws.py + realtime/transport.py) under a real
uvicorn: text frames bypass the ASGI send, real clients accept them, lengths of every
header class are framed right, order with ASGI-path frames holds, and a socket that
stops reading is shed with RESUME_REQUIRED while its buffer stays bounded."""
from __future__ import annotations

import asyncio
import socket
from typing import Any

import orjson
import pytest

from realtime.transport import DIRECT_SEND, direct_sender, text_frame_header
from realtime.uvicorn_ws import ParleyWebSocketProtocol
from tests.realtime import wsclient
from tests.realtime.test_ws_e2e import NodeClient, _conversation, node  # noqa: F401 (fixture)
from tests.realtime.wsclient import WS, LiveServer, StartServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

ws_backend = wsclient.ws_backend
start_server = wsclient.start_server
live_server = wsclient.live_server

START_DIRECT = "mutation($u: ID!) { startDirectConversation(userId: $u) { id } }"
SEND = "mutation($c: ID!, $b: String!) { sendMessage(input: {conversationId: $c, body: $b}) { id } }"
EVENTS = "subscription($c: ID!) { messageEvents(conversationId: $c) { kind cursor message { id body } } }"


class Spy:
    """Counts what one server-side socket writes, by path."""

    def __init__(self, protocol: ParleyWebSocketProtocol) -> None:
        self.protocol = protocol
        self.direct: list[bytes] = []
        self.asgi: list[dict[str, Any]] = []
        write_text, send = protocol.write_text, protocol.send

        def spy_write(payload: bytes) -> bool:
            self.direct.append(payload)
            return write_text(payload)

        async def spy_send(message: Any) -> None:
            self.asgi.append(message)
            await send(message)

        protocol.write_text = spy_write  # type: ignore[method-assign]
        protocol.send = spy_send  # type: ignore[method-assign]


def server_protocol(server: LiveServer, client: WS) -> Any:
    port = client.conn.local_address[1]
    for protocol in server.uvicorn.server_state.connections:
        if protocol.client and protocol.client[1] == port:
            return protocol
    raise LookupError(port)


def server_connection(server: LiveServer, client: WS) -> Any:
    port = client.conn.local_address[1]
    return next(c for c in server.handler.connections if c.ws.scope["client"][1] == port)


async def direct_pair(server: LiveServer) -> tuple[Any, Any, str]:
    alice, bob = await server.user(), await server.user()
    cid = (await server.gql(START_DIRECT, {"u": bob.gid}, token=alice.token))["startDirectConversation"]["id"]
    return alice, bob, cid


async def test_text_frame_header_lengths() -> None:
    assert text_frame_header(0) == b"\x81\x00"
    assert text_frame_header(125) == b"\x81\x7d"
    assert text_frame_header(126) == b"\x81\x7e\x00\x7e"
    assert text_frame_header(65535) == b"\x81\x7e\xff\xff"
    assert text_frame_header(65536) == b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"


async def test_no_extension_means_the_asgi_path() -> None:
    assert direct_sender({"extensions": {}}) is None
    assert direct_sender({}) is None
    assert direct_sender({"extensions": {DIRECT_SEND: object()}}) is None  # not a sender


async def test_every_text_frame_of_a_socket_goes_through_the_direct_write(live_server: LiveServer) -> None:
    alice, bob, cid = await direct_pair(live_server)
    client = await live_server.ws(bob.token)
    connection = server_connection(live_server, client)
    protocol = server_protocol(live_server, client)
    assert isinstance(protocol, ParleyWebSocketProtocol)
    assert connection._direct is protocol  # the scope extension was found after accept
    spy = Spy(protocol)

    op = await client.subscribe(EVENTS, {"c": cid})
    await live_server.settle()
    await client.send({"type": "ping"})
    assert (await client.expect("pong", skip=()))["type"] == "pong"
    for i in range(3):
        await live_server.gql(SEND, {"c": cid, "b": f"m{i}"}, token=alice.token)
    bodies = [(await client.next(op))["messageEvents"]["message"]["body"] for _ in range(3)]
    assert bodies == ["m0", "m1", "m2"]
    query = await client.request("{ me { username } }")
    assert query == {"me": {"username": bob.username}}

    # pong, three events, the query's next and complete: all direct, nothing through ASGI
    assert [orjson.loads(f)["type"] for f in spy.direct] == ["pong", "next", "next", "next", "next", "complete"]
    assert spy.asgi == []


async def test_frames_of_every_length_class_reach_a_strict_client(live_server: LiveServer) -> None:
    _, bob, _ = await direct_pair(live_server)
    client = await live_server.ws(bob.token)
    protocol = server_protocol(live_server, client)
    for size in (0, 1, 125, 126, 127, 65535, 65536, 70_000):
        filler = "é" * (size // 2) + "x" * (size % 2)  # multi-byte UTF-8 too
        payload = orjson.dumps({"type": "pong", "payload": {"f": filler}})
        assert protocol.write_text(payload)
        raw = await asyncio.wait_for(client.conn.recv(), 5)
        assert raw == payload.decode(), size


async def test_direct_frames_and_the_asgi_close_keep_their_order(live_server: LiveServer) -> None:
    alice, bob, cid = await direct_pair(live_server)
    client = await live_server.ws(bob.token)
    op = await client.subscribe(EVENTS, {"c": cid})
    await live_server.settle()
    connection = server_connection(live_server, client)
    for i in range(5):
        await live_server.gql(SEND, {"c": cid, "b": f"before close {i}"}, token=alice.token)
    connection.close(4499, "test close")  # the close frame goes through uvicorn's ASGI path
    bodies = [(await client.next(op))["messageEvents"]["message"]["body"] for _ in range(5)]
    assert bodies == [f"before close {i}" for i in range(5)]
    assert await client.closed() == (4499, "test close")


async def test_graphql_ws_client_accepts_direct_frames(
    live_server: LiveServer, node: str, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    alice, bob, cid = await _conversation(live_server)
    _, _, foreign = await _conversation(live_server)
    direct: list[bytes] = []
    asgi: list[Any] = []
    write_text, send = ParleyWebSocketProtocol.write_text, ParleyWebSocketProtocol.send

    def spy_write(self: ParleyWebSocketProtocol, payload: bytes) -> bool:
        direct.append(payload)
        return write_text(self, payload)

    async def spy_send(self: ParleyWebSocketProtocol, message: Any) -> None:
        asgi.append(message)
        await send(self, message)

    # class-wide: the lazy graphql-ws client opens a new socket for each phase
    monkeypatch.setattr(ParleyWebSocketProtocol, "write_text", spy_write)
    monkeypatch.setattr(ParleyWebSocketProtocol, "send", spy_send)
    engine = live_server.handler.engine
    baseline = engine.subscribers  # this module's server keeps earlier tests' subscriptions
    client = await NodeClient.start(node, "graphql-ws", url=live_server.url, token=bob.token, conversationId=cid,
                                    foreignConversationId=foreign, count=4)
    await client.until("subscribed")
    for _ in range(500):
        if engine.subscribers > baseline:
            break
        await asyncio.sleep(0.01)
    await live_server.settle()
    for i in range(4):
        await live_server.gql(SEND, {"c": cid, "b": f"hello {i}"}, token=alice.token)
    lines = await client.finish()
    events = [line["result"]["data"]["messageEvents"]["message"]["body"] for line in lines if line["at"] == "event"]
    assert events == [f"hello {i}" for i in range(4)]
    frames = [orjson.loads(f) for f in direct]
    assert [f["payload"]["data"]["messageEvents"]["message"]["body"] for f in frames if f["type"] == "next"
            and "messageEvents" in f["payload"]["data"]] == [f"hello {i}" for i in range(4)]
    assert {f["type"] for f in frames} >= {"connection_ack", "next", "error", "complete"}
    assert not [m for m in asgi if m.get("type") == "websocket.send"]
    assert [m["type"] for m in asgi if m["type"] != "websocket.close"] == ["websocket.accept"] * len(
        [m for m in asgi if m["type"] == "websocket.accept"]
    )


async def test_asgi_fallback_under_plain_uvicorn(start_server: StartServer) -> None:
    server = await start_server(ws_protocol="websockets-sansio")
    alice, bob, cid = await direct_pair(server)
    client = await server.ws(bob.token)
    assert server_connection(server, client)._direct is None
    op = await client.subscribe(EVENTS, {"c": cid})
    await server.settle()
    await server.gql(SEND, {"c": cid, "b": "through asgi"}, token=alice.token)
    assert (await client.next(op))["messageEvents"]["message"]["body"] == "through asgi"


async def test_a_socket_that_stops_reading_is_shed_and_its_buffer_stays_bounded(start_server: StartServer) -> None:
    high_water = 32_000
    server = await start_server(ws_send_high_water_bytes=high_water)
    alice, bob, cid = await direct_pair(server)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.port))
    from websockets.asyncio.client import connect

    conn = await connect(server.url, sock=raw, subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                         compression=None, max_queue=1, ping_interval=None, close_timeout=1)
    slow = WS(conn, "graphql-transport-ws")
    server.sockets.append(slow)
    await slow.init(bob.token)
    protocol = server_protocol(server, slow)
    protocol.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    op = await slow.subscribe(EVENTS, {"c": cid})
    await server.settle()
    engine = server.handler.engine
    body = "y" * 5000
    frame_bound = high_water + 2 * len(body) + 1000  # the limit plus the frame that found it full
    peak = sent = 0
    # the client reads nothing while this runs (its 1-message queue and the tiny buffers fill)
    while engine.ended_slow == 0 and sent < 300:
        await server.gql(SEND, {"c": cid, "b": body}, token=alice.token)
        sent += 1
        peak = max(peak, protocol.write_buffer_size())
    assert engine.ended_slow == 1, "the slow socket was never shed"
    assert peak <= frame_bound, f"the server buffered {peak} bytes for a socket that does not read"
    for _ in range(20):  # nothing more is queued for the shed subscription
        await server.gql(SEND, {"c": cid, "b": body}, token=alice.token)
    assert protocol.write_buffer_size() <= frame_bound
    seen = 0
    while True:
        message = await slow.receive(within=5)
        if message["type"] == "error":
            assert message["id"] == op
            assert message["payload"][0]["extensions"]["code"] == "RESUME_REQUIRED"
            break
        seen += message["type"] == "next"
    assert 0 < seen < sent
