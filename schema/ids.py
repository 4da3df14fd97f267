"""Opaque global IDs: `<prefix>_<row id>`; clients must treat them as strings.

A well-formed ID of another type, or of a row that does not exist, is NOT_FOUND (as
if it did not exist); a malformed one is BAD_USER_INPUT naming the argument.
"""
from __future__ import annotations

from errors import BadUserInput, NotFound

PREFIXES = {
    "User": "u",
    "Session": "s",
    "Conversation": "c",
    "Message": "m",
    "Group": "g",
    "Attachment": "a",
    "Notification": "n",
    "AuditEvent": "e",
}
_KINDS = {v: k for k, v in PREFIXES.items()}
MAX_ROW_ID = 2**63 - 1


def encode(kind: str, row_id: int) -> str:
    return f"{PREFIXES[kind]}_{row_id}"


def decode(kind: str, value: str, *, field: str = "id") -> int:
    prefix, sep, digits = value.partition("_")
    if not sep or prefix not in _KINDS or not digits.isdigit() or len(digits) > 19:
        raise BadUserInput(f"Malformed ID for {field}", field=field)
    row_id = int(digits)
    if _KINDS[prefix] != kind or not 0 < row_id <= MAX_ROW_ID:
        raise NotFound(f"{kind} not found")
    return row_id


def decode_many(kind: str, values: list[str] | None, *, field: str) -> list[int]:
    """Decode a list, keeping order and dropping duplicates; any bad one fails the whole list."""
    seen: dict[int, None] = {}
    for value in values or []:
        seen[decode(kind, value, field=field)] = None
    return list(seen)
