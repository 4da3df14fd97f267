"""One GraphQL WebSocket: handshake, connection_init, operations, and the send path.

Lifecycle: Origin check (refused before the handshake) -> subprotocol -> accept ->
connection_init within `ws_connection_init_timeout_seconds` (else 4408) -> token check
(4403 with the reason) -> sockets-per-user cap (4429) -> ack and keep-alive -> operations
until the client goes, the session is revoked (4403 "session revoked") or the server
closes. Queries and mutations run through the same Strawberry schema, limits and rate
limits as HTTP; subscriptions go to the fan-out engine (`realtime.fanout`).

Send path. `push()` (data frames, bounded) and `push_control()` are synchronous and
keep frames in order; the fan-out loop never awaits a socket. Frames are final bytes.
- Under server.py's uvicorn protocol (`realtime.uvicorn_ws`), the scope offers a
  direct text-frame write (`realtime.transport`): one `transport.write` per frame. A
  data frame is refused when the transport already holds more than
  `ws_send_high_water_bytes` for the socket (a slow reader).
- Under any other ASGI server the ASGI `send` coroutine is stepped in place; it
  completes without suspending whenever the transport accepts writes, so there is no
  task switch or wakeup per delivery. Only when a send suspends (the transport paused:
  a slow reader) does a per-socket drain task take over that send and what queues
  behind it, bounded by `ws_send_high_water_bytes` and `ws_send_queue_limit`.
Either way a refused data frame ends its subscription with RESUME_REQUIRED (the client
resumes by cursor); control frames (ack, pong, error, complete, close) always go out.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from typing import TYPE_CHECKING, Any

from graphql import GraphQLError, OperationType
from starlette.websockets import WebSocket, WebSocketDisconnect

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
from realtime.transport import direct_sender

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
        self._outbox: deque[Any] = deque()  # frames waiting behind a blocked send
        self._outbox_bytes = 0
        self._drain: asyncio.Task[None] | None = None  # set while a send is blocked
        self._broken = False
        self._direct: Any = None  # the server's direct text-frame write (realtime.transport), after accept
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
        self._direct = direct_sender(ws.scope)  # from here every text frame of this socket goes there
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
        drain = self._drain
        if drain is not None and not drain.done():
            if self._close_frame is not None:
                # Let what is queued before our close frame go out (bounded).
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(asyncio.shield(drain), timeout=2.0)
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await drain

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
        self._emit(_CLOSE)

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
        limit_errors = service.limit_errors(parsed.document, query, variables)
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
        """Send or queue a data frame; False (frame dropped) when over the send limits."""
        if self.closing:
            return True  # ending anyway; not the subscriber's fault
        direct = self._direct
        if direct is not None and self._drain is None:  # the common case, written in place
            if direct.write_buffer_size() + len(frame) > self.settings.ws_send_high_water_bytes:
                return False  # the kernel is not taking this socket's frames: shed it, never buffer unbounded
            if not self._broken:
                direct.write_text(frame)  # False: closing; the receive loop sees the disconnect
            return True
        if self._drain is not None and (
            len(self._outbox) >= self.settings.ws_send_queue_limit
            or self._outbox_bytes + len(frame) > self.settings.ws_send_high_water_bytes
        ):
            return False
        direct = self._direct
        if direct is not None and direct.write_buffer_size() + len(frame) > self.settings.ws_send_high_water_bytes:
            return False  # the kernel is not taking this socket's frames: shed it, never buffer unbounded
        self._emit(frame)
        return True

    def push_control(self, frame: bytes) -> None:
        if self._close_frame is not None:
            return
        self._emit(frame)

    @property
    def pending_bytes(self) -> int:
        return self._outbox_bytes

    def _emit(self, item: Any) -> None:
        if self._broken:
            return
        if self._drain is not None:
            self._outbox.append(item)
            if item is not _CLOSE:
                self._outbox_bytes += len(item)
            return
        self._write_now(item)

    def _message(self, item: Any) -> dict[str, Any]:
        if item is _CLOSE:
            assert self._close_frame is not None
            code, reason = self._close_frame
            return {"type": "websocket.close", "code": code, "reason": reason}
        return {"type": "websocket.send", "text": item.decode()}

    def _write_now(self, item: Any) -> None:
        """Step the ASGI send in place; hand it to a drain task if it suspends."""
        direct = self._direct
        if direct is not None and item is not _CLOSE:
            # One synchronous transport write; the close frame stays on the ASGI path,
            # which writes the same transport synchronously too, so order is kept.
            direct.write_text(item)  # False: closing; the receive loop sees the disconnect
            return
        coro = self.ws.send(self._message(item))
        try:
            blocked_on = coro.send(None)
        except StopIteration:
            return
        except Exception as exc:  # the peer went away; the receive loop sees the disconnect
            self._fail(exc)
            return
        self._drain = self._loop.create_task(self._finish(coro, blocked_on), name="realtime-ws-drain")

    async def _finish(self, coro: Any, blocked_on: Any) -> None:
        """Complete a suspended send (as a task would), then drain what queued behind it."""
        try:
            while True:
                try:
                    if blocked_on is None:  # a bare yield (sleep(0)): just reschedule
                        await asyncio.sleep(0)
                    else:
                        # What Task.__step does with a yielded future: clear the flag,
                        # wait for it, then resume the coroutine.
                        blocked_on._asyncio_future_blocking = False
                        await blocked_on
                except Exception:  # the send sees the outcome when resumed
                    pass
                try:
                    blocked_on = coro.send(None)
                except StopIteration:
                    break
            while self._outbox:
                item = self._outbox.popleft()
                if item is not _CLOSE:
                    self._outbox_bytes -= len(item)
                await self.ws.send(self._message(item))
        except asyncio.CancelledError:
            coro.close()
            raise
        except Exception as exc:
            self._fail(exc)
        finally:
            self._drain = None

    def _fail(self, exc: Exception) -> None:
        """Sending failed: nothing more can be sent on this socket."""
        if not isinstance(exc, (OSError, WebSocketDisconnect, RuntimeError)):
            log.error("WebSocket send failed", exc_info=exc)
        self._broken = True
        self.closing = True
        self._outbox.clear()
        self._outbox_bytes = 0
