"""Who is asking: shared by auth (which creates it) and resolvers (which check it)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Viewer:
    """The authenticated user and the session its token belongs to."""

    user_id: int
    session_id: int
    is_admin: bool = False
