"""HTTP perimeter: security headers on every response and the client address.

Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and breaks streaming).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
# GraphiQL is a page of inline script plus assets from unpkg.
GRAPHIQL_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://unpkg.com; "
    "style-src 'self' 'unsafe-inline' https://unpkg.com; img-src 'self' data: https://unpkg.com; "
    "font-src 'self' data: https://unpkg.com; connect-src 'self' ws: wss:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in self._headers():
                    if name not in present:
                        headers.append((name, value))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _headers(self) -> Iterable[tuple[bytes, bytes]]:
        yield b"content-security-policy", API_CSP.encode()
        yield b"x-content-type-options", b"nosniff"
        yield b"x-frame-options", b"DENY"
        yield b"referrer-policy", b"no-referrer"
        yield b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"
        yield b"cross-origin-opener-policy", b"same-origin"
        if self.hsts:
            yield b"strict-transport-security", b"max-age=63072000; includeSubDomains"


def _in_networks(address: str, networks: list[Any]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(scope: Scope, trusted_proxies: Iterable[str]) -> str | None:
    """The peer address, or the right-most untrusted X-Forwarded-For hop when the peer
    is a trusted proxy (so a client cannot spoof its address by sending the header)."""
    client = scope.get("client")
    peer = client[0] if client else None
    networks = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]
    if peer is None or not networks or not _in_networks(peer, networks):
        return peer
    forwarded: list[str] = []
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-for":
            forwarded.extend(part.strip() for part in value.decode("latin-1").split(","))
    for hop in reversed(forwarded):
        if hop and not _in_networks(hop, networks):
            return hop
    return peer
