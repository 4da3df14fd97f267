"""Typed application errors: the contract's `extensions.code` values.

Imports nothing of ours, so every layer may raise these.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    CONFLICT = "CONFLICT"
    RATE_LIMITED = "RATE_LIMITED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    RESUME_REQUIRED = "RESUME_REQUIRED"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
    GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"


class AppError(Exception):
    """An expected failure a client can act on; never masked."""

    code: ErrorCode = ErrorCode.INTERNAL_SERVER_ERROR
    default_message = "Internal server error"

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.extra = {k: v for k, v in extra.items() if v is not None}

    @property
    def extensions(self) -> dict[str, Any]:
        return {"code": str(self.code), **self.extra}


class Unauthenticated(AppError):
    code = ErrorCode.UNAUTHENTICATED
    default_message = "Authentication required"


class Forbidden(AppError):
    code = ErrorCode.FORBIDDEN
    default_message = "Not allowed"


class NotFound(AppError):
    code = ErrorCode.NOT_FOUND
    default_message = "Not found"


class BadUserInput(AppError):
    code = ErrorCode.BAD_USER_INPUT
    default_message = "Invalid input"

    def __init__(self, message: str | None = None, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(message, field=field, **extra)


class Conflict(AppError):
    code = ErrorCode.CONFLICT
    default_message = "Conflict"


class RateLimited(AppError):
    code = ErrorCode.RATE_LIMITED
    default_message = "Too many requests"

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message, retryAfter=max(1, int(retry_after)))
        self.retry_after = max(1, int(retry_after))


class PayloadTooLarge(AppError):
    code = ErrorCode.PAYLOAD_TOO_LARGE
    default_message = "Payload too large"


class UnsupportedMediaType(AppError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE
    default_message = "Unsupported media type"


class ResumeRequired(AppError):
    code = ErrorCode.RESUME_REQUIRED
    default_message = "Subscription fell behind; resubscribe with your last cursor"
