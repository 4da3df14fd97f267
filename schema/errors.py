"""Turn GraphQL errors into what clients see, in one place for HTTP and WebSocket.

AppError keeps its message and extensions; parse and validation errors get their
GRAPHQL_* code; anything else is masked as INTERNAL_SERVER_ERROR and logged with the
request id. In production "Did you mean ...?" suggestions are cut from every message.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError

from errors import AppError, ErrorCode

log = logging.getLogger("parley.errors")
_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")
_VARIABLE = re.compile(r"Variable '\$(\w+)'")


def _root_cause(error: GraphQLError) -> BaseException | None:
    original = error.original_error
    while isinstance(original, GraphQLError) and original.original_error is not None:
        original = original.original_error
    return original


def format_error(error: GraphQLError, *, request_id: str = "", suggestions: bool = True) -> dict[str, Any]:
    original = _root_cause(error)
    formatted: dict[str, Any] = {"message": error.message}
    if error.locations:
        formatted["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    if error.path:
        formatted["path"] = list(error.path)
    if isinstance(original, AppError):
        formatted["message"] = original.message
        formatted["extensions"] = original.extensions
    elif isinstance(error, GraphQLSyntaxError) or isinstance(original, GraphQLSyntaxError):
        formatted["extensions"] = {"code": ErrorCode.GRAPHQL_PARSE_FAILED.value}
    elif not error.path and (variable := _VARIABLE.match(error.message)):
        # Variable coercion (graphql-core wraps the inner GraphQLError): the document is
        # fine, the input is not.
        formatted["extensions"] = {"code": ErrorCode.BAD_USER_INPUT.value, "field": variable.group(1)}
    elif not error.path and (original is None or isinstance(original, GraphQLError)):
        formatted["extensions"] = {"code": ErrorCode.GRAPHQL_VALIDATION_FAILED.value}
    else:
        log.error(
            "unexpected error [request %s] at %s: %s",
            request_id, error.path, error.message, exc_info=original or error,
        )
        formatted = {
            "message": "Internal server error",
            "path": formatted.get("path"),
            "extensions": {"code": ErrorCode.INTERNAL_SERVER_ERROR.value, "requestId": request_id},
        }
        if formatted["path"] is None:
            del formatted["path"]
    if not suggestions:
        formatted["message"] = _SUGGESTION.sub("", formatted["message"])
    return formatted


def format_errors(errors: list[GraphQLError] | None, **kwargs: Any) -> list[dict[str, Any]]:
    return [format_error(e, **kwargs) for e in errors or ()]


def app_error_payload(error: AppError) -> dict[str, Any]:
    return {"message": error.message, "extensions": error.extensions}
