"""The WebSocket protocols on /graphql against a real uvicorn: handshake, authentication,
close codes, keep-alive, limits, and queries/mutations over the socket."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import update
from websockets.exceptions import InvalidStatus

from auth import tokens
from db import models
from tests.realtime import wsclient
from tests.realtime.wsclient import LEGACY, TRANSPORT, WS, LiveServer, StartServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

# The shared WebSocket fixtures (tests/realtime/wsclient.py), found by pytest here.
ws_backend = wsclient.ws_backend
start_server = wsclient.start_server

ME = "query { me { username } }"
START_DIRECT = "mutation($u: ID!) { startDirectConversation(userId: $u) { id } }"
TYPING = "subscription($c: ID!) { typing(conversationId: $c) { isTyping user { username } } }"
PROTOCOLS = [TRANSPORT, LEGACY]
LIMITS = {
    "ws_connection_init_timeout_seconds": 0.4,
    "ws_keepalive_seconds": 0.3,
    "max_subscriptions_per_socket": 3,
    "max_sockets_per_user": 3,
    "max_ws_message_bytes": 8192,
    "cors_origins": ("https://app.example",),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(start_server: StartServer) -> LiveServer:
    return await start_server(**LIMITS)


def data_kind(protocol: str) -> str:
    return "next" if protocol == TRANSPORT else "data"


def token_for(server: LiveServer, user: Any, *, issued_at: int | None = None, ttl: int | None = None) -> str:
    settings = server.settings
    token, _ = tokens.mint_access_token(
        settings.secret_key, user_id=user.id, session_id=user.session_id,
        ttl=ttl if ttl is not None else settings.access_token_ttl_seconds, issuer=settings.jwt_issuer,
        audience=settings.jwt_audience, issued_at=issued_at,
    )
    return token


# ----------------------------------------------------------------------------- init


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_authenticated_socket_answers_queries(server: LiveServer, protocol: str) -> None:
    # Given a user; when it opens a socket and sends connection_init with its token
    user = await server.user()
    ws = await server.ws(protocol=protocol)
    ack = await ws.init(user.token)
    assert ack == {"type": "connection_ack"}
    # then a query over the socket answers with data, then complete
    op = await ws.subscribe(ME)
    message = await ws.expect(data_kind(protocol), op)
    assert message["payload"] == {"data": {"me": {"username": user.username}}}
    assert await ws.expect("complete", op) == {"id": op, "type": "complete"}


@pytest.mark.parametrize(("key", "bearer"), [("authorization", False), ("Authorization", True)])
async def test_token_forms_accepted(server: LiveServer, key: str, bearer: bool) -> None:
    user = await server.user()
    ws = await server.ws()
    await ws.init(user.token, key=key, bearer=bearer)
    assert await ws.request(ME) == {"me": {"username": user.username}}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_bad_tokens_close_with_4403_and_the_reason(server: LiveServer, protocol: str) -> None:
    user = await server.user()
    expired = token_for(server, user, issued_at=int(time.time()) - 3600, ttl=60)
    revoked = await server.user()
    async with server.services.db.writer() as s, s.begin():
        await s.execute(
            update(models.AuthSession).where(models.AuthSession.id == revoked.session_id)
            .values(revoked_at=models.utcnow())
        )
    cases = [("garbage", "invalid token"), (expired, "expired token"), (revoked.token, "session revoked"),
             (None, "invalid token")]
    for token, reason in cases:
        ws = await server.ws(protocol=protocol)
        payload = {} if token is None else {"authorization": f"Bearer {token}"}
        await ws.send({"type": "connection_init", "payload": payload})
        if protocol == LEGACY:
            error = await ws.expect("connection_error")
            assert error["payload"] == {"message": reason, "extensions": {"code": "UNAUTHENTICATED"}}
        assert await ws.closed() == (4403, reason)
        assert not any(m["type"] == "connection_ack" for m in ws.messages)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_no_connection_init_in_time_closes_4408(server: LiveServer, protocol: str) -> None:
    ws = await server.ws(protocol=protocol)
    started = time.monotonic()
    assert await ws.closed() == (4408, "Connection initialisation timeout")
    assert 0.3 < time.monotonic() - started < 3


async def test_unknown_subprotocol_closes_4406(server: LiveServer) -> None:
    ws = await server.ws(protocol="graphql-something")
    assert (await ws.closed())[0] == 4406


# ------------------------------------------------------------------- protocol errors


async def test_protocol_violations_use_the_standard_close_codes(server: LiveServer) -> None:
    user = await server.user()
    # invalid JSON / unknown message type: 4400
    ws = await server.ws(user.token)
    await ws.conn.send("{not json")
    assert (await ws.closed())[0] == 4400
    ws = await server.ws(user.token)
    await ws.send({"type": "hello"})
    assert (await ws.closed())[0] == 4400
    # subscribe before ack: 4401
    ws = await server.ws()
    await ws.subscribe(ME)
    assert await ws.closed() == (4401, "Unauthorized")
    # a second connection_init: 4429
    ws = await server.ws(user.token)
    await ws.send({"type": "connection_init", "payload": {"authorization": user.token}})
    assert await ws.closed() == (4429, "Too many initialisation requests")


async def test_duplicate_operation_id_closes_4409(server: LiveServer) -> None:
    alice, bob = await server.user(), await server.user()
    conversation = (await server.gql(START_DIRECT, {"u": bob.gid}, token=alice.token))["startDirectConversation"]
    ws = await server.ws(alice.token)
    await ws.subscribe(TYPING, {"c": conversation["id"]}, op_id="same")
    await server.settle()
    await ws.subscribe(TYPING, {"c": conversation["id"]}, op_id="same")
    assert await ws.closed() == (4409, "Subscriber for same already exists")


async def test_message_over_the_size_cap_closes_1009(server: LiveServer) -> None:
    user = await server.user()
    ws = await server.ws(user.token)
    await ws.subscribe("query { me { username } } # " + "x" * 9000)
    assert (await ws.closed())[0] == 1009


# ---------------------------------------------------------------------- keep-alive


async def test_ping_pong_and_server_keepalive(server: LiveServer) -> None:
    user = await server.user()
    ws = await server.ws(user.token)
    await ws.send({"type": "ping", "payload": {"n": 1}})
    assert await ws.expect("pong", skip=("ping",)) == {"type": "pong", "payload": {"n": 1}}
    # the server pings every ws_keepalive_seconds
    assert await ws.expect("ping", within=2) == {"type": "ping"}
    await ws.send({"type": "pong"})
    assert await ws.expect("ping", within=2) == {"type": "ping"}


async def test_legacy_keepalive_is_ka(server: LiveServer) -> None:
    user = await server.user()
    ws = await server.ws(protocol=LEGACY)
    await ws.init(user.token)
    assert await ws.expect("ka", within=2) == {"type": "ka"}
    assert await ws.expect("ka", within=2) == {"type": "ka"}


# -------------------------------------------------------------------------- limits


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_subscription_cap_refuses_with_an_error_and_the_socket_stays(server: LiveServer, protocol: str) -> None:
    alice, bob = await server.user(), await server.user()
    conversation = (await server.gql(START_DIRECT, {"u": bob.gid}, token=alice.token))["startDirectConversation"]
    ws = await server.ws(protocol=protocol)
    await ws.init(alice.token)
    for _ in range(3):
        await ws.subscribe(TYPING, {"c": conversation["id"]})
    await server.settle()
    refused = await ws.subscribe(TYPING, {"c": conversation["id"]})
    error = await ws.error(refused)
    assert error["extensions"] == {"code": "FORBIDDEN", "limit": 3}
    # the socket stays usable: ending one makes room again
    await ws.complete("1")
    if protocol == LEGACY:
        await ws.expect("complete", "1")
    op = await ws.subscribe(ME)
    assert (await ws.expect(data_kind(protocol), op))["payload"]["data"] == {"me": {"username": alice.username}}


async def test_sockets_per_user_cap_closes_the_new_one_4429(server: LiveServer) -> None:
    user = await server.user()
    sockets = [await server.ws(user.token) for _ in range(3)]
    extra = await server.ws()
    await extra.send({"type": "connection_init", "payload": {"authorization": f"Bearer {user.token}"}})
    assert (await extra.closed())[0] == 4429
    # the others are untouched; closing one frees a slot
    await sockets[0].close()
    await asyncio.sleep(0.1)
    again = await server.ws(user.token)
    assert await again.request(ME) == {"me": {"username": user.username}}


async def test_origins(server: LiveServer) -> None:
    user = await server.user()
    # a browser on a foreign origin: the handshake is refused
    with pytest.raises(InvalidStatus) as refused:
        await WS.open(server.url, origin="https://evil.example")
    assert refused.value.response.status_code == 403
    # CORS_ORIGINS, the same origin, and non-browser clients (no Origin) are allowed
    for origin in ("https://app.example", f"http://127.0.0.1:{server.port}", None):
        ws = await server.ws(origin=origin)
        await ws.init(user.token)
        await ws.close()


# ------------------------------------------------------------------ operations


async def test_invalid_operations_get_error_messages_and_the_socket_stays(server: LiveServer) -> None:
    user = await server.user()
    ws = await server.ws(user.token)
    cases = [
        ("subscription { nope }", "GRAPHQL_VALIDATION_FAILED"),
        ("subscription {", "GRAPHQL_PARSE_FAILED"),
        ("query { me { username } } query Other { me { id } }", "GRAPHQL_VALIDATION_FAILED"),
    ]
    for query, code in cases:
        op = await ws.subscribe(query)
        assert (await ws.error(op))["extensions"]["code"] == code, query
    deep = "subscription { conversationUpdated { " + "lastMessage { conversation { " * 6 + "id" + " } }" * 6 + " } }"
    op = await ws.subscribe(deep)
    error = await ws.error(op)
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "depth" in error["message"]
    # refused before validation, as on HTTP (schema.limits.document_refusal)
    repeated = "subscription { conversationUpdated { " + "id " * 150 + "} }"
    op = await ws.subscribe(repeated)
    assert (await ws.error(op))["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    http = await server.raw("query { me { " + "id " * 150 + "} }", token=user.token)
    assert http["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert await ws.request(ME) == {"me": {"username": user.username}}


async def test_mutations_over_the_socket(server: LiveServer) -> None:
    alice, bob = await server.user(), await server.user()
    ws = await server.ws(alice.token)
    op = await ws.subscribe(START_DIRECT, {"u": bob.gid})
    conversation = (await ws.next(op))["startDirectConversation"]
    await ws.expect("complete", op)
    op = await ws.subscribe(
        "mutation($c: ID!) { sendMessage(input: {conversationId: $c, body: \"hi\"}) { body sender { username } } }",
        {"c": conversation["id"]},
    )
    assert await ws.next(op) == {"sendMessage": {"body": "hi", "sender": {"username": alice.username}}}
    await ws.expect("complete", op)
    # errors of an executed operation come in `next`, like on HTTP
    op = await ws.subscribe(
        "mutation($c: ID!) { sendMessage(input: {conversationId: $c, body: \"  \"}) { id } }", {"c": conversation["id"]}
    )
    message = await ws.expect("next", op)
    assert message["payload"]["data"] is None
    assert message["payload"]["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "body"}


async def test_rate_limits_apply_on_the_socket(start_server: StartServer) -> None:
    limited = await start_server(rate_limit_enabled=True, rate_limit_http_requests="3/minute",
                                 channel_prefix=f"rl-{time.monotonic_ns()}")
    user = await limited.user()
    ws = await limited.ws(user.token)
    for _ in range(3):
        await ws.request(ME)
    op = await ws.subscribe(ME)
    error = await ws.error(op)
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["retryAfter"] >= 1


# ---------------------------------------------------------------------- sessions


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_logout_closes_the_sessions_sockets_4403(server: LiveServer, protocol: str) -> None:
    user, other = await server.user(), await server.user()
    ws = await server.ws(protocol=protocol)
    await ws.init(user.token)
    bystander = await server.ws(other.token)
    assert await server.gql("mutation { logout }", token=user.token) == {"logout": True}
    assert await ws.closed() == (4403, "session revoked")
    assert await bystander.request(ME) == {"me": {"username": other.username}}


async def test_missed_revocation_is_caught_by_the_session_sweep(start_server: StartServer) -> None:
    swept = await start_server(session_touch_interval_seconds=1)
    user = await swept.user()
    ws = await swept.ws(user.token)
    # revoked in the database without an event (as if the hub had lost it)
    async with swept.services.db.writer() as s, s.begin():
        await s.execute(
            update(models.AuthSession).where(models.AuthSession.id == user.session_id)
            .values(revoked_at=models.utcnow())
        )
    assert await ws.closed(within=3) == (4403, "session revoked")
