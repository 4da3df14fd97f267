"""The `operations` and `map` parts of a GraphQL multipart request, checked.

Separate from the streaming parser because it is pure data validation: the map is
checked against the operations before any file is read, so a bad map costs the client
one round trip, not an upload, and a path can only ever fill a null inside an
operation's `variables` (never `query` or `extensions`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from errors import BadUserInput, PayloadTooLarge

__all__ = ["MAX_PATHS_PER_FILE", "FilesMap", "JsonValue", "parse_map", "parse_operations", "set_at"]

JsonValue = dict[str, Any] | list[Any]
FilesMap = dict[str, list[list[str | int]]]
"""Multipart field name -> resolved paths (dict keys and list indexes)."""
MAX_PATHS_PER_FILE = 16


def _load_json(data: bytearray, field_name: str) -> Any:
    try:
        return json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadUserInput(f"The '{field_name}' part is not valid JSON", field=field_name) from exc


def parse_operations(data: bytearray) -> JsonValue:
    operations = _load_json(data, "operations")
    if isinstance(operations, dict) or (
        isinstance(operations, list) and operations and all(isinstance(op, dict) for op in operations)
    ):
        return operations
    raise BadUserInput("'operations' must be an object or a list of objects", field="operations")


def parse_map(data: bytearray, operations: JsonValue, max_files: int) -> FilesMap:
    """The map, each path resolved against `operations`; more than `max_files`
    entries is PayloadTooLarge, anything malformed BadUserInput."""
    raw = _load_json(data, "map")
    if not isinstance(raw, dict):
        raise BadUserInput("'map' must be an object", field="map")
    if len(raw) > max_files:
        raise PayloadTooLarge(f"At most {max_files} files are allowed", field="map")
    files_map: FilesMap = {}
    seen: set[tuple[str | int, ...]] = set()
    for name, paths in raw.items():
        if name in ("operations", "map") or not isinstance(paths, list) or not 0 < len(paths) <= MAX_PATHS_PER_FILE:
            raise BadUserInput("Each map entry must be a non-empty list of paths", field="map")
        resolved = []
        for path in paths:
            steps = _resolve_path(operations, path)
            if tuple(steps) in seen:
                raise BadUserInput(f"Path {path!r} is mapped twice", field="map")
            seen.add(tuple(steps))
            resolved.append(steps)
        files_map[name] = resolved
    return files_map


def _resolve_path(operations: JsonValue, path: Any) -> list[str | int]:
    """Steps of `path` (`variables.file`, `0.variables.files.1`) if it names an
    existing null inside an operation's variables; BadUserInput otherwise."""
    if not isinstance(path, str) or not path:
        raise BadUserInput("Map paths must be non-empty strings", field="map")
    parts = path.split(".")
    steps: list[str | int] = []
    target: Any = operations
    for index, part in enumerate(parts):
        step: str | int = int(part) if isinstance(target, list) and part.isascii() and part.isdigit() else part
        variables_step = 1 if isinstance(operations, list) else 0
        if index == variables_step and step != "variables":
            raise BadUserInput(f"Map path {path!r} must point into variables", field="map")
        if isinstance(target, list) and isinstance(step, int) and step < len(target):
            target = target[step]
        elif isinstance(target, Mapping) and isinstance(step, str) and step in target:
            target = target[step]
        else:
            raise BadUserInput(f"Map path {path!r} does not exist in operations", field="map")
        steps.append(step)
    if len(steps) <= (2 if isinstance(operations, list) else 1) or target is not None:
        raise BadUserInput(f"Map path {path!r} must point at a null variable", field="map")
    return steps


def set_at(operations: JsonValue, steps: list[str | int], value: Any) -> None:
    target: Any = operations
    for step in steps[:-1]:
        target = target[step]
    target[steps[-1]] = value
