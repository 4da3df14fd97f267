"""Relay connections over keyset cursors, shared by every list field."""
from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
import strawberry

from errors import BadUserInput

T = TypeVar("T")
N = TypeVar("N")


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


def encode_cursor(*values: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int, *, field: str) -> list[Any]:
    """The keyset values inside `cursor`; anything not made by `encode_cursor` is BAD_USER_INPUT."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise BadUserInput("Malformed cursor", field=field) from None
    if (
        not isinstance(values, list)
        or len(values) != arity
        or not all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in values)
    ):
        raise BadUserInput("Malformed cursor", field=field)
    return values


@dataclass(frozen=True)
class PageRequest:
    """A validated page request: `size` rows, forward (first/after) or backward (last/before)."""

    size: int
    forward: bool
    after: str | None
    before: str | None


def page_request(
    *,
    first: int | None,
    after: str | None,
    last: int | None = None,
    before: str | None = None,
    default: int,
    maximum: int,
    default_forward: bool = True,
) -> PageRequest:
    if first is not None and last is not None:
        raise BadUserInput("Pass first or last, not both", field="last")
    for name, value in (("first", first), ("last", last)):
        if value is not None and not 1 <= value <= maximum:
            raise BadUserInput(f"{name} must be between 1 and {maximum}", field=name)
    if last is not None:
        return PageRequest(size=last, forward=False, after=after, before=before)
    if first is not None:
        return PageRequest(size=first, forward=True, after=after, before=before)
    return PageRequest(size=default, forward=default_forward, after=after, before=before)


@dataclass
class Page(Generic[T]):
    """Rows of one page in display order plus the Relay flags."""

    rows: list[T]
    has_next_page: bool
    has_previous_page: bool


def slice_page(rows: Sequence[T], request: PageRequest) -> Page[T]:
    """`rows` were fetched with LIMIT size+1 in the query's direction; trim and flag.

    For backward pages the rows arrive newest-first and are returned oldest-first.
    """
    extra = len(rows) > request.size
    kept = list(rows[: request.size])
    if request.forward:
        return Page(kept, has_next_page=extra, has_previous_page=request.after is not None)
    kept.reverse()
    return Page(kept, has_next_page=request.before is not None, has_previous_page=extra)


def page_info(page: Page[Any], cursor_of: Callable[[Any], str]) -> PageInfo:
    return PageInfo(
        has_next_page=page.has_next_page,
        has_previous_page=page.has_previous_page,
        start_cursor=cursor_of(page.rows[0]) if page.rows else None,
        end_cursor=cursor_of(page.rows[-1]) if page.rows else None,
    )
