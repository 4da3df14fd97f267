"""Bearer token -> Viewer. (Skeleton: the accounts work fills this in.)"""
from __future__ import annotations

from typing import Any

from errors import Unauthenticated
from auth.viewer import Viewer


def bearer_token(header: str | None) -> str | None:
    """The token in `Bearer <token>`; a bare token is accepted too (WebSocket init)."""
    if not header:
        return None
    value = header.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None


async def authenticate(services: Any, token: str) -> Viewer:
    raise Unauthenticated("invalid token")
