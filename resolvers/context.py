"""The small request-context object every resolver function receives.

One per HTTP request, and one per *operation* on a WebSocket (the socket's long-lived
state is in `Connection`, not here), so DataLoader caches never outlive an operation.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from strawberry.dataloader import DataLoader

from auth.viewer import Viewer
from errors import Unauthenticated

if TYPE_CHECKING:
    from db.engine import Database
    from settings import Settings

K = TypeVar("K")
V = TypeVar("V")


@dataclass
class Services:
    """Process-wide resources built in the server's lifespan and shared by all requests."""

    settings: Settings
    db: Database
    events: Any = None  # realtime.events.Publisher
    limiter: Any = None  # auth.ratelimit.RateLimiter
    storage: Any = None  # storage.base.Storage
    presence: Any = None  # realtime.presence.Presence
    typing: Any = None  # realtime.typing.Typing
    extras: dict[str, Any] = field(default_factory=dict)


BatchFn = Callable[["Context", Sequence[Any]], Awaitable[Sequence[Any]]]


@dataclass
class Context:
    services: Services
    viewer: Viewer | None = None
    auth_error: Exception | None = None  # why a presented token was refused
    ip_address: str | None = None
    user_agent: str | None = None
    request_id: str = ""
    transport: str = "http"  # "http" | "ws"
    request: Any = None  # starlette Request (HTTP only)
    response: Any = None  # starlette Response headers to add (HTTP only)
    connection: Any = None  # realtime connection (WS only)
    _loaders: dict[Any, DataLoader[Any, Any]] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def db(self) -> Database:
        return self.services.db

    @property
    def events(self) -> Any:
        return self.services.events

    def require_viewer(self) -> Viewer:
        if self.viewer is None:
            raise self.auth_error or Unauthenticated()
        return self.viewer

    def loader(self, batch: BatchFn) -> DataLoader[Any, Any]:
        """The per-context DataLoader for `batch(ctx, keys)`; created on first use.

        Batch functions open their own session (one AsyncSession never serves two
        tasks), return one value per key in key order (None where missing).
        """
        found = self._loaders.get(batch)
        if found is None:

            async def load(keys: list[Any]) -> list[Any]:
                return list(await batch(self, keys))

            found = DataLoader(load_fn=load)
            self._loaders[batch] = found
        return found

    def prime(self, batch: BatchFn, key: Any, value: Any) -> None:
        """Seed a loader with a row already at hand (saves a query after a write)."""
        self.loader(batch).prime(key, value)
