"""One GraphQL-over-HTTP request's parameters, checked the same way for JSON, GET and multipart."""
from __future__ import annotations

from typing import Any

from errors import BadUserInput


def parse_operation(raw: Any) -> dict[str, Any]:
    """`{"query", "variables", "operationName"}` -> validated params; BAD_USER_INPUT naming the field."""
    if not isinstance(raw, dict):
        raise BadUserInput("The request body must be a JSON object", field="body")
    query = raw.get("query")
    if not isinstance(query, str) or not query.strip():
        raise BadUserInput("No GraphQL query in the request", field="query")
    variables = raw.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise BadUserInput("variables must be an object", field="variables")
    operation_name = raw.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise BadUserInput("operationName must be a string", field="operationName")
    return {"query": query, "variables": variables, "operation_name": operation_name}
