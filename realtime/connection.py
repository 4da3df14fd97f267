"""One GraphQL WebSocket: handshake, connection_init, operations, and the send path.

Lifecycle: Origin check (refused before the handshake) -> subprotocol -> accept ->
connection_init within `ws_connection_init_timeout_seconds` (else 4408) -> token check
(4403 with the reason) -> sockets-per-user cap (4429) -> ack and keep-alive -> operations
until the client goes, the session is revoked (4403 "session revoked") or the server
closes. Queries and mutations run through the same Strawberry schema, limits and rate
limits as HTTP; subscriptions go to the fan-out engine (`realtime.fanout`).

Send path. Every frame goes through one per-socket outbox (a deque of ready bytes)
drained by one writer task per socket: `push()` is synchronous (append, count, wake),
so the fan-out loop never awaits a socket. The outbox is bounded by
`ws_send_high_water_bytes` and `ws_send_queue_limit`: a data frame that does not fit is
refused and its subscription ends with RESUME_REQUIRED; control frames (ack, pong,
error, complete, close) always fit. The writer hands frames to the ASGI server as text;
the transport's own flow control (uvicorn pauses `send` above its high-water mark) is
what makes a slow reader back up into the outbox. A later step can replace the writer
with direct transport writes (a thin uvicorn protocol class exposing `write(bytes)` and
its writable state): `push()` is the only entry point and already holds final frames.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from typing import TYPE_CHECKING, Any

from graphql import GraphQLError, OperationType, validate
from starlette.websockets import WebSocket

from errors import AppError, Forbidden, RateLimited, Unauthenticated
from realtime.fanout import Subscriber
from realtime.protocol import (
    BAD_REQUEST,
    DUPLICATE_ID,
    FORBIDDEN,
    INIT_TIMEOUT,
    LEGACY_WS,
    MESSAGE_TOO_BIG,
    TOO_MANY,
    UNAUTHORIZED,
    Incoming,
    ProtocolError,
    Wire,
    choose_subprotocol,
    result_payload,
)

if TYPE_CHECKING:
    from realtime.ws import GraphQLWebSocket

log = logging.getLogger("parley.realtime.ws")

_CLOSE = object()  # outbox marker: send the pending close frame


def _error_payload(error: AppError) -> dict[str, Any]:
    return {"message": error.message, "extensions": error.extensions}


class Connection:
    """One socket; created and run by `GraphQLWebSocket.__call__`."""

    def __init__(self, service: GraphQLWebSocket, websocket: WebSocket) -> None:
        self.service = service
        self.ws = websocket
        self.settings = service.settings
        self.wire: Wire | None = None
        self.viewer: Any = None
        self.address: str | None = service.client_address(websocket.scope)
        self.user_agent = (websocket.headers.get("user-agent") or "")[:512] or None
        self.key = secrets.token_hex(8)
        self.init_seen = False
        self.acked = False
        self.registered = False
        self.closing = False
        self.ops: dict[str, asyncio.Task[Any] | Subscriber] = {}
        self.received = 0  # subscribe/start messages handled
        self._close_frame: tuple[int, str] | None = None
        self._outbox: deque[Any] = deque()
        self._outbox_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    # Lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        ws = self.ws
        if not self.service.origin_allowed(ws):
            await ws.close(code=1008)  # before accept: the server answers the handshake with 403
            return
        wire = choose_subprotocol(list(ws.scope.get("subprotocols") or ()))
        if wire is None:
            await ws.accept()
            await ws.close(code=4406, reason="Subprotocol not acceptable")
            return
        self.wire = wire
        await ws.accept(subprotocol=wire.name)
        self._writer = self._loop.create_task(self._write(), name="realtime-ws-writer")
        self._timer = self._loop.call_later(self.settings.ws_connection_init_timeout_seconds, self._init_timeout)
        try:
            await self._receive_loop()
        finally:
            await self._cleanup()

    async def _receive_loop(self) -> None:
        assert self.wire is not None
        limit = self.settings.max_ws_message_bytes
        while not self.closing:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("text")
            if data is None:
                self.close(BAD_REQUEST, "Binary messages are not supported")
                return
            if len(data) > limit:
                self.close(MESSAGE_TOO_BIG, "Message too big")
                return
            try:
                incoming = self.wire.decode(data)
            except ProtocolError as exc:
                self.close(exc.code, exc.reason)
                return
            await self._handle(incoming)

    async def _cleanup(self) -> None:
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
        for op in list(self.ops.values()):
            if isinstance(op, Subscriber):
                self.service.engine.stop(op)
            else:
                op.cancel()
        self.ops.clear()
        if self.registered:
            self.registered = False
            await self.service.unregister(self)
        writer = self._writer
        if writer is not None:
            if self._close_frame is not None and not writer.done():
                # Let the writer deliver what is queued before our close frame (bounded).
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(asyncio.shield(writer), timeout=2.0)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    def close(self, code: int, reason: str = "", *, drop_pending: bool = False) -> None:
        """Close with `code`/`reason` after the queued frames (or at once with drop_pending).

        Synchronous: callable from the hub's dispatch task. Operations end at once, so
        nothing more is queued for this socket.
        """
        if self._close_frame is not None:
            return
        self.closing = True
        self._close_frame = (code, reason)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for op in list(self.ops.values()):
            if isinstance(op, Subscriber):
                self.service.engine.stop(op)
            else:
                op.cancel()
        self.ops.clear()
        if drop_pending:
            self._outbox.clear()
            self._outbox_bytes = 0
        self._outbox.append(_CLOSE)
        self._wake()

    def revoke(self) -> None:
        """The session ended: nothing more for this socket, close 4403."""
        self.close(FORBIDDEN, "session revoked", drop_pending=True)

    # Timers ----------------------------------------------------------------------------

    def _init_timeout(self) -> None:
        self._timer = None
        if not self.init_seen:
            self.close(INIT_TIMEOUT, "Connection initialisation timeout")

    def _keepalive(self) -> None:
        self._timer = None
        if self.closing or self.wire is None:
            return
        frame = self.wire.keepalive()
        if frame is not None:
            self.push_control(frame)
        self._timer = self._loop.call_later(self.settings.ws_keepalive_seconds, self._keepalive)

    # Messages ----------------------------------------------------------------------------

    async def _handle(self, message: Incoming) -> None:
        wire = self.wire
        assert wire is not None
        kind = message.kind
        if kind == "subscribe":
            self.received += 1
            self._subscribe(message.id, message.payload)
        elif kind == "complete":
            op = self.ops.pop(message.id, None)
            if isinstance(op, Subscriber):
                self.service.engine.stop(op)
            elif op is not None:
                op.cancel()
            if op is not None and wire.name == LEGACY_WS:
                self.push_control(wire.complete(message.id))
        elif kind == "ping":
            frame = wire.pong(message.payload)
            if frame is not None:
                self.push_control(frame)
        elif kind == "init":
            await self._init(message.payload)
        elif kind == "terminate":
            self.close(1000, "")

    async def _init(self, payload: dict[str, Any]) -> None:
        if self.init_seen:
            self.close(TOO_MANY, "Too many initialisation requests")
            return
        self.init_seen = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        raw = payload.get("authorization", payload.get("Authorization"))
        try:
            if not isinstance(raw, str):
                raise Unauthenticated("invalid token")
            self.viewer = await self.service.authenticate(raw)
        except Unauthenticated as exc:
            self._refuse_init(exc.message)
            return
        except AppError as exc:
            self._refuse_init(exc.message)
            return
        if self.closing:
            return
        if not await self.service.register(self):
            self.close(TOO_MANY, "Too many sockets for this user")
            return
        self.registered = True
        if self.closing:
            return
        assert self.wire is not None
        self.push_control(self.wire.ack())
        self.acked = True
        if self.wire.name == LEGACY_WS:
            frame = self.wire.keepalive()
            if frame is not None:
                self.push_control(frame)
        self._timer = self._loop.call_later(self.settings.ws_keepalive_seconds, self._keepalive)

    def _refuse_init(self, reason: str) -> None:
        assert self.wire is not None
        frame = self.wire.init_rejected(reason, "UNAUTHENTICATED")
        if frame is not None:
            self.push_control(frame)
        self.close(FORBIDDEN, reason)

    def _subscribe(self, op_id: str, payload: dict[str, Any]) -> None:
        wire = self.wire
        assert wire is not None
        if not self.acked:
            self.close(UNAUTHORIZED, "Unauthorized")
            return
        existing = self.ops.get(op_id)
        if existing is not None:
            if wire.name != LEGACY_WS:
                self.close(DUPLICATE_ID, f"Subscriber for {op_id[:64]} already exists")
                return
            self.ops.pop(op_id)  # subscriptions-transport-ws: a reused id replaces the operation
            if isinstance(existing, Subscriber):
                self.service.engine.stop(existing)
            else:
                existing.cancel()
        limit = self.settings.max_subscriptions_per_socket
        if len(self.ops) >= limit:
            error = Forbidden(f"Too many operations on this socket (limit {limit})", limit=limit)
            self.push_control(wire.error(op_id, [_error_payload(error)]))
            return
        task = self._loop.create_task(self._operation(op_id, payload), name="realtime-ws-operation")
        self.ops[op_id] = task

    async def _operation(self, op_id: str, payload: dict[str, Any]) -> None:
        wire = self.wire
        assert wire is not None
        task = asyncio.current_task()
        try:
            errors_or_none = await self._run(op_id, payload)
            if errors_or_none is not None and self.ops.get(op_id) is task:
                self.ops.pop(op_id, None)
                self.push_control(wire.error(op_id, errors_or_none))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("WebSocket operation failed")
            if self.ops.get(op_id) is task:
                self.ops.pop(op_id, None)
                error = {"message": "Internal server error", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}
                self.push_control(wire.error(op_id, [error]))
        finally:
            if self.ops.get(op_id) is task:
                self.ops.pop(op_id, None)

    async def _run(self, op_id: str, payload: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Run one operation; formatted errors for an `error` message, or None."""
        service = self.service
        wire = self.wire
        assert wire is not None
        try:
            await service.check_rate(self.address)
        except RateLimited as exc:
            return [_error_payload(exc)]
        query = payload["query"]
        variables = payload["variables"]
        name = payload["operationName"]
        ctx = service.make_context(self.viewer, self)
        parsed = service.engine.documents.get(query)
        if parsed.errors:
            return service.format_errors(parsed.errors, ctx)
        info = parsed.operation(name)
        if info is None:
            message = f"Unknown operation named '{name}'." if name else "Must provide operation name."
            return service.format_errors([GraphQLError(message)], ctx)
        if info.kind is not OperationType.SUBSCRIPTION:
            return await self._execute(op_id, query, variables, name, ctx)
        assert parsed.document is not None
        limit_errors = validate(service.schema, parsed.document, service.limit_rules(variables))
        if limit_errors:
            return service.format_errors(list(limit_errors), ctx)
        result = await service.engine.subscribe(
            self, op_id, wire.next_prefix(op_id), parsed, info, variables, name, ctx
        )
        if isinstance(result, list):
            return result
        task = asyncio.current_task()
        if result.active and self.ops.get(op_id) is task:
            self.ops[op_id] = result  # from here the subscription runs without a task
        elif result.active:
            service.engine.stop(result)  # completed by the client meanwhile
        return None

    async def _execute(
        self, op_id: str, query: str, variables: dict[str, Any] | None, name: str | None, ctx: Any
    ) -> list[dict[str, Any]] | None:
        from strawberry.types.execution import PreExecutionError
        from strawberry.types.graphql import OperationType as StrawberryOperation

        wire = self.wire
        assert wire is not None
        result = await self.service.strawberry.execute(
            query, variable_values=variables, context_value=ctx, operation_name=name,
            allowed_operation_types={StrawberryOperation.QUERY, StrawberryOperation.MUTATION},
        )
        errors = self.service.format_errors(list(result.errors), ctx) if result.errors else None
        if isinstance(result, PreExecutionError) or (result.data is None and errors and all(
            "path" not in e for e in errors
        )):
            return errors or [{"message": "Invalid operation", "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}]
        if self.ops.get(op_id) is not asyncio.current_task():
            return None  # completed by the client meanwhile
        self.push_control(wire.next_prefix(op_id) + result_payload(result.data, errors) + b"}")
        self.push_control(wire.complete(op_id))
        self.ops.pop(op_id, None)
        return None

    # Sink (called by the fan-out engine) -----------------------------------------------

    def operation_ended(self, op_id: str, error: AppError | None) -> None:
        if self.ops.get(op_id) is None or self.wire is None or self.closing:
            self.ops.pop(op_id, None)
            return
        self.ops.pop(op_id, None)
        frame = self.wire.error(op_id, [_error_payload(error)]) if error else self.wire.complete(op_id)
        self.push_control(frame)

    def push(self, frame: bytes) -> bool:
        """Queue a data frame; False (frame dropped) when over the socket's send limits."""
        if self.closing:
            return True  # ending anyway; not the subscriber's fault
        if (
            len(self._outbox) >= self.settings.ws_send_queue_limit
            or self._outbox_bytes + len(frame) > self.settings.ws_send_high_water_bytes
        ):
            return False
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        if self._waiter is not None:
            self._wake()
        return True

    def push_control(self, frame: bytes) -> None:
        if self._close_frame is not None:
            return
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    @property
    def pending_bytes(self) -> int:
        return self._outbox_bytes

    async def _write(self) -> None:
        """Drain the outbox in order; the only task that sends on this socket."""
        send = self.ws.send
        outbox = self._outbox
        try:
            while True:
                while outbox:
                    item = outbox.popleft()
                    if item is _CLOSE:
                        assert self._close_frame is not None
                        code, reason = self._close_frame
                        await send({"type": "websocket.close", "code": code, "reason": reason})
                        return
                    self._outbox_bytes -= len(item)
                    await send({"type": "websocket.send", "text": item.decode()})
                waiter = self._waiter = self._loop.create_future()
                await waiter
        except asyncio.CancelledError:
            raise
        except Exception:  # the peer went away; the receive loop sees the disconnect
            self.closing = True
            outbox.clear()
            self._outbox_bytes = 0
