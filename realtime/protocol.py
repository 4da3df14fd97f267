"""The two GraphQL-over-WebSocket subprotocols, as codecs: messages in, frames out.

- `graphql-transport-ws` (the graphql-ws library; Apollo `GraphQLWsLink`, urql):
  connection_init / ping / pong / subscribe / complete in; connection_ack / ping / pong /
  next / error / complete out. Close codes 4400 (invalid message), 4401 (subscribe
  before ack), 4403 (forbidden), 4408 (init timeout), 4409 (duplicate id), 4429 (too
  many init requests).
- legacy `graphql-ws` (subscriptions-transport-ws; Apollo `WebSocketLink`):
  connection_init / start / stop / connection_terminate in; connection_ack /
  connection_error / ka / data / error / complete out. Same close codes where the
  library defines none (init timeout, revoked session).

Frames are bytes built by splicing: a subscription event's payload is serialised once
and each socket's frame is `prefix(op id) + payload + b"}"`, so a delivery costs a
concatenation, not a JSON encode. Everything here is pure (no I/O, no asyncio).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
SUBPROTOCOLS = (TRANSPORT_WS, LEGACY_WS)

# Close codes (graphql-transport-ws numbers, used for both subprotocols).
BAD_REQUEST = 4400
UNAUTHORIZED = 4401
FORBIDDEN = 4403
INIT_TIMEOUT = 4408
DUPLICATE_ID = 4409
TOO_MANY = 4429
INTERNAL = 4500
MESSAGE_TOO_BIG = 1009


class ProtocolError(Exception):
    """The peer broke the protocol: close the socket with `code` and `reason`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Incoming:
    """One decoded client message, in graphql-transport-ws terms for both protocols.

    kind: "init" | "ping" | "pong" | "subscribe" | "complete" | "terminate" | "ignore".
    For "subscribe", `payload` holds query (str), variables (dict | None),
    operationName (str | None) and extensions (dict | None), already type-checked.
    """

    kind: str
    id: str = ""
    payload: Any = None


def _subscribe_payload(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ProtocolError(BAD_REQUEST, "Invalid message received: payload must be an object")
    query = payload.get("query")
    variables = payload.get("variables")
    name = payload.get("operationName")
    extensions = payload.get("extensions")
    if not isinstance(query, str):
        raise ProtocolError(BAD_REQUEST, "Invalid message received: payload.query must be a string")
    if variables is not None and not isinstance(variables, dict):
        raise ProtocolError(BAD_REQUEST, "Invalid message received: payload.variables must be an object")
    if name is not None and not isinstance(name, str):
        raise ProtocolError(BAD_REQUEST, "Invalid message received: payload.operationName must be a string")
    if extensions is not None and not isinstance(extensions, dict):
        raise ProtocolError(BAD_REQUEST, "Invalid message received: payload.extensions must be an object")
    return {"query": query, "variables": variables, "operationName": name or None, "extensions": extensions}


def _decode_json(data: str | bytes) -> dict[str, Any]:
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProtocolError(BAD_REQUEST, "Invalid message received: not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError(BAD_REQUEST, "Invalid message received: no type")
    return message


def _operation_id(message: dict[str, Any]) -> str:
    op_id = message.get("id")
    if not isinstance(op_id, str) or not op_id or len(op_id) > 256:
        raise ProtocolError(BAD_REQUEST, "Invalid message received: id must be a non-empty string")
    return op_id


def _init_payload(message: dict[str, Any]) -> dict[str, Any]:
    payload = message.get("payload")
    if payload is not None and not isinstance(payload, dict):
        raise ProtocolError(BAD_REQUEST, "Invalid message received: payload must be an object")
    return payload or {}


def _incoming(message: dict[str, Any], kind: str) -> Incoming:
    """A client message of a known type as `Incoming` (graphql-transport-ws terms)."""
    if kind == "subscribe":
        return Incoming("subscribe", _operation_id(message), _subscribe_payload(message.get("payload")))
    if kind == "complete":
        return Incoming("complete", _operation_id(message))
    if kind == "init":
        return Incoming("init", payload=_init_payload(message))
    if kind == "ping":
        return Incoming("ping", payload=message.get("payload"))
    return Incoming(kind)  # pong, terminate


class Wire:
    """A subprotocol's codec; one shared instance per subprotocol."""

    name: str
    next_type: bytes
    kinds: dict[str, str]  # the subprotocol's message type -> Incoming.kind

    def decode(self, data: str | bytes) -> Incoming:
        message = _decode_json(data)
        kind = self.kinds.get(message["type"])
        if kind is None:
            raise ProtocolError(BAD_REQUEST, f"Invalid message received: unknown type {message['type'][:32]!r}")
        return _incoming(message, kind)

    # --- frames out -------------------------------------------------------------
    def next_prefix(self, op_id: str) -> bytes:
        """`prefix + payload + b"}"` is the whole data frame for `op_id`."""
        return b'{"id":' + orjson.dumps(op_id) + b',"type":"' + self.next_type + b'","payload":'

    def ack(self) -> bytes:
        return b'{"type":"connection_ack"}'

    def error(self, op_id: str, errors: list[dict[str, Any]]) -> bytes:
        raise NotImplementedError

    def complete(self, op_id: str) -> bytes:
        return orjson.dumps({"id": op_id, "type": "complete"})

    def keepalive(self) -> bytes | None:
        raise NotImplementedError

    def pong(self, payload: Any = None) -> bytes | None:
        return None

    def init_rejected(self, message: str, code: str) -> bytes | None:
        """Sent before closing when connection_init is refused (legacy only)."""
        return None


class TransportWire(Wire):
    name = TRANSPORT_WS
    next_type = b"next"

    kinds = {
        "subscribe": "subscribe", "complete": "complete", "ping": "ping", "pong": "pong",
        "connection_init": "init",
    }

    def error(self, op_id: str, errors: list[dict[str, Any]]) -> bytes:
        return orjson.dumps({"id": op_id, "type": "error", "payload": errors})

    def keepalive(self) -> bytes | None:
        return b'{"type":"ping"}'

    def pong(self, payload: Any = None) -> bytes | None:
        if payload is None:
            return b'{"type":"pong"}'
        return orjson.dumps({"type": "pong", "payload": payload})


class LegacyWire(Wire):
    name = LEGACY_WS
    next_type = b"data"

    kinds = {"start": "subscribe", "stop": "complete", "connection_init": "init", "connection_terminate": "terminate"}

    def error(self, op_id: str, errors: list[dict[str, Any]]) -> bytes:
        # subscriptions-transport-ws sends one error object; its client also takes a list.
        payload: Any = errors[0] if len(errors) == 1 else errors
        return orjson.dumps({"id": op_id, "type": "error", "payload": payload})

    def keepalive(self) -> bytes | None:
        return b'{"type":"ka"}'

    def init_rejected(self, message: str, code: str) -> bytes | None:
        return orjson.dumps(
            {"type": "connection_error", "payload": {"message": message, "extensions": {"code": code}}}
        )


WIRES: dict[str, Wire] = {TRANSPORT_WS: TransportWire(), LEGACY_WS: LegacyWire()}


def choose_subprotocol(offered: list[str]) -> Wire | None:
    """The first subprotocol we speak, in the client's order of preference."""
    for name in offered:
        wire = WIRES.get(name.strip())
        if wire is not None:
            return wire
    return None


def result_payload(data: Any, errors: list[dict[str, Any]] | None) -> bytes:
    """The `payload` JSON of a next/data message."""
    body: dict[str, Any] = {"data": data}
    if errors:
        body["errors"] = errors
    return orjson.dumps(body)
