"""Real servers and a real client for the WebSocket tests.

- `live_server` / `start_server(**overrides)`: the app from `create_app(settings)` under a
  real uvicorn on a free port, in-process (`uvicorn.Server(config).serve()` as a task),
  with the production WebSocket options (websockets-sansio, permessage-deflate off,
  the message size cap); tables are emptied once it is up.
- `spawn_instance(...)`: `python server.py serve` as a subprocess (multi-instance tests).
- `WS`: a small graphql-transport-ws / legacy graphql-ws client over the `websockets`
  library, with `expect*` helpers that fail fast with what actually arrived.

Test modules import the fixtures from here (`from tests.realtime.wsclient import ...`).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from settings import Settings
from tests.conftest import _empty_tables, _services_skip_reason, make_settings
from tests.factories import TestUser, create_user

REPO = Path(__file__).resolve().parents[2]
TRANSPORT = "graphql-transport-ws"
LEGACY = "graphql-ws"
TIMEOUT = 5.0
# What server.py's `serve` runs: uvicorn's sans-I/O protocol plus direct frame writes.
WS_PROTOCOL = "realtime.uvicorn_ws:ParleyWebSocketProtocol"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------ client


class WS:
    """One GraphQL WebSocket; `messages` collects everything received in order."""

    def __init__(self, conn: ClientConnection, protocol: str) -> None:
        self.conn = conn
        self.protocol = protocol
        self.messages: list[dict[str, Any]] = []
        self._ids = 0
        self.sent_operations = 0

    @classmethod
    async def open(
        cls, url: str, *, protocol: str = TRANSPORT, origin: str | None = None, headers: dict[str, str] | None = None,
        max_size: int | None = 16 * 1024 * 1024,
    ) -> WS:
        conn = await connect(
            url, subprotocols=[protocol],  # type: ignore[list-item]
            origin=origin,  # type: ignore[arg-type]
            additional_headers=headers, compression=None, max_size=max_size, open_timeout=TIMEOUT,
            ping_interval=None, close_timeout=2,
            max_queue=None,  # unread keep-alives must not stall the client's reads (and its close)
        )
        return cls(conn, protocol)

    async def send(self, message: dict[str, Any]) -> None:
        await self.conn.send(orjson.dumps(message).decode())

    async def init(self, token: str | None, *, key: str = "authorization", bearer: bool = True) -> dict[str, Any]:
        payload = {} if token is None else {key: f"Bearer {token}" if bearer else token}
        await self.send({"type": "connection_init", "payload": payload})
        return await self.expect("connection_ack")

    def new_id(self) -> str:
        self._ids += 1
        return str(self._ids)

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None, *, op_id: str | None = None,
                        operation_name: str | None = None) -> str:
        op_id = op_id or self.new_id()
        kind = "subscribe" if self.protocol == TRANSPORT else "start"
        payload: dict[str, Any] = {"query": query, "variables": variables or {}}
        if operation_name:
            payload["operationName"] = operation_name
        await self.send({"id": op_id, "type": kind, "payload": payload})
        self.sent_operations += 1
        return op_id

    async def complete(self, op_id: str) -> None:
        await self.send({"id": op_id, "type": "complete" if self.protocol == TRANSPORT else "stop"})

    async def receive(self, within: float = TIMEOUT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.conn.recv(), within)
        message: dict[str, Any] = orjson.loads(raw)
        self.messages.append(message)
        return message

    async def expect(self, kind: str, op_id: str | None = None, within: float = TIMEOUT,
                     skip: tuple[str, ...] = ("ping", "ka", "pong")) -> dict[str, Any]:
        """The next message that is not a keep-alive; it must be `kind` (and `op_id`)."""
        deadline = time.monotonic() + within
        while True:
            message = await self.receive(max(0.01, deadline - time.monotonic()))
            if message.get("type") in skip and kind not in skip:
                continue
            assert message.get("type") == kind, f"expected {kind}, got {message}"
            if op_id is not None:
                assert message.get("id") == op_id, f"expected id {op_id}, got {message}"
            return message

    async def next(self, op_id: str, within: float = TIMEOUT) -> dict[str, Any]:
        """The payload of the next data message of `op_id` (no errors inside)."""
        kind = "next" if self.protocol == TRANSPORT else "data"
        message = await self.expect(kind, op_id, within)
        payload: dict[str, Any] = message["payload"]
        assert "errors" not in payload, payload
        return payload["data"]

    async def request(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """A query or mutation over the socket: its data, then the complete."""
        op_id = await self.subscribe(query, variables)
        data = await self.next(op_id)
        await self.expect("complete", op_id)
        return data

    async def error(self, op_id: str, within: float = TIMEOUT) -> dict[str, Any]:
        """The first error of an `error` message for `op_id`."""
        message = await self.expect("error", op_id, within)
        payload = message["payload"]
        return payload[0] if isinstance(payload, list) else payload

    async def silent(self, seconds: float = 0.3) -> None:
        """Assert that nothing but keep-alives arrives for `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = await self.receive(left)
            except TimeoutError:
                return
            assert message.get("type") in ("ping", "ka", "pong"), f"unexpected {message}"

    async def closed(self, within: float = TIMEOUT) -> tuple[int, str]:
        """Wait for the server's close; (code, reason)."""
        deadline = time.monotonic() + within
        try:
            while True:
                await self.receive(max(0.01, deadline - time.monotonic()))
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return exc.rcvd.code, exc.rcvd.reason

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.conn.close()


# ------------------------------------------------------------------------------ server


@dataclass
class LiveServer:
    app: Any
    settings: Settings
    port: int
    http: httpx.AsyncClient
    uvicorn: uvicorn.Server
    sockets: list[WS] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    @property
    def services(self) -> Any:
        return self.app.state.parley.services

    async def ws(self, token: str | None = None, *, protocol: str = TRANSPORT, **kw: Any) -> WS:
        """A socket, initialised (acked) when `token` is given."""
        client = await WS.open(self.url, protocol=protocol, **kw)
        self.sockets.append(client)
        if token is not None:
            await client.init(token)
        return client

    async def gql(self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None) -> Any:
        """POST over real HTTP; the data (asserts no errors)."""
        body = await self.raw(query, variables, token=token)
        assert not body.get("errors"), body
        return body["data"]

    async def raw(self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await self.http.post("/graphql", json={"query": query, "variables": variables or {}},
                                        headers=headers)
        return response.json()

    async def user(self, name: str | None = None, *, admin: bool = False, display_name: str | None = None) -> TestUser:
        return await create_user(self.app, name, admin=admin, display_name=display_name)

    def server_transport(self, client_port: int) -> Any:
        """The server side of the TCP connection from `client_port` (to constrain it)."""
        for protocol in self.uvicorn.server_state.connections:
            if protocol.client and protocol.client[1] == client_port:
                return protocol.transport
        raise LookupError(client_port)

    @property
    def handler(self) -> Any:
        return self.services.extras["ws"]

    async def settle(self, within: float = TIMEOUT) -> None:
        """Wait until every operation of this server is set up and every subscription
        live (positioned ones done replaying): the graphql-ws protocol has no
        "subscribed" acknowledgement, so tests ask the server itself."""
        from realtime.fanout import Subscriber

        deadline = time.monotonic() + within
        while True:
            busy = False
            by_port = {c.ws.scope["client"][1]: c for c in self.handler.connections}
            for client in self.sockets:
                server_side = by_port.get(client.conn.local_address[1])
                if server_side is not None and server_side.received < client.sent_operations:
                    busy = True  # not all of its operations have arrived yet
            for connection in self.handler.connections:
                for op in connection.ops.values():
                    if not isinstance(op, Subscriber):
                        busy = True
                    elif (op.source.positioned and op.filling) or (not op.source.positioned and not op.ready):
                        busy = True
            if not busy:
                return
            assert time.monotonic() < deadline, "subscriptions did not settle"
            await asyncio.sleep(0.01)


async def _serve(
    settings: Settings, ws_protocol: str = WS_PROTOCOL
) -> tuple[uvicorn.Server, asyncio.Task[None], Any, int]:
    from server import create_app

    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(  # the WebSocket options of server.py's `serve`
        app, host="127.0.0.1", port=port, ws=ws_protocol, ws_per_message_deflate=False,
        ws_max_size=settings.max_ws_message_bytes, lifespan="on", log_level="warning",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 15
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped during startup")
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        await asyncio.sleep(0.01)
    return server, task, app, port


StartServer = Callable[..., Awaitable[LiveServer]]
BACKENDS = ("embedded", "services")


@pytest.fixture(scope="module", params=BACKENDS)
def ws_backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """Like tests/conftest.py's `backend`, but per module (one server serves a module):
    (backend, PostgreSQL URL or None)."""
    if request.param == "services":
        reason = _services_skip_reason()
        if reason:
            pytest.skip(reason)
        return "services", request.getfixturevalue("pg_database_url")
    return "embedded", None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def start_server(
    ws_backend: tuple[str, str | None], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[StartServer]:
    """`await start_server(**settings_overrides)`: a LiveServer, stopped when the module
    ends. Several may run at once (one database; the first empties the tables).
    `ws_protocol="websockets-sansio"` runs plain uvicorn (no direct frame writes)."""
    backend, pg_url = ws_backend
    data_dir = tmp_path_factory.mktemp("ws-data")
    running: list[tuple[uvicorn.Server, asyncio.Task[None], LiveServer]] = []

    shared_prefix = f"parley-ws-{secrets.token_hex(4)}"  # every instance of this module shares it

    async def start(*, ws_protocol: str = WS_PROTOCOL, **overrides: Any) -> LiveServer:
        overrides.setdefault("prefix", shared_prefix)
        settings = make_settings(backend, data_dir, pg_url, **overrides)
        server, task, app, port = await _serve(settings, ws_protocol)
        if not running:
            await _empty_tables(app)
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT)
        live = LiveServer(app, settings, port, http, server)
        running.append((server, task, live))
        return live

    yield start
    for server, _task, live in reversed(running):
        await asyncio.gather(*(client.close() for client in live.sockets))
        await live.http.aclose()
        server.should_exit = True
    for _server, task, _live in running:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live_server(start_server: StartServer) -> LiveServer:
    """The module's server with default settings."""
    return await start_server()


# -------------------------------------------------------------------- subprocess server


@dataclass
class Instance:
    """`python server.py serve` in a subprocess."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def _launch(env: dict[str, str], data_dir: Path) -> Instance:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"server-{port}.log"
    full = {**os.environ, **env, "HOST": "127.0.0.1", "PORT": str(port), "DATA_DIR": str(data_dir),
            "LOG_LEVEL": "warning", "PARLEY_ENV": "test"}
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "server.py", "serve"], cwd=REPO, env=full, stdout=log_file, stderr=subprocess.STDOUT,
        )
    return Instance(process, port, log_path)


async def spawn_instance(env: dict[str, str], data_dir: Path) -> Instance:
    """Start `python server.py serve` with `env` and wait until /readyz answers 200."""
    instance = _launch(env, data_dir)
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient(timeout=1.0) as client:
        while True:
            if instance.process.poll() is not None:
                raise RuntimeError(f"instance exited: {instance.log()}")
            try:
                response = await client.get(f"{instance.http_url}/readyz")
                if response.status_code == 200:
                    return instance
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                instance.stop()
                raise RuntimeError(f"instance did not become ready: {instance.log()}")
            await asyncio.sleep(0.05)


# ------------------------------------------------------------ operations the realtime tests share

CREATE_GROUP = (
    "mutation($n: String!, $m: [ID!]) { createGroup(input: {name: $n, memberIds: $m}) "
    "{ id conversation { id eventCursor } } }"
)
SEND = "mutation($c: ID!, $b: String!) { sendMessage(input: {conversationId: $c, body: $b}) { id } }"
REMOVE = "mutation($g: ID!, $u: ID!) { removeGroupMember(groupId: $g, userId: $u) { id } }"


async def create_group(server: Any, owner: Any, *members: Any) -> dict[str, Any]:
    """A group of `owner` with `members` (TestUsers), through the API: its id and conversation."""
    data = await server.gql(CREATE_GROUP, {"n": "g", "m": [m.gid for m in members]}, token=owner.token)
    return dict(data["createGroup"])
