"""GraphQL over WebSocket for `/graphql`: both subprotocols, one process-wide service.

`GraphQLWebSocket` is the async handler server.py's WebSocketRoute calls (built by
`realtime.wiring`'s `ws_handler_factory`). It owns what is shared by every socket of
this instance: the fan-out engine (`realtime.fanout.Engine`), the registry of sockets by
session and by user (revocations close sockets on every instance through the `session`
channel; the sockets-per-user cap), and a periodic session sweep that closes sockets
whose session expired or whose revocation was missed while the hub was away, and keeps
the sessions of open sockets active (a socket lives as long as its session, not its
access token). Per-socket protocol handling is `realtime.connection.Connection`.

It imports nothing of the database or schema layers: the wiring hands it the Strawberry
schema and callables (authenticate, context factory, error formatting, limit rules,
session check).
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
from graphql import GraphQLError, validate
from starlette.websockets import WebSocket

from errors import Unauthenticated
from realtime.connection import Connection
from realtime.events import SESSION_CHANNEL
from realtime.fanout import Engine
from realtime.live import SharedReads

log = logging.getLogger("parley.realtime.ws")

Authenticate = Callable[[str], Awaitable[Any]]
CheckSessions = Callable[[Sequence[int]], Awaitable[set[int]]]
# (schema, document, query text, variables) -> the operation-limit errors (cached by the caller's side)
LimitErrors = Callable[[Any, Any, str, dict[str, Any] | None], list[GraphQLError]]


AUTH_REUSE_SECONDS = 5.0  # how long one token check admits further sockets with that token
AUTH_REUSE_MAX = 10_000  # tokens remembered at once


def _token_expiry(token: str) -> float | None:
    """The `exp` claim of a token `authenticate` has just verified (None if unreadable)."""
    try:
        segment = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
        expires = claims.get("exp") if isinstance(claims, dict) else None
        return float(expires) if isinstance(expires, (int, float)) else None
    except (IndexError, ValueError, TypeError, orjson.JSONDecodeError):
        return None


def bearer(raw: str) -> str | None:
    value = raw.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None


class GraphQLWebSocket:
    def __init__(
        self,
        *,
        strawberry: Any,
        services: Any,
        hub: Any,
        authenticate: Authenticate,
        make_context: Callable[[Any, Any], Any],
        format_errors: Callable[[list[GraphQLError], Any], list[dict[str, Any]]],
        limit_rules: Callable[[dict[str, Any] | None], list[Any]],
        limit_errors: LimitErrors | None = None,
        check_sessions: CheckSessions | None = None,
        client_address: Callable[[Any], str | None] | None = None,
        refuse_document: Callable[[Any], GraphQLError | None] | None = None,
    ) -> None:
        self.strawberry = strawberry
        self.schema = strawberry._schema
        self.services = services
        self.settings = services.settings
        self.hub = hub
        self._authenticate = authenticate
        self._make_context = make_context
        self.format_errors = format_errors
        self.limit_rules = limit_rules
        self._limit_errors = limit_errors
        self._check_sessions = check_sessions
        self._client_address = client_address
        self.engine = Engine(
            self.schema, hub, make_context=lambda viewer: make_context(viewer, None),
            format_errors=format_errors, max_tokens=self.settings.max_tokens,
            stats=lambda: services.extras.get("stats"), refuse=refuse_document,
        )
        self.connections: set[Connection] = set()
        self.by_session: dict[int, set[Connection]] = {}
        self.by_user: dict[int, int] = {}
        allowed = {origin.rstrip("/").lower() for origin in self.settings.cors_origins}
        self._any_origin = "*" in allowed
        self._origins = allowed - {"*"}
        self._started: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._listening = False
        self._closed = False
        self._admitted = SharedReads()  # token -> (viewer, reusable until): see authenticate()
        self.auth_reused = 0

    # ASGI entry point --------------------------------------------------------------------

    async def __call__(self, websocket: WebSocket) -> None:
        self.start()
        connection = Connection(self, websocket)
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    # Lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Listen for session revocations and start the sweep (idempotent; never waits
        for the hub: while it is unreachable the listener retries in the background,
        and a session check follows once it is back)."""
        if self._started is None:
            loop = asyncio.get_running_loop()
            self._started = loop.create_task(self._listen(), name="realtime-session-listener")
            if self._check_sessions is not None:
                self._sweeper = loop.create_task(self._sweep(), name="realtime-session-sweep")

    async def _listen(self) -> None:
        if self.hub is None:
            return
        delay = 0.1
        failed = False
        while not self._closed:
            try:
                await self.hub.subscribe(SESSION_CHANNEL, self)
            except Exception:
                if not failed:
                    log.warning("cannot listen for session revocations yet; retrying", exc_info=True)
                failed = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._listening = True
            if failed:
                await self._check_now()  # revocations published meanwhile were missed
            return

    async def close(self) -> None:
        """Server shutdown: close every socket (1001) and stop the engine."""
        self._closed = True
        for connection in list(self.connections):
            connection.close(1001, "Server shutting down")
        for task in (self._sweeper, self._started):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.engine.close()
        if self.hub is not None and self._listening:
            with contextlib.suppress(Exception):
                await self.hub.unsubscribe(SESSION_CHANNEL, self)

    # What connections ask ----------------------------------------------------------------

    def origin_allowed(self, websocket: WebSocket) -> bool:
        """No Origin: a non-browser client (allowed). A browser's Origin must be ours
        (same host) or listed in CORS_ORIGINS."""
        origin = websocket.headers.get("origin")
        if not origin or self._any_origin:
            return True
        normalized = origin.rstrip("/").lower()
        if normalized in self._origins:
            return True
        host = (websocket.headers.get("host") or "").lower()
        return bool(host) and urlsplit(normalized).netloc == host

    def client_address(self, scope: Any) -> str | None:
        if self._client_address is not None:
            return self._client_address(scope)
        client = scope.get("client")
        return client[0] if client else None

    async def authenticate(self, raw: str) -> Any:
        """The viewer for a connection_init's token.

        Sockets presenting the same token within `AUTH_REUSE_SECONDS` (a client's tabs,
        a reconnect storm) share one check: concurrent inits share the in-flight call,
        and a success is reused until then (never past the token's own expiry). The
        reuse is only on while this instance hears revocations (the session channel):
        a revocation, or a gap on that channel, drops every reused result before it
        closes the sockets of the revoked sessions, so a revoked session is never
        admitted from memory. Refusals are never reused.
        """
        token = bearer(raw)
        if token is None:
            raise Unauthenticated("invalid token")
        if not self._listening or self._closed:
            return await self._authenticate(token)
        admitted = self._admitted.peek(token)
        if admitted is not None:
            viewer, until = admitted
            if until > self._loop_time():
                self.auth_reused += 1
                return viewer
            self._admitted.forget(token)
        if len(self._admitted) >= AUTH_REUSE_MAX:
            self._admitted.invalidate()  # bounded: start over rather than track ages
        viewer, _ = await self._admitted.cached(token, lambda: self._admit(token))
        return viewer

    async def _admit(self, token: str) -> tuple[Any, float]:
        viewer = await self._authenticate(token)
        now = self._loop_time()
        expires = _token_expiry(token)
        lifetime = AUTH_REUSE_SECONDS if expires is None else min(AUTH_REUSE_SECONDS, expires - time.time())
        return viewer, now + lifetime

    @staticmethod
    def _loop_time() -> float:
        return asyncio.get_running_loop().time()

    def limit_errors(self, document: Any, query: str, variables: dict[str, Any] | None) -> list[GraphQLError]:
        """The operation limits' verdict for a valid document (cached when the wiring
        gives `limit_errors`; otherwise the rules are built and run each time)."""
        if self._limit_errors is not None:
            return self._limit_errors(self.schema, document, query, variables)
        return list(validate(self.schema, document, self.limit_rules(variables)))

    def make_context(self, viewer: Any, connection: Connection | None) -> Any:
        return self._make_context(viewer, connection)

    async def check_rate(self, address: str | None) -> None:
        limiter = self.services.limiter
        if limiter is not None:
            await limiter.check_request(address)

    async def register(self, connection: Connection) -> bool:
        """Count an authenticated socket; False when its user is at the cap."""
        viewer = connection.viewer
        count = self.by_user.get(viewer.user_id, 0)
        if count >= self.settings.max_sockets_per_user:
            return False
        self.by_user[viewer.user_id] = count + 1
        self.by_session.setdefault(viewer.session_id, set()).add(connection)
        stats = self.services.extras.get("stats")
        if stats is not None:
            stats.connection_opened()
        presence = self.services.presence
        if presence is not None:
            try:
                await presence.connect(viewer.user_id)
            except Exception:
                log.warning("presence.connect failed", exc_info=True)
        return True

    async def unregister(self, connection: Connection) -> None:
        viewer = connection.viewer
        count = self.by_user.get(viewer.user_id, 0) - 1
        if count > 0:
            self.by_user[viewer.user_id] = count
        else:
            self.by_user.pop(viewer.user_id, None)
        sockets = self.by_session.get(viewer.session_id)
        if sockets is not None:
            sockets.discard(connection)
            if not sockets:
                del self.by_session[viewer.session_id]
        stats = self.services.extras.get("stats")
        if stats is not None:
            stats.connection_closed()
        presence = self.services.presence
        if presence is not None:
            try:
                await presence.disconnect(viewer.user_id)
            except Exception:
                log.warning("presence.disconnect failed", exc_info=True)

    # Session revocation ------------------------------------------------------------------

    def on_event(self, channel: str, event: dict[str, Any]) -> None:
        if event.get("type") == "revoked":
            self._admitted.invalidate()
            self.revoke(int(sid) for sid in event.get("session_ids") or ())

    def on_gap(self, channel: str) -> None:
        """Revocations may have been missed: check every session we hold now."""
        self._admitted.invalidate()
        if self._check_sessions is not None and not self._closed:
            asyncio.get_running_loop().create_task(self._check_now(), name="realtime-session-check")

    def revoke(self, session_ids: Iterable[int]) -> None:
        for session_id in session_ids:
            for connection in list(self.by_session.get(session_id, ())):
                connection.revoke()

    async def _check_now(self) -> None:
        if self._check_sessions is None or not self.by_session:
            return
        try:
            dead = await self._check_sessions(list(self.by_session))
        except Exception:
            log.warning("session check failed; retrying at the next sweep", exc_info=True)
            return
        self.revoke(dead)

    async def _sweep(self) -> None:
        interval = max(1.0, float(self.settings.session_touch_interval_seconds))
        while True:
            await asyncio.sleep(interval)
            await self._check_now()

    # Figures -------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        return {
            "connections": sum(1 for c in self.connections if c.registered),
            "sockets": len(self.connections),
            **self.engine.stats(),
        }
