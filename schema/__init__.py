"""The assembled schema: one module per domain, merged into Query/Mutation/Subscription."""
from __future__ import annotations

from importlib import import_module
from typing import Any

import strawberry
from strawberry.extensions import MaxTokensLimiter
from strawberry.schema.config import StrawberryConfig

from schema.limits import OperationRateLimit, operation_limits
from schema.validation_cache import CachedValidation

# Order matters only for the printed SDL; every module may define Query, Mutation
# and Subscription mixins.
DOMAINS = (
    "users", "admin", "conversations", "messages", "groups", "files",
    "notifications", "search", "subscriptions",
)


def _mixins(name: str) -> tuple[type, ...]:
    found = []
    for domain in DOMAINS:
        try:
            module = import_module(f"schema.{domain}")
        except ModuleNotFoundError as exc:
            if exc.name != f"schema.{domain}":
                raise
            continue
        mixin = getattr(module, name, None)
        if mixin is not None:
            found.append(mixin)
    return tuple(found)


def _merged(name: str) -> Any:
    bases = _mixins(name)
    if not bases:
        return None
    return strawberry.type(type(name, bases, {}))


Query = _merged("Query")
Mutation = _merged("Mutation")
Subscription = _merged("Subscription")


class ParleySchema(strawberry.Schema):
    def process_errors(self, errors: Any, execution_context: Any = None) -> None:
        """Logging happens in schema.errors.format_error, with the request id."""


def build_schema(settings: Any = None) -> ParleySchema:
    """The executable schema; `settings` adds the operation limits (None: no limits)."""
    extensions: list[Any] = []
    suggestions = True
    if settings is not None:
        extensions = [
            lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
            operation_limits(settings),
            OperationRateLimit,
            CachedValidation,  # last: after operation_limits added its rules (schema/validation_cache.py)
        ]
        suggestions = settings.flag("field_suggestions_enabled")
    return ParleySchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        config=StrawberryConfig(disable_field_suggestions=not suggestions),
    )


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
